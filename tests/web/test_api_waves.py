"""REST for waves (docs/waves.md): the plan with ?parallel=, a run started with parallel / max_failures, and the
refusals that name the field; over real HTTP to the real server (its FlowService) and a simulated world."""

from __future__ import annotations

import requests
from helpers import API_TOKEN
from labs import MEDIA, PASSWORD, WAIT

from provisioner import states
from provisioner.coordinator import journal


def api(two_pools, method: str, path: str, **kw) -> requests.Response:
    answer = requests.request(method, two_pools.runtime.http.url + "/api/v1" + path,
                              headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=30, **kw)
    assert PASSWORD not in answer.text
    return answer


def test_plan_and_run_in_waves(two_pools):
    plan = api(two_pools, "GET", "/pools/red/plan", params={"media": MEDIA, "parallel": "auto"}).json()["plan"]
    assert plan["ok"] and plan["waves"]["parallel"] == "auto"
    assert [w["hosts"] for w in plan["waves"]["waves"]] == [["red-host0"], ["red-host1", "red-host2"]]
    assert "waves" not in api(two_pools, "GET", "/pools/red/plan", params={"media": MEDIA}).json()["plan"]
    bad = api(two_pools, "GET", "/pools/red/plan", params={"media": MEDIA, "parallel": "0"})
    assert bad.status_code == 400 and bad.json()["field"] == "parallel"
    for field, value in (("parallel", "lots"), ("parallel", True), ("max_failures", "200%"),
                         ("group_tag_prefix", 3)):
        refused = api(two_pools, "POST", "/pools/red/upgrade", json={"media": MEDIA, field: value})
        assert refused.status_code == 400 and refused.json()["field"] == field, (field, refused.text)
    assert two_pools.store.list_runs("red") == []
    started = api(two_pools, "POST", "/pools/red/upgrade",
                  json={"media": MEDIA, "parallel": 2, "max_failures": "50%", "group_tag_prefix": "rack:"})
    assert started.status_code == 202, started.text
    run_id = started.json()["run"]["id"]
    assert journal.last(two_pools.store, run_id, journal.WAVES)["max_failures"] == 1
    assert two_pools.runtime.flows.wait(run_id, WAIT).state == states.RUN_DONE
    shown = api(two_pools, "GET", f"/runs/{run_id}").json()["run"]
    assert [h["wave"] for h in shown["hosts"]] == [0, 1, 1] and shown["waves"]["parallel"] == "2"
    assert set(two_pools.installs("red").values()) == {1}
