"""License audit: a pure decision over the model's and the data's licenses and the repo's facts.

Default deny: a license in no list of the policy, or no license at all, refuses the run. A
license under ``review`` passes only with an approval entry naming who, when and why, and the
approval is copied into the verdict so the audit trail shows it. Licenses are compared after
normalisation (``license_ids``), so the policy may say ``Apache-2.0`` where a card says
``apache-2.0``. The supply-chain checks (``supply_chain``) join the same record: one verdict,
every reason, the policy's hash, the card excerpt and the weight hashes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from tasks.core.audit.supply_chain import RepoCheck, RepoFacts, judge_repo
from tasks.core.catalog.base import Candidate
from tasks.core.catalog.license_ids import LicenseId, canonical, normalise
from tasks.core.config.audit import Approval, LicensePolicy
from tasks.core.config.data import DataSpec

Verdict = Literal["allow", "deny"]


@dataclass(frozen=True)
class SubjectVerdict:
    subject: str  # "model:ORG/NAME@sha" or "dataset:NAME"
    license: str | None  # normalised: SPDX id, or the custom license's Hub name
    decision: Verdict
    reason: str
    approval: dict | None = None
    declared: str | None = None  # as written in the card or config
    license_class: str | None = None


@dataclass(frozen=True)
class DatasetLicense:
    """A dataset's license as the config declares it and as its card (if any) says."""

    name: str
    declared: str | None
    card_license: str | None = None
    card_path: str | None = None


@dataclass(frozen=True)
class AuditRecord:
    verdict: Verdict
    policy_version: str
    policy_sha256: str
    intended_use: str
    subjects: tuple[SubjectVerdict, ...] = field(default_factory=tuple)
    checks: tuple[RepoCheck, ...] = ()
    model: str = ""  # repo@sha
    source: str = "mirror"
    card_excerpt: str = ""
    file_hashes: dict[str, str] = field(default_factory=dict)  # weight file -> sha256
    skipped: tuple[dict, ...] = ()  # candidates denied before this one, with their reasons
    candidates: tuple[dict, ...] = ()  # the ranked discovery table

    @property
    def reasons(self) -> list[str]:
        lines = [f"{s.subject}: {s.decision} ({s.reason})" for s in self.subjects]
        lines += [f"model:{self.model}: {c.check} {c.decision} ({c.reason})" for c in self.checks]
        return lines

    @property
    def denials(self) -> list[str]:
        """Why this record is a deny: one line per denied subject or check."""
        lines = [f"{s.subject}: {s.reason}" for s in self.subjects if s.decision == "deny"]
        lines += [
            f"model:{self.model}: {c.check}: {c.reason}"
            for c in self.checks
            if c.decision == "deny"
        ]
        return lines

    def to_dict(self) -> dict:
        return asdict(self)

    def discovery_table(self) -> dict:
        """What ``discovery/candidates.json`` holds in the MLflow run."""
        return {"chosen": self.model, "candidates": list(self.candidates)}


def _policy_entry(policy: LicensePolicy, keys: tuple[str, ...]) -> tuple[str, str] | None:
    """(list name, entry as written) of the first key any list holds, most specific first."""
    for key in keys:
        for name in ("deny", "allow", "review"):
            for entry in getattr(policy, name):
                if canonical(entry) == key:
                    return name, entry
    return None


def _approval_for(subject: str, lic: LicenseId, approvals: Sequence[Approval]) -> Approval | None:
    """An approval naming this subject (any revision, or exactly this one) and license."""
    name = subject.split("@", 1)[0]
    for approval in approvals:
        if approval.subject in (name, subject) and canonical(approval.license) in lic.keys:
            return approval
    return None


def judge(
    subject: str,
    license_id: LicenseId | str | None,
    policy: LicensePolicy,
    approvals: Sequence[Approval],
) -> SubjectVerdict:
    """Decide one subject (a model or a dataset) against the policy."""
    lic = normalise(license_id) if isinstance(license_id, str) or license_id is None else license_id
    if lic is None:
        return SubjectVerdict(subject, None, "deny", "no license declared (default deny)")

    def verdict(decision: Verdict, reason: str, approval: Approval | None = None):
        dumped = approval.model_dump() if approval else None
        return SubjectVerdict(
            subject, lic.id, decision, reason, dumped, lic.declared, lic.license_class
        )

    if lic.id == "other" and not lic.link:
        return verdict(
            "deny", f"{lic.label}: a custom license needs a license_link to review (default deny)"
        )
    found = _policy_entry(policy, lic.keys)
    if found is None:
        return verdict(
            "deny", f"{lic.label} ({lic.license_class}) is in no list of the policy (default deny)"
        )
    listed, entry = found
    if listed == "deny":
        return verdict("deny", f"{lic.label} ({lic.license_class}) is on the deny list")
    if listed == "allow":
        return verdict("allow", f"{lic.label} is on the allow list")
    name = subject.split("@", 1)[0]
    approval = _approval_for(subject, lic, approvals)
    if approval is None:
        return verdict(
            "deny", f"{lic.label} needs review and no approval names {name!r} in the config"
        )
    reason = f"{lic.label} needs review: approved by {approval.approved_by} on {approval.date}"
    return verdict("allow", reason, approval)


def judge_dataset(
    dataset: DatasetLicense, policy: LicensePolicy, approvals: Sequence[Approval]
) -> SubjectVerdict:
    """The config's declaration and the dataset card must agree; then the policy decides."""
    subject = f"dataset:{dataset.name}"
    declared, card = normalise(dataset.declared), normalise(dataset.card_license)
    if declared and card and declared.id != card.id:
        return SubjectVerdict(
            subject,
            card.id,
            "deny",
            f"the config declares {declared.label} but the dataset card {dataset.card_path} "
            f"says {card.label}",
            declared=dataset.declared,
            license_class=card.license_class,
        )
    return judge(subject, card or declared, policy, approvals)


def audit(
    candidate: Candidate,
    facts: RepoFacts | None,
    datasets: Sequence[DatasetLicense],
    policy: LicensePolicy,
    policy_sha256: str,
    approvals: Sequence[Approval],
    skipped: Sequence[dict] = (),
    candidates: Sequence[dict] = (),
) -> AuditRecord:
    """Audit one candidate and every dataset; it passes only if nothing is denied.

    ``facts`` None skips the supply-chain checks (a license-only audit, e.g. of a dataset).
    """
    subjects = [judge(f"model:{candidate.ref}", candidate.license_id, policy, approvals)]
    subjects += [judge_dataset(d, policy, approvals) for d in datasets]
    checks = judge_repo(candidate, facts, policy.supply_chain) if facts is not None else []
    denied = any(s.decision == "deny" for s in subjects) or any(
        c.decision == "deny" for c in checks
    )
    return AuditRecord(
        verdict="deny" if denied else "allow",
        policy_version=policy.version,
        policy_sha256=policy_sha256,
        intended_use=policy.intended_use,
        subjects=tuple(subjects),
        checks=tuple(checks),
        model=candidate.ref,
        source=candidate.source,
        card_excerpt=facts.card_excerpt if facts else "",
        file_hashes={h.path: h.sha256 for h in facts.weight_hashes} if facts else {},
        skipped=tuple(skipped),
        candidates=tuple(candidates),
    )


def _card_license(readme: Path | str) -> str | None:
    """The ``license`` of a dataset card; None when the file is no card (no front matter)."""
    from huggingface_hub import DatasetCard

    try:
        value = DatasetCard.load(readme).data.to_dict().get("license")
    except Exception:  # noqa: BLE001 - an unparsable README is simply not a card
        return None
    if not value:
        return None
    return value if isinstance(value, str) else ", ".join(map(str, value))


def dataset_licenses(data: DataSpec) -> tuple[DatasetLicense, ...]:
    """One entry per data source: the local files (named by ``data.name``) and each Hub id.

    The config's ``data.license`` is the declaration; a dataset card, if there is one, must
    agree with it. A Hub dataset's card is its ``README.md`` in the local cache; local files
    may sit in a folder exported from the Hub, with the card beside them. A README without
    YAML front matter is not a card.
    """
    from huggingface_hub import try_to_load_from_cache

    local_card: tuple[str | None, str | None] = (None, None)
    hub_ids: list[str] = []
    has_local = False
    for split in (s for s in (data.train, data.eval) if s is not None):
        hub_id = getattr(split, "hub_id", None)
        if hub_id:
            hub_ids += [hub_id] if hub_id not in hub_ids else []
            continue
        has_local = True
        readme = Path(split.path).parent / "README.md"
        if local_card[0] is None and readme.is_file():
            card_license = _card_license(readme)
            local_card = (card_license, str(readme) if card_license else None)
    found = []
    if has_local:
        card_license, card_path = local_card
        found.append(DatasetLicense(data.name, data.license, card_license, card_path))
    for hub_id in hub_ids:
        cached = try_to_load_from_cache(hub_id, "README.md", repo_type="dataset")
        card_license = _card_license(cached) if isinstance(cached, str) else None
        card_path = cached if card_license else None
        found.append(DatasetLicense(hub_id, data.license, card_license, card_path))
    return tuple(found)


def to_markdown(record: AuditRecord) -> str:
    lines = [
        f"## License and supply-chain audit of `{record.model}`: **{record.verdict.upper()}**",
        "",
        f"Policy {record.policy_version} (sha256 `{record.policy_sha256[:12]}`), "
        f"intended use: {record.intended_use}, source: {record.source}",
        "",
        "| subject | license | class | decision | reason |",
        "|---|---|---|---|---|",
    ]
    for s in record.subjects:
        lines.append(
            f"| `{s.subject}` | {s.license or '(none)'} | {s.license_class or ''} | "
            f"{s.decision} | {s.reason} |"
        )
    if record.checks:
        lines += ["", "| check | decision | reason |", "|---|---|---|"]
        lines += [f"| {c.check} | {c.decision} | {c.reason} |" for c in record.checks]
    if record.file_hashes:
        lines += ["", "| weight file | sha256 |", "|---|---|"]
        lines += [f"| `{path}` | `{sha}` |" for path, sha in record.file_hashes.items()]
    for skipped in record.skipped:
        lines += ["", f"Skipped `{skipped['model']}`: " + "; ".join(skipped["reasons"])]
    return "\n".join(lines)
