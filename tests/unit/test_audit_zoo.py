"""Acceptance: the shipped policy's verdict on a zoo of tiny models, row by row, reasons included."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.core.audit.licenses import audit
from tasks.core.audit.supply_chain import gather_facts
from tasks.core.catalog.mirror import MirrorCatalog
from tasks.core.config.audit import Approval, DiscoverySpec, SupplyChainPolicy
from tasks.core.config.loader import load_policy
from tasks.core.discovery import discover
from tests.unit.license_zoo import LEAKED_TOKEN, LICENSE_LINK, build_zoo

SHIPPED_POLICY = Path(__file__).resolve().parents[2] / "configs/policies/licenses.yaml"
PICKLE_DENIED = (
    "weights: weights only as pickle (pytorch_model.bin), which can run code when loaded; "
    "supply_chain.allow_pickle is false"
)
REMOTE_CODE_DENIED = (
    "remote-code: custom code needs trust_remote_code (auto_map in config.json: AutoConfig, "
    "AutoModelForSequenceClassification; code files: modeling_tiny.py); zoo/remote-code is not "
    "on supply_chain.remote_code_allowlist"
)
# name -> (verdict, normalised license, every reason for the denial; "{m}" is the model subject)
SHIPPED_VERDICTS = {
    "apache": ("allow", "Apache-2.0", []),
    "mit": ("allow", "MIT", []),
    "noncommercial": (
        "deny",
        "CC-BY-NC-4.0",
        ["{m}: CC-BY-NC-4.0 (non-commercial) is on the deny list"],
    ),
    "llama": (
        "deny",
        "llama3.1",
        ["{m}: llama3.1 needs review and no approval names 'model:zoo/llama' in the config"],
    ),
    "custom": (
        "deny",
        "other",
        [
            f"{{m}}: other (license_name 'acme-community-1.0', {LICENSE_LINK}) needs review and "
            "no approval names 'model:zoo/custom' in the config"
        ],
    ),
    "unlicensed": ("deny", None, ["{m}: no license declared (default deny)"]),
    "pickle-only": ("deny", "Apache-2.0", ["{m}: " + PICKLE_DENIED]),
    "remote-code": ("deny", "Apache-2.0", ["{m}: " + REMOTE_CODE_DENIED]),
    "leaky": (
        "deny",
        "Apache-2.0",
        [
            "{m}: secrets: possible secret(s): Hugging Face token in README.md line 10 "
            "(hf_A… (39 chars))"
        ],
    ),
}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    revisions = build_zoo(root / "work", root / "hub")
    return MirrorCatalog(root / "hub"), revisions


def _audit(catalog, name, policy, approvals=()):
    candidate = catalog.resolve(f"zoo/{name}")
    facts = gather_facts(catalog, candidate)
    return audit(candidate, facts, (), policy, "f" * 64, approvals)


@pytest.mark.parametrize("name", list(SHIPPED_VERDICTS))
def test_shipped_policy_verdict_table(zoo, name):
    catalog, revisions = zoo
    verdict, license_id, denials = SHIPPED_VERDICTS[name]
    record = _audit(catalog, name, load_policy(SHIPPED_POLICY))
    subject = f"model:zoo/{name}@{revisions[name]}"
    assert record.model == f"zoo/{name}@{revisions[name]}"
    assert (record.verdict, record.subjects[0].license) == (verdict, license_id)
    assert record.denials == [d.format(m=subject) for d in denials]
    # Every row carries the whole record a reviewer signs.
    assert [c.check for c in record.checks] == ["weights", "integrity", "remote-code", "secrets"]
    assert record.policy_version == "2026.11-2"
    weights = "pytorch_model.bin" if name == "pickle-only" else "model.safetensors"
    assert list(record.file_hashes) == [weights]
    assert len(record.file_hashes[weights]) == 64
    assert record.card_excerpt.startswith("---\n")
    assert LEAKED_TOKEN not in str(record.to_dict())


def test_allowed_row_lists_every_reason(zoo):
    catalog, revisions = zoo
    record = _audit(catalog, "apache", load_policy(SHIPPED_POLICY))
    subject = f"model:zoo/apache@{revisions['apache']}"
    assert record.reasons == [
        f"{subject}: allow (Apache-2.0 is on the allow list)",
        f"{subject}: weights allow (no pickle weights (model.safetensors))",
        f"{subject}: integrity allow (sha256 recorded for 1 weight file(s), 1 matched against "
        "the catalog's id)",
        f"{subject}: remote-code allow (no custom code (no auto_map, no *.py files))",
        f"{subject}: secrets allow (nothing secret-like in 4 scanned file(s))",
    ]


def _approval(subject: str, license: str) -> Approval:
    return Approval(
        subject=subject,
        license=license,
        approved_by="Legal <legal@example.com>",
        date="2026-11-02",
        reason="reviewed the license text; internal use approved",
    )


def test_review_licenses_pass_with_approvals(zoo):
    catalog, revisions = zoo
    policy = load_policy(SHIPPED_POLICY)
    approvals = [
        _approval("model:zoo/llama", "llama3.1"),
        _approval(f"model:zoo/custom@{revisions['custom']}", "other:acme-community-1.0"),
    ]
    llama = _audit(catalog, "llama", policy, approvals)
    custom = _audit(catalog, "custom", policy, approvals)
    assert (llama.verdict, custom.verdict) == ("allow", "allow")
    assert llama.subjects[0].reason == (
        "llama3.1 needs review: approved by Legal <legal@example.com> on 2026-11-02"
    )
    assert custom.subjects[0].approval["reason"].startswith("reviewed the license text")
    # An approval pinned to another revision does not carry over.
    stale = [_approval("model:zoo/custom@" + "0" * 40, "other")]
    assert _audit(catalog, "custom", policy, stale).verdict == "deny"


def test_supply_chain_switches_of_the_policy(zoo):
    catalog, _ = zoo
    shipped = load_policy(SHIPPED_POLICY)
    lenient = shipped.model_copy(
        update={
            "supply_chain": SupplyChainPolicy(
                allow_pickle=True, remote_code_allowlist=("zoo/*",), secrets="warn"
            )
        }
    )
    for name in ("pickle-only", "remote-code", "leaky"):
        record = _audit(catalog, name, lenient)
        assert record.verdict == "allow", record.denials
        assert [c.decision for c in record.checks].count("warn") == 1


def test_discovery_over_the_zoo_ranks_and_rejects(zoo):
    catalog, _ = zoo
    found = discover(DiscoverySpec(max_candidates=20), catalog)
    assert [r.repo_id for r in found.rejected] == ["zoo/pickle-only"]
    assert found.rejected[0].reasons == ("no safetensors weights (only ['pytorch_model.bin'])",)
    # Same size everywhere: permissive licenses first, the unlicensed model last, ties by id.
    assert [c.repo_id.removeprefix("zoo/") for c in found.candidates] == [
        "apache",
        "leaky",
        "mit",
        "remote-code",
        "custom",
        "llama",
        "noncommercial",
        "unlicensed",
    ]
    assert all(len(c.revision) == 40 for c in found.candidates)
    permissive = discover(DiscoverySpec(license_classes=("permissive",)), catalog)
    assert {c.license_id.id for c in permissive.candidates} == {"Apache-2.0", "MIT"}
