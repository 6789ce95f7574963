"""License audit: a pure decision over the model's and the data's declared licenses.

Default deny: a license in no list of the policy, or no license at all, refuses the run. A
license under ``review`` passes only with an approval entry naming who, when and why, and the
approval is copied into the verdict so the audit trail shows it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

from tasks.core.config import Approval, LicensePolicy

Verdict = Literal["allow", "deny"]


@dataclass(frozen=True)
class SubjectVerdict:
    subject: str  # "model:ORG/NAME@sha" or "dataset:NAME"
    license: str | None
    decision: Verdict
    reason: str
    approval: dict | None = None


@dataclass(frozen=True)
class AuditRecord:
    verdict: Verdict
    policy_version: str
    policy_sha256: str
    intended_use: str
    subjects: tuple[SubjectVerdict, ...] = field(default_factory=tuple)

    @property
    def reasons(self) -> list[str]:
        return [f"{s.subject}: {s.decision} ({s.reason})" for s in self.subjects]

    def to_dict(self) -> dict:
        return asdict(self)


def judge(
    subject: str,
    license_id: str | None,
    policy: LicensePolicy,
    approvals: list[Approval],
) -> SubjectVerdict:
    """Decide one subject (a model or a dataset) against the policy."""
    if not license_id:
        return SubjectVerdict(subject, None, "deny", "no license declared (default deny)")
    lic = license_id.strip().lower()
    if lic in policy.deny:
        return SubjectVerdict(subject, lic, "deny", f"{lic} is on the deny list")
    if lic in policy.allow:
        return SubjectVerdict(subject, lic, "allow", f"{lic} is on the allow list")
    if lic in policy.review:
        name = subject.split("@", 1)[0]
        for approval in approvals:
            if approval.subject == name and approval.license.lower() == lic:
                reason = (
                    f"{lic} needs review: approved by {approval.approved_by} on {approval.date}"
                )
                return SubjectVerdict(subject, lic, "allow", reason, approval.model_dump())
        return SubjectVerdict(
            subject, lic, "deny", f"{lic} needs review and no approval names {name!r} in the config"
        )
    return SubjectVerdict(subject, lic, "deny", f"{lic} is in no list of the policy (default deny)")


def audit(
    model_subject: str,
    model_license: str | None,
    datasets: dict[str, str | None],
    policy: LicensePolicy,
    policy_sha256: str,
    approvals: list[Approval],
) -> AuditRecord:
    """Audit the model and every dataset; the run passes only if every subject is allowed."""
    subjects = [judge(model_subject, model_license, policy, approvals)]
    subjects += [judge(f"dataset:{n}", lic, policy, approvals) for n, lic in datasets.items()]
    verdict: Verdict = "allow" if all(s.decision == "allow" for s in subjects) else "deny"
    return AuditRecord(verdict, policy.version, policy_sha256, policy.intended_use, tuple(subjects))


def to_markdown(record: AuditRecord) -> str:
    lines = [
        f"## License audit: **{record.verdict.upper()}**",
        "",
        f"Policy {record.policy_version} (sha256 `{record.policy_sha256[:12]}`), "
        f"intended use: {record.intended_use}",
        "",
        "| subject | license | decision | reason |",
        "|---|---|---|---|",
    ]
    for s in record.subjects:
        lines.append(f"| `{s.subject}` | {s.license or '(none)'} | {s.decision} | {s.reason} |")
    return "\n".join(lines)
