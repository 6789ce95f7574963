"""Supply-chain checks on a model repo: what loading it would execute, and what it leaks.

A license says whether we *may* use a model; these checks say whether loading it is safe and
traceable. Pickle weights (``.bin``, ``.pt``, ``.ckpt``) run arbitrary code on ``torch.load``;
``auto_map`` entries and ``*.py`` files make transformers import repo code under
``trust_remote_code``; a token pasted into a card or config is a credential leak we would copy
into our own registry. Every weight file's sha256 is recorded so the audited bytes can be
matched later. Reading the files (``gather_facts``) is I/O through a catalog; judging them
(``judge_repo``) is pure.
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass, field
from typing import Literal

from tasks.core.catalog.base import PICKLE_SUFFIXES, WEIGHT_SUFFIXES, Candidate, FileHash
from tasks.core.config.audit import SupplyChainPolicy
from tasks.core.errors import CatalogError

Decision = Literal["allow", "warn", "deny"]
MAX_SCAN_BYTES = 32 * 1024 * 1024
CARD_EXCERPT_CHARS = 1500
# Card, config and tokenizer files: the small text files a repo ships besides weights.
SCANNED_NAMES = ("README.md", "tokenizer.json", "special_tokens_map.json", "added_tokens.json")
SECRET_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("Hugging Face token", re.compile(r"\bhf_[A-Za-z0-9]{30,}")),
    ("AWS access key id", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("GitHub token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})")),
    ("OpenAI API key", re.compile(r"\bsk-(?:proj-)?[A-Za-z0-9_-]{32,}")),
    ("Slack token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    ("Google API key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}")),
    ("private key", re.compile(r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----")),
    (
        "assigned secret",
        re.compile(
            r"(?i)\b(?:api[_-]?key|secret[_-]?key|access[_-]?token|auth[_-]?token|password)"
            r"[\"']?\s*[:=]\s*[\"']?([A-Za-z0-9_\-/+=]{16,})"
        ),
    ),
)


@dataclass(frozen=True)
class Secret:
    """Where something that looks like a secret was found; never the secret itself."""

    file: str
    line: int
    kind: str
    redacted: str  # first four characters and the length


@dataclass(frozen=True)
class RepoFacts:
    """What the audit read from one pinned repo revision."""

    files: tuple[str, ...]
    auto_map: dict[str, dict] = field(default_factory=dict)  # file -> its auto_map entry
    scanned: tuple[str, ...] = ()
    secrets: tuple[Secret, ...] = ()
    weight_hashes: tuple[FileHash, ...] = ()
    card_excerpt: str = ""
    unreadable: tuple[str, ...] = ()  # "file: why"


@dataclass(frozen=True)
class RepoCheck:
    """One supply-chain finding and what the policy makes of it."""

    check: str
    decision: Decision
    reason: str


def _redact(value: str) -> str:
    return f"{value[:4]}… ({len(value)} chars)"


def find_secrets(filename: str, text: str) -> list[Secret]:
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        for kind, pattern in SECRET_PATTERNS:
            for match in pattern.finditer(line):
                value = match.group(match.lastindex or 0)
                found.append(Secret(filename, number, kind, _redact(value)))
    return found


def redact_secrets(text: str) -> str:
    """The text with every secret-like string masked (for excerpts that leave the audit)."""
    for _, pattern in SECRET_PATTERNS:
        text = pattern.sub(lambda m: _redact(m.group(0)).split(" ")[0], text)
    return text


def card_excerpt(card: str | None) -> str:
    """The card's front matter and the start of its text, secrets masked."""
    if not card:
        return ""
    text = card if len(card) <= CARD_EXCERPT_CHARS else card[:CARD_EXCERPT_CHARS] + "\n[…]"
    return redact_secrets(text)


def scanned_files(files: tuple[str, ...]) -> list[str]:
    """Card, config (*config*.json) and tokenizer files of the repo, in name order."""
    return [
        f
        for f in files
        if f.rsplit("/", 1)[-1] in SCANNED_NAMES
        or (f.endswith(".json") and "config" in f.rsplit("/", 1)[-1])
    ]


def gather_facts(catalog, candidate: Candidate) -> RepoFacts:
    """Read what the checks need through the catalog (local files, or Hub downloads)."""
    texts: dict[str, str] = {}
    unreadable = []
    for name in scanned_files(candidate.files):
        try:
            text = catalog.read_text(candidate, name)
        except (CatalogError, OSError) as exc:
            unreadable.append(f"{name}: {exc}")
            continue
        if text is not None and len(text) <= MAX_SCAN_BYTES:
            texts[name] = text
    auto_map = {}
    for name in ("config.json", "tokenizer_config.json"):
        try:
            entry = json.loads(texts.get(name) or "{}").get("auto_map")
        except (json.JSONDecodeError, AttributeError):
            unreadable.append(f"{name}: not valid JSON")
            continue
        if entry:
            auto_map[name] = entry
    try:
        hashes = catalog.weight_hashes(candidate)
    except (CatalogError, OSError) as exc:
        hashes = ()
        unreadable.append(f"weight files: {exc}")
    return RepoFacts(
        files=candidate.files,
        auto_map=auto_map,
        scanned=tuple(texts),
        secrets=tuple(s for name, text in texts.items() for s in find_secrets(name, text)),
        weight_hashes=hashes,
        card_excerpt=card_excerpt(texts.get("README.md")),
        unreadable=tuple(unreadable),
    )


def _weights(facts: RepoFacts, policy: SupplyChainPolicy) -> RepoCheck:
    weights = [f for f in facts.files if f.endswith(WEIGHT_SUFFIXES)]
    pickles = [f for f in weights if f.endswith(PICKLE_SUFFIXES)]
    others = [f for f in weights if f not in pickles]
    if not weights:
        return RepoCheck("weights", "deny", "no weight files in the repo")
    if others and pickles:
        return RepoCheck(
            "weights",
            "allow",
            f"non-pickle weights present ({', '.join(others)}); pickle files "
            f"({', '.join(pickles)}) are not loaded",
        )
    if others:
        return RepoCheck("weights", "allow", f"no pickle weights ({', '.join(others)})")
    if policy.allow_pickle:
        return RepoCheck(
            "weights", "warn", f"weights only as pickle ({', '.join(pickles)}): allow_pickle is on"
        )
    return RepoCheck(
        "weights",
        "deny",
        f"weights only as pickle ({', '.join(pickles)}), which can run code when loaded; "
        "supply_chain.allow_pickle is false",
    )


def _integrity(facts: RepoFacts) -> RepoCheck:
    bad = [h for h in facts.weight_hashes if not h.verified]
    if bad:
        detail = "; ".join(f"{h.path}: sha256 {h.sha256[:12]} != {h.expected[:12]}" for h in bad)
        return RepoCheck(
            "integrity", "deny", f"weight file content does not match its id ({detail})"
        )
    checked = sum(1 for h in facts.weight_hashes if h.expected)
    return RepoCheck(
        "integrity",
        "allow",
        f"sha256 recorded for {len(facts.weight_hashes)} weight file(s), "
        f"{checked} matched against the catalog's id",
    )


def on_allowlist(repo_id: str, allowlist: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(repo_id, pattern) for pattern in allowlist)


def _remote_code(repo_id: str, facts: RepoFacts, policy: SupplyChainPolicy) -> RepoCheck:
    code = [f for f in facts.files if f.endswith(".py")]
    parts = [f"auto_map in {name}: {', '.join(sorted(m))}" for name, m in facts.auto_map.items()]
    if code:
        parts.append(f"code files: {', '.join(code)}")
    if not parts:
        return RepoCheck("remote-code", "allow", "no custom code (no auto_map, no *.py files)")
    what = "; ".join(parts)
    if on_allowlist(repo_id, policy.remote_code_allowlist):
        return RepoCheck(
            "remote-code", "warn", f"custom code ({what}) accepted: on the remote-code allowlist"
        )
    return RepoCheck(
        "remote-code",
        "deny",
        f"custom code needs trust_remote_code ({what}); {repo_id} is not on "
        "supply_chain.remote_code_allowlist",
    )


def _secrets(facts: RepoFacts, policy: SupplyChainPolicy) -> RepoCheck:
    if not facts.secrets:
        return RepoCheck(
            "secrets", "allow", f"nothing secret-like in {len(facts.scanned)} scanned file(s)"
        )
    found = "; ".join(f"{s.kind} in {s.file} line {s.line} ({s.redacted})" for s in facts.secrets)
    decision: Decision = "deny" if policy.secrets == "deny" else "warn"
    return RepoCheck("secrets", decision, f"possible secret(s): {found}")


def judge_repo(
    candidate: Candidate, facts: RepoFacts, policy: SupplyChainPolicy
) -> list[RepoCheck]:
    """Every supply-chain check for one repo revision, in a fixed order."""
    checks = [
        _weights(facts, policy),
        _integrity(facts),
        _remote_code(candidate.repo_id, facts, policy),
        _secrets(facts, policy),
    ]
    if facts.unreadable:
        checks.append(
            RepoCheck("readable", "deny", f"could not read: {'; '.join(facts.unreadable)}")
        )
    if candidate.gated:
        checks.append(
            RepoCheck(
                "access",
                "warn",
                f"gated on the Hub ({candidate.gated} approval): keep the accepted terms on file",
            )
        )
    return checks
