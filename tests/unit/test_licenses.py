"""License audit: tables of (subject, declared license, approvals) -> decision and reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from tasks.core.audit.licenses import (
    AuditRecord,
    DatasetLicense,
    audit,
    dataset_licenses,
    judge,
    judge_dataset,
    to_markdown,
)
from tasks.core.catalog.base import Candidate
from tasks.core.catalog.license_ids import normalise
from tasks.core.config.audit import Approval, LicensePolicy
from tasks.core.config.data import DataSpec

MODEL = "model:acme/widget"
SHA = "0123456789abcdef0123456789abcdef01234567"
SUBJECT = f"{MODEL}@{SHA}"
POLICY_SHA = "f" * 64
LINK = "https://example.com/acme"
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def policy() -> LicensePolicy:
    """Written in mixed spellings on purpose: ids compare after normalisation."""
    return LicensePolicy(
        kind="license-policy",
        version="test-1",
        intended_use="commercial",
        allow=["Apache-2.0", "mit", "CC-BY-4.0", "other:acme-open"],
        review=["other", "llama3.1"],
        deny=["cc-by-nc-4.0", "AGPL-3.0-only"],
    )


def approval(subject: str = MODEL, license: str = "other") -> Approval:
    return Approval(
        subject=subject,
        license=license,
        approved_by="Jane Doe",
        date="2026-01-15",
        reason="internal evaluation only, legal signed off",
    )


def other(name: str | None = "acme-private", link: str | None = LINK):
    return normalise("other", name, link)


NO_APPROVAL = "needs review and no approval names 'model:acme/widget' in the config"
OTHER_LABEL = f"other (license_name 'acme-private', {LINK})"
# (declared license, approvals, decision, exact reason, normalised license)
JUDGE_CASES = [
    pytest.param(
        "apache-2.0", [], "allow", "Apache-2.0 is on the allow list", "Apache-2.0", id="hub-tag"
    ),
    pytest.param(
        " Apache-2.0 ", [], "allow", "Apache-2.0 is on the allow list", "Apache-2.0", id="spdx"
    ),
    pytest.param("MIT", [], "allow", "MIT is on the allow list", "MIT", id="policy-lower"),
    pytest.param(
        "agpl-3.0",
        [],
        "deny",
        "AGPL-3.0-only (copyleft) is on the deny list",
        "AGPL-3.0-only",
        id="gnu-tag-to-only",
    ),
    pytest.param(
        "agpl-3.0",
        [approval(license="agpl-3.0")],
        "deny",
        "AGPL-3.0-only (copyleft) is on the deny list",
        "AGPL-3.0-only",
        id="deny-list-beats-approval",
    ),
    pytest.param(
        "CC-BY-NC-4.0",
        [],
        "deny",
        "CC-BY-NC-4.0 (non-commercial) is on the deny list",
        "CC-BY-NC-4.0",
        id="case-insensitive-deny",
    ),
    pytest.param(
        "llama3.1", [], "deny", f"llama3.1 {NO_APPROVAL}", "llama3.1", id="review-no-approval"
    ),
    pytest.param(
        "llama3.1",
        [approval(license="LLAMA3.1")],
        "allow",
        "llama3.1 needs review: approved by Jane Doe on 2026-01-15",
        "llama3.1",
        id="review-approved",
    ),
    pytest.param(
        other(),
        [approval()],
        "allow",
        f"{OTHER_LABEL} needs review: approved by Jane Doe on 2026-01-15",
        "other",
        id="other-approved-as-other",
    ),
    pytest.param(
        other(),
        [approval(license="other:acme-private")],
        "allow",
        f"{OTHER_LABEL} needs review: approved by Jane Doe on 2026-01-15",
        "other",
        id="other-approved-by-name",
    ),
    pytest.param(
        other(),
        [approval(license="other:another-license")],
        "deny",
        f"{OTHER_LABEL} {NO_APPROVAL}",
        "other",
        id="other-approval-names-another-license",
    ),
    pytest.param(
        other("ACME-open"),
        [],
        "allow",
        f"other (license_name 'ACME-open', {LINK}) is on the allow list",
        "other",
        id="other-allowed-by-name",
    ),
    pytest.param(
        other(link=None),
        [approval()],
        "deny",
        "other (license_name 'acme-private', no license_link): a custom license needs a "
        "license_link to review (default deny)",
        "other",
        id="other-without-link",
    ),
    pytest.param(
        "llama3.1",
        [approval(subject="model:acme/gadget", license="llama3.1")],
        "deny",
        f"llama3.1 {NO_APPROVAL}",
        "llama3.1",
        id="approval-for-another-subject",
    ),
    pytest.param(
        "llama3.1",
        [approval(subject=f"{MODEL}@{SHA}", license="llama3.1")],
        "allow",
        "llama3.1 needs review: approved by Jane Doe on 2026-01-15",
        "llama3.1",
        id="approval-pinned-to-this-revision",
    ),
    pytest.param(
        "llama3.1",
        [approval(subject=f"{MODEL}@{'9' * 40}", license="llama3.1")],
        "deny",
        f"llama3.1 {NO_APPROVAL}",
        "llama3.1",
        id="approval-pinned-to-another-revision",
    ),
    pytest.param(None, [], "deny", "no license declared (default deny)", None, id="missing"),
    pytest.param("", [], "deny", "no license declared (default deny)", None, id="empty"),
    pytest.param(
        "gpl-3.0",
        [],
        "deny",
        "GPL-3.0-only (copyleft) is in no list of the policy (default deny)",
        "GPL-3.0-only",
        id="in-no-list",
    ),
    pytest.param(
        "my-own-license",
        [],
        "deny",
        "my-own-license (unclear) is in no list of the policy (default deny)",
        "my-own-license",
        id="unknown-tag",
    ),
]


@pytest.mark.parametrize(("declared", "approvals", "decision", "reason", "normal"), JUDGE_CASES)
def test_judge(policy, declared, approvals, decision, reason, normal):
    verdict = judge(SUBJECT, declared, policy, approvals)
    assert (verdict.subject, verdict.decision, verdict.reason, verdict.license) == (
        SUBJECT,
        decision,
        reason,
        normal,
    )
    if "approved by" in reason:
        assert verdict.approval == approvals[0].model_dump()  # copied into the audit trail
    else:
        assert verdict.approval is None


DATASET_CASES = [
    pytest.param(
        DatasetLicense("sst2", "cc-by-4.0"), "allow", "CC-BY-4.0 is on the allow list", id="decl"
    ),
    pytest.param(
        DatasetLicense("sst2", None, "mit", "/d/README.md"),
        "allow",
        "MIT is on the allow list",
        id="card-only",
    ),
    pytest.param(
        DatasetLicense("sst2", "CC-BY-4.0", "cc-by-4.0", "/d/README.md"),
        "allow",
        "CC-BY-4.0 is on the allow list",
        id="card-agrees",
    ),
    pytest.param(
        DatasetLicense("sst2", "mit", "cc-by-nc-4.0", "/d/README.md"),
        "deny",
        "the config declares MIT but the dataset card /d/README.md says CC-BY-NC-4.0",
        id="card-contradicts",
    ),
    pytest.param(
        DatasetLicense("sst2", None), "deny", "no license declared (default deny)", id="none"
    ),
]


@pytest.mark.parametrize(("dataset", "decision", "reason"), DATASET_CASES)
def test_judge_dataset(policy, dataset, decision, reason):
    verdict = judge_dataset(dataset, policy, [])
    assert (verdict.subject, verdict.decision, verdict.reason) == (
        "dataset:sst2",
        decision,
        reason,
    )


def test_dataset_approval_is_for_that_dataset_only(policy):
    data = DatasetLicense("private", "other:acme-private")
    assert judge_dataset(data, policy, [approval()]).decision == "deny"
    assert judge_dataset(data, policy, [approval("dataset:private")]).decision == "deny"  # no link
    assert judge_dataset(data, policy, [approval("dataset:private", "llama3.1")]).decision == "deny"


def candidate(license: str | None = "apache-2.0") -> Candidate:
    return Candidate(
        "acme/widget", SHA, "bert", license, None, None, 100, True, ("model.safetensors",)
    )


AUDIT_CASES = [
    pytest.param("apache-2.0", {"sst2": "cc-by-4.0"}, [], "allow", ["allow", "allow"], id="ok"),
    pytest.param(
        "apache-2.0", {"sst2": "cc-by-nc-4.0"}, [], "deny", ["allow", "deny"], id="dataset-denied"
    ),
    pytest.param(
        "apache-2.0", {"sst2": None}, [], "deny", ["allow", "deny"], id="dataset-without-license"
    ),
    pytest.param("gpl-3.0", {"sst2": "cc-by-4.0"}, [], "deny", ["deny", "allow"], id="model"),
    pytest.param(
        "llama3.1",
        {"a": "mit", "b": "llama3.1"},
        [approval(license="llama3.1"), approval(subject="dataset:b", license="llama3.1")],
        "allow",
        ["allow"] * 3,
        id="approved-review-model-and-dataset",
    ),
    pytest.param(
        "llama3.1",
        {"a": "mit", "b": "llama3.1"},
        [approval(license="llama3.1")],
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
    data = [DatasetLicense(name, lic) for name, lic in datasets.items()]
    record = audit(candidate(model_license), None, data, policy, POLICY_SHA, approvals)
    assert isinstance(record, AuditRecord)
    assert record.verdict == verdict
    assert [s.decision for s in record.subjects] == decisions
    assert [s.subject for s in record.subjects] == [SUBJECT] + [f"dataset:{n}" for n in datasets]
    assert (record.policy_version, record.policy_sha256, record.intended_use) == (
        "test-1",
        POLICY_SHA,
        "commercial",
    )
    assert record.checks == () and record.model == f"acme/widget@{SHA}"
    assert len(record.reasons) == len(decisions)
    assert record.reasons[0].startswith(f"{SUBJECT}: {decisions[0]} (")
    assert len(record.denials) == decisions.count("deny")


def test_audit_record_to_dict_and_markdown(policy):
    record = audit(
        candidate("llama3.1"),
        None,
        [DatasetLicense("sst2", "cc-by-4.0"), DatasetLicense("web", None)],
        policy,
        POLICY_SHA,
        [approval(license="llama3.1")],
        skipped=[{"model": "acme/first@" + "1" * 40, "reasons": ["no license declared"]}],
        candidates=[{"rank": 1, "model": "acme/widget"}],
    )
    data = record.to_dict()
    assert data["verdict"] == "deny"
    assert data["subjects"][0]["approval"]["approved_by"] == "Jane Doe"
    assert data["subjects"][0]["license_class"] == "use-restricted"
    assert record.discovery_table() == {
        "chosen": f"acme/widget@{SHA}",
        "candidates": [{"rank": 1, "model": "acme/widget"}],
    }
    text = to_markdown(record)
    assert text.startswith(f"## License and supply-chain audit of `acme/widget@{SHA}`: **DENY**")
    assert f"`{POLICY_SHA[:12]}`" in text and "intended use: commercial" in text
    for subject in record.subjects:
        assert f"| `{subject.subject}` | {subject.license or '(none)'} |" in text
    assert "| `dataset:web` | (none) |  | deny |" in text
    assert "Skipped `acme/first@" in text


def test_shipped_policy_allows_the_quickstart():
    from tasks.core.config.loader import load_config

    experiment = REPO_ROOT / "configs/experiments/sst2-minilm-lora.yaml"
    loaded = load_config(experiment)
    record = audit(
        candidate("apache-2.0"),  # what the all-MiniLM-L6-v2 model card declares
        None,
        dataset_licenses(loaded.config.data),
        loaded.license_policy,
        loaded.license_policy_sha256,
        loaded.config.license.approvals,
    )
    assert record.verdict == "allow", record.reasons


def _data(tmp_path: Path, license: str | None) -> DataSpec:
    for name in ("train.tsv", "dev.tsv"):
        (tmp_path / name).write_text("label\ttext\n0\ta\n")
    split = {"text_column": "text", "label_column": "label"}
    return DataSpec(
        name="local",
        license=license,
        labels=("a", "b"),
        train={"path": tmp_path / "train.tsv", **split},
        eval={"path": tmp_path / "dev.tsv", **split},
    )


def test_dataset_licenses_reads_a_card_beside_the_files(tmp_path):
    assert dataset_licenses(_data(tmp_path, "mit")) == (DatasetLicense("local", "mit"),)
    (tmp_path / "README.md").write_text("# just a readme, no front matter\n")
    assert dataset_licenses(_data(tmp_path, "mit")) == (DatasetLicense("local", "mit"),)
    (tmp_path / "README.md").write_text("---\nlicense: cc-by-nc-4.0\n---\n# data\n")
    (found,) = dataset_licenses(_data(tmp_path, "mit"))
    assert found == DatasetLicense("local", "mit", "cc-by-nc-4.0", str(tmp_path / "README.md"))


POLICY_CASES = [
    pytest.param({"allow": ["mit", "MIT"]}, "'MIT' is listed twice in allow", id="dup-spelling"),
    pytest.param(
        {"deny": ["agpl-3.0", "Apache-2.0"]},
        "'Apache-2.0' is in both allow and deny",
        id="spdx-vs-hub-tag",
    ),
    pytest.param(
        {"allow": ["apache-2.0", "cc-by-nc-4.0"], "deny": []},
        "allow: 'cc-by-nc-4.0' is a non-commercial license but intended_use is commercial",
        id="nc-in-commercial-allow",
    ),
]


@pytest.mark.parametrize(("change", "message"), POLICY_CASES)
def test_policy_validation(change, message):
    base = {
        "kind": "license-policy",
        "version": "1",
        "intended_use": "commercial",
        "allow": ["apache-2.0"],
        "deny": ["agpl-3.0"],
    }
    with pytest.raises(ValidationError, match=message):
        LicensePolicy.model_validate(base | change)
    research = LicensePolicy.model_validate(
        base | {"intended_use": "research", "allow": ["apache-2.0", "cc-by-nc-4.0"]}
    )
    assert research.allow == ("apache-2.0", "cc-by-nc-4.0")
