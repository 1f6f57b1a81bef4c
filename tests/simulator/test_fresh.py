"""simulator/fresh.py: a fresh install makes a NEW standalone host (new uuid, own pool, media version, no VMs,
root's password from the answer file's hash); pool.join then works only towards a master at the same version.
Driven through the world's boot hook and the real xenapi client over XML-RPC; the machine test goes through
the real boot service."""

from __future__ import annotations

import pytest
from sim_helpers import Events, RecordingClock, sim_server

from provisioner import cryptpw
from provisioner.boot import attempts
from provisioner.simulator import boot_handler, machine
from provisioner.simulator import states as st
from provisioner.simulator.builder import build_pool, new_world, serve_world
from provisioner.simulator.clock import Clock
from provisioner.simulator.fresh import FRESH, new_host_uuid
from provisioner.xapi import CertificateRefused, Trust, XapiError, XenApiDriver
from provisioner.xapi_tls import colons

PASSWORD, NEW_PASSWORD = "pool-pw", "new-root-pw"
NEW_HASH = cryptpw.hash_password(NEW_PASSWORD, rounds=1000)
V84 = {"product_name": "XenServer", "product_version": "8.4.0", "platform_name": "XCP", "platform_version": "3.4.0",
       "build_number": "12345"}


class Sim:
    def __init__(self):
        self.world = new_world(Clock(600), password=PASSWORD)
        self.old = build_pool(self.world, "old", hosts=2, version="8.2.1", vms_per_host=1)
        self.new = build_pool(self.world, "new", hosts=1, version="8.4.0", vms_per_host=0, address="127.0.0.2")
        self.fresh: set[str] = set()
        self.world.boot_handler = self.boot
        self.handle = serve_world(self.world)
        self.mac = self.old.hosts[1].mac

    def boot(self, mac):
        """The boot hook's contract: a version dict when the boot installed something (here: a fresh install)."""
        if mac not in self.fresh:
            return None
        self.fresh.discard(mac)
        return {**V84, FRESH: {"hostname": "newhost", "root_password_hash": NEW_HASH, "disk": "/dev/disk/by-id/x",
                               "admin": {"mode": "DHCP"}}}

    def driver(self, url, password):
        """A driver pinned to the certificate the host at `url` serves now (docs/xapi.md "TLS")."""
        pin = next(e.cert.fingerprint for e in self.handle.endpoints.values() if e.url == url)
        return XenApiDriver(url, "root", password, timeout=5, trust=Trust(fingerprint=pin))

    def wait(self, done, what):
        for _ in range(2000):
            if done():
                return
            self.world.clock.sleep(5)
        raise AssertionError(f"timed out waiting for {what}")

    def power_off_member(self, forget: bool) -> str:
        master = self.driver(self.handle.master_url("old"), PASSWORD)
        ref = self.old.hosts[1].ref
        uuid = next(h.uuid for h in master.hosts() if h.ref == ref)
        master.disable(ref)
        master.call("host.shutdown", ref)
        self.wait(lambda: self.world.host(self.mac).state == st.OFF, "power off")
        if forget:
            master.destroy_host(ref)
        master.close()
        return uuid

    def reinstall(self):
        self.fresh.add(self.mac)
        self.world.power_on(self.mac)
        h = self.world.host(self.mac)
        self.wait(lambda: h.state == st.XAPI_RUNNING and h.pool.db.get("host", h.ref)["enabled"], "new host up")


@pytest.fixture
def sim():
    made = Sim()
    yield made
    made.handle.stop()


def test_fresh_install_comes_back_as_a_new_standalone_host(sim):
    old_uuid = sim.power_off_member(forget=True)
    sim.reinstall()
    new = sim.driver(sim.handle.url(sim.mac), NEW_PASSWORD)  # same address and port as before
    hosts = new.hosts()
    assert len(hosts) == 1 and hosts[0].is_master and hosts[0].uuid != old_uuid
    assert hosts[0].uuid == new_host_uuid(sim.world.host(sim.mac))
    assert (hosts[0].name, hosts[0].mac, hosts[0].product_version) == ("newhost", sim.mac, "8.4.0")
    assert hosts[0].live and hosts[0].enabled and new.vms() == []
    assert new.pool_info()["name_label"] == "" and new.management_network(hosts[0].ref)["mode"] == "dhcp"
    with pytest.raises(XapiError) as err:
        sim.driver(sim.handle.url(sim.mac), PASSWORD).hosts()  # root's password is now the answer file's
    assert err.value.details[0] == "SESSION_AUTHENTICATION_FAILED"
    old_master = sim.driver(sim.handle.master_url("old"), PASSWORD)
    left = old_master.hosts()
    assert len(left) == 1 and left[0].is_master and old_uuid not in {h.uuid for h in left}  # forgotten
    new.close()
    old_master.close()


def test_a_fresh_install_serves_a_new_certificate_and_a_reboot_keeps_it(sim):
    """gencert makes xapi-ssl.pem at a new system's first boot; an upgrade restores it (simulator/certs.py)."""
    before = sim.handle.fingerprint(sim.mac)
    pinned_before = sim.driver(sim.handle.url(sim.mac), PASSWORD)
    sim.power_off_member(forget=True)
    sim.reinstall()
    after = sim.handle.fingerprint(sim.mac)
    assert after != before
    with pytest.raises(CertificateRefused) as refused:  # the pin made before the install no longer matches
        pinned_before.hosts()
    text = str(refused.value)
    assert before.upper()[:2] in text and colons(before) in text and colons(after) in text
    assert "pools trust" in text and "nothing was sent" in text
    new = sim.driver(sim.handle.url(sim.mac), NEW_PASSWORD)
    host = new.hosts()[0]
    new.disable(host.ref)
    new.reboot(host.ref)
    sim.wait(lambda: sim.world.host(sim.mac).boot_count >= 2 and sim.world.host(sim.mac).serving, "reboot")
    assert sim.handle.fingerprint(sim.mac) == after  # a reboot (or an upgrade) keeps the certificate
    new.close()


def test_pool_join_needs_the_masters_version_then_works(sim):
    sim.power_off_member(forget=True)
    sim.reinstall()
    new = sim.driver(sim.handle.url(sim.mac), NEW_PASSWORD)
    old_master = sim.world.pools["old"].master.address
    with pytest.raises(XapiError) as err:  # the old pool's master still runs 8.2.1
        new.join_pool(old_master, "root", PASSWORD)
    assert err.value.details == ["POOL_HOSTS_NOT_COMPATIBLE"]
    with pytest.raises(XapiError) as err:
        new.join_pool("127.0.0.2", "root", "wrong")
    assert err.value.details[0] == "SESSION_AUTHENTICATION_FAILED"
    uuid = new.hosts()[0].uuid
    new.join_pool("127.0.0.2", "root", PASSWORD)
    pool = sim.driver(sim.handle.master_url("new"), PASSWORD)
    sim.wait(lambda: any(h.uuid == uuid and h.live and h.enabled for h in pool.hosts()), "joined")
    joined = next(h for h in pool.hosts() if h.uuid == uuid)
    assert not joined.is_master and joined.mac == sim.mac and len(pool.hosts()) == 2
    with pytest.raises(XapiError) as err:  # a member now: logins go to the master
        sim.driver(sim.handle.url(sim.mac), NEW_PASSWORD).hosts()
    assert err.value.details == ["HOST_IS_SLAVE", "127.0.0.2"]
    pool.close()


def test_an_unforgotten_record_stays_dead_in_the_old_pool_until_host_destroy(sim):
    old_uuid = sim.power_off_member(forget=False)
    sim.reinstall()
    master = sim.driver(sim.handle.master_url("old"), PASSWORD)
    ghost = next(h for h in master.hosts() if h.uuid == old_uuid)
    assert not ghost.live and ghost.mac == sim.mac  # the pool still knows the old host, dead
    master.destroy_host(ghost.ref)
    assert old_uuid not in {h.uuid for h in master.hosts()}
    assert sim.driver(sim.handle.url(sim.mac), NEW_PASSWORD).hosts()[0].uuid != old_uuid  # the new host is fine
    master.close()


def test_the_machine_installs_a_fresh_answer_file_and_reports_a_new_host(tmp_path):
    config, store, runtime = sim_server(tmp_path)
    try:
        found = store.create_reinstall(machine.canonical_mac("52:54:00:5a:00:01"), "p", "xs-8.4", host_name="h-bios",
                                       forget_first=False, old_uuid=None, old_pool=None, host_url="http://x/",
                                       network={"mode": "dhcp"}, root_password_hash=NEW_HASH)
        attempts.arm_fresh_install(store, found.id)
        events = Events()
        handler = boot_handler.make_boot_handler(runtime.tftp.address, http_base=runtime.http.url, on_event=events,
                                                 clock=RecordingClock(), boot_order="bios-network-first")  # PXE-first lab
        version = handler(found.mac)
        assert version[FRESH]["hostname"] == "h-bios" and version[FRESH]["root_password_hash"] == NEW_HASH
        assert version["product_version"] == "8.4.0"
        assert [b.outcome for b in handler.boots(found.mac)] == [machine.INSTALLED, machine.LOCAL]
        assert handler.machine(found.mac).installs() == 1
        assert NEW_HASH not in str(events.seen)  # the boot events carry no hash
        assert store.get_attempt(store.get_reinstall(found.id).attempt_id).state == "succeeded"
    finally:
        runtime.stop()
        store.close()
