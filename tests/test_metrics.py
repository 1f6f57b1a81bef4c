"""provisioner.metrics: fetch kinds, and the counters derived from the events table after a real demo run."""

from __future__ import annotations

import re
from collections import Counter

import pytest
import requests

from provisioner import create_app, demo, media, registry, states
from provisioner.boot import attempts
from provisioner.config import load_config
from provisioner.web.server import serve_http
from provisioner.metrics import Metrics, file_kind, http_kind, xapi_error_code
from provisioner.store import Store

from helpers import make_media_tree, parse, total

HOSTS = 2
DEMO_PASSWORD = "demo"  # the pool password demo.run_demo gives the simulator


@pytest.mark.parametrize("name, source, kind", [
    ("pxelinux.cfg/01-52-54-00-01-00-00", "dynamic", "config"),
    ("grub/grub.cfg-01-52-54-00-01-00-00", None, "config"),
    ("/EFI/xenserver/grub.cfg", "static", "config"),
    ("pxelinux.cfg/default", "static", "config"),
    ("xenserver/xs84/boot/xen.gz", "media", "kernel"),
    ("boot/xen.efi", None, "kernel"),
    ("boot/vmlinuz", None, "kernel"),
    ("xenserver/xs84/install.img", "media", "install.img"),
    ("pxelinux.0", "static", "loader"),
    ("mboot.c32", "static", "loader"),
    ("grubx64.efi", "static", "loader"),
    ("boot.ipxe", None, "config"),
    ("repodata/repomd.xml", None, "other"),
    (None, None, "other"),
    ("", None, "other"),
])
def test_file_kind(name, source, kind):
    assert file_kind(name, source) == kind


@pytest.mark.parametrize("path, kind", [
    ("/boot/answerfile/abcdefghijklmnopqrst", "answerfile"),
    ("/boot/script/abcdefghijklmnopqrst/installation-start", "script"),
    ("/boot/report/abcdefghijklmnopqrst/0", "script"),
    ("/boot/ipxe/52-54-00-01-00-00", "config"),
    ("/boot/ipxe", "config"),
    ("/boot/unknown", "other"),
    ("/media/xs84/boot/vmlinuz", "kernel"),
    ("/media/xs84/boot/xen.gz", "kernel"),
    ("/media/xs84/install.img", "install.img"),
    ("/media/xs84/.treeinfo", "other"),
    ("/tftp/lpxelinux.0", "loader"),
    ("/api/v1/hosts", "api"),
    ("/metrics", "other"),
    ("/", "other"),
])
def test_http_kind(path, kind):
    assert http_kind(path) == kind


@pytest.mark.parametrize("error, code", [
    ("['HOST_IS_SLAVE', '10.0.0.2']", "HOST_IS_SLAVE"),
    ('["HOST_STILL_BOOTING"]', "HOST_STILL_BOOTING"),
    ("http://10.0.0.1: host.reboot: [Errno 111] Connection refused", "UNREACHABLE"),
    ("something else", "OTHER"),
    (None, "OTHER"),
])
def test_xapi_error_code(error, code):
    assert xapi_error_code(error) == code


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("demo")
    demo.run_demo(workdir, hosts=HOSTS, speed=600, say=lambda line: None)
    store = Store(workdir / "data" / "provisioner.db")
    yield workdir, store
    store.close()


def _events(store: Store, kind: str | None = None) -> list[dict]:
    return store.events(kind=kind, limit=1_000_000)


def test_counters_match_the_events_table_after_a_demo_run(demo_store):
    _, store = demo_store
    samples = parse(Metrics(store).render()[0].decode())
    events = _events(store)
    assert events, "the demo recorded events"
    for kind, count in Counter(e["kind"] for e in events).items():
        assert total(samples, "provisioner_events_total", event=kind) == count, kind
    # TFTP: requests and bytes by kind, each transfer of the table counted once, durations for each sent one
    sent = _events(store, "tftp.sent")
    assert sent, "the demo's machines fetched their configs over TFTP"
    by_kind = Counter(file_kind(e["details"]["file"], e["details"]["source"]) for e in sent)
    # installer config, then (a network-first host) the local boot after the install, while a disk-first host
    # behind a BMC boots its disk with no fetch (demo.PROFILES); and the boot server's own check of each host's
    # config before its reboot (coordinator/selfcheck.py: a TFTP transfer too, recorded on no attempt)
    checks = [e for e in sent if str(e["details"]["file"]).startswith("provisioner-selfcheck/")]
    configs = sum(2 if demo.PROFILES[i % len(demo.PROFILES)][0] == "network-first" else 1 for i in range(HOSTS))
    assert len(checks) == HOSTS and by_kind["config"] == configs + len(checks)
    for kind, count in by_kind.items():
        assert total(samples, "provisioner_tftp_requests_total", kind=kind, outcome="sent") == count
        assert total(samples, "provisioner_tftp_transfer_seconds_count", kind=kind) == count
        assert total(samples, "provisioner_tftp_bytes_total", kind=kind) == sum(
            e["details"]["bytes"] for e in sent if file_kind(e["details"]["file"], e["details"]["source"]) == kind)
    assert total(samples, "provisioner_tftp_transfer_seconds_bucket", kind="config", le="+Inf") == by_kind["config"]
    # attempts: every host armed once and succeeded; none left armed
    assert total(samples, "provisioner_attempts", state=states.ARMED) == 0
    assert total(samples, "provisioner_attempts", state=states.SUCCEEDED) == HOSTS
    assert total(samples, "provisioner_attempts_finished_total", outcome=states.SUCCEEDED) == HOSTS
    assert len(_events(store, "attempt.succeeded")) == HOSTS
    # the run: one, done, with one duration; each host went through every step once
    assert total(samples, "provisioner_runs", state=states.RUN_DONE) == 1
    assert total(samples, "provisioner_run_duration_seconds_count", outcome=states.RUN_DONE) == 1
    assert total(samples, "provisioner_run_duration_seconds_sum", outcome=states.RUN_DONE) > 0
    left = Counter(e["details"]["from"] for e in events
                   if e["kind"].startswith("step.") and e["details"].get("from") not in (None, states.STEP_PENDING))
    for step in (states.STEP_CHECK, states.STEP_DISABLE, states.STEP_EVACUATE, states.STEP_ARM, states.STEP_REBOOT,
                 states.STEP_WAIT_DOWN, states.STEP_WAIT_UP, states.STEP_VERIFY, states.STEP_ENABLE):
        assert left[step] == HOSTS, step
    for step, count in left.items():  # one duration each time a host left a step
        assert total(samples, "provisioner_step_duration_seconds_count", step=step) == count, step
    # XAPI calls and errors by code, as in the table
    calls = _events(store, "xapi.call")
    assert calls
    for outcome, ok in (("ok", True), ("error", False)):
        assert total(samples, "provisioner_xapi_calls_total", outcome=outcome) == sum(
            1 for e in calls if bool(e["details"]["ok"]) is ok)
    codes = Counter(xapi_error_code(e["details"].get("error")) for e in calls if not e["details"]["ok"])
    for code, count in codes.items():
        assert total(samples, "provisioner_xapi_errors_total", code=code) == count
    assert total(samples, "provisioner_xapi_errors_total") == sum(codes.values())


def test_scrape_over_http_after_a_demo_run_matches_the_table(demo_store):
    workdir, store = demo_store
    config = load_config(file=None, environ={}, overrides={"data_dir": workdir / "data"})
    server = serve_http(create_app(config, store=store), "127.0.0.1", 0)
    try:
        answer = requests.get(f"{server.url}/metrics", timeout=10)
    finally:
        server.stop()
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/plain")
    samples = parse(answer.text)
    for kind, count in Counter(e["kind"] for e in _events(store)).items():
        assert total(samples, "provisioner_events_total", event=kind) == count, kind
    assert total(samples, "provisioner_tftp_requests_total") == len(_events(store, "tftp.sent"))
    secrets = [DEMO_PASSWORD, store.get_pool(demo.DEMO_POOL).password] + [a.token for a in store.list_attempts()]
    for secret in secrets:
        assert f'"{secret}"' not in answer.text  # no label value is a password or a token
    assert not re.search(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", answer.text)  # nor a MAC


def test_a_new_process_replays_the_table_and_then_reads_only_new_rows(demo_store, tmp_path):
    _, demo_db = demo_store
    store = Store(tmp_path / "copy.db")
    for event in _events(demo_db):  # a copy, so this test's extra rows do not change the shared demo store
        store.add_event(event["kind"], mac=event["mac"], run_id=event["run_id"], details=event["details"])
    first = Metrics(store)
    before = parse(first.render()[0].decode())
    again = parse(Metrics(store).render()[0].decode())  # a restart: same numbers from the table alone
    assert {k: v for k, v in before.items() if not k[0].startswith("provisioner_http")} == {
        k: v for k, v in again.items() if not k[0].startswith("provisioner_http")}

    store.add_event("xapi.call", mac="52:54:00:01:00:00", run_id="r1",
                    details={"host": "h", "method": "host.reboot", "ok": False, "error": "['HOST_IS_SLAVE', 'x']"})
    store.add_event("tftp.refused", details={"client": "", "file": "None", "reason": "client_cap", "count": 7,
                                             "summary": True})
    store.add_event("tftp.refused", details={"client": "10.0.0.9", "file": "pxelinux.cfg/01-aa", "reason": "not_found",
                                             "count": 1})
    assert first.tally.update() == 3  # only the rows added since the last scrape are read
    after = parse(first.render()[0].decode())
    assert total(after, "provisioner_xapi_errors_total", code="HOST_IS_SLAVE") == total(
        before, "provisioner_xapi_errors_total", code="HOST_IS_SLAVE") + 1
    assert total(after, "provisioner_xapi_calls_total", method="host.reboot", outcome="error") == total(
        before, "provisioner_xapi_calls_total", method="host.reboot", outcome="error") + 1
    assert total(after, "provisioner_tftp_refused_total", reason="client_cap") == 7  # a summary stands for 7
    assert total(after, "provisioner_tftp_requests_total", kind="other", outcome="refused") == 7
    assert total(after, "provisioner_tftp_requests_total", kind="config", outcome="refused") == 1
    store.close()


def test_attempt_gauges_follow_real_state_changes(store, config, tmp_path):
    media.import_media(store, config, "xs84", make_media_tree(tmp_path / "tree"))
    for mac in ("52:54:00:00:00:01", "52:54:00:00:00:02"):
        registry.add_host(store, {"mac": mac, "name": mac[-2:], "pool": "p", "disk": "/dev/disk/by-id/x"})
    metrics = Metrics(store)
    first = attempts.arm(store, config, "52:54:00:00:00:01", "xs84")
    attempts.arm(store, config, "52:54:00:00:00:02", "xs84")
    samples = parse(metrics.render()[0].decode())
    assert total(samples, "provisioner_attempts", state=states.ARMED) == 2
    attempts.arm(store, config, "52:54:00:00:00:02", "xs84")  # re-arm: the older attempt expires
    # bind=False: no boot-config fetch here to bind the attempt to (binding: tests/hostile/test_steal_install.py)
    assert attempts.start_script_fetched(store, first.token, "10.0.0.1", bind=False).changed
    assert attempts.complete_reported(store, first.token, "1", "10.0.0.1", bind=False).attempt.state == states.FAILED
    samples = parse(metrics.render()[0].decode())
    assert total(samples, "provisioner_attempts", state=states.ARMED) == 1
    assert total(samples, "provisioner_attempts", state=states.FAILED) == 1
    assert total(samples, "provisioner_attempts_finished_total", outcome=states.FAILED) == 1
    assert total(samples, "provisioner_attempts_finished_total", outcome=states.EXPIRED) == 1
    assert total(samples, "provisioner_attempts") == len(store.list_attempts()) == 3


def test_http_observations_and_their_histogram():
    metrics = Metrics(_MemoryStore())
    metrics.observe_http("kernel", "GET", 200, 1000, 0.002)
    metrics.observe_http("kernel", "HEAD", 200, 0, 0.001)
    metrics.observe_http("weird", "BREW", 418, -5, -1.0)  # unknown kind and method fold into bounded labels
    samples = parse(metrics.render()[0].decode())
    assert total(samples, "provisioner_http_requests_total", kind="kernel") == 2
    assert total(samples, "provisioner_http_response_bytes_total", kind="kernel") == 1000
    assert total(samples, "provisioner_http_request_duration_seconds_count", kind="kernel") == 2
    assert total(samples, "provisioner_http_request_duration_seconds_bucket", kind="kernel", le="0.001") == 1
    assert total(samples, "provisioner_http_requests_total", kind="other", method="OTHER", status="418") == 1
    assert total(samples, "provisioner_http_response_bytes_total", kind="other") == 0


class _MemoryStore:
    """An empty event log (the HTTP instruments need no database)."""

    def events(self, **_kwargs):
        return []
