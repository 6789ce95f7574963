"""Discovery over the local mirror: what a cached repo declares, fit checks, ranking."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tasks.core.catalog.base import (
    Candidate,
    read_candidate,
    safetensors_parameters,
    safetensors_stats,
)
from tasks.core.catalog.mirror import MirrorCatalog, import_folder, mirror_revisions
from tasks.core.config.audit import DiscoverySpec
from tasks.core.discovery import check_fit, score
from tasks.core.discovery import discover as _discover
from tasks.core.errors import DiscoveryError

REPO = "test-org/tiny-bert"


def discover(spec: DiscoverySpec, cache: Path) -> list[Candidate]:
    """Discovery over the mirror backend, as a list of ranked candidates."""
    return list(_discover(spec, MirrorCatalog(cache)).candidates)


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "hub"


@pytest.fixture
def variant(tiny_model, tmp_path):
    """Make a changed copy of the tiny model folder: ``variant(name, edit)``."""

    def make(name: str, edit) -> Path:
        folder = Path(shutil.copytree(tiny_model.path, tmp_path / "variants" / name))
        edit(folder)
        return folder

    return make


def _bin_only(folder: Path) -> None:
    weights = folder / "model.safetensors"
    torch.save(load_file(weights), folder / "pytorch_model.bin")
    weights.unlink()


def _model_type(model_type: str):
    def edit(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        config["model_type"] = model_type
        (folder / "config.json").write_text(json.dumps(config))

    return edit


def _card(text: str | None):
    def edit(folder: Path) -> None:
        if text is None:
            (folder / "README.md").unlink()
        else:
            (folder / "README.md").write_text(text)

    return edit


def _candidate(**changes) -> Candidate:
    fields = {
        "repo_id": REPO,
        "revision": "a" * 40,
        "model_type": "bert",
        "license": "apache-2.0",
        "pipeline_tag": "text-classification",
        "library_name": "transformers",
        "parameters": 19_980,
        "safetensors": True,
        "files": ("config.json", "model.safetensors"),
    }
    return Candidate(**(fields | changes))


# --------------------------------------------------------------------------------------------
# Reading a cached repo.
# --------------------------------------------------------------------------------------------


def test_safetensors_parameters_equals_the_real_parameter_count(tiny_model):
    assert (
        safetensors_parameters(tiny_model.path / "model.safetensors") == tiny_model.num_parameters
    )


def test_safetensors_parameters_ignores_metadata(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file(
        {"a": torch.zeros(3, 4), "b": torch.zeros(5), "c": torch.zeros(())},
        str(path),
        metadata={"format": "pt"},
    )
    assert safetensors_parameters(path) == 12 + 5 + 1


def test_read_candidate_reads_config_card_and_weights(tiny_model, cache):
    imported = import_folder(tiny_model.path, REPO, cache)
    candidate = read_candidate(REPO, imported.revision, imported.snapshot)
    assert candidate.ref == f"{REPO}@{imported.revision}"
    assert candidate.model_type == "bert"
    assert candidate.license == "apache-2.0"
    assert candidate.pipeline_tag == "text-classification"
    assert candidate.library_name == "transformers"
    assert candidate.parameters == tiny_model.num_parameters
    assert candidate.safetensors is True
    assert candidate.files == tuple(sorted(p.name for p in tiny_model.path.iterdir()))


def test_read_candidate_without_card_or_with_upper_case_license(variant, cache):
    bare = import_folder(variant("bare", _card(None)), "test-org/bare", cache)
    candidate = read_candidate("test-org/bare", bare.revision, bare.snapshot)
    assert (candidate.license, candidate.pipeline_tag, candidate.library_name) == (None,) * 3
    upper = import_folder(variant("upper", _card("---\nlicense: MIT\n---\n")), "test-org/up", cache)
    assert read_candidate("test-org/up", upper.revision, upper.snapshot).license == "mit"


# --------------------------------------------------------------------------------------------
# check_fit: a table of candidates and the reasons they do not fit.
# --------------------------------------------------------------------------------------------

FIT_CASES = [
    pytest.param({}, {}, [], id="fits"),
    pytest.param(
        {"safetensors": False, "parameters": None, "files": ("config.json", "pytorch_model.bin")},
        {},
        ["no safetensors weights (only ['pytorch_model.bin'])"],
        id="only-bin-safetensors-required",
    ),
    pytest.param(
        {"safetensors": False, "parameters": None, "files": ("config.json", "pytorch_model.bin")},
        {"require_safetensors": False},
        [],
        id="only-bin-safetensors-not-required",
    ),
    pytest.param(
        {"safetensors": False, "parameters": None, "files": ("config.json",)},
        {},
        ["no safetensors weights (only no weights)"],
        id="no-weights",
    ),
    pytest.param({}, {"max_parameters": 1_000}, ["19,980 parameters > max 1,000"], id="too-big"),
    pytest.param({}, {"max_parameters": 19_980}, [], id="exactly-max"),
    pytest.param(
        {"model_type": "clip_vision_model"},
        {},
        ["architecture 'clip_vision_model' has no text-classification head"],
        id="no-seq-cls-head",
    ),
    pytest.param(
        {"model_type": None}, {}, ["architecture None has no text-classification head"], id="none"
    ),
    pytest.param(
        {"model_type": "vit", "safetensors": False, "files": ("pytorch_model.bin",)},
        {"max_parameters": 10},
        [
            "architecture 'vit' has no text-classification head",
            "no safetensors weights (only ['pytorch_model.bin'])",
            "19,980 parameters > max 10",
        ],
        id="three-problems",
    ),
]


@pytest.mark.parametrize(("candidate", "spec", "reasons"), FIT_CASES)
def test_check_fit(candidate, spec, reasons):
    assert check_fit(_candidate(**candidate), DiscoverySpec(**spec)) == reasons


def test_score_prefers_fewer_parameters_and_a_declared_license():
    small, big = _candidate(parameters=10_000_000), _candidate(parameters=100_000_000)
    assert score(small)[0] > score(big)[0]
    # A permissive license earns +1; none costs 1: two points apart.
    assert score(_candidate(license=None))[0] == score(_candidate())[0] - 2.0
    assert score(_candidate(parameters=None, license=None, pipeline_tag=None)) == (
        -1.0,
        ("no license declared (-1.00)",),
    )


SCORE_CASES = [
    pytest.param(
        {"downloads": 999_999, "likes": 99, "parameters": 100_000_000},
        {},
        9.5,
        [
            "999,999 downloads (+6.00)",
            "99 likes (+1.00)",
            "100.0M parameters (+1.00)",
            "license Apache-2.0 (+1.00)",
            "card tagged text-classification (+0.50)",
        ],
        id="hub-popularity",
    ),
    pytest.param(
        {"library_name": "sentence-transformers", "pipeline_tag": None, "parameters": 10**9},
        {"preferred_libraries": ["transformers", "sentence-transformers"]},
        1.5,
        [
            "1.0B parameters (+0.00)",
            "license Apache-2.0 (+1.00)",
            "preferred library sentence-transformers (+0.50)",
        ],
        id="second-preferred-library",
    ),
    pytest.param(
        {"license": "llama3.1", "gated": "manual", "parameters": 10**10, "pipeline_tag": None},
        {},
        -0.5,
        ["10.0B parameters (+0.00)", "license llama3.1 (+0.00)", "gated (manual) (-0.50)"],
        id="gated-use-restricted",
    ),
    pytest.param(
        {"license": "lgpl-3.0", "parameters": 1_000_000, "pipeline_tag": None},
        {},
        3.5,
        ["1.0M parameters (+3.00)", "license LGPL-3.0-only (+0.50)"],
        id="weak-copyleft-size-capped",
    ),
]


@pytest.mark.parametrize(("candidate", "spec", "total", "reasons"), SCORE_CASES)
def test_score_table(candidate, spec, total, reasons):
    value, why = score(_candidate(**candidate), DiscoverySpec(**spec))
    assert (value, list(why)) == (pytest.approx(total, abs=0.01), reasons)


SEARCH_FIT_CASES = [
    pytest.param({"downloads": 10}, {"min_downloads": 100}, ["10 downloads < min 100"], id="dl"),
    pytest.param({"downloads": None}, {"min_downloads": 100}, [], id="downloads-unknown"),
    pytest.param(
        {"weight_bytes": 3 * 10**9}, {"max_memory_gb": 2}, ["weights take 3.00 GB > max 2 GB"]
    ),
    pytest.param(
        {"license": "cc-by-nc-4.0"},
        {"license_classes": ["permissive"]},
        ["license class non-commercial is not in ['permissive']"],
        id="license-class",
    ),
    pytest.param(
        {"license": None},
        {"license_classes": ["permissive"]},
        ["license class no license is not in ['permissive']"],
        id="license-class-none",
    ),
    pytest.param(
        {"library_name": "timm"},
        {"library": "transformers"},
        ["library 'timm' is not 'transformers'"],
    ),
    pytest.param({"languages": ("en",)}, {"language": "fr"}, ["languages ['en'] lack 'fr'"]),
    pytest.param(
        {}, {"pipeline_tag": "fill-mask"}, ["pipeline tag 'text-classification' is not 'fill-mask'"]
    ),
]


@pytest.mark.parametrize(("candidate", "spec", "reasons"), SEARCH_FIT_CASES)
def test_check_fit_search_filters(candidate, spec, reasons):
    assert check_fit(_candidate(**candidate), DiscoverySpec(**spec)) == reasons
    # A pinned model only has to be usable: search preferences do not apply to it.
    usable = [r for r in reasons if r.startswith("weights take")]
    assert check_fit(_candidate(**candidate), DiscoverySpec(**spec), pinned=True) == usable


def test_safetensors_stats_counts_bytes_per_dtype(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file(
        {"a": torch.zeros(10, dtype=torch.float32), "b": torch.zeros(10, dtype=torch.bfloat16)},
        str(path),
    )
    assert safetensors_stats(path) == (20, 10 * 4 + 10 * 2)


# --------------------------------------------------------------------------------------------
# discover: pinned and searched.
# --------------------------------------------------------------------------------------------


def test_discover_searches_the_mirror(tiny_model, cache):
    sha = import_folder(tiny_model.path, REPO, cache).revision
    (candidate,) = discover(DiscoverySpec(), cache)
    assert candidate.ref == f"{REPO}@{sha}"
    assert candidate.parameters == tiny_model.num_parameters
    assert candidate.score > 0
    assert "license Apache-2.0 (+1.00)" in candidate.reasons
    assert "pinned by config" not in candidate.reasons


@pytest.mark.parametrize("revision", [None, "main", "sha"])
def test_discover_pinned(tiny_model, cache, revision):
    sha = import_folder(tiny_model.path, REPO, cache).revision
    spec = DiscoverySpec(repo_id=REPO, revision=sha if revision == "sha" else revision)
    (candidate,) = discover(spec, cache)
    assert candidate.revision == sha
    assert candidate.reasons[0] == "pinned by config"


def test_discover_pinned_old_revision_after_refs_main_moved(variant, tiny_model, cache):
    old = import_folder(tiny_model.path, REPO, cache).revision
    new = import_folder(variant("v2", _card("---\nlicense: mit\n---\n")), REPO, cache).revision
    assert discover(DiscoverySpec(repo_id=REPO), cache)[0].revision == new
    pinned = discover(DiscoverySpec(repo_id=REPO, revision=old), cache)[0]
    assert (pinned.revision, pinned.license) == (old, "apache-2.0")
    # Search only sees what refs/main points at.
    assert [r[:2] for r in mirror_revisions(cache)] == [(REPO, new)]


def test_discover_pinned_unfit_model_names_the_reasons(tiny_model, cache):
    sha = import_folder(tiny_model.path, REPO, cache).revision
    with pytest.raises(DiscoveryError) as info:
        discover(DiscoverySpec(repo_id=REPO, max_parameters=1000), cache)
    assert str(info.value) == (
        f"{REPO}@{sha} cannot be used: {tiny_model.num_parameters:,} parameters > max 1,000"
    )


@pytest.mark.parametrize(
    ("repo_id", "revision", "expected"),
    [
        ("test-org/absent", None, "model 'test-org/absent' is not in the local mirror"),
        (REPO, "f" * 40, "is not in the local mirror"),
    ],
    ids=["repo", "revision"],
)
def test_discover_pinned_missing_suggests_hub_import(
    tiny_model, cache, repo_id, revision, expected
):
    import_folder(tiny_model.path, REPO, cache)
    with pytest.raises(DiscoveryError) as info:
        discover(DiscoverySpec(repo_id=repo_id, revision=revision), cache)
    message = str(info.value)
    assert expected in message
    assert f"loraflow hub import PATH --repo-id {repo_id}" in message


def test_discover_rejects_unfit_models_and_keeps_the_fit_one(tiny_model, variant, cache):
    import_folder(tiny_model.path, REPO, cache)
    import_folder(variant("bin", _bin_only), "test-org/bin-only", cache)
    import_folder(variant("clip", _model_type("clip_vision_model")), "test-org/clip", cache)
    ranked = discover(DiscoverySpec(), cache)
    assert [c.repo_id for c in ranked] == [REPO]


def test_discover_lists_every_rejection_when_nothing_fits(variant, cache):
    import_folder(variant("bin", _bin_only), "test-org/bin-only", cache)
    import_folder(variant("clip", _model_type("clip_vision_model")), "test-org/clip", cache)
    with pytest.raises(DiscoveryError) as info:
        discover(DiscoverySpec(), cache)
    message = str(info.value)
    assert message.startswith(f"no model in {cache} fits task text-classification: ")
    assert "test-org/bin-only: no safetensors weights (only ['pytorch_model.bin'])" in message
    assert "test-org/clip: architecture 'clip_vision_model' has no text-classification head" in (
        message
    )


def test_discover_ranks_deterministically_and_truncates(tiny_model, variant, cache):
    unlicensed = variant("nolicense", _card("# no front matter\n"))
    import_folder(unlicensed, "a-org/unlicensed", cache)
    import_folder(tiny_model.path, "c-org/tiny", cache)
    import_folder(tiny_model.path, "b-org/tiny", cache)
    ranked = discover(DiscoverySpec(), cache)
    # Same size: a declared license wins; equal scores fall back to the repo id.
    assert [c.repo_id for c in ranked] == ["b-org/tiny", "c-org/tiny", "a-org/unlicensed"]
    assert discover(DiscoverySpec(), cache) == ranked
    assert [c.repo_id for c in discover(DiscoverySpec(max_candidates=1), cache)] == ["b-org/tiny"]


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_discover_in_an_empty_mirror(tmp_path, make):
    cache = tmp_path / "hub"
    if make == "empty":
        cache.mkdir()
    with pytest.raises(DiscoveryError, match=re.escape("the mirror is empty")):
        discover(DiscoverySpec(), cache)
    assert mirror_revisions(cache) == []


def test_discover_in_an_empty_mirror_suggests_hub_import(tmp_path):
    with pytest.raises(DiscoveryError, match=re.escape("loraflow hub import")):
        discover(DiscoverySpec(), tmp_path / "hub")


def test_discovery_table_lists_ranked_then_rejected(tiny_model, variant, cache):
    import_folder(tiny_model.path, REPO, cache)
    import_folder(variant("bin", _bin_only), "test-org/bin-only", cache)
    found = _discover(DiscoverySpec(), MirrorCatalog(cache))
    assert (found.source, found.pinned) == ("mirror", False)
    rows = found.table()
    assert [(r["rank"], r["model"]) for r in rows] == [(1, REPO), (None, "test-org/bin-only")]
    assert (rows[0]["license"], rows[0]["source"], len(rows[0]["revision"])) == (
        "Apache-2.0",
        "mirror",
        40,
    )
    assert rows[1]["reasons"] == "rejected: no safetensors weights (only ['pytorch_model.bin'])"
    pinned = _discover(DiscoverySpec(repo_id=REPO), MirrorCatalog(cache))
    assert pinned.pinned and pinned.refs == [found.candidates[0].ref] and pinned.rejected == ()
