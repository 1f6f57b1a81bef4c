"""Run-time prechecks (docs/prechecks.md): pinned VMs (refused, or with consent shut down and started again on the
same host), backups running, evacuation re-checked right before each host, tools-ISO CDs ejected in pool mode, and
a slow PBD.plug waited for. Against the simulator, the real boot service and simulated PXE machines."""

from __future__ import annotations

import pytest
from helpers import FAST, at_step
from labs import MEDIA, POOL

from provisioner import states
from provisioner.coordinator import prechecks_vms, runner
from provisioner.coordinator.checks import CONSENT, ERROR
from provisioner.coordinator.plan import make_plan
from provisioner.coordinator.report import run_report
from provisioner.simulator import devices

DESTRUCTIVE_CALLS = ("host.disable", "host.evacuate", "Async.host.evacuate", "host.reboot", "host.shutdown",
                     "Async.VM.clean_shutdown", "Async.VM.hard_shutdown", "Async.VBD.eject")


def user_vm(lab, i: int) -> str:
    db, host = lab.world.pools[POOL].db, lab.world.pools[POOL].hosts[i].ref
    return next(r for r in db.find("VM", resident_on=host) if not db.get("VM", r)["is_control_domain"])


def name(lab, vm: str) -> str:
    return lab.world.pools[POOL].db.get("VM", vm)["name_label"]


def run(lab, *, on_commit=None, **options):
    started = runner.start_run(lab.store, POOL, MEDIA, lab.driver, **options)
    final = runner.Runner(lab.store, lab.config, started.id, lab.driver, clock=lab.world.clock, timeouts=FAST,
                          on_commit=on_commit).run()
    return started.id, final


def calls(lab, *methods: str, ref: str | None = None) -> list[int]:
    """Indices in the simulator's call log of `methods` (on `ref` when given)."""
    return [i for i, (_, m, params) in enumerate(lab.world.call_log)
            if m in methods and (ref is None or ref in params)]


# --- PINNED_VM ---

def test_pinned_vm_is_a_consent_check_with_its_device_and_fix(lab):
    vm = user_vm(lab, 1)
    devices.pin_vm(lab.world.pools[POOL], vm, devices.PCI)
    plan = make_plan(lab.store, POOL, MEDIA, lab.driver)
    assert not plan.ok
    found = [c for c in plan.checks if c.code == prechecks_vms.PINNED_VM]
    assert len(found) == 1 and found[0].level == CONSENT and found[0].host == f"{POOL}-host1"
    assert f"VM {name(lab, vm)} is pinned to this host by PCI 0000:3b:00.0 (NVIDIA Corporation GA102GL [A40])" \
        in found[0].message and "VM_HAS_PCI_ATTACHED" in found[0].message
    assert "--consent PINNED_VM" in found[0].fix and "starts it again on this host" in found[0].fix
    assert not [c for c in plan.checks if c.code == "EVACUATION_BLOCKED"]  # one finding, not two
    assert any("[PINNED_VM]" in p for p in plan.problems)

    agreed = make_plan(lab.store, POOL, MEDIA, lab.driver, consent=["PINNED_VM"])
    assert agreed.ok, agreed.problems
    row = next(v for v in agreed.vms if v.name == name(lab, vm))
    assert (row.action, row.afterwards) == ("shutdown", "started on this host")


def test_pinned_vm_without_consent_refuses_the_run_before_any_host_is_touched(lab):
    devices.pin_vm(lab.world.pools[POOL], user_vm(lab, 2), devices.SRIOV)
    run_id, final = run(lab)
    assert final.state == states.RUN_BLOCKED and "PINNED_VM" in final.reason and "SR-IOV VIF" in final.reason
    assert calls(lab, *DESTRUCTIVE_CALLS) == []


def test_pinned_vms_with_consent_are_shut_down_and_started_on_the_same_host(lab):
    pool = lab.world.pools[POOL]
    master_vm, member_vm = user_vm(lab, 0), user_vm(lab, 1)
    devices.pin_vm(pool, master_vm, devices.VGPU)
    devices.pin_vm(pool, member_vm, devices.PCI)
    run_id, final = run(lab, consent=("PINNED_VM",))
    assert final.state == states.RUN_DONE, final.reason
    for i, vm in ((0, master_vm), (1, member_vm)):
        host = pool.hosts[i].ref
        assert pool.db.get("VM", vm)["power_state"] == "Running" and pool.db.get("VM", vm)["resident_on"] == host
        stop, evacuate = calls(lab, "Async.VM.clean_shutdown", ref=vm), calls(lab, "Async.host.evacuate", ref=host)
        reboot, start = calls(lab, "host.reboot", ref=host), calls(lab, "Async.VM.start_on", ref=vm)
        assert len(stop) == 1 and len(start) == 1 and len(evacuate) == 1
        assert stop[0] < evacuate[0] < reboot[0] < start[0]  # down before the evacuation, up after the upgrade
        assert host in lab.world.call_log[start[0]][2]  # VM.start_on THIS host
    rows = {v["name"]: v for h in run_report(lab.store, run_id)["hosts"] for v in h["vms"]}
    assert rows[name(lab, member_vm)]["action"] == "shutdown"
    assert rows[name(lab, member_vm)]["done"] == "clean shutdown"
    assert rows[name(lab, member_vm)]["afterwards"] == "started"


# --- BACKUP_RUNNING ---

@pytest.mark.parametrize("label", ["VM.export", "Async.VM.snapshot", "VM export", "Exporting content of VDI disk0"])
def test_backup_running_is_an_error_naming_the_task(lab, label):
    devices.start_task(lab.world, lab.world.pools[POOL], label, description="nightly backup of web1")
    plan = make_plan(lab.store, POOL, MEDIA, lab.driver)
    found = [c for c in plan.checks if c.code == prechecks_vms.BACKUP_RUNNING]
    assert len(found) == 1 and found[0].level == ERROR and not plan.ok
    assert label in found[0].message and "nightly backup of web1" in found[0].message
    assert "pause backup schedules" in found[0].fix and "xe task-cancel" in found[0].fix


def test_other_running_tasks_are_not_backups(lab):
    devices.start_task(lab.world, lab.world.pools[POOL], "Async.VM.start")
    plan = make_plan(lab.store, POOL, MEDIA, lab.driver)
    assert plan.ok, plan.problems


def test_backup_running_refuses_the_run_before_any_host_is_touched(lab):
    pool = lab.world.pools[POOL]
    task = devices.start_task(lab.world, pool, "VM.export")
    run_id, final = run(lab)
    assert final.state == states.RUN_BLOCKED and "BACKUP_RUNNING" in final.reason and "VM.export" in final.reason
    assert calls(lab, *DESTRUCTIVE_CALLS) == []
    devices.finish_task(lab.world, pool, task)
    assert make_plan(lab.store, POOL, MEDIA, lab.driver).ok  # over: the next plan passes


# --- evacuation re-checked right before each host ---

@pytest.mark.parametrize("block", ["HOST_NOT_ENOUGH_FREE_MEMORY", "pinned"])
def test_a_blocker_that_appears_mid_run_stops_that_host_before_disable(lab, block):
    pool = lab.world.pools[POOL]
    vm, host = user_vm(lab, 2), pool.hosts[2].ref

    def appear(lab):
        if block == "pinned":
            devices.pin_vm(pool, vm, devices.VGPU)
        else:
            lab.world.block_evacuation(vm, block)
    run_id, final = run(lab, on_commit=at_step(lab, 2, states.STEP_CHECK, appear))
    hosts = {h["name"]: h for h in run_report(lab.store, run_id)["hosts"]}
    failed = hosts[f"{POOL}-host2"]
    assert failed["step"] == states.STEP_FAILED and failed["reason"].startswith(states.STEP_CHECK)
    assert "evacuation re-checked before DISABLE and blocked" in failed["reason"]
    assert f"VM {name(lab, vm)}" in failed["reason"]
    assert ("VM_HAS_VGPU" if block == "pinned" else block) in failed["reason"]
    assert ("--consent PINNED_VM" if block == "pinned" else "move, suspend or shut down") in failed["reason"]
    assert failed["remedy_class"] == "nothing_changed"
    assert calls(lab, "host.disable", "Async.host.evacuate", "host.reboot", ref=host) == []  # never touched
    assert pool.db.get("host", host)["enabled"] and pool.db.get("VM", vm)["resident_on"] == host
    assert hosts[f"{POOL}-host0"]["step"] == hosts[f"{POOL}-host1"]["step"] == states.STEP_DONE


def test_a_consented_pinned_vm_that_appears_mid_run_is_shut_down_instead(lab):
    pool = lab.world.pools[POOL]
    vm, host = user_vm(lab, 2), pool.hosts[2].ref
    hook = at_step(lab, 2, states.STEP_CHECK, lambda lab: devices.pin_vm(pool, vm, devices.SRIOV))
    run_id, final = run(lab, on_commit=hook, consent=("PINNED_VM",))
    assert final.state == states.RUN_DONE, final.reason
    assert pool.db.get("VM", vm)["resident_on"] == host and pool.db.get("VM", vm)["power_state"] == "Running"
    assert len(calls(lab, "Async.VM.start_on", ref=vm)) == 1


# --- tools-ISO CDs in pool mode ---

def test_tools_cds_are_ejected_before_the_host_is_evacuated(lab):
    pool = lab.world.pools[POOL]
    db, vm, host = pool.db, user_vm(lab, 1), pool.hosts[1].ref
    cd = next(v for v in db.find("VBD", VM=vm) if db.get("VBD", v)["type"] == "CD")
    db.update("VBD", cd, empty=False, VDI=db.find("VDI", name_label="guest-tools.iso")[0])
    planned = make_plan(lab.store, POOL, MEDIA, lab.driver)
    assert next(v for v in planned.vms if v.name == name(lab, vm)).eject == ("guest-tools.iso",)
    run_id, final = run(lab)
    assert final.state == states.RUN_DONE, final.reason
    eject, evacuate = calls(lab, "Async.VBD.eject", ref=cd), calls(lab, "Async.host.evacuate", ref=host)
    assert len(eject) == 1 and eject[0] < evacuate[0]
    assert db.get("VBD", cd)["empty"]
    row = next(v for h in run_report(lab.store, run_id)["hosts"] for v in h["vms"] if v["name"] == name(lab, vm))
    assert row["action"] == "migrate" and row["cds_ejected"] == ["guest-tools.iso"]


# --- PBD.plug as a task ---

def test_a_slow_pbd_plug_after_the_upgrade_succeeds(lab):
    pool = lab.world.pools[POOL]
    shared = pool.db.find("SR", name_label="NFS storage")[0]
    devices.slow_plug(lab.world, shared, 3600.0)  # an hour on the sim clock: 6 s real at x600, over 1 s and 5 s
    lab.world.keep_pbds_unplugged(lab.mac(2))
    short = lab.driver.timeout
    lab.driver.timeout = 1.0  # a sync PBD.plug would hit this socket timeout and say "not plugged"
    try:
        run_id, final = run(lab)
    finally:
        lab.driver.timeout = short
    assert final.state == states.RUN_DONE, final.reason
    assert all(pool.db.get("PBD", p)["currently_attached"] for p in pool.db.all("PBD"))
    plugged = [e["details"] for e in lab.store.events(run_id=run_id, kind="xapi.call")
               if e["details"]["method"] == "PBD.plug"]
    assert {(p["sr"], p["ok"]) for p in plugged} >= {("NFS storage", True)}
    assert not [e for e in lab.store.events(run_id=run_id, kind="run.warning") if "not plugged" in str(e)]
    assert "Async.PBD.plug" in {m for _, m, _ in lab.world.call_log} and "PBD.plug" not in {
        m for _, m, _ in lab.world.call_log}


# --- --stop-pinned-vms / REST stop_pinned_vms: the same consent ---

def test_stop_pinned_vms_is_consent_pinned_vm(lab):
    devices.pin_vm(lab.world.pools[POOL], user_vm(lab, 1), devices.VGPU)
    plan = make_plan(lab.store, POOL, MEDIA, lab.driver, stop_pinned_vms=True)
    assert plan.ok and "PINNED_VM" in plan.consent
    started = runner.start_run(lab.store, POOL, MEDIA, lab.driver, stop_pinned_vms=True)
    from provisioner.coordinator import journal
    assert journal.options(lab.store, started.id)["consent"] == ("PINNED_VM",)


def test_rest_plan_takes_stop_pinned_vms(two_pools):
    import requests
    from helpers import API_TOKEN
    devices.pin_vm(two_pools.world.pools["red"], user_vm_in(two_pools.world.pools["red"], 1), devices.PCI)
    url = two_pools.runtime.http.url + "/api/v1/pools/red/plan"
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    refused = requests.get(url, params={"media": MEDIA}, headers=headers, timeout=30).json()["plan"]
    assert not refused["ok"] and [c["code"] for c in refused["checks"] if c["blocking"]] == ["PINNED_VM"]
    agreed = requests.get(url, params={"media": MEDIA, "stop_pinned_vms": "true"}, headers=headers,
                          timeout=30).json()["plan"]
    assert agreed["ok"] and agreed["consent"] == ["PINNED_VM"]


def user_vm_in(pool, i: int) -> str:
    db, host = pool.db, pool.hosts[i].ref
    return next(r for r in db.find("VM", resident_on=host) if not db.get("VM", r)["is_control_domain"])


def test_the_pbd_plug_timeout_is_a_config_key(tmp_path):
    from provisioner.config import load_config
    from provisioner.coordinator import wiring
    assert wiring.run_timeouts(load_config(environ={}, overrides={"data_dir": tmp_path})).pbd_plug == 300.0
    config = load_config(environ={"PROVISIONER_PBD_PLUG_TIMEOUT_S": "900"}, overrides={"data_dir": tmp_path})
    assert wiring.run_timeouts(config).pbd_plug == 900.0


def test_a_pinned_vm_of_a_member_that_fails_in_a_mixed_pool_stays_halted_and_reported(lab):
    """make_safe starts it again on its host, but XAPI refuses VM.start_on below the highest version during a
    rolling upgrade (docs/prechecks.md "Pinned VMs and running backups", the limit): reported, not lost."""
    pool = lab.world.pools[POOL]
    vm = user_vm(lab, 1)
    devices.pin_vm(pool, vm, devices.PCI)
    lab.handler.inject(lab.mac(1), installer_fails=True)
    run_id, final = run(lab, consent=("PINNED_VM",))
    hosts = {h["name"]: h for h in run_report(lab.store, run_id)["hosts"]}
    assert hosts[f"{POOL}-host1"]["step"] == states.STEP_FAILED
    assert final.state == states.RUN_DONE_WITH_FAILURES
    assert len(calls(lab, "Async.VM.start_on", ref=vm)) == 1  # tried once, on its own host
    assert pool.db.get("VM", vm)["power_state"] == "Halted"
    warnings = [e["details"]["text"] for e in lab.store.events(run_id=run_id, kind="run.warning")]
    assert f"VM {name(lab, vm)} not restored: ['NOT_SUPPORTED_DURING_UPGRADE']" in warnings


@pytest.mark.parametrize("crash_at", [states.STEP_EVACUATE, states.STEP_ARM, states.STEP_RESTORE, states.STEP_DONE])
def test_pinned_vms_resume_after_a_crash_stopped_once_and_started_once(lab, crash_at):
    """kill -9 at a step boundary of the pinned VM's host, then resume: the journal (vm.stop / vm.stopped /
    vm.restored) makes the shutdown and the start happen exactly once, on the same host."""
    from helpers import crash_once
    pool = lab.world.pools[POOL]
    vm, host = user_vm(lab, 1), pool.hosts[1].ref
    devices.pin_vm(pool, vm, devices.PCI)
    started = runner.start_run(lab.store, POOL, MEDIA, lab.driver, consent=("PINNED_VM",))
    assert crash_once(lambda on_commit: runner.Runner(lab.store, lab.config, started.id, lab.driver,
                                                      clock=lab.world.clock, timeouts=FAST, on_commit=on_commit),
                      lambda rh: rh.mac == lab.mac(1) and rh.step == crash_at) == crash_at
    final = runner.Runner(lab.store, lab.config, started.id, lab.driver, clock=lab.world.clock, timeouts=FAST).run()
    assert final.state == states.RUN_DONE, final.reason
    assert len(calls(lab, "Async.VM.clean_shutdown", ref=vm)) == 1
    assert len(calls(lab, "Async.VM.start_on", ref=vm)) == 1
    assert pool.db.get("VM", vm)["resident_on"] == host and pool.db.get("VM", vm)["power_state"] == "Running"
