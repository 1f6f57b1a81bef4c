"""A wave's threads share one hosts() read (coordinator/shared_reads.py), through the real driver and simulator:
one read serves every thread while young, any change drops it."""

from __future__ import annotations

from provisioner.coordinator.shared_reads import SharedHosts


def reads(lab) -> int:
    return sum(1 for _, method, _ in lab.world.call_log if method == "host.get_all_records")


def test_one_read_serves_the_wave_and_a_change_drops_it(lab):
    shared = SharedHosts(max_age=3600)
    one, two = shared.wrap(lab.driver.fork()), shared.wrap(lab.driver.fork())
    try:
        before = reads(lab)
        first = one.hosts()
        assert two.hosts() == first and one.fork().hosts() == first
        assert reads(lab) == before + 1
        member = next(h for h in first if not h.is_master)
        two.disable(member.ref)  # a change through any wave driver: the next read is fresh
        after = one.hosts()
        assert reads(lab) == before + 2
        assert not next(h for h in after if h.ref == member.ref).enabled
        one.precheck_facts()  # reads that are never shared leave the shared one alone
        now = reads(lab)
        assert one.hosts() == after and reads(lab) == now
        assert SharedHosts(max_age=0).wrap(lab.driver).hosts() and reads(lab) == now + 1
    finally:
        one.close()
        two.close()
