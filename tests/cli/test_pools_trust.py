"""`provisioner pools add` / `pools trust` against the HTTPS simulator (docs/xapi.md "TLS"): refused without trust,
accepted with --ca-file, --fingerprint (any spelling) and --trust-on-first-use after confirmation (on a real
terminal, or --yes), refused when the operator says no; a swapped certificate is refused with both fingerprints
until `pools trust`."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import time

import pytest

from provisioner.simulator import certs
from provisioner.simulator.builder import start_simulator
from provisioner.store import Store
from provisioner.xapi_tls import colons

PASSWORD = "s3cret-pool-password"


@pytest.fixture(scope="module")
def sim():
    handle = start_simulator(2, speed=600.0, password=PASSWORD)
    yield handle
    handle.stop()


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "pw"
    path.write_text(PASSWORD + "\n")
    return str(path)


def stored(tmp_path, name="lab"):
    store = Store(tmp_path / "data" / "provisioner.db")
    try:
        return store.get_pool(name)
    finally:
        store.close()


def add(run, sim, secret, *trust, name="lab", input=None):
    return run("pools", "add", name, "--url", sim.master_url(), "--password-file", secret, *trust, input=input)


def test_refused_without_trust(run, sim, secret, tmp_path):
    r = add(run, sim, secret)
    assert r.exit_code == 1 and "exactly one way to trust" in r.output and "--trust-on-first-use" in r.output
    assert stored(tmp_path) is None
    r = add(run, sim, secret, "--fingerprint", sim.master_fingerprint(), "--ca-file", secret)
    assert r.exit_code == 2 and "one of" in r.output


def test_accepted_with_a_ca_file_its_content_stored(run, sim, secret, tmp_path):
    ca = tmp_path / "xapi-ssl.pem"
    ca.write_bytes(sim.cert_pem(sim.world.pools["pool0"].master.mac))
    r = add(run, sim, secret, "--ca-file", str(ca))
    assert r.exit_code == 0, r.output
    ca.unlink()  # the content is stored, not the path
    pool = stored(tmp_path)
    assert pool.tls_ca == sim.cert_pem(sim.world.pools["pool0"].master.mac).decode() and pool.tls_fingerprint is None
    assert run("pools", "discover", "lab").exit_code == 0


@pytest.mark.parametrize("spell", [str, str.upper, colons])
def test_accepted_with_a_fingerprint_with_or_without_colons(run, sim, secret, tmp_path, spell):
    r = add(run, sim, secret, "--fingerprint", spell(sim.master_fingerprint()))
    assert r.exit_code == 0 and "certificate pinned" in r.output, r.output
    assert stored(tmp_path).tls_fingerprint == sim.master_fingerprint()
    found = run("pools", "discover", "lab", "--json")
    assert found.exit_code == 0 and '"added"' in found.output


def test_a_wrong_or_malformed_fingerprint_is_refused_clearly(run, sim, secret, tmp_path):
    wrong = "ab" * 32
    r = add(run, sim, secret, "--fingerprint", wrong)
    assert r.exit_code == 1 and colons(wrong) in r.output and colons(sim.master_fingerprint()) in r.output
    r = add(run, sim, secret, "--fingerprint", "ab:cd")
    assert r.exit_code == 1 and "64 hex digits" in r.output and "has 4" in r.output
    assert stored(tmp_path) is None


def test_trust_on_first_use_needs_a_terminal_or_yes(run, sim, secret, tmp_path):
    r = add(run, sim, secret, "--trust-on-first-use", input="y\n")  # CliRunner's stdin is no terminal
    assert r.exit_code == 2 and "--yes" in r.output and stored(tmp_path) is None
    r = add(run, sim, secret, "--trust-on-first-use", "--yes")
    assert r.exit_code == 0, r.output
    assert colons(sim.master_fingerprint()) in r.output and "CN=pool0-host0" in r.output
    assert stored(tmp_path).tls_fingerprint == sim.master_fingerprint()


def _on_a_terminal(tmp_path, args, answer: str) -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal as stdin/stdout, answer its question, return (exit code, what it showed)."""
    leader, follower = pty.openpty()
    env = {**os.environ, "PROVISIONER_DATA_DIR": str(tmp_path / "data"), "PROVISIONER_CONFIG": ""}
    proc = subprocess.Popen([sys.executable, "-m", "provisioner", *args], stdin=follower, stdout=follower,
                            stderr=follower, env=env)
    os.close(follower)
    shown, deadline = b"", time.monotonic() + 60
    try:
        while b"[y/N]" not in shown and time.monotonic() < deadline and proc.poll() is None:
            shown += os.read(leader, 4096)
        os.write(leader, answer.encode() + b"\n")
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        return proc.wait(timeout=60), shown.decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(leader)


@pytest.mark.parametrize("answer, trusted", [("y", True), ("n", False)])
def test_trust_on_first_use_asks_like_ssh(sim, secret, tmp_path, answer, trusted):
    code, shown = _on_a_terminal(tmp_path, ["pools", "add", "lab", "--url", sim.master_url(), "--password-file",
                                            secret, "--trust-on-first-use"], answer)
    assert colons(sim.master_fingerprint()) in shown and "CN=pool0-host0" in shown and "[y/N]" in shown
    if trusted:
        assert code == 0 and stored(tmp_path).tls_fingerprint == sim.master_fingerprint(), shown
    else:
        assert code == 1 and "not trusted" in shown and stored(tmp_path) is None, shown


def test_a_swapped_certificate_is_refused_until_trusted_again(run, sim, secret, tmp_path):
    h = sim.world.pools["pool0"].master
    pinned = sim.master_fingerprint()
    assert add(run, sim, secret, "--fingerprint", pinned).exit_code == 0
    endpoint = sim.endpoints[h.mac]
    endpoint.set_up(False)
    certs.replace(h, certs.make_cert(h.name, certs.addresses_of(h)))
    endpoint.set_up(True)
    swapped = sim.master_fingerprint()
    r = run("pools", "discover", "lab")
    assert r.exit_code == 1 and colons(pinned) in r.output and colons(swapped) in r.output
    assert "provisioner pools trust NAME" in r.output
    assert run("pools", "trust", "lab", "--fingerprint", pinned).exit_code == 1  # the old pin is checked too
    r = run("pools", "trust", "lab", "--trust-on-first-use", "--yes")
    assert r.exit_code == 0 and colons(swapped) in r.output
    assert run("pools", "discover", "lab").exit_code == 0
    store = Store(tmp_path / "data" / "provisioner.db")
    try:
        changed = store.events(kind="pool.trust")[0]["details"]
    finally:
        store.close()
    assert (changed["old_fingerprint"], changed["fingerprint"], changed["trust_source"]) == \
        (pinned, swapped, "trust-on-first-use")


def test_plain_http_warns_that_the_password_goes_in_clear(run, secret, tmp_path):
    r = run("pools", "add", "lab", "--url", "http://127.0.0.1:9", "--password-file", secret)
    assert r.exit_code == 0 and "in clear text" in r.output
    r = run("pools", "add", "lab", "--url", "http://127.0.0.1:9", "--password-file", secret, "--fingerprint", "ab" * 32)
    assert r.exit_code == 1 and "no certificate" in r.output
