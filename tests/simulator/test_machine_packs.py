"""Driver disks and supplemental packs through the real boot service: a machine whose disk controller needs a
driver finds its disk (and so its installation) only when its answer file carries a driver disk providing it;
the packs named are recorded as installed (docs/packs.md)."""

from __future__ import annotations

import pytest

from pack_trees import make_pack_tree
from sim_helpers import BIOS, MEDIA, OTHER, VERSION, Events, RecordingClock

from provisioner import packs, states
from provisioner.boot import attempts
from provisioner.simulator import machine


def _machine(runtime, mac, needs_driver, events):
    return machine.Machine(mac, runtime.tftp.address, http_base=runtime.http.url, clock=RecordingClock(),
                           on_event=events, boot_order="bios-network-first", needs_driver=needs_driver, max_boots=2)


def test_disk_is_found_only_with_the_driver_disk(server, tmp_path):
    config, store, runtime = server
    events = Events()
    host = _machine(runtime, BIOS, "megaraid_sas", events)

    # No driver disk: the installer sees no disk, so no installation to upgrade; it reports 1 and reboots.
    attempts.arm(store, config, BIOS, MEDIA)
    assert host.power_on() is None
    first = host.boots[0]
    assert first.outcome == machine.INSTALL_FAILED
    assert "no driver for its disk controller (megaraid_sas)" in first.detail
    assert "Could not locate the installation specified to be reinstalled." in first.detail
    assert attempts.current_attempt(store, BIOS).exit_code == 1
    assert host.installed_packs == {}

    # A driver disk for another controller, for this host only: still no disk.
    packs.import_pack(store, config, MEDIA, make_pack_tree(tmp_path / "nic", "ixgbe", drivers=["ixgbe-module"]),
                      hosts=[BIOS])
    attempts.arm(store, config, BIOS, MEDIA)
    cycle = host.cycles + 1
    assert host.power_on() is None
    assert [b.outcome for b in host.boots if b.cycle == cycle][0] == machine.INSTALL_FAILED

    # The right driver disk (this host) and a supplemental pack (every host): the disk is found, the upgrade
    # runs, and the new system holds exactly the packs its answer file named.
    packs.import_pack(store, config, MEDIA, make_pack_tree(tmp_path / "raid", "megaraid-sas", version="7.7",
                                                           drivers=["megaraid_sas-module"]), hosts=[BIOS])
    packs.import_pack(store, config, MEDIA, make_pack_tree(tmp_path / "tools", "acme-tools", version="1.2.0"))
    attempt = attempts.arm(store, config, BIOS, MEDIA)
    cycle = host.cycles + 1
    assert host.power_on() == VERSION
    boot = [b for b in host.boots if b.cycle == cycle][0]
    assert boot.outcome == machine.INSTALLED
    repo_urls = [f.name for f in boot.fetches if f.what == "repo"]
    assert f"{config.base_url}/media/{MEDIA}/packs/raid/repodata/comps.xml" in repo_urls
    assert f"{config.base_url}/media/{MEDIA}/packs/tools/update.xml" in repo_urls
    assert host.installed_packs == {"acme-tools": "1.2.0", "ixgbe": "1.2.0", "megaraid-sas": "7.7"}
    done = attempts.current_attempt(store, BIOS)
    assert (done.id, done.state, done.exit_code) == (attempt.id, states.SUCCEEDED, 0)

    # Another host of the media gets the supplemental pack only (the driver disks are scoped to BIOS).
    other = _machine(runtime, OTHER, None, events)
    attempts.arm(store, config, OTHER, MEDIA)
    assert other.power_on() == VERSION
    assert other.installed_packs == {"acme-tools": "1.2.0"}
    assert not [f for b in other.boots for f in b.fetches if "/packs/raid/" in f.name]


def test_an_upgrade_without_the_packs_leaves_them_behind(server, tmp_path):
    config, store, runtime = server
    host = _machine(runtime, BIOS, None, Events())
    packs.import_pack(store, config, MEDIA, make_pack_tree(tmp_path / "tools", "acme-tools"), name="tools")
    attempts.arm(store, config, BIOS, MEDIA)
    assert host.power_on() == VERSION and host.installed_packs == {"acme-tools": "1.2.0"}
    packs.remove_pack(store, config, MEDIA, "tools")
    attempts.arm(store, config, BIOS, MEDIA)
    assert host.power_on() == VERSION
    assert host.installed_packs == {}  # upgrades do not carry packs across (docs/packs.md)


@pytest.mark.parametrize("body, problem", [
    ('<driver-source>http://x/</driver-source>', "Missing mandatory attribute type of driver-source"),
    ('<driver-source type="cdrom">http://x/</driver-source>', "Invalid type for <driver-source> media specified."),
])
def test_simulated_installer_applies_the_driver_source_rules(body, problem):
    from provisioner.simulator.installer import AnswerfileRejected, read_answerfile

    text = (f'<installation mode="upgrade"><existing-installation>sda</existing-installation>{body}'
            '<source type="url">http://x/m/</source></installation>')
    with pytest.raises(AnswerfileRejected, match=problem):
        read_answerfile(text)


def test_fresh_install_needs_the_driver_disk_too(server, tmp_path):
    from provisioner import cryptpw

    config, store, runtime = server
    host = _machine(runtime, BIOS, "qla2xxx", Events())

    def reinstall():
        found = store.create_reinstall(BIOS, "p", MEDIA, host_name="h-bios", forget_first=False, old_uuid=None,
                                       old_pool="p", host_url="http://127.0.0.1/", network={"mode": "dhcp"},
                                       root_password_hash=cryptpw.hash_password("lab-secret"))
        attempts.arm_fresh_install(store, found.id)
        return found

    first = reinstall()
    cycle = host.cycles + 1
    assert host.power_on() is None
    boot = [b for b in host.boots if b.cycle == cycle][0]
    assert boot.outcome == machine.INSTALL_FAILED and "the primary disk does not exist" in boot.detail
    store.set_reinstall_step(first.id, states.RI_FAILED, reason="test: installer failed")
    packs.import_pack(store, config, MEDIA, make_pack_tree(tmp_path / "hba", "qlogic", drivers=["qla2xxx-module"]),
                      hosts=[BIOS])
    reinstall()
    cycle = host.cycles + 1
    version = host.power_on()
    assert version is not None and version["product_version"] == "8.4.0"  # a fresh install of the media
    assert [b.outcome for b in host.boots if b.cycle == cycle][0] == machine.INSTALLED
    assert host.installed_packs == {"qlogic": "1.2.0"}
