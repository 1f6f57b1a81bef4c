"""The XenAPI driver's certificate trust (xapi_tls.py, docs/xapi.md "TLS") against the simulator's real
self-signed certificates (made with `cryptography`, served by Python's ssl): a CA, a pinned fingerprint, or
nothing (the system CA store, which refuses them with a message naming the fix)."""

from __future__ import annotations

import pytest

from provisioner.simulator import certs
from provisioner.simulator.builder import start_simulator
from provisioner.xapi import CertificateRefused, Trust, XenApiDriver
from provisioner.xapi_tls import colons, fetch_certificate, normalize_fingerprint

FP = "0123456789abcdef" * 4


@pytest.fixture(scope="module")
def sim():
    handle = start_simulator(2, speed=600.0)
    yield handle
    handle.stop()


def master(sim):
    return sim.world.pools["pool0"].master


def driver(url, **trust):
    return XenApiDriver(url, "root", "pw", timeout=5, trust=Trust(**trust))


def calls_to(sim, h, since):
    return [c for c in sim.world.call_log[since:] if c[0] == h.name]


@pytest.mark.parametrize("spelling", [FP, FP.upper(), colons(FP), colons(FP).lower(), f" {colons(FP)} ",
                                      f"sha256 Fingerprint={colons(FP)}"])
def test_fingerprint_spellings(spelling):
    assert normalize_fingerprint(spelling) == FP


@pytest.mark.parametrize("bad, words", [(FP[:-2], "has 62"), (FP + "00", "has 66"), ("", "has 0"),
                                        (FP[:-1] + "g", "other characters"), ("ab-cd", "other characters")])
def test_bad_fingerprints_say_what_is_wrong(bad, words):
    with pytest.raises(ValueError, match=words):
        normalize_fingerprint(bad)


def test_the_simulated_certificate_is_what_gencert_makes(sim):
    h = master(sim)
    from cryptography import x509  # the test reads the certificate with another parser than the product's
    cert = x509.load_pem_x509_certificate(sim.cert_pem(h.mac))
    assert cert.public_key().key_size == 2048 and cert.subject == cert.issuer
    assert cert.subject.rfc4514_string() == f"CN={h.name}"
    alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert h.name in alt.get_values_for_type(x509.DNSName)
    assert "127.0.0.1" in {str(ip) for ip in alt.get_values_for_type(x509.IPAddress)}
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days >= 3650
    assert fetch_certificate(sim.master_url(), 5).fingerprint == sim.master_fingerprint()
    member = sim.world.pools["pool0"].hosts[1]
    assert sim.fingerprint(member.mac) != sim.master_fingerprint()  # one certificate per host


def test_no_trust_is_refused_with_the_fix_named(sim):
    since = len(sim.world.call_log)
    with pytest.raises(CertificateRefused) as err:
        driver(sim.master_url()).hosts()
    text = str(err.value)
    assert "not trusted" in text and "self-signed" in text and "pools trust NAME --fingerprint" in text
    assert not calls_to(sim, master(sim), since)  # the login never left the client


def test_a_ca_file_verifies_the_chain_and_the_host_name(sim):
    ca = sim.cert_pem(master(sim).mac).decode()
    assert len(driver(sim.master_url(), ca_pem=ca).hosts()) == 2
    by_name = sim.master_url().replace("127.0.0.1", "localhost")  # not in the certificate's SAN
    with pytest.raises(CertificateRefused, match="not trusted"):
        driver(by_name, ca_pem=ca).hosts()
    other = sim.cert_pem(sim.world.pools["pool0"].hosts[1].mac).decode()  # another host's certificate
    with pytest.raises(CertificateRefused, match="not trusted"):
        driver(sim.master_url(), ca_pem=other).hosts()


def test_a_pinned_fingerprint_is_checked_before_anything_is_sent(sim):
    h = master(sim)
    assert len(driver(sim.master_url(), fingerprint=sim.master_fingerprint()).hosts()) == 2
    since = len(sim.world.call_log)
    with pytest.raises(CertificateRefused) as err:
        driver(sim.master_url(), fingerprint=FP).hosts()
    text = str(err.value)
    assert f"expected SHA-256 {colons(FP)}, got {colons(sim.master_fingerprint())}" in text
    assert "nothing was sent" in text and "pools trust" in text
    assert not calls_to(sim, h, since)


def test_a_swapped_certificate_is_refused_on_the_next_connection(sim):
    h = master(sim)
    pinned = sim.master_fingerprint()
    d = driver(sim.master_url(), fingerprint=pinned)
    assert d.hosts()
    endpoint = sim.endpoints[h.mac]
    endpoint.set_up(False)
    certs.replace(h, certs.make_cert(h.name, certs.addresses_of(h)))  # e.g. someone else now answers there
    endpoint.set_up(True)
    swapped = sim.master_fingerprint()
    since = len(sim.world.call_log)
    with pytest.raises(CertificateRefused) as err:
        d.hosts()
    assert colons(pinned) in str(err.value) and colons(swapped) in str(err.value)
    assert not calls_to(sim, h, since)
    with pytest.raises(CertificateRefused):  # a refused certificate is not "the master is not back yet"
        d.probe_master()
    assert driver(sim.master_url(), fingerprint=swapped).hosts()  # trusting the new one works


def test_a_call_whose_connection_dies_before_the_answer_is_not_sent_again():
    """xmlrpc.client.Transport.request sends a call once more when the connection closes or resets before the answer;
    ours makes one attempt (a host that went down may have carried the call out: never twice)."""
    import socket
    import threading
    import xmlrpc.client

    from provisioner.xapi_tls import transport

    seen = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(10)

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"</methodCall>" not in data:  # the whole call arrived: then close without answering
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                seen.append(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
    proxy = xmlrpc.client.ServerProxy(url, transport=transport(url, 5.0, None), allow_none=True)
    try:
        with pytest.raises((ConnectionError, OSError)):
            proxy.host.reboot("OpaqueRef:h1")
    finally:
        listener.close()
        thread.join(5)
    assert len(seen) == 1 and b"host.reboot" in seen[0]


def test_the_simulator_serves_xapis_tls_policy(sim):
    """xapi's stunnel configuration (docs/xapi.md "TLS"): TLS 1.2 only, its two ECDHE-RSA AES-GCM ciphers."""
    import socket
    import ssl
    from urllib.parse import urlsplit

    parts = urlsplit(sim.master_url())
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
    with client.wrap_socket(socket.create_connection((parts.hostname, parts.port), timeout=5)) as tls:
        assert tls.version() == "TLSv1.2" and tls.cipher()[0] == "ECDHE-RSA-AES256-GCM-SHA384"
    only13 = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    only13.check_hostname, only13.verify_mode = False, ssl.CERT_NONE
    only13.minimum_version = ssl.TLSVersion.TLSv1_3
    with pytest.raises(ssl.SSLError):
        only13.wrap_socket(socket.create_connection((parts.hostname, parts.port), timeout=5)).close()


def test_sessions_are_resumed_and_carry_the_pinned_certificate(sim):
    """A connection offers the peer's last TLS session (xapi_tls.RESUMPTION): the server resumes it (no key
    exchange), and the certificate the resumed connection reports, which the pin is checked against, is the
    one the session was made with."""
    import socket
    from urllib.parse import urlsplit

    from provisioner.xapi_tls import RESUMPTION

    pin = sim.master_fingerprint()
    trust = Trust(fingerprint=pin)
    d = driver(sim.master_url(), fingerprint=pin)
    assert d.hosts() and d.hosts()
    parts = urlsplit(sim.master_url())
    session = RESUMPTION.get((parts.netloc, trust))
    assert session is not None
    raw = socket.create_connection((parts.hostname, parts.port), timeout=5)
    with RESUMPTION.context(trust).wrap_socket(raw, server_hostname=parts.hostname, session=session) as tls:
        assert tls.session_reused
        from provisioner.xapi_tls import fingerprint_of
        assert fingerprint_of(tls.getpeercert(binary_form=True)) == pin
    with pytest.raises(CertificateRefused):  # another pin on the same address: its own context, nothing resumed
        driver(sim.master_url(), fingerprint=FP).hosts()
