"""The dashboard's start confirmation shows every precheck finding with its level, code, host, message and fix
(docs/prechecks.md), against the XAPI simulator."""

from __future__ import annotations

import dataclasses
import re

from helpers import API_TOKEN
from labs import MEDIA, POOL
from ui_helpers import log_in

from provisioner import create_app
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
    row = re.search(r'<tr class="check-error"><td>error</td>\s*<td><code>SAFE_TO_UPGRADE</code></td><td>(.*?)</td>'
                    r'<td>(.*?)</td><td>(.*?)</td></tr>', table, re.S)
    assert row.group(1) == pool.hosts[1].name and "legacy (DOS) partition table" in row.group(2)
    assert "reinstall the host" in row.group(3)
    assert table.count('<tr class="check-warning"><td>warning</td>') == 3  # LICENCE: the ISO's trial edition
    assert re.search(r"<button[^>]*disabled[^>]*>Yes, start pool", page)
