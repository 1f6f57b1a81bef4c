"""The systemd unit (deploy/provisioner.service) and `serve` as an unprivileged user with only CAP_NET_BIND_SERVICE.

systemd is not PID 1 here, so the unit is checked with `systemd-analyze verify` and the way it runs serve is
reproduced with setpriv (util-linux): the same user switch and the same single ambient capability.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest

from provisioner.tftp.client import fetch

from port_locks import privileged_port_pair

REPO = Path(__file__).resolve().parents[1]
NOBODY = 65534  # an unprivileged uid/gid every Debian system has
CAP_NET_BIND_SERVICE = 1 << 10  # linux/capability.h


def _render_unit(out: Path) -> str:
    subprocess.run(["make", "-s", "-C", str(REPO), "service-unit", f"UNIT_OUT={out}"], check=True)
    return out.read_text()


def test_the_unit_passes_systemd_analyze_verify(tmp_path):
    unit = _render_unit(tmp_path / "provisioner.service")
    assert f"ExecStart={REPO / '.venv' / 'bin' / 'provisioner'} serve\n" in unit  # this venv's entry point
    proc = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "provisioner.service")],
                          capture_output=True, text=True)
    # verify warns about unknown keys on stderr but still exits 0: a clean unit says nothing at all
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    for line in ("User=provisioner", "StateDirectory=provisioner", "Environment=PROVISIONER_DATA_DIR=%S/provisioner",
                 "AmbientCapabilities=CAP_NET_BIND_SERVICE", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
                 "NoNewPrivileges=yes", "Restart=on-failure"):
        assert f"\n{line}\n" in unit, line


def test_verify_catches_a_unit_whose_entry_point_is_missing():
    """The repository's own file names /opt/provisioner: verify refuses it until install-service rewrites it."""
    proc = subprocess.run(["systemd-analyze", "verify", str(REPO / "deploy" / "provisioner.service")],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "/opt/provisioner/.venv/bin/provisioner is not executable" in proc.stderr


@pytest.fixture
def unprivileged_setup(code_for_nobody):
    """A data dir and tftp_root the unprivileged user owns/reads, outside root's 0700 pytest temp dir."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to an unprivileged user")
    top = Path(tempfile.mkdtemp(prefix="provisioner-deploy-"))
    os.chmod(top, 0o755)
    (top / "root").mkdir()
    (top / "root" / "hello.bin").write_bytes(b"served to a booting host\n" * 100)
    os.chmod(top / "root" / "hello.bin", 0o644)
    (top / "data").mkdir()
    os.chown(top / "data", NOBODY, NOBODY)
    with privileged_port_pair() as (tftp_port, http_port):  # held while serve runs: no other worker takes it
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")},
               "PROVISIONER_CONFIG": "", "PROVISIONER_DATA_DIR": str(top / "data"),
               "PROVISIONER_TFTP_ROOT": str(top / "root"), "PROVISIONER_BIND_ADDRESS": "127.0.0.1",
               "PROVISIONER_TFTP_PORT": str(tftp_port), "PROVISIONER_HTTP_PORT": str(http_port),
               "PYTHONUNBUFFERED": "1", "HOME": str(top), "PYTHONPATH": os.pathsep.join(code_for_nobody)}
        yield top, env, tftp_port, http_port
    shutil.rmtree(top, ignore_errors=True)


def _readable_by_nobody(path: Path) -> bool:
    return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "test", "-r",
                           str(path)]).returncode == 0


_SKIP_FOR_NOBODY = ("playwright", "pip", "setuptools", "hypothesis", "_pytest", "pytest", "__pycache__")


@pytest.fixture(scope="module")
def code_for_nobody():
    """What the unprivileged user imports: this checkout and the venv's packages when it can read them; else a
    world-readable copy of both (CI clones into a 0700 `mktemp -d`, and /root is 0700). A real deployment puts its
    checkout and venv where the service user can read them (docs/deploy.md); the copy stands for that."""
    site = next(p for p in sys.path if p.endswith("site-packages") and p.startswith(sys.prefix))
    if _readable_by_nobody(REPO / "provisioner" / "__init__.py") and _readable_by_nobody(Path(site) / "flask"):
        yield [str(REPO), site]
        return
    top = Path(tempfile.mkdtemp(prefix="provisioner-code-"))
    os.chmod(top, 0o755)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for part in ("provisioner", "answerfiles", "tftp_root"):
        shutil.copytree(REPO / part, top / "code" / part, ignore=ignore)
    for entry in Path(site).iterdir():
        if entry.is_dir() and not entry.name.startswith(_SKIP_FOR_NOBODY):
            shutil.copytree(entry, top / "site" / entry.name, ignore=ignore)
        elif entry.is_file() and entry.suffix in (".py", ".pth") and not entry.name.startswith("__editable__"):
            (top / "site").mkdir(exist_ok=True)
            shutil.copy2(entry, top / "site" / entry.name)
    subprocess.run(["chmod", "-R", "a+rX", str(top)], check=True)
    assert _readable_by_nobody(top / "code" / "provisioner" / "__init__.py")
    yield [str(top / "code"), str(top / "site")]
    shutil.rmtree(top, ignore_errors=True)


def _python_for_nobody(env: dict[str, str]) -> str:
    """An interpreter the unprivileged user can execute. This machine's venv links into /root/.pyenv (/root is
    0700), so serve's own re-executions of sys.executable (its TFTP worker processes) are refused there; a real
    deployment builds its venv from a Python the service user can run (docs/deploy.md). Here the system Python of
    the same minor version runs the same code and the same installed packages (PYTHONPATH, set by the
    unprivileged_setup fixture from code_for_nobody)."""
    probe = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "test", "-x",
                            os.path.realpath(sys.executable)])
    if probe.returncode == 0:
        return sys.executable
    system = shutil.which(f"python{sys.version_info.major}.{sys.version_info.minor}", path="/usr/bin")
    assert system, f"no /usr/bin python{sys.version_info.major}.{sys.version_info.minor} for the unprivileged user"
    return system


def _setpriv(env: dict[str, str], *caps: str) -> list[str]:
    argv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    if caps:
        argv += [f"--inh-caps=+{','.join(caps)}", f"--ambient-caps=+{','.join(caps)}"]
    return argv + [_python_for_nobody(env), "-m", "provisioner", "serve"]


def _caps(pid: int) -> dict[str, int]:
    fields = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                  if ":\t" in line)
    return {"uid": int(fields["Uid"].split()[1]), "CapEff": int(fields["CapEff"], 16),
            "CapPrm": int(fields["CapPrm"], 16)}


def test_serve_runs_as_an_unprivileged_user_with_only_net_bind_service(unprivileged_setup):
    top, env, tftp_port, http_port = unprivileged_setup
    proc = subprocess.Popen(_setpriv(env, "net_bind_service"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        first = proc.stdout.readline()
        if f"TFTP on udp 127.0.0.1:{tftp_port}, HTTP on http://127.0.0.1:{http_port}" not in first:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"serve did not start: {first!r} {out!r} {err!r}")
        assert _caps(proc.pid) == {"uid": NOBODY, "CapEff": CAP_NET_BIND_SERVICE, "CapPrm": CAP_NET_BIND_SERVICE}
        body = (top / "root" / "hello.bin").read_bytes()
        assert fetch("127.0.0.1", tftp_port, "hello.bin") == body
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/tftp/hello.bin", timeout=10) as answer:
            assert answer.read() == body
        assert (top / "data" / "provisioner.db").stat().st_uid == NOBODY  # its store, in the data dir it owns
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "stopping" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_without_the_capability_the_privileged_ports_are_refused_clearly(unprivileged_setup):
    """The control: the same user without CAP_NET_BIND_SERVICE cannot bind them, and says so."""
    _, env, _, _ = unprivileged_setup
    proc = subprocess.run(_setpriv(env), env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "cannot start" in proc.stderr and "Permission denied" in proc.stderr, proc.stderr


def test_serve_refuses_root_and_names_the_fix(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("checks the refusal as root")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}, "PROVISIONER_CONFIG": "",
           "PROVISIONER_DATA_DIR": str(tmp_path / "d"), "PROVISIONER_TFTP_ROOT": str(tmp_path),
           "PROVISIONER_BIND_ADDRESS": "127.0.0.1", "PROVISIONER_TFTP_PORT": "0", "PROVISIONER_HTTP_PORT": "0"}
    proc = subprocess.run([sys.executable, "-m", "provisioner", "serve"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""
    assert "refusing to run as root" in proc.stderr
    for fix in ("CAP_NET_BIND_SERVICE", "deploy/provisioner.service", "--allow-root", "allow_root"):
        assert fix in proc.stderr, fix
    assert not (tmp_path / "d" / "provisioner.db").exists()  # refused before anything was opened


@pytest.mark.parametrize("how", [["--allow-root"], "env"])
def test_serve_runs_as_root_when_told(tmp_path, how):
    if os.geteuid() != 0:
        pytest.skip("checks the override as root")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}, "PROVISIONER_CONFIG": "",
           "PROVISIONER_DATA_DIR": str(tmp_path / "d"), "PROVISIONER_TFTP_ROOT": str(tmp_path),
           "PROVISIONER_BIND_ADDRESS": "127.0.0.1", "PROVISIONER_TFTP_PORT": "0", "PROVISIONER_HTTP_PORT": "0"}
    if how == "env":
        env["PROVISIONER_ALLOW_ROOT"] = "1"
    proc = subprocess.Popen([sys.executable, "-m", "provisioner", "serve", *(how if how != "env" else [])], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "HTTP on" in proc.stdout.readline()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_doctor_as_the_service_user_sees_what_it_cannot_read(unprivileged_setup):
    """Run as the service user (as docs/deploy.md says to), doctor names a tftp_root or loader that user cannot read,
    which root's view would miss."""
    from provisioner.boot import loaders
    from provisioner.config import load_config

    top, env, _, _ = unprivileged_setup
    loaders.prepare_tftp_root(load_config(file=None, environ={}, overrides={"tftp_root": top / "root",
                                                                          "data_dir": top / "data"}))
    argv = _setpriv(env)[:-1] + ["doctor", "--json"]  # same user and interpreter as serve, no capability

    def loaders_finding() -> dict:
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1 and proc.stdout.startswith("["), proc.stdout + proc.stderr  # probes fail too
        return next(f for f in json.loads(proc.stdout) if f["code"] == "loaders.missing")

    os.chmod(top / "root", 0o700)
    found = loaders_finding()
    assert found["status"] == "fail" and f"cannot be read by this user (uid {NOBODY})" in found["message"]
    assert "chmod o+rx" in found["fix"]
    os.chmod(top / "root", 0o755)
    os.chmod(top / "root" / "mboot.c32", 0o600)
    found = loaders_finding()
    assert found["status"] == "fail" and found["message"].startswith("mboot.c32 in ") and "chmod a+r" in found["fix"]
    os.chmod(top / "root" / "mboot.c32", 0o644)
    assert loaders_finding()["status"] == "ok"
