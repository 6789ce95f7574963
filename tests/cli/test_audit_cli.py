"""``loraflow discover`` and ``loraflow audit`` as a user runs them (real subprocesses)."""

from __future__ import annotations

import json

from tests.cli.test_cli import error_lines, loraflow
from tests.flows.conftest import write_config
from tests.unit.license_zoo import build_zoo


def _zoo(home, tmp_path):
    return build_zoo(
        tmp_path / "zoo", home.hf_hub_cache, ("apache", "noncommercial", "pickle-only")
    )


def test_audit_prints_the_verdict_and_exits_3_when_denied(home, tmp_path):
    revisions = _zoo(home, tmp_path)
    allowed = loraflow("audit", "zoo/apache")
    assert allowed.returncode == 0, allowed.stderr
    assert "verdict: ALLOW" in allowed.stdout
    assert "Apache-2.0 is on the allow list" in allowed.stdout

    denied = loraflow("audit", f"zoo/noncommercial@{revisions['noncommercial']}", "--json")
    assert denied.returncode == 3, denied.stderr
    record = json.loads(denied.stdout)
    assert record["verdict"] == "deny"
    assert record["subjects"][0]["reason"] == "CC-BY-NC-4.0 (non-commercial) is on the deny list"
    assert len(record["file_hashes"]["model.safetensors"]) == 64

    missing = loraflow("audit", "zoo/absent")
    assert missing.returncode == 2
    (line,) = error_lines(missing)
    assert "model 'zoo/absent' is not in the local mirror" in line


def test_discover_prints_the_ranked_table(home, tmp_path):
    revisions = _zoo(home, tmp_path)
    config = write_config(tmp_path, discovery={"max_candidates": 5})
    result = loraflow("discover", config)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Discovery (mirror): candidates, best first" in out
    assert f"zoo/apache@{revisions['apache'][:12]}" in out
    assert out.index("zoo/apache@") < out.index("zoo/noncommercial@")
    assert "rejected: no safetensors weights" in out  # the pickle-only model, listed last
