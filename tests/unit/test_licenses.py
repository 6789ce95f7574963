"""License audit: a table of (subject, declared license, approvals) -> decision."""

from __future__ import annotations

import pytest

from tasks.core.config import Approval, LicensePolicy
from tasks.core.licenses import AuditRecord, audit, judge, to_markdown

MODEL = "model:acme/widget"
SHA = "0123456789abcdef0123456789abcdef01234567"
POLICY_SHA = "f" * 64


@pytest.fixture
def policy() -> LicensePolicy:
    return LicensePolicy(
        kind="license-policy",
        version="test-1",
        intended_use="commercial",
        allow=["apache-2.0", "mit", "cc-by-4.0"],
        review=["other", "llama3.1"],
        deny=["cc-by-nc-4.0", "agpl-3.0"],
    )


def approval(subject: str = MODEL, license: str = "other") -> Approval:
    return Approval(
        subject=subject,
        license=license,
        approved_by="Jane Doe",
        date="2026-01-15",
        reason="internal evaluation only, legal signed off",
    )


JUDGE_CASES = [
    pytest.param(
        f"{MODEL}@{SHA}",
        "apache-2.0",
        [],
        "allow",
        "apache-2.0 is on the allow list",
        id="allow-list",
    ),
    pytest.param(
        f"{MODEL}@{SHA}", "agpl-3.0", [], "deny", "agpl-3.0 is on the deny list", id="deny-list"
    ),
    pytest.param(
        f"{MODEL}@{SHA}",
        "agpl-3.0",
        [approval(license="agpl-3.0")],
        "deny",
        "agpl-3.0 is on the deny list",
        id="deny-list-beats-approval",
    ),
    pytest.param(
        f"{MODEL}@{SHA}",
        "other",
        [],
        "deny",
        "other needs review and no approval names 'model:acme/widget' in the config",
        id="review-without-approval",
    ),
    pytest.param(
        f"{MODEL}@{SHA}",
        "other",
        [approval()],
        "allow",
        "other needs review: approved by Jane Doe on 2026-01-15",
        id="review-with-approval",
    ),
    pytest.param(
        f"{MODEL}@{SHA}",
        "other",
        [approval(subject="model:acme/gadget")],
        "deny",
        "no approval names 'model:acme/widget'",
        id="approval-for-another-subject",
    ),
    pytest.param(
        f"{MODEL}@{SHA}",
        "other",
        [approval(license="llama3.1")],
        "deny",
        "no approval names",
        id="approval-for-another-license",
    ),
    pytest.param(
        f"{MODEL}@{SHA}",
        "other",
        [approval(license="OTHER")],
        "allow",
        "approved by Jane Doe",
        id="approval-license-case-insensitive",
    ),
    pytest.param(
        f"{MODEL}@{SHA}",
        None,
        [],
        "deny",
        "no license declared (default deny)",
        id="missing-license",
    ),
    pytest.param(
        f"{MODEL}@{SHA}", "", [], "deny", "no license declared (default deny)", id="empty-license"
    ),
    pytest.param(
        f"{MODEL}@{SHA}",
        "gpl-3.0",
        [],
        "deny",
        "gpl-3.0 is in no list of the policy (default deny)",
        id="in-no-list",
    ),
    pytest.param(
        f"{MODEL}@{SHA}",
        " Apache-2.0 ",
        [],
        "allow",
        "apache-2.0 is on the allow list",
        id="case-and-space-insensitive-allow",
    ),
    pytest.param(
        f"{MODEL}@{SHA}",
        "CC-BY-NC-4.0",
        [],
        "deny",
        "cc-by-nc-4.0 is on the deny list",
        id="case-insensitive-deny",
    ),
    pytest.param(
        "dataset:sst2",
        "cc-by-4.0",
        [],
        "allow",
        "cc-by-4.0 is on the allow list",
        id="dataset-allow",
    ),
    pytest.param(
        "dataset:private",
        "other",
        [approval(subject="dataset:private")],
        "allow",
        "approved by Jane Doe",
        id="dataset-review-with-approval",
    ),
    pytest.param(
        "dataset:private",
        "other",
        [approval()],
        "deny",
        "no approval names 'dataset:private'",
        id="dataset-model-approval-ignored",
    ),
]


@pytest.mark.parametrize(("subject", "license_id", "approvals", "decision", "reason"), JUDGE_CASES)
def test_judge(policy, subject, license_id, approvals, decision, reason):
    verdict = judge(subject, license_id, policy, approvals)
    assert verdict.subject == subject
    assert verdict.decision == decision
    assert reason in verdict.reason
    expected_license = license_id.strip().lower() if license_id else None
    assert verdict.license == expected_license
    if decision == "allow" and license_id and license_id.strip().lower() in policy.review:
        assert verdict.approval == approvals[0].model_dump()  # copied into the audit trail
    else:
        assert verdict.approval is None


AUDIT_CASES = [
    pytest.param("apache-2.0", {"sst2": "cc-by-4.0"}, [], "allow", ["allow", "allow"], id="all-ok"),
    pytest.param(
        "apache-2.0", {"sst2": "cc-by-nc-4.0"}, [], "deny", ["allow", "deny"], id="dataset-denied"
    ),
    pytest.param(
        "apache-2.0", {"sst2": None}, [], "deny", ["allow", "deny"], id="dataset-without-license"
    ),
    pytest.param(
        "gpl-3.0", {"sst2": "cc-by-4.0"}, [], "deny", ["deny", "allow"], id="model-denied"
    ),
    pytest.param(
        "other",
        {"a": "mit", "b": "other"},
        [approval(), approval(subject="dataset:b")],
        "allow",
        ["allow"] * 3,
        id="approved-review-model-and-dataset",
    ),
    pytest.param(
        "other",
        {"a": "mit", "b": "other"},
        [approval()],
        "deny",
        ["allow", "allow", "deny"],
        id="one-of-three-denied",
    ),
    pytest.param("mit", {}, [], "allow", ["allow"], id="no-datasets"),
]


@pytest.mark.parametrize(
    ("model_license", "datasets", "approvals", "verdict", "decisions"), AUDIT_CASES
)
def test_audit(policy, model_license, datasets, approvals, verdict, decisions):
    record = audit(f"{MODEL}@{SHA}", model_license, datasets, policy, POLICY_SHA, approvals)
    assert isinstance(record, AuditRecord)
    assert record.verdict == verdict
    assert [s.decision for s in record.subjects] == decisions
    assert [s.subject for s in record.subjects] == [f"{MODEL}@{SHA}"] + [
        f"dataset:{name}" for name in datasets
    ]
    assert (record.policy_version, record.policy_sha256, record.intended_use) == (
        "test-1",
        POLICY_SHA,
        "commercial",
    )
    assert len(record.reasons) == len(decisions)
    assert record.reasons[0].startswith(f"{MODEL}@{SHA}: {decisions[0]} (")


def test_audit_record_to_dict_and_markdown(policy):
    record = audit(
        f"{MODEL}@{SHA}",
        "other",
        {"sst2": "cc-by-4.0", "web": None},
        policy,
        POLICY_SHA,
        [approval()],
    )
    data = record.to_dict()
    assert data["verdict"] == "deny"
    assert data["subjects"][0]["approval"]["approved_by"] == "Jane Doe"
    text = to_markdown(record)
    assert text.startswith("## License audit: **DENY**")
    assert f"`{POLICY_SHA[:12]}`" in text and "intended use: commercial" in text
    for subject in record.subjects:
        assert (
            f"| `{subject.subject}` | {subject.license or '(none)'} | {subject.decision} |" in text
        )
    assert "| `dataset:web` | (none) | deny |" in text


def test_shipped_policy_allows_the_quickstart():
    from pathlib import Path

    from tasks.core.config_loader import load_config

    experiment = Path(__file__).resolve().parents[2] / "configs/experiments/sst2-minilm-lora.yaml"
    loaded = load_config(experiment)
    record = audit(
        f"model:{loaded.config.discovery.repo_id}@{SHA}",
        "apache-2.0",  # what the all-MiniLM-L6-v2 model card declares
        {loaded.config.data.name: loaded.config.data.license},
        loaded.license_policy,
        loaded.license_policy_sha256,
        list(loaded.config.license.approvals),
    )
    assert record.verdict == "allow", record.reasons
