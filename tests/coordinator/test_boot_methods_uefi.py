"""UEFI hosts upgraded twice in a row (issue 18 acceptance; docs/firmware.md "A reboot does not reach the network"):
the simulated installer puts its boot entry first in BootOrder on every upgrade, as the real one does. Machines
that tried the network first before their first upgrade boot their disk after it:

- first run (8.2.1 -> 8.4.0) with network-first: the pool upgrades;
- second run (8.4.0 -> a newer synthetic media) with network-first: refused at the master, "did not network-boot",
  no member touched, nothing installed;
- the same second run through the BMCs (redfish, ipmi: a one-time network boot with the UEFI flag): the pool
  upgrades, each host installed exactly twice in all.
"""

from __future__ import annotations

import gc
import warnings

import pytest
from helpers import FAST
from labs import MEDIA, POOL, make_bmc_lab

from provisioner import media, states
from provisioner.coordinator import remedies, runner
from provisioner.coordinator.report import run_report
from provisioner.demo import synthetic_media_tree
from provisioner.power.confirm import ConfirmTimes

BMC_TIMES = ConfirmTimes(poll=5, resend=60, give_up=1800)
NEWER, NEWER_VERSION = "xs-next", "8.4.1"


@pytest.fixture
def lab(tmp_path):
    found = make_bmc_lab(tmp_path, boot_order="uefi-network-first")
    newer = synthetic_media_tree(tmp_path / "newer", version=NEWER_VERSION, build="next-1")
    # a newer platform too: the simulator ranks hosts by (platform_version, xapi) (simulator/states.py), and an
    # unknown product version on the same platform would get a derived xapi below 8.4.0's
    treeinfo = newer / ".treeinfo"
    treeinfo.write_text(treeinfo.read_text().replace("platform_version = 3.4.0", "platform_version = 3.5.0"))
    media.import_media(found.store, found.config, NEWER, newer)
    yield found
    found.driver.close()
    found.stop()
    with warnings.catch_warnings():  # pyghmi's failed-login sockets (tests/power/conftest.py)
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def _run(lab, media_name):
    started = runner.start_run(lab.store, POOL, media_name, lab.driver)
    final = runner.Runner(lab.store, lab.config, started.id, lab.driver, clock=lab.world.clock, timeouts=FAST,
                          bmc_times=BMC_TIMES).run()
    return final, run_report(lab.store, started.id)


def _installs(lab):
    return [lab.handler.machine(h.mac).installs() for h in lab.world.pools[POOL].hosts]


@pytest.mark.parametrize("method", ["redfish", "ipmi"])
def test_uefi_hosts_upgrade_twice_in_a_row_only_through_their_bmcs(lab, method):
    final, _ = _run(lab, MEDIA)
    assert final.state == states.RUN_DONE, final.reason
    assert _installs(lab) == [1, 1, 1]
    # the installer's entry is first now: the firmware boots the disk on a plain reboot
    for h in lab.world.pools[POOL].hosts:
        first = lab.handler.boot_state(h.mac).describe()["order"][0]
        assert "disk" in first, lab.handler.boot_state(h.mac).describe()

    final, report = _run(lab, NEWER)
    assert final.state == states.RUN_ABORTED, final.reason
    master, *members = report["hosts"]
    assert master["role"] == "master" and master["remedy_class"] == remedies.NOT_NETWORK_BOOTED, master["remedy"]
    assert all(m["step"] == states.STEP_PENDING for m in members)
    assert _installs(lab) == [1, 1, 1]

    lab.register_bmcs(method)
    final, report = _run(lab, NEWER)
    assert final.state == states.RUN_DONE, "\n".join(f'{h["name"]}: {h.get("remedy")}' for h in report["hosts"])
    assert _installs(lab) == [2, 2, 2]
    assert {h["step"] for h in report["hosts"]} == {states.STEP_DONE}
