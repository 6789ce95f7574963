"""The local model mirror: a standard Hugging Face cache that loraflow fills and reads.

The one module that knows the cache's layout: ``import_folder`` writes it, the rest reads it
(``resolve_revision``, ``snapshot_path``, ``mirror_revisions`` through huggingface_hub's own
``scan_cache_dir``), and ``MirrorCatalog`` answers the catalog's questions from it.

The layout written is the one ``hf_hub_download`` produces (``blobs/``, ``snapshots/<rev>/``,
``refs/main``), so ``from_pretrained(repo_id, revision=sha)`` and ``scan_cache_dir()`` work
offline exactly as after a download from the Hub. The revision is derived from the content
(a git-tree-like sha1 over every file's path and blob id), so importing the same folder twice is
a no-op and any change to any file yields a new, pinned revision.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import scan_cache_dir
from huggingface_hub.file_download import repo_folder_name

from tasks.core.catalog.base import (
    SHA256_RE,
    WEIGHT_SUFFIXES,
    Candidate,
    CatalogQuery,
    FileHash,
    Source,
    read_candidate,
    read_metadata,
)
from tasks.core.digests import file_sha256
from tasks.core.errors import CatalogError, MirrorError

REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
# Files the Hub stores through LFS: their blob id is the sha256 of the content, as on the Hub.
LFS_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".onnx", ".msgpack", ".gguf"}
LFS_MIN_BYTES = 10 * 1024 * 1024
SKIPPED_NAMES = {".git", "__pycache__", ".DS_Store"}


@dataclass(frozen=True)
class ImportedModel:
    repo_id: str
    revision: str
    snapshot: Path
    files: int
    created: bool


def _git_blob_sha1(path: Path) -> str:
    header = f"blob {path.stat().st_size}\0".encode()
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, lambda: hashlib.sha1(header)).hexdigest()


def blob_id(path: Path) -> str:
    """The id the Hub's cache names a blob by: sha256 for LFS files, git blob sha1 otherwise."""
    if path.suffix in LFS_SUFFIXES or path.stat().st_size >= LFS_MIN_BYTES:
        return file_sha256(path)
    return _git_blob_sha1(path)


def list_files(folder: Path) -> list[Path]:
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_NAMES)
        files.extend(Path(root, n) for n in sorted(names) if n not in SKIPPED_NAMES)
    return files


def content_revision(entries: dict[str, str]) -> str:
    """A 40-hex commit-like id over (relative path, blob id) pairs."""
    digest = hashlib.sha1(b"loraflow-mirror-v1\n")
    for rel, blob in sorted(entries.items()):
        digest.update(f"{rel}\t{blob}\n".encode())
    return digest.hexdigest()


def repo_cache_dir(cache_dir: Path, repo_id: str) -> Path:
    return Path(cache_dir) / repo_folder_name(repo_id=repo_id, repo_type="model")


def import_folder(folder: Path, repo_id: str, cache_dir: Path) -> ImportedModel:
    """Copy ``folder`` into ``cache_dir`` as ``repo_id`` and point ``refs/main`` at it."""
    folder = Path(folder)
    if not REPO_ID_RE.match(repo_id):
        raise MirrorError(f"repo id {repo_id!r} is not of the form ORG/NAME")
    if not folder.is_dir():
        raise MirrorError(f"{folder} is not a directory")
    files = list_files(folder)
    if not (folder / "config.json").is_file():
        raise MirrorError(f"{folder} holds no config.json: not a transformers model folder")
    try:
        read_metadata(folder)  # what discovery and the audit will read must be readable
    except CatalogError as exc:
        raise MirrorError(f"{folder}: {exc}; fix it, then import again") from None

    entries = {f.relative_to(folder).as_posix(): blob_id(f) for f in files}
    revision = content_revision(entries)
    repo_dir = repo_cache_dir(cache_dir, repo_id)
    snapshot = repo_dir / "snapshots" / revision
    created = not snapshot.is_dir()
    if created:
        staging = repo_dir / "snapshots" / f".{revision}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
        for rel, blob in entries.items():
            blob_path = repo_dir / "blobs" / blob
            if not blob_path.exists():
                tmp = blob_path.with_suffix(".incomplete")
                shutil.copyfile(folder / rel, tmp)
                os.replace(tmp, blob_path)
            link = staging / rel
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob_path, link.parent))
        os.replace(staging, snapshot)  # the snapshot appears whole or not at all
    refs = repo_dir / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    (refs / "main").write_text(revision)
    return ImportedModel(repo_id, revision, snapshot, len(entries), created)


def resolve_revision(cache_dir: Path, repo_id: str, revision: str | None = None) -> str:
    """A commit sha for ``revision`` (a branch in ``refs/`` or a sha already in the cache)."""
    repo_dir = repo_cache_dir(cache_dir, repo_id)
    if not repo_dir.is_dir():
        raise MirrorError(f"model {repo_id!r} is not in the local mirror {cache_dir}")
    ref = revision or "main"
    ref_file = repo_dir / "refs" / ref
    sha = ref_file.read_text().strip() if ref_file.is_file() else ref
    if not (repo_dir / "snapshots" / sha).is_dir():
        raise MirrorError(f"revision {ref!r} of {repo_id!r} is not in the local mirror")
    return sha


def snapshot_path(cache_dir: Path, repo_id: str, revision: str) -> Path:
    return repo_cache_dir(cache_dir, repo_id) / "snapshots" / revision


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


class MirrorCatalog:
    """The local Hugging Face cache: what ``refs/main`` of every cached model points at."""

    source: Source = "mirror"

    def __init__(self, cache_dir: Path):
        self.cache_dir = Path(cache_dir)

    def search(self, query: CatalogQuery) -> list[Candidate]:
        """Every cached model; the query's filters are applied by discovery (no server here)."""
        return [read_candidate(r, sha, snap) for r, sha, snap in mirror_revisions(self.cache_dir)]

    def resolve(self, repo_id: str, revision: str | None = None) -> Candidate:
        try:
            sha = resolve_revision(self.cache_dir, repo_id, revision)
        except MirrorError as exc:
            raise CatalogError(
                f"{exc}; import it with 'loraflow hub import PATH --repo-id {repo_id}'"
            ) from None
        return read_candidate(repo_id, sha, snapshot_path(self.cache_dir, repo_id, sha))

    def _path(self, candidate: Candidate, filename: str) -> Path:
        return snapshot_path(self.cache_dir, candidate.repo_id, candidate.revision) / filename

    def read_text(self, candidate: Candidate, filename: str) -> str | None:
        path = self._path(candidate, filename)
        return path.read_text(errors="replace") if path.is_file() else None

    def weight_hashes(self, candidate: Candidate) -> tuple[FileHash, ...]:
        """sha256 of each weight file, read from disk and checked against its blob name."""
        hashes = []
        for name in candidate.files:
            if not name.endswith(WEIGHT_SUFFIXES):
                continue
            path = self._path(candidate, name)
            blob = path.resolve().name
            hashes.append(
                FileHash(name, file_sha256(path), blob if SHA256_RE.match(blob) else None)
            )
        return tuple(hashes)


def mirror_state(cache_dir: Path) -> list[str]:
    """``repo_id=sha`` of every cached model's refs/main: changes when the mirror changes."""
    return [f"{repo_id}={sha}" for repo_id, sha, _ in mirror_revisions(cache_dir)]
