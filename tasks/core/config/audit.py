"""The discovery and license-audit sections, and the license policy file's schema.

Kept apart from ``tasks.core.config.experiment`` (which re-exports them) so the schema of the first two
stages, which a compliance reviewer reads, sits in one place. See ``docs/audit.md``.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from tasks.core.catalog.license_ids import LICENSE_CLASSES, LicenseClass, canonical, license_class
from tasks.core.config.spec import Spec


class DiscoverySpec(Spec):
    task: Literal["text-classification"] = Field(
        "text-classification",
        description="What the model is fine-tuned for; candidates must load for this task.",
    )
    repo_id: str | None = Field(
        None,
        description="Pin one model (ORG/NAME): skips the search but not the license audit.",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$",
    )
    revision: str | None = Field(
        None, description="Branch or commit sha of the pinned model; default: refs/main."
    )
    pipeline_tag: str | None = Field(
        None,
        description="Search only models whose card declares this pipeline tag (a Hub filter); "
        "default: any tag, the architecture decides.",
    )
    library: str | None = Field(
        None, description="Search only models of this library (card library_name; a Hub filter)."
    )
    language: str | None = Field(
        None, description="Search only models whose card lists this language (a Hub filter)."
    )
    sort: Literal["downloads", "likes", "recency"] = Field(
        "downloads",
        description="Order the Hub is searched in (search_limit applies to it); the mirror is "
        "read whole.",
    )
    search_limit: int = Field(
        50, ge=1, le=1000, description="How many Hub search results are ranked at most."
    )
    max_parameters: int | None = Field(
        None, ge=1, description="Skip candidates with more parameters than this."
    )
    max_memory_gb: float | None = Field(
        None,
        gt=0,
        description="Skip candidates whose weights take more memory than this (GB, from the "
        "safetensors dtypes).",
    )
    min_downloads: int | None = Field(
        None,
        ge=0,
        description="Skip candidates with fewer Hub downloads (last 30 days); not applied to the "
        "mirror, which has no counts.",
    )
    license_classes: tuple[LicenseClass, ...] | None = Field(
        None,
        description=f"License classes a searched candidate may have ({', '.join(LICENSE_CLASSES)}"
        "); default: any, the audit decides.",
    )
    preferred_libraries: tuple[str, ...] = Field(
        (),
        description="Libraries ranked higher (the first most), e.g. [transformers].",
    )
    require_safetensors: bool = Field(
        True, description="Skip candidates whose weights exist only as pickle files."
    )
    max_candidates: int = Field(5, ge=1, description="How many ranked candidates to report.")

    @model_validator(mode="after")
    def _revision_needs_repo(self) -> DiscoverySpec:
        if self.revision and not self.repo_id:
            raise ValueError("'revision' is set but 'repo_id' is not: name the model to pin")
        return self


class Approval(Spec):
    subject: str = Field(
        description="What is approved: 'model:ORG/NAME' (any revision), 'model:ORG/NAME@SHA' "
        "(that revision only) or 'dataset:NAME'.",
        pattern=r"^(model:[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*(@[0-9a-f]{40})?"
        r"|dataset:\S+)$",
    )
    license: str = Field(
        description="The license approved for that subject: SPDX id or Hub tag, any case "
        "('other' or 'other:LICENSE_NAME' for a custom license)."
    )
    approved_by: str = Field(min_length=1, description="Who approved it (name or e-mail).")
    date: str = Field(description="When (YYYY-MM-DD).", pattern=r"^\d{4}-\d{2}-\d{2}$")
    reason: str = Field(min_length=10, description="Why the use is acceptable.")

    @field_validator("date", mode="before")
    @classmethod
    def _iso_date(cls, value):
        """YAML reads an unquoted 2026-01-15 as a date; accept it as written."""
        return value.isoformat() if isinstance(value, datetime.date) else value


class LicenseSpec(Spec):
    policy_file: Path = Field(
        description="License policy YAML (allow / review / deny), relative to the file naming it."
    )
    approvals: tuple[Approval, ...] = Field(
        default_factory=tuple,
        description="Explicit sign-offs for licenses the policy puts under review.",
    )

    @field_validator("policy_file")
    @classmethod
    def _exists(cls, path: Path) -> Path:
        if not path.is_file():
            raise ValueError(f"policy file not found: {path}")
        return path


class SupplyChainPolicy(Spec):
    """What a model repo may contain besides a license: the part of the policy about code."""

    allow_pickle: bool = Field(
        False,
        description="Accept models whose weights exist only as pickle files (.bin, .pt, .pth, "
        ".ckpt), which can run code when loaded.",
    )
    remote_code_allowlist: tuple[str, ...] = Field(
        (),
        description="Repos (ORG/NAME, or ORG/* for an organisation) whose custom code (auto_map, "
        "*.py files) is accepted.",
    )
    secrets: Literal["deny", "warn"] = Field(
        "deny",
        description="Verdict when the card, config or tokenizer files hold something that looks "
        "like a secret (token, key).",
    )


class LicensePolicy(Spec):
    """The content of a license policy file (``configs/policies/licenses.yaml``)."""

    kind: Literal["license-policy"] = Field(description="Marks the file as a license policy.")
    version: str = Field(description="Policy version, recorded with every verdict.")
    intended_use: Literal["commercial", "research"] = Field(
        description="What the fine-tuned models are used for; a commercial policy may not allow "
        "a non-commercial license."
    )
    allow: tuple[str, ...] = Field(
        description="License ids accepted without review (SPDX ids or Hub tags, any case; "
        "'other:LICENSE_NAME' for one custom license)."
    )
    review: tuple[str, ...] = Field(
        default_factory=tuple, description="License ids that pass only with an approval entry."
    )
    deny: tuple[str, ...] = Field(description="License ids refused outright.")
    supply_chain: SupplyChainPolicy = Field(
        default_factory=SupplyChainPolicy,
        description="Pickle weights, custom code and secrets in the model repo.",
    )

    @model_validator(mode="after")
    def _disjoint(self) -> LicensePolicy:
        lists = {"allow": self.allow, "review": self.review, "deny": self.deny}
        seen: dict[str, str] = {}
        for name, ids in lists.items():
            for license_id in ids:
                cid = canonical(license_id)
                if cid in seen:
                    where = (
                        f"listed twice in {name}"
                        if seen[cid] == name
                        else (f"in both {seen[cid]} and {name}")
                    )
                    raise ValueError(f"{license_id!r} is {where}")
                seen[cid] = name
                if (
                    name == "allow"
                    and self.intended_use == "commercial"
                    and license_class(cid) == "non-commercial"
                ):
                    raise ValueError(
                        f"allow: {license_id!r} is a non-commercial license but intended_use is "
                        "commercial; move it to review or deny"
                    )
        return self
