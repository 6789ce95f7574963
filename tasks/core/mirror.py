"""Local model mirror: put a model folder into a standard Hugging Face cache.

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

from huggingface_hub.file_download import repo_folder_name

REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
# Files the Hub stores through LFS: their blob id is the sha256 of the content, as on the Hub.
LFS_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".onnx", ".msgpack", ".gguf"}
LFS_MIN_BYTES = 10 * 1024 * 1024
SKIPPED_NAMES = {".git", "__pycache__", ".DS_Store"}


class MirrorError(ValueError):
    """The folder or repo id cannot be mirrored."""


@dataclass(frozen=True)
class ImportedModel:
    repo_id: str
    revision: str
    snapshot: Path
    files: int
    created: bool


def _git_blob_sha1(path: Path) -> str:
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def blob_id(path: Path) -> str:
    """The id the Hub's cache names a blob by: sha256 for LFS files, git blob sha1 otherwise."""
    if path.suffix in LFS_SUFFIXES or path.stat().st_size >= LFS_MIN_BYTES:
        return sha256_file(path)
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
