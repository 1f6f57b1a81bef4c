"""The precheck findings and consent over REST (docs/prechecks.md), real HTTP to the real server and a simulated
pool."""

from __future__ import annotations

import requests
from helpers import API_TOKEN
from labs import MEDIA, PASSWORD

from provisioner.coordinator import journal

GiB = 1024 ** 3


def api(two_pools, method: str, path: str, **kw) -> requests.Response:
    response = requests.request(method, two_pools.runtime.http.url + "/api/v1" + path, timeout=30,
                                headers={"Authorization": f"Bearer {API_TOKEN}"}, **kw)
    assert PASSWORD not in response.text
    return response


def test_plan_checks_and_consent(two_pools):
    two_pools.world.pools["red"].db.create("SR", name_label="FCoE LUN", type="lvmofcoe", shared=True,
                                           physical_size=str(GiB))
    plan = api(two_pools, "GET", "/pools/red/plan", params={"media": MEDIA}).json()["plan"]
    [fcoe] = [c for c in plan["checks"] if c["code"] == "DEPRECATED_SR"]
    assert fcoe == {"code": "DEPRECATED_SR", "level": "consent", "host": "", "blocking": True,
                    "message": fcoe["message"], "fix": fcoe["fix"]} and "FCoE LUN" in fcoe["message"]
    assert not plan["ok"] and any("[DEPRECATED_SR]" in p for p in plan["problems"])
    agreed = api(two_pools, "GET", "/pools/red/plan", params={"media": MEDIA, "consent": "DEPRECATED_SR"}).json()
    assert agreed["plan"]["ok"] and agreed["plan"]["consent"] == ["DEPRECATED_SR"]
    assert [c["blocking"] for c in agreed["plan"]["checks"] if c["code"] == "DEPRECATED_SR"] == [False]
    bad = api(two_pools, "POST", "/pools/red/upgrade", json={"media": MEDIA, "consent": "DEPRECATED_SR"})
    assert bad.status_code == 400 and bad.json()["field"] == "consent"
    started = api(two_pools, "POST", "/pools/red/upgrade", json={"media": MEDIA, "consent": ["DEPRECATED_SR"]})
    assert started.status_code == 202, started.text
    run_id = started.json()["run"]["id"]
    assert journal.options(two_pools.store, run_id)["consent"] == ("DEPRECATED_SR",)
    assert api(two_pools, "POST", "/pools/red/upgrade/abort").status_code == 200
