"""progress: per-host elapsed and ETA from the install durations seen so far (pure functions, table-driven)."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from provisioner import progress, states

T0 = 1_700_000_000.0
STEPS = ("check", "disable", "evacuate", "arm", "reboot", "wait_down", "wait_up", "verify", "enable", "done")
_ids = itertools.count(1)


def ts(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat(timespec="milliseconds")


def commits(run_id: str, mac: str, start: float, steps=STEPS, every: float = 60.0) -> list[dict]:
    """Step events of one host, one commit every `every` seconds from `start`."""
    return [{"id": next(_ids), "ts": ts(start + i * every), "mac": mac, "run_id": run_id, "kind": f"step.{s}",
             "details": {}} for i, s in enumerate(steps)]


def report(run_id: str, state: str, steps: list[str]) -> dict:
    return {"id": run_id, "pool": "p", "media": "xs84", "state": state, "reason": None,
            "hosts": [{"mac": f"m{i}", "name": f"h{i}", "role": "master" if i == 0 else "member", "step": s,
                       "reason": None} for i, s in enumerate(steps)]}


def test_durations_count_only_real_upgrades():
    events = (commits("r", "m0", T0)                                       # 9 x 60 s: a real upgrade
              + commits("r", "m1", T0, steps=("check", "done"))            # already at the target: no sample
              + commits("r", "m2", T0, steps=STEPS[:6] + ("failed",))      # failed: no sample
              + [{"id": next(_ids), "ts": ts(T0), "mac": "m0", "run_id": "r", "kind": "xapi.call", "details": {}}])
    assert progress.durations(events) == [540.0]
    assert progress.typical([]) is None and progress.typical([100, 300, 200]) == 200


def test_run_view_eta_from_this_and_earlier_runs():
    events = commits("r", "m0", T0, every=60) + commits("r", "m1", T0 + 600, steps=STEPS[:7], every=30)
    now = T0 + 600 + 6 * 30 + 20  # m1 committed wait_up 20 s ago
    view = progress.run_view(report("r", "members", ["done", "wait_up", "pending"]), events, [1000.0, 300.0], now)
    assert view["samples"] == 3 and view["typical_host_seconds"] == 540.0  # median of 1000, 300 and this run's 540
    h0, h1, h2 = view["hosts"]
    assert (h0["elapsed_seconds"], h0["eta_seconds"], h0["step_seconds"]) == (540.0, 0.0, None)
    assert h1["elapsed_seconds"] == pytest.approx(200.0) and h1["step_seconds"] == pytest.approx(20.0)
    assert h1["eta_seconds"] == pytest.approx(340.0)
    assert h2["eta_seconds"] == 540.0 and h2["elapsed_seconds"] is None
    assert view["eta_seconds"] == pytest.approx(880.0)
    text = progress.render(view)
    assert "ETA 14m40s" in text and "from 3 upgrade(s)" in text and "wait_up" in text


def test_overdue_host_has_zero_eta_and_first_host_has_none():
    late = progress.run_view(report("r", "master", ["enable"]), commits("r", "m0", T0, STEPS[:9]), [100.0], T0 + 900)
    assert late["hosts"][0]["eta_seconds"] == 0.0
    fresh = progress.run_view(report("r", "master", ["reboot", "pending"]), commits("r", "m0", T0, STEPS[:5]), [],
                              T0 + 300)
    assert [h["eta_seconds"] for h in fresh["hosts"]] == [None, None] and fresh["eta_seconds"] is None
    assert "no ETA yet" in progress.render(fresh)


def test_finished_run_has_zero_eta():
    view = progress.run_view(report("r", "done_with_failures", ["done", "failed"]),
                             commits("r", "m0", T0) + commits("r", "m1", T0 + 600, STEPS[:4] + ("failed",)), [], T0)
    assert view["eta_seconds"] == 0.0 and "ETA" not in progress.render(view).splitlines()[0]


@pytest.mark.parametrize("seconds, text", [(None, "-"), (0, "0m00s"), (59.6, "1m00s"), (605, "10m05s"),
                                           (3600 + 125, "1h02m")])
def test_format_seconds(seconds, text):
    assert progress.format_seconds(seconds) == text


def test_step_percent_follows_the_host_steps_in_order():
    percents = [progress.step_percent(step) for step in progress.STEP_ORDER]
    assert percents[0] == 0 and percents[-1] == 100 and percents == sorted(set(percents))
    assert progress.step_percent(states.STEP_FAILED) == 100
    assert progress.step_percent("no-such-step") == 0
    assert states.STEP_FAILED not in progress.STEP_ORDER and set(progress.STEP_ORDER) < set(states.HOST_STEPS)


def test_bar_shows_the_step_position_and_failure():
    assert progress.bar(states.STEP_PENDING) == "[------------]   0%"
    assert progress.bar(states.STEP_DONE) == "[############] 100%"
    assert progress.bar(states.STEP_FAILED) == "[XXXXXXXXXXXX] failed"
    middle = progress.bar(states.STEP_WAIT_UP)
    assert 0 < middle.count("#") < 12 and middle.endswith(f"{progress.step_percent(states.STEP_WAIT_UP):3d}%")



def test_a_wave_run_counts_the_longest_host_of_each_wave_and_shows_the_wave():
    now = T0 + 120
    plain = report("r", "members", ["done", "pending", "pending", "pending"])
    serial = progress.run_view(plain, commits("r", "m0", T0), [1000.0], now)
    waved = {**plain, "waves": {"parallel": "auto", "waves": []},
             "hosts": [{**h, "wave": w} for h, w in zip(plain["hosts"], (0, 1, 1, 2))]}
    view = progress.run_view(waved, commits("r", "m0", T0), [1000.0], now)
    typical = serial["typical_host_seconds"]
    assert serial["eta_seconds"] == 3 * typical and view["eta_seconds"] == 2 * typical  # waves 1 and 2, not 3 hosts
    text = progress.render(view)
    assert text.splitlines()[1].split()[:2] == ["WAVE", "HOST"]
    assert [line.split()[0] for line in text.splitlines()[2:]] == ["0", "1", "1", "2"]
    assert "WAVE" not in progress.render(serial).splitlines()[1]
