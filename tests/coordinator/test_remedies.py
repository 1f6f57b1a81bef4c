"""Remedies from evidence (coordinator/remedies.py, docs/remedies.md): failures injected in the simulator, each
mapped to exactly one class with its text checked; the classifier's property (a host back at its old version and
healthy is never advised forget, reinstall or restore); and classify() on hand-built facts."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import pytest
from helpers import FAST, at_step
from hypothesis import given, settings
from hypothesis import strategies as st
from labs import MEDIA, POOL, make_lab, shut_down, stop_lab

from provisioner import states
from provisioner.coordinator import remedies, runner
from provisioner.coordinator.report import run_report
from provisioner.coordinator.remedies import Facts, Seen
from provisioner.simulator import machine
from provisioner.xapi import XapiUnreachable

DESTROYING = ("provisioner reinstall", "--forget", "Restore the master", "restore the master")
"""Words of the only advice that destroys a host (forget + fresh install, restore from backup)."""


def vm_on(lab, i):
    """The ref of the (one) real VM resident on host i."""
    pool = lab.world.pools[POOL]
    host = pool.hosts[i].ref
    return next(r for r in pool.db.all("VM") if pool.db.get("VM", r)["resident_on"] == host
                and not pool.db.get("VM", r)["is_control_domain"])


@dataclass
class Case:
    name: str
    host: int  # 0: the master, 1: a member
    cls: str
    says: tuple[str, ...]
    inject: dict = field(default_factory=dict)  # machine failures (boot handler) for the host
    hook: Callable | None = None  # (lab) -> on_commit
    setup: Callable | None = None  # (lab) -> None, before the run
    never: tuple[str, ...] = DESTROYING
    healthy_after: bool = True  # live at its old version after the run


def _evac(code):
    return lambda lab: at_step(lab, 1, states.STEP_EVACUATE,
                               lambda lab: lab.world.block_evacuation(vm_on(lab, 1), code))


def mark_failed_when_still_installing(i):
    """The operator: once the run says host i is still installing, `upgrade mark-failed POOL HOST` (a thread)."""
    def setup(lab):
        def watch():
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if lab.store.events(kind="host.still_installing", mac=lab.mac(i)):
                    runner.request_mark_failed(lab.store, POOL, f"{POOL}-host{i}")
                    return
                time.sleep(0.02)
        threading.Thread(target=watch, daemon=True).start()
    return setup


CASES = [
    Case("member evacuate: not enough memory", 1, remedies.NOTHING_CHANGED,
         ("nothing was changed", "HOST_NOT_ENOUGH_FREE_MEMORY (lab-host", "free on the best other host",
          "enabled again", "provisioner upgrade start lab --media xs84"), hook=_evac("HOST_NOT_ENOUGH_FREE_MEMORY")),
    Case("member evacuate: VM on a local SR", 1, remedies.NOTHING_CHANGED,
         ("nothing was changed", "VM_REQUIRES_SR", "local SR", "Do NOT forget or reinstall"),
         hook=_evac("VM_REQUIRES_SR")),
    Case("member not live at its turn", 1, remedies.NOTHING_CHANGED,
         ("not live at its turn", "did not touch it", "power it on"),
         hook=lambda lab: at_step(lab, 0, states.STEP_DONE, lambda lab: shut_down(lab, lab.mac(1))),
         healthy_after=False),
    Case("member never network-boots", 1, remedies.NOT_NETWORK_BOOTED,
         ("did not reach the installer", "no boot config was fetched", "boot order", "runs its old system"),
         inject={"no_pxe": True}),
    Case("member installer fails (before its backup)", 1, remedies.INSTALLER_FAILED_INTACT,
         ("installer reported exit code 1", "old system is intact", "Do NOT forget or reinstall"),
         inject={"installer_fails": True}),
    Case("member answer file refused", 1, remedies.INSTALLER_FAILED_INTACT,
         ("answer file was served but no start script ran", "old system is intact"),
         inject={"bad_answerfile": True}),
    Case("member installer breaks (after its backup)", 1, remedies.BROKEN_AFTER_INSTALL,
         ("is gone", "exit code 1", "XAPI shows it not live", "provisioner reinstall", "--forget",
          "--confirm lab-host1", "--media xs84", "--plan", "--accept-data-loss"),
         inject={"installer_breaks": True}, never=("restore",), healthy_after=False),
    Case("member at target, host.enable refused", 1, remedies.AT_TARGET,
         ("at the target version", "xe host-enable"),
         setup=lambda lab: lab.world.slow_boot(lab.mac(1), 100_000), healthy_after=False),
    Case("member installing forever, marked failed by the operator", 1, remedies.BROKEN_AFTER_INSTALL,
         ("is gone", "marked failed by the operator", "provisioner reinstall", "--forget"),
         inject={"never_returns": True}, setup=mark_failed_when_still_installing(1), never=("restore",),
         healthy_after=False),
    Case("master migration fails", 0, remedies.NOTHING_CHANGED,
         ("nothing was changed", "VM_MIGRATE_FAILED", "no member touched", "Do NOT restore"),
         setup=lambda lab: lab.world.fail_migration(vm_on(lab, 0))),
    Case("master never network-boots", 0, remedies.NOT_NETWORK_BOOTED,
         ("did not reach the installer", "no member touched", "Do NOT restore", "PREVIOUS upgrade"),
         inject={"no_pxe": True}),
    Case("master installer fails", 0, remedies.INSTALLER_FAILED_INTACT,
         ("exit code 1", "old system is intact", "Do NOT restore"), inject={"installer_fails": True}),
    Case("master answer file refused", 0, remedies.INSTALLER_FAILED_INTACT,
         ("no start script ran", "Do NOT restore"), inject={"bad_answerfile": True}),
    Case("master installer breaks", 0, remedies.BROKEN_AFTER_INSTALL,
         ("is gone", "Restore the master from its backup partition", "backend.py", "PREVIOUS upgrade's backup"),
         inject={"installer_breaks": True}, never=("provisioner reinstall", "--forget"), healthy_after=False),
    Case("master installing forever, marked failed by the operator", 0, remedies.BROKEN_AFTER_INSTALL,
         ("marked failed by the operator", "Restore the master from its backup partition"),
         inject={"never_returns": True}, setup=mark_failed_when_still_installing(0),
         never=("provisioner reinstall", "--forget"), healthy_after=False),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_failure_gets_exactly_one_remedy_class_from_evidence(tmp_path, case):
    lab = make_lab(tmp_path, hosts=2)
    try:
        if case.inject:
            lab.handler.inject(lab.mac(case.host), **case.inject)
        if case.setup:
            case.setup(lab)
        started = runner.start_run(lab.store, POOL, MEDIA, lab.driver)
        final = runner.Runner(lab.store, lab.config, started.id, lab.driver, clock=lab.world.clock,
                              timeouts=FAST, on_commit=case.hook(lab) if case.hook else None).run()
        report = run_report(lab.store, started.id)
        failed = [h for h in report["hosts"] if h["step"] == states.STEP_FAILED]
        assert [h["name"] for h in failed] == [f"{POOL}-host{case.host}"], final.reason
        host = failed[0]
        assert host["remedy_class"] == case.cls, host["remedy"]
        for words in case.says:
            assert words in host["remedy"], (words, host["remedy"])
        for words in case.never:
            assert words not in host["remedy"], (words, host["remedy"])
        assert host["evidence"] and all({"kind", "when", "what"} <= set(e) for e in host["evidence"])
        assert host["evidence"][-1]["kind"] == "xapi.now"
        if case.host == 0:  # the vendor rule stays: the run stops, no member touched; its reason uses the class
            assert final.state == states.RUN_ABORTED and case.cls in final.reason
            assert "restore the master to a working version" not in final.reason
            assert report["hosts"][1]["step"] == states.STEP_PENDING
        try:
            info = next((h for h in lab.driver.hosts() if h.mac == lab.mac(case.host)), None)
        except XapiUnreachable:  # the master is down
            info = None
        healthy = info is not None and info.live and info.product_version == "8.2.1"
        assert healthy == case.healthy_after
        if healthy:  # back at its old version and healthy: never forget, reinstall or restore
            assert host["remedy_class"] not in remedies.DESTRUCTIVE
            assert not any(words in host["remedy"] for words in DESTROYING)
        assert host["host_down"] == (info is None or not info.live)
    finally:
        stop_lab(lab)


def test_the_table_covers_every_simulated_machine_failure_for_master_and_member():
    """A failure added to the simulator must get its row here (for both roles), so the property below is checked
    on every simulated failure, not only on hand-built facts."""
    covered = {(failure, c.host) for c in CASES for failure in c.inject}
    for failure in machine.FAILURES:
        # a slow boot ends well: nothing fails; plugin_entry_ignored acts on a host-plugin host only
        # (tests/coordinator/test_boot_method_plugin.py)
        if failure not in ("slow", "plugin_entry_ignored"):
            assert {(failure, 0), (failure, 1)} <= covered, failure


def test_evidence_names_the_installer_events(tmp_path):
    lab = make_lab(tmp_path, hosts=2)
    try:
        lab.handler.inject(lab.mac(1), installer_fails=True)
        started = runner.start_run(lab.store, POOL, MEDIA, lab.driver)
        runner.Runner(lab.store, lab.config, started.id, lab.driver, clock=lab.world.clock, timeouts=FAST).run()
        host = run_report(lab.store, started.id)["hosts"][1]
        kinds = [e["kind"] for e in host["evidence"]]
        assert {"attempt.armed", "attempt.fetch", "attempt.started", "attempt.failed", "step.failed"} <= set(kinds)
        whats = " | ".join(e["what"] for e in host["evidence"])
        assert "fetched answerfile" in whats and "exit code 1" in whats
    finally:
        stop_lab(lab)


# --- classify() on hand-built facts: the property, and the cases a simulator cannot reach cheaply ---

ATTEMPT = 7


def _ev(i, kind, **details):
    return {"id": i, "ts": f"2026-01-01T00:00:{i:02d}+00:00", "kind": kind, "mac": "m", "details": details}


def _events(boot, answerfile, started, code, reboot_sent):
    found = [_ev(1, "attempt.armed", attempt=ATTEMPT)]
    if reboot_sent:
        found.append(_ev(2, "xapi.call", method="host.reboot", ok=True))
    if boot:
        found.append(_ev(3, "attempt.fetch", attempt=ATTEMPT, what="config"))
    if answerfile:
        found.append(_ev(4, "attempt.fetch", attempt=ATTEMPT, what="answerfile"))
    if started:
        found.append(_ev(5, "attempt.started", attempt=ATTEMPT, **{"from": "armed", "to": "started"}))
    if code is not None:
        found.append(_ev(6, f"attempt.{'succeeded' if code == '0' else 'failed'}", attempt=ATTEMPT, code=code,
                         start_seen=started, **{"from": "started", "to": "failed"}))
    return found + [_ev(9, "step.failed", reason="x")]


def _facts(role, step, events, now, reason=None):
    return Facts("h1", "52:54:00:00:00:01", "uuid-1", role, "p", "m", step, reason or f"{step}: it failed",
                 "8.4.0 build 1", events, ATTEMPT, now)


seen_st = st.one_of(st.none(), st.builds(Seen, answered=st.booleans(), live=st.booleans(),
                                         version=st.sampled_from(["8.2.1", "8.4.0"]), build=st.just("1"),
                                         enabled=st.booleans(), at_target=st.booleans()))


@settings(max_examples=400, deadline=None)
@given(role=st.sampled_from(["master", "member"]),
       step=st.sampled_from([s for s in states.HOST_STEPS if s not in (states.STEP_PENDING, states.STEP_DONE,
                                                                       states.STEP_FAILED)]),
       boot=st.booleans(), answerfile=st.booleans(), started=st.booleans(), code=st.sampled_from([None, "0", "1"]),
       reboot_sent=st.booleans(), now=seen_st, marked=st.booleans())
def test_property_a_healthy_host_at_its_old_version_is_never_destroyed(role, step, boot, answerfile, started, code,
                                                                        reboot_sent, now, marked):
    reason = f"{step}: {remedies.OPERATOR_MARKED} after 90 min" if marked else None
    remedy = remedies.classify(_facts(role, step, _events(boot, answerfile, started, code, reboot_sent), now, reason))
    assert remedy.cls in remedies.CLASSES
    if now is not None and now.answered and now.live and not now.at_target:  # back at its old version, healthy
        assert remedy.cls not in remedies.DESTRUCTIVE
        assert not any(words in remedy.text for words in DESTROYING)
        assert "from its backup partition (boot" not in remedy.text
    if remedy.cls in remedies.DOWN_OR_UNKNOWN:
        assert remedy.host_down
    if remedy.cls not in remedies.DESTRUCTIVE:
        assert "provisioner reinstall" not in remedy.text and "Restore the master" not in remedy.text


@pytest.mark.parametrize("role,step,events,now,reason,cls", [
    ("member", states.STEP_WAIT_UP, dict(boot=True, answerfile=True, started=True, code=None), Seen(True), None,
     remedies.STILL_INSTALLING),
    ("member", states.STEP_WAIT_UP, dict(boot=True, answerfile=True, started=True, code=None), Seen(True),
     f"wait_up: {remedies.OPERATOR_MARKED} after 95 min", remedies.BROKEN_AFTER_INSTALL),
    ("member", states.STEP_VERIFY, dict(boot=True, answerfile=True, started=True, code="1"), None, None,
     remedies.UNKNOWN),
    ("member", states.STEP_EVACUATE, dict(boot=False, answerfile=False, started=False, code=None), None, None,
     remedies.NOTHING_CHANGED),
    ("member", states.STEP_REBOOT, dict(boot=False, answerfile=False, started=False, code=None),
     Seen(True, True, "8.2.1", "1", True), None, remedies.NOTHING_CHANGED),
    ("member", states.STEP_POWER_ON, dict(boot=False, answerfile=False, started=False, code=None),
     Seen(True, False), None, remedies.NOT_NETWORK_BOOTED),
    ("member", states.STEP_VERIFY, dict(boot=True, answerfile=False, started=False, code=None),
     Seen(True, True, "8.2.1", "1", True), None, remedies.NOT_NETWORK_BOOTED),
    ("master", states.STEP_VERIFY, dict(boot=True, answerfile=True, started=True, code="0"),
     Seen(True, True, "8.4.0", "1", True, True), None, remedies.AT_TARGET),
    ("master", states.STEP_STORAGE, dict(boot=True, answerfile=True, started=True, code="0"), None, None,
     remedies.AT_TARGET),
])
def test_classify_table(role, step, events, now, reason, cls):
    remedy = remedies.classify(_facts(role, step, _events(**events, reboot_sent=step != states.STEP_REBOOT), now,
                                      reason))
    assert remedy.cls == cls, remedy.text


def test_a_host_failed_at_converge_is_at_target_and_told_to_finish_its_updates():
    """CONVERGE (--updates) failed: upgraded, not at the run's update level; never a reinstall or restore."""
    for role in ("master", "member"):
        remedy = remedies.classify(_facts(role, states.STEP_CONVERGE, _events(True, True, True, "0", True),
                                          Seen(True, True, "8.4.0", "1", False, True), None))
        assert remedy.cls == remedies.AT_TARGET, remedy.text
        assert "xe host-apply-updates" in remedy.text and "pending-guidances" in remedy.text
        assert "reinstall" not in remedy.text and "Restore" not in remedy.text


@pytest.mark.parametrize("error,words", [
    (["HOST_NOT_ENOUGH_FREE_MEMORY", str(6 * 2 ** 30), str(2 * 2 ** 30)], "short by 4.0 GiB"),
    (["HOST_NOT_ENOUGH_FREE_MEMORY", "OpaqueRef:vm", str(3 * 2 ** 30), str(2 ** 30)],
     "(vm1): needs 3.0 GiB, 1.0 GiB free on the best other host, short by 2.0 GiB"),
    (["HOST_NOT_ENOUGH_FREE_MEMORY", "OpaqueRef:vm", str(2 ** 30), str(3 * 2 ** 30)], "memory XAPI reserves"),
    (["HOST_NOT_ENOUGH_FREE_MEMORY", str(700 * 2 ** 20), str(200 * 2 ** 20)], "short by 500 MiB"),
    (["HOST_NOT_ENOUGH_FREE_MEMORY", "OpaqueRef:vm"], "(vm1): no other enabled host has enough free memory"),
    (["VM_REQUIRES_SR", "OpaqueRef:vm", "OpaqueRef:sr"], "VM_REQUIRES_SR (vm1, OpaqueRef:sr)"),
    (["NO_HOSTS_AVAILABLE"], "no other host can run it"),
])
def test_describe_error(error, words):
    assert words in remedies.describe_error(error, {"OpaqueRef:vm": "vm1"})


def test_upgrade_status_shows_class_and_evidence_text_and_json(run, tmp_path):
    from provisioner.coordinator import journal
    from provisioner.store import Store

    store = Store(tmp_path / "data" / "provisioner.db")
    store.create_run("red-1", "red", "xs84", stop_on_failure=False,
                     hosts=[{"mac": "aa:bb:cc:dd:ee:01", "name": "red-host1", "uuid": "u1", "role": "member"}])
    for step in (states.STEP_CHECK, states.STEP_DISABLE, states.STEP_EVACUATE):
        store.set_host_step("red-1", "aa:bb:cc:dd:ee:01", step)
    store.set_host_step("red-1", "aa:bb:cc:dd:ee:01", states.STEP_FAILED,
                        reason="evacuate: HOST_NOT_ENOUGH_FREE_MEMORY")
    journal.write(store, "red-1", journal.REMEDY, mac="aa:bb:cc:dd:ee:01", cls=remedies.NOTHING_CHANGED,
                  text="nothing was changed on red-host1", host_down=False,
                  evidence=[{"kind": "xapi.call", "when": "2026-01-01T10:00:00+00:00",
                             "what": "XAPI host.evacuate: failed: HOST_NOT_ENOUGH_FREE_MEMORY"}])
    store.close()
    text = run("upgrade", "status", "red").output
    assert "remedy for red-host1 (nothing_changed): nothing was changed on red-host1" in text
    assert "2026-01-01T10:00:00+00:00  xapi.call  XAPI host.evacuate: failed: HOST_NOT_ENOUGH_FREE_MEMORY" in text
    host = json.loads(run("upgrade", "status", "red", "--json").output)[0]["hosts"][0]
    assert (host["remedy_class"], host["host_down"]) == (remedies.NOTHING_CHANGED, False)
    assert host["evidence"][0]["kind"] == "xapi.call"


def test_report_without_a_journaled_remedy_falls_back_to_the_store(store):
    """A crash between the FAILED commit and the remedy entry: report() classifies from the store alone."""
    store.create_run("p-1", "p", "m", stop_on_failure=False,
                     hosts=[{"mac": "aa:bb:cc:dd:ee:01", "name": "h1", "uuid": "u1", "role": "master"},
                            {"mac": "aa:bb:cc:dd:ee:02", "name": "h2", "uuid": "u2", "role": "member"}])
    for mac, steps, reason in (("aa:bb:cc:dd:ee:01", (states.STEP_CHECK,), "check: host is not live"),
                               ("aa:bb:cc:dd:ee:02", (states.STEP_CHECK, states.STEP_DISABLE, states.STEP_EVACUATE,
                                                      states.STEP_ARM, states.STEP_REBOOT, states.STEP_WAIT_DOWN,
                                                      states.STEP_WAIT_UP), "wait_up: not done after 240 min")):
        for step in steps:
            store.set_host_step("p-1", mac, step)
        store.set_host_step("p-1", mac, states.STEP_FAILED, reason=reason)
    hosts = run_report(store, "p-1")["hosts"]
    assert [h["remedy_class"] for h in hosts] == [remedies.NOTHING_CHANGED, remedies.UNKNOWN]
    assert hosts[1]["host_down"] and "Do NOT forget, reinstall or restore" in hosts[1]["remedy"]


def test_the_rest_run_document_carries_class_and_evidence(client, auth, store):
    store.create_run("p-1", "p", "m", stop_on_failure=False,
                     hosts=[{"mac": "aa:bb:cc:dd:ee:01", "name": "h1", "uuid": "u1", "role": "member"}])
    store.set_host_step("p-1", "aa:bb:cc:dd:ee:01", states.STEP_CHECK)
    store.set_host_step("p-1", "aa:bb:cc:dd:ee:01", states.STEP_FAILED, reason="check: host is not live")
    host = client.get("/api/v1/runs/p-1", headers=auth).get_json()["run"]["hosts"][0]
    assert (host["remedy_class"], host["host_down"]) == (remedies.NOTHING_CHANGED, True)  # XAPI not asked: unknown
    assert "not live at its turn" in host["remedy"] and host["evidence"][-1]["kind"] == "step.failed"


def test_a_host_left_unknown_by_an_abort_while_installing_is_still_installing(tmp_path):
    lab = make_lab(tmp_path, hosts=2)
    try:
        lab.handler.inject(lab.mac(1), never_returns=True)
        started = runner.start_run(lab.store, POOL, MEDIA, lab.driver)

        def watch():
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not lab.store.events(kind="host.still_installing", mac=lab.mac(1)):
                time.sleep(0.02)
            runner.request_abort(lab.store, POOL)
        threading.Thread(target=watch, daemon=True).start()
        final = runner.Runner(lab.store, lab.config, started.id, lab.driver, clock=lab.world.clock,
                              timeouts=FAST).run()
        assert final.state == states.RUN_ABORTED
        host = run_report(lab.store, started.id)["hosts"][1]
        assert host["step"] not in states.HOST_TERMINAL and "state unknown" in host["reason"]
        assert (host["remedy_class"], host["host_down"]) == (remedies.STILL_INSTALLING, True)
        assert "watch its console" in host["remedy"] and not any(w in host["remedy"] for w in DESTROYING)
        assert {"attempt.started", "host.still_installing"} <= {e["kind"] for e in host["evidence"]}
    finally:
        stop_lab(lab)
