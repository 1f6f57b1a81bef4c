"""REST for pools and upgrade runs, over real HTTP to the real server (its FlowService) and a simulated pool."""

from __future__ import annotations

import time

import requests
from helpers import API_TOKEN, FAST
from labs import MEDIA, PASSWORD, WAIT

from provisioner import states
from provisioner.coordinator import installing, journal, runner


class Api:
    """requests against the two pools' server; every answer is also checked for the pool password."""

    def __init__(self, two_pools, token: str | None = API_TOKEN):
        self.base = two_pools.runtime.http.url + "/api/v1"
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def __call__(self, method: str, path: str, **kw) -> requests.Response:
        response = requests.request(method, self.base + path, headers=self.headers, timeout=30, **kw)
        assert PASSWORD not in response.text
        return response


def test_token_required_and_nothing_changes(two_pools):
    anon = Api(two_pools, token=None)
    assert anon("GET", "/pools").status_code == 401
    before = two_pools.store.list_runs()
    answer = anon("POST", "/pools/red/upgrade", json={"media": MEDIA})
    assert answer.status_code == 401 and "bearer" in answer.json()["error"]
    assert Api(two_pools, token="wrong-token-0123456789")("POST", "/pools", json={}).status_code == 401
    assert two_pools.store.list_runs() == before


def test_add_and_list_pools_never_return_the_password(two_pools):
    api = Api(two_pools)
    added = api("POST", "/pools", json={"name": "green", "url": "https://127.0.0.1:9", "username": "root",
                                        "password": PASSWORD, "fingerprint": "AB:" * 31 + "AB"})
    assert added.status_code == 201 and added.headers["Location"] == "/api/v1/pools/green"
    assert added.json()["pool"]["url"] == "https://127.0.0.1:9" and "password" not in added.json()["pool"]
    assert "could not check the certificate" in added.json()["warnings"][0]  # nothing listens there
    assert added.json()["pool"]["trust"] == "fingerprint" and added.json()["pool"]["tls_fingerprint"] == "ab" * 32
    untrusted = api("POST", "/pools", json={"name": "x", "url": "https://x", "password": "p"})
    assert untrusted.status_code == 400 and "--trust-on-first-use" in untrusted.json()["error"]
    listed = api("GET", "/pools").json()["pools"]
    assert [p["name"] for p in listed] == ["blue", "green", "red"]
    assert all("password" not in p for p in listed)
    assert api("GET", "/events").status_code == 200  # checked for the password like every answer
    bad = api("POST", "/pools", json={"name": "x", "url": "ftp://x", "password": "p"})
    assert bad.status_code == 400 and "http(s) URL" in bad.json()["error"]
    extra = api("POST", "/pools", json={"name": "x", "url": "https://x", "password": "p", "admin": True})
    assert extra.status_code == 400 and "admin" in extra.json()["error"]
    assert api("POST", "/pools", json={"name": "x", "url": "https://x"}).json()["field"] == "password"


def test_discover_and_plan(two_pools):
    api = Api(two_pools)
    for h in two_pools.store.list_hosts(pool="blue"):
        two_pools.store.remove_host(h.mac)
    found = api("POST", "/pools/blue/discover")
    assert found.status_code == 200
    assert sorted(found.json()["discovery"]["added"]) == [f"blue-host{i}" for i in range(3)]
    assert {h.mac for h in two_pools.store.list_hosts(pool="blue")} == set(two_pools.macs("blue"))
    plan = api("GET", "/pools/red/plan", params={"media": MEDIA}).json()["plan"]
    assert plan["ok"] and [h["role"] for h in plan["hosts"]] == ["master", "member", "member"]
    blocked = api("GET", "/pools/blue/plan", params={"media": MEDIA}).json()["plan"]
    assert not blocked["ok"] and any("no boot disk" in p for p in blocked["problems"])
    assert api("GET", "/pools/red/plan").json()["field"] == "media"
    cycled = api("GET", "/pools/red/plan", params={"media": MEDIA, "power_cycle": "true"}).json()["plan"]
    assert cycled["ok"] and cycled["power_cycle"] and not plan["power_cycle"]
    bad = api("GET", "/pools/red/plan", params={"media": MEDIA, "power_cycle": "maybe"})
    assert bad.status_code == 400 and bad.json()["field"] == "power_cycle"
    assert api("GET", "/pools/nope/plan", params={"media": MEDIA}).status_code == 404
    assert api("POST", "/pools/nope/discover").status_code == 404


def test_upgrade_runs_in_the_server_and_a_second_start_is_refused(two_pools):
    api = Api(two_pools)
    for bad in (30, "900", True):
        refused = api("POST", "/pools/red/upgrade", json={"media": MEDIA, "host_up_timeout": bad})
        assert refused.status_code == 400 and "host_up_timeout" in refused.text
    started = api("POST", "/pools/red/upgrade", json={"media": MEDIA, "host_up_timeout": 900})
    assert started.status_code == 202, started.text
    run_id = started.json()["run"]["id"]
    assert journal.host_up_timeout(two_pools.store, run_id) == 900.0  # kept with the run
    assert started.headers["Location"] == f"/api/v1/runs/{run_id}"
    again = api("POST", "/pools/red/upgrade", json={"media": MEDIA})
    assert again.status_code == 409 and "red" in again.json()["error"]
    assert two_pools.runtime.flows.wait(run_id, WAIT).state == states.RUN_DONE
    shown = api("GET", f"/runs/{run_id}").json()["run"]
    assert shown["state"] == states.RUN_DONE and not shown["running_here"]
    assert [h["step"] for h in shown["hosts"]] == [states.STEP_DONE] * 3
    assert shown["eta_seconds"] == 0.0 and shown["samples"] == 3
    assert all(h["elapsed_seconds"] > 0 for h in shown["hosts"])
    assert set(two_pools.installs("red").values()) == {1}
    listed = api("GET", "/runs", params={"pool": "red"}).json()["runs"]
    assert [r["id"] for r in listed] == [run_id]
    assert api("GET", "/runs", params={"pool": "blue"}).json()["runs"] == []
    assert api("GET", "/runs/red-nope").status_code == 404
    assert api("POST", "/pools/red/upgrade", json={"media": MEDIA, "stop_on_failure": "yes"}).status_code == 400


def test_abort_then_resume_ends_the_run_aborted_without_touching_a_host(two_pools):
    api = Api(two_pools)
    driver = two_pools.runtime.flows.connect(two_pools.store, "blue")
    run = runner.start_run(two_pools.store, "blue", MEDIA, driver)  # left by a crashed server before any step
    driver.close()
    aborted = api("POST", "/pools/blue/upgrade/abort")
    assert aborted.status_code == 200 and aborted.json()["run"]["abort_requested"]
    resumed = api("POST", "/pools/blue/upgrade/resume")
    assert resumed.status_code == 202 and resumed.json()["run"]["id"] == run.id
    assert two_pools.runtime.flows.wait(run.id, WAIT).state == states.RUN_ABORTED
    assert set(two_pools.reboots("blue").values()) == {0}
    assert api("POST", "/pools/blue/upgrade/resume").status_code == 404
    assert api("POST", "/pools/blue/upgrade/abort").status_code == 404


def test_mark_failed_ends_the_wait_on_a_host_whose_installer_never_reports(two_pools):
    """The server drives the run; a member's installer never reports: "still installing" events, then POST
    mark-failed {"host": ...} fails it and, as it is down, the run stops before the next member."""
    api = Api(two_pools)
    mac = two_pools.macs("blue")[1]
    two_pools.handler.inject(mac, never_returns=True)
    run = api("POST", "/pools/blue/upgrade", json={"media": MEDIA}).json()["run"]
    assert api("POST", "/pools/blue/upgrade/mark-failed", json={"host": "blue-host1"}).status_code == 409  # pending
    deadline = time.monotonic() + WAIT
    events = two_pools.store.events
    while not [e for e in events(run_id=run["id"], kind=installing.STILL_INSTALLING) if e["mac"] == mac]:
        assert time.monotonic() < deadline, "no still-installing event"
        time.sleep(0.05)
    assert api("POST", "/pools/blue/upgrade/mark-failed", json={}).status_code == 400
    assert api("POST", "/pools/blue/upgrade/mark-failed", json={"host": "nobody"}).status_code == 404
    marked = api("POST", "/pools/blue/upgrade/mark-failed", json={"host": mac})
    assert marked.status_code == 200 and marked.json()["host"] == "blue-host1"
    assert marked.json()["run"]["id"] == run["id"]
    final = two_pools.runtime.flows.wait(run["id"], WAIT)
    assert final.state == states.RUN_ABORTED and "blue-host1" in final.reason
    hosts = {h["name"]: h for h in api("GET", f"/runs/{run['id']}").json()["run"]["hosts"]}
    assert hosts["blue-host1"]["step"] == states.STEP_FAILED
    assert installing.MARKED_FAILED_REASON in hosts["blue-host1"]["reason"]
    assert (hosts["blue-host2"]["step"] == states.STEP_PENDING
            and two_pools.reboots("blue")[two_pools.macs("blue")[2]] == 0)
    assert api("POST", "/pools/blue/upgrade/mark-failed", json={"host": mac}).status_code == 404  # run over


def test_without_a_run_service_start_is_503(client, auth):
    answer = client.post("/api/v1/pools/red/upgrade", json={"media": MEDIA}, headers=auth)
    assert answer.status_code == 503 and "provisioner serve" in answer.get_json()["error"]
    assert client.get("/api/v1/runs", headers=auth).get_json() == {"runs": []}


def test_restore_settings_409_during_a_run_then_restores_once(two_pools):
    """POST /pools/{name}/upgrade/restore-settings: what an aborted run left off goes back now, once; refused
    (409) while a run of the pool is active."""
    api = Api(two_pools)
    pool = two_pools.world.pools["blue"]
    db = pool.db
    driver = two_pools.runtime.flows.connect(two_pools.store, "blue")
    try:
        driver.enable_ha([db.get("pool", pool.ref)["default_SR"]], 1)
        db.update("pool", pool.ref, wlb_enabled=True)
        first = runner.start_run(two_pools.store, "blue", MEDIA, driver, disable_ha_wlb=True)

        def abort_at_check(rh):
            if rh.step == states.STEP_CHECK:
                two_pools.store.request_abort(first.id)
        assert runner.Runner(two_pools.store, two_pools.config, first.id, driver, clock=two_pools.world.clock,
                             timeouts=FAST, on_commit=abort_at_check).run().state == states.RUN_ABORTED
        plan = api("GET", "/pools/blue/plan", params={"media": MEDIA}).json()["plan"]
        assert [i["what"] for i in plan["left_off"]] == ["ha", "wlb"] and plan["carried"][0].startswith(
            f"left off by run {first.id}: HA")
        active = runner.start_run(two_pools.store, "blue", MEDIA, driver)
    finally:
        driver.close()
    refused = api("POST", "/pools/blue/upgrade/restore-settings")
    assert refused.status_code == 409 and active.id in refused.json()["error"]
    assert api("POST", "/pools/blue/upgrade/abort").status_code == 200
    assert api("POST", "/pools/blue/upgrade/resume").status_code == 202
    assert two_pools.runtime.flows.wait(active.id, WAIT).state == states.RUN_ABORTED
    done = api("POST", "/pools/blue/upgrade/restore-settings")
    assert done.status_code == 200
    assert [s.split(" ")[0] for s in done.json()["restore"]["restored"]] == ["WLB", "HA"]
    rec = db.get("pool", pool.ref)
    assert rec["ha_enabled"] and rec["wlb_enabled"] and rec["ha_host_failures_to_tolerate"] == "1"
    again = api("POST", "/pools/blue/upgrade/restore-settings").json()["restore"]
    assert again == {"pool": "blue", "restored": [], "already_back": [], "not_restored": []}
    assert api("POST", "/pools/nope/upgrade/restore-settings").status_code == 404


def test_updates_option_is_checked_before_any_run(two_pools):
    """`updates` (POST upgrade, ?updates= on the plan): a repository name; a wrong type is 400 naming the field, an
    unknown name is refused by the plan's UPDATES_UNKNOWN / 404, and no run is created."""
    api = Api(two_pools)
    before = two_pools.store.list_runs()
    bad = api("POST", "/pools/red/upgrade", json={"media": MEDIA, "updates": 42})
    assert bad.status_code == 400 and "updates" in bad.text
    unknown = api("POST", "/pools/red/upgrade", json={"media": MEDIA, "updates": "nope"})
    assert unknown.status_code == 404 and "no update repository named 'nope'" in unknown.json()["error"]
    plan = api("GET", "/pools/red/plan", params={"media": MEDIA, "updates": "nope"}).json()["plan"]
    assert not plan["ok"] and [c["code"] for c in plan["checks"] if c["code"].startswith("UPDATES_")] == [
        "UPDATES_UNKNOWN"] and plan["updates"] is None
    assert two_pools.store.list_runs() == before
