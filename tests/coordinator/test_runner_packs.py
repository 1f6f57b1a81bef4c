"""Acceptance (issue 20): a rolling upgrade where a member's disk controller needs a driver disk. Without it the
installer finds no installation to upgrade and the host fails intact; with a driver disk scoped to it, every host
upgrades and the new systems carry the packs their answer files named (docs/packs.md)."""

from __future__ import annotations

from helpers import FAST
from labs import MEDIA, POOL
from pack_trees import make_pack_tree

from provisioner import packs, states
from provisioner.coordinator import runner
from provisioner.coordinator.report import run_report


def _run(lab):
    started = runner.start_run(lab.store, POOL, MEDIA, lab.driver, stop_on_failure=False)
    final = runner.Runner(lab.store, lab.config, started.id, lab.driver, clock=lab.world.clock, timeouts=FAST).run()
    return started.id, final


def test_member_without_its_driver_disk_fails_intact(lab):
    lab.handler.machine(lab.mac(1)).needs_driver = "megaraid_sas"
    run_id, final = _run(lab)
    assert final.state == states.RUN_DONE_WITH_FAILURES
    hosts = {h["name"]: h for h in run_report(lab.store, run_id)["hosts"]}
    assert hosts[f"{POOL}-host1"]["step"] == states.STEP_FAILED
    assert hosts[f"{POOL}-host0"]["step"] == hosts[f"{POOL}-host2"]["step"] == states.STEP_DONE
    boots = [b for b in lab.handler.boots(lab.mac(1)) if b.outcome == "install-failed"]
    assert boots and "Could not locate the installation specified to be reinstalled." in boots[0].detail
    assert {h.name: h.product_version for h in lab.driver.hosts()}[f"{POOL}-host1"] == "8.2.1"


def test_rolling_upgrade_with_a_driver_disk_for_one_host(lab, tmp_path):
    lab.handler.machine(lab.mac(1)).needs_driver = "megaraid_sas"
    packs.import_pack(lab.store, lab.config, MEDIA, make_pack_tree(tmp_path / "raid", "megaraid", version="7.7",
                                                                   drivers=["megaraid_sas-module"]),
                      hosts=[lab.mac(1)])
    packs.import_pack(lab.store, lab.config, MEDIA, make_pack_tree(tmp_path / "tools", "acme-tools"), pools=[POOL])
    run_id, final = _run(lab)
    assert final.state == states.RUN_DONE, final.reason
    assert {h.product_version for h in lab.driver.hosts()} == {"8.4.0"}
    installed = {i: lab.handler.machine(lab.mac(i)).installed_packs for i in range(3)}
    assert installed == {0: {"acme-tools": "1.2.0"}, 1: {"acme-tools": "1.2.0", "megaraid": "7.7"},
                         2: {"acme-tools": "1.2.0"}}
