"""The catalog's two backends give the same Candidate; the Hub one is fed real ModelInfo objects.

No machine here reaches the Hub, so the Hub backend runs against an ``HfApi`` whose two listing
calls return ``huggingface_hub.hf_api.ModelInfo`` objects built from the JSON the Hub's API
returns; everything downstream (parsing, ranking, the audit) is the real code. One test marked
``network`` asks the real Hub and is skipped without it.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import RepositoryNotFoundError
from huggingface_hub.hf_api import ModelInfo

from tasks.core.audit.licenses import audit
from tasks.core.audit.supply_chain import gather_facts
from tasks.core.catalog.base import CatalogQuery
from tasks.core.catalog.choose import catalog_for, catalog_named
from tasks.core.catalog.hub import EXPAND, HubCatalog, candidate_from_info, list_models_kwargs
from tasks.core.catalog.mirror import MirrorCatalog, import_folder
from tasks.core.config.audit import DiscoverySpec
from tasks.core.config.loader import load_policy
from tasks.core.digests import file_sha256
from tasks.core.discovery import discover
from tasks.core.errors import CatalogError

REPO_ROOT = Path(__file__).resolve().parents[2]
SHA = "a" * 40
WEIGHT_SHA = "b" * 64


def hub_json(repo_id: str = "acme/tiny-bert", **changes) -> dict:
    """What GET /api/models/{repo_id} answers (camelCase keys, as on the wire)."""
    data = {
        "id": repo_id,
        "sha": SHA,
        "lastModified": "2026-10-01T12:00:00.000Z",
        "downloads": 12_345,
        "likes": 12,
        "library_name": "transformers",
        "pipeline_tag": "text-classification",
        "tags": ["transformers", "safetensors", "bert", "en", "license:apache-2.0"],
        "gated": False,
        "cardData": {"license": "apache-2.0", "language": ["en"]},
        "config": {"architectures": ["BertForSequenceClassification"], "model_type": "bert"},
        "safetensors": {"parameters": {"F32": 4_000_000, "F16": 1_000_000}, "total": 5_000_000},
        "siblings": [
            {"rfilename": "README.md"},
            {"rfilename": "config.json"},
            {
                "rfilename": "model.safetensors",
                "size": 22_000_000,
                "blobId": "c" * 40,
                "lfs": {"size": 22_000_000, "sha256": WEIGHT_SHA, "pointerSize": 134},
            },
            {"rfilename": "tokenizer.json"},
        ],
    }
    return data | changes


class RecordingHfApi(HfApi):
    """An HfApi whose listing calls answer from ModelInfo objects built in the test."""

    def __init__(self, infos: list[dict]):
        super().__init__(endpoint="http://127.0.0.1:9")  # never contacted
        self.infos = {info["id"]: info for info in infos}
        self.calls: list[tuple[str, dict]] = []

    def list_models(self, **kwargs):
        self.calls.append(("list_models", kwargs))
        return iter(ModelInfo(**info) for info in self.infos.values())

    def model_info(self, repo_id, **kwargs):
        self.calls.append(("model_info", {"repo_id": repo_id, **kwargs}))
        if repo_id not in self.infos:
            # What hf_raise_for_status raises for a 404 on /api/models/{repo_id}.
            response = httpx2.Response(404, request=httpx2.Request("GET", f"{self.endpoint}/x"))
            raise RepositoryNotFoundError(f"{repo_id} not found", response=response)
        return ModelInfo(**self.infos[repo_id])


def test_candidate_from_model_info():
    candidate = candidate_from_info(ModelInfo(**hub_json()))
    assert candidate.ref == f"acme/tiny-bert@{SHA}"
    assert (candidate.source, candidate.model_type, candidate.license) == (
        "hub",
        "bert",
        "apache-2.0",
    )
    assert candidate.license_id.id == "Apache-2.0"
    assert (candidate.parameters, candidate.weight_bytes) == (5_000_000, 4_000_000 * 4 + 2_000_000)
    assert (candidate.downloads, candidate.likes, candidate.gated) == (12_345, 12, None)
    assert candidate.languages == ("en",) and candidate.safetensors
    assert candidate.files == ("README.md", "config.json", "model.safetensors", "tokenizer.json")
    assert candidate.last_modified.startswith("2026-10-01T12:00:00")


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"cardData": None}, ("apache-2.0", None, None)),  # license from the "license:" tag
        ({"cardData": None, "tags": []}, (None, None, None)),
        (
            {"cardData": {"license": "other", "license_name": "acme", "license_link": "https://x"}},
            ("other", "acme", "https://x"),
        ),
    ],
    ids=["tag-fallback", "none", "other-with-link"],
)
def test_candidate_license_sources(changes, expected):
    c = candidate_from_info(ModelInfo(**hub_json(**changes)))
    assert (c.license, c.license_name, c.license_link) == expected


def test_candidate_without_sha_cannot_be_pinned():
    with pytest.raises(CatalogError, match="no commit sha"):
        candidate_from_info(ModelInfo(**hub_json(sha=None)))


def test_gated_and_pickle_only_model_info():
    info = hub_json(
        gated="manual",
        safetensors=None,
        siblings=[{"rfilename": "config.json"}, {"rfilename": "pytorch_model.bin"}],
    )
    c = candidate_from_info(ModelInfo(**info))
    assert (c.gated, c.safetensors, c.parameters, c.weight_bytes) == ("manual", False, None, None)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (CatalogQuery(), {"sort": "downloads", "limit": 50}),
        (
            CatalogQuery("text-classification", "transformers", "en", "mit", "recency", 7),
            {
                "sort": "last_modified",
                "limit": 7,
                "pipeline_tag": "text-classification",
                "filter": ["transformers", "en", "license:mit"],
            },
        ),
        (
            CatalogQuery(sort="likes", language="fr"),
            {"sort": "likes", "limit": 50, "filter": ["fr"]},
        ),
    ],
)
def test_list_models_kwargs(query, expected):
    assert list_models_kwargs(query) == expected | {"expand": EXPAND}


def test_hub_discovery_ranks_by_popularity_and_filters():
    api = RecordingHfApi(
        [
            hub_json("acme/popular", downloads=1_000_000, likes=500),
            hub_json("acme/quiet", downloads=10, likes=0),
            hub_json("acme/nc", downloads=5_000_000, cardData={"license": "cc-by-nc-4.0"}),
            hub_json("acme/vision", config={"model_type": "vit"}),
        ]
    )
    spec = DiscoverySpec(
        pipeline_tag="text-classification",
        library="transformers",
        sort="likes",
        search_limit=20,
        min_downloads=100,
        license_classes=("permissive",),
    )
    found = discover(spec, HubCatalog(api))
    assert found.source == "hub"
    assert [c.repo_id for c in found.candidates] == ["acme/popular"]
    assert {r.repo_id: r.reasons for r in found.rejected} == {
        "acme/quiet": ("10 downloads < min 100",),
        "acme/nc": ("license class non-commercial is not in ['permissive']",),
        "acme/vision": ("architecture 'vit' has no text-classification head",),
    }
    (call,) = api.calls
    assert call == (
        "list_models",
        {
            "sort": "likes",
            "limit": 20,
            "expand": EXPAND,
            "pipeline_tag": "text-classification",
            "filter": ["transformers"],
        },
    )
    assert "1,000,000 downloads (+6.00)" in found.candidates[0].reasons


def test_hub_pinned_model_and_missing_repo():
    api = RecordingHfApi([hub_json()])
    found = discover(DiscoverySpec(repo_id="acme/tiny-bert", revision="main"), HubCatalog(api))
    assert found.pinned and found.refs == [f"acme/tiny-bert@{SHA}"]
    assert api.calls == [
        ("model_info", {"repo_id": "acme/tiny-bert", "revision": "main", "files_metadata": True})
    ]
    with pytest.raises(Exception, match="'acme/absent' is not on the Hub"):
        discover(DiscoverySpec(repo_id="acme/absent"), HubCatalog(api))


def test_hub_audit_reads_files_and_lfs_hashes(tmp_path, tiny_model):
    """The same audit as on the mirror, with files 'downloaded' from a local folder."""
    folder = tiny_model.path
    weight_sha = file_sha256(folder / "model.safetensors")
    siblings = [
        {"rfilename": p.name} for p in sorted(folder.iterdir()) if p.suffix != ".safetensors"
    ]
    siblings.append(
        {
            "rfilename": "model.safetensors",
            "lfs": {"size": 1, "sha256": weight_sha, "pointerSize": 134},
        }
    )
    api = RecordingHfApi([hub_json(siblings=siblings)])
    downloads = []

    def download(repo_id, filename, revision, cache_dir):
        downloads.append((repo_id, filename, revision))
        return str(folder / filename)

    catalog = HubCatalog(api, cache_dir=tmp_path, download=download)
    candidate = catalog.resolve("acme/tiny-bert")
    policy = load_policy(REPO_ROOT / "configs/policies/licenses.yaml")
    record = audit(candidate, gather_facts(catalog, candidate), (), policy, "0" * 64, ())
    assert record.verdict == "allow", record.denials
    assert (record.source, record.file_hashes) == ("hub", {"model.safetensors": weight_sha})
    assert {f for _, f, _ in downloads} == {
        "README.md",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    }
    assert {rev for _, _, rev in downloads} == {SHA}  # always the pinned commit


def test_same_candidate_from_both_backends(tiny_model, tmp_path):
    """A mirrored model and the Hub's description of it agree field by field."""
    sha = import_folder(tiny_model.path, "acme/tiny-bert", tmp_path / "hub").revision
    mirror = MirrorCatalog(tmp_path / "hub").resolve("acme/tiny-bert")
    files = [{"rfilename": p.name} for p in sorted(tiny_model.path.iterdir())]
    info = hub_json(
        sha=sha,
        cardData={"license": "apache-2.0"},
        safetensors={"parameters": {"F32": tiny_model.num_parameters}, "total": mirror.parameters},
        siblings=files,
    )
    hub = candidate_from_info(ModelInfo(**info))
    for name in ("ref", "model_type", "license", "parameters", "weight_bytes", "files"):
        assert getattr(hub, name) == getattr(mirror, name), name


def test_offline_picks_the_mirror(tmp_path, monkeypatch):
    import huggingface_hub.constants

    assert isinstance(catalog_for(tmp_path), MirrorCatalog)  # the test session is offline
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    assert isinstance(catalog_for(tmp_path), HubCatalog)
    assert isinstance(catalog_named("mirror", tmp_path), MirrorCatalog)


def _hub_reachable() -> bool:
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
    except OSError:
        return False
    return True


@pytest.mark.network
def test_real_hub_search_and_resolve(monkeypatch, tmp_path):
    if not _hub_reachable():
        pytest.skip("the Hugging Face Hub is not reachable from here")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    catalog = HubCatalog(cache_dir=tmp_path)
    spec = DiscoverySpec(
        pipeline_tag="text-classification",
        library="transformers",
        search_limit=10,
        max_parameters=150_000_000,
    )
    found = discover(spec, catalog)
    assert found.source == "hub" and found.candidates
    assert all(len(c.revision) == 40 for c in found.candidates)
    pinned = catalog.resolve("distilbert/distilbert-base-uncased-finetuned-sst-2-english")
    assert pinned.license_id.id == "Apache-2.0" and pinned.model_type == "distilbert"
    facts = gather_facts(catalog, pinned)
    assert "model.safetensors" in {h.path for h in facts.weight_hashes}
    shutil.rmtree(tmp_path, ignore_errors=True)
