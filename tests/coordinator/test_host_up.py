"""The host-up timeout (installing.py): once its installer reported, a host has timeouts.host_up to be back;
`upgrade start --host-up-timeout` / REST host_up_timeout / start_run(host_up_timeout=) set it per run, kept with
the run (journal OPTIONS) so a resume keeps it; the configuration's host_up_timeout_s is the default (1200 s)."""

from __future__ import annotations

import pytest
from helpers import FAST
from labs import MEDIA, POOL

from provisioner import states
from provisioner.coordinator import installing, journal, runner, wiring
from provisioner.coordinator.report import run_report


def test_the_default_is_xen_orchestras_20_minutes(lab):
    assert lab.config.host_up_timeout_s == 1200 and wiring.run_timeouts(lab.config).host_up == 1200.0


def test_a_member_not_back_after_its_installer_reported_fails_after_the_runs_host_up_timeout(lab):
    lab.handler.inject(lab.mac(1), installer_breaks=True)  # reports 1 after its backup, then boots nothing
    started = runner.start_run(lab.store, POOL, MEDIA, lab.driver, host_up_timeout=300)
    assert journal.host_up_timeout(lab.store, started.id) == 300.0
    lines = []
    made = runner.Runner(lab.store, lab.config, started.id, lab.driver, clock=lab.world.clock, timeouts=FAST,
                         say=lines.append)
    assert made.ctx.timeouts.host_up == 300.0  # the run's own, over FAST's default
    final = made.run()
    hosts = {h["name"]: h for h in run_report(lab.store, started.id)["hosts"]}
    failed = hosts[f"{POOL}-host1"]
    assert failed["step"] == states.STEP_FAILED
    assert "not back 5 min after its installer reported failed (host-up timeout" in failed["reason"]
    master, event = lab.store.events(run_id=started.id, kind=installing.HOST_UP_WAIT)
    assert master["mac"] == lab.mac(0) and master["details"]["outcome"] == states.SUCCEEDED
    assert event["mac"] == lab.mac(1) and event["details"]["outcome"] == states.FAILED
    assert event["details"]["minutes"] == 5
    assert any("its installer reported failed: waiting up to 5 min for it to come back" in line for line in lines)
    assert final.state == states.RUN_ABORTED  # a failed member that is down stops the run
    # a resume (a new Runner on the same run) keeps the run's own timeout
    again = runner.Runner(lab.store, lab.config, started.id, lab.driver, clock=lab.world.clock)
    assert again.ctx.timeouts.host_up == 300.0


def test_start_run_refuses_a_host_up_timeout_out_of_range(lab):
    with pytest.raises(ValueError, match="host_up_timeout"):
        runner.start_run(lab.store, POOL, MEDIA, lab.driver, host_up_timeout=5)


def test_the_members_bound_comes_from_the_configuration_too(lab):
    assert lab.config.members_timeout_s == 600 and wiring.run_timeouts(lab.config).members == 600.0
