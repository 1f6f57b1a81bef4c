"""GET /metrics on a running server: simulated PXE machines install over real TFTP and HTTP, then the scrape's
counters equal the requests they made and the events table, and its histograms count every one of them."""

from __future__ import annotations

import re
from collections import Counter

import pytest
import requests

from provisioner import demo, media, registry, states
from provisioner.boot import attempts
from provisioner.metrics import file_kind
from provisioner.runtime import Runtime
from provisioner.simulator.machine import INSTALLED, Machine
from provisioner.store import Store

from helpers import parse, total

TOKEN = "metrics-test-token-0123456789"
MEDIA = "xs84"
PXE_MAC, IPXE_MAC = "52:54:00:0a:00:01", "52:54:00:0a:00:02"
# what the simulated machine fetched -> the kind our metrics must count it under
KIND_OF = {"config": "config", "hypervisor": "kernel", "kernel": "kernel", "install.img": "install.img",
           "answerfile": "answerfile", "treeinfo": "other", "script": "script", "chain": "loader"}


@pytest.fixture
def running(tmp_path):
    config = demo.demo_config(tmp_path).replace(api_token=TOKEN, pxelinux_http=False)
    (config.tftp_root / "pxelinux.0").write_bytes(b"site pxelinux\n")  # iPXE on BIOS chains to it (docs/firmware.md)
    store = Store(config.db_path)
    media.import_media(store, config, MEDIA, demo.synthetic_media_tree(tmp_path / "tree"))
    for mac, name in ((PXE_MAC, "pxe1"), (IPXE_MAC, "ipxe1")):
        registry.add_host(store, {"mac": mac, "name": name, "pool": "lab", "disk": "/dev/disk/by-id/scsi-lab",
                                  "firmware": "bios"})
    runtime = Runtime(config, store).start()
    yield runtime
    runtime.stop()
    store.close()


def _scrape(runtime: Runtime) -> tuple[str, dict]:
    answer = requests.get(f"{runtime.http.url}/metrics", timeout=10)  # no token: /metrics is open
    assert answer.status_code == 200
    return answer.text, parse(answer.text)


def test_scrape_counts_every_fetch_of_two_installs(running):
    runtime, store, config = running, running.store, running.config
    for mac in (PXE_MAC, IPXE_MAC):
        attempts.arm(store, config, mac, MEDIA)
    _, armed = _scrape(runtime)
    assert total(armed, "provisioner_attempts", state=states.ARMED) == 2

    fetches = []
    on_event = lambda kind, mac, details: fetches.append(details) if kind == "fetch" else None  # noqa: E731
    machines = [Machine(PXE_MAC, runtime.tftp.address, http_base=runtime.http.url, loader="pxelinux",  # PXE-first
                        install_seconds=1, on_event=on_event, boot_order="bios-network-first"),
                Machine(IPXE_MAC, runtime.tftp.address, http_base=runtime.http.url, loader="ipxe", firmware="bios",
                        install_seconds=1, on_event=on_event, boot_order="bios-network-first")]
    for machine in machines:
        machine.power_on()
        assert [b.outcome for b in machine.boots] == [INSTALLED, "local"]
    api = requests.get(f"{runtime.http.url}/api/v1/hosts", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert api.status_code == 200
    assert requests.get(f"{runtime.http.url}/api/v1/hosts", timeout=10).status_code == 401
    # Stop TFTP and flush the event writer, so every transfer is in the table before the scrape.
    runtime.tftp.stop()
    runtime.events.close()
    text, samples = _scrape(runtime)

    assert all(f["status"] == "ok" for f in fetches)
    tftp = Counter(KIND_OF[f["what"]] for f in fetches if f["protocol"] == "tftp")
    http = Counter(KIND_OF[f["what"]] for f in fetches if f["protocol"] == "http")
    reports = sum(1 for m in machines for b in m.boots if b.outcome == INSTALLED)  # the complete script's GET
    http["script"] += reports
    http["api"] += 2
    http["other"] += 1  # the scrape before the boots (this one is counted once it is answered)
    # pxelinux: everything over TFTP; iPXE on BIOS: its script over HTTP, then pxelinux.0 and pxelinux's files over
    # TFTP (docs/firmware.md "iPXE on BIOS"); the installer's answer file, scripts and .treeinfo over HTTP.
    assert set(tftp) == {"config", "kernel", "install.img", "loader"}
    assert {"config", "answerfile", "script", "other"} <= set(http)

    for kind, count in tftp.items():
        assert total(samples, "provisioner_tftp_requests_total", kind=kind) == count, kind
        assert total(samples, "provisioner_tftp_bytes_total", kind=kind) == sum(
            f["bytes"] for f in fetches if f["protocol"] == "tftp" and KIND_OF[f["what"]] == kind), kind
    assert total(samples, "provisioner_tftp_requests_total") == sum(tftp.values())
    sent = store.events(kind="tftp.sent", limit=10_000)
    for kind, count in Counter(file_kind(e["details"]["file"], e["details"]["source"]) for e in sent).items():
        assert total(samples, "provisioner_tftp_requests_total", kind=kind, outcome="sent") == count
        assert total(samples, "provisioner_tftp_transfer_seconds_count", kind=kind) == count

    for kind, count in http.items():
        assert total(samples, "provisioner_http_requests_total", kind=kind) == count, kind
        assert total(samples, "provisioner_http_request_duration_seconds_count", kind=kind) == count, kind
        assert total(samples, "provisioner_http_request_duration_seconds_bucket", kind=kind, le="+Inf") == count
    assert total(samples, "provisioner_http_requests_total") == sum(http.values())
    assert total(samples, "provisioner_http_requests_total", kind="api", status="401") == 1
    for kind in ("kernel", "install.img", "answerfile"):
        assert total(samples, "provisioner_http_response_bytes_total", kind=kind) == sum(
            f["bytes"] for f in fetches if f["protocol"] == "http" and KIND_OF[f["what"]] == kind), kind

    assert total(samples, "provisioner_attempts", state=states.ARMED) == 0
    assert total(samples, "provisioner_attempts_finished_total", outcome=states.SUCCEEDED) == 2
    for secret in [TOKEN] + [a.token for a in store.list_attempts()]:
        assert secret not in text
    assert not re.search(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", text)


def test_head_requests_count_no_body_bytes(running):
    url = f"{running.http.url}/media/{MEDIA}/install.img"
    assert requests.head(url, timeout=10).status_code == 200
    assert requests.get(url, headers={"Range": "bytes=0-99"}, timeout=10).status_code == 206
    _, samples = _scrape(running)
    assert total(samples, "provisioner_http_requests_total", kind="install.img", method="HEAD", status="200") == 1
    assert total(samples, "provisioner_http_requests_total", kind="install.img", method="GET", status="206") == 1
    assert total(samples, "provisioner_http_response_bytes_total", kind="install.img") == 100
