"""Terminal views of the registry: ``loraflow models NAME`` and ``loraflow lineage NAME@ALIAS``."""

from __future__ import annotations

from rich.console import Group
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from tasks.core.registry.lineage import Lineage, RefusedRun, VersionRow

STATUS_STYLE = {"pass": "green", "fail": "bold red", "skip": "yellow"}


def _gate_summary(tags: dict[str, str]) -> Text:
    gates = {k.removeprefix("gate."): v for k, v in tags.items() if k.startswith("gate.")}
    passed = sum(v.startswith("pass") for v in gates.values())
    skipped = sum(v.startswith("skip") for v in gates.values())
    text = Text(
        f"{passed}/{len(gates)} pass", style="green" if passed + skipped == len(gates) else "red"
    )
    if skipped:
        text.append(f", {skipped} skipped", style="yellow")
    return text


# Columns of `loraflow models`, most important first: at 80 columns (or piped, where rich
# assumes 80) the least important ones are dropped instead of squeezing every cell to "v…".
MODEL_COLUMNS = (
    "version", "aliases", "accuracy", "gates", "vs champion", "macro_f1", "promotion", "ece",
    "registered", "run",
)  # fmt: skip
RIGHT = {"version", "accuracy", "macro_f1", "ece"}


def _model_cells(row: VersionRow) -> dict[str, Text | str]:
    tags = row.tags
    compared = tags.get("champion_compared", "-")
    ni = tags.get("gate.non_inferiority_accuracy", "").split(" ", 2)[:2]
    return {
        "version": row.version,
        "aliases": Text(", ".join(row.aliases), style="bold cyan"),
        "registered": row.created,
        "accuracy": tags.get("metric.accuracy", "-"),
        "macro_f1": tags.get("metric.macro_f1", "-"),
        "ece": tags.get("metric.ece", "-"),
        "gates": _gate_summary(tags),
        "vs champion": "none" if compared in ("none", "-") else f"v{compared}: {' '.join(ni)}",
        "promotion": tags.get("promotion.action", "-"),
        "run": row.run_id[:12],
    }


def fit_columns(columns: tuple[str, ...], rows: list[dict], width: int) -> list[str]:
    """The leading columns whose natural widths (cells unwrapped, borders counted) fit."""
    kept, used = [], 1
    for column in columns:
        natural = max([len(column)] + [len(str(r[column])) for r in rows]) + 3
        if used + natural > width and kept:
            break
        kept.append(column)
        used += natural
    return kept


def models_table(name: str, rows: list[VersionRow], width: int = 200) -> Table:
    """Versions newest first; columns that do not fit in ``width`` are left out, not cut."""
    cells = [_model_cells(row) for row in rows]
    columns = fit_columns(MODEL_COLUMNS, cells, width)
    dropped = len(MODEL_COLUMNS) - len(columns)
    caption = (
        f"{dropped} columns left out at {width} columns: widen the terminal" if dropped else None
    )
    table = Table(title=f"{name}: registered versions, newest first", caption=caption)
    for column in columns:
        table.add_column(column, justify="right" if column in RIGHT else "left", no_wrap=True)
    for row in cells:
        table.add_row(*(row[c] for c in columns))
    return table


def refused_table(refused: list[RefusedRun]) -> Table:
    table = Table(title="Evaluations refused by the gates (record kept, no version)")
    table.add_column("record")
    table.add_column("training run")
    table.add_column("at")
    table.add_column("config sha256")
    table.add_column("failing gates", style="red", overflow="fold")
    for run in refused:
        table.add_row(
            run.run_id[:12],
            run.train_run_id[:12],
            run.at_short,
            run.config_sha256[:12],
            run.failures,
        )
    return table


OUTCOME_STYLE = {
    "pass": "green", "fail": "bold red", "promote": "green", "rollback": "bold red",
    "ok": "green", "breach": "bold red", "refused": "bold red",
}  # fmt: skip


def decisions_table(lineage: Lineage) -> Table:
    """Every decision about the version, oldest first: what, by whom, on which config, why."""
    table = Table(title=f"Decisions about {lineage.name} v{lineage.version}, oldest first")
    for column in ("at", "decision", "outcome", "by", "config sha256", "record"):
        table.add_column(column)
    table.add_column("why", overflow="fold", ratio=1)
    for d in lineage.decisions:
        table.add_row(
            d.at[:19].replace("T", " "),
            d.kind,
            Text(d.outcome, style=OUTCOME_STYLE.get(d.outcome, "")),
            d.actor,
            d.config_sha256[:12] or "-",
            d.run_id[:12],
            d.reason,
        )
    return table


def gates_table(lineage: Lineage) -> Table:
    table = Table(title=f"Gate decision: {lineage.decision.get('decision', '?')}")
    for column in ("gate", "figure", "threshold", "result"):  # kept whole; detail wraps
        justify = "right" if column in ("figure", "threshold") else "left"
        table.add_column(column, justify=justify, no_wrap=True)
    table.add_column("detail", overflow="fold", ratio=1)
    for g in lineage.gates():
        figure = "-" if g.get("figure") is None else f"{g['figure']:.4f}"
        threshold = "" if g.get("threshold") is None else f"{g.get('op', '>=')} {g['threshold']}"
        status = g.get("status", "pass" if g.get("passed") else "fail")
        table.add_row(
            g.get("gate", "?"),
            figure,
            threshold,
            Text(status, style=STATUS_STYLE.get(status, "")),
            g.get("detail", ""),
        )
    return table


def lineage_view(lineage: Lineage, show_config: bool = True) -> Group:
    chain = Table(title=f"Lineage of {lineage.name} v{lineage.version}", show_header=False)
    chain.add_column("what", style="bold")
    chain.add_column("answer", overflow="fold")
    for what, answer in lineage.chain():
        chain.add_row(what, answer)
    parts = [chain, gates_table(lineage), decisions_table(lineage)]
    if show_config and lineage.resolved_config:
        parts += [Text("resolved config", style="bold"), Syntax(lineage.resolved_config, "yaml")]
    return Group(*parts)
