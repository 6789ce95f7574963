"""The SLO file becomes Prometheus rules that promtool accepts and whose alerts fire on the
synthetic series of infra/prometheus/tests (and only there); every series they read is one the
service exports; every alert links a runbook section that exists."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tasks.core.config.loader import load_slo_policy
from tasks.core.errors import ConfigError
from tasks.core.home import SLO_POLICY
from tasks.core.monitoring.slo import budgets, render, render_yaml
from tasks.core.serving.telemetry import ServiceMetrics, parse_snapshot
from tests.conftest import REPO

RULES = REPO / "infra/prometheus/rules/loraflow-slo.yaml"
RULE_TESTS = REPO / "infra/prometheus/tests/loraflow-slo-test.yaml"
SLO = load_slo_policy(SLO_POLICY)


def promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    message = "promtool not installed (Debian: apt-get install -y prometheus)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {message}: .ci/run must install it", pytrace=False)
    pytest.skip(message)


def run_promtool(*args: str | Path) -> str:
    done = subprocess.run(
        [promtool(), *map(str, args)], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def test_committed_rules_are_the_rendering_of_the_slo_file():
    assert RULES.read_text() == render_yaml(SLO), "run `loraflow slo-rules` and commit"


def test_promtool_checks_the_rules():
    assert "SUCCESS: 39 rules found" in run_promtool("check", "rules", RULES)


def test_promtool_unit_tests_fire_the_burn_rate_alerts():
    assert "SUCCESS" in run_promtool("test", "rules", RULE_TESTS)


def test_promtool_test_fails_when_an_alert_would_not_fire(tmp_path):
    """The rule tests can fail: with a page threshold the 10 % error series does not cross,
    promtool reports the missing alert."""
    rules = tmp_path / "rules" / RULES.name
    rules.parent.mkdir()
    rules.write_text(
        RULES.read_text()
        .replace("> 14.4 * 0.005", "> 144 * 0.005")
        .replace("> 6 * 0.005", "> 60 * 0.005")
    )
    (tmp_path / "tests").mkdir()
    shutil.copy(RULE_TESTS, tmp_path / "tests" / RULE_TESTS.name)
    done = subprocess.run(
        [promtool(), "test", "rules", str(tmp_path / "tests" / RULE_TESTS.name)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert (
        done.returncode != 0 and "LoraflowAvailabilityBudgetBurnFast" in done.stdout + done.stderr
    )


def test_rules_read_only_served_series_and_link_existing_runbook_sections():
    served = set()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
    for family in ServiceMetrics().registry.collect():
        served |= {family.name + s for s in suffixes.get(family.type, ("",))}
    rules = [r for g in render(SLO)["groups"] for r in g["rules"]]
    used = {m for r in rules for m in re.findall(r"\bloraflow_\w+", r["expr"])}
    assert used and used <= served, used - served
    anchors = {
        re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in (REPO / "docs/operations.md").read_text().splitlines()
        if line.startswith("#")
    }
    alerts = [r for r in rules if "alert" in r]
    assert len(alerts) == 2 * len(SLO.objectives) + 3
    for alert in alerts:
        path, anchor = alert["annotations"]["runbook"].split("#")
        assert path == "docs/operations.md" and anchor in anchors, alert["alert"]
    windows = {re.search(r"rate(\w+)$", r["record"]).group(1) for r in rules if "record" in r
               and r["record"].startswith("slo:error_ratio")}  # fmt: skip
    assert windows == {"5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d"}


def test_latency_threshold_must_be_a_histogram_bucket_edge(tmp_path):
    data = yaml.safe_load(SLO_POLICY.read_text())
    data["objectives"][1]["threshold_seconds"] = 0.5
    path = tmp_path / "slo.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="0.5: must be a bucket edge .*0.437894"):
        render(load_slo_policy(path))


def test_budget_from_two_scrapes():
    metrics = ServiceMetrics()
    before = parse_snapshot(metrics.render().decode())
    metrics.requests.labels("1").inc(1000)
    metrics.errors.labels("1").inc(10)  # 1 % errors against a 0.5 % budget: spent twice
    for seconds in [0.01] * 995 + [2.0] * 5:
        metrics.latency.labels("1").observe(seconds)
    after = parse_snapshot(metrics.render().decode())
    found = {b.objective: b for b in budgets(SLO, before, after)}
    assert found["availability"].remaining == pytest.approx(-1.0)
    assert found["latency"].remaining == pytest.approx(0.5)
    assert found["quality"].remaining == 1.0  # no feedback: nothing spent
