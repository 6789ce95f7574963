"""Supply-chain checks: secrets, pickle weights, custom code, weight integrity, as tables."""

from __future__ import annotations

import pytest

from tasks.core.audit.supply_chain import (
    RepoFacts,
    card_excerpt,
    find_secrets,
    gather_facts,
    judge_repo,
    scanned_files,
)
from tasks.core.catalog.base import Candidate, FileHash
from tasks.core.catalog.mirror import MirrorCatalog, import_folder
from tasks.core.config.audit import SupplyChainPolicy

SECRET_CASES = [
    pytest.param("token = hf_" + "a1B2" * 9, "Hugging Face token", id="hf"),
    pytest.param("AKIA" + "ABCDEFGHIJKLMNOP", "AWS access key id", id="aws"),
    pytest.param("ghp_" + "x" * 36, "GitHub token", id="github"),
    pytest.param("github_pat_" + "A1_" * 10, "GitHub token", id="github-pat"),
    pytest.param("OPENAI=sk-proj-" + "Ab1" * 12, "OpenAI API key", id="openai"),
    pytest.param("xoxb-1234567890-abcdef", "Slack token", id="slack"),
    pytest.param("key: AIza" + "B" * 35, "Google API key", id="google"),
    pytest.param("-----BEGIN RSA PRIVATE KEY-----", "private key", id="pem"),
    pytest.param('"api_key": "0123456789abcdef0123"', "assigned secret", id="json-api-key"),
    pytest.param("password=CorrectHorseBattery1", "assigned secret", id="password"),
]


@pytest.mark.parametrize(("line", "kind"), SECRET_CASES)
def test_find_secrets(line, kind):
    (found,) = find_secrets("config.json", f"first line\n{line}\n")
    assert (found.file, found.line, found.kind) == ("config.json", 2, kind)
    assert found.redacted.endswith(" chars)") and len(found.redacted) < 20


@pytest.mark.parametrize(
    "text",
    [
        '{"pad_token": "[PAD]", "model_max_length": 512, "tokenizer_class": "BertTokenizer"}',
        '"_name_or_path": "sentence-transformers/all-MiniLM-L6-v2"',
        "sha256: " + "a" * 64,
        "use your token: hf_xxx (see docs)",
        "password: <set me>",
        "sk-short",
    ],
    ids=["tokenizer-config", "name-or-path", "sha", "placeholder", "password-placeholder", "sk"],
)
def test_no_false_alarm(text):
    assert find_secrets("f", text) == []


def test_card_excerpt_masks_secrets_and_is_bounded():
    token = "hf_" + "Z" * 34
    text = card_excerpt(f"---\nlicense: mit\n---\nexport HF_TOKEN={token}\n" + "x" * 5000)
    assert token not in text and "hf_Z…" in text
    assert len(text) < 1600 and text.endswith("[…]")
    assert card_excerpt(None) == ""


def test_scanned_files_are_card_config_and_tokenizer():
    files = (
        "1_Pooling/config.json",
        "README.md",
        "config.json",
        "merges.txt",
        "model.safetensors",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
    )
    assert scanned_files(files) == [
        "1_Pooling/config.json",
        "README.md",
        "config.json",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]


CANDIDATE = Candidate("acme/widget", "a" * 40, "bert", "mit", None, None, 1, True, ())
GOOD = FileHash("model.safetensors", "1" * 64, "1" * 64)
POLICY = SupplyChainPolicy()

# (facts, policy, check name, decision, reason starts with)
JUDGE_CASES = [
    pytest.param(RepoFacts(files=()), POLICY, "weights", "deny", "no weight files", id="none"),
    pytest.param(
        RepoFacts(files=("model.onnx",)),
        POLICY,
        "weights",
        "allow",
        "no pickle weights (model.onnx)",
        id="onnx",
    ),
    pytest.param(
        RepoFacts(files=("model.safetensors", "pytorch_model.bin")),
        POLICY,
        "weights",
        "allow",
        "non-pickle weights present (model.safetensors); pickle files (pytorch_model.bin) are "
        "not loaded",
        id="both",
    ),
    pytest.param(
        RepoFacts(files=("model.ckpt", "pytorch_model.bin")),
        POLICY,
        "weights",
        "deny",
        "weights only as pickle (model.ckpt, pytorch_model.bin)",
        id="pickle-only",
    ),
    pytest.param(
        RepoFacts(files=("pytorch_model.bin",)),
        SupplyChainPolicy(allow_pickle=True),
        "weights",
        "warn",
        "weights only as pickle (pytorch_model.bin): allow_pickle is on",
        id="pickle-allowed",
    ),
    pytest.param(
        RepoFacts(files=("model.safetensors",), weight_hashes=(GOOD,)),
        POLICY,
        "integrity",
        "allow",
        "sha256 recorded for 1 weight file(s), 1 matched",
        id="integrity-ok",
    ),
    pytest.param(
        RepoFacts(
            files=("model.safetensors",),
            weight_hashes=(FileHash("model.safetensors", "2" * 64, "1" * 64),),
        ),
        POLICY,
        "integrity",
        "deny",
        "weight file content does not match its id (model.safetensors: sha256 222222222222 != "
        "111111111111)",
        id="integrity-mismatch",
    ),
    pytest.param(
        RepoFacts(files=("model.safetensors", "tokenizer_config.json"), auto_map={"t": {"A": 1}}),
        POLICY,
        "remote-code",
        "deny",
        "custom code needs trust_remote_code (auto_map in t: A); acme/widget is not on",
        id="auto-map-only",
    ),
    pytest.param(
        RepoFacts(files=("model.safetensors", "handler.py")),
        POLICY,
        "remote-code",
        "deny",
        "custom code needs trust_remote_code (code files: handler.py)",
        id="py-only",
    ),
    pytest.param(
        RepoFacts(files=("model.safetensors", "handler.py")),
        SupplyChainPolicy(remote_code_allowlist=("acme/*",)),
        "remote-code",
        "warn",
        "custom code (code files: handler.py) accepted: on the remote-code allowlist",
        id="org-allowlisted",
    ),
    pytest.param(
        RepoFacts(files=("model.safetensors", "handler.py")),
        SupplyChainPolicy(remote_code_allowlist=("acme/other", "acm/*")),
        "remote-code",
        "deny",
        "custom code needs trust_remote_code",
        id="allowlist-is-exact",
    ),
    pytest.param(
        RepoFacts(files=("model.safetensors",), unreadable=("README.md: gated",)),
        POLICY,
        "readable",
        "deny",
        "could not read: README.md: gated",
        id="unreadable",
    ),
]


@pytest.mark.parametrize(("facts", "policy", "check", "decision", "reason"), JUDGE_CASES)
def test_judge_repo(facts, policy, check, decision, reason):
    checks = {c.check: c for c in judge_repo(CANDIDATE, facts, policy)}
    assert checks[check].decision == decision
    assert checks[check].reason.startswith(reason), checks[check].reason


def test_gated_hub_model_is_noted_not_refused():
    gated = Candidate(**{**CANDIDATE.__dict__, "gated": "manual"})
    checks = judge_repo(gated, RepoFacts(files=("model.safetensors",)), POLICY)
    assert checks[-1].check == "access" and checks[-1].decision == "warn"


def test_gather_facts_notices_a_tampered_mirror(tiny_model, tmp_path):
    imported = import_folder(tiny_model.path, "acme/widget", tmp_path / "hub")
    catalog = MirrorCatalog(tmp_path / "hub")
    candidate = catalog.resolve("acme/widget")
    facts = gather_facts(catalog, candidate)
    assert facts.weight_hashes[0].verified and facts.secrets == ()
    assert facts.scanned == ("README.md", "config.json", "tokenizer.json", "tokenizer_config.json")
    blob = (imported.snapshot / "model.safetensors").resolve()
    data = blob.read_bytes()
    blob.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # one byte changed after the import
    checks = judge_repo(candidate, gather_facts(catalog, candidate), POLICY)
    assert [c.decision for c in checks if c.check == "integrity"] == ["deny"]
