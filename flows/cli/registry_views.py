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


def models_table(name: str, rows: list[VersionRow]) -> Table:
    table = Table(title=f"{name}: registered versions, newest first")
    for column in ("version", "aliases", "registered", "accuracy", "macro_f1", "ece"):
        table.add_column(column, justify="right" if column != "aliases" else "left")
    table.add_column("gates")
    table.add_column("vs champion")
    table.add_column("promotion")
    table.add_column("run")
    for row in rows:
        tags = row.tags
        compared = tags.get("champion_compared", "-")
        ni = tags.get("gate.non_inferiority_accuracy", "")
        table.add_row(
            row.version,
            Text(", ".join(row.aliases), style="bold cyan"),
            row.created,
            tags.get("metric.accuracy", "-"),
            tags.get("metric.macro_f1", "-"),
            tags.get("metric.ece", "-"),
            _gate_summary(tags),
            "none" if compared in ("none", "-") else f"v{compared}: {ni}",
            tags.get("promotion.action", "-"),
            row.run_id[:12],
        )
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


OUTCOME_STYLE = {"pass": "green", "fail": "bold red", "promote": "green", "rollback": "bold red"}


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
    for column in ("gate", "figure", "threshold", "result", "detail"):
        table.add_column(column, justify="right" if column in ("figure", "threshold") else "left")
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
