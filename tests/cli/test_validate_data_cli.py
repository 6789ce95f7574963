"""``loraflow validate-data CONFIG``: only the data stage, the report as a table, exit 2 on fail."""

from __future__ import annotations

from tests.cli.test_cli import error_lines, loraflow, nothing_registered
from tests.flows.conftest import TINY_REPO, write_config


def cells(table: str, check: str, split: str) -> list[str]:
    """The cells of the table row of ``check`` on ``split`` (rich draws cells between │)."""
    for line in table.splitlines():
        row = [cell.strip() for cell in line.split("│")[1:-1]]
        if row[:2] == [check, split]:
            return row
    raise AssertionError(f"no row {check} [{split}] in\n{table}")


def test_validate_data_prints_the_report_and_exits_2_on_a_failing_check(
    home, tmp_path, tiny_bert_dir, monkeypatch
):
    from tasks.core.catalog.mirror import import_folder

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    import_folder(tiny_bert_dir, TINY_REPO, home.hf_hub_cache)
    config = write_config(tmp_path)
    dev = tmp_path / "dev.tsv"
    lines = dev.read_text().splitlines()
    lines[4] = "positive\tjane.doe@example.com liked it"  # data row 4
    dev.write_text("\n".join(lines) + "\n")
    failed = loraflow("validate-data", config)
    assert failed.returncode == 2, failed.stderr[-2000:]
    (line,) = error_lines(failed)
    assert line == (
        "error: data validation failed: pii [eval]: 1 rows hold PII or secrets: email 1 (rows 4)"
        "; to go on: data.pii.policy: redact (each find becomes [KIND], in training and at "
        "serving) or warn (keep the texts as they are); or narrow data.pii.kinds"
    )
    table = failed.stdout
    assert "data validation: fail: 1 failed" in table
    assert cells(table, "pii", "eval")[2:6] == ["1", "0 rows", "fail", "4"]
    assert cells(table, "schema", "train")[4] == "pass"  # every check, not only the failing one
    assert cells(table, "leakage", "eval")[4] == "pass"
    assert cells(table, "token_lengths", "train")[3] == "max 1.0% over 16 tokens"
    assert nothing_registered(home)
    # A check-only command with no running server: the checks run directly, no temporary
    # Prefect server is started (seconds alone, far more on a busy machine).
    assert "temporary server" not in failed.stderr + failed.stdout
