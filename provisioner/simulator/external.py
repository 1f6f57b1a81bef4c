"""The external-command power cycle of a simulated machine (machine.Machine with external_command).

The whole power cycle is handed to a command (e.g. a QEMU VM, or `python -m provisioner.simulator.process`) with
the machine's settings in its environment; its stdout is the JSON version an install put on the disk, or empty;
exit EXIT_NO_SYSTEM means the disk holds no bootable system (the host stays down).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import threading
from typing import Mapping

EXIT_NO_SYSTEM = 86  # the power cycle ended at "no bootable device" (machine.NO_SYSTEM)


def run_external(command: str | list[str], env: Mapping[str, str],
                 stop_event: threading.Event) -> tuple[int, dict | None, str]:
    """Run `command` (a shell string or an argv) with `env` added to this environment, until it exits or
    `stop_event` is set (then its whole process group is killed). Returns (exit code, version or None, detail:
    what went wrong, empty when nothing did)."""
    argv = ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)
    with subprocess.Popen(argv, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          start_new_session=True) as proc:
        while True:  # a never-returning machine is released by stop(), like an in-process one
            try:
                stdout, stderr = proc.communicate(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                if stop_event.is_set():  # its whole process group: children hold the pipes open
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
    out, version, detail = stdout.decode(errors="replace").strip(), None, ""
    if proc.returncode != 0:
        detail = f"{shlex.join(argv)} exited {proc.returncode}: {stderr.decode(errors='replace')[:300]}"
    elif out:
        try:
            version = json.loads(out)
        except ValueError:
            detail = f"stdout is not JSON: {out[:200]!r}"
        if version is not None and not isinstance(version, dict):
            detail, version = f"stdout is not a JSON object: {out[:200]!r}", None
    return proc.returncode, version, detail
