"""The challenger's share is a lease: it holds while renewed and routes nothing once expired."""

from __future__ import annotations

import time

from tasks.core.promotion.lease import Lease, LeaseKeeper, decode, ended, granted, routing


def test_a_lease_routes_its_share_until_it_expires_then_nothing():
    lease = Lease(50.0, expires_at=1000.0, holder="run-1", version="2", step=2)
    assert routing(lease, 999.0, default=5.0).percent == 50.0
    assert routing(lease, 999.0, default=5.0).state == "active"
    late = routing(lease, 1030.0, default=5.0)
    assert (late.percent, late.state, late.seconds_left) == (0.0, "expired", -30.0)
    assert routing(None, 1030.0, default=5.0) == routing(None, 0, 5.0)  # no lease: the default
    assert routing(None, 0, 5.0).percent == 5.0
    stopped = ended(lease, "aborted: by hand")
    assert routing(stopped, 0.0, 5.0).percent == 0.0 and stopped.holder == "run-1"


def test_leases_round_trip_and_bad_tags_are_no_lease():
    lease = granted(10, "run-9", "3", 1, seconds=60)
    assert decode(lease.encode()) == lease
    assert lease.id == "run-9:1"
    assert decode("50") is None and decode("{not json") is None and decode(None) is None


def test_the_keeper_renews_while_it_runs_and_stops_when_revoked():
    store: dict[str, Lease] = {}
    first = granted(50, "run-1", "2", 1, seconds=0.6)
    keeper = LeaseKeeper(
        first, 0.6, write=lambda lease: store.update(lease=lease), read=lambda: store.get("lease")
    )
    with keeper:
        assert store["lease"] == first  # written at once
        time.sleep(0.7)
        renewed = store["lease"]
        assert renewed.expires_at > first.expires_at and renewed.holder == "run-1"
        assert routing(renewed, time.time(), 0).state == "active"  # past the first expiry
        store["lease"] = ended(renewed, "ended by hand: test")  # loraflow rollback
        time.sleep(0.5)
        assert keeper.revoked == "ended by hand: test"
        assert store["lease"].ended  # the keeper did not overwrite the end
    assert routing(store["lease"], time.time(), 0).percent == 0.0


def test_without_renewal_a_lease_lapses():
    """The promotion process died: nobody renews, and the share is gone once it expires."""
    lease = granted(50, "run-1", "2", 1, seconds=0.2)
    assert routing(lease, time.time(), 0).percent == 50.0
    time.sleep(0.3)
    assert routing(lease, time.time(), 0).state == "expired"
