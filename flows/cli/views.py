"""Terminal views of discovery and audit results (``loraflow discover`` / ``loraflow audit``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:  # discovery imports transformers: seconds that `loraflow audit` need not pay
    from tasks.core.audit.licenses import AuditRecord
    from tasks.core.discovery import Discovery

DECISION_STYLE = {"allow": "green", "warn": "yellow", "deny": "bold red"}


def _count(value: int | None) -> str:
    return "" if value is None else f"{value:,}"


def discovery_table(discovery: Discovery) -> Table:
    kind = "pinned model" if discovery.pinned else "candidates, best first"
    table = Table(title=f"Discovery ({discovery.source}): {kind}", show_lines=False)
    for column in ("#", "model@revision", "type", "params", "license", "downloads", "score"):
        table.add_column(column, no_wrap=column != "model@revision", overflow="fold")
    table.add_column("reasons")
    for row in discovery.table():
        rank = "-" if row["rank"] is None else str(row["rank"])
        params = f"{row['parameters'] / 1e6:.2f}M" if row["parameters"] else ""
        table.add_row(
            rank,
            f"{row['model']}@{row['revision'][:12]}",
            row["type"] or "",
            params,
            row["license"] or "",
            _count(row["downloads"]),
            "" if row["score"] is None else f"{row['score']:.2f}",
            Text(row["reasons"]),
        )
    return table


def verdict_table(record: AuditRecord) -> Table:
    table = Table(
        title=(
            f"Audit of {record.model} ({record.source}) under policy {record.policy_version} "
            f"[{record.policy_sha256[:12]}], intended use {record.intended_use}"
        )
    )
    for column in ("subject / check", "license", "decision", "reason"):
        table.add_column(column, overflow="fold")  # refs and hashes must stay whole
    for s in record.subjects:
        table.add_row(
            s.subject,
            s.license or "(none)",
            Text(s.decision, DECISION_STYLE[s.decision]),
            Text(s.reason),
        )
    for c in record.checks:
        table.add_row(c.check, "", Text(c.decision, DECISION_STYLE[c.decision]), Text(c.reason))
    for path, sha in record.file_hashes.items():
        table.add_row(f"sha256 {path}", "", "", sha)
    return table
