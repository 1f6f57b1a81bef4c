"""The reinstall flow pins the freshly installed host's new certificate before it sends that host any password
(coordinator/reinstall_trust.py, docs/xapi.md "TLS"), and refuses a certificate that changes after that."""

from __future__ import annotations

from helpers import crash_once
from labs import MEDIA, PASSWORD, POOL, macs, shut_down, upgrade

from provisioner import cryptpw, states
from provisioner.coordinator import pools, reinstall, wiring
from provisioner.coordinator.context import ReinstallTimeouts
from provisioner.simulator import certs
from provisioner.xapi_tls import colons

FLOW_FAST = ReinstallTimeouts(install=4 * 3600, xapi=1800, joined=1800, poll=5)


def start(lab, mac):
    return reinstall.start(lab.store, mac, POOL, MEDIA, confirm=lab.store.get_host(mac).name, forget=True,
                           root_password_hash=cryptpw.hash_password(PASSWORD),
                           connect=lambda name: pools.connect(lab.store, name, timeout=5), host_url=lab.sim.url(mac))


def flow(lab, found, *, lines=None, **kw):
    return reinstall.Flow(lab.store, lab.config, found.id,
                          connect=lambda name: pools.connect(lab.store, name, timeout=5), clock=lab.world.clock, timeouts=FLOW_FAST, say=(lines if lines is not None else []).append,
                          power_on=lambda: lab.world.power_on(found.mac), **kw)


def test_the_new_hosts_certificate_is_pinned_before_its_first_login(lab):
    assert upgrade(lab).state == states.RUN_DONE
    mac = macs(lab)[1]
    before = lab.sim.fingerprint(mac)
    shut_down(lab, mac)
    found = start(lab, mac)
    seen = []

    def connect_host(url, username, password, trust):  # every connection the flow opens to the new host
        seen.append((trust.fingerprint, lab.store.get_reinstall(found.id).host_fingerprint, lab.sim.fingerprint(mac)))
        return wiring.host_driver(url, username, password, trust)
    lines = []
    done = flow(lab, found, connect_host=connect_host, lines=lines).run()
    assert done.step == states.RI_DONE, done.reason
    after = lab.sim.fingerprint(mac)
    assert after != before and done.host_fingerprint == after  # a fresh install made a new certificate
    assert seen and all(s == (after, after, after) for s in seen)  # pinned first, then only pinned connections
    pinned = lab.store.events(mac=mac, kind="reinstall.certificate_pinned")
    assert len(pinned) == 1 and pinned[0]["details"]["fingerprint"] == after
    assert "trust on first use" in pinned[0]["details"]["how"]
    assert any(colons(after) in line and "before sending it any password" in line for line in lines)


def test_a_certificate_changed_after_the_pin_fails_the_flow_with_both_fingerprints(lab):
    assert upgrade(lab).state == states.RUN_DONE
    mac = macs(lab)[1]
    shut_down(lab, mac)
    found = start(lab, mac)
    assert crash_once(lambda on_commit: flow(lab, found, on_commit=on_commit),
                      lambda r: r.step == states.RI_JOIN) == states.RI_JOIN
    pinned = lab.store.get_reinstall(found.id).host_fingerprint
    assert pinned == lab.sim.fingerprint(mac)
    host = lab.world.host(mac)  # someone else's host answers at that address now: another certificate
    endpoint = lab.sim.endpoints[mac]
    endpoint.set_up(False)
    certs.replace(host, certs.make_cert(host.name, certs.addresses_of(host)))
    endpoint.set_up(True)
    calls = len(lab.world.call_log)
    done = flow(lab, start(lab, mac)).run()
    assert done.step == states.RI_FAILED
    assert colons(pinned) in done.reason and colons(lab.sim.fingerprint(mac)) in done.reason, done.reason
    assert "pools trust" in done.reason
    assert not [c for c in lab.world.call_log[calls:] if c[0] == host.name]  # nothing reached the swapped host
