"""The Hub backend of the catalog: ``HfApi.list_models`` / ``model_info`` read into Candidates.

One listing call returns everything ranking needs (card data, config, safetensors parameter
counts per dtype, files, gated flag, downloads, likes and the commit sha), so search costs a
single request per page. The audit then asks ``model_info(files_metadata=True)`` for the LFS
sha256 of each weight file and downloads only the small text files it scans.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, GatedRepoError, RepositoryNotFoundError
from huggingface_hub.errors import RevisionNotFoundError as HubRevisionNotFound
from huggingface_hub.hf_api import ModelInfo

from tasks.core.catalog.base import (
    DTYPE_BYTES,
    WEIGHT_SUFFIXES,
    Candidate,
    CatalogQuery,
    FileHash,
    Source,
    _as_tuple,
    declared_license,
)
from tasks.core.errors import CatalogError

# Properties one listing call asks for: enough to rank without a request per model.
EXPAND = [
    "cardData",
    "config",
    "downloads",
    "gated",
    "lastModified",
    "library_name",
    "likes",
    "pipeline_tag",
    "safetensors",
    "sha",
    "siblings",
    "tags",
]
SORT = {"downloads": "downloads", "likes": "likes", "recency": "last_modified"}


def candidate_from_info(info: ModelInfo) -> Candidate:
    """A Candidate from a Hub ModelInfo (from ``list_models`` or ``model_info``)."""
    if not info.sha:
        raise CatalogError(f"the Hub returned no commit sha for {info.id}; cannot pin it")
    card = info.card_data.to_dict() if info.card_data is not None else {}
    license_tag = card.get("license")
    if license_tag is None:  # the Hub also exposes the license as a "license:..." tag
        tags = [t.removeprefix("license:") for t in info.tags or [] if t.startswith("license:")]
        license_tag = tags or None
    files = tuple(sorted(s.rfilename for s in info.siblings or []))
    weight_bytes = None
    if info.safetensors:
        weight_bytes = sum(
            count * DTYPE_BYTES.get(dtype, 4)
            for dtype, count in info.safetensors.parameters.items()
        )
    return Candidate(
        repo_id=info.id,
        revision=info.sha,
        model_type=(info.config or {}).get("model_type"),
        license=declared_license(license_tag),
        pipeline_tag=info.pipeline_tag or card.get("pipeline_tag"),
        library_name=info.library_name or card.get("library_name"),
        parameters=info.safetensors.total if info.safetensors else None,
        safetensors=bool(info.safetensors) or any(f.endswith(".safetensors") for f in files),
        files=files,
        source="hub",
        license_name=card.get("license_name"),
        license_link=card.get("license_link"),
        languages=_as_tuple(card.get("language")),
        weight_bytes=weight_bytes,
        downloads=info.downloads,
        likes=info.likes,
        last_modified=info.last_modified.isoformat() if info.last_modified else None,
        gated=str(info.gated) if info.gated else None,
    )


def list_models_kwargs(query: CatalogQuery) -> dict:
    """``HfApi.list_models`` arguments for a query: library, language and license are tags."""
    tags = [query.library, query.language, query.license and f"license:{query.license}"]
    kwargs = {
        "sort": SORT[query.sort],
        "limit": query.limit,
        "expand": list(EXPAND),
    }
    if query.pipeline_tag:
        kwargs["pipeline_tag"] = query.pipeline_tag
    if any(tags):
        kwargs["filter"] = [t for t in tags if t]
    return kwargs


class HubCatalog:
    """The Hugging Face Hub through ``HfApi``; files are downloaded into ``cache_dir``."""

    source: Source = "hub"

    def __init__(
        self, api: HfApi | None = None, cache_dir: Path | None = None, download=hf_hub_download
    ):
        self.api = api or HfApi()
        self.cache_dir = cache_dir
        self.download = download  # hf_hub_download's signature

    def search(self, query: CatalogQuery) -> list[Candidate]:
        found = []
        for info in self.api.list_models(**list_models_kwargs(query)):
            if info.sha:  # a listing without a sha cannot be pinned; skip rather than guess
                found.append(candidate_from_info(info))
        return found

    def _info(self, repo_id: str, revision: str | None) -> ModelInfo:
        try:
            return self.api.model_info(repo_id, revision=revision, files_metadata=True)
        except RepositoryNotFoundError:
            raise CatalogError(f"model {repo_id!r} is not on the Hub (or is private)") from None
        except HubRevisionNotFound:
            raise CatalogError(f"revision {revision!r} of {repo_id!r} is not on the Hub") from None

    def resolve(self, repo_id: str, revision: str | None = None) -> Candidate:
        return candidate_from_info(self._info(repo_id, revision))

    def read_text(self, candidate: Candidate, filename: str) -> str | None:
        if filename not in candidate.files:
            return None
        try:
            path = self.download(
                candidate.repo_id,
                filename,
                revision=candidate.revision,
                cache_dir=self.cache_dir,
            )
        except EntryNotFoundError:
            return None
        except GatedRepoError:
            raise CatalogError(
                f"{candidate.repo_id} is gated: request access on the Hub and set HF_TOKEN"
            ) from None
        return Path(path).read_text(errors="replace")

    def weight_hashes(self, candidate: Candidate) -> tuple[FileHash, ...]:
        """The LFS sha256 the Hub records for each weight file of the pinned revision."""
        info = self._info(candidate.repo_id, candidate.revision)
        hashes = []
        for s in sorted(info.siblings or [], key=lambda s: s.rfilename):
            if not s.rfilename.endswith(WEIGHT_SUFFIXES):
                continue
            if s.lfs is not None:
                hashes.append(FileHash(s.rfilename, s.lfs.sha256, s.lfs.sha256))
            else:  # a small file kept in git: the Hub records only its git blob id
                hashes.append(FileHash(s.rfilename, f"git-blob:{s.blob_id}", None))
        return tuple(hashes)
