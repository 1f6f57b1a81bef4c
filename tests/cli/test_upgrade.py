"""`provisioner pools ...` and `provisioner upgrade ...` against the simulator."""

import json

from click.testing import CliRunner

from provisioner.cli import main


def test_pools_and_rolling_upgrade_commands(tmp_path):
    """pools add/discover, upgrade plan/start/status against the simulator, with the real boot service."""
    from provisioner.demo import demo_config, synthetic_media_tree
    from provisioner.runtime import Runtime
    from provisioner.simulator.builder import start_simulator
    from provisioner.simulator.boot_handler import make_boot_handler

    config = demo_config(tmp_path)
    env = {"PROVISIONER_CONFIG": "", **{f"PROVISIONER_{k.upper()}": str(v) for k, v in config.as_dict().items()
                                        if v is not None and k in ("data_dir", "bind_address", "http_port",
                                                                   "tftp_port", "tftp_root", "public_url",
                                                                   "pxelinux_http")}}
    runner = CliRunner()

    def cli(*args):
        return runner.invoke(main, list(args), env=env, catch_exceptions=False)

    runtime = Runtime(config).start()
    sim = start_simulator(2, speed=600.0, boot_handler=make_boot_handler(  # a PXE-first site
        runtime.tftp.address, http_base=runtime.http.url, boot_order="bios-network-first"))
    try:
        secret = tmp_path / "pw"
        secret.write_text("s3cret-pool-password\n")
        assert cli("pools", "add", "lab", "--url", sim.master_url(), "--password-file", str(secret),
                   "--fingerprint", sim.master_fingerprint()).exit_code == 0
        r = cli("pools", "add", "lab2", "--url", sim.master_url())
        assert r.exit_code == 2 and "PROVISIONER_POOL_PASSWORD" in r.output
        found = json.loads(cli("pools", "discover", "lab", "--json").output)
        assert len(found["added"]) == 2
        assert cli("media", "add", "xs84", str(synthetic_media_tree(tmp_path / "tree"))).exit_code == 0
        blocked = cli("upgrade", "plan", "lab", "--media", "xs84")
        assert blocked.exit_code == 1 and "BLOCKED" in blocked.output  # no boot disks known yet
        for i, host in enumerate(json.loads(cli("hosts", "list", "--pool", "lab", "--json").output)):
            cli("hosts", "update", host["mac"], "--disk", f"/dev/disk/by-id/scsi-{i}")
        planned = json.loads(cli("upgrade", "plan", "lab", "--media", "xs84", "--json").output)
        assert planned["ok"] and [h["role"] for h in planned["hosts"]] == ["master", "member"]
        cycled = cli("upgrade", "plan", "lab", "--media", "xs84", "--power-cycle", "--migrate-back")
        assert cycled.exit_code == 0 and "members are shut down and powered on through the pool" in cycled.output
        assert "and back after each upgrade" in cycled.output
        assert cli("upgrade", "start", "lab", "--media", "xs84", "--host-up-timeout", "30").exit_code == 2
        started = cli("upgrade", "start", "lab", "--media", "xs84", "--host-up-timeout", "900")
        assert started.exit_code == 0, started.output
        runs = json.loads(cli("upgrade", "status", "lab", "--json").output)
        assert runs[0]["state"] == "done" and [h["step"] for h in runs[0]["hosts"]] == ["done", "done"]
        from provisioner.coordinator import journal
        from provisioner.store import Store
        store = Store(config.db_path)
        try:  # kept with the run: a resume gets it (coordinator/runner.py)
            assert journal.host_up_timeout(store, runs[0]["id"]) == 900.0
        finally:
            store.close()
        assert "s3cret" not in started.output + json.dumps(runs)
    finally:
        sim.stop()
        runtime.stop()


def _cli(config):
    env = {"PROVISIONER_CONFIG": "", **{f"PROVISIONER_{k.upper()}": str(v) for k, v in config.as_dict().items()
                                        if k in ("data_dir", "bind_address", "http_port", "tftp_port", "tftp_root",
                                                 "public_url", "pxelinux_http")},
           "PROVISIONER_UPGRADE_POLL_MS": "50"}
    runner = CliRunner()
    return lambda *args: runner.invoke(main, list(args), env=env, catch_exceptions=False)


def test_start_follow_json_lines_then_eta_from_the_first_run(tmp_path):
    from labs import make_world, stop_world

    lab = make_world(tmp_path)
    cli = _cli(lab.config)
    try:
        first = cli("upgrade", "start", "red", "--media", "xs84", "--follow", "--json", "--interval", "0.1")
        assert first.exit_code == 0, first.output
        lines = [json.loads(line) for line in first.output.splitlines()]
        assert lines[-1]["state"] == "done" and lines[-1]["eta_seconds"] == 0.0
        assert {h["step"] for line in lines for h in line["hosts"]} >= {"pending", "wait_up", "done"}
        assert all({"elapsed_seconds", "eta_seconds", "step_seconds"} <= set(h) for h in lines[-1]["hosts"])
        assert lines[-1]["samples"] == 3  # the three hosts this run upgraded
        second = cli("upgrade", "start", "blue", "--media", "xs84", "--follow", "--interval", "0.1")
        assert second.exit_code == 0, second.output
        assert "ETA " in second.output and "upgrade(s) with this media" in second.output
        assert second.output.rstrip().splitlines()[0].startswith("run ") and "blue-host2" in second.output
        views = json.loads(cli("upgrade", "status", "--json").output)
        assert [v["pool"] for v in views] == ["blue", "red"] and {v["eta_seconds"] for v in views} == {0.0}
        latest = cli("upgrade", "status", "red", "--follow", "--json")  # nothing in progress: the latest run
        assert [json.loads(line)["id"] for line in latest.output.splitlines()] == [lines[-1]["id"]]
    finally:
        stop_world(lab)


def test_status_follows_a_run_the_server_drives_and_start_is_refused(tmp_path):
    from labs import WAIT, make_world, stop_world

    lab = make_world(tmp_path, names=("red",))
    cli = _cli(lab.config)
    try:
        run = lab.runtime.flows.start("red", "xs84")  # what POST /api/v1/pools/red/upgrade does in `serve`
        refused = cli("upgrade", "start", "red", "--media", "xs84")
        assert refused.exit_code == 1 and "being upgraded by another process" in refused.output
        followed = cli("upgrade", "status", "red", "--follow", "--json", "--interval", "0.1")
        assert followed.exit_code == 0
        lines = [json.loads(line) for line in followed.output.splitlines()]
        assert {line["id"] for line in lines} == {run.id} and lines[-1]["state"] == "done"
        assert len(lines) > 3  # one line per change of step
        assert lab.runtime.flows.wait(run.id, WAIT).state == "done"
        text = cli("upgrade", "status")
        assert "red-host0" in text.output and "done" in text.output
    finally:
        stop_world(lab)


def test_status_follow_stops_on_a_run_nobody_drives_and_says_how_to_continue(run, tmp_path):
    from provisioner.store import Store

    Store(tmp_path / "data" / "provisioner.db").create_run(
        "red-1", "red", "xs84", stop_on_failure=False,
        hosts=[{"mac": "aa:bb:cc:dd:ee:01", "name": "red-host0", "uuid": "u0", "role": "master"}])
    followed = run("upgrade", "status", "red", "--follow", "--interval", "0.1")
    assert followed.exit_code == 1
    assert "red-host0" in followed.output  # it showed the run once
    assert "no process drives it" in followed.output and "provisioner upgrade resume red" in followed.output


def test_follow_shows_the_final_state_of_a_run_that_ends_while_it_looks(tmp_path, capsys):
    """The race CI caught: the driver commits DONE and releases the pool between two looks; the last line
    printed must be the final state, not the one before it."""
    from provisioner.cli.upgrade import _follow
    from provisioner.store import Store

    store = Store(tmp_path / "provisioner.db")
    store.create_run("red-1", "red", "xs84", stop_on_failure=False,
                     hosts=[{"mac": "aa:bb:cc:dd:ee:01", "name": "red-host0", "uuid": "u0", "role": "master"}])
    looks = []

    def alive() -> bool:  # the first look: still driven; the second: it ended just now and nobody holds it
        looks.append(1)
        if len(looks) == 2:
            store.set_run_state("red-1", "aborted", reason="abort requested")
            return False
        return True

    views = _follow(store, ["red-1"], True, 0.01, alive=alive)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [v["state"] for v in views] == ["aborted"]
    assert [line["state"] for line in lines] == ["precheck", "aborted"]


def test_mark_failed_journals_the_operators_decision_for_a_host_the_run_waits_on(run, tmp_path):
    """`upgrade mark-failed POOL HOST` (name or MAC): journaled for the waiting step to act on; refused for a host
    the run is not waiting on, an unknown host, or a pool with no run in progress."""
    from provisioner import states
    from provisioner.coordinator import journal
    from provisioner.store import Store

    assert run("upgrade", "mark-failed", "red", "red-host1").exit_code == 1  # no store yet: no run either
    store = Store(tmp_path / "data" / "provisioner.db")
    store.create_run("red-1", "red", "xs84", stop_on_failure=False, hosts=[
        {"mac": "aa:bb:cc:dd:ee:01", "name": "red-host0", "uuid": "u0", "role": "master"},
        {"mac": "aa:bb:cc:dd:ee:02", "name": "red-host1", "uuid": "u1", "role": "member"}])
    pending = run("upgrade", "mark-failed", "red", "red-host1")
    assert pending.exit_code == 1 and "at step pending" in pending.output
    unknown = run("upgrade", "mark-failed", "red", "red-host9")
    assert unknown.exit_code == 1 and "no host named 'red-host9'" in unknown.output
    for step in states.HOST_STEPS[1:states.HOST_STEPS.index(states.STEP_WAIT_UP) + 1]:
        if step != states.STEP_POWER_ON:  # (--power-cycle only)
            store.set_host_step("red-1", "aa:bb:cc:dd:ee:02", step)
    by_name = run("upgrade", "mark-failed", "red", "red-host1")
    assert by_name.exit_code == 0 and "red-host1 (aa:bb:cc:dd:ee:02) marked failed" in by_name.output
    assert run("upgrade", "mark-failed", "red", "AA-BB-CC-DD-EE-02").exit_code == 0  # a MAC, any spelling
    decisions = journal.read(store, "red-1", journal.MARKED_FAILED)
    assert [(d["mac"], d["host"], d["step"]) for d in decisions] == [("aa:bb:cc:dd:ee:02", "red-host1", "wait_up")] * 2
    assert run("upgrade", "mark-failed", "blue", "red-host1").exit_code == 1


def test_restore_settings_refused_during_a_run_then_restores_once(tmp_path):
    """`upgrade restore-settings POOL`: what an aborted run left off (HA, WLB, auto_poweron) is shown first by
    `upgrade plan`, refused while a run is active, restored once; a second call does nothing."""
    from helpers import FAST
    from labs import MEDIA, POOL, make_lab, stop_lab

    from provisioner.coordinator import runner as coord_runner

    lab = make_lab(tmp_path)
    cli = _cli(lab.config)
    pool = lab.world.pools[POOL]
    db = pool.db
    try:
        lab.driver.enable_ha([db.get("pool", pool.ref)["default_SR"]], 1)
        db.update("pool", pool.ref, wlb_enabled=True)
        vm = next(r for r in db.find("VM", resident_on=pool.hosts[1].ref) if not db.get("VM", r)["is_control_domain"])
        db.update("VM", vm, other_config={"auto_poweron": "true"})

        def drive(run_id, abort_at=None):
            def on_commit(rh):
                if rh.step == abort_at:
                    lab.store.request_abort(run_id)
            return coord_runner.Runner(lab.store, lab.config, run_id, lab.driver, clock=lab.world.clock,
                                       timeouts=FAST, on_commit=on_commit).run().state
        first = coord_runner.start_run(lab.store, POOL, MEDIA, lab.driver, disable_ha_wlb=True)
        assert drive(first.id, abort_at="check") == "aborted"  # in MASTER, before any reboot: all left off
        planned = cli("upgrade", "plan", POOL, "--media", MEDIA)
        assert planned.output.splitlines()[1].startswith(f"left off by run {first.id}: HA (heartbeat SRs: ")
        assert f"VM {db.get('VM', vm)['name_label']} auto_poweron; the next run's FINALIZE" in planned.output
        active = coord_runner.start_run(lab.store, POOL, MEDIA, lab.driver)
        refused = cli("upgrade", "restore-settings", POOL)
        assert refused.exit_code == 1 and f"has run {active.id}" in refused.output
        lab.store.request_abort(active.id)
        assert drive(active.id) == "aborted"
        done = cli("upgrade", "restore-settings", POOL)
        assert done.exit_code == 0, done.output
        assert done.output.splitlines() == [f"restored: VM {db.get('VM', vm)['name_label']} auto_poweron",
                                            "restored: WLB", f"restored: HA (heartbeat SRs: "
                                            f"{db.get('pool', pool.ref)['default_SR']}, failures to tolerate 1)"]
        rec = db.get("pool", pool.ref)
        assert rec["ha_enabled"] and rec["wlb_enabled"] and db.get("VM", vm)["other_config"]["auto_poweron"] == "true"
        again = cli("upgrade", "restore-settings", POOL, "--json")
        assert again.exit_code == 0 and json.loads(again.output) == {
            "pool": POOL, "restored": [], "already_back": [], "not_restored": []}
        quiet = cli("upgrade", "restore-settings", POOL).output.strip()
        assert quiet == f"pool {POOL}: nothing left off by earlier runs"
    finally:
        stop_lab(lab)
