"""A small synthetic SMS collection, shaped like the public one a new user tried (issue 14):
one headerless TSV, string labels ``ham`` / ``spam`` (about 13 % spam), UK phone numbers
written nationally and internationally, e-mail addresses, and exact duplicates. Words come
from the tiny test models' vocabulary, so a tiny BERT can learn from it in seconds.
"""

from __future__ import annotations

import random
from pathlib import Path

from tests.tiny import FILLER, NEGATIVE, POSITIVE

# Valid UK mobile numbers (national format) and the drama range written internationally.
UK_NATIONAL = ["07712 345678", "07712345679", "07911 123456", "07700 123456"]
UK_INTERNATIONAL = ["+44 7700 900123", "+44 7911 123457"]
EMAILS = ["win@prizes.example.com", "jo.smith@mail.example.co.uk"]
SPAM_SHARE = 0.13


def _words(rng: random.Random, pool: list[str], n: int) -> str:
    return " ".join(rng.choice(pool) for _ in range(n))


def message(rng: random.Random, spam: bool) -> str:
    """A message; about a quarter of either class carries a phone number or an address."""
    if spam:
        text = f"{_words(rng, NEGATIVE, 2)} {_words(rng, FILLER, 2)}"
    else:
        text = f"{_words(rng, FILLER, 2)} {_words(rng, POSITIVE, 2)}"
    extra = rng.random()
    if extra < 0.15:
        text += f" call {rng.choice(UK_NATIONAL)}"
    elif extra < 0.22:
        text += f" ring {rng.choice(UK_INTERNATIONAL)}"
    elif extra < 0.27:
        text += f" mail {rng.choice(EMAILS)}"
    return text


def sms_rows(count: int, seed: int = 0, duplicates: int = 12) -> list[tuple[str, str]]:
    """(label, text) rows, ``duplicates`` of them exact repeats of earlier rows."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count - duplicates):
        spam = rng.random() < SPAM_SHARE
        rows.append(("spam" if spam else "ham", message(rng, spam)))
    for _ in range(duplicates):
        rows.insert(rng.randrange(len(rows)), rng.choice(rows))
    return rows


def write_sms(path: Path, count: int = 240, seed: int = 0, duplicates: int = 12) -> Path:
    """A headerless TSV: label TAB text per line, as the public SMS collection is shipped."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = sms_rows(count, seed, duplicates)
    path.write_text("".join(f"{label}\t{text}\n" for label, text in rows))
    return path
