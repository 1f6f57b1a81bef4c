"""boot/downloads.py: media fetches of host-plugin hosts (no attempt, no token) become one `host_plugin.download`
event per host, per kind of file, per `main`; found by the address `main` recorded, the registered ip, or the
neighbour table (the installer's DHCP address); anything else is ignored. The end-to-end check (the simulated
plugin fetching from our HTTP server during a run) is in tests/coordinator/test_boot_method_plugin.py."""

from __future__ import annotations

from provisioner.boot import downloads
from provisioner.model import Host

MAC, OTHER = "52:54:00:aa:00:01", "52:54:00:aa:00:02"


def _run(store, *macs, run_id="r1"):
    store.create_run(run_id, "p", "xs84", stop_on_failure=False, hosts=[
        {"mac": m, "name": f"h{i}", "uuid": f"u{i}", "role": "master" if i == 0 else "member"}
        for i, m in enumerate(macs)])
    return run_id


def _main(store, mac, address, run_id="r1"):
    store.add_event(downloads.PLUGIN_MAIN, mac=mac, run_id=run_id, details={"url": "http://x/media/xs84/",
                                                                           "address": address})
    return store.events(mac=mac, kind=downloads.PLUGIN_MAIN)[-1]["id"]


def _fetched(store, mac=MAC, phase=downloads.MAIN):
    return [(e["details"]["what"], e["details"]["client"], e["details"]["main"])
            for e in store.events(mac=mac, kind=downloads.EVENT) if e["details"]["phase"] == phase]


def test_one_event_per_kind_of_file_per_main(store):
    _run(store, MAC)
    watch = downloads.Downloads(store, neighbour_table=dict)
    assert not watch.record(path="install.img", client_ip="10.0.0.7", media="xs84")  # before main: not watched
    first = _main(store, MAC, "10.0.0.7")
    for path in ("install.img", "boot/vmlinuz", "boot/xen.gz", ".treeinfo", "repodata/repomd.xml",
                 "Packages/a.rpm", "install.img", "Packages/b.rpm"):
        watch.record(path=path, client_ip="::ffff:10.0.0.7", media="xs84", bytes=10)
    assert _fetched(store) == [("install.img", "10.0.0.7", first), ("vmlinuz", "10.0.0.7", first),
                               ("xen.gz", "10.0.0.7", first), ("repository", "10.0.0.7", first)]
    second = _main(store, MAC, "10.0.0.7")  # main again (a resumed REBOOT): a new window
    assert watch.record(path=".treeinfo", client_ip="10.0.0.7", media="xs84")
    assert _fetched(store)[-1] == ("repository", "10.0.0.7", second)
    store.add_event(downloads.REBOOTED, mac=MAC, run_id="r1", details={})  # host.reboot sent: the installer's
    for path in ("Packages/c.rpm", "repodata/repomd.xml", "Packages/d.rpm"):
        watch.record(path=path, client_ip="10.0.0.7", media="xs84")
    assert _fetched(store, phase=downloads.INSTALLER) == [("repository", "10.0.0.7", second)]


def test_unknown_clients_and_ended_runs_are_ignored(store):
    _run(store, MAC)
    _main(store, MAC, "10.0.0.7")
    now = [0.0]
    watch = downloads.Downloads(store, clock=lambda: now[0], neighbour_table=dict)
    assert not watch.record(path="install.img", client_ip="10.0.0.99", media="xs84")
    store.set_run_state("r1", "aborted", reason="test")
    now[0] += downloads.RELOAD
    assert not watch.record(path="install.img", client_ip="10.0.0.7", media="xs84")
    assert _fetched(store) == []


def test_the_registered_ip_and_the_neighbour_table_find_the_host(store, tmp_path):
    store.add_host(Host.from_fields({"mac": MAC, "name": "h0", "pool": "p", "ip": "10.0.0.8"}))
    store.add_host(Host.from_fields({"mac": OTHER, "name": "h1", "pool": "p", "boot_mac": "52:54:00:bb:00:02"}))
    _run(store, MAC, OTHER)
    _main(store, MAC, None)
    _main(store, OTHER, "10.0.0.9")
    arp = tmp_path / "arp"  # /proc/net/arp's layout; the installer of h1 got 10.0.5.5 by DHCP on its boot NIC
    arp.write_text("IP address       HW type     Flags       HW address            Mask     Device\n"
                   "10.0.5.5         0x1         0x2         52:54:00:BB:00:02     *        br0\n"
                   "10.0.5.6         0x1         0x0         00:00:00:00:00:00     *        br0\n")
    watch = downloads.Downloads(store, neighbour_table=lambda: downloads.neighbours(arp))
    assert watch.record(path="install.img", client_ip="10.0.0.8", media="xs84")
    assert watch.record(path="Packages/a.rpm", client_ip="10.0.5.5", media="xs84")
    assert not watch.record(path="Packages/a.rpm", client_ip="10.0.5.6", media="xs84")  # incomplete entry
    assert [w for w, _, _ in _fetched(store, MAC)] == ["install.img"]
    assert _fetched(store, OTHER)[0][:2] == ("repository", "10.0.5.5")


def test_neighbours_reads_nothing_from_a_missing_table(tmp_path):
    assert downloads.neighbours(tmp_path / "none") == {}
