"""XenApiDriver (the only XenAPI importer) against the XAPI simulator over real XML-RPC."""

import pytest

from provisioner.simulator.builder import start_simulator
from provisioner.xapi import MasterNotBack, Trust, XapiError, XapiUnreachable, XenApiDriver


@pytest.fixture
def sim():
    handle = start_simulator(3, speed=600.0, version="8.2.1")
    yield handle
    handle.stop()


@pytest.fixture
def driver(sim):
    d = XenApiDriver(sim.master_url(), "root", "secret-password", timeout=2,
                     trust=Trust(fingerprint=sim.master_fingerprint()))
    yield d
    d.close()


def test_hosts_master_first_with_management_macs(sim, driver):
    hosts = driver.hosts()
    assert [h.is_master for h in hosts] == [True, False, False]
    world_macs = {h.mac for h in sim.world.hosts.values()}
    assert {h.mac for h in hosts} == world_macs
    assert all(h.live and h.enabled and h.product_version == "8.2.1" and h.boot_time for h in hosts)


def test_host_rules_surface_as_failures(driver):
    member = driver.hosts()[1]
    with pytest.raises(XapiError) as err:
        driver.reboot(member.ref)
    assert err.value.details[0] == "HOST_NOT_DISABLED"
    driver.disable(member.ref)
    driver.evacuate(member.ref)
    assert not next(h for h in driver.hosts() if h.ref == member.ref).enabled
    driver.enable(member.ref)


def test_relogin_after_session_loss(sim, driver):
    driver.hosts()
    sim.world.lose_sessions()
    assert len(driver.hosts()) == 3  # SESSION_INVALID -> one fresh login, transparently


def test_unreachable_and_hung_hosts(sim, driver):
    master = driver.hosts()[0]
    sim.world.hang(master.mac)
    with pytest.raises(XapiUnreachable):
        driver.hosts()  # the SDK has no timeout; ours turns a hang into an error
    sim.world.hang(master.mac, on=False)
    assert driver.hosts()
    dead = XenApiDriver("http://127.0.0.1:9", "root", "x", timeout=2)
    with pytest.raises(XapiUnreachable, match="127.0.0.1:9"):
        dead.hosts()


def test_password_is_never_shown(driver):
    assert "secret-password" not in repr(driver) and "secret-password" not in str(vars(driver).get("url"))


# --- the master re-login loop (docs/xapi.md "Waiting for the master to return") ---------------------------------------

def master(sim):
    return sim.world.pools["pool0"].master


def test_relogin_tolerates_refused_connections_while_the_master_reboots(sim, driver):
    m = master(sim)
    driver.disable(m.ref)
    driver.reboot(m.ref)
    while m.serving:  # the real shutdown starts 10 sim s after host.reboot returns
        sim.world.clock.sleep(1)
    seen = []
    waited = driver.relogin_master(timeout=3600, clock=sim.world.clock, interval=5, progress=seen.append)
    # refused, or reset: a login accepted while the host goes down is cut, and a call is never sent twice
    # (xapi_tls._Transport.request; docs/xapi.md "The XenAPI Python package")
    assert waited > 0 and seen and "not answering" in seen[0]
    assert "refused" in seen[0].lower() or "reset" in seen[0].lower()
    assert m.boot_count == 1 and len(driver.hosts()) == 3


def test_relogin_tolerates_host_still_booting(sim, driver):
    m = master(sim)
    before = sum(1 for name, method, _ in sim.world.call_log if method == "session.login_with_password")
    sim.world.still_booting_logins(m.mac, 3)
    seen = []
    driver.relogin_master(timeout=600, clock=sim.world.clock, interval=5, progress=seen.append)
    assert seen == ["starting (HOST_STILL_BOOTING)"]  # said once, not once per attempt
    logins = [c for c in sim.world.call_log if c[1] == "session.login_with_password"][before:]
    assert len(logins) == 4 and {c[0] for c in logins} == {m.name}


def test_relogin_never_reuses_a_dead_session(sim, driver):
    driver.hosts()
    sim.world.lose_sessions()  # what every session sees after the master's xapi restarted (SESSION_INVALID)
    seen, start = [], len(sim.world.call_log)
    driver.relogin_master(timeout=60, clock=sim.world.clock, interval=5, progress=seen.append)
    assert seen == [] and sim.world.call_log[start][1] == "session.login_with_password"  # a fresh login first
    assert driver.hosts()


class SteppedClock:
    """Time passes only in sleep(): the number of tries of a retry loop no longer depends on the machine's load."""

    def __init__(self):
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


def test_relogin_never_follows_host_is_slave(sim):
    member = sim.world.pools["pool0"].hosts[1]
    d = XenApiDriver(sim.url(member.mac), "root", "pw", timeout=2, trust=Trust(fingerprint=sim.fingerprint(member.mac)))
    seen = []
    start = len(sim.world.call_log)
    with pytest.raises(MasterNotBack, match="HOST_IS_SLAVE") as err:  # a clock that moves only when slept on:
        d.relogin_master(timeout=30, clock=SteppedClock(), interval=5, progress=seen.append)  # tries at 0, 5, .. 30
    assert "not followed" in str(err.value) and len(seen) == 1
    calls = sim.world.call_log[start:]
    assert len(calls) >= 6 and {c[0] for c in calls} == {member.name}  # every try at the same URL, none elsewhere
    with pytest.raises(XapiError) as plain:
        d.hosts()  # an ordinary call is not redirected either
    assert plain.value.details[0] == "HOST_IS_SLAVE"


# --- VMs, storage, HA / WLB, tasks --------------------------------------------------------------------------------

def test_vms_show_cds_auto_poweron_and_tools_version(sim, driver):
    pool = sim.world.pools["pool0"]
    db = pool.db
    vm = sorted(r for r in db.all("VM") if not db.get("VM", r)["is_control_domain"])[0]
    cd = next(v for v in db.find("VBD", VM=vm) if db.get("VBD", v)["type"] == "CD")
    iso = db.find("VDI", name_label="guest-tools.iso")[0]
    db.update("VBD", cd, empty=False, VDI=iso)
    db.update("VM", vm, other_config={"auto_poweron": "true"})
    found = {v.ref: v for v in driver.vms()}
    assert len(found) == 6  # 3 hosts x 2 user VMs; no dom0
    info = found[vm]
    assert info.cds and info.cds[0].iso == "guest-tools.iso" and info.cds[0].tools and info.cds[0].vbd == cd
    assert info.auto_poweron and info.tools_version == "8.2.1" and info.tools_detected and info.tools_up_to_date
    db.update("VM_guest_metrics", db.get("VM", vm)["guest_metrics"], PV_drivers_up_to_date=False)
    other = next(r for r in sorted(found) if r != vm)
    db.update("VM", other, guest_metrics="OpaqueRef:NULL")
    again = {v.ref: v for v in driver.vms()}
    assert again[vm].tools_detected and not again[vm].tools_up_to_date  # read as XAPI says, not from the version
    assert (again[other].tools_version, again[other].tools_detected, again[other].tools_up_to_date) == (
        None, False, False)  # no guest metrics: no tools
    assert "suspend" in info.allowed_operations and info.power_state == "Running"
    driver.eject_cd(cd)
    assert not next(v for v in driver.vms() if v.ref == vm).cds
    with pytest.raises(XapiError) as err:
        driver.eject_cd(cd)  # an Async task's error comes back as the same XapiError
    assert err.value.details == ["VBD_IS_EMPTY", cd]
    driver.set_auto_poweron(vm, False)
    assert db.get("VM", vm)["other_config"]["auto_poweron"] == "false"


def test_vm_power_calls_through_tasks(sim, driver):
    host = driver.hosts()[1]
    vm = next(v for v in driver.vms() if v.resident_on == host.ref)
    driver.suspend_vm(vm.ref)
    assert next(v for v in driver.vms() if v.ref == vm.ref).power_state == "Suspended"
    driver.resume_vm_on(vm.ref, host.ref)
    driver.clean_shutdown_vm(vm.ref)
    with pytest.raises(XapiError) as err:
        driver.suspend_vm(vm.ref)
    assert err.value.details[0] == "VM_BAD_POWER_STATE"
    driver.start_vm_on(vm.ref, host.ref, True)
    assert next(v for v in driver.vms() if v.ref == vm.ref).power_state == "Paused"
    driver.hard_shutdown_vm(vm.ref)
    driver.start_vm_on(vm.ref, host.ref)
    other = driver.hosts()[2]
    driver.migrate_vm(vm.ref, other.ref)
    assert next(v for v in driver.vms() if v.ref == vm.ref).resident_on == other.ref
    assert not sim.world.pools["pool0"].db.all("task")  # every task destroyed after use


def test_pbds_and_plug(sim, driver):
    pool = sim.world.pools["pool0"]
    pbd = next(p for p in driver.pbds() if p.sr == "NFS storage" and p.host == pool.hosts[2].ref)
    pool.db.update("PBD", pbd.ref, currently_attached=False)
    assert not next(p for p in driver.pbds() if p.ref == pbd.ref).attached
    driver.plug_pbd(pbd.ref)
    assert next(p for p in driver.pbds() if p.ref == pbd.ref).attached
    assert sum(p.sr == "XenServer Tools" for p in driver.pbds()) == 3  # the tools SR is plugged on every host


def test_ha_and_wlb_round_trip_keeps_what_reenabling_needs(sim, driver):
    sr = sim.world.pools["pool0"].db.get("pool", sim.world.pools["pool0"].ref)["default_SR"]
    driver.enable_ha([sr], 2)
    info = driver.pool_info()
    assert info["ha_enabled"] and info["ha_heartbeat_srs"] == [sr] and info["ha_host_failures_to_tolerate"] == 2
    driver.disable_ha()
    driver.set_wlb_enabled(True)
    info = driver.pool_info()
    assert not info["ha_enabled"] and info["wlb_enabled"] and not info["rolling_upgrade_in_progress"]


def test_local_disks_lists_every_vdi_on_the_hosts_local_sr_and_its_owner(sim, driver):
    from provisioner.simulator.builder import add_local_vm
    pool = sim.world.pools["pool0"]
    member = pool.hosts[1]
    add_local_vm(pool, "halted1", member.ref, disk_gib=10)
    add_local_vm(pool, "susp1", member.ref, power_state="Suspended", snapshot=True)
    add_local_vm(pool, "elsewhere", pool.hosts[2].ref)
    disks = driver.local_disks(member.ref)
    seen = {(d.vm, d.power_state, d.role, d.vdi, d.snapshot_of) for d in disks}
    assert seen == {("halted1", "Halted", "disk", "halted1 disk", ""),
                    ("susp1", "Suspended", "disk", "susp1 disk", ""),
                    ("susp1", "Suspended", "suspend image", "Suspend image for susp1", ""),
                    ("susp1 before upgrade", "Halted", "snapshot disk", "susp1 disk (snapshot)", "susp1")}
    assert {d.sr for d in disks} == {"Local storage"} and len({d.sr_uuid for d in disks}) == 1
    assert next(d for d in disks if d.vm == "halted1").size == 10 * 1024 ** 3
    assert driver.local_disks(pool.hosts[0].ref) == []  # the running VMs' disks are on the shared SR


def test_join_facts_of_the_master(sim, driver):
    from provisioner.simulator.join import apply_updates
    pool = sim.world.pools["pool0"]
    apply_updates(pool, pool.master.ref, [("u-1", "CH82ECU1-1"), ("u-2", "CH82ECU1-2")])
    facts = driver.join_facts(driver.hosts()[0].ref)
    assert (facts.product_version, facts.platform_version, facts.xapi, facts.api_version) == (
        "8.2.1", "3.2.1", "1.20", "2.15")
    assert facts.edition == "trial" and facts.updates == ("CH82ECU1-1", "CH82ECU1-2")
    assert facts.management_vlan == -1 and facts.network_backend == "openvswitch" and facts.db_schema == "5.602"
