"""What data validation found: one result per check and split, and the report they make.

The same report feeds the Prefect table artifact, the CLI table, and the JSON + HTML files
logged with the training run, so all of them say the same thing: per check the figure, the
threshold it was held to, the verdict and up to five 1-based data row numbers to look at.
"""

from __future__ import annotations

import html
from dataclasses import asdict, dataclass, field
from typing import Literal

MAX_EXAMPLES = 5
Verdict = Literal["pass", "warn", "fail"]
Unit = Literal["rows", "share", "columns", "classes"]


@dataclass(frozen=True)
class CheckResult:
    check: str
    split: str
    figure: float
    threshold: str
    verdict: Verdict
    detail: str = ""
    examples: tuple[int, ...] = field(default_factory=tuple)  # 1-based data rows
    unit: Unit = "rows"
    stats: dict = field(default_factory=dict)  # extra figures (percentiles, per-kind counts)
    hint: str = ""  # how to go on when the check fails

    def line(self) -> str:
        rows = f" (rows {', '.join(map(str, self.examples))})" if self.examples else ""
        hint = f"; {self.hint}" if self.hint and self.verdict == "fail" else ""
        return f"{self.check} [{self.split}]: {self.detail}{rows}{hint}"

    @property
    def figure_text(self) -> str:
        if self.unit == "share":
            return f"{self.figure:.2%}"
        return f"{self.figure:g}"


def fired(severity: str, hit: bool) -> Verdict:
    """The verdict of a check at ``severity`` whose condition did (not) hold."""
    return severity if hit and severity in ("fail", "warn") else "pass"  # type: ignore[return-value]


def examples(rows) -> tuple[int, ...]:
    return tuple(int(r) for r in list(rows)[:MAX_EXAMPLES])


@dataclass(frozen=True)
class DataReport:
    fingerprint: str
    label_names: tuple[str, ...]
    rows: dict[str, int]
    checks: tuple[CheckResult, ...]
    prepared_path: str
    tokenizer: str = ""  # repo@revision whose tokenizer measured the token lengths
    max_length: int | None = None
    # What the texts went through (Preprocessing.to_dict()): registered with the model.
    preprocessing: dict = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # split -> file name or hub id
    digests: dict[str, str] = field(default_factory=dict)  # split -> sha256 of its rows
    name: str = ""  # the data section's name (lineage)
    # Generative data: sha256 of the tokenizer's chat template the conversations render with.
    chat_template_sha256: str = ""
    system_prompt: str = ""  # generative: data.system_prompt (served with the model)

    @property
    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if c.verdict == "fail"]

    @property
    def warnings(self) -> list[CheckResult]:
        return [c for c in self.checks if c.verdict == "warn"]

    @property
    def verdict(self) -> str:
        return "fail" if self.failed else "pass"

    def to_dict(self) -> dict:
        data = asdict(self)
        data["verdict"] = self.verdict
        return data

    def table_rows(self) -> list[dict[str, str]]:
        """One row per check: what the Prefect artifact, the CLI and the HTML show."""
        return [
            {
                "check": c.check,
                "split": c.split,
                "figure": c.figure_text,
                "threshold": c.threshold,
                "verdict": c.verdict,
                "examples": ", ".join(map(str, c.examples)),
                "detail": c.detail,
            }
            for c in self.checks
        ]

    def summary(self) -> str:
        sha = self.fingerprint[:16] or "none (failed)"
        return (
            f"{self.verdict}: {len(self.failed)} failed, {len(self.warnings)} warnings; rows "
            f"{self.rows}; sha256 {sha}"
        )

    def to_html(self) -> str:
        """A self-contained page (no scripts, no external assets) for the MLflow artifact view."""
        colours = {"pass": "#1a7f37", "warn": "#9a6700", "fail": "#cf222e"}
        rows = self.table_rows()
        head = "".join(f"<th>{html.escape(k)}</th>" for k in rows[0]) if rows else ""
        body = "".join(
            "<tr>"
            + "".join(
                f'<td style="color:{colours[v]};font-weight:bold">{v}</td>'
                if k == "verdict"
                else f"<td>{html.escape(v)}</td>"
                for k, v in row.items()
            )
            + "</tr>"
            for row in rows
        )
        facts = {
            "verdict": self.verdict,
            "dataset sha256": self.fingerprint or "(not computed: validation failed)",
            "rows": ", ".join(f"{k} {v:,}" for k, v in self.rows.items()),
            "classes": ", ".join(self.label_names),
            "tokenizer": f"{self.tokenizer} (max_length {self.max_length})"
            if self.tokenizer
            else "(none)",
        }
        items = "".join(
            f"<li><b>{html.escape(k)}</b>: {html.escape(str(v))}</li>" for k, v in facts.items()
        )
        return (
            '<!doctype html><html><head><meta charset="utf-8"><title>Data validation</title>'
            "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}"
            "</style></head><body><h1>Data validation</h1>"
            f"<ul>{items}</ul><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody>"
            "</table></body></html>\n"
        )


def failure_message(report: DataReport) -> str:
    return "data validation failed: " + "; ".join(c.line() for c in report.failed)
