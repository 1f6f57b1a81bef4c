"""A TFTP download as a booting host does it (tftpy's client): for the demo, the simulator and checks.

The server side is provisioner.tftp.server; this client shares nothing with it but the wire.
"""

from __future__ import annotations

import io

from tftpy.TftpClient import TftpClient
from tftpy.TftpShared import TftpException, TftpFileNotFoundError


class TftpFetchError(RuntimeError):
    """A TFTP download failed (error packet from the server, or no answer)."""


def fetch(host: str, port: int, name: str, *, blksize: int = 1468, timeout: float = 2.0, retries: int = 3) -> bytes:
    """Download `name` as a booting host would (tftpy's client); for the demo, the simulator and checks.

    Raises FileNotFoundError when the server says "file not found", TftpFetchError on any other failure.
    """
    sink = io.BytesIO()
    try:
        TftpClient(host, port, options={"blksize": blksize}).download(name, sink, timeout=timeout, retries=retries)
    except TftpFileNotFoundError as exc:
        raise FileNotFoundError(f"tftp://{host}:{port}/{name}: file not found") from exc
    except (TftpException, OSError) as exc:
        raise TftpFetchError(f"tftp://{host}:{port}/{name}: {exc}") from exc
    return sink.getvalue()
