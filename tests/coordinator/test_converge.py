"""CONVERGE (coordinator/converge.py) and the reinstall's converge-before-join (reinstall_converge.py) through the
real xenapi package against the simulator's update side, the real boot service and simulated PXE machines.

Bundles are real-format .xsbundle files (tests/support/bundles.py) signed with a test key that the simulated ISOs
trust (world.update_conf) and that `updates add` checks them with (config updates_keyring)."""

from __future__ import annotations

import json

import bundles
import pytest
from helpers import FAST, Crash, register_hosts
from labs import MEDIA, PASSWORD, POOL, Lab, _serve, host_info, shut_down, stop_lab
from sim_tls import trust

from provisioner import cryptpw, media, output, states, updates
from provisioner.coordinator import journal, pools, reinstall, runner
from provisioner.coordinator.context import ReinstallTimeouts
from provisioner.coordinator.plan import make_plan
from provisioner.coordinator.reinstall_plan import make_reinstall_plan
from provisioner.coordinator.report import run_report
from provisioner.demo import TARGET_BUILD, TARGET_VERSION, demo_config, synthetic_media_tree
from provisioner.runtime import Runtime
from provisioner.simulator.builder import build_pool, new_world
from provisioner.simulator.clock import Clock
from provisioner.simulator.updates import UpdateConf
from provisioner.store import NotFoundError, Store
from provisioner.xapi import XenApiDriver

UPDATES = "xs84u"


@pytest.fixture(scope="module")
def key(tmp_path_factory):
    return bundles.signing_key(tmp_path_factory.mktemp("keys"))


def make_update_lab(tmp_path, key, *, version: str = "8.2.1", pool_updates=None, hosts: int = 3) -> Lab:
    """labs.make_lab, with the ISOs trusting the test key, the pool at `version` with `pool_updates` applied, and
    the bundle of bundles.DEFAULT_UPDATES (RestartToolstack, then RebootHost) imported as UPDATES."""
    config = demo_config(tmp_path).replace(updates_keyring=key.armored)
    store = Store(config.db_path)
    media.import_media(store, config, MEDIA, synthetic_media_tree(tmp_path / "tree"))
    runtime = Runtime(config, store).start()
    world = new_world(Clock(600.0))
    world.update_conf = UpdateConf(gpg_key=key.armored.read_bytes())
    # a pool at the media's version is at its build too (what our upgrade left, as in test_reinstall)
    at = {"product_version": version, "build_number": TARGET_BUILD} if version == TARGET_VERSION else version
    build_pool(world, POOL, hosts=hosts, version=at, vms_per_host=1, updates=pool_updates)
    handler, sim = _serve(world, runtime)
    pools.add_pool(store, POOL, sim.master_url(), "root", PASSWORD, **trust(sim))
    driver = pools.connect(store, POOL, timeout=5)
    register_hosts(store, POOL, driver)
    bundle = bundles.build_bundle(tmp_path / "xs84u.xsbundle", key=key)
    updates.add(store, config, UPDATES, str(bundle.path))
    return Lab(config, store, runtime, world, sim, handler, driver)


def pool_at_level(lab, bundle) -> str:
    """What an operator did to take the updates: the pool's bundle repository enabled and synced, every host
    applied to its hash (`xe host-apply-updates`; the builder put the updates on them already, so nothing is
    pending); the pool's update level (the master's last_update_hash)."""
    ref = lab.driver.introduce_bundle_repository("pool-bundle", "the pool's updates")
    lab.driver.set_pool_repositories([ref])
    lab.driver.upload_bundle(str(bundle.path))
    hash_ = next(r.hash for r in lab.driver.repositories() if r.ref == ref)
    for h in lab.driver.hosts():
        lab.driver.apply_updates(h.ref, hash_)
        lab.driver.enable(h.ref)
    return hash_


@pytest.fixture
def ulab(tmp_path, key):
    lab = make_update_lab(tmp_path, key)
    yield lab
    stop_lab(lab)


def start(lab, **kw):
    return runner.start_run(lab.store, POOL, MEDIA, lab.driver, updates=kw.pop("updates", UPDATES), **kw)


def why(lab, final) -> str:
    return f"{final.reason}: {[(h.name, h.reason) for h in lab.store.run_hosts(final.id) if h.reason]}"


def drive(lab, run_id, driver=None, **kw):
    return runner.Runner(lab.store, lab.config, run_id, driver or lab.driver, clock=lab.world.clock,
                         timeouts=FAST, **kw).run()


def levels(lab) -> dict[str, tuple[str, tuple[str, ...]]]:
    return {h.name: (lab.driver.update_level(h.ref).last_update_hash, lab.driver.update_level(h.ref).pending)
            for h in lab.driver.hosts()}


def running_vms(lab) -> int:
    return sum(1 for v in lab.driver.vms() if v.power_state == "Running")


def test_rolling_upgrade_with_updates_ends_with_every_host_at_one_level(ulab):
    """Acceptance: 8.2 -> 8.4 with --updates: every host at one update level, guidances done, VMs back."""
    lab = ulab
    vms_before = running_vms(lab)
    plan = make_plan(lab.store, POOL, MEDIA, lab.driver, updates=UPDATES)
    assert plan.ok, plan.problems
    assert [h["to_apply"] for h in plan.updates["hosts"]] == [["XS8E001", "XS8E002"]] * 3
    run = start(lab)
    final = drive(lab, run.id)
    assert final.state == states.RUN_DONE, why(lab, final)
    found = levels(lab)
    hashes = {h for h, _ in found.values()}
    assert len(hashes) == 1 and "" not in hashes, found  # one level, not the ISO base
    assert all(pending == () for _, pending in found.values()), found  # RestartToolstack and RebootHost done
    assert all(h.enabled and h.live and h.product_version == "8.4.0" for h in lab.driver.hosts())
    assert running_vms(lab) == vms_before
    for i in range(3):
        assert lab.reboots(i) == 2  # the upgrade, then ONE reboot for the RebootHost guidance
    steps = [e["details"]["to"] for e in lab.store.events(run_id=run.id, mac=lab.mac(1))
             if e["kind"].startswith("step.") and "to" in e["details"]]
    assert steps[steps.index("verify"):steps.index("verify") + 3] == ["verify", "converge", "storage"]
    report = run_report(lab.store, run.id)
    assert report["levels"]["left_behind"] == [] and report["options"]["updates"] == UPDATES
    assert {h["name"]: h["last_update_hash"] for h in report["levels"]["hosts"]} == {n: h for n, (h, _) in
                                                                                    found.items()}
    assert {h["product_version"] for h in report["levels"]["hosts"]} == {"8.4.0"}
    text = output.run_report(report)  # `upgrade status`
    assert "hosts at the end:" in text and "LEFT BEHIND" not in text and text.count(next(iter(hashes))[:12]) == 3
    uploads = [c for c in lab.world.call_log if c[1] in ("Repository.introduce_bundle", "pool.set_repositories")]
    assert len(uploads) == 2  # the pool pointed at the repository once per run, not once per host


class CrashAfterGuidanceReboot(XenApiDriver):
    """Stands for kill -9 right after XAPI accepted the guidance reboot of one host (its second host.reboot)."""

    target: str = ""
    seen: int = 0

    def reboot(self, host_ref: str) -> None:
        super().reboot(host_ref)
        if host_ref == self.target:
            self.seen += 1
            if self.seen == 2:
                raise Crash("after host.reboot for the guidance")


def test_kill_at_converge_after_the_guidance_reboot_never_reboots_again(ulab):
    lab = ulab
    run = start(lab)
    pool = pools.get_pool(lab.store, POOL)
    crashing = CrashAfterGuidanceReboot(pool.url, "root", PASSWORD, timeout=5, trust=pools.trust_of(pool))
    crashing.target = host_info(lab, lab.mac(1)).ref
    with pytest.raises(Crash):
        drive(lab, run.id, driver=crashing)
    crashing.close()
    assert lab.store.get_run_host(run.id, lab.mac(1)).step == states.STEP_CONVERGE
    assert lab.reboots(1) == 2
    final = drive(lab, run.id)  # a new Runner on the same store: resume
    assert final.state == states.RUN_DONE, why(lab, final)
    boots = [lab.world.pools[POOL].hosts[i].boot_count for i in range(3)]
    assert boots[1] == boots[0] == boots[2], boots  # host 1 did not boot once more than the others
    assert lab.reboots(1) == 2  # the resume sent no second guidance reboot
    # Not asserted: a step.skipped event. The resume records one when it recognises the reboot already sent
    # (journaled boot_time + accepted call); when the host is already back with its guidance cleared as it looks
    # (a loaded machine runs the simulated clock on between the crash and the resume) nothing is left to skip.
    assert len({h for h, _ in levels(lab).values()}) == 1


def test_kill_at_the_converge_commit_resumes_it(ulab):
    lab = ulab
    run = start(lab)
    crashed = []

    def on_commit(rh):
        if not crashed and rh.mac == lab.mac(2) and rh.step == states.STEP_CONVERGE:
            crashed.append(rh.step)
            raise Crash(rh.step)
    with pytest.raises(Crash):
        drive(lab, run.id, on_commit=on_commit)
    final = drive(lab, run.id)
    assert final.state == states.RUN_DONE, why(lab, final)
    assert [lab.reboots(i) for i in range(3)] == [2, 2, 2]
    assert all(pending == () for _, pending in levels(lab).values())


def test_a_run_without_updates_has_no_converge_step_and_reports_the_levels(ulab):
    lab = ulab
    run = runner.start_run(lab.store, POOL, MEDIA, lab.driver)
    final = drive(lab, run.id)
    assert final.state == states.RUN_DONE, why(lab, final)
    assert not [e for e in lab.store.events(run_id=run.id) if e["kind"] == "step.converge"]
    assert [c for c in lab.world.call_log if c[1].startswith(("Repository.", "host.apply_updates"))] == []
    assert [lab.reboots(i) for i in range(3)] == [1, 1, 1]
    report = run_report(lab.store, run.id)
    assert journal.options(lab.store, run.id)["updates"] is None
    assert {h["last_update_hash"] for h in report["levels"]["hosts"]} == {""}  # the ISO base everywhere
    assert report["levels"]["left_behind"] == []


def test_plan_refuses_an_unknown_or_wrong_product_repository(ulab, key, tmp_path):
    lab = ulab
    plan = make_plan(lab.store, POOL, MEDIA, lab.driver, updates="nope")
    assert not plan.ok and any(c.code == "UPDATES_UNKNOWN" for c in plan.checks)
    with pytest.raises(NotFoundError, match="no update repository named 'nope'"):
        start(lab, updates="nope")
    other = bundles.build_bundle(tmp_path / "xs9.xsbundle", key=key, product_version="9.0.0")
    updates.add(lab.store, lab.config, "xs9u", str(other.path), product_version="9.0.0")
    plan = make_plan(lab.store, POOL, MEDIA, lab.driver, updates="xs9u")
    wrong = [c for c in plan.checks if c.code == "UPDATES_WRONG_PRODUCT"]
    assert wrong and "9.0.0" in wrong[0].message and not plan.ok
    assert plan.as_dict()["updates"]["name"] == "xs9u"


# --- reinstall-and-join converges before it joins ---

FLOW_FAST = ReinstallTimeouts(install=4 * 3600, xapi=1800, joined=1800, poll=5)


def test_reinstalled_member_of_an_updated_84_pool_converges_and_joins(tmp_path, key):
    """Acceptance: a pool on 8.4 with updates applied; the lab reinstall of a member converges, then joins."""
    bundle = bundles.build_bundle(tmp_path / "pool.xsbundle", key=key)
    lab = make_update_lab(tmp_path, key, version="8.4.0", pool_updates=bundle.path)
    try:
        mac = lab.mac(1)
        want = pool_at_level(lab, bundle)
        assert want and all(lab.driver.update_level(h.ref).last_update_hash == want for h in lab.driver.hosts())
        shut_down(lab, mac)
        found = reinstall.start(lab.store, mac, POOL, MEDIA, confirm=lab.store.get_host(mac).name, forget=True,
                                root_password_hash=cryptpw.hash_password(PASSWORD),
                                connect=lambda name: pools.connect(lab.store, name, timeout=5),
                                host_url=lab.sim.url(mac))
        lines: list[str] = []
        done = reinstall.Flow(lab.store, lab.config, found.id, clock=lab.world.clock, timeouts=FLOW_FAST,
                              connect=lambda name: pools.connect(lab.store, name, timeout=5), say=lines.append,
                              power_on=lambda: lab.world.power_on(mac)).run()
        assert done.step == states.RI_DONE, (done.reason, lines)
        new = host_info(lab, mac)
        assert new.uuid == done.new_uuid and new.live and new.enabled and len(lab.driver.hosts()) == 3
        assert lab.driver.update_level(new.ref).last_update_hash == want
        assert lab.driver.update_level(new.ref).pending == ()
        steps = [e["details"]["to"] for e in lab.store.events(mac=mac) if e["kind"].startswith("reinstall.")
                 and "to" in e["details"]]
        assert steps[-4:] == ["converge", "join", "wait_joined", "done"]
        assert any("introduce_remote_pool" in line for line in lines)
        introduced = [c for c in lab.world.call_log if c[1] == "Repository.introduce_remote_pool"]
        assert len(introduced) == 1
    finally:
        stop_lab(lab)


def test_the_pre_wipe_join_check_says_it_will_converge(tmp_path, key):
    bundle = bundles.build_bundle(tmp_path / "pool.xsbundle", key=key)
    lab = make_update_lab(tmp_path, key, version="8.4.0", pool_updates=bundle.path)
    try:
        mac = lab.mac(1)
        pool_at_level(lab, bundle)
        shut_down(lab, mac)
        plan = make_reinstall_plan(lab.store, mac, POOL, MEDIA, confirm=lab.store.get_host(mac).name, forget=True,
                                   root_password_hash=cryptpw.hash_password(PASSWORD),
                                   connect=lambda name: pools.connect(lab.store, name, timeout=5),
                                   host_url=lab.sim.url(mac))
        assert plan.ok, plan.problems
        assert any("will converge before pool.join" in note for note in plan.notes), plan.notes
    finally:
        stop_lab(lab)



def test_cli_plan_lists_the_updates_per_host_and_refuses_an_unknown_name(ulab):
    """`upgrade plan POOL --media M --updates NAME` (text and --json) through the CLI, on the lab's store."""
    from click.testing import CliRunner

    from provisioner.cli import main
    lab = ulab
    env = {"PROVISIONER_CONFIG": "", **{f"PROVISIONER_{k.upper()}": str(v) for k, v in lab.config.as_dict().items()
                                        if v is not None and k in ("data_dir", "bind_address", "http_port",
                                                                   "tftp_port", "tftp_root", "public_url")}}

    def cli(*args):
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    text = cli("upgrade", "plan", POOL, "--media", MEDIA, "--updates", UPDATES)
    assert text.exit_code == 0, text.output
    assert f"updates {UPDATES} (bundle, 8.4.0): 2 update(s)" in text.output
    assert text.output.count("XS8E001, XS8E002") == 3
    data = json.loads(cli("upgrade", "plan", POOL, "--media", MEDIA, "--updates", UPDATES, "--json").output)
    assert data["updates"]["name"] == UPDATES and len(data["updates"]["hosts"]) == 3
    unknown = cli("upgrade", "plan", POOL, "--media", MEDIA, "--updates", "nope")
    assert unknown.exit_code == 1 and "UPDATES_UNKNOWN" in unknown.output


def test_finalize_converges_a_host_skipped_at_check_with_its_vms_back(ulab):
    """The master already at the target version is skipped at CHECK; FINALIZE disables and evacuates it, brings it
    to the run's level (its RebootHost guidance too: a master reboot), enables it and migrates its VMs back."""
    from provisioner.simulator import states as sim_states
    lab = ulab
    pool = lab.world.pools[POOL]
    skipped = pool.hosts[0]
    sv = sim_states.software_version({"product_version": TARGET_VERSION, "build_number": TARGET_BUILD},
                                     skipped.name)[0]
    pool.db.update("host", skipped.ref, software_version=sv)
    vms_on_it = {v.uuid for v in lab.driver.vms() if v.resident_on == skipped.ref}
    assert vms_on_it
    run = start(lab)
    assert [rh.name for rh in lab.store.run_hosts(run.id)] == [pool.hosts[1].name, pool.hosts[2].name]
    final = drive(lab, run.id)
    assert final.state == states.RUN_DONE, why(lab, final)
    found = levels(lab)
    assert len({h for h, _ in found.values()}) == 1 and all(p == () for _, p in found.values()), found
    assert lab.reboots(0) == 1  # no upgrade: the one reboot its RebootHost guidance asked for
    # its own VMs migrated back (members' VMs the upgrades moved onto it may be there too)
    assert vms_on_it <= {v.uuid for v in lab.driver.vms() if v.resident_on == skipped.ref}
    assert all(h.enabled for h in lab.driver.hosts())
    assert run_report(lab.store, run.id)["levels"]["left_behind"] == []


def test_reinstall_killed_after_the_new_hosts_guidance_reboot_resumes_without_another(tmp_path, key):
    """kill -9 right after the new standalone host accepted its guidance reboot: the flow run again (resume at
    CONVERGE) waits for that reboot instead of sending another, then joins."""
    bundle = bundles.build_bundle(tmp_path / "pool.xsbundle", key=key)
    lab = make_update_lab(tmp_path, key, version="8.4.0", pool_updates=bundle.path)

    class CrashAfterReboot(XenApiDriver):
        def reboot(self, host_ref: str) -> None:
            super().reboot(host_ref)
            raise Crash("after the new host's host.reboot")
    try:
        mac = lab.mac(1)
        want = pool_at_level(lab, bundle)
        shut_down(lab, mac)
        found = reinstall.start(lab.store, mac, POOL, MEDIA, confirm=lab.store.get_host(mac).name, forget=True,
                                root_password_hash=cryptpw.hash_password(PASSWORD),
                                connect=lambda name: pools.connect(lab.store, name, timeout=5),
                                host_url=lab.sim.url(mac))

        def flow(**kw):
            return reinstall.Flow(lab.store, lab.config, found.id, clock=lab.world.clock, timeouts=FLOW_FAST,
                                  connect=lambda name: pools.connect(lab.store, name, timeout=5),
                                  power_on=lambda: lab.world.power_on(mac), **kw)
        with pytest.raises(Crash):
            flow(connect_host=lambda url, user, pw, trust: CrashAfterReboot(url, user, pw, timeout=30,
                                                                            trust=trust)).run()
        assert lab.store.get_reinstall(found.id).step == states.RI_CONVERGE
        reboots = [c for c in lab.world.call_log if c[1] == "host.reboot"]
        assert len(reboots) == 1
        done = flow().run()
        assert done.step == states.RI_DONE, done.reason
        assert [c for c in lab.world.call_log if c[1] == "host.reboot"] == reboots  # not sent again
        new = host_info(lab, mac)
        assert lab.driver.update_level(new.ref).last_update_hash == want and len(lab.driver.hosts()) == 3
    finally:
        stop_lab(lab)


def test_a_pool_already_at_the_target_is_converged_by_a_run_with_updates(tmp_path, key):
    """Every host at 8.4 (nothing to upgrade) but not at the update level: --updates is not NOTHING_TO_DO; the run
    has no host steps and FINALIZE brings every host to the level, VMs back."""
    lab = make_update_lab(tmp_path, key, version="8.4.0")
    try:
        assert not make_plan(lab.store, POOL, MEDIA, lab.driver).ok  # NOTHING_TO_DO without --updates
        plan = make_plan(lab.store, POOL, MEDIA, lab.driver, updates=UPDATES)
        assert plan.ok, plan.problems
        assert any("FINALIZE brings" in c for c in plan.changes) and not plan.to_upgrade
        vms_before = running_vms(lab)
        final = drive(lab, start(lab).id)
        assert final.state == states.RUN_DONE, why(lab, final)
        found = levels(lab)
        assert len({h for h, _ in found.values()}) == 1 and "" not in {h for h, _ in found.values()}, found
        assert all(p == () for _, p in found.values()) and running_vms(lab) == vms_before
        assert [lab.reboots(i) for i in range(3)] == [1, 1, 1]  # the RebootHost guidance only
    finally:
        stop_lab(lab)
