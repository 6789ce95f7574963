"""Model discovery: search a catalog, drop what cannot serve the experiment, rank the rest.

The ranking policy comes from the config (``DiscoverySpec``): hard limits (a head for the
task, safetensors, parameters, weight memory, downloads, license class, library, language,
pipeline tag) reject a candidate with a reason; a deterministic score orders the ones left,
each point with its reason, ties broken by repo id. Every candidate is pinned to a commit sha
by the catalog. A config that names ``repo_id`` skips the search (but not the audit): the pinned
model is only checked against the hard limits that make it unusable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from tasks.core.catalog.base import PICKLE_SUFFIXES, Candidate, Catalog, CatalogQuery
from tasks.core.catalog.heads import task_heads
from tasks.core.config.audit import DiscoverySpec
from tasks.core.errors import CatalogError, DiscoveryError

TASK_ARCHITECTURES = task_heads()  # {task: model types transformers has a head for}
LICENSE_POINTS = {"permissive": 1.0, "weak-copyleft": 0.5}
GATED_POINTS = -0.5
TASK_TAG_POINTS = 0.5


@dataclass(frozen=True)
class Rejected:
    repo_id: str
    revision: str
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Discovery:
    """The outcome of discovery: ranked candidates (best first) and what was left out, why."""

    source: str
    pinned: bool
    candidates: tuple[Candidate, ...]
    rejected: tuple[Rejected, ...] = field(default_factory=tuple)

    @property
    def refs(self) -> list[str]:
        return [c.ref for c in self.candidates]

    def table(self) -> list[dict]:
        """One row per candidate (ranked first, then rejected): the Prefect and MLflow table."""
        rows = [
            {
                "rank": rank,
                "model": c.repo_id,
                "revision": c.revision,
                "source": c.source,
                "type": c.model_type,
                "parameters": c.parameters,
                "license": c.license_id.id if c.license_id else None,
                "downloads": c.downloads,
                "likes": c.likes,
                "score": c.score,
                "reasons": "; ".join(c.reasons),
            }
            for rank, c in enumerate(self.candidates, start=1)
        ]
        rows += [
            {
                "rank": None,
                "model": r.repo_id,
                "revision": r.revision,
                "source": self.source,
                "type": None,
                "parameters": None,
                "license": None,
                "downloads": None,
                "likes": None,
                "score": None,
                "reasons": "rejected: " + "; ".join(r.reasons),
            }
            for r in self.rejected
        ]
        return rows


def query_for(spec: DiscoverySpec) -> CatalogQuery:
    return CatalogQuery(
        pipeline_tag=spec.pipeline_tag,
        library=spec.library,
        language=spec.language,
        sort=spec.sort,
        limit=spec.search_limit,
    )


def check_fit(candidate: Candidate, spec: DiscoverySpec, pinned: bool = False) -> list[str]:
    """Reasons the candidate cannot serve this experiment (empty: it fits).

    A pinned model is checked only against what makes it unusable; the search filters
    (tags, popularity, license class) express preferences among many and do not apply to it.
    """
    if candidate.unreadable:
        return [f"unreadable: {candidate.unreadable}"]
    problems = []
    supported = TASK_ARCHITECTURES[spec.task]
    if candidate.model_type not in supported:
        problems.append(f"architecture {candidate.model_type!r} has no {spec.task} head")
    if spec.require_safetensors and not candidate.safetensors:
        pickles = [f for f in candidate.files if f.endswith(PICKLE_SUFFIXES)]
        problems.append(f"no safetensors weights (only {pickles or 'no weights'})")
    if spec.max_parameters and candidate.parameters and candidate.parameters > spec.max_parameters:
        problems.append(f"{candidate.parameters:,} parameters > max {spec.max_parameters:,}")
    if spec.max_memory_gb and candidate.weight_bytes:
        gigabytes = candidate.weight_bytes / 1e9
        if gigabytes > spec.max_memory_gb:
            problems.append(f"weights take {gigabytes:.2f} GB > max {spec.max_memory_gb:g} GB")
    if pinned:
        return problems
    if spec.pipeline_tag and candidate.pipeline_tag != spec.pipeline_tag:
        problems.append(f"pipeline tag {candidate.pipeline_tag!r} is not {spec.pipeline_tag!r}")
    if spec.library and candidate.library_name != spec.library:
        problems.append(f"library {candidate.library_name!r} is not {spec.library!r}")
    if spec.language and spec.language not in candidate.languages:
        problems.append(f"languages {list(candidate.languages)} lack {spec.language!r}")
    known = candidate.downloads is not None
    if spec.min_downloads and known and candidate.downloads < spec.min_downloads:
        problems.append(f"{candidate.downloads:,} downloads < min {spec.min_downloads:,}")
    if spec.license_classes is not None:
        lic = candidate.license_id
        klass = lic.license_class if lic else "no license"
        if not lic or lic.license_class not in spec.license_classes:
            problems.append(f"license class {klass} is not in {list(spec.license_classes)}")
    return problems


def human_count(value: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return str(value)


def score(candidate: Candidate, spec: DiscoverySpec | None = None) -> tuple[float, tuple[str, ...]]:
    """A deterministic score and its reasons, one per point given or taken.

    Popularity counts on a log scale (1M downloads: +6, 1k likes: +1.5); smaller models earn
    up to +3 (1B parameters: 0) because they fine-tune in minutes on the machines we target;
    a permissive license +1; a preferred library +1 (second +0.5, ...); a card tagged for the
    task +0.5; a gated repo -0.5.
    """
    spec = spec or DiscoverySpec()
    points: list[tuple[float, str]] = []
    if candidate.downloads is not None:
        points.append((math.log10(1 + candidate.downloads), f"{candidate.downloads:,} downloads"))
    if candidate.likes is not None:
        points.append((0.5 * math.log10(1 + candidate.likes), f"{candidate.likes:,} likes"))
    if candidate.parameters:
        size = min(3.0, max(0.0, math.log10(1e9 / candidate.parameters)))
        points.append((size, f"{human_count(candidate.parameters)} parameters"))
    lic = candidate.license_id
    if lic is None:
        points.append((-1.0, "no license declared"))
    else:
        points.append((LICENSE_POINTS.get(lic.license_class, 0.0), f"license {lic.label}"))
    if candidate.library_name in spec.preferred_libraries:
        rank = spec.preferred_libraries.index(candidate.library_name)
        points.append((1.0 / (rank + 1), f"preferred library {candidate.library_name}"))
    if candidate.pipeline_tag == spec.task:
        points.append((TASK_TAG_POINTS, f"card tagged {spec.task}"))
    if candidate.gated:
        points.append((GATED_POINTS, f"gated ({candidate.gated})"))
    total = round(sum(p for p, _ in points), 4)
    return total, tuple(f"{why} ({p:+.2f})" for p, why in points)


def discover(spec: DiscoverySpec, catalog: Catalog) -> Discovery:
    """Ranked candidates, best first; the pinned model alone when the config names one."""
    if spec.repo_id:
        try:
            candidate = catalog.resolve(spec.repo_id, spec.revision)
        except CatalogError as exc:
            raise DiscoveryError(str(exc)) from None
        problems = check_fit(candidate, spec, pinned=True)
        if problems:
            raise DiscoveryError(f"{candidate.ref} cannot be used: {'; '.join(problems)}")
        value, reasons = score(candidate, spec)
        pinned = replace(candidate, score=value, reasons=("pinned by config", *reasons))
        return Discovery(catalog.source, True, (pinned,))

    ranked, rejected = [], []
    for candidate in catalog.search(query_for(spec)):
        problems = check_fit(candidate, spec)
        if problems:
            rejected.append(Rejected(candidate.repo_id, candidate.revision, tuple(problems)))
            continue
        value, reasons = score(candidate, spec)
        ranked.append(replace(candidate, score=value, reasons=reasons))
    if not ranked:
        where = getattr(catalog, "cache_dir", None) if catalog.source == "mirror" else "the Hub"
        if rejected:
            detail = "; ".join(f"{r.repo_id}: {'; '.join(r.reasons)}" for r in rejected)
        elif catalog.source == "mirror":
            detail = (
                "the mirror is empty: add a model with 'loraflow hub import PATH --repo-id "
                "ORG/NAME' (or 'loraflow hub seed')"
            )
        else:
            detail = "the search returned nothing"
        raise DiscoveryError(f"no model in {where} fits task {spec.task}: {detail}")
    ranked.sort(key=lambda c: (-c.score, c.repo_id))
    return Discovery(catalog.source, False, tuple(ranked[: spec.max_candidates]), tuple(rejected))
