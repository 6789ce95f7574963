"""The SLO file rendered into Prometheus rules: SLIs, error budget, burn-rate alerts.

Each objective's error ratio is recorded over the windows the SRE workbook's multiwindow,
multi-burn-rate alerts need (5m, 30m, 1h, 2h, 6h, 1d, 3d) and over the budget period; an alert
fires only while both its long and its short window burn faster than the factor: 14.4x (1h/5m)
and 6x (6h/30m) page, 3x (1d/2h) and 1x (3d/6h) open a ticket. Only series the service exports
are used (``tasks/core/serving/telemetry.py``), which a test checks. ``budget_remaining`` is the
same arithmetic on two scrapes of ``/metrics``, for the promotion flow's refusal.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from tasks.core.config.monitoring import Objective, SloPolicy
from tasks.core.errors import ConfigError

WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
# (severity, [(long window, short window, burn factor), ...]) - SRE workbook, chapter 5.
ALERTS = (
    ("page", "Fast", (("1h", "5m", 14.4), ("6h", "30m", 6.0))),
    ("ticket", "Slow", (("1d", "2h", 3.0), ("3d", "6h", 1.0))),
)
RUNBOOK = "docs/operations.md"
REQUESTS = "loraflow_requests_total"
ERRORS = "loraflow_errors_total"
LATENCY = "loraflow_request_latency_seconds"
FEEDBACK = "loraflow_feedback_total"


def go_float(value: float) -> str:
    """A bucket bound as prometheus_client writes it in the ``le`` label."""
    from prometheus_client.utils import floatToGoString

    return floatToGoString(value)


def _check_latency(objective: Objective) -> str:
    from tasks.core.serving.telemetry import LATENCY_BUCKETS

    if objective.threshold_seconds not in LATENCY_BUCKETS:
        edges = ", ".join(go_float(b) for b in LATENCY_BUCKETS[12:20])
        raise ConfigError(
            f"slo latency threshold_seconds {objective.threshold_seconds}: must be a bucket edge "
            f"of {LATENCY} (e.g. {edges})"
        )
    return go_float(objective.threshold_seconds)


def error_ratio(objective: Objective, window: str) -> str:
    """PromQL of the objective's bad-event share over ``window``."""
    if objective.name == "availability":
        return f"sum(rate({ERRORS}[{window}])) / sum(rate({REQUESTS}[{window}]))"
    if objective.name == "latency":
        le = _check_latency(objective)
        return (
            f'1 - sum(rate({LATENCY}_bucket{{le="{le}"}}[{window}])) / '
            f"sum(rate({LATENCY}_count[{window}]))"
        )
    return f'sum(rate({FEEDBACK}{{correct="false"}}[{window}])) / sum(rate({FEEDBACK}[{window}]))'


def record_name(window: str) -> str:
    return f"slo:error_ratio:rate{window}"


def _alert(slo: SloPolicy, o: Objective, severity: str, speed: str, pairs) -> dict:
    budget = round(1 - o.target, 10)
    labels = f'{{slo="{o.name}"}}'
    clauses = [
        f"({record_name(long)}{labels} > {factor:g} * {budget:g} and "
        f"{record_name(short)}{labels} > {factor:g} * {budget:g})"
        for long, short, factor in pairs
    ]
    windows = ", ".join(f"{lo}/{sh} at {f:g}x" for lo, sh, f in pairs)
    return {
        "alert": f"Loraflow{o.name.capitalize()}BudgetBurn{speed}",
        "expr": " or ".join(clauses),
        "for": "2m" if severity == "page" else "15m",
        "labels": {"severity": severity, "slo": o.name, "service": slo.service},
        "annotations": {
            "summary": f"{o.name} SLO ({o.target:g}) error budget burning ({windows})",
            "description": f"{o.name} error ratio {{{{ $value | humanizePercentage }}}} burns "
            f"the {slo.period_days}-day budget of {budget:g} too fast.",
            "runbook": f"{RUNBOOK}#{o.runbook}",
        },
    }


def signal_alerts(slo: SloPolicy) -> list[dict]:
    """Alerts on one signal each: no champion loaded, OOV share, refused-input spike."""
    s = slo.signals

    def alert(name, expr, for_, severity, summary, runbook):
        return {
            "alert": name, "expr": expr, "for": for_,
            "labels": {"severity": severity, "service": slo.service},
            "annotations": {"summary": summary, "runbook": f"{RUNBOOK}#{runbook}"},
        }  # fmt: skip

    words = "sum(rate(loraflow_input_words_total[1h]))"
    return [
        alert(
            "LoraflowNoChampionLoaded",
            'sum(loraflow_model_loaded{role="champion"}) < 1 or '
            'absent(loraflow_model_loaded{role="champion"})',
            "5m", "page", "the service has no champion loaded (503 on every predict)",
            "missing-artifact",
        ),
        alert(
            "LoraflowInputOovHigh",
            f"sum(rate(loraflow_input_oov_words_total[1h])) / {words} > {s.max_oov_ratio:g}",
            "30m", "ticket", "served words unknown to the training vocabulary",
            "tokenizer-mismatch",
        ),
        alert(
            "LoraflowRejectedInputSpike",
            "sum(rate(loraflow_rejected_requests_total[15m])) / "
            f"sum(rate({REQUESTS}[15m])) > {s.max_rejected_ratio:g}",
            "10m", "ticket", "many requests refused before reaching a model", "poisoned-input",
        ),
    ]  # fmt: skip


def render(slo: SloPolicy) -> dict:
    """The rule file (as data) of ``slo``: one group of recordings, one of alerts."""
    period = f"{slo.period_days}d"
    records, alerts = [], []
    for o in slo.objectives:
        labels = {"slo": o.name, "service": slo.service, "slo_version": slo.version}
        for window in (*WINDOWS, period):
            records.append(
                {
                    "record": record_name(window),
                    "expr": error_ratio(o, window),
                    "labels": dict(labels),
                }  # fmt: skip
            )
        budget = round(1 - o.target, 10)
        records.append(
            {
                "record": "slo:error_budget_remaining:ratio",
                "expr": f'1 - {record_name(period)}{{slo="{o.name}"}} / {budget:g}',
                "labels": dict(labels),
            }
        )
        records.append({"record": "slo:objective:ratio", "expr": f"vector({o.target:g})",
                        "labels": dict(labels)})  # fmt: skip
        alerts += [_alert(slo, o, sev, speed, pairs) for sev, speed, pairs in ALERTS]
    return {
        "groups": [
            {"name": "loraflow-slo-recordings", "interval": "30s", "rules": records},
            {"name": "loraflow-slo-alerts", "rules": alerts},
            {"name": "loraflow-signal-alerts", "rules": signal_alerts(slo)},
        ]
    }


def render_yaml(slo: SloPolicy) -> str:
    header = (
        f"# Rendered from configs/policies/slo.yaml (version {slo.version}) by "
        "`loraflow slo-rules`; do not edit by hand.\n"
    )
    return header + yaml.safe_dump(render(slo), sort_keys=False, width=100)


@dataclass(frozen=True)
class Budget:
    objective: str
    bad: float
    total: float
    target: float

    @property
    def remaining(self) -> float:
        """Share of the error budget left (1: untouched, <= 0: spent); 1 with no events."""
        if self.total <= 0:
            return 1.0
        return 1 - (self.bad / self.total) / (1 - self.target)


def budgets(slo: SloPolicy, before: dict, after: dict) -> list[Budget]:
    """Budgets from two ``parse_snapshot`` scrapes of ``/metrics`` (``before`` may be {})."""

    def total(snapshot: dict, name: str, **labels: str) -> float:
        return sum(
            v
            for (sample, pairs), v in snapshot.items()
            if sample == name and all(dict(pairs).get(k) == x for k, x in labels.items())
        )

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    out = []
    for o in slo.objectives:
        if o.name == "availability":
            bad, all_ = delta(ERRORS), delta(REQUESTS)
        elif o.name == "latency":
            all_ = delta(f"{LATENCY}_count")
            bad = all_ - delta(f"{LATENCY}_bucket", le=_check_latency(o))
        else:
            bad, all_ = delta(FEEDBACK, correct="false"), delta(FEEDBACK)
        out.append(Budget(o.name, bad, all_, o.target))
    return out


def remaining_from_scrape(slo: SloPolicy, snapshot: dict) -> dict[str, float]:
    """{objective: budget left} from one scrape of a service's ``/metrics`` (its counters since
    it started); objectives without events are left out (nothing to judge)."""
    return {b.objective: b.remaining for b in budgets(slo, {}, snapshot) if b.total > 0}


def remaining_from_prometheus(url: str, timeout: float = 10.0) -> dict[str, float]:
    """{objective: budget left} as Prometheus records it (``slo:error_budget_remaining:ratio``,
    the whole budget period)."""
    import httpx

    answer = httpx.get(
        f"{url.rstrip('/')}/api/v1/query",
        params={"query": "slo:error_budget_remaining:ratio"},
        timeout=timeout,
    )
    answer.raise_for_status()
    result = answer.json()["data"]["result"]
    return {r["metric"].get("slo", "?"): float(r["value"][1]) for r in result}


def exhausted(remaining: dict[str, float]) -> dict[str, float]:
    """The objectives whose budget is spent (none left or overspent)."""
    return {name: left for name, left in remaining.items() if left <= 0}
