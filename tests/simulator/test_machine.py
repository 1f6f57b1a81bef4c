"""Simulated PXE machines against the real runtime (TFTP + HTTP on loopback): every boot path, loops, failures."""

import sys
import threading

import pytest

from sim_helpers import BIOS, MEDIA, OTHER, UEFI, VERSION, Events, RecordingClock, sim_server, wait_for

from provisioner import cryptpw, states
from provisioner.boot import attempts
from provisioner.simulator import boot_handler, machine

def _handler(runtime, events, **settings):
    """Machines of a PXE-first site (every reboot tries the network first): the boot paths these tests follow.
    The default, disk first, is test_machine_firmware.py's."""
    settings.setdefault("clock", RecordingClock())
    settings.setdefault("boot_order", "bios-network-first")
    return boot_handler.make_boot_handler(runtime.tftp.address, http_base=runtime.http.url, on_event=events,
                                          **settings)


def test_armed_bios_host_installs_once_then_boots_locally(server):
    config, store, runtime = server
    events, clock = Events(), RecordingClock()
    attempt = attempts.arm(store, config, BIOS, MEDIA)
    handler = _handler(runtime, events, clock=clock, install_seconds=900)
    assert handler(BIOS) == VERSION
    boots = handler.boots(BIOS)
    assert [b.outcome for b in boots] == [machine.INSTALLED, machine.LOCAL]
    assert handler.machine(BIOS).installs() == 1
    assert [f.what for f in boots[0].fetches] == ["config", "hypervisor", "kernel", "install.img", "answerfile",
                                                  "treeinfo", "script", "script"]
    assert all(f.protocol == "http" for f in boots[0].fetches[1:])  # lpxelinux (pxelinux_http) fetches http://
    assert boots[0].fetches[3].bytes == 70_001
    assert clock.slept == [900]
    done = attempts.current_attempt(store, BIOS)
    assert (done.id, done.state, done.exit_code, done.runs) == (attempt.id, states.SUCCEEDED, 0, 1)
    scripts = events.kinds(machine.EV_SCRIPT, BIOS)
    assert [(s["stage"], s["args"], s["exit"]) for s in scripts] == [
        ("installation-start", [], 0), ("installation-complete", ["0"], 0)]
    assert not events.kinds(machine.EV_REINSTALL_LOOP)
    # The next power cycle: not armed any more, one config fetch and a local boot.
    assert handler(BIOS) is None
    assert [b.outcome for b in handler.boots(BIOS)[2:]] == [machine.LOCAL]


def test_unarmed_host_boots_locally_after_one_config_fetch(server):
    _, store, runtime = server
    events = Events()
    handler = _handler(runtime, events)
    assert handler(OTHER) is None
    (boot,) = handler.boots(OTHER)
    assert boot.outcome == machine.LOCAL and [f.what for f in boot.fetches] == ["config"]
    assert len(events.kinds(machine.EV_FETCH, OTHER)) == 1


def test_plain_pxelinux_fetches_boot_files_over_tftp(tmp_path):
    config, store, runtime = sim_server(tmp_path, pxelinux_http=False)
    try:
        attempts.arm(store, config, BIOS, MEDIA)
        handler = _handler(runtime, Events())
        assert handler(BIOS) == VERSION
        first = handler.boots(BIOS)[0]
        assert [(f.protocol, f.name) for f in first.fetches[1:4]] == [
            ("tftp", f"xenserver/{MEDIA}/boot/xen.gz"), ("tftp", f"xenserver/{MEDIA}/boot/vmlinuz"),
            ("tftp", f"xenserver/{MEDIA}/install.img")]
        assert first.fetches[3].bytes == 70_001
    finally:
        runtime.stop()
        store.close()


def test_installer_fails_reports_1_and_keeps_the_version(server):
    config, store, runtime = server
    attempts.arm(store, config, BIOS, MEDIA)
    events = Events()
    handler = _handler(runtime, events, failures={BIOS: {"installer_fails": True}})
    assert handler(BIOS) is None
    assert [b.outcome for b in handler.boots(BIOS)] == [machine.INSTALL_FAILED, machine.LOCAL]
    attempt = attempts.current_attempt(store, BIOS)
    assert attempt.state == states.FAILED and attempt.exit_code == 1
    assert events.kinds(machine.EV_SCRIPT)[-1]["args"] == ["1"]


def test_installer_breaks_reports_1_and_leaves_no_bootable_system(server):
    """installer_breaks fails after its backup, writing the new root: complete reports 1, no system boots again,
    not on the next power cycle, not after an upgrade (no existing installation); a fresh install repairs it."""
    config, store, runtime = server
    attempt = attempts.arm(store, config, BIOS, MEDIA)
    events = Events()
    handler = _handler(runtime, events, failures={BIOS: {"installer_breaks": True}})
    with pytest.raises(machine.NoBootableSystem):
        handler(BIOS)
    assert [b.outcome for b in handler.boots(BIOS)] == [machine.INSTALL_BROKEN, machine.NO_SYSTEM]
    assert handler.machine(BIOS).installs() == 1
    assert [(s["stage"], s["args"]) for s in events.kinds(machine.EV_SCRIPT, BIOS)] == [
        ("installation-start", []), ("installation-complete", ["1"])]
    done = attempts.current_attempt(store, BIOS)
    assert (done.id, done.state, done.exit_code) == (attempt.id, states.FAILED, 1)
    assert len(events.kinds(machine.EV_NO_SYSTEM, BIOS)) == 1
    with pytest.raises(machine.NoBootableSystem):  # the next power cycle: PXE says local, the disk has nothing
        handler(BIOS)
    assert [b.outcome for b in handler.boots(BIOS)[2:]] == [machine.NO_SYSTEM]
    handler.inject(BIOS, installer_breaks=False)
    attempts.arm(store, config, BIOS, MEDIA)  # an upgrade needs the old installation's settings
    with pytest.raises(machine.NoBootableSystem):
        handler(BIOS)
    assert [b.outcome for b in handler.boots(BIOS)[3:]] == [machine.INSTALL_BROKEN, machine.NO_SYSTEM]
    assert "no existing installation" in handler.boots(BIOS)[3].detail
    found = store.create_reinstall(BIOS, "p", MEDIA, host_name="h-bios", forget_first=False, old_uuid=None,
                                   old_pool=None, host_url="http://x/", network={"mode": "dhcp"},
                                   root_password_hash=cryptpw.hash_password("new-root-pw", rounds=1000))
    attempts.arm_fresh_install(store, found.id)
    assert handler(BIOS)["product_version"] == "8.4.0"  # a fresh install repartitions the disk
    assert not handler.machine(BIOS).disk_broken


def test_no_pxe_boots_the_disk_with_no_fetch(server):
    """no_pxe (disk-first BIOS order, UEFI BootOrder with the installer's entry first): armed, yet nothing is
    fetched, the old version boots and the attempt stays armed."""
    config, store, runtime = server
    attempts.arm(store, config, BIOS, MEDIA)
    events = Events()
    handler = _handler(runtime, events, failures={BIOS: {"no_pxe": True}})
    assert handler(BIOS) is None
    (boot,) = handler.boots(BIOS)
    assert boot.outcome == machine.DISK_FIRST and boot.fetches == []
    assert not events.kinds(machine.EV_FETCH, BIOS)
    assert attempts.current_attempt(store, BIOS).state == states.ARMED
    handler.inject(BIOS, no_pxe=False)
    assert handler(BIOS) == VERSION


def test_server_that_keeps_serving_the_installer_shows_a_reinstall_loop(server):
    config, store, runtime = server
    attempts.arm(store, config, BIOS, MEDIA)
    events = Events()

    def rearm(kind, mac, details):  # a broken server: armed again as soon as each run finished
        if kind == machine.EV_SCRIPT and details["stage"] == "installation-complete":
            attempts.arm(store, config, mac, MEDIA)

    events.hooks.append(rearm)
    handler = _handler(runtime, events, max_boots=3)
    assert handler(BIOS) == VERSION  # the host does come up upgraded, after too many installs
    assert [b.outcome for b in handler.boots(BIOS)] == [machine.INSTALLED] * 3
    (loop,) = events.kinds(machine.EV_REINSTALL_LOOP, BIOS)
    assert loop["boots"] == 3 and loop["installs"] == 3 and loop["version"] == VERSION
    fetched = [d["what"] for d in events.kinds(machine.EV_FETCH, BIOS) if d["status"] == "ok"]
    assert fetched.count("answerfile") == 3


def test_rejected_answer_file_reboots_into_pxe_again(server):
    config, store, runtime = server
    config = config.replace(attempts_per_arming=3)
    attempts.arm(store, config, BIOS, MEDIA)
    events = Events()
    # bad_answerfile: the installer rejects the file and reboots with no callback; the server counts each run
    handler = _handler(runtime, events, failures={"bad_answerfile": True})
    assert handler(BIOS) is None
    assert [b.outcome for b in handler.boots(BIOS)] == [machine.ANSWERFILE_REJECTED] * 3 + [machine.LOCAL]
    assert not events.kinds(machine.EV_SCRIPT)
    assert attempts.current_attempt(store, BIOS).state == states.ARMED  # no start script: window not closed
    handler.inject(BIOS, bad_answerfile=False)  # a per-MAC value overrides the global one
    attempts.arm(store, config, BIOS, MEDIA)
    assert handler(BIOS) == VERSION


def test_answer_file_404_is_an_installer_error_and_a_reboot(server):
    config, store, runtime = server
    attempts.arm(store, config, BIOS, MEDIA)
    events = Events()

    def disarm_midway(kind, mac, details):  # the window closes between the boot config and the answer file
        if kind == machine.EV_FETCH and details["what"] == "install.img":
            attempts.disarm(store, mac)

    events.hooks.append(disarm_midway)
    handler = _handler(runtime, events)
    assert handler(BIOS) is None
    first, second = handler.boots(BIOS)
    assert first.outcome == machine.ANSWERFILE_MISSING and first.fetches[-1].status == "not-found"
    assert second.outcome == machine.LOCAL
    assert not events.kinds(machine.EV_SCRIPT)


@pytest.mark.parametrize("loader, mac", [("grub", BIOS), ("grub", UEFI), ("ipxe", BIOS), ("ipxe", UEFI)])
def test_grub_and_ipxe_loaders(server, loader, mac):
    config, store, runtime = server
    attempts.arm(store, config, mac, MEDIA)
    handler = _handler(runtime, Events(), loader=loader, firmware={UEFI: "uefi", BIOS: "bios"})
    assert handler(mac) == VERSION
    boots = handler.boots(mac)
    # After the install a BIOS iPXE exits to the firmware's next device; GRUB (and iPXE on UEFI, chained to GRUB)
    # starts the disk's own EFI loader, since an exit there would stop at the boot menu.
    local = machine.LOCAL if (loader, mac) == ("ipxe", BIOS) else machine.CHAINLOADED
    assert [b.outcome for b in boots] == [machine.INSTALLED, local]
    whats = [f.what for f in boots[0].fetches]
    assert whats.count("answerfile") == 1 and whats[-2:] == ["script", "script"]
    if loader == "ipxe" and mac == UEFI:  # stock iPXE cannot boot Xen on UEFI: it chains to GRUB
        assert whats[:3] == ["config", "chain", "config"]
        assert boots[0].fetches[2].protocol == "tftp" and boots[0].fetches[2].name.startswith("grub/grub.cfg-01-")
    if loader == "ipxe" and mac == BIOS:  # Debian's iPXE cannot load xen.gz: it chains to pxelinux.0 over TFTP
        assert whats[:3] == ["config", "chain", "config"]
        assert [(f.protocol, f.name) for f in boots[0].fetches[1:3]] == [
            ("tftp", "pxelinux.0"), ("tftp", f"pxelinux.cfg/01-{BIOS.replace(':', '-')}")]
    first = boots[0].fetches[0]
    assert first.protocol == ("http" if loader == "ipxe" else "tftp")
    assert attempts.current_attempt(store, mac).state == states.SUCCEEDED


@pytest.mark.parametrize("loader", ["pxelinux", "grub", "ipxe"])
def test_missing_boot_file(server, tmp_path, loader):
    config, store, runtime = server
    attempts.arm(store, config, BIOS, MEDIA)
    (tmp_path / "tree" / "install.img").unlink()
    events = Events()
    handler = _handler(runtime, events, loader=loader, max_boots=3)
    assert handler(BIOS) is None
    boots = handler.boots(BIOS)
    # iPXE on BIOS: script, chain to pxelinux.0, pxelinux's config, then pxelinux's files (docs/firmware.md)
    image = boots[0].fetches[5 if loader == "ipxe" else 3]
    assert image.what == "install.img" and image.status == "not-found"
    assert all(b.fetched("answerfile") == 0 for b in boots)
    if loader in ("pxelinux", "ipxe"):  # mboot.c32 cannot load it: boot fails, the firmware reboots, PXE again
        assert [b.outcome for b in boots] == [machine.BOOT_ERROR] * 3
        (loop,) = events.kinds(machine.EV_BOOT_LOOP, BIOS)
        assert loop["installs"] == 0 and not events.kinds(machine.EV_REINSTALL_LOOP)
    else:  # our GRUB config falls back to `exit`: the disk boots
        assert [b.outcome for b in boots] == [machine.LOCAL]
    assert attempts.current_attempt(store, BIOS).state == states.ARMED


def test_slow_and_never_returns(server):
    config, store, runtime = server
    attempts.arm(store, config, BIOS, MEDIA)
    clock = RecordingClock()
    events = Events()
    handler = _handler(runtime, events, clock=clock, install_seconds=5, failures={OTHER: {"slow": 300}})
    assert handler(OTHER) is None and clock.slept == [300]
    handler.inject(BIOS, never_returns=True)
    result = []
    worker = threading.Thread(target=lambda: result.append(handler(BIOS)))
    worker.start()
    wait_for(lambda: events.kinds(machine.EV_HANG, BIOS))  # its boot (TFTP, HTTP) reaches the installer that hangs
    assert worker.is_alive()  # the host stays down
    handler.stop()
    worker.join(10)
    assert result == [None] and handler.boots(BIOS)[-1].outcome == machine.HUNG
    assert attempts.current_attempt(store, BIOS).state == states.STARTED  # started, never reported


def test_external_command(server, tmp_path):
    _, _, runtime = server
    script = tmp_path / "boot.sh"
    script.write_text('#!/bin/sh\n[ "$MAC" = "52:54:00:5a:00:01" ] && printf \'{"product_version": "%s"}\' '
                      '"$TFTP_PORT"\nexit 0\n')
    events = Events()
    handler = _handler(runtime, events, external_command=["/bin/sh", str(script)])
    assert handler(BIOS) == {"product_version": str(runtime.tftp.address[1])}
    assert handler(OTHER) is None  # empty stdout: no new version
    assert [b.outcome for b in handler.boots(BIOS)] == [machine.EXTERNAL]
    failing = _handler(runtime, events, external_command="echo nope; exit 3")
    assert failing(BIOS) is None and "exited 3" in failing.boots(BIOS)[0].detail


def test_machine_as_a_separate_process(server):
    """`python -m provisioner.simulator.process` as the external command: a whole boot in another process, its
    firmware PXE-first ($BOOT_ORDER; the parent's boot order stays in the parent)."""
    config, store, runtime = server
    attempts.arm(store, config, UEFI, MEDIA)
    handler = _handler(runtime, Events(), loader="grub", install_seconds=1,
                       external_command=["env", "BOOT_ORDER=uefi-network-first", sys.executable, "-m",
                                         "provisioner.simulator.process"])
    assert handler(UEFI) == VERSION
    assert attempts.current_attempt(store, UEFI).state == states.SUCCEEDED
    assert handler(UEFI) is None  # the next power cycle is a local boot
    attempts.arm(store, config, UEFI, MEDIA)
    handler.inject(UEFI, installer_fails=True)  # failures travel to the process in $FAILURES
    assert handler(UEFI) is None
    assert attempts.current_attempt(store, UEFI).state == states.FAILED
    attempts.arm(store, config, UEFI, MEDIA)
    handler.inject(UEFI, installer_fails=False, installer_breaks=True)
    with pytest.raises(machine.NoBootableSystem):  # exit 86: no bootable system, remembered by the parent
        handler(UEFI)
    assert handler.machine(UEFI).disk_broken
    handler.inject(UEFI, installer_breaks=False)
    with pytest.raises(machine.NoBootableSystem):  # $DISK_BROKEN: the next process boots nothing either
        handler(UEFI)


def test_external_machine_that_never_returns_is_released_by_stop(server, tmp_path):
    _, _, runtime = server
    handler = _handler(runtime, Events(), external_command="sleep 600")
    worker = threading.Thread(target=handler, args=(BIOS,))
    worker.start()
    worker.join(0.3)
    assert worker.is_alive()
    handler.stop()
    worker.join(10)
    assert not worker.is_alive() and "exited -9" in handler.boots(BIOS)[0].detail


@pytest.mark.parametrize("loader, text, expected", [
    ("pxelinux", "default local\nlabel local\n  localboot 0\n", "local"),
    ("grub", "# c\nexit\n", "local"),
    ("ipxe", "#!ipxe\nexit\n", "local"),
    ("ipxe", "#!ipxe\nchain http://x/grubx64.efi || exit\n", "chain"),
    ("ipxe", "#!ipxe\nkernel http://h:1/x.gz a || goto local\nmodule http://h:1/k answerfile=http://h/a || goto local\n"
             "module i || goto local\nboot || goto local\n:local\nexit\n", "installer"),
    ("grub", "multiboot2 (http,h:1)/x.gz a\nmodule2 (http,h:1)/k answerfile=http://h/a\nmodule2 /i\nboot\n",
     "installer"),
])
def test_parse_config(loader, text, expected):
    plan = machine.parse_config(loader, text)
    assert plan["action"] == expected
    if expected == "installer":
        assert plan["files"] == [("hypervisor", "http://h:1/x.gz"), ("kernel", "http://h:1/k"), ("install.img", "i")]
        assert plan["args"] == ["a", "answerfile=http://h/a"]


def test_ipxe_settings_expand_and_a_chain_to_pxelinux_names_its_loader():
    """Our BIOS script (docs/firmware.md "iPXE on BIOS"): `set 210:string` then `chain ${210:string}pxelinux.0`."""
    text = "#!ipxe\nset 210:string tftp://192.0.2.1/\nchain ${210:string}pxelinux.0 || goto local\n:local\nexit\n"
    assert machine.parse_config("ipxe", text) == {"action": "chain", "url": "pxelinux.0", "loader": "pxelinux"}
    uefi = machine.parse_config("ipxe", "#!ipxe\nchain http://x/grubx64.efi || exit\n")
    assert uefi == {"action": "chain", "url": "http://x/grubx64.efi", "loader": "grub"}
    # an unset setting expands to nothing, as in iPXE: the chain names a relative pxelinux.0, not a TFTP URL
    assert machine.parse_config("ipxe", "#!ipxe\nchain ${210:string}pxelinux.0\n")["loader"] == "grub"


@pytest.mark.parametrize("text", ["default x\nlabel y\n localboot 0\n", "label x\n kernel vmlinuz\n", "boot\n"])
def test_parse_config_refuses_what_a_loader_would_not_boot(text):
    with pytest.raises(machine.BootFailure):
        machine.parse_config("grub" if text == "boot\n" else "pxelinux", text)


def test_settings_are_checked_up_front():
    with pytest.raises(ValueError, match="loader"):
        boot_handler.make_boot_handler(("127.0.0.1", 69), loader="uboot")
    with pytest.raises(ValueError, match="http_base"):
        boot_handler.make_boot_handler(("127.0.0.1", 69), loader="ipxe")
    handler = boot_handler.make_boot_handler(("127.0.0.1", 69))
    with pytest.raises(ValueError, match="unknown failure"):
        handler.inject(BIOS, explodes=True)
