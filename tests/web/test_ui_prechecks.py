"""The dashboard's start confirmation shows every precheck finding with its level, code, host, message and fix
(docs/prechecks.md), against the XAPI simulator."""

from __future__ import annotations

import dataclasses
import html
import re

from helpers import API_TOKEN, FAST
from labs import MEDIA, POOL
from ui_helpers import log_in

from provisioner import create_app
from provisioner.coordinator import journal
from provisioner.coordinator.service import FlowService
from provisioner.simulator import host_facts
from provisioner.web.access import set_flows


def test_confirmation_lists_the_checks(lab):
    pool = lab.world.pools[POOL]
    host_facts.set_facts(pool.hosts[1], partition_layout="legacy-msdos")
    config = dataclasses.replace(lab.config, api_token=API_TOKEN)
    app = create_app(config, store=lab.store)
    flows = FlowService(lab.store, config)
    set_flows(app, flows)
    try:
        client = app.test_client()
        log_in(client)
        page = client.get(f"/ui/pools/{POOL}/confirm?action=start&media={MEDIA}").text
    finally:
        flows.stop()
    table = re.search(r'<table id="plan-checks">(.*?)</table>', page, re.S).group(1)
    row = re.search(r'<tr class="check-error"><td>error\s*</td>\s*<td><code>SAFE_TO_UPGRADE</code></td><td>(.*?)</td>'
                    r'<td>(.*?)</td><td>(.*?)</td></tr>', table, re.S)
    assert row.group(1) == pool.hosts[1].name and "legacy (DOS) partition table" in row.group(2)
    assert "reinstall the host" in row.group(3)
    assert len(re.findall(r'<tr class="check-warning"><td>warning\s*</td>', table)) == 3  # LICENCE: trial edition
    assert re.search(r"<button[^>]*disabled[^>]*>Yes, start pool", page)


def test_consent_from_the_confirmation_page(lab):
    """A consent check offers Agree: the page comes back with the consent, the start button enabled and the
    consent posted with the start; the run journals it."""
    pool = lab.world.pools[POOL]
    pool.db.create("SR", name_label="FCoE LUN", type="lvmofcoe", shared=True, physical_size=str(1024 ** 3))
    config = dataclasses.replace(lab.config, api_token=API_TOKEN)
    app = create_app(config, store=lab.store)
    flows = FlowService(lab.store, config, clock=lab.world.clock, timeouts=FAST)
    set_flows(app, flows)
    try:
        client = app.test_client()
        csrf = log_in(client)
        page = client.get(f"/ui/pools/{POOL}/confirm?action=start&media={MEDIA}").text
        assert re.search(r"<button[^>]*disabled[^>]*>Yes, start pool", page)
        agree = html.unescape(re.search(r'id="agree-DEPRECATED_SR"\s+href="([^"]+)"', page).group(1))
        agreed = client.get(agree).text
        assert "consent (consented)" in agreed and not re.search(r"<button[^>]*disabled[^>]*>Yes, start", agreed)
        assert '<input type="hidden" name="consent" value="DEPRECATED_SR">' in agreed
        client.post(f"/ui/pools/{POOL}/start", data={"csrf_token": csrf, "confirmed": "yes", "media": MEDIA,
                                                    "consent": "DEPRECATED_SR"})
        run = lab.store.list_runs(POOL)[0]
        assert journal.options(lab.store, run.id)["consent"] == ("DEPRECATED_SR",)
        flows.abort(POOL)
    finally:
        flows.stop()
