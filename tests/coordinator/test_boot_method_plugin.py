"""The host-plugin boot method (coordinator/hostplugin.py, docs/host-plugin.md): a simulated pool whose machines all
boot their disk first, no BMC used. XenCenter's way: prepare_host_upgrade.py testUrl in the plan, main right before
host.reboot, and the host enters the installer from its own bootloader with its own answer file.

- the pool upgrades completely, each host installed once, no per-MAC config of ours fetched, no attempt armed, and
  each host downloaded install.img, vmlinuz and xen.gz from our HTTP server;
- media missing a boot file, or older than the hosts: a plan problem per host, nothing rebooted;
- a master whose bootloader ignores the plugin's entry: "did not enter the installer", no member touched;
- UEFI hosts upgraded twice: the second run works too (the plugin changes no firmware setting).
"""

from __future__ import annotations

import pytest
from helpers import FAST
from labs import MEDIA, POOL, make_bmc_lab

from provisioner import media, registry, states
from provisioner.boot import downloads
from provisioner.coordinator import plan as coord_plan
from provisioner.coordinator import installing, remedies, runner
from provisioner.coordinator.report import run_report
from provisioner.coordinator.steps import Timeouts
from provisioner.demo import synthetic_media_tree

POWER_CALLS = ("host.reboot", "host.shutdown", "host.power_on")


def _lab(tmp_path, boot_order="bios-disk-first"):
    lab = make_bmc_lab(tmp_path, kinds=(), boot_order=boot_order)
    for h in lab.world.pools[POOL].hosts:
        registry.set_boot_method(lab.store, h.mac, "host-plugin")
    return lab


@pytest.fixture
def lab(tmp_path):
    found = _lab(tmp_path)
    yield found
    found.driver.close()
    found.stop()


def _run(lab, media_name=MEDIA, say=None):
    started = runner.start_run(lab.store, POOL, media_name, lab.driver)
    final = runner.Runner(lab.store, lab.config, started.id, lab.driver, clock=lab.world.clock,
                          timeouts=FAST, **({"say": say} if say else {})).run()
    return final, run_report(lab.store, started.id)


def _macs(lab):
    return [h.mac for h in lab.world.pools[POOL].hosts]


def _calls(lab, mac, methods):
    ref = next(h.ref for h in lab.world.pools[POOL].hosts if h.mac == mac)
    return [(m, p) for _, m, p in lab.world.call_log if m in methods and ref in p]


def _config_fetches(lab, mac):
    return [f for b in lab.handler.boots(mac) for f in b.fetches if f.what == "config"]


def test_host_plugin_upgrades_a_disk_first_pool(lab):
    found = coord_plan.make_plan(lab.store, POOL, MEDIA, lab.driver, config=lab.config)
    assert found.ok, found.problems
    assert all(h.boot_method == "host-plugin" and "writes its own answer file" in h.note for h in found.hosts)
    lines = []
    final, report = _run(lab, say=lines.append)
    assert final.state == states.RUN_DONE, final.reason
    for mac in _macs(lab):
        # our HTTP server saw its downloads: one event per kind of file since `main` (boot/downloads.py), and the
        # run said each while it waited on the host
        fetched = lab.store.events(mac=mac, run_id=report["id"], kind=downloads.EVENT)
        kinds = [(e["details"]["phase"], e["details"]["what"]) for e in fetched]
        # main's test_repo and downloads, then the installer booted from its entry reads .treeinfo
        assert sorted(kinds) == [("installer", "repository"), ("main", "install.img"), ("main", "repository"),
                                 ("main", "vmlinuz"), ("main", "xen.gz")], kinds
        (main,) = lab.store.events(mac=mac, run_id=report["id"], kind=downloads.PLUGIN_MAIN)
        assert all(e["details"]["main"] == main["id"] and e["id"] > main["id"] for e in fetched)
        assert {e["details"]["client"] for e in fetched} == {main["details"]["address"]}
        reboot = next(e["id"] for e in lab.store.events(mac=mac, run_id=report["id"], kind="xapi.call")
                      if e["details"].get("method") == "host.reboot")
        assert all((e["id"] > reboot) == (e["details"]["phase"] == "installer") for e in fetched)
        name = next(h.name for h in lab.world.pools[POOL].hosts if h.mac == mac)
        said = [ln for ln in lines if ln.startswith(f"{name}: fetched ") and "from our HTTP server" in ln]
        assert len(said) == 5 and f"{name}: fetched repository (.treeinfo) from our HTTP server at " in said[-1], said
        assert said[-1].split(" at ")[1].split(" ", 1)[1].startswith("after its reboot (host-plugin, from "), said
        machine = lab.handler.machine(mac)
        assert machine.installs() == 1, lab.handler.boots(mac)
        assert _config_fetches(lab, mac) == []  # never network-booted: nothing asked for our per-MAC config
        assert [m for m, _ in _calls(lab, mac, POWER_CALLS)] == ["host.reboot"]
        plugin = [p[2:4] for _, p in _calls(lab, mac, ("host.call_plugin",))]
        assert ("prepare_host_upgrade.py", "testUrl") in plugin and plugin[-1] == ("prepare_host_upgrade.py", "main")
        assert len(machine.dom0.downloads) == 1 and set(machine.dom0.downloads[0]) == {"install.img", "vmlinuz",
                                                                                       "xen.gz"}
        assert all(size > 0 for size in machine.dom0.downloads[0].values())
        assert machine.dom0.describe()["default"] == "xe"  # the one-shot entry is gone
        installed = [b for b in lab.handler.boots(mac) if b.outcome == "installed"][0]
        assert [(f.protocol, f.what) for f in installed.fetches] == [("file", "answerfile"), ("http", "treeinfo"),
                                                                       ("file", "script")]
    assert all(h["attempt_id"] is None for h in report["hosts"])
    assert {lab.world.pools[POOL].db.get("host", h.ref)["software_version"]["product_version"]
            for h in lab.world.pools[POOL].hosts} == {lab.store.get_media(MEDIA).product_version}


@pytest.mark.parametrize("spoil", ["missing xen.gz", "older media"])
def test_a_failing_test_url_is_a_plan_problem_and_nothing_reboots(lab, tmp_path, spoil):
    tree = synthetic_media_tree(tmp_path / "bad", version="8.2.0" if spoil == "older media" else "8.4.0")
    if spoil == "missing xen.gz":
        (tree / "boot" / "xen.gz").unlink()
    try:
        media.import_media(lab.store, lab.config, "bad", tree)
    except media.MediaError:
        pytest.skip("the media import itself refuses it")
    found = coord_plan.make_plan(lab.store, POOL, "bad", lab.driver, config=lab.config)
    key = "NOT_FOUND" if spoil == "missing xen.gz" else "INVALID_VER"
    mine = [p for p in found.problems if "testUrl" in p]
    assert len(mine) == len(_macs(lab)) and all(key in p for p in mine), found.problems
    final, _ = _run(lab, "bad")
    assert final.state == states.RUN_BLOCKED
    assert all(_calls(lab, mac, POWER_CALLS) == [] for mac in _macs(lab))


def test_a_master_whose_bootloader_ignores_the_entry_did_not_enter_the_installer(lab):
    master = _macs(lab)[0]
    lab.handler.inject(master, plugin_entry_ignored=True)
    final, report = _run(lab)
    assert final.state == states.RUN_ABORTED, final.reason
    first, *members = report["hosts"]
    assert first["step"] == states.STEP_FAILED and "did not enter the installer (host-plugin)" in first["reason"]
    assert first["remedy_class"] == remedies.NOT_NETWORK_BOOTED and "host-plugin" in first["remedy"]
    # what our HTTP server saw: main's downloads, and nothing after the reboot
    assert ("its dom0 downloaded install.img, vmlinuz, xen.gz, repository during main, but after the reboot it "
            "read nothing from our HTTP server") in first["remedy"], first["remedy"]
    assert "failed upgrade" not in first["remedy"] and "forget" not in first["remedy"].split("Do NOT")[0]
    assert all(m["step"] == states.STEP_PENDING for m in members)
    for m in members:
        assert _calls(lab, m["mac"], POWER_CALLS) == []
        assert [p[3] for _, p in _calls(lab, m["mac"], ("host.call_plugin",))
                if p[3] in ("testUrl", "main")] == ["testUrl"]  # the plan's only (besides its read-only prechecks)
    assert lab.handler.machine(master).installs() == 0


def test_uefi_hosts_upgrade_twice_through_the_plugin(tmp_path):
    lab = _lab(tmp_path, boot_order="uefi-disk-first")
    try:
        newer = synthetic_media_tree(tmp_path / "newer", version="8.4.1", build="next-1")
        treeinfo = newer / ".treeinfo"
        treeinfo.write_text(treeinfo.read_text().replace("platform_version = 3.4.0", "platform_version = 3.5.0"))
        media.import_media(lab.store, lab.config, "xs-next", newer)
        for media_name in (MEDIA, "xs-next"):
            final, _ = _run(lab, media_name)
            assert final.state == states.RUN_DONE, final.reason
        assert [lab.handler.machine(mac).installs() for mac in _macs(lab)] == [2, 2, 2]
        assert all(_config_fetches(lab, mac) == [] for mac in _macs(lab))
    finally:
        lab.driver.close()
        lab.stop()


def test_a_host_plugin_host_that_stays_down_is_reported_with_what_was_seen(lab):
    """No attempt, no start script in this mode: the "still waiting" note says what XAPI showed (main answered, the
    host rebooted and is not back), never "installer started" (coordinator/installing.py _note)."""
    member = _macs(lab)[1]
    name = next(h.name for h in lab.world.pools[POOL].hosts if h.mac == member)
    lab.handler.inject(member, never_returns=True)
    notes = []

    def say(line):
        if line.startswith((f"{name}: not back after", f"{name}: still installing after")):
            notes.append(line)
            if len(notes) == 2:
                runner.request_mark_failed(lab.store, POOL, name)

    started = runner.start_run(lab.store, POOL, MEDIA, lab.driver)
    timeouts = Timeouts(down=600, up=1800, enable=1800, poll=5, installing_note=600)
    final = runner.Runner(lab.store, lab.config, started.id, lab.driver, clock=lab.world.clock, timeouts=timeouts,
                          say=say).run()
    assert final.state == states.RUN_ABORTED, final.reason
    assert len(notes) == 2 and all("installer started" not in n for n in notes), notes
    assert notes[0].startswith(f"{name}: not back after 10 min (host-plugin: prepare_host_upgrade.py main ran "
                               "at "), notes
    (event, *_) = lab.store.events(run_id=started.id, kind=installing.STILL_INSTALLING, mac=member)
    assert event["details"]["attempt"] is None and "is not back in XAPI" in event["details"]["seen"]
    # its installer read the repository after the reboot (our HTTP server saw it): marked failed, it is not "did
    # not enter the installer" with "nothing on its disk changed", but unknown: look before doing anything
    assert "after its reboot" in notes[0] and "repository at " in notes[0], notes
    host = next(h for h in run_report(lab.store, started.id)["hosts"] if h["mac"] == member)
    assert host["remedy_class"] == remedies.UNKNOWN and host["host_down"], host["remedy"]
    assert "entered the installer (host-plugin: after its reboot it read the repository" in host["remedy"]
    assert "Do NOT forget, reinstall or restore it on this report alone" in host["remedy"]
    assert any(e["kind"] == "host_plugin.download" for e in host["evidence"])
