"""``loraflow run`` / ``validate`` / ``validate-data`` / ``quickstart`` / ``config-reference``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from flows.cli.inspect import print_ui_help
from flows.cli.output import console, error_line, tame_prefect_console
from flows.cli.prefect_api import connect, use_running_server
from tasks.core.errors import BadInput, DataValidationFailed
from tasks.core.home import GENERATIVE_CONFIG, QUICKSTART_CONFIG, Home, apply_env


def load(config: Path, home: Home | None = None):
    """The validated config, checked against its data, golden file and (mirrored) model:
    every error is one line, exit 2, before Prefect starts."""
    from tasks.core.config.loader import load_config
    from tasks.core.config.preflight import preflight

    loaded = load_config(config)
    preflight(loaded, (home or Home.from_env()).hf_hub_cache)
    return loaded


def validate(configs: Annotated[list[Path], typer.Argument(help="YAML files to check.")]) -> None:
    """Check config and policy files without running anything; an experiment also against
    its data files, golden file and (when mirrored) its model's layers."""
    from tasks.core.config.loader import validate_file

    failed = None
    for path in configs:
        try:
            summary = validate_file(path)
            if summary.startswith("experiment "):
                load(path)
            console.print(f"[green]ok[/] {path}: {summary}", highlight=False)
        except BadInput as exc:
            error_line(str(exc))
            failed = exc
    if failed is not None:
        raise typer.Exit(failed.exit_code)


def run(
    config: Annotated[
        Path, typer.Argument(help="Experiment YAML, e.g. configs/experiments/NAME.yaml.")
    ],
    force: Annotated[
        bool, typer.Option("--force", help="Recompute every stage; ignore cached results.")
    ] = False,
) -> None:
    """Run the finetune pipeline for one experiment config."""
    run_pipeline(config, force)


# Imported while Prefect's server starts, before the training agent is forked from this
# process (so it has them too): MLflow's SQL store (the reconciler's first call, then every
# stage's) and transformers' tokenizer base the validate stage counts tokens with (the
# tokenizer class itself is imported by the stage; torch only where it needs AutoTokenizer).
FIRST_STAGES = ("tasks.core.tracking:load_sql_store", "transformers.tokenization_utils_tokenizers")


def run_pipeline(config: Path, force: bool, setup=None) -> None:
    """``run``; ``setup`` (a quickstart's mirror seeding) runs while Prefect's server starts."""
    started = time.monotonic()  # the command's start: start-up is overhead too
    home = apply_env()
    # Without a running server a temporary one starts (seconds) first, so that its start
    # overlaps this process's own: the seeding, the config's checks, the pipeline's imports.
    # A config that fails its checks exits 2 with nothing run or recorded; the server stops
    # with the command.
    api = connect(home)
    if setup is not None:
        setup()
    loaded = load(config, home)
    from tasks.core.ops.preload import load as preload
    from tasks.core.training.child import discard_prestarted

    for step in FIRST_STAGES:
        preload(step)
    # Forked now: it has what this process imported. Before the flow's imports (Prefect, the
    # stages: ~3 s the agent never needs), so its own imports, on the critical path to the
    # first training step, start that much earlier (~0.8 s earlier first step, quickstart).
    prestart_training(loaded.config.train)
    try:
        from flows.cli.reconcile import reconcile
        from flows.finetune import finetune

        api.ready()
        tame_prefect_console()
        for line in reconcile(home):  # a run killed earlier is not shown running any more
            console.print(f"reconciled: {line}", highlight=False, soft_wrap=True)
        with api.flow_settings():
            state = finetune(config_path=str(config.resolve()), force=force, return_state=True)
    finally:
        discard_prestarted()  # an agent no job came for
    from tasks.core.ops.processes import peak_rss_mb

    flow_run_id = str(state.state_details.flow_run_id)
    summary = result_or_pointer(state, home)
    wall = time.monotonic() - started
    console.print(f"\n[bold green]pipeline finished[/] in {wall:.0f} s")
    training_mb = summary.pop("train_peak_rss_mb", 0)
    summary["peak memory"] = (
        f"pipeline process {peak_rss_mb():.0f} MB; training {training_mb:.0f} MB "
        "(all its processes together; 0 when cached)"
    )
    summary["time"] = time_line(wall, summary.pop("compute_s", {}))
    summary["prefect"] = api.describe()
    gates = summary.pop("gates", [])
    for key, value in summary.items():
        console.print(f"  {key}: {value}", highlight=False, soft_wrap=True)
    console.print("  gates:", highlight=False)
    for line in gates:
        console.print(f"    {line}", highlight=False, soft_wrap=True)
    print_ui_help(home, flow_run_id)


def prestart_training(train) -> None:
    """Start the CPU training agent now, forked from this process (its imports are ours):
    what it still imports overlaps the server's start and the checks before training. Not
    when a work pool or the in-process launcher trains."""
    if train.launcher == "subprocess" and train.work_pool is None:
        from tasks.core.training.child import prestart

        prestart(train.model_dump(mode="json"), fork=True)


def result_or_pointer(state, home: Home):
    """The flow's result; or its exception, carrying where the run's records are."""
    if state.is_completed():
        return state.result()
    try:
        state.result()
    except Exception as exc:
        exc.details = run_pointer(str(state.state_details.flow_run_id), home)
        raise
    raise RuntimeError(f"flow run ended {state.name}: {state.message}")


def run_pointer(flow_run_id: str, home: Home) -> str:
    """'Prefect flow run NAME <page>': where the stage logs, artifacts and MLflow ids are."""
    from tasks.core.ops.links import ui_links

    name = ""
    try:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            name = f"'{client.read_flow_run(flow_run_id).name}' "
    except Exception:  # the pointer is a courtesy; the id alone still finds the run
        pass
    page = ui_links(home).flow_run(flow_run_id)
    where = page or f"{flow_run_id} (`loraflow ui` shows how to open it)"
    return f"Prefect flow run {name}{where}; stage logs and artifacts there"


def time_line(wall: float, compute: dict[str, float]) -> str:
    """Wall time split into training compute, evaluation compute and the pipeline's overhead;
    the base's scoring beside training (in neither: it overlapped the training's wall time)."""
    training, evaluation = compute.get("training", 0.0), compute.get("evaluation", 0.0)
    overhead = wall - training - evaluation
    ratio = f"{evaluation / training:.2f}" if training > 0 else "n/a (training cached)"
    beside = compute.get("base_during_training", 0.0)
    return (
        f"wall {wall:.1f} s = training {training:.1f} s + evaluation {evaluation:.1f} s + "
        f"pipeline overhead {overhead:.1f} s; evaluation/training {ratio}"
    ) + (f"; base model scored while training ran: {beside:.1f} s" if beside else "")


def validate_data_command(
    config: Annotated[Path, typer.Argument(help="Experiment YAML whose data section is checked.")],
    force: Annotated[
        bool, typer.Option("--force", help="Recompute; ignore cached results.")
    ] = False,
) -> None:
    """Run only data validation (model resolved as in `run`); exit 2 when a check fails.

    Without a running Prefect server (`loraflow up`) the checks run directly, with no
    temporary server to start; with one, as the validate-data flow, visible in its UI."""
    home = apply_env()
    loaded = load(config, home)
    try:
        if use_running_server(home):
            from flows.validate_data import validate_data_only

            tame_prefect_console()
            config_path = str(config.resolve())
            state = validate_data_only(config_path=config_path, force=force, return_state=True)
            report = result_or_pointer(state, home)
        else:
            from flows.checks import validate_data_directly

            report = validate_data_directly(loaded, home)
    except DataValidationFailed as exc:
        if exc.report is not None:
            console.print(data_report_table(exc.report))
        raise
    console.print(data_report_table(report))
    console.print(f"prepared: {report.prepared_path}", highlight=False, soft_wrap=True)


def data_report_table(report):
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


def quickstart(
    force: Annotated[bool, typer.Option("--force", help="Recompute every stage.")] = False,
) -> None:
    """Seed the mirror with the packaged all-MiniLM-L6-v2, then run the SST-2 quickstart."""
    from flows.cli.hub import seed_minilm

    run_pipeline(QUICKSTART_CONFIG, force, setup=seed_minilm)


def quickstart_generative(
    force: Annotated[bool, typer.Option("--force", help="Recompute every stage.")] = False,
) -> None:
    """Build the example decoder (random weights, SST-2 vocabulary), mirror it, then run the
    SST-2 instruction example; prints base vs fine-tuned exact match and format validity."""
    from flows.cli.hub import seed_example_decoder

    run_pipeline(GENERATIVE_CONFIG, force, setup=lambda: seed_example_decoder(GENERATIVE_CONFIG))


def config_reference() -> None:
    """Print the configuration reference (Markdown) generated from the schema."""
    from tasks.core.config.reference import render

    print(render(), end="")


def register(app: typer.Typer) -> None:
    app.command()(validate)
    app.command()(run)
    app.command("validate-data")(validate_data_command)
    app.command()(quickstart)
    app.command("quickstart-generative")(quickstart_generative)
    app.command("config-reference")(config_reference)
