"""XenApiDriver (the only XenAPI importer) against the XAPI simulator over real XML-RPC."""

import pytest

from provisioner.simulator.builder import start_simulator
from provisioner.xapi import Failure, XapiUnreachable, XenApiDriver


@pytest.fixture
def sim():
    handle = start_simulator(3, speed=600.0, version="8.2.1")
    yield handle
    handle.stop()


@pytest.fixture
def driver(sim):
    d = XenApiDriver(sim.master_url(), "root", "secret-password", timeout=2)
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
    with pytest.raises(Failure) as err:
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
