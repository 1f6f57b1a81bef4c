"""Dashboard pools, runs and media through Flask's test client: progress, status JSON, confirmed actions."""

from __future__ import annotations

import re
import socket

import pytest

from ui_helpers import POOL_PASSWORD, URL_PASSWORD, add_host, add_media, log_in, run_of

from provisioner import states
from provisioner.coordinator import journal
from provisioner.coordinator.service import FlowService
from provisioner.progress import step_percent
from provisioner.web.access import set_flows


@pytest.fixture
def ui(client):
    """A logged-in test client and its CSRF token."""
    return client, log_in(client)


def test_pools_page_shows_progress_and_status_json(ui, store, tmp_path):
    client, _ = ui
    add_host(store)
    add_media(store, tmp_path)
    store.add_pool("p1", "https://10.0.0.10", "root", POOL_PASSWORD)
    run = run_of(store)
    page = client.get("/ui/").text
    assert f'data-run-id="{run.id}"' in page and 'data-active="1"' in page
    assert re.search(r'<td data-field="step" class="step">disable</td>', page)
    assert re.search(rf'<progress class="bar" max="100" value="{step_percent("disable")}"', page)
    assert '<meta http-equiv="refresh" content="10">' in page  # without JS the page reloads itself
    status = client.get("/ui/status.json").get_json()
    pool = next(p for p in status["pools"] if p["name"] == "p1")
    assert pool["run"]["state"] == states.RUN_PRECHECK and pool["run"]["active"] is True
    assert [(h["step"], h["percent"]) for h in pool["run"]["hosts"]] == [("disable", step_percent("disable"))]
    assert "Abort…" in page and "not driven by this server" in page


def test_abort_needs_confirmation_then_requests_it(ui, store):
    client, csrf = ui
    add_host(store)
    run = run_of(store)
    confirm = client.get("/ui/pools/p1/confirm?action=abort")
    assert confirm.status_code == 200 and "Abort the upgrade of pool p1?" in confirm.text
    assert "before its next destructive step (disable, evacuate, arm, reboot)" in confirm.text  # from steps.TABLE
    unconfirmed = client.post("/ui/pools/p1/abort", data={"csrf_token": csrf})
    assert unconfirmed.status_code == 303 and "/confirm" in unconfirmed.headers["Location"]
    assert not store.get_run(run.id).abort_requested
    done = client.post("/ui/pools/p1/abort", data={"csrf_token": csrf, "confirmed": "yes"}, follow_redirects=True)
    assert store.get_run(run.id).abort_requested and f"Abort requested for run {run.id}" in done.text


def test_start_without_a_run_service_is_explained(ui, store, tmp_path):
    client, csrf = ui
    add_host(store)
    add_media(store, tmp_path)
    store.add_pool("p1", "https://10.0.0.10", "root", POOL_PASSWORD)
    assert "this web process cannot start one" in client.get("/ui/pools/p1").text
    assert client.get("/ui/pools/p1/confirm?action=start&media=xs84").status_code == 409
    response = client.post("/ui/pools/p1/start", data={"csrf_token": csrf, "confirmed": "yes", "media": "xs84"},
                           follow_redirects=True)
    assert "need `provisioner serve`" in response.text and store.list_runs() == []


@pytest.fixture
def service(app, store, config, tmp_path):
    """A real FlowService in the app, for pool p1 whose master URL is a loopback port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    add_host(store)
    add_media(store, tmp_path)
    store.add_pool("p1", f"http://root:{URL_PASSWORD}@127.0.0.1:{port}", "root", POOL_PASSWORD)
    runs = FlowService(store, config)
    set_flows(app, runs)
    yield runs
    runs.stop()


def test_start_confirmation_shows_why_the_pool_cannot_be_read(ui, store, service):
    """The confirmation page shows the prechecks' problem and offers no button; a forced POST makes a run that
    the prechecks block."""
    client, csrf = ui
    assert "Start upgrade…" in client.get("/ui/pools/p1").text
    page = client.get("/ui/pools/p1/confirm?action=start&media=xs84")
    problems = re.search(r'<ul class="problems" id="plan-problems">(.*?)</ul>', page.text, re.S).group(1)
    assert "pool p1 not reachable" in problems
    assert re.search(r"<button[^>]*disabled[^>]*>Yes, start pool p1", page.text)
    response = client.post("/ui/pools/p1/start", data={"csrf_token": csrf, "confirmed": "yes", "media": "xs84"},
                           follow_redirects=True)
    run = store.list_runs("p1")[0]
    assert f"Run {run.id} started." in response.text
    assert service.wait(run.id, timeout=60).state == states.RUN_BLOCKED
    pool_page = client.get("/ui/pools/p1").text
    assert "not reachable" in pool_page and 'data-active="0"' in pool_page
    for text in (page.text, response.text, pool_page):
        assert POOL_PASSWORD not in text and URL_PASSWORD not in text


def test_resume_needs_confirmation_then_the_service_drives_the_run(ui, store, service):
    client, csrf = ui
    run = run_of(store)  # left in progress by a server that stopped: no thread drives it
    page = client.get("/ui/pools/p1").text
    assert "Resume…" in page and "not driven by this server" in page
    confirm = client.get("/ui/pools/p1/confirm?action=resume")
    assert "Resume the upgrade of pool p1?" in confirm.text and run.id in confirm.text
    assert client.post("/ui/pools/p1/resume", data={"csrf_token": csrf}).status_code == 303
    assert service.running() == [] and store.get_run(run.id).state == states.RUN_PRECHECK
    done = client.post("/ui/pools/p1/resume", data={"csrf_token": csrf, "confirmed": "yes"}, follow_redirects=True)
    assert f"Run {run.id} resumed" in done.text
    assert service.wait(run.id, timeout=60).state == states.RUN_BLOCKED  # the master is unreachable
    again = client.post("/ui/pools/p1/resume", data={"csrf_token": csrf, "confirmed": "yes"}, follow_redirects=True)
    assert "Could not resume pool p1: pool p1 has no run in progress" in again.text


def test_unknown_action_and_pool(ui):
    client, csrf = ui
    assert client.get("/ui/pools/p1/confirm?action=explode").status_code == 400
    assert client.post("/ui/pools/p1/explode", data={"csrf_token": csrf}).status_code == 404
    assert client.get("/ui/pools/nowhere").status_code == 404
    assert client.get("/ui/pools/p1/confirm?action=abort").status_code == 409


def test_media_page(ui, store, tmp_path):
    client, _ = ui
    assert "No media" in client.get("/ui/media").text
    add_media(store, tmp_path)
    page = client.get("/ui/media").text
    assert "xs84" in page and "8.4.0" in page


def test_run_events_json_since(ui, store):
    client, _ = ui
    add_host(store)
    run = run_of(store)
    page = client.get("/ui/pools/p1").text
    since = re.search(r'data-timeline-url="/ui/runs/p1-0001/events.json" '
                      r'data-since="(\d+)"', page).group(1)
    store.add_event("run.progress", run_id=run.id, details={"line": "h1: reboot sent"})
    new = client.get(f"/ui/runs/{run.id}/events.json?since={since}").get_json()["events"]
    assert [(e["kind"], e["summary"]) for e in new] == [("run.progress", "h1: reboot sent")]
    assert client.get(f"/ui/runs/{run.id}/events.json?since=-1").status_code == 400


def test_a_failed_host_shows_its_remedy_class_and_evidence(ui, store, tmp_path):
    client, _ = ui
    add_host(store)
    add_media(store, tmp_path)
    store.add_pool("p1", "https://10.0.0.10", "root", POOL_PASSWORD)
    run = run_of(store)
    mac = store.run_hosts(run.id)[0].mac
    store.set_host_step(run.id, mac, states.STEP_FAILED, reason="disable: HOST_OFFLINE")
    journal.write(store, run.id, journal.REMEDY, mac=mac, cls="nothing_changed", text="nothing was changed on h1",
                  evidence=[{"kind": "xapi.call", "when": "2026-01-01T10:00:00+00:00",
                             "what": "XAPI host.disable: failed: HOST_OFFLINE"}], host_down=False)
    page = client.get("/ui/").text
    assert 'data-remedy-class="nothing_changed"' in page and "Remedy (nothing_changed):" in page
    assert "nothing was changed on h1" in page and "XAPI host.disable: failed: HOST_OFFLINE" in page
    host = client.get("/ui/status.json").get_json()["pools"][0]["run"]["hosts"][0]
    assert (host["remedy_class"], host["evidence"][0]["kind"]) == ("nothing_changed", "xapi.call")


def test_pool_page_shows_the_hosts_levels_and_who_was_left_behind(ui, store, tmp_path):
    """FINALIZE's record (converge.record_levels, journal converge.pool) on the pool page: version, build, update
    level, pending guidances of each host, and the hosts left behind."""
    from provisioner.coordinator import converge
    client, _ = ui
    add_host(store)
    add_media(store, tmp_path)
    store.add_pool("p1", "https://10.0.0.10", "root", POOL_PASSWORD)
    run = run_of(store)
    assert 'id="levels"' not in client.get("/ui/pools/p1").text  # nothing before FINALIZE
    journal.write(store, run.id, converge.POOL, hash="ab" * 32, hosts=[
        {"name": "h1", "mac": None, "product_version": "8.4.0", "build_number": "demo-84", "last_update_hash": "ab" * 32,
         "pending": [], "at_level": True, "live": True},
        {"name": "h2<b>", "mac": None, "product_version": "8.2.1", "build_number": "58", "last_update_hash": "",
         "pending": ["reboot_host"], "at_level": False, "live": True}],
        left_behind=[{"name": "h2<b>", "why": "at 8.2.1 build 58, not 8.4.0"}])
    page = client.get("/ui/pools/p1").text
    assert 'id="levels"' in page and "<code>abababababab</code>" in page and "reboot_host" in page
    assert "Left behind: h2&lt;b&gt;: at 8.2.1 build 58, not 8.4.0" in page
