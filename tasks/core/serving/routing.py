"""Sticky routing: a request key always lands in the same bucket, whatever the process.

Buckets come from a hash of the key (not Python's salted ``hash``), so every replica and
every restart agrees. A key routed to the challenger at 10 % stays there at 50 % and 100 %:
raising the weight only adds keys, it never moves a user back and forth.
"""

from __future__ import annotations

import hashlib

BUCKETS = 10_000  # basis points: 0.01 % resolution


def bucket(key: str) -> int:
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def to_challenger(key: str, percent: float) -> bool:
    """True when ``key`` belongs to the challenger's ``percent`` share of traffic."""
    return bucket(key) < round(percent * BUCKETS / 100)
