"""A run reaches the installer by each host's boot method (coordinator/bmcboot.py, docs/architecture.md "Rolling
pool upgrade"): a simulated pool whose machines all boot their disk first (bios-disk-first), each behind a
real BMC server (the sushy-tools emulator, pyghmi's BMC server) over World.bmc.

- network-first: the master reboots into its disk; the run stops there with "did not network-boot", no member
  touched;
- redfish / ipmi: every host is shut down through XAPI and network-booted once through its BMC; the pool upgrades,
  each installer ran exactly once;
- a BMC that drops the first power-on: the confirm loop resends it;
- a wrong BMC password: the plan precheck refuses, nothing is rebooted or shut down;
- a host that never network-boots is tried twice through its BMC, then "did not network-boot";
- a crash right after the BMC's power-on: the resumed step sends nothing more;
- the lab reinstall powers the forgotten host on through its BMC.
"""

from __future__ import annotations

import gc
import warnings

import pytest
from helpers import FAST, Crash
from labs import BMC_PASSWORD, MEDIA, PASSWORD, POOL, make_bmc_lab, shut_down

from provisioner import cryptpw, states
from provisioner.coordinator import plan as coord_plan
from provisioner.coordinator import pools, reinstall, remedies, runner
from provisioner.coordinator.context import ReinstallTimeouts
from provisioner.coordinator.report import run_report
from provisioner.power.confirm import ConfirmTimes

BMC_TIMES = ConfirmTimes(poll=5, resend=60, give_up=1800)
"""The confirm loop on the lab's clock (sim seconds): the defaults' poll, a resend and give-up the emulator's
state sync (50 ms real) cannot outrun."""
POWER_CALLS = ("host.reboot", "host.shutdown", "host.power_on")


@pytest.fixture
def lab(tmp_path):
    found = make_bmc_lab(tmp_path)
    yield found
    found.driver.close()
    found.stop()
    # a failed pyghmi login (wrong password) drops its session with the socket open (tests/power/conftest.py says
    # the same): collect it here rather than as a ResourceWarning in whichever test the collector runs in
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def _run(lab):
    started = runner.start_run(lab.store, POOL, MEDIA, lab.driver)
    final = runner.Runner(lab.store, lab.config, started.id, lab.driver, clock=lab.world.clock, timeouts=FAST,
                          bmc_times=BMC_TIMES).run()
    return final, run_report(lab.store, started.id)


def _macs(lab):
    return [h.mac for h in lab.world.pools[POOL].hosts]


def _power_calls(lab, mac):
    ref = next(h.ref for h in lab.world.pools[POOL].hosts if h.mac == mac)
    return [method for _, method, params in lab.world.call_log if method in POWER_CALLS and ref in params]


def test_network_first_on_disk_first_machines_stops_at_the_master(lab):
    final, report = _run(lab)
    assert final.state == states.RUN_ABORTED, final.reason
    master, *members = report["hosts"]
    assert master["role"] == "master" and master["step"] == states.STEP_FAILED
    assert master["remedy_class"] == remedies.NOT_NETWORK_BOOTED, master["remedy"]
    assert "network-first" in master["remedy"]
    assert all(m["step"] == states.STEP_PENDING for m in members)
    for m in members:
        assert _power_calls(lab, m["mac"]) == []
    assert all(lab.handler.machine(mac).installs() == 0 for mac in _macs(lab))


@pytest.mark.parametrize("method", ["redfish", "ipmi"])
def test_bmc_method_upgrades_the_whole_disk_first_pool(lab, method):
    lab.register_bmcs(method)
    found = coord_plan.make_plan(lab.store, POOL, MEDIA, lab.driver, config=lab.config)
    assert found.ok, found.problems
    assert {h.boot_method for h in found.hosts} == {method}
    final, report = _run(lab)
    assert final.state == states.RUN_DONE, final.reason
    for mac in _macs(lab):
        assert lab.handler.machine(mac).installs() == 1, lab.handler.boots(mac)
        assert _power_calls(lab, mac) == ["host.shutdown"]  # never host.reboot / host.power_on
        assert lab.world.host(mac).bmc_log, "powered on through its BMC"
    assert {lab.world.pools[POOL].db.get("host", h.ref)["software_version"]["product_version"]
            for h in lab.world.pools[POOL].hosts} == {lab.store.get_media(MEDIA).product_version}


def test_a_dropped_power_on_is_resent_by_the_confirm_loop(lab):
    lab.register_bmcs("ipmi")
    master = _macs(lab)[0]
    lab.world.drop_power_on(master)
    final, _ = _run(lab)
    assert final.state == states.RUN_DONE, final.reason
    assert ("power_on", "dropped (injected)") in lab.world.host(master).bmc_log
    assert lab.handler.machine(master).installs() == 1


# pyghmi drops a failed login's session with its socket open (tests/power/conftest.py): the collector may close
# those during this test, and their ResourceWarning is pyghmi's, not this test's subject
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.parametrize("method", ["redfish", "ipmi"])
def test_a_wrong_bmc_password_is_a_precheck_failure_and_nothing_reboots(lab, method):
    lab.register_bmcs(method, password="not-the-" + BMC_PASSWORD)
    found = coord_plan.make_plan(lab.store, POOL, MEDIA, lab.driver, config=lab.config)
    assert not found.ok
    assert all("wrong username or password" in p for p in found.problems), found.problems
    assert len(found.problems) == len(_macs(lab))
    final, _ = _run(lab)
    assert final.state == states.RUN_BLOCKED, final.reason
    assert "wrong username or password" in final.reason and BMC_PASSWORD not in final.reason
    assert all(_power_calls(lab, mac) == [] for mac in _macs(lab))
    assert all(not lab.world.host(mac).bmc_log for mac in _macs(lab))


def test_a_bmc_host_that_never_network_boots_is_retried_once_then_not_network_booted(lab):
    lab.register_bmcs("redfish")
    master = _macs(lab)[0]
    lab.handler.inject(master, no_pxe=True)  # its firmware never tries the network, override or not
    final, report = _run(lab)
    assert final.state == states.RUN_ABORTED, final.reason
    failed = report["hosts"][0]
    assert failed["step"] == states.STEP_FAILED and failed["remedy_class"] == remedies.NOT_NETWORK_BOOTED
    assert "boot method is redfish" in failed["remedy"] and "BMC redfish http://127.0.0.1" in failed["remedy"]
    assert "did not network-boot" in failed["reason"]
    tries = [e["details"]["attempt"] for e in lab.store.events(mac=master, kind="bmc.netboot")]
    assert tries == [1, 2]
    assert all(m["step"] == states.STEP_PENDING for m in report["hosts"][1:])
    assert lab.handler.machine(master).installs() == 0


def test_a_resumed_power_on_does_not_power_cycle_a_host_that_network_booted(lab):
    """kill -9 inside POWER_ON, right after the BMC's power-on was sent (its progress line): the step runs again on
    resume, sees the recorded try, waits for the fetch and sends nothing more."""
    lab.register_bmcs("ipmi")
    master = _macs(lab)[0]
    started = runner.start_run(lab.store, POOL, MEDIA, lab.driver)

    def crash_after_power_on(line: str) -> None:
        if "power on requested" in line:
            raise Crash(line)
    with pytest.raises(Crash):
        runner.Runner(lab.store, lab.config, started.id, lab.driver, clock=lab.world.clock, timeouts=FAST,
                      bmc_times=BMC_TIMES, say=crash_after_power_on).run()
    assert lab.store.get_run_host(started.id, master).step == states.STEP_POWER_ON
    final = runner.Runner(lab.store, lab.config, started.id, lab.driver, clock=lab.world.clock, timeouts=FAST,
                          bmc_times=BMC_TIMES).run()
    assert final.state == states.RUN_DONE, final.reason
    assert len(lab.store.events(mac=master, kind="bmc.netboot")) == 1
    assert [entry for entry in lab.world.host(master).bmc_log if entry[0] in ("power_off", "reset")] == []
    assert lab.handler.machine(master).installs() == 1


def test_lab_reinstall_powers_a_forgotten_bmc_host_on_through_its_bmc(lab):
    """The failed member is forgotten and reinstalled: no operator at the power button, its BMC network-boots it
    once (a disk-first machine), with the confirm loop of the Config (give-up raised for the lab's clock)."""
    lab.register_bmcs("redfish")
    member = _macs(lab)[1]
    lab.handler.inject(member, installer_fails=True)
    final, _ = _run(lab)
    assert final.state == states.RUN_DONE_WITH_FAILURES, final.reason
    lab.handler.inject(member, installer_fails=False)
    shut_down(lab, member)
    found = reinstall.start(lab.store, member, POOL, MEDIA, confirm=lab.store.get_host(member).name, forget=True,
                            root_password_hash=cryptpw.hash_password(PASSWORD),
                            connect=lambda name: pools.connect(lab.store, name, timeout=5),
                            host_url=lab.sim.url(member))
    config = lab.config.replace(bmc_give_up_seconds=1800, bmc_resend_seconds=60)
    lines: list[str] = []
    done = reinstall.Flow(lab.store, config, found.id, connect=lambda name: pools.connect(lab.store, name, timeout=5),
                          clock=lab.world.clock, timeouts=ReinstallTimeouts(poll=5), say=lines.append).run()
    assert done.step == states.RI_DONE, (done.reason, lines)
    assert lab.handler.machine(member).installs() == 2  # the failed upgrade, then the fresh install
    assert ("power_on", "firmware") in lab.world.host(member).bmc_log
    assert any("power on requested" in line for line in lines)
