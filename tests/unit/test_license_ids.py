"""Hub license tags -> SPDX ids (where one exists) and license classes, as a table."""

from __future__ import annotations

import pytest

from tasks.core.catalog.license_ids import HUB_TO_SPDX, LICENSE_CLASSES, canonical, normalise

# (declared, id, is SPDX, class)
CASES = [
    ("apache-2.0", "Apache-2.0", True, "permissive"),
    ("Apache-2.0", "Apache-2.0", True, "permissive"),
    (" MIT ", "MIT", True, "permissive"),
    ("cc-by-nc-4.0", "CC-BY-NC-4.0", True, "non-commercial"),
    ("cc-by-sa-4.0", "CC-BY-SA-4.0", True, "weak-copyleft"),
    ("cc-by-nd-4.0", "CC-BY-ND-4.0", True, "no-derivatives"),
    ("gpl-3.0", "GPL-3.0-only", True, "copyleft"),
    ("GPL-3.0-only", "GPL-3.0-only", True, "copyleft"),
    ("lgpl-2.1", "LGPL-2.1-only", True, "weak-copyleft"),
    ("odbl", "ODbL-1.0", True, "weak-copyleft"),
    ("pddl", "PDDL-1.0", True, "permissive"),
    ("llama3.1", "llama3.1", False, "use-restricted"),
    ("Llama3.1", "llama3.1", False, "use-restricted"),
    ("gemma", "gemma", False, "use-restricted"),
    ("openrail", "openrail", False, "use-restricted"),
    ("creativeml-openrail-m", "creativeml-openrail-m", False, "use-restricted"),
    ("fair-noncommercial-research-license", None, False, "non-commercial"),
    ("unknown", "unknown", False, "unclear"),
    ("something-new", "something-new", False, "unclear"),
]


@pytest.mark.parametrize(("declared", "expected", "spdx", "klass"), CASES)
def test_normalise(declared, expected, spdx, klass):
    lic = normalise(declared)
    assert (lic.id, lic.spdx, lic.license_class) == (expected or declared, spdx, klass)
    assert lic.declared == declared.strip()
    assert lic.keys == (lic.id,)


def test_other_keeps_name_and_link():
    lic = normalise("other", "ACME-Community-1.0", "https://example.com/l")
    assert (lic.id, lic.name, lic.link, lic.spdx) == (
        "other",
        "ACME-Community-1.0",
        "https://example.com/l",
        False,
    )
    assert lic.keys == ("other:acme-community-1.0", "other")
    assert lic.label == "other (license_name 'ACME-Community-1.0', https://example.com/l)"
    assert normalise("other").label == "other (no license_name, no license_link)"
    # license_name / license_link mean nothing next to a standard license.
    assert normalise("mit", "x", "y").name is None


@pytest.mark.parametrize("empty", [None, "", "  ", []])
def test_nothing_declared(empty):
    assert normalise(empty) is None


def test_several_licenses_are_unclear():
    lic = normalise(["mit", "apache-2.0"])
    assert (lic.id, lic.license_class) == ("mit, apache-2.0", "unclear")
    assert normalise(["mit"]).id == "MIT"


def test_canonical_and_table_are_consistent():
    assert canonical("AGPL-3.0") == "AGPL-3.0-only"  # the deprecated SPDX spelling
    assert canonical("Other:Acme ") == "other:acme"
    assert len(set(HUB_TO_SPDX.values())) == len(HUB_TO_SPDX)  # no two tags share an id
    for tag, spdx in HUB_TO_SPDX.items():
        assert canonical(tag) == canonical(spdx) == spdx
        assert normalise(tag).license_class in LICENSE_CLASSES
