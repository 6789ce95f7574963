"""License ids: the Hub's license tags normalised to SPDX ids, and a class for each.

Model and dataset cards carry the Hub's lower-case tags (``apache-2.0``, ``cc-by-nc-4.0``,
``llama3.1``); compliance reviewers and SBOM tools speak SPDX (``Apache-2.0``,
``CC-BY-NC-4.0``). A tag with an SPDX id is normalised to it; a custom license without one
(``llama3.1``, ``gemma``, the OpenRAIL family, ``other``) keeps its Hub name, and ``other``
keeps the ``license_name`` / ``license_link`` the card gives for it. Matching is
case-insensitive, so a policy may write either spelling. The GNU tags name no "or later"
clause, so they map to the ``-only`` ids: the narrower reading.

The table follows https://huggingface.co/docs/hub/repositories-licenses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

LicenseClass = Literal[
    "permissive",
    "weak-copyleft",
    "copyleft",
    "no-derivatives",
    "non-commercial",
    "use-restricted",
    "unclear",
]
LICENSE_CLASSES: tuple[str, ...] = LicenseClass.__args__  # type: ignore[attr-defined]

_PERMISSIVE = {
    "apache-2.0": "Apache-2.0",
    "mit": "MIT",
    "afl-3.0": "AFL-3.0",
    "artistic-2.0": "Artistic-2.0",
    "bsl-1.0": "BSL-1.0",
    "bsd-2-clause": "BSD-2-Clause",
    "bsd-3-clause": "BSD-3-Clause",
    "bsd-3-clause-clear": "BSD-3-Clause-Clear",
    "cc0-1.0": "CC0-1.0",
    "cc-by-2.0": "CC-BY-2.0",
    "cc-by-2.5": "CC-BY-2.5",
    "cc-by-3.0": "CC-BY-3.0",
    "cc-by-4.0": "CC-BY-4.0",
    "cdla-permissive-1.0": "CDLA-Permissive-1.0",
    "cdla-permissive-2.0": "CDLA-Permissive-2.0",
    "wtfpl": "WTFPL",
    "ecl-2.0": "ECL-2.0",
    "etalab-2.0": "etalab-2.0",
    "isc": "ISC",
    "postgresql": "PostgreSQL",
    "ncsa": "NCSA",
    "unlicense": "Unlicense",
    "zlib": "Zlib",
    "pddl": "PDDL-1.0",
    "odc-by": "ODC-By-1.0",
}
_WEAK_COPYLEFT = {
    "cc-by-sa-3.0": "CC-BY-SA-3.0",
    "cc-by-sa-4.0": "CC-BY-SA-4.0",
    "cdla-sharing-1.0": "CDLA-Sharing-1.0",
    "epl-1.0": "EPL-1.0",
    "epl-2.0": "EPL-2.0",
    "lgpl-2.1": "LGPL-2.1-only",
    "lgpl-3.0": "LGPL-3.0-only",
    "lppl-1.3c": "LPPL-1.3c",
    "ms-pl": "MS-PL",
    "mpl-2.0": "MPL-2.0",
    "odbl": "ODbL-1.0",
    "ofl-1.1": "OFL-1.1",
}
_COPYLEFT = {
    "agpl-3.0": "AGPL-3.0-only",
    "gpl-2.0": "GPL-2.0-only",
    "gpl-3.0": "GPL-3.0-only",
    "eupl-1.1": "EUPL-1.1",
    "eupl-1.2": "EUPL-1.2",
    "osl-3.0": "OSL-3.0",
}
_NO_DERIVATIVES = {"cc-by-nd-4.0": "CC-BY-ND-4.0"}
_NON_COMMERCIAL = {
    "cc-by-nc-2.0": "CC-BY-NC-2.0",
    "cc-by-nc-3.0": "CC-BY-NC-3.0",
    "cc-by-nc-4.0": "CC-BY-NC-4.0",
    "cc-by-nc-nd-3.0": "CC-BY-NC-ND-3.0",
    "cc-by-nc-nd-4.0": "CC-BY-NC-ND-4.0",
    "cc-by-nc-sa-2.0": "CC-BY-NC-SA-2.0",
    "cc-by-nc-sa-3.0": "CC-BY-NC-SA-3.0",
    "cc-by-nc-sa-4.0": "CC-BY-NC-SA-4.0",
    "c-uda": "C-UDA-1.0",
}
# Hub tags with no SPDX id: kept by name.
_CUSTOM: dict[str, LicenseClass] = {
    "openmdw-1.0": "permissive",
    "apple-ascl": "permissive",
    "lgpl-lr": "weak-copyleft",
    "fair-noncommercial-research-license": "non-commercial",
    "h-research": "non-commercial",
    "intel-research": "non-commercial",
    "apple-amlr": "non-commercial",
    "deepfloyd-if-license": "non-commercial",
    "openrail": "use-restricted",
    "openrail++": "use-restricted",
    "bigscience-openrail-m": "use-restricted",
    "creativeml-openrail-m": "use-restricted",
    "bigscience-bloom-rail-1.0": "use-restricted",
    "bigcode-openrail-m": "use-restricted",
    "llama2": "use-restricted",
    "llama3": "use-restricted",
    "llama3.1": "use-restricted",
    "llama3.2": "use-restricted",
    "llama3.3": "use-restricted",
    "llama4": "use-restricted",
    "gemma": "use-restricted",
    # Families and placeholders: which license applies cannot be told from the tag.
    "bsd": "unclear",
    "cc": "unclear",
    "gpl": "unclear",
    "lgpl": "unclear",
    "gfdl": "unclear",
    "unknown": "unclear",
    "other": "unclear",
}

HUB_TO_SPDX: dict[str, str] = {
    **_PERMISSIVE,
    **_WEAK_COPYLEFT,
    **_COPYLEFT,
    **_NO_DERIVATIVES,
    **_NON_COMMERCIAL,
}
_CLASS_OF: dict[str, LicenseClass] = {
    **{spdx: "permissive" for spdx in _PERMISSIVE.values()},
    **{spdx: "weak-copyleft" for spdx in _WEAK_COPYLEFT.values()},
    **{spdx: "copyleft" for spdx in _COPYLEFT.values()},
    **{spdx: "no-derivatives" for spdx in _NO_DERIVATIVES.values()},
    **{spdx: "non-commercial" for spdx in _NON_COMMERCIAL.values()},
    **_CUSTOM,
}
# Lower-cased SPDX id (and the deprecated GNU ids without -only) -> canonical SPDX id.
_BY_LOWER: dict[str, str] = {
    **{spdx.lower(): spdx for spdx in HUB_TO_SPDX.values()},
    **HUB_TO_SPDX,
}


@dataclass(frozen=True)
class LicenseId:
    """A declared license after normalisation."""

    id: str  # SPDX id, or the Hub's name for a custom license ("llama3.1", "other")
    declared: str  # as the card wrote it
    spdx: bool
    license_class: LicenseClass
    name: str | None = None  # license_name of an ``other`` license
    link: str | None = None  # license_link of an ``other`` license

    @property
    def keys(self) -> tuple[str, ...]:
        """Policy entries that match it, most specific first (``other:NAME`` before ``other``)."""
        if self.id == "other" and self.name:
            return (f"other:{self.name.lower()}", "other")
        return (self.id,)

    @property
    def label(self) -> str:
        if self.id == "other":
            parts = [f"license_name {self.name!r}" if self.name else "no license_name"]
            parts.append(self.link or "no license_link")
            return f"other ({', '.join(parts)})"
        return self.id


def canonical(license_id: str) -> str:
    """The spelling a policy entry or approval is compared in (SPDX case, custom lower)."""
    text = license_id.strip()
    low = text.lower()
    if low.startswith("other:"):
        return "other:" + low.removeprefix("other:").strip()
    return _BY_LOWER.get(low, low)


def normalise(declared, name: str | None = None, link: str | None = None) -> LicenseId | None:
    """Normalise what a card's ``license`` field holds; None when nothing is declared.

    A list (seen on older cards) is kept as one unknown id: which license governs cannot be
    decided automatically, so the policy default (deny) applies unless it is reviewed.
    """
    if isinstance(declared, list | tuple):
        items = [str(d).strip() for d in declared if str(d).strip()]
        if len(items) > 1:
            text = ", ".join(items)
            return LicenseId(text.lower(), text, False, "unclear")
        declared = items[0] if items else None
    if declared is None or not str(declared).strip():
        return None
    text = str(declared).strip()
    cid = canonical(text)
    if cid.startswith("other:"):  # a policy-style reference used as a declaration
        name, cid = name or cid.removeprefix("other:"), "other"
    klass = _CLASS_OF.get(cid, "unclear")
    spdx = cid in _CLASS_OF and cid not in _CUSTOM
    if cid != "other":
        name = link = None
    return LicenseId(cid, text, spdx, klass, name or None, link or None)


def license_class(license_id: str) -> LicenseClass:
    return _CLASS_OF.get(canonical(license_id), "unclear")
