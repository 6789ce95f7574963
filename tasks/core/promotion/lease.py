"""The challenger's traffic share as a lease: valid until it expires unless it is renewed.

A bare "challenger gets 50 %" tag outlives the process that set it: a promotion killed in the
middle of a step left half the traffic on an unjudged challenger indefinitely. A lease names
its holder (the canary's MLflow run), its step and when it expires; the promotion flow renews
it while it runs (``LeaseKeeper``), and every serving replica reads it with the clock: an
expired lease routes everything to the champion. Pure, apart from the keeper's thread.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Literal

# Registered-model tag holding the lease (JSON); the legacy bare percent tag before it.
LEASE_TAG = "loraflow.canary.lease"
LEGACY_WEIGHT_TAG = "loraflow.canary.challenger_percent"
State = Literal["none", "active", "expired", "ended"]


@dataclass(frozen=True)
class Lease:
    percent: float  # challenger share while the lease holds
    expires_at: float  # epoch seconds
    holder: str  # the canary run that holds it
    version: str  # the challenger version it routes to
    step: int = 0
    ended: str = ""  # why the canary ended (a finished or aborted canary leaves 0 %)

    @property
    def id(self) -> str:
        """One lease per holder and step: what an expiry record is keyed by."""
        return f"{self.holder}:{self.step}"

    def encode(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def decode(text: str | None) -> Lease | None:
    """The lease a tag holds; None for no tag or one that does not parse."""
    if not text:
        return None
    try:
        data = json.loads(text)
        return Lease(**data)
    except (ValueError, TypeError):
        return None


@dataclass(frozen=True)
class Routing:
    """What a replica does with a lease at a moment: the share, and why."""

    percent: float
    state: State
    seconds_left: float = 0.0  # until expiry (negative: since)


def routing(lease: Lease | None, now: float, default: float) -> Routing:
    """The challenger share at ``now``: the lease's while it holds, 0 once it expired."""
    if lease is None:
        return Routing(default, "none")
    if lease.ended:
        return Routing(0.0, "ended")
    left = lease.expires_at - now
    if left > 0:
        return Routing(lease.percent, "active", left)
    return Routing(0.0, "expired", left)


def granted(percent: float, holder: str, version: str, step: int, seconds: float) -> Lease:
    return Lease(percent, time.time() + seconds, holder, version, step)


def ended(lease: Lease | None, why: str, holder: str = "", version: str = "") -> Lease:
    """A lease that routes nothing and says why the canary ended."""
    base = lease or Lease(0.0, 0.0, holder, version)
    return replace(base, percent=0.0, expires_at=time.time(), ended=why)


class LeaseKeeper:
    """Renews a lease every ``seconds / 3`` on a daemon thread while a canary step runs.

    ``write(lease)`` stores it; ``read()`` returns the stored one, so the keeper notices when
    somebody else ended the canary (``loraflow rollback``) and stops renewing (``revoked``).
    """

    def __init__(
        self,
        lease: Lease,
        seconds: float,
        write: Callable[[Lease], None],
        read: Callable[[], Lease | None],
    ):
        self.lease, self.seconds, self.write, self.read = lease, seconds, write, read
        self.revoked = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self.write(self.lease)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            stored = self.read()
            if stored is None or stored.holder != self.lease.holder or stored.ended:
                self.revoked = stored.ended if stored and stored.ended else "lease removed"
                return
            self.lease = replace(self.lease, expires_at=time.time() + self.seconds)
            self.write(self.lease)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
