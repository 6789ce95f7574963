"""Find (and optionally redact) personal data and secrets in training texts.

A text model memorises what it is trained on, so an e-mail address or an API key in the data is
a compliance incident once the model ships. Each kind is found by a cheap pattern run over the
whole column at once, then confirmed per candidate by the library that knows the format:
Luhn (credit cards) and ISO 13616 mod-97 (IBAN) from python-stdnum, Google's libphonenumber
port for phone numbers, the standard library's ``ipaddress`` for IPs. Confirming keeps false
positives (dates, prices, version numbers) out of a check that stops runs.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tasks.core.config.data import PHONE_REGIONS

# The top-level domain is all lower or all upper case: "kiosk.Valid" is a sentence running on
# after a full stop without a space, not an address.
EMAIL = re.compile(
    r"(?<![\w.+-])[\w.+%-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.(?:[a-z]{2,}|[A-Z]{2,})\b"
)
CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{1,4}){3,8}\b")
IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
# Secrets with a recognisable shape (the formats their issuers document), plus key = value.
SECRET = re.compile(
    "|".join(
        [
            r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",  # AWS access key id
            r"\bgh[pousr]_[A-Za-z0-9]{36,}\b",  # GitHub tokens
            r"\bgithub_pat_[A-Za-z0-9_]{22,}\b",
            r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b",  # Slack
            r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}\b",  # OpenAI / Anthropic style
            r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}\b",  # Stripe
            r"\bAIza[0-9A-Za-z_-]{35}\b",  # Google API key
            r"\bhf_[A-Za-z0-9]{30,}\b",  # Hugging Face
            r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",  # JWT
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
            r"\b(?i:api[_-]?key|secret(?:[_-]?key)?|access[_-]?token|auth[_-]?token|password"
            r"|passwd)\b\s*[:=]\s*['\"]?[A-Za-z0-9_\-./+=]{8,}['\"]?",
        ]
    )
)
# What looks like a phone number whichever region: "+" or a trunk "0", then 8+ digits.
PHONE_LIKE = re.compile(r"(?<![\w+])(?:\+|0)\d(?:[ ().-]?\d){7,}(?!\d)")
PLACEHOLDER = {
    "email": "[EMAIL]",
    "phone": "[PHONE]",
    "credit_card": "[CREDIT_CARD]",
    "iban": "[IBAN]",
    "ip_address": "[IP_ADDRESS]",
    "secret": "[SECRET]",
}
# Earlier kinds win where finds overlap (a card number is not also a phone number).
ORDER = ("secret", "email", "iban", "credit_card", "ip_address", "phone")
# Cheap hints, one per kind, run over the whole column (simple patterns stay fast in the
# vectorised engines); only rows with a hint are confirmed one by one.
HINTS = {
    "secret": r"AKIA|ASIA|gh[pousr]_|github_pat_|xox[abprs]-|sk-|k_live_|k_test_|AIza|hf_|eyJ"
    r"|PRIVATE KEY|(?i:api.?key|secret|token|passw)",
    "email": "@",
    "iban": r"[A-Z]{2}\d\d",
    "credit_card": r"\d[\d -]{11,}\d",
    "ip_address": r"\d\.\d+\.\d+\.\d|:[0-9A-Fa-f]*:",
    "phone": r"\d[\d ().-]{5,}\d",
}


@dataclass(frozen=True)
class Find:
    kind: str
    start: int
    end: int


def _luhn_card(digits: str) -> bool:
    from stdnum import luhn

    return 13 <= len(digits) <= 19 and luhn.is_valid(digits)


def _iban(text: str) -> int:
    """Length of the longest valid IBAN at the start of ``text`` (a word may follow it)."""
    from stdnum import iban

    cuts = [m.start() for m in re.finditer(" ", text)] + [len(text)]
    for cut in reversed(cuts):  # country length + BBAN format + ISO 7064 mod 97-10
        if iban.is_valid(text[:cut]):
            return cut
    return 0


def _ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _phones(text: str, regions: tuple[str, ...]) -> list[Find]:
    """Numbers valid in one of ``regions``, and any number written with ``+country code``.

    A national number ("07712 345678") is read in each region in turn; one written
    internationally needs no region and counts when it is a possible number (the UK's
    "+44 7700 900123" drama range is not *valid*, but nobody writes a plus sign by accident).
    """
    import phonenumbers

    finds = []
    for region in regions:
        matcher = phonenumbers.PhoneNumberMatcher(
            text, region, leniency=phonenumbers.Leniency.POSSIBLE
        )
        for m in matcher:
            if m.raw_string.startswith("+") or phonenumbers.is_valid_number(m.number):
                finds.append(Find("phone", m.start, m.end))
    return finds


PATTERNS = {
    "secret": (SECRET,),
    "email": (EMAIL,),
    "iban": (IBAN,),
    "credit_card": (CARD,),
    "ip_address": (IPV4, IPV6),
}
# Confirm a pattern match: the length of the confirmed find at its start (0: not PII).
CONFIRM = {
    "credit_card": lambda value: len(value) * _luhn_card(re.sub(r"\D", "", value)),
    "iban": _iban,
    "ip_address": lambda value: len(value) * _ip(value),
}


def _regions(regions: str | tuple[str, ...]) -> tuple[str, ...]:
    return (regions,) if isinstance(regions, str) else tuple(regions)


def _candidates(kind: str, text: str, regions: tuple[str, ...]) -> list[Find]:
    if kind == "phone":
        return _phones(text, regions)
    confirm = CONFIRM.get(kind, len)
    finds = []
    for pattern in PATTERNS[kind]:
        for m in pattern.finditer(text):
            length = confirm(m.group())
            if length:
                finds.append(Find(kind, m.start(), m.start() + length))
    return finds


def find_pii(
    text: str, kinds: tuple[str, ...], regions: str | tuple[str, ...] = PHONE_REGIONS
) -> list[Find]:
    """Confirmed finds in ``text``, without overlaps, in text order."""
    finds: list[Find] = []
    regions = _regions(regions)
    for kind in (k for k in ORDER if k in kinds):
        for find in _candidates(kind, text, regions):
            if all(find.end <= f.start or find.start >= f.end for f in finds):
                finds.append(find)
    return sorted(finds, key=lambda f: f.start)


def redact(text: str, finds: list[Find]) -> str:
    for find in sorted(finds, key=lambda f: f.start, reverse=True):
        text = text[: find.start] + PLACEHOLDER[find.kind] + text[find.end :]
    return text


@dataclass
class PiiScan:
    """Finds per row (0-based positions in the column) and the count per kind."""

    rows: dict[int, list[Find]] = field(default_factory=dict)
    kinds: Counter = field(default_factory=Counter)
    unconfirmed_phones: list[int] = field(default_factory=list)  # 0-based positions

    def redacted(self, texts: pd.Series) -> pd.Series:
        out = texts.copy()
        for pos, finds in self.rows.items():
            out.iat[pos] = redact(out.iat[pos], finds)
        return out


def scan(
    texts: pd.Series, kinds: tuple[str, ...], regions: str | tuple[str, ...] = PHONE_REGIONS
) -> PiiScan:
    """Scan a column: vectorised prefilters pick the candidate rows, then each is confirmed.

    Rows whose phone-like digits (a leading ``+`` or trunk ``0``) no region confirmed are
    counted in ``unconfirmed_phones``: a sign that ``regions`` misses where the data is from.
    """
    result = PiiScan()
    if not kinds or texts.empty:
        return result
    hinted = np.zeros(len(texts), dtype=bool)
    for pattern in {HINTS[k] for k in kinds}:
        hinted |= texts.str.contains(pattern, regex=True, na=False).to_numpy(dtype=bool)
    candidates = hinted.nonzero()[0]
    for pos in candidates:
        text = texts.iat[pos]
        finds = find_pii(text, kinds, regions)
        if finds:
            result.rows[int(pos)] = finds
            result.kinds.update(f.kind for f in finds)
        if "phone" in kinds and PHONE_LIKE.search(redact(text, finds)):
            result.unconfirmed_phones.append(int(pos))
    return result
