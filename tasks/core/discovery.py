"""Model discovery over the local mirror (the Hugging Face cache).

Each cached repo is read the way the Hub describes it: ``config.json`` says the architecture,
the model card (``README.md`` front matter) the license, task and library, and the safetensors
headers the parameter count. A candidate is always pinned to the commit sha ``refs/main``
points at, so later stages load exactly what was audited.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field, replace
from pathlib import Path

from huggingface_hub import ModelCard, scan_cache_dir
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
)

from tasks.core.config import DiscoverySpec
from tasks.core.mirror import MirrorError, resolve_revision, snapshot_path

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
TASK_ARCHITECTURES = {"text-classification": MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES}


class DiscoveryError(ValueError):
    """No usable model: the pinned one is missing or unfit, or nothing matches."""


@dataclass(frozen=True)
class Candidate:
    """One model revision as discovery saw it; the reference every later stage receives."""

    repo_id: str
    revision: str
    model_type: str | None
    license: str | None
    pipeline_tag: str | None
    library_name: str | None
    parameters: int | None
    safetensors: bool
    files: tuple[str, ...]
    score: float = 0.0
    reasons: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ref(self) -> str:
        return f"{self.repo_id}@{self.revision}"


def safetensors_parameters(path: Path) -> int:
    """Count parameters from a safetensors header without loading the tensors."""
    with path.open("rb") as handle:
        (size,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(size))
    total = 0
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        count = 1
        for dim in meta["shape"]:
            count *= dim
        total += count
    return total


def read_candidate(repo_id: str, revision: str, snapshot: Path) -> Candidate:
    files = tuple(
        sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file())
    )
    config = json.loads((snapshot / "config.json").read_text()) if "config.json" in files else {}
    card = ModelCard.load(snapshot / "README.md").data if "README.md" in files else None
    weights = [snapshot / f for f in files if f.endswith(".safetensors") and "/" not in f]
    license_id = getattr(card, "license", None) if card else None
    return Candidate(
        repo_id=repo_id,
        revision=revision,
        model_type=config.get("model_type"),
        license=license_id.lower() if isinstance(license_id, str) else None,
        pipeline_tag=getattr(card, "pipeline_tag", None) if card else None,
        library_name=getattr(card, "library_name", None) if card else None,
        parameters=sum(safetensors_parameters(w) for w in weights) if weights else None,
        safetensors=bool(weights),
        files=files,
    )


def check_fit(candidate: Candidate, spec: DiscoverySpec) -> list[str]:
    """Reasons the candidate cannot serve this experiment (empty: it fits)."""
    problems = []
    supported = TASK_ARCHITECTURES[spec.task]
    if candidate.model_type not in supported:
        problems.append(f"architecture {candidate.model_type!r} has no {spec.task} head")
    if spec.require_safetensors and not candidate.safetensors:
        pickles = [f for f in candidate.files if f.endswith(PICKLE_SUFFIXES)]
        problems.append(f"no safetensors weights (only {pickles or 'no weights'})")
    if spec.max_parameters and candidate.parameters and candidate.parameters > spec.max_parameters:
        problems.append(f"{candidate.parameters:,} parameters > max {spec.max_parameters:,}")
    return problems


def score(candidate: Candidate) -> tuple[float, tuple[str, ...]]:
    """Deterministic preference: fewer parameters train faster on the machines we target."""
    reasons = []
    value = 0.0
    if candidate.parameters:
        value += 1e8 / candidate.parameters
        reasons.append(f"{candidate.parameters / 1e6:.1f}M parameters")
    if candidate.license:
        value += 1.0
        reasons.append(f"license {candidate.license} declared")
    return round(value, 4), tuple(reasons)


def mirror_revisions(cache_dir: Path) -> list[tuple[str, str, Path]]:
    """(repo_id, revision at refs/main, snapshot path) of every model in the cache."""
    if not Path(cache_dir).is_dir():
        return []
    found = []
    for repo in scan_cache_dir(cache_dir).repos:
        if repo.repo_type != "model":
            continue
        for rev in repo.revisions:
            if "main" in rev.refs:
                found.append((repo.repo_id, rev.commit_hash, rev.snapshot_path))
    return sorted(found)


def discover(spec: DiscoverySpec, cache_dir: Path) -> list[Candidate]:
    """Ranked candidates, best first; the pinned model alone when the config names one."""
    if spec.repo_id:
        try:
            revision = resolve_revision(cache_dir, spec.repo_id, spec.revision)
        except MirrorError as exc:
            raise DiscoveryError(
                f"{exc}; import it with 'loraflow hub import PATH --repo-id {spec.repo_id}'"
            ) from None
        candidate = read_candidate(
            spec.repo_id, revision, snapshot_path(cache_dir, spec.repo_id, revision)
        )
        problems = check_fit(candidate, spec)
        if problems:
            raise DiscoveryError(f"{candidate.ref} cannot be used: {'; '.join(problems)}")
        value, reasons = score(candidate)
        return [_with_score(candidate, value, ("pinned by config", *reasons))]

    ranked, rejected = [], []
    for repo_id, revision, snapshot in mirror_revisions(cache_dir):
        candidate = read_candidate(repo_id, revision, snapshot)
        problems = check_fit(candidate, spec)
        if problems:
            rejected.append(f"{repo_id}: {'; '.join(problems)}")
            continue
        value, reasons = score(candidate)
        ranked.append(_with_score(candidate, value, reasons))
    if not ranked:
        detail = (
            "; ".join(rejected)
            if rejected
            else (
                "the mirror is empty: add a model with 'loraflow hub import PATH --repo-id ORG/NAME'"
                " (or 'loraflow hub seed')"
            )
        )
        raise DiscoveryError(f"no model in {cache_dir} fits task {spec.task}: {detail}")
    ranked.sort(key=lambda c: (-c.score, c.repo_id))
    return ranked[: spec.max_candidates]


def _with_score(candidate: Candidate, value: float, reasons: tuple[str, ...]) -> Candidate:
    return replace(candidate, score=value, reasons=reasons)
