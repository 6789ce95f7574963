"""The local mirror: a model folder imported into a standard Hugging Face cache, offline."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub import hf_hub_download, scan_cache_dir
from safetensors.torch import load_file

from tasks.core.catalog.mirror import (
    blob_id,
    content_revision,
    import_folder,
    repo_cache_dir,
    resolve_revision,
    snapshot_path,
)
from tasks.core.errors import MirrorError

SHA1 = re.compile(r"^[0-9a-f]{40}$")
REPO = "test-org/tiny-bert"


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "hub"


def _refs_main(cache: Path, repo_id: str = REPO) -> str:
    return (repo_cache_dir(cache, repo_id) / "refs" / "main").read_text()


def test_import_gives_a_stable_40_hex_revision(tiny_model, cache):
    first = import_folder(tiny_model.path, REPO, cache)
    second = import_folder(tiny_model.path, REPO, cache)
    assert SHA1.match(first.revision)
    assert first.created is True and second.created is False
    assert second.revision == first.revision
    assert first.snapshot == second.snapshot == snapshot_path(cache, REPO, first.revision)
    assert first.files == len([p for p in tiny_model.path.iterdir() if p.is_file()])
    assert _refs_main(cache) == first.revision
    assert repo_cache_dir(cache, REPO) == cache / "models--test-org--tiny-bert"


def test_snapshot_files_link_to_blobs_with_identical_content(tiny_model, cache):
    imported = import_folder(tiny_model.path, REPO, cache)
    blobs = repo_cache_dir(cache, REPO) / "blobs"
    for source in tiny_model.path.iterdir():
        link = imported.snapshot / source.name
        assert link.is_symlink()
        assert link.resolve().parent == blobs.resolve()
        assert link.resolve().name == blob_id(source)
        assert link.read_bytes() == source.read_bytes()
    # Weights are named like the Hub's LFS blobs: the sha256 of the content.
    weights = (imported.snapshot / "model.safetensors").resolve()
    assert weights.name == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert not list(blobs.glob("*.incomplete"))
    assert not list((imported.snapshot.parent).glob(".*.partial"))


def test_revision_depends_on_content_not_on_location_or_mtime(tiny_model, cache, tmp_path):
    first = import_folder(tiny_model.path, REPO, cache)
    copy = Path(shutil.copytree(tiny_model.path, tmp_path / "elsewhere" / "model"))
    (copy / ".git").mkdir()
    (copy / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (copy / "__pycache__").mkdir()
    (copy / "__pycache__" / "x.pyc").write_bytes(b"\0")
    again = import_folder(copy, REPO, cache)
    assert again.revision == first.revision and again.created is False


def test_changing_one_file_gives_a_new_revision_and_moves_refs_main(tiny_model_copy, cache):
    old = import_folder(tiny_model_copy, REPO, cache)
    readme = tiny_model_copy / "README.md"
    readme.write_text(readme.read_text() + "\nOne more line.\n")
    new = import_folder(tiny_model_copy, REPO, cache)
    assert SHA1.match(new.revision) and new.revision != old.revision
    assert new.created is True
    assert _refs_main(cache) == new.revision
    assert resolve_revision(cache, REPO) == new.revision
    # The old revision stays pinned and loadable; unchanged files share their blobs.
    assert resolve_revision(cache, REPO, old.revision) == old.revision
    assert (old.snapshot / "README.md").read_text() != readme.read_text()
    blobs = list((repo_cache_dir(cache, REPO) / "blobs").iterdir())
    assert len(blobs) == old.files + 1


@pytest.mark.parametrize("change", ["add", "rename", "delete"])
def test_adding_renaming_or_deleting_a_file_changes_the_revision(tiny_model_copy, cache, change):
    old = import_folder(tiny_model_copy, REPO, cache)
    if change == "add":
        (tiny_model_copy / "extra" / "notes.txt").parent.mkdir()
        (tiny_model_copy / "extra" / "notes.txt").write_text("hi\n")
    elif change == "rename":
        (tiny_model_copy / "README.md").rename(tiny_model_copy / "MODEL_CARD.md")
    else:
        (tiny_model_copy / "vocab.txt").unlink()
    new = import_folder(tiny_model_copy, REPO, cache)
    assert new.revision != old.revision
    assert _refs_main(cache) == new.revision


def test_scan_cache_dir_sees_the_repo_without_warnings(tiny_model_copy, cache):
    old = import_folder(tiny_model_copy, REPO, cache)
    (tiny_model_copy / "README.md").write_text("---\nlicense: mit\n---\n")
    new = import_folder(tiny_model_copy, REPO, cache)

    report = scan_cache_dir(cache)
    assert report.warnings == []
    (repo,) = report.repos
    assert (repo.repo_id, repo.repo_type) == (REPO, "model")
    revisions = {r.commit_hash: r for r in repo.revisions}
    assert set(revisions) == {old.revision, new.revision}
    assert revisions[new.revision].refs == frozenset({"main"})
    assert revisions[old.revision].refs == frozenset()
    files = {f.file_name for f in revisions[new.revision].files}
    assert files == {p.name for p in tiny_model_copy.iterdir()}
    assert repo.size_on_disk > 0


def test_from_pretrained_loads_model_and_tokenizer_offline(tiny_model, cache):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    sha = import_folder(tiny_model.path, REPO, cache).revision
    kwargs = {"revision": sha, "cache_dir": cache, "local_files_only": True}
    model = AutoModelForSequenceClassification.from_pretrained(REPO, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(REPO, **kwargs)

    assert model.config.model_type == "bert" and model.num_labels == 2
    expected = load_file(tiny_model.path / "model.safetensors")
    state = model.state_dict()
    for name, tensor in expected.items():
        assert torch.equal(state[name], tensor), name
    vocab = (tiny_model.path / "vocab.txt").read_text().split()
    ids = tokenizer("the good movie")["input_ids"]
    assert ids == [vocab.index(t) for t in ("[CLS]", "the", "good", "movie", "[SEP]")]
    config_path = hf_hub_download(REPO, "config.json", **kwargs)
    assert Path(config_path) == snapshot_path(cache, REPO, sha) / "config.json"


def test_resolve_revision(tiny_model, cache):
    sha = import_folder(tiny_model.path, REPO, cache).revision
    assert resolve_revision(cache, REPO) == sha
    assert resolve_revision(cache, REPO, "main") == sha
    assert resolve_revision(cache, REPO, sha) == sha


@pytest.mark.parametrize(
    ("repo_id", "revision", "expected"),
    [
        (REPO, "dev", "revision 'dev' of 'test-org/tiny-bert' is not in the local mirror"),
        (REPO, "0" * 40, f"revision '{'0' * 40}' of 'test-org/tiny-bert' is not in the local"),
        ("test-org/other", None, "model 'test-org/other' is not in the local mirror"),
    ],
    ids=["unknown-branch", "unknown-sha", "unknown-repo"],
)
def test_resolve_revision_unknown(tiny_model, cache, repo_id, revision, expected):
    import_folder(tiny_model.path, REPO, cache)
    with pytest.raises(MirrorError, match=re.escape(expected)):
        resolve_revision(cache, repo_id, revision)


@pytest.mark.parametrize(
    "repo_id", ["tiny-bert", "a/b/c", "/name", "org/", "-org/name", "org/na me", "", "org/.x"]
)
def test_bad_repo_id_is_refused(tiny_model, cache, repo_id):
    with pytest.raises(MirrorError, match="is not of the form ORG/NAME"):
        import_folder(tiny_model.path, repo_id, cache)
    assert not cache.exists()


def test_folder_without_config_json_is_refused(tiny_model_copy, cache):
    (tiny_model_copy / "config.json").unlink()
    with pytest.raises(MirrorError, match="holds no config.json"):
        import_folder(tiny_model_copy, REPO, cache)
    assert not cache.exists()


def test_folder_with_only_a_nested_config_json_is_refused(tiny_model_copy, cache):
    (tiny_model_copy / "1_Pooling").mkdir()
    (tiny_model_copy / "config.json").rename(tiny_model_copy / "1_Pooling" / "config.json")
    with pytest.raises(MirrorError, match="holds no config.json"):
        import_folder(tiny_model_copy, REPO, cache)


def test_missing_folder_is_refused(tmp_path, cache):
    with pytest.raises(MirrorError, match="is not a directory"):
        import_folder(tmp_path / "nope", REPO, cache)
    (tmp_path / "file").write_text("x")
    with pytest.raises(MirrorError, match="is not a directory"):
        import_folder(tmp_path / "file", REPO, cache)


def test_blob_id_follows_the_hub(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    assert blob_id(text) == "ce013625030ba8dba906f756967f9e9ca394464a"  # git hash-object
    weights = tmp_path / "tiny.bin"
    weights.write_bytes(b"hello\n")
    assert blob_id(weights) == hashlib.sha256(b"hello\n").hexdigest()


def test_content_revision_is_order_independent_and_content_sensitive():
    entries = {"a.txt": "1" * 40, "b/c.json": "2" * 40}
    assert content_revision(entries) == content_revision(dict(reversed(entries.items())))
    assert content_revision(entries) != content_revision({**entries, "a.txt": "3" * 40})
    assert content_revision(entries) != content_revision({"A.txt": "1" * 40, "b/c.json": "2" * 40})
