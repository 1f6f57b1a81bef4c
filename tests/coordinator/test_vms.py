"""VMs of a pool of one (coordinator.vms): CDs ejected, VMs suspended or shut down, exactly those put back.

Against the simulator over XML-RPC, the real boot service and simulated PXE machines (a 1-host pool)."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import pytest
from helpers import FAST, Crash
from labs import MEDIA, POOL, make_lab, stop_lab

from provisioner import output, states
from provisioner.coordinator import journal, runner, steps, vms
from provisioner.coordinator.report import run_report
from provisioner.simulator.builder import GiB, add_vm
from provisioner.simulator.db import NULL_REF




@dataclass
class Solo:
    lab: object
    host: str       # the host's ref
    with_cd: str    # VM ref: running, PV drivers, a disc in its CD drive -> eject, suspend, resume
    no_tools: str   # running, no guest metrics (suspend not allowed) -> clean shutdown, start
    paused: str     # paused -> hard shutdown, start paused
    halted: str     # halted -> untouched
    cd: str         # the CD VBD of with_cd

    @property
    def db(self):
        return self.lab.world.pools[POOL].db

    def vm(self, ref: str) -> dict:
        return self.db.get("VM", ref)

    def calls(self, method: str, ref: str) -> list[int]:
        """Indices in the simulator's call log of `method` (sync or Async) on `ref`."""
        return [i for i, (_, m, params) in enumerate(self.lab.world.call_log)
                if m in (method, f"Async.{method}") and ref in params]


@pytest.fixture
def solo(tmp_path):
    lab = make_lab(tmp_path, hosts=1)
    pool = lab.world.pools[POOL]
    db, host = pool.db, pool.hosts[0].ref
    shared = db.find("SR", name_label="NFS storage")[0]
    with_cd = next(r for r in db.find("VM", resident_on=host) if not db.get("VM", r)["is_control_domain"])
    cd = next(v for v in db.find("VBD", VM=with_cd) if db.get("VBD", v)["type"] == "CD")
    db.update("VBD", cd, empty=False, VDI=db.find("VDI", name_label="guest-tools.iso")[0])
    no_tools = add_vm(pool, "no-tools", host, shared, 2 * GiB)
    db.update("VM", no_tools, guest_metrics=NULL_REF)
    paused = add_vm(pool, "paused", host, shared, 2 * GiB)
    db.update("VM", paused, power_state="Paused")
    halted = add_vm(pool, "halted", host, shared, 2 * GiB, running=False)
    lab.world.update_memory(pool)
    yield Solo(lab, host, with_cd, no_tools, paused, halted, cd)
    stop_lab(lab)


def start(solo: Solo, **kw):
    return runner.start_run(solo.lab.store, POOL, MEDIA, solo.lab.driver, **kw)


def drive(solo: Solo, run_id: str, **kw):
    return runner.Runner(solo.lab.store, solo.lab.config, run_id, solo.lab.driver, clock=solo.lab.world.clock,
                         timeouts=kw.pop("timeouts", FAST), **kw).run()


def assert_back_as_before(solo: Solo) -> None:
    assert solo.vm(solo.with_cd)["power_state"] == "Running" and solo.vm(solo.with_cd)["resident_on"] == solo.host
    assert solo.vm(solo.no_tools)["power_state"] == "Running"
    assert solo.vm(solo.paused)["power_state"] == "Paused"
    assert solo.vm(solo.halted)["power_state"] == "Halted"
    assert solo.db.get("VBD", solo.cd)["empty"]  # ejected, never reinserted


def test_plan_of_a_pool_of_one(solo):
    from provisioner.coordinator.plan import make_plan
    plan = make_plan(solo.lab.store, POOL, MEDIA, solo.lab.driver)
    assert plan.ok and plan.standalone, plan.problems  # NO_HOSTS_AVAILABLE is planned for, not a problem
    got = {v.name: (v.action, v.eject, v.afterwards) for v in plan.vms}
    assert got == {"lab-host0-vm0": ("suspend", ("guest-tools.iso",), "resumed on this host"),
                   "no-tools": ("shutdown", (), "started on this host"),
                   "paused": ("shutdown", (), "started on this host (paused)")}
    text = output.plan(plan)
    assert "a pool of one" in text and "guest-tools.iso" in text and "halted" not in text
    assert plan.as_dict()["vms"][0]["eject"] == ["guest-tools.iso"]


def test_standalone_upgrade_ejects_suspends_and_puts_back_exactly_those(solo):
    run = start(solo)
    final = drive(solo, run.id)
    assert final.state == states.RUN_DONE, final.reason
    assert_back_as_before(solo)
    (eject,), (suspend,), (resume,) = (solo.calls("VBD.eject", solo.cd), solo.calls("VM.suspend", solo.with_cd),
                                       solo.calls("VM.resume_on", solo.with_cd))
    (reboot,) = solo.calls("host.reboot", solo.host)
    assert eject < suspend < reboot < resume
    assert solo.calls("VM.suspend", solo.no_tools) == [] and len(solo.calls("VM.clean_shutdown", solo.no_tools)) == 1
    assert len(solo.calls("VM.hard_shutdown", solo.paused)) == 1 and len(solo.calls("VM.start_on", solo.paused)) == 1
    assert not [c for c in solo.lab.world.call_log if solo.halted in c[2]]  # never touched
    assert solo.lab.handler.machine(solo.lab.mac(0)).installs() == 1
    report = run_report(solo.lab.store, run.id)
    rows = {v["name"]: v for v in report["hosts"][0]["vms"]}
    assert rows["lab-host0-vm0"] == {"uuid": solo.vm(solo.with_cd)["uuid"], "name": "lab-host0-vm0",
                                     "action": "suspend", "done": "suspended", "cds_ejected": ["guest-tools.iso"],
                                     "afterwards": "resumed"}
    assert (rows["no-tools"]["done"], rows["no-tools"]["afterwards"]) == ("clean shutdown", "started")
    assert (rows["paused"]["done"], rows["paused"]["afterwards"]) == ("hard shutdown", "started paused")
    assert set(rows) == {"lab-host0-vm0", "no-tools", "paused"} and report["vms_not_restored"] == []
    assert "guest-tools.iso" in output.run_report(report)


@pytest.mark.parametrize("crash_at", [states.STEP_EVACUATE, states.STEP_ARM, states.STEP_RESTORE, states.STEP_DONE])
def test_crash_and_resume_stops_and_restores_each_vm_once(solo, crash_at):
    run = start(solo)
    crashed = []

    def on_commit(rh):
        if not crashed and rh.step == crash_at:
            crashed.append(rh.step)
            raise Crash(rh.step)
    errors = []

    def first():
        try:
            drive(solo, run.id, on_commit=on_commit)
        except Crash as exc:
            errors.append(exc)
    thread = threading.Thread(target=first)
    thread.start()
    thread.join(120)
    assert errors
    final = drive(solo, run.id)
    assert final.state == states.RUN_DONE, final.reason
    assert_back_as_before(solo)
    for vm, method in ((solo.with_cd, "VM.suspend"), (solo.with_cd, "VM.resume_on"),
                       (solo.no_tools, "VM.clean_shutdown"), (solo.no_tools, "VM.start_on")):
        assert len(solo.calls(method, vm)) == 1, method
    assert len(solo.calls("host.reboot", solo.host)) == 1
    assert solo.lab.handler.machine(solo.lab.mac(0)).installs() == 1


def test_intent_journaled_before_acting_is_finished_once(solo):
    """A crash between the journal entry and the XAPI call: the re-run acts once; running it again does nothing."""
    run = start(solo)
    ctx = steps.Context(solo.lab.store, solo.lab.config, solo.lab.driver, solo.lab.store.get_media(MEDIA), run.id,
                        solo.lab.world.clock, FAST)
    rh = solo.lab.store.run_hosts(run.id)[0]
    uuid = solo.vm(solo.with_cd)["uuid"]
    journal.write(ctx.store, run.id, journal.VM_STOP, mac=rh.mac, uuid=uuid, name="lab-host0-vm0", action="suspend",
                  was="Running", cds=[{"vbd": solo.db.get("VBD", solo.cd)["uuid"], "iso": "guest-tools.iso"}])
    said = vms.stop_for_upgrade(ctx, rh, solo.host)
    assert said[0] == "lab-host0-vm0: suspended (ejected guest-tools.iso)" and len(said) == 3
    assert vms.stop_for_upgrade(ctx, rh, solo.host) == []
    assert len(solo.calls("VM.suspend", solo.with_cd)) == 1 and len(solo.calls("VBD.eject", solo.cd)) == 1
    assert len(journal.read(ctx.store, run.id, journal.VM_STOP, mac=rh.mac)) == 3  # no second entry for it
    assert {v["name"] for v in vms.not_restored(ctx.store, run.id)} == {"lab-host0-vm0", "no-tools", "paused"}
    assert len(vms.restore(ctx, rh, solo.host, migrate_back=False)) == 3
    assert vms.restore(ctx, rh, solo.host, migrate_back=False) == []
    assert_back_as_before(solo)
    assert vms.not_restored(ctx.store, run.id) == []


def test_a_vm_that_cannot_come_back_is_a_warning_not_a_failed_host(solo):
    run = start(solo)

    def on_commit(rh):
        if rh.step == states.STEP_RESTORE:  # make the suspended VM too big to resume anywhere
            solo.db.update("VM", solo.with_cd, memory_target=str(1024 * GiB))
    final = drive(solo, run.id, on_commit=on_commit)
    assert final.state == states.RUN_DONE
    report = run_report(solo.lab.store, run.id)
    assert report["hosts"][0]["step"] == states.STEP_DONE
    row = next(v for v in report["hosts"][0]["vms"] if v["name"] == "lab-host0-vm0")
    assert row["afterwards"].startswith("not restored: ") and "HOST_NOT_ENOUGH_FREE_MEMORY" in row["afterwards"]
    assert any("lab-host0-vm0" in w for w in report["hosts"][0]["warnings"])
    assert [v["name"] for v in report["vms_not_restored"]] == ["lab-host0-vm0"]
    assert solo.vm(solo.no_tools)["power_state"] == "Running"
    assert "not running again" in output.run_report(report)


def test_failed_install_aborts_and_resumes_the_vms_it_stopped(solo):
    solo.lab.handler.inject(solo.lab.mac(0), installer_fails=True)
    run = start(solo)
    final = drive(solo, run.id)
    assert final.state == states.RUN_ABORTED and "installer_failed_intact" in final.reason
    assert "Do NOT restore" in final.reason  # back at its old version: its backup is the previous upgrade's
    assert_back_as_before(solo)  # back at the old version, the VMs it suspended run again
    assert run_report(solo.lab.store, run.id)["vms_not_restored"] == []
    assert len(solo.calls("host.reboot", solo.host)) == 1
    assert solo.lab.handler.machine(solo.lab.mac(0)).installs() <= 1


def test_host_that_never_returns_leaves_its_vms_reported(solo):
    solo.lab.world.never_returns(solo.lab.mac(0))  # stuck in its firmware: its installer never starts
    run = start(solo)
    lines = []
    final = drive(solo, run.id, timeouts=steps.Timeouts(down=900, up=1800, enable=1800, poll=5), say=lines.append)
    assert final.state == states.RUN_ABORTED
    report = run_report(solo.lab.store, run.id)
    assert "master re-login: not done after 30 min" in report["hosts"][0]["reason"]
    assert {v["name"] for v in report["vms_not_restored"]} == {"lab-host0-vm0", "no-tools", "paused"}
    assert any("master re-login: not answering" in line for line in lines)
    assert "VMs left stopped" in report["hosts"][0]["reason"]
