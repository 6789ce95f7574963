"""One bad model card must not break the mirror (issue 14): refused at import, and listed as
unreadable (with the reason) when such a snapshot is in the cache anyway."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tasks.core.catalog.mirror import MirrorCatalog, import_folder, snapshot_path
from tasks.core.config.audit import DiscoverySpec
from tasks.core.discovery import discover
from tasks.core.errors import DiscoveryError, MirrorError

BROKEN_CARD = "---\nlicense: [apache-2.0\nlibrary_name: transformers\n---\n# broken\n"


def test_a_malformed_card_is_refused_at_import(tiny_model_copy, tmp_path):
    (tiny_model_copy / "README.md").write_text(BROKEN_CARD)
    with pytest.raises(MirrorError) as refused:
        import_folder(tiny_model_copy, "test-org/broken", tmp_path / "hub")
    message = str(refused.value)
    assert "README.md front matter is not valid YAML (line 3 of the card)" in message
    assert "fix it, then import again" in message
    assert not (tmp_path / "hub").exists() or not list((tmp_path / "hub").iterdir())


def _break_in_cache(cache: Path, repo_id: str, revision: str) -> None:
    card = snapshot_path(cache, repo_id, revision) / "README.md"
    card.unlink()  # a symlink to the blob; another tool may write the cache
    card.write_text(BROKEN_CARD)


def test_a_malformed_card_in_the_cache_is_listed_as_unreadable(tiny_model, tmp_path):
    cache = tmp_path / "hub"
    good = import_folder(tiny_model.path, "test-org/good", cache)
    copy = Path(shutil.copytree(tiny_model.path, tmp_path / "copy"))
    (copy / "extra.txt").write_text("another revision")
    bad = import_folder(copy, "test-org/broken", cache)
    _break_in_cache(cache, bad.repo_id, bad.revision)

    listed = {c.repo_id: c for c in MirrorCatalog(cache).search(None)}
    assert listed["test-org/good"].unreadable is None
    assert "front matter is not valid YAML" in listed["test-org/broken"].unreadable
    found = discover(DiscoverySpec(), MirrorCatalog(cache))
    assert [c.repo_id for c in found.candidates] == ["test-org/good"]
    (rejected,) = found.rejected
    assert rejected.reasons[0].startswith("unreadable: README.md front matter")
    with pytest.raises(DiscoveryError, match="unreadable: README.md front matter"):
        discover(DiscoverySpec(repo_id="test-org/broken"), MirrorCatalog(cache))
    assert good.revision
