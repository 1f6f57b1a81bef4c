"""`upgrade plan/start --parallel N|auto --max-failures --group-tag-prefix` against the simulator (docs/waves.md)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from labs import MEDIA, POOL

from provisioner.cli import main


@pytest.fixture
def lab_hosts():
    return 5


def cli_for(lab):
    env = {"PROVISIONER_CONFIG": "", **{f"PROVISIONER_{k.upper()}": str(v) for k, v in lab.config.as_dict().items()
                                        if v is not None and k in ("data_dir", "bind_address", "http_port",
                                                                   "tftp_port", "tftp_root", "public_url",
                                                                   "pxelinux_http", "upgrade_poll_ms")}}
    runner = CliRunner()
    return lambda *args: runner.invoke(main, list(args), env=env, catch_exceptions=False)


def test_plan_shows_the_waves_and_start_runs_them(lab):
    cli = cli_for(lab)
    pool = lab.world.pools[POOL]
    for i, tag in ((1, "rack:A"), (2, "rack:A"), (3, "rack:B"), (4, "rack:C")):
        pool.db.update("host", pool.hosts[i].ref, tags=[tag, "owner:ops"])
    planned = json.loads(cli("upgrade", "plan", POOL, "--media", MEDIA, "--parallel", "auto",
                             "--group-tag-prefix", "rack:", "--json").output)
    assert [w["hosts"] for w in planned["waves"]["waves"]] == [
        ["lab-host0"], ["lab-host1", "lab-host3", "lab-host4"], ["lab-host2"]]
    assert "kept for a later wave: lab-host2 (shares rack:A)" in planned["waves"]["waves"][1]["why"]
    text = cli("upgrade", "plan", POOL, "--media", MEDIA, "--parallel", "2", "--max-failures", "25%")
    assert text.exit_code == 0, text.output
    assert "Waves:\n  wave 0: lab-host0 (the master always goes alone, first)\n  wave 1: lab-host1, lab-host2 " \
        "(2 hosts: the --parallel 2 cap)" in text.output
    assert "--max-failures: no new wave once 1 member(s) failed" in text.output
    bad = cli("upgrade", "plan", POOL, "--media", MEDIA, "--parallel", "many")
    assert bad.exit_code != 0 and "--parallel takes a number of hosts (1 or more) or 'auto'" in bad.output
    started = cli("upgrade", "start", POOL, "--media", MEDIA, "--parallel", "auto", "--group-tag-prefix", "rack:")
    assert started.exit_code == 0, started.output
    runs = json.loads(cli("upgrade", "status", POOL, "--json").output)
    assert runs[0]["state"] == "done" and [h["wave"] for h in runs[0]["hosts"]] == [0, 1, 2, 1, 1]
    status = cli("upgrade", "status", POOL).output
    assert status.splitlines()[1].split()[:2] == ["WAVE", "HOST"]
    for i in range(5):
        assert lab.handler.machine(lab.mac(i)).installs() == 1
