"""Static files over HTTP: media trees and tftp_root, with HEAD, single Range and streamed bodies.

The installer reads its repository (`.treeinfo`, `install.img`, packages) from `/media/<name>/...`, and
lpxelinux / iPXE / GRUB fetch boot loaders and kernels from `/tftp/...` because HTTP is much faster than
TFTP for the 60+ MB `install.img`. Bodies are never read into memory: the open file goes to the WSGI server's
`wsgi.file_wrapper`, which our server (provisioner.web.server) sends with sendfile().

Choices (documented here because clients depend on them):
- Paths: any `..` segment, absolute path, NUL or backslash is refused, and the resolved realpath must stay
  inside the root's realpath, so a symlink leading out of the tree is refused too. Symlinks that stay inside
  are followed (extracted ISOs contain some). Every refusal is a 404 JSON answer plus an `http.refused`
  event; a plain missing file is a 404 without an event (installers probe optional files).
- Directories (with or without a trailing slash) answer 404: the installer only fetches files.
- Range: one range `bytes=a-b`, `bytes=a-` or `bytes=-n` gets 206 + Content-Range; a range starting past
  the end (or `-0`, or any range of an empty file) gets 416 with `Content-Range: bytes */size`. Multi-range
  and malformed Range headers are ignored (200 with the whole file), as RFC 9110 section 14.2 allows: no
  client we serve asks for multipart/byteranges. `If-Range` that does not match also gives the whole file.
- ETag (mtime+size) and Last-Modified are sent; If-None-Match / If-Modified-Since answer 304.
- Fetch callback: if `access.get_on_fetch()` is set (create_app sets one), it is called once per 200/206 answer
  (GET or HEAD), before the body is sent, as `on_fetch(kind=, name=, path=, client_ip=, bytes=)` with kind
  "media" (name = media name) or "tftp_http" (name = ""), path relative to the root, and bytes = the body
  length about to be sent (0 for HEAD). It is a "fetch started" signal for the attempt timeline, not a
  delivery receipt. An exception in it is logged and never fails the download.
"""

from __future__ import annotations

import errno
import logging
import mimetypes
import os
import stat
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from flask import Blueprint, Flask, Response, request
from werkzeug.http import http_date, is_resource_modified, parse_date
from werkzeug.wsgi import wrap_file

from provisioner import sites
from provisioner.boot import urls
from provisioner.paths import real_path_under
from provisioner.web.access import get_config, get_on_fetch, get_store, json_error

log = logging.getLogger(__name__)

bp = Blueprint("files", __name__)

_METHODS = ["GET", "HEAD"]
# Block size for servers that iterate the file wrapper (tests, wsgiref); waitress+sendfile ignores it.
_BLOCK = 1 << 20


class Unsatisfiable(Exception):
    """The Range header names no byte of the file: 416."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """Parse a Range header against a file of `size` bytes: (start, end_exclusive), or None to send it all.

    Raises Unsatisfiable for a well-formed single range that selects nothing. Multi-range, other units and
    malformed values return None (serve the whole file).
    """
    if not header:
        return None
    unit, sep, spec = header.strip().partition("=")
    if not sep or unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    first, last = first.strip(), last.strip()
    if not dash or not (first + last).isdigit() or not (first.isascii() and last.isascii()):
        return None
    if not first:  # suffix: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            raise Unsatisfiable
        return max(0, size - n), size
    start = int(first)
    end = int(last) + 1 if last else size
    if last and end <= start:
        return None  # "bytes=5-2" is invalid syntax-wise: ignore the header
    if start >= size:
        raise Unsatisfiable
    return start, min(end, size)


class _Window:
    """A read-only view of bytes [start, end) of an open file, so a mid-file range served through any
    server's file_wrapper stops at `end` (PEP 3333 wrappers read to EOF). No fileno(): a sendfile path
    must not bypass the window."""

    def __init__(self, file: IO[bytes], start: int, end: int):
        self._file, self._start, self._end = file, start, end
        file.seek(start)

    def read(self, n: int = -1) -> bytes:
        left = self._end - self._file.tell()
        if left <= 0:
            return b""
        return self._file.read(left if n is None or n < 0 else min(n, left))

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: self._start, 1: self._file.tell(), 2: self._end}[whence]
        return self._file.seek(min(max(base + offset, self._start), self._end)) - self._start

    def tell(self) -> int:
        return self._file.tell() - self._start

    def seekable(self) -> bool:
        return True

    def close(self) -> None:
        self._file.close()


def _refuse(kind: str, name: str, relpath: str, reason: str) -> Response:
    details = {"kind": kind, "name": name, "path": relpath, "reason": reason, "client_ip": request.remote_addr}
    log.warning("HTTP refused %s path %r from %s: %s", kind, relpath, request.remote_addr, reason)
    try:
        get_store().add_event("http.refused", details=details)
    except Exception:  # the refusal must still be answered even if the event log is unwritable
        log.exception("could not record http.refused event")
    return _not_found()


def _not_found() -> Response:
    return json_error(404, "not found")


def _resolve(root: Path | str, relpath: str) -> tuple[str | None, str | None]:
    """(realpath, None) for a path inside root, or (None, reason) when it must be refused."""
    parts = relpath.split("/")
    if "\\" in relpath or "\0" in relpath:
        return None, "backslash or NUL in the path"
    if relpath.startswith("/") or ".." in parts:
        return None, "path escapes the root"
    real = real_path_under(root, relpath)
    if real is None:
        return None, "symlink leads out of the root"
    return real, None


def _open_regular(real: str) -> IO[bytes]:
    """Open a regular file for reading without ever blocking: OSError for anything else.

    O_NONBLOCK: open() of a FIFO with no writer blocks forever (40 requests once took 15 of 16 worker threads);
    O_NOFOLLOW: `real` is already resolved, so a symlink here was swapped in since (ELOOP). fstat() then
    refuses directories, FIFOs, sockets and devices; the flag is cleared for the regular file that is left.
    """
    fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.ENOENT, "not a regular file", real)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _notify(kind: str, name: str, relpath: str, nbytes: int) -> None:
    callback = get_on_fetch()
    if callback is None:
        return
    try:
        callback(kind=kind, name=name, path=relpath, client_ip=request.remote_addr, bytes=nbytes)
    except Exception:  # the timeline is best effort; the boot must not fail because of it
        log.exception("on_fetch callback failed for %s %r", kind, relpath)


def _if_range_matches(value: str, etag: str, mtime: int) -> bool:
    value = value.strip()
    if value.startswith(('"', "W/")):
        return value == etag  # strong comparison; weak tags never match (RFC 9110 13.1.5)
    when = parse_date(value)
    return when is not None and int(when.timestamp()) == mtime


def serve_file(root: Path | str, relpath: str, *, kind: str, name: str = "") -> Response:
    """Answer GET/HEAD for `relpath` under `root` (used by both routes; see the module docstring)."""
    real, reason = _resolve(root, relpath)
    if real is None:
        return _refuse(kind, name, relpath, reason or "refused")
    if relpath == "" or relpath.endswith("/"):
        return _not_found()  # a directory URL: we serve files only, no listings
    try:
        file: IO[bytes] | None = _open_regular(real)
    except PermissionError:
        return _refuse(kind, name, relpath, "permission denied")
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENAMETOOLONG):  # a symlink loop, a name over NAME_MAX/PATH_MAX
            return _refuse(kind, name, relpath, os.strerror(exc.errno))
        return _not_found()  # missing, a directory, a FIFO or device (see _open_regular)
    try:
        st = os.fstat(file.fileno())
        size, mtime = st.st_size, int(st.st_mtime)
        etag = f'"{st.st_mtime_ns:x}-{size:x}"'
        headers: dict[str, Any] = {
            "Content-Type": mimetypes.guess_type(real)[0] or "application/octet-stream",
            "Accept-Ranges": "bytes",
            "ETag": etag,
            "Last-Modified": http_date(mtime),
        }
        if not is_resource_modified(request.environ, etag=etag,
                                    last_modified=datetime.fromtimestamp(mtime, timezone.utc)):
            return Response(status=304, headers=headers)
        if_range = request.headers.get("If-Range")
        try:
            span = parse_range(request.headers.get("Range"), size)
        except Unsatisfiable:
            if if_range is None or _if_range_matches(if_range, etag, mtime):
                headers["Content-Range"] = f"bytes */{size}"
                resp = json_error(416, "range not satisfiable", size=size)
                resp.headers.update(headers | {"Content-Type": "application/json"})
                return resp
            span = None
        if span is not None and if_range is not None and not _if_range_matches(if_range, etag, mtime):
            span = None
        start, end = span if span is not None else (0, size)
        status = 206 if span is not None else 200
        if span is not None:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        headers["Content-Length"] = str(end - start)
        head = request.method == "HEAD"
        _notify(kind, name, relpath, 0 if head else end - start)
        if head:
            return Response(status=status, headers=headers)
        # To EOF: hand the real file over (the server may sendfile() it); mid-file: a bounded window.
        body = file if end == size else _Window(file, start, end)
        if end == size:
            file.seek(start)
        resp = Response(wrap_file(request.environ, body, _BLOCK), status=status, headers=headers,
                        direct_passthrough=True)
        file = None  # the server closes it via the wrapper's close()
        return resp
    finally:
        if file is not None:
            file.close()


@bp.route(f"{urls.MEDIA_PREFIX}/<name>/", defaults={"relpath": ""}, methods=_METHODS)
@bp.route(f"{urls.MEDIA_PREFIX}/<name>/<path:relpath>", methods=_METHODS)
def media_file(name: str, relpath: str) -> Response:
    media = sites.local_media(get_store(), get_config(), get_store().get_media(name))  # this server's copy
    if media is None:
        return _not_found()
    return serve_file(media.path, relpath, kind="media", name=name)


@bp.route(f"{urls.MEDIA_PREFIX}/<name>/{urls.PACKS_PART}/<pack>/", defaults={"relpath": ""}, methods=_METHODS)
@bp.route(f"{urls.MEDIA_PREFIX}/<name>/{urls.PACKS_PART}/<pack>/<path:relpath>", methods=_METHODS)
def pack_file(name: str, pack: str, relpath: str) -> Response:
    """A file of a media's supplemental pack or driver disk (packs.py); the media's own tree when no such pack."""
    found = get_store().get_pack(name, pack)
    if found is None:
        return media_file(name, f"{urls.PACKS_PART}/{pack}/{relpath}")
    return serve_file(found.path, relpath, kind="pack", name=f"{name}/{pack}")


@bp.route(f"{urls.TFTP_FILES_PREFIX}/<path:relpath>", methods=_METHODS)
def tftp_file(relpath: str) -> Response:
    return serve_file(get_config().tftp_root, relpath, kind="tftp_http")


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
