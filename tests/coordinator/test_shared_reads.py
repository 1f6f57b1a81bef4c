"""A wave's threads share their hosts() and vms() reads (coordinator/shared_reads.py), through the real driver and
simulator: one read serves every thread while young, threads asking while it is under way join it, and a change
makes every read started before it unusable, even one still under way."""

from __future__ import annotations

import threading

from provisioner.coordinator.shared_reads import Sessions, SharedReads


def reads(lab, method: str = "host.get_all_records") -> int:
    return sum(1 for _, called, _ in lab.world.call_log if called == method)


def test_one_read_serves_the_wave_and_a_change_drops_it(lab):
    shared = SharedReads(max_age=3600)
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
        two.assert_can_evacuate(member.ref)  # so do XAPI's checks (CHECK reads the hosts again after it)
        now = reads(lab)
        assert one.hosts() == after and reads(lab) == now
        assert SharedReads(max_age=0).wrap(lab.driver).hosts() and reads(lab) == now + 1
        vm_reads = reads(lab, "VM.get_all_records")
        assert one.vms() == two.vms() and reads(lab, "VM.get_all_records") == vm_reads + 1
    finally:
        one.close()
        two.close()


class Gated:
    """The real driver, the answer of its hosts() held at a gate (so a test decides when a read under way ends)."""

    def __init__(self, driver):
        self.driver, self.entered, self.gate = driver, threading.Event(), threading.Event()

    def hosts(self):
        found = self.driver.hosts()  # the pool as it is now ...
        self.entered.set()
        assert self.gate.wait(30)
        return found  # ... handed over later

    def __getattr__(self, name):
        return getattr(self.driver, name)


def test_threads_asking_while_a_read_is_under_way_join_it(lab):
    shared = SharedReads(max_age=3600)
    slow = Gated(lab.driver.fork())
    drivers = [shared.wrap(slow)] + [shared.wrap(lab.driver.fork()) for _ in range(3)]
    before, answers = reads(lab), {}
    try:
        first = threading.Thread(target=lambda: answers.update({0: drivers[0].hosts()}))
        first.start()
        assert slow.entered.wait(30)
        others = [threading.Thread(target=lambda i=i: answers.update({i: drivers[i].hosts()})) for i in (1, 2, 3)]
        for t in others:
            t.start()
        slow.gate.set()
        for t in [first, *others]:
            t.join(30)
        assert len(answers) == 4 and all(a == answers[0] for a in answers.values())
        assert reads(lab) == before + 1  # four threads, one read
    finally:
        for d in drivers:
            d.close()


def test_a_read_under_way_during_a_change_serves_nobody_after_it(lab):
    """The race a cache keyed on when a read ended would lose: a read starts, another thread disables a host and
    returns, the read ends; a thread asking after the change must read again, not get the pool before it."""
    shared = SharedReads(max_age=3600)
    slow = Gated(lab.driver.fork())
    reader, changer = shared.wrap(slow), shared.wrap(lab.driver.fork())
    answers = []
    try:
        member = next(h for h in lab.driver.hosts() if not h.is_master and h.enabled)
        t = threading.Thread(target=lambda: answers.append(reader.hosts()))
        t.start()
        assert slow.entered.wait(30)
        changer.disable(member.ref)
        slow.gate.set()
        t.join(30)
        assert answers and next(h for h in answers[0] if h.ref == member.ref).enabled  # read before the change
        after = changer.hosts()
        assert not next(h for h in after if h.ref == member.ref).enabled
    finally:
        reader.close()
        changer.close()


def test_a_failed_read_is_not_handed_on(lab):
    shared = SharedReads(max_age=3600)

    class Failing:
        def hosts(self):
            raise ConnectionResetError("the master closed the connection")

    try:
        shared.wrap(Failing()).hosts()
    except ConnectionResetError:
        pass
    else:
        raise AssertionError("the failing read did not fail")
    one = shared.wrap(lab.driver.fork())
    try:
        assert one.hosts()  # its own read, not the failure
    finally:
        one.close()


def test_a_getter_sent_raw_keeps_the_shared_reads_and_any_other_call_drops_them(lab):
    """members.py asks each member host.get_servertime through driver.call: a getter changes nothing."""
    shared = SharedReads(max_age=3600)
    one = shared.wrap(lab.driver.fork())
    try:
        member = next(h for h in one.hosts() if not h.is_master)
        before = reads(lab)
        assert one.call("host.get_servertime", member.ref)
        one.hosts()
        assert reads(lab) == before  # still the shared read
        one.call("host.disable", member.ref)  # not a getter: a change
        assert not next(h for h in one.hosts() if h.ref == member.ref).enabled
        assert reads(lab) == before + 1
        one.call("host.enable", member.ref)
    finally:
        one.close()


def test_the_members_check_of_a_wave_is_made_once_for_the_threads_that_ask_together(lab):
    """What members.wait_all does through shared(): the threads of a wave asking while one thread's check is under
    way take its answer (one host.get_servertime per member, not one per member per thread)."""
    shared = SharedReads(max_age=3600)
    entered, gate, answers = threading.Event(), threading.Event(), []
    drivers = [shared.wrap(lab.driver.fork()) for _ in range(3)]
    calls = []

    def check(driver):
        def slow():
            calls.append(1)
            entered.set()
            assert gate.wait(30)
            return {}
        answers.append(driver.shared("members", slow))
    try:
        first = threading.Thread(target=check, args=(drivers[0],))
        first.start()
        assert entered.wait(30)
        others = [threading.Thread(target=check, args=(d,)) for d in drivers[1:]]
        for t in others:
            t.start()
        gate.set()
        for t in [first, *others]:
            t.join(30)
        assert answers == [{}, {}, {}] and len(calls) == 1
        assert getattr(lab.driver, "shared", None) is None  # one host at a time: members.wait_all checks alone
    finally:
        for d in drivers:
            d.close()


def test_the_threads_sessions_are_kept_for_the_run_and_logged_out_at_its_end(lab):
    """Sessions (wave_runner.run_waves): a thread's driver and a migration worker's fork take an idle session or
    log a new one in, and give it back when closed; the run's end logs them out."""
    def count(method):
        return reads(lab, method)
    sessions = Sessions(lab.driver)
    logins, logouts = count("session.login_with_password"), count("session.logout")
    for wave in range(3):  # three waves of one host, each with a migration worker
        shared = SharedReads(max_age=3600, sessions=sessions)
        host = shared.session(lab.driver)
        worker = host.fork()
        assert worker.vms() and host.hosts()
        worker.close()
        host.close()
    assert count("session.login_with_password") == logins + 2  # two sessions, made in the first wave
    assert count("session.logout") == logouts
    sessions.close()
    assert count("session.logout") == logouts + 2
    late = SharedReads(max_age=3600, sessions=sessions).session(lab.driver)
    late.hosts()
    late.close()  # given back after the end: logged out at once
    assert count("session.logout") == logouts + 3
