"""One catalog interface, two backends: the local mirror (a Hugging Face cache) and the Hub.

Both answer the same three questions with the same types: which models match a query
(``search``), what exactly is ``repo_id`` at ``revision`` (``resolve``, always pinned to a
commit sha), and what do its small text files and weight hashes say (``read_text``,
``weight_hashes``, for the audit). ``HF_HUB_OFFLINE`` (on by default, see ``home.py``) picks
the mirror; unsetting it searches the Hub with no code change (``choose.py``). The backends
live in ``mirror.py`` and ``hub.py``.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from huggingface_hub import ModelCard

from tasks.core.catalog.license_ids import LicenseId, normalise
from tasks.core.errors import CatalogError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
WEIGHT_SUFFIXES = (".safetensors", ".h5", ".msgpack", ".gguf", ".onnx", *PICKLE_SUFFIXES)
# Bytes per element of each safetensors dtype (and the Hub's per-dtype parameter counts).
DTYPE_BYTES = {
    "F64": 8,
    "I64": 8,
    "U64": 8,
    "F32": 4,
    "I32": 4,
    "U32": 4,
    "F16": 2,
    "BF16": 2,
    "I16": 2,
    "U16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
Source = Literal["mirror", "hub"]


@dataclass(frozen=True)
class Candidate:
    """One model revision as a catalog describes it; the reference every later stage receives."""

    repo_id: str
    revision: str  # always a commit sha
    model_type: str | None
    license: str | None  # as the card declares it (a Hub tag, lower case)
    pipeline_tag: str | None
    library_name: str | None
    parameters: int | None
    safetensors: bool
    files: tuple[str, ...]
    score: float = 0.0
    reasons: tuple[str, ...] = field(default_factory=tuple)
    source: Source = "mirror"
    license_name: str | None = None
    license_link: str | None = None
    languages: tuple[str, ...] = ()
    weight_bytes: int | None = None
    downloads: int | None = None
    likes: int | None = None
    last_modified: str | None = None
    gated: str | None = None  # "auto" / "manual" on the Hub, None when open
    unreadable: str | None = None  # why its card or config cannot be read (then unusable)

    @property
    def ref(self) -> str:
        return f"{self.repo_id}@{self.revision}"

    @property
    def license_id(self) -> LicenseId | None:
        return normalise(self.license, self.license_name, self.license_link)


@dataclass(frozen=True)
class CatalogQuery:
    """What a search asks for; filters a backend cannot apply itself are applied by discovery."""

    pipeline_tag: str | None = None
    library: str | None = None
    language: str | None = None
    license: str | None = None  # a Hub license tag
    sort: Literal["downloads", "likes", "recency"] = "downloads"
    limit: int = 50


@dataclass(frozen=True)
class FileHash:
    """sha256 of one weight file, and the id the catalog expects for it (blob name / LFS oid)."""

    path: str
    sha256: str
    expected: str | None

    @property
    def verified(self) -> bool:
        return self.expected is None or self.expected == self.sha256


class Catalog(Protocol):
    source: Source

    def search(self, query: CatalogQuery) -> list[Candidate]: ...

    def resolve(self, repo_id: str, revision: str | None = None) -> Candidate: ...

    def read_text(self, candidate: Candidate, filename: str) -> str | None: ...

    def weight_hashes(self, candidate: Candidate) -> tuple[FileHash, ...]: ...


def _safetensors_header(path: Path) -> dict:
    with path.open("rb") as handle:
        (size,) = struct.unpack("<Q", handle.read(8))
        return json.loads(handle.read(size))


def safetensors_stats(path: Path) -> tuple[int, int]:
    """(parameters, bytes) from a safetensors header, without loading the tensors."""
    params = nbytes = 0
    for name, meta in _safetensors_header(path).items():
        if name == "__metadata__":
            continue
        count = 1
        for dim in meta["shape"]:
            count *= dim
        params += count
        nbytes += count * DTYPE_BYTES.get(meta["dtype"], 4)
    return params, nbytes


def module_names(snapshot: Path) -> set[str]:
    """Names of the modules that hold a 2-D weight (linear, embedding, conv1d layers), from
    the safetensors headers alone: what ``lora.target_modules`` can name."""
    names = set()
    for path in sorted(Path(snapshot).glob("*.safetensors")):
        for tensor, meta in _safetensors_header(path).items():
            if tensor.endswith(".weight") and len(meta.get("shape", ())) == 2:
                names.add(tensor.removesuffix(".weight"))
    return names


def safetensors_parameters(path: Path) -> int:
    return safetensors_stats(path)[0]


def _as_tuple(value) -> tuple[str, ...]:
    if value is None:
        return ()
    return (str(value),) if isinstance(value, str) else tuple(str(v) for v in value)


def declared_license(value) -> str | None:
    """A card's ``license`` field as one lower-case string (a list is joined: see normalise)."""
    items = _as_tuple(value)
    return ", ".join(i.strip().lower() for i in items) if items else None


def read_metadata(folder: Path) -> tuple[dict, dict]:
    """(config.json, the card's YAML metadata) of a model folder; CatalogError naming the
    file and what is wrong when either cannot be read."""
    config, meta = {}, {}
    path = Path(folder) / "config.json"
    if path.is_file():
        try:
            config = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise CatalogError(f"config.json is not valid JSON: {exc}") from None
    card = Path(folder) / "README.md"
    if card.is_file():
        try:
            meta = ModelCard.load(card).data.to_dict()
        except Exception as exc:  # yaml errors, a front matter that is not a mapping, ...
            problem = " ".join(str(getattr(exc, "problem", "") or exc).split())
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 2} of the card)" if mark else ""
            raise CatalogError(
                f"README.md front matter is not valid YAML{where}: {problem}"
            ) from None
    return config, meta


def read_candidate(repo_id: str, revision: str, snapshot: Path) -> Candidate:
    """Describe one cached snapshot: config.json, the card's metadata, safetensors headers.

    A snapshot whose card or config cannot be read is described as ``unreadable`` (with the
    reason) instead of failing the listing of every other model.
    """
    files = tuple(
        sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file())
    )
    try:
        config, meta = read_metadata(snapshot)
    except CatalogError as exc:
        return Candidate(repo_id, revision, None, None, None, None, None, False, files,
                         unreadable=str(exc))  # fmt: skip
    weights = [snapshot / f for f in files if f.endswith(".safetensors") and "/" not in f]
    stats = [safetensors_stats(w) for w in weights]
    return Candidate(
        repo_id=repo_id,
        revision=revision,
        model_type=config.get("model_type"),
        license=declared_license(meta.get("license")),
        pipeline_tag=meta.get("pipeline_tag"),
        library_name=meta.get("library_name"),
        parameters=sum(p for p, _ in stats) if stats else None,
        safetensors=bool(weights),
        files=files,
        source="mirror",
        license_name=meta.get("license_name"),
        license_link=meta.get("license_link"),
        languages=_as_tuple(meta.get("language")),
        weight_bytes=sum(b for _, b in stats) if stats else None,
    )
