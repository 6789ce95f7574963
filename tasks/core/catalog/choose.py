"""Which catalog backend answers: the mirror offline (the default), the Hub online."""

from __future__ import annotations

from pathlib import Path

from tasks.core.catalog.base import Catalog, Source
from tasks.core.catalog.mirror import MirrorCatalog


def catalog_named(source: Source, cache_dir: Path) -> Catalog:
    """The backend that produced a discovery, so the audit reads from the same place."""
    if source == "mirror":
        return MirrorCatalog(cache_dir)
    from tasks.core.catalog.hub import HubCatalog

    return HubCatalog(cache_dir=cache_dir)


def catalog_for(cache_dir: Path, offline: bool | None = None) -> Catalog:
    """The mirror when ``HF_HUB_OFFLINE`` is set (the default), else the Hub."""
    if offline is None:
        from huggingface_hub import is_offline_mode

        offline = is_offline_mode()
    return catalog_named("mirror" if offline else "hub", cache_dir)
