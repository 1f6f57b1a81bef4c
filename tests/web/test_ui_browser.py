"""The dashboard in a real browser: Debian's headless Chromium (/usr/bin/chromium) driven by Playwright's Python
package (no browser download, ever), against a real Runtime serving TFTP + HTTP on loopback, its FlowService, and
the XAPI simulator's pool whose machines network-boot through that server (wired as in provisioner/demo.py).

Screenshots go to $PROVISIONER_TEST_ARTIFACTS (default: a pytest tmp dir); each test prints where they are.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from provisioner import demo, media, registry, states
from provisioner.config import Config
from provisioner.coordinator import pools as coord_pools
from provisioner.coordinator.service import FlowService
from provisioner.runtime import Runtime
from provisioner.simulator.builder import build_pool, new_world, serve_world
from provisioner.simulator.clock import Clock
from provisioner.simulator.boot_handler import make_boot_handler
from provisioner.store import Store

CHROMIUM = "/usr/bin/chromium"  # Debian's package (Makefile DEBIAN_PACKAGES)
TOKEN = "browser-test-token-0123456789"
SPEED = 200.0  # simulated seconds per real second: a 3-host upgrade takes some seconds, long enough to watch
WAIT_MS = 240_000  # generous bound for the whole run on a busy 2-core machine (not a speed assertion)
HOSTILE = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'


@dataclass
class Lab:
    url: str
    config: Config
    store: Store
    runtime: Runtime


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """provisioner serve (TFTP + HTTP + FlowService) on loopback and a simulated 3-host pool registered in it."""
    work = tmp_path_factory.mktemp("ui-lab")
    config = demo.demo_config(work).replace(api_token=TOKEN)
    store = Store(config.db_path)
    media.import_media(store, config, demo.DEMO_MEDIA, demo.synthetic_media_tree(work / "media-tree"))
    world = new_world(Clock(SPEED))
    build_pool(world, demo.DEMO_POOL, hosts=3, version=demo.SOURCE_VERSION, vms_per_host=1)
    runtime = Runtime(config, store, flows=FlowService(store, config, clock=world.clock)).start()
    handler = make_boot_handler(runtime.tftp.address, clock=world.clock, http_base=runtime.http.url,
                                boot_order="bios-network-first")  # a PXE-first site
    world.boot_handler = handler
    sim = serve_world(world)
    try:
        coord_pools.add_pool(store, demo.DEMO_POOL, sim.master_url(), "root", "demo",
                             fingerprint=sim.master_fingerprint())
        driver = coord_pools.connect(store, demo.DEMO_POOL, timeout=5)
        coord_pools.discover(store, demo.DEMO_POOL, driver)
        for h in driver.hosts():  # XAPI has no PRIMARY_DISK: a lab by-id path, as the demo does
            registry.update_host(store, h.mac, {"disk": f"/dev/disk/by-id/scsi-sim-{h.uuid[:8]}"})
        driver.close()
        yield Lab(runtime.http.url, config, store, runtime)
    finally:
        runtime.stop()
        handler.stop()
        sim.stop()
        store.close()


@pytest.fixture(scope="module")
def browser():
    expect.set_options(timeout=30_000)  # page loads are fast; a busy CI machine is not
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    root = Path(os.environ.get("PROVISIONER_TEST_ARTIFACTS") or tmp_path_factory.mktemp("ui-screenshots"))
    root.mkdir(parents=True, exist_ok=True)
    return root


class Shots:
    """Full-page screenshots named by test and step; say() prints where they went (past pytest's capture)."""

    def __init__(self, root: Path, prefix: str, capsys):
        self.root, self.prefix, self.capsys, self.saved = root, prefix, capsys, []

    def __call__(self, page: Page, name: str) -> Path:
        path = self.root / f"{self.prefix}-{len(self.saved) + 1:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        self.saved.append(path)
        return path

    def say(self) -> None:
        with self.capsys.disabled():
            print(f"\n[dashboard screenshots] {len(self.saved)} in {self.root}: "
                  + ", ".join(p.name for p in self.saved))


@pytest.fixture
def page(browser: Browser, lab: Lab):
    """A fresh browser context (no cookies) logged in through the login form."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(lab.url + "/")
    expect(page).to_have_url(lab.url + "/ui/login?next=/ui/")
    page.fill("#token", TOKEN)
    page.click("button:has-text('Log in')")
    expect(page.locator("h1")).to_have_text("Pools")
    yield page
    context.close()


@pytest.fixture
def shots(artifacts, request, capsys):
    taken = Shots(artifacts, request.node.name.removeprefix("test_"), capsys)
    yield taken
    taken.say()


def test_register_a_host_through_the_form(page: Page, lab: Lab, shots):
    page.click("nav >> text=Hosts")
    page.click("text=Add a host…")
    page.fill("#f-mac", "02-00-00-AA-00-01")
    page.fill("#f-name", "rack-b-01")
    page.fill("#f-pool", "rack-b")
    page.fill("#f-disk", "/dev/disk/by-id/scsi-3600a0b8000000001")
    page.select_option("#f-firmware", "uefi")
    page.fill("#f-ip", "10.0.0.300")
    page.fill("#f-notes", HOSTILE)
    page.click("button:has-text('Register host')")
    expect(page.locator("#e-ip")).to_contain_text("is not an IP address")  # inline, next to the field
    expect(page.locator("#f-notes")).to_have_value(HOSTILE)  # what was typed is kept
    shots(page, "inline-error")
    assert lab.store.get_host("02:00:00:aa:00:01") is None

    page.fill("#f-ip", "10.0.0.30")
    page.click("button:has-text('Register host')")
    expect(page.locator("h1")).to_have_text("Host rack-b-01")
    expect(page.locator(".flash-info")).to_contain_text("registered in pool rack-b")
    expect(page.locator("dd.notes")).to_have_text(HOSTILE)  # shown as text, not run
    assert page.evaluate("window.__xss") is None
    shots(page, "registered")
    host = lab.store.get_host("02:00:00:aa:00:01")
    assert (host.name, host.pool, host.firmware, host.ip) == ("rack-b-01", "rack-b", "uefi", "10.0.0.30")


def test_csv_upload_with_a_bad_row_shows_the_error_and_imports_nothing(page: Page, lab: Lab, shots):
    page.click("nav >> text=Hosts")
    bad = b"mac,name,pool,disk\n02:00:00:cc:00:01,c1,rack-c,/dev/disk/by-id/c1\n02:00:00:cc:00:0Z,c2,rack-c,\n"
    page.set_input_files("#csv", files=[{"name": "rack-c.csv", "mimeType": "text/csv", "buffer": bad}])
    page.click("button:has-text('Import')")
    problems = page.locator("#import-problems")
    expect(problems).to_contain_text("Nothing imported: 1 problem(s).")
    expect(problems.locator("li")).to_have_text(["line 3: mac: '02:00:00:cc:00:0Z' is not a MAC address "
                                                 "(expected 12 hex digits as aa:bb:cc:dd:ee:ff, aa-bb-cc-dd-ee-ff, "
                                                 "aabbccddeeff or aabb.ccdd.eeff)"])
    shots(page, "csv-error")
    assert lab.store.list_hosts(pool="rack-c") == []

    good = bad.replace(b"0Z,", b"02,")
    page.set_input_files("#csv", files=[{"name": "rack-c.csv", "mimeType": "text/csv", "buffer": good}])
    page.click("button:has-text('Import')")
    expect(page.locator(".flash-info")).to_have_text("Imported 2 host(s).")
    expect(page.locator("table.hosts tr[data-mac^='02:00:00:cc']")).to_have_count(2)
    shots(page, "csv-imported")
    assert [h.name for h in lab.store.list_hosts(pool="rack-c")] == ["c1", "c2"]


@pytest.fixture(scope="module")
def upgraded(browser: Browser, lab: Lab, artifacts):
    """Start the demo pool's upgrade from its page, confirm, and watch the page until the run is DONE.

    Returns what the page showed: in-place progress seen while running, and the final host rows."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(lab.url + "/ui/login")
    page.fill("#token", TOKEN)
    page.click("button:has-text('Log in')")
    page.goto(f"{lab.url}/ui/pools/{demo.DEMO_POOL}")
    page.select_option("select[name=media]", demo.DEMO_MEDIA)
    page.click("button:has-text('Start upgrade…')")
    expect(page.locator("h1")).to_have_text(f"Start the upgrade of pool {demo.DEMO_POOL}?")
    plan_rows = page.locator("table:not(#plan-checks) tbody tr").all_inner_texts()  # the hosts, not the findings
    page.screenshot(path=str(artifacts / "upgrade-01-confirm.png"), full_page=True)
    page.click(f"button:has-text('Yes, start pool {demo.DEMO_POOL}')")
    expect(page.locator(".flash-info")).to_contain_text("started")
    # The same document, updated by ui.js while the run goes on: a marker set now survives only without reloads.
    page.evaluate("window.__sameDocument = true")
    first_steps = page.locator("td[data-field=step]").all_inner_texts()
    first_events = page.locator("#timeline tbody tr[data-event]").count()
    page.wait_for_function(
        "([first, events]) => window.__sameDocument === true && JSON.stringify(Array.from("
        "document.querySelectorAll('td[data-field=step]'), td => td.textContent)) !== JSON.stringify(first)"
        " && document.querySelectorAll('#timeline tbody tr[data-event]').length > events",
        arg=[first_steps, first_events], timeout=WAIT_MS)
    live_steps = page.locator("td[data-field=step]").all_inner_texts()
    page.screenshot(path=str(artifacts / "upgrade-02-running.png"), full_page=True)
    # When the run ends ui.js reloads the page (the buttons change); wait for DONE there.
    expect(page.locator(".run-line [data-field=state]")).to_have_text(states.RUN_DONE, timeout=WAIT_MS)
    page.screenshot(path=str(artifacts / "upgrade-03-done.png"), full_page=True)
    result = {"plan": plan_rows, "first_steps": first_steps, "live_steps": live_steps,
              "final_steps": page.locator("td[data-field=step]").all_inner_texts(),
              "bars": [page.locator("tr[data-mac] progress").nth(i).get_attribute("value") for i in range(3)],
              "run_bar": page.locator(".run-line progress").get_attribute("value"),
              "start_button": page.locator("button:has-text('Start upgrade…')").count(),
              "master": page.locator("tr[data-mac]").first.get_attribute("data-mac"), "context": context}
    page.click("nav >> text=Pools")
    expect(page.locator(f"section[data-pool='{demo.DEMO_POOL}'] [data-field=state]")).to_have_text(states.RUN_DONE)
    page.screenshot(path=str(artifacts / "upgrade-04-pools.png"), full_page=True)
    yield result
    context.close()


def test_start_the_demo_pool_upgrade_from_the_page_and_watch_it_reach_done(upgraded, lab: Lab, artifacts, capsys):
    assert len(upgraded["plan"]) == 3 and all(row.endswith("upgrade") for row in upgraded["plan"])
    # ui.js changed the steps in the page it was loaded in (no reload), while the run was going on
    assert upgraded["live_steps"] != upgraded["first_steps"] and upgraded["live_steps"] != ["done"] * 3
    assert upgraded["final_steps"] == ["done", "done", "done"]
    assert upgraded["bars"] == ["100", "100", "100"] and upgraded["run_bar"] == "100"
    assert upgraded["start_button"] == 1  # the run is over: a new one may be started
    run = lab.store.list_runs(demo.DEMO_POOL)[0]
    assert run.state == states.RUN_DONE
    assert [h.step for h in lab.store.run_hosts(run.id)] == ["done"] * 3
    with capsys.disabled():
        print(f"\n[dashboard screenshots] upgrade-0[1-4]-*.png in {artifacts}")


def test_open_a_host_timeline(upgraded, lab: Lab, shots):
    page = upgraded["context"].new_page()
    page.goto(f"{lab.url}/ui/pools/{demo.DEMO_POOL}")
    master = upgraded["master"]
    page.click(f"tr[data-mac='{master}'] a")
    expect(page.locator("h1")).to_contain_text("Host ")
    timeline = page.locator("#timeline tbody")
    expect(timeline).to_contain_text("fetched config")
    expect(timeline).to_contain_text("fetched answerfile")
    expect(timeline).to_contain_text("XAPI host.reboot: ok")
    expect(timeline).to_contain_text("started -> succeeded")
    fetch_rows = timeline.locator("tr", has_text="fetched answerfile")
    expect(fetch_rows).to_have_count(1)
    expect(fetch_rows.locator("td").nth(3)).to_have_text("127.0.0.1")  # the client address of the fetch
    expect(page.locator("table.attempts tbody tr").first).to_contain_text(states.SUCCEEDED)
    attempt = lab.store.list_attempts(master)[0]
    assert attempt.token not in page.content()
    shots(page, "timeline")
    # a new event shows up without a reload
    page.evaluate("window.__sameDocument = true")
    lab.store.add_event("attempt.fetch", mac=master, details={"what": "config", "client": "127.0.0.9"})
    expect(timeline.locator("tr").last).to_contain_text("127.0.0.9")
    assert page.evaluate("window.__sameDocument") is True
    shots(page, "timeline-live")
    page.close()
