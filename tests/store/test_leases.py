"""Flow leases (migration 14) on both backends: one owner at a time, renewal, expiry and takeover, races."""

from __future__ import annotations

import threading


def test_one_owner_at_a_time_renewed_released(store):
    lease, holder = store.take_lease("pool-p", "a:1:1", 60)
    assert holder is None and lease.owner == "a:1:1" and lease.previous_owner is None
    assert lease.expires_at > store.db_clock()
    refused, holder = store.take_lease("pool-p", "b:2:1", 60)
    assert refused is None and holder.owner == "a:1:1"
    again, _ = store.take_lease("pool-p", "a:1:1", 60)  # the owner may take it again (renewal)
    assert again.owner == "a:1:1" and again.acquired_at == lease.acquired_at
    assert store.renew_lease("pool-p", "a:1:1", 60) and not store.renew_lease("pool-p", "b:2:1", 60)
    store.release_lease("pool-p", "b:2:1")  # not b's: nothing happens
    assert store.lease_holder("pool-p").owner == "a:1:1"
    store.release_lease("pool-p", "a:1:1")
    assert store.lease_holder("pool-p") is None and store.expired_leases() == []
    assert store.take_lease("pool-p", "b:2:1", 60)[0].owner == "b:2:1"


def test_an_expired_lease_is_taken_over_and_its_old_owner_cannot_renew_it(store):
    store.take_lease("pool-p", "dead:1:1", -1)  # its owner stopped renewing: already past its expiry
    assert store.lease_holder("pool-p") is None
    assert [(x.name, x.owner) for x in store.expired_leases()] == [("pool-p", "dead:1:1")]
    lease, holder = store.take_lease("pool-p", "alive:2:1", 60)
    assert holder is None and (lease.owner, lease.previous_owner) == ("alive:2:1", "dead:1:1")
    assert not store.renew_lease("pool-p", "dead:1:1", 60)  # the old owner learns it lost the lease
    event = store.events(kind="lease.taken")[-1]["details"]
    assert (event["lease"], event["owner"], event["previous_owner"]) == ("pool-p", "alive:2:1", "dead:1:1")
    assert event["expired_for_s"] >= 0


def test_racing_servers_never_both_get_the_lease(open_store):
    """Eight handles (as eight servers on one database) take the same expired lease at once: exactly one wins."""
    open_store().take_lease("pool-p", "dead:1:1", -1)
    handles = [open_store() for _ in range(8)]
    start = threading.Barrier(len(handles))
    won: list[str] = []

    def server(i: int) -> None:
        start.wait()
        lease, _ = handles[i].take_lease("pool-p", f"server-{i}:1:1", 60)
        if lease is not None:
            won.append(lease.owner)

    threads = [threading.Thread(target=server, args=(i,)) for i in range(len(handles))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1
    assert open_store().lease_holder("pool-p").owner == won[0]
    assert len(open_store().events(kind="lease.taken")) == 1
