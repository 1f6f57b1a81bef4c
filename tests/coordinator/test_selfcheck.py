"""The boot server checks itself before any reboot (coordinator/selfcheck.py): against the real runtime of the lab
it passes and leaves the host's attempt as it was; with nothing answering, or public_url pointing at another
server, the run and the lab reinstall refuse to reboot or power on anything, and go on once it is fixed."""

from __future__ import annotations

import http.server
import socket
import threading
import time

import pytest
from helpers import FAST
from labs import MEDIA, PASSWORD, POOL, host_info, macs, shut_down, upgrade

from provisioner import cryptpw, netports, registry, states
from provisioner.boot import attempts, filenames, service
from provisioner.coordinator import pools, reinstall, runner, selfcheck
from provisioner.coordinator.context import ReinstallTimeouts
from provisioner.simulator import states as sim_states
from provisioner.tftp.client import fetch

FLOW_FAST = ReinstallTimeouts(install=4 * 3600, xapi=1800, joined=1800, poll=5)


def _no_server(config):
    """A CLI's configuration when no `provisioner serve` runs: nothing answers its TFTP port or public_url."""
    http_port = netports.free_port(socket.SOCK_STREAM)
    return config.replace(tftp_port=netports.free_port(socket.SOCK_DGRAM), public_url=f"http://127.0.0.1:{http_port}")


@pytest.fixture
def other_server():
    """An HTTP server that answers every GET with something that is not our media."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            body = b"<html>another site</html>\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _settled(lab):
    """Every fetch record the boot service queued is written (eventwriter.py)."""
    deadline = time.monotonic() + 30
    while lab.runtime.events.fetches_pending and time.monotonic() < deadline:
        time.sleep(0.01)
    assert lab.runtime.events.fetches_pending == 0


def _fetches(lab, attempt):
    return [e for e in lab.store.events(mac=attempt.mac, kind="attempt.fetch")
            if e["details"].get("attempt") == attempt.id]


@pytest.mark.parametrize("firmware", ["bios", "uefi"])
def test_the_check_passes_and_leaves_the_attempt_as_it_was(lab, firmware):
    mac = lab.mac(1)
    registry.update_host(lab.store, mac, {"firmware": firmware})
    host = lab.store.get_host(mac)
    assert host.firmware == firmware
    attempt = attempts.arm(lab.store, lab.config, mac, MEDIA)

    selfcheck.check_boot_server(lab.config, host, lab.store.get_media(MEDIA), attempt)
    _settled(lab)
    after = lab.store.get_attempt(attempt.id)
    assert (after.state, after.runs, after.boot_client) == (states.ARMED, 0, None)
    assert _fetches(lab, attempt) == []

    # The control: the name the firmware asks for is recorded, and binds the attempt to the fetcher.
    name = filenames.format_grub(mac) if firmware == "uefi" else filenames.format_pxelinux(mac)
    assert name == selfcheck.config_name(host)
    body = fetch(*lab.runtime.tftp.address, name)
    assert attempt.token.encode() in body
    _settled(lab)
    assert lab.store.get_attempt(attempt.id).boot_client == "127.0.0.1"
    assert [e["details"]["what"] for e in _fetches(lab, attempt)] == ["config"]


def test_the_self_check_name_answers_only_for_per_mac_names_and_records_nothing(lab):
    mac = lab.mac(1)
    attempt = attempts.arm(lab.store, lab.config, mac, MEDIA)
    for other in ("pxelinux.cfg/default", "grub/grub.cfg", "pxelinux.cfg/C0A80001", "", "xenserver/xs84/.treeinfo"):
        assert service.tftp_payload(lab.store, lab.config, service.self_check_name(other), "127.0.0.1") is None
    body = service.tftp_payload(lab.store, lab.config, "/" + service.self_check_name(filenames.format_pxelinux(mac)),
                                "127.0.0.1")
    assert attempt.token.encode() in body
    assert lab.store.get_attempt(attempt.id).boot_client is None and _fetches(lab, attempt) == []


def test_a_local_boot_answer_is_refused(lab):
    mac = lab.mac(1)
    attempt = attempts.arm(lab.store, lab.config, mac, MEDIA)
    attempts.disarm(lab.store, mac)
    with pytest.raises(selfcheck.SelfCheckFailed, match="local boot, not the installer"):
        selfcheck.check_boot_server(lab.config, lab.store.get_host(mac), lab.store.get_media(MEDIA), attempt)


def _upgrade(lab, config):
    started = runner.start_run(lab.store, POOL, MEDIA, lab.driver)
    return runner.Runner(lab.store, config, started.id, lab.driver, clock=lab.world.clock, timeouts=FAST).run()


def _refused_then_fixed(lab, bad_config, says):
    run = _upgrade(lab, bad_config)
    assert run.state == states.RUN_ABORTED
    assert "nothing_changed" in run.reason and "not rebooted" in run.reason
    for words in says:
        assert words in run.reason, run.reason
    assert not [c for c in lab.world.call_log if c[1] in ("host.reboot", "host.shutdown")]
    for info in lab.driver.hosts():  # as the remedy says: the host was re-enabled, it still runs its old system
        assert info.live and info.enabled and info.product_version == "8.2.1"
    for mac in macs(lab):
        assert lab.store.current_attempt(mac) is None or lab.store.current_attempt(mac).state == states.DISARMED

    again = _upgrade(lab, lab.config)  # `serve` running, public_url right: the same pool upgrades
    assert again.state == states.RUN_DONE, again.reason
    assert {h.product_version for h in lab.driver.hosts()} == {lab.store.get_media(MEDIA).product_version}


def test_a_run_without_a_server_reboots_nothing_and_goes_on_once_it_answers(lab):
    _refused_then_fixed(lab, _no_server(lab.config), ["did not answer", "provisioner serve"])


def test_a_run_whose_public_url_is_another_server_reboots_nothing(lab, other_server):
    _refused_then_fixed(lab, lab.config.replace(public_url=other_server), ["not with media", "check public_url"])


def test_a_reinstall_without_a_server_powers_nothing_on_and_goes_on_once_it_answers(lab):
    _, mac, _ = macs(lab)
    assert upgrade(lab).state == states.RUN_DONE  # a member joins only a master at the media's version
    shut_down(lab, mac)
    connect = lambda pool: pools.connect(lab.store, pool, timeout=5)  # noqa: E731
    found = reinstall.start(lab.store, mac, POOL, MEDIA, confirm=lab.store.get_host(mac).name, forget=True,
                            root_password_hash=cryptpw.hash_password(PASSWORD), connect=connect,
                            host_url=lab.sim.url(mac))
    powered = []

    def flow(config, lines):
        return reinstall.Flow(lab.store, config, found.id, connect=connect, clock=lab.world.clock,
                              timeouts=FLOW_FAST, say=lines.append,
                              power_on=lambda: (powered.append(mac), lab.world.power_on(mac)))
    lines: list[str] = []
    stopped = flow(_no_server(lab.config), lines).run()
    assert stopped.step == states.RI_INSTALLING
    assert powered == [] and lab.world.host(mac).state == sim_states.OFF
    assert any("NOT powered on" in line and "did not answer" in line for line in lines), lines
    assert lab.store.get_attempt(stopped.attempt_id).state == states.ARMED

    done = flow(lab.config, []).run()
    assert done.step == states.RI_DONE, done.reason
    assert powered == [mac]
    assert host_info(lab, mac).live
