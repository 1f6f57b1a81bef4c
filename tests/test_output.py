"""CLI text formatting (provisioner.output): the upgrade plan and the run report."""

from __future__ import annotations

from provisioner import output
from provisioner.coordinator.plan import Plan, PlannedHost
from provisioner.coordinator.vms import PlannedVm


def test_plan_shows_hosts_vms_changes_and_problems():
    plan = Plan("p1", "xs84", "8.4.0", standalone=True)
    plan.hosts.append(PlannedHost("aa:bb:cc:dd:ee:01", "h1", "u", "r", "master", "8.2.1", "upgrade"))
    plan.vms.append(PlannedVm("h1", "web", "u1", "Running", "suspend", ("tools.iso",), True, "resumed on this host"))
    plan.changes.append("VM web: auto_poweron off during the run, back on in FINALIZE")
    text = output.plan(plan)
    assert text.splitlines()[0] == "pool p1 -> xs84 (8.4.0): ready"
    assert "a pool of one" in text and "web" in text and "tools.iso" in text and "resumed on this host" in text
    assert "turned off and back on: VM web: auto_poweron" in text
    plan.problems.append("HA is enabled")
    assert output.plan(plan).endswith("problem: HA is enabled") and "BLOCKED" in output.plan(plan)
    plan.problems.clear()
    plan.consent = frozenset({"SAME_VERSION_OTHER_BUILD"})
    plan.check("PV_GUEST", "VM old-pv is a PV guest", "convert it to HVM", "h1")
    plan.check("SAME_VERSION_OTHER_BUILD", "at 8.4.0 build 2, the media is build 1", "--consent ...", "h1",
               level="consent")
    plan.check("LICENCE", "unlicensed", "license it", level="warning")
    text = output.plan(plan)
    assert text.splitlines()[-6:] == ["error PV_GUEST (h1): VM old-pv is a PV guest", "  fix: convert it to HVM",
                                      "consented SAME_VERSION_OTHER_BUILD (h1): at 8.4.0 build 2, the media is build 1",
                                      "  fix: --consent ...", "warning LICENCE: unlicensed", "  fix: license it"]
    assert "problem:" not in text and "BLOCKED" in text  # the error's line is in problems, shown once
    assert plan.problems == ["h1: VM old-pv is a PV guest [PV_GUEST] (fix: convert it to HVM)"]
    pool = Plan("p2", "xs84", "8.4.0", migrate_back=True)
    assert "VMs" not in output.plan(pool)  # no VMs, no VM table


def test_run_report_shows_vms_prepare_tools_and_warnings():
    run = {"id": "p1-1", "pool": "p1", "media": "xs84", "state": "done_with_failures", "reason": "failed: h2",
           "hosts": [{"name": "h1", "role": "master", "step": "done", "reason": None, "remedy": None,
                      "vms": [{"uuid": "u1", "name": "web", "action": "suspend", "done": "suspended",
                               "cds_ejected": ["tools.iso"], "afterwards": "resumed"}],
                      "warnings": ["SR nfs not plugged on h1: boom"]},
                     {"name": "h2", "role": "member", "step": "failed", "reason": "verify: 8.2.1",
                      "remedy": "forget, reinstall, join", "remedy_class": "broken_after_install",
                      "evidence": [{"kind": "attempt.failed", "when": "2026-01-01T10:00:00+00:00",
                                    "what": "attempt 3: started -> failed (exit code 1)"}], "vms": [], "warnings": []}],
           "prepare": [{"what": "ha", "vm": None, "uuid": None, "state": "not undone: left off"},
                       {"what": "auto_poweron", "vm": "web", "uuid": "u1", "state": "undone"}],
           "vms_not_restored": [{"uuid": "u2", "name": "db", "how": "suspended"}],
           "guest_tools": {"target": "8.4.0", "checked": 2, "not_running": 1,
                           "not_up_to_date": [{"uuid": "u1", "name": "web", "version": "8.2.1"}],
                           "no_tools": [{"uuid": "u2", "name": "db"}]},
           "warnings": ["HA not turned back on"]}
    text = output.run_report(run)
    for part in ("run p1-1 pool p1 -> xs84: done_with_failures (failed: h2)", "remedy for h2 (broken_after_install): forget",
                 "  evidence for h2:", "    2026-01-01T10:00:00+00:00  attempt.failed  attempt 3: started -> failed (exit code 1)",
                 "tools.iso", "PREPARE change: ha: not undone: left off", "auto_poweron of VM web: undone",
                 "VM db stopped by the run (suspended) and not running again",
                 "guest tools not up to date: web (8.2.1) (2 running VMs checked, 1 not running",
                 "no guest tools detected: db",
                 "warning (h1): SR nfs not plugged on h1: boom", "warning: HA not turned back on"):
        assert part in text, part
    old = {k: run[k] for k in ("id", "pool", "media", "state", "reason")}
    old["hosts"] = [{k: v for k, v in h.items() if k not in ("vms", "warnings")} for h in run["hosts"]]
    assert "VMs:" not in output.run_report(old)  # a report from before these keys still prints


def test_level_lines_show_each_host_who_is_left_behind_and_the_repositories_replaced():
    from provisioner import output
    levels = {"hash": "ab" * 32, "left_behind": [{"name": "h2", "why": "update level base, not abababababab"}],
              "replaced_repositories": ["uuid-cdn-base", "uuid-cdn-updates"],
              "hosts": [{"name": "h1", "product_version": "8.4.0", "build_number": "72", "last_update_hash": "ab" * 32,
                         "pending": []},
                        {"name": "h2", "product_version": "8.4.0", "build_number": "72", "last_update_hash": "",
                         "pending": ["reboot_host"]}]}
    text = "\n".join(output.level_lines(levels))
    assert "abababababab" in text and "base" in text and "reboot_host" in text
    assert "LEFT BEHIND: h2: update level base" in text
    assert "replaced repositories uuid-cdn-base, uuid-cdn-updates" in text
    assert output.level_lines(None) == []
