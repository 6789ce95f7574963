"""The snapshot of transformers' heads per task (tasks/core/catalog/heads.py) is the table of
the locked transformers, and another version reads transformers itself."""

from __future__ import annotations

import json

from tasks.core.catalog import heads
from tasks.core.discovery import TASK_ARCHITECTURES


def test_the_snapshot_is_the_installed_transformers_table():
    snapshot = json.loads(heads.SNAPSHOT.read_text())
    assert snapshot["transformers"] == heads.installed_version(), (
        "transformers changed: run `.venv/bin/python -m tasks.core.catalog.heads`"
    )
    assert snapshot["heads"] == heads.from_transformers()
    assert {"bert", "roberta"} <= TASK_ARCHITECTURES["text-classification"]


def test_another_transformers_version_reads_transformers(tmp_path, monkeypatch):
    stale = tmp_path / "heads.json"
    stale.write_text(json.dumps({"transformers": "0.0.1", "heads": {"text-classification": []}}))
    monkeypatch.setattr(heads, "SNAPSHOT", stale)
    assert heads.task_heads()["text-classification"] == frozenset(
        heads.from_transformers()["text-classification"]
    )
    heads.write_snapshot(stale)  # what the module's command writes
    assert json.loads(stale.read_text())["transformers"] == heads.installed_version()
