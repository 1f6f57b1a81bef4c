"""Members that reconnect slowly after the master returns (coordinator/members.py; the simulator's
reconnect.py): the run waits for them before each host and says why, CHECK / DISABLE retry CANNOT_CONTACT_HOST,
and a member that never comes back ends the wait with a clear message within timeouts.members."""

from __future__ import annotations

import pytest
from helpers import FAST
from labs import MEDIA, POOL

from provisioner import progress, states
from provisioner.coordinator import members, runner, steps
from provisioner.coordinator.service import ProgressReader
from provisioner.coordinator.report import run_report
from provisioner.simulator import states as sim_states
from provisioner.web import ui_view
from sim_helpers import wait_for


@pytest.fixture
def lab_hosts():
    return 4


@pytest.fixture
def lab_speed():
    """x150, not x600: a member reconnects within the master's 600 live seconds, 1 s real at x600, and under a
    loaded CI (4 pytest-xdist workers on 2 CPUs) the runner's steps between the master's return and the next
    CHECK took longer than that, so the member was back before anything waited for it. 4 s real at x150."""
    return 150.0


def names(lab, *indexes):
    return [lab.world.pools[POOL].hosts[i].name for i in indexes]


def test_four_hosts_whose_members_take_up_to_5_minutes_to_reconnect_all_upgrade(lab):
    # Each reconnects at its first backoff retry (gaps up to 256 s) at least `after` s after the master's start.
    lab.world.slow_reconnect(lab.mac(1), after=0.0)                      # forwarded calls wait for it
    lab.world.slow_reconnect(lab.mac(2), after=150.0, unreachable=True)  # CANNOT_CONTACT_HOST until then
    lab.world.slow_reconnect(lab.mac(3), after=280.0, unreachable=True)
    lines, shown = [], []
    started = runner.start_run(lab.store, POOL, MEDIA, lab.driver)

    def say(line):
        lines.append(line)
        if "waiting for pool members" in line and not shown:  # what `upgrade status` / REST show meanwhile
            shown.append(ProgressReader(lab.store).view(started.id))
            shown.append(ui_view.run_view(run_report(lab.store, started.id), []))  # the dashboard's

    final = runner.Runner(lab.store, lab.config, started.id, lab.driver, clock=lab.world.clock, timeouts=FAST,
                          say=say).run()
    assert final.state == states.RUN_DONE
    hosts = run_report(lab.store, started.id)["hosts"]
    assert [h["step"] for h in hosts] == [states.STEP_DONE] * 4  # no member failed
    waiting = lab.store.events(run_id=started.id, kind=members.MEMBERS_WAITING)
    host1, host2, host3 = names(lab, 1, 2, 3)
    assert waiting and waiting[0]["details"]["host"] == host1  # the first host after the master waited
    assert waiting[0]["details"]["waiting"].get(host3) == "CANNOT_CONTACT_HOST"
    assert set(waiting[0]["details"]["waiting"]) <= {host2, host3}
    assert lab.store.events(run_id=started.id, kind=members.MEMBERS_BACK)
    assert any("waiting for pool members to reconnect to the master before touching it" in line
               and host3 in line for line in lines)
    for i in range(4):
        assert lab.reboots(i) == 1
    view, dashboard = shown
    assert view["hosts"][1]["step"] == states.STEP_CHECK
    assert view["hosts"][1]["waiting"].startswith("waiting for members to reconnect to the master: ")
    assert f"{host3} (CANNOT_CONTACT_HOST)" in view["hosts"][1]["waiting"]
    assert "waiting for members to reconnect" in progress.render(view)
    assert dashboard["hosts"][1]["waiting"] == view["hosts"][1]["waiting"]
    assert run_report(lab.store, started.id)["hosts"][1]["waiting"] is None  # done: nothing waited for


def crash_master_and_wait_back(lab):
    master = lab.world.pools[POOL].master
    boots = master.boot_count
    lab.world.crash(master.mac)
    lab.world.power_on(master.mac)
    wait_for(lambda: master.boot_count == boots + 1 and master.state == sim_states.XAPI_RUNNING)


def context(lab, index):
    run = runner.start_run(lab.store, POOL, MEDIA, lab.driver)
    ctx = steps.Context(lab.store, lab.config, lab.driver, lab.store.get_media(MEDIA), run.id, lab.world.clock,
                        steps.Timeouts(poll=5))
    return ctx, lab.store.run_hosts(run.id)[index]


def test_disable_retries_cannot_contact_host_until_the_member_is_back(lab):
    ctx, rh = context(lab, 2)
    member = lab.world.host(lab.mac(2))
    lab.world.slow_reconnect(member.mac, after=150.0, unreachable=True)
    crash_master_and_wait_back(lab)
    assert not member.linked
    assert steps.disable(ctx, rh) == states.STEP_EVACUATE
    retries = lab.store.events(run_id=ctx.run_id, kind=members.CALL_RETRY)
    assert retries and all("CANNOT_CONTACT_HOST" in e["details"]["error"] for e in retries)
    assert member.linked and not steps.find(ctx, rh.uuid).enabled


def test_check_waits_for_every_member_then_goes_on(lab):
    ctx, rh = context(lab, 1)
    lab.world.slow_reconnect(lab.mac(3), after=200.0, unreachable=True)
    crash_master_and_wait_back(lab)
    start = lab.world.clock.now()
    assert steps.check(ctx, rh) == states.STEP_DISABLE
    assert lab.world.clock.now() - start >= 100  # it waited for host3 (reconnects 200-456 s after the master)
    (waited,) = lab.store.events(run_id=ctx.run_id, kind=members.MEMBERS_WAITING)
    assert waited["details"]["waiting"] == {names(lab, 3)[0]: "CANNOT_CONTACT_HOST"}
    assert lab.store.events(run_id=ctx.run_id, kind=members.MEMBERS_BACK)


def test_a_member_that_never_reconnects_fails_the_next_host_at_check_with_nothing_done(lab):
    """Within timeouts.members (5 min here) of the master's return: the master still shows it live (10 min)."""
    lab.world.slow_reconnect(lab.mac(2), never=True, unreachable=True)
    started = runner.start_run(lab.store, POOL, MEDIA, lab.driver, stop_on_failure=True)
    timeouts = steps.Timeouts(down=900, up=4 * 3600, enable=1800, poll=5, members=300)
    final = runner.Runner(lab.store, lab.config, started.id, lab.driver, clock=lab.world.clock,
                          timeouts=timeouts).run()
    hosts = run_report(lab.store, started.id)["hosts"]
    assert hosts[0]["step"] == states.STEP_DONE
    failed = hosts[1]
    assert failed["step"] == states.STEP_FAILED
    assert "nothing done to" in failed["reason"] and "still not answering after 5 min" in failed["reason"]
    assert names(lab, 2)[0] in failed["reason"]
    assert failed["remedy_class"] == "nothing_changed"
    assert final.state != states.RUN_DONE or final.reason
    for i in (1, 2, 3):
        assert lab.reboots(i) == 0


def test_with_the_default_bound_a_member_that_never_reconnects_goes_offline_and_fails_at_its_own_check(lab):
    """Timeouts.members (600 s) outlasts the master's 10 live minutes: the member turns live=false, the wait
    stops waiting for it (down, not reconnecting), and its own CHECK fails it with nothing done."""
    lab.world.slow_reconnect(lab.mac(2), never=True, unreachable=True)
    started = runner.start_run(lab.store, POOL, MEDIA, lab.driver)
    final = runner.Runner(lab.store, lab.config, started.id, lab.driver, clock=lab.world.clock,
                          timeouts=FAST).run()
    hosts = run_report(lab.store, started.id)["hosts"]
    assert [h["step"] for h in hosts[:2]] == [states.STEP_DONE] * 2
    lost = hosts[2]
    assert lost["step"] == states.STEP_FAILED and "not reconnected to the master" in lost["reason"]
    assert lost["remedy_class"] == "nothing_changed" and lab.reboots(2) == 0
    assert final.state in (states.RUN_ABORTED, states.RUN_DONE_WITH_FAILURES)
