"""Each host step is idempotent: run twice (as after a crash), its side effect happens once."""

from __future__ import annotations

import pytest
from labs import MEDIA, POOL

from provisioner import states
from provisioner.coordinator import runner, steps


@pytest.fixture
def lab_hosts():
    """The steps need a master and one member."""
    return 2


def context(lab, index: int = 1):
    run = runner.start_run(lab.store, POOL, MEDIA, lab.driver)
    ctx = steps.Context(lab.store, lab.config, lab.driver, lab.store.get_media(MEDIA), run.id, lab.world.clock,
                        steps.Timeouts(poll=5))
    return ctx, lab.store.run_hosts(run.id)[index]  # 0: the master, 1: the member


def calls(lab, method):
    return [c for c in lab.world.call_log if c[1] == method]


def test_check_then_disable_twice_disables_once(lab):
    ctx, rh = context(lab)
    assert steps.check(ctx, rh) == states.STEP_DISABLE
    assert steps.disable(ctx, rh) == states.STEP_EVACUATE
    assert steps.disable(ctx, rh) == states.STEP_EVACUATE
    assert len(calls(lab, "host.disable")) == 1
    assert not steps.find(ctx, rh.uuid).enabled


def test_arm_twice_keeps_the_first_attempt(lab):
    ctx, rh = context(lab)
    steps.disable(ctx, rh)
    steps.arm(ctx, rh)
    first = lab.store.get_run_host(ctx.run_id, rh.mac)
    steps.arm(ctx, first)
    again = lab.store.get_run_host(ctx.run_id, rh.mac)
    assert first.attempt_id is not None and again.attempt_id == first.attempt_id
    assert lab.store.current_attempt(rh.mac).state == states.ARMED
    assert again.before_boot_time == steps.find(ctx, rh.uuid).boot_time


def test_reboot_twice_reboots_once_and_upgrade_completes(lab):
    # The master: a member newer than its master cannot rejoin (HOST_XAPI_VERSION_HIGHER_THAN_COORDINATOR).
    ctx, rh = context(lab, 0)
    for step in (steps.disable, steps.evacuate, steps.arm):
        step(ctx, lab.store.get_run_host(ctx.run_id, rh.mac))
    rh = lab.store.get_run_host(ctx.run_id, rh.mac)
    assert steps.reboot(ctx, rh) == states.STEP_WAIT_DOWN
    assert steps.reboot(ctx, rh) == states.STEP_WAIT_DOWN  # OTHER_OPERATION_IN_PROGRESS, or already down
    assert steps.wait_down(ctx, rh) == states.STEP_WAIT_UP
    assert steps.reboot(ctx, rh) == states.STEP_WAIT_DOWN  # seen as rebooted: nothing sent
    assert steps.wait_up(ctx, rh) == states.STEP_VERIFY
    assert steps.verify(ctx, rh) == states.STEP_STORAGE
    assert steps.storage(ctx, rh) == states.STEP_ENABLE
    assert steps.enable(ctx, rh) == states.STEP_RESTORE
    assert steps.enable(ctx, rh) == states.STEP_RESTORE
    assert steps.restore(ctx, rh) == states.STEP_DONE
    ok_reboots = [e for e in lab.store.events(kind="xapi.call") if e["details"]["method"] == "host.reboot"
                  and e["details"]["ok"]]
    assert len(ok_reboots) == 1
    assert lab.handler.machine(rh.mac).installs() == 1
    assert steps.check(ctx, rh) == states.STEP_DONE  # at the target and enabled


def test_verify_fails_on_old_version(lab):
    ctx, rh = context(lab)
    steps.arm(ctx, rh)
    with pytest.raises(steps.StepFailed, match="8.2.1"):
        steps.verify(ctx, lab.store.get_run_host(ctx.run_id, rh.mac))


def test_wait_up_times_out(lab):
    ctx, rh = context(lab)
    steps.arm(ctx, rh)
    ctx.timeouts = steps.Timeouts(up=30, poll=5)
    with pytest.raises(steps.StepFailed, match="not done after"):
        steps.wait_up(ctx, lab.store.get_run_host(ctx.run_id, rh.mac))


def ok_calls(lab, method):
    return [e for e in lab.store.events(kind="xapi.call") if e["details"]["method"] == method and e["details"]["ok"]]


def power_cycle_context(lab, **timeouts):
    ctx, rh = context(lab, 1)  # a member
    ctx.power_cycle = True
    ctx.timeouts = steps.Timeouts(poll=5, **timeouts)
    for step in (steps.disable, steps.evacuate, steps.arm):
        step(ctx, lab.store.get_run_host(ctx.run_id, rh.mac))
    return ctx, lab.store.get_run_host(ctx.run_id, rh.mac)


def test_power_cycle_shuts_a_member_down_and_powers_it_on_once(lab):
    ctx, rh = power_cycle_context(lab)
    assert steps.reboot(ctx, rh) == states.STEP_POWER_ON
    assert steps.reboot(ctx, rh) == states.STEP_POWER_ON  # as after a crash: not sent twice
    assert steps.power_on(ctx, rh) == states.STEP_WAIT_DOWN
    assert steps.power_on(ctx, rh) == states.STEP_WAIT_DOWN  # it is booting: not powered on again
    assert len(ok_calls(lab, "host.shutdown")) == 1 and len(ok_calls(lab, "host.power_on")) == 1
    assert calls(lab, "host.reboot") == []
    assert ok_calls(lab, "host.power_on")[0]["details"]["mode"] == "wake-on-lan"
    booted = [e for e in lab.store.events(mac=rh.mac, kind="attempt.fetch") if e["details"]["what"] == "config"]
    assert booted and booted[0]["details"]["attempt"] == rh.attempt_id  # it network-booted on its attempt
    assert steps.wait_down(ctx, rh) == states.STEP_WAIT_UP


def test_a_power_on_sent_while_the_machine_still_shuts_down_is_sent_again(lab, monkeypatch):
    """XAPI says "not live" as the shutdown starts; a power-on then is lost (the simulator's machine ignores it,
    as a real BMC or a wake-on-lan packet would): no boot is seen, so it is powered on again."""
    ctx, rh = power_cycle_context(lab, off=0, boot=120)
    # Held in its shutdown until the first power-on has reached it (else, on a loaded machine, the 20 simulated
    # seconds of shutdown could end before the first power-on is sent, and that one would boot it); its power goes
    # off right after that first one.
    lab.world.delays["shutdown"] = 10 ** 6
    real_power_on, sent = lab.driver.power_on, []

    def power_on(ref):
        real_power_on(ref)
        if not sent:
            lab.world.crash(rh.mac)  # the end of a shutdown as the machine sees it: power off, no heartbeat
        sent.append(ref)

    monkeypatch.setattr(lab.driver, "power_on", power_on)
    steps.reboot(ctx, rh)
    assert steps.power_on(ctx, rh) == states.STEP_WAIT_DOWN
    assert len(ok_calls(lab, "host.power_on")) == 2
    assert [e["details"]["attempt"] for e in lab.store.events(kind="host.power_on_unseen")] == [1]


def test_a_host_that_never_network_boots_fails_after_three_power_ons(lab, monkeypatch):
    ctx, rh = power_cycle_context(lab, off=30, boot=60)
    steps.reboot(ctx, rh)
    monkeypatch.setattr(lab.driver, "power_on", lambda ref: None)  # its BMC / wake-on-lan does nothing
    with pytest.raises(steps.StepFailed, match="powered on 3 times through the pool .power_on_mode wake-on-lan."):
        steps.power_on(ctx, rh)
    assert len(ok_calls(lab, "host.power_on")) == steps.POWER_ON_TRIES


def test_the_master_is_rebooted_even_with_power_cycle(lab):
    ctx, rh = context(lab, 0)
    ctx.power_cycle = True
    for step in (steps.disable, steps.evacuate, steps.arm):
        step(ctx, lab.store.get_run_host(ctx.run_id, rh.mac))
    assert steps.reboot(ctx, lab.store.get_run_host(ctx.run_id, rh.mac)) == states.STEP_WAIT_DOWN
    assert len(ok_calls(lab, "host.reboot")) == 1 and calls(lab, "host.shutdown") == []
