"""How the XenAPI driver trusts a pool's HTTPS certificate, and its XML-RPC transports (docs/xapi.md "TLS").

XenServer hosts serve XAPI with a self-signed certificate (xen-api ocaml/gencert), so the system CA store never
trusts one. A pool is trusted in one of two ways, stored with it:
- a CA (PEM text): normal verification, the chain and the URL's host name or IP against the certificate's SAN;
- a pinned SHA-256 fingerprint of the DER certificate: the chain is not verified (it is self-signed), but the
  certificate the peer presents must be exactly that one, checked right after the handshake of EVERY connection,
  before the first byte of a request (so before a password is sent).
With neither (a pool stored before trust existed), https is verified against the system CA store as before, and a
self-signed certificate fails with a message naming the fix. Verification is never silently off.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import ssl
import threading
import urllib.parse
import xmlrpc.client
from dataclasses import dataclass

FINGERPRINT_HEX = 64  # SHA-256

TRUST_FIX = ("trust it with `provisioner pools trust NAME --fingerprint SHA256` (or --ca-file FILE, or "
             "--trust-on-first-use), or re-add the pool with one of these")


class TrustFailure(ssl.SSLError):
    """The peer's certificate is not the one trusted (a pin mismatch, or a chain the CA does not sign)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class FingerprintMismatch(TrustFailure):
    def __init__(self, host: str, expected: str, got: str):
        super().__init__(f"{host} presented another certificate than the trusted one: expected SHA-256 "
                         f"{colons(expected)}, got {colons(got)} (a wrong fingerprint, or the host was reinstalled "
                         f"or its certificate replaced, or someone is in between); nothing was sent. If the new "
                         f"certificate is expected, {TRUST_FIX}")
        self.expected, self.got = expected, got


def normalize_fingerprint(text: str) -> str:
    """'AB:CD:...' or 'abcd...' (64 hex digits, colons and spaces optional, any case) -> lower-case hex; ValueError
    saying what is wrong otherwise."""
    cleaned = re.sub(r"[\s:]", "", str(text or "")).lower()
    if cleaned.startswith("sha256") and "=" in cleaned:  # `openssl x509 -fingerprint -sha256`: sha256 Fingerprint=
        cleaned = cleaned.split("=", 1)[1]
    if not re.fullmatch(r"[0-9a-f]*", cleaned):
        raise ValueError("a SHA-256 fingerprint is 64 hex digits (colons optional); this one has other characters")
    if len(cleaned) != FINGERPRINT_HEX:
        raise ValueError(f"a SHA-256 fingerprint is 64 hex digits (colons optional); this one has {len(cleaned)}")
    return cleaned


def colons(fingerprint: str) -> str:
    """aabb... -> AA:BB:... (how openssl and XenCenter show it)."""
    return ":".join(fingerprint[i:i + 2] for i in range(0, len(fingerprint), 2)).upper()


def fingerprint_of(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


@dataclass(frozen=True)
class Trust:
    """What a pool's (or a new host's) certificate is checked against: a pin, a CA, or (both None) the system CAs."""

    fingerprint: str | None = None
    ca_pem: str | None = None

    def __post_init__(self):
        if self.fingerprint and self.ca_pem:
            raise ValueError("trust a pool by a CA file or by a fingerprint, not both")

    @property
    def kind(self) -> str:
        return "fingerprint" if self.fingerprint else "ca" if self.ca_pem else "system"

    def describe(self) -> str:
        if self.fingerprint:
            return f"certificate pinned (SHA-256 {colons(self.fingerprint)})"
        return "certificate checked against the stored CA" if self.ca_pem else "system CA store"

    def context(self) -> ssl.SSLContext:
        """The client context: CA -> full verification with the host name; pin -> chain unchecked (the pin is
        checked after the handshake, _PinnedConnection); system -> the default context."""
        if self.fingerprint:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE  # self-signed: the pin replaces the chain (module docstring)
        elif self.ca_pem:
            try:
                ctx = ssl.create_default_context(cadata=self.ca_pem)
            except ssl.SSLError as exc:
                raise ValueError(f"the CA file holds no usable PEM certificate ({exc.reason or exc})") from None
        else:
            ctx = ssl.create_default_context()
        ctx.sslsocket_class = ClosingSSLSocket
        return ctx


class ClosingSSLSocket(ssl.SSLSocket):
    """An SSLSocket that closes its descriptor when wrapping fails. CPython 3.11's SSLSocket._create takes the
    descriptor over from the TCP socket, then re-raises an ECONNRESET from its 'are we connected' probe without
    closing it (a master whose xapi stops while we connect resets the connection there): the descriptor stayed
    open until the garbage collector found it (a ResourceWarning). docs/xapi.md "TLS"."""

    @classmethod
    def _create(cls, *args, **kwargs):
        _made.sock = None
        try:
            return super()._create(*args, **kwargs)
        except BaseException:
            half = getattr(_made, "sock", None)
            if half is not None and half.fileno() != -1:
                half.close()
            raise
        finally:
            _made.sock = None

    def __new__(cls, *args, **kwargs):
        self = super().__new__(cls, *args, **kwargs)
        _made.sock = self  # the socket _create is building on this thread (closed by _create if it fails)
        return self


_made = threading.local()


def check_ca_pem(text: str) -> str:
    """The CA file's content if it holds at least one PEM certificate ssl can load; ValueError otherwise."""
    if "-----BEGIN CERTIFICATE-----" not in (text or ""):
        raise ValueError("the CA file holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    Trust(ca_pem=text).context()
    return text


class _Tracked:
    """A connection that remembers its socket and its last response, so the transport can close both after every
    request (xapi closes the connection after each answer, HTTP/1.0): http.client hands the socket to the
    response, and when a host goes down mid-answer neither xmlrpc's Transport.close() nor the garbage collector
    closes it in time (a ResourceWarning; an fd left open)."""

    _opened = None
    _response = None

    def connect(self):
        super().connect()
        self._opened = self.sock

    def getresponse(self):
        self._response = super().getresponse()
        return self._response

    def release(self):
        for thing in (self._response, self._opened):
            if thing is not None:
                thing.close()
        self._response = self._opened = None
        self.close()


class _HttpConnection(_Tracked, http.client.HTTPConnection):
    pass


class _Resumption:
    """The TLS sessions this process may resume: for each (host:port, trust) the client context its connections
    use and the last session a trusted connection there got. A new connection offers that session; a server that
    still has it resumes it (stunnel's session cache and tickets, as xapi configures it: docs/xapi.md "TLS") with
    no key exchange and no certificate signature, one that does not (restarted, reinstalled, another machine)
    makes a full handshake. The certificate check after the handshake is the same either way: a resumed session
    carries the certificate it was made with."""

    def __init__(self):
        self.lock = threading.Lock()
        self.contexts: dict[Trust, ssl.SSLContext] = {}
        self.sessions: dict[tuple[str, Trust], ssl.SSLSession] = {}

    def context(self, trust: Trust) -> ssl.SSLContext:
        """One context per trust (a session is resumable only with the context that made it)."""
        with self.lock:
            found = self.contexts.get(trust)
        if found is None:
            made = trust.context()  # outside the lock: loading the system CA store takes a while
            with self.lock:
                found = self.contexts.setdefault(trust, made)
        return found

    def get(self, key: tuple[str, Trust]) -> ssl.SSLSession | None:
        with self.lock:
            return self.sessions.get(key)

    def keep(self, key: tuple[str, Trust], sock: ssl.SSLSocket) -> None:
        session = sock.session
        if session is not None:
            with self.lock:
                self.sessions[key] = session


RESUMPTION = _Resumption()


class _HttpsConnection(_Tracked, http.client.HTTPSConnection):
    pin: str | None = None
    resume: tuple[str, Trust] | None = None  # where RESUMPTION keeps this peer's session; None: never resumed
    trusted = False  # the peer passed the certificate check (only then is its session kept)

    def connect(self):
        """http.client's HTTPSConnection.connect, offering the peer's last session, then the pin check."""
        http.client.HTTPConnection.connect(self)  # the TCP connection (TCP_NODELAY set by http.client)
        self._opened = self.sock
        session = RESUMPTION.get(self.resume) if self.resume is not None else None
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self.host, session=session)
        self._opened = self.sock
        if self.pin is not None:
            got = fingerprint_of(self.sock.getpeercert(binary_form=True) or b"")
            if got != self.pin:  # checked before the first request byte: nothing is sent to this peer
                self.release()
                raise FingerprintMismatch(f"{self.host}:{self.port}", self.pin, got)
        self.trusted = True

    def getresponse(self):
        """The answer; then the session is kept (a TLS 1.3 ticket arrives after the handshake, with the first data;
        later the socket is closed with the response, and its session with it)."""
        sock = self.sock
        response = super().getresponse()
        if self.trusted and self.resume is not None and isinstance(sock, ssl.SSLSocket):
            try:
                RESUMPTION.keep(self.resume, sock)
            except (OSError, ValueError):
                pass
        return response


class _Transport(xmlrpc.client.Transport):
    """One new connection per request, closed with its response whatever happens; every connection has a timeout
    (the SDK has none: a hung master would block a step forever, docs/xapi.md "The XenAPI Python package")."""

    def __init__(self, timeout: float, trust: Trust | None = None):
        super().__init__()
        self.timeout, self.trust = timeout, trust
        self.context = RESUMPTION.context(trust) if trust is not None else None
        self._mine = threading.local()  # the request's connection, per thread: a driver may be shared

    def make_connection(self, host):
        chost, self._extra_headers, _ = self.get_host_info(host)
        if self.trust is None:
            conn = _HttpConnection(chost, timeout=self.timeout)
        else:
            conn = _HttpsConnection(chost, timeout=self.timeout, context=self.context)
            conn.pin, conn.resume = self.trust.fingerprint, (chost, self.trust)
        self._mine.conn = conn  # not self._connection: no connection is kept between requests
        return conn

    def request(self, host, handler, request_body, verbose=False):
        """One attempt. xmlrpc.client.Transport.request sends the call a second time when the connection closes or
        resets before the answer (meant for a kept connection gone cold); ours are never kept, so such a reset means
        the host went down with the call possibly carried out, and a destructive call must not be sent twice
        (docs/xapi.md "The XenAPI Python package"). The error reaches the caller, which reads the world again."""
        return self.single_request(host, handler, request_body, verbose)

    def single_request(self, host, handler, request_body, verbose=False):
        self._mine.conn = None
        try:
            return super().single_request(host, handler, request_body, verbose)
        finally:
            conn, self._mine.conn = self._mine.conn, None
            if conn is not None:
                conn.release()


def transport(url: str, timeout: float, trust: Trust | None) -> xmlrpc.client.Transport:
    """The XML-RPC transport for `url`: plain HTTP, or HTTPS checked as `trust` says."""
    if urllib.parse.urlsplit(url).scheme == "https":
        return _Transport(timeout, trust or Trust())
    return _Transport(timeout)


def put_file(url: str, path: str, trust: Trust | None, timeout: float) -> tuple[int, str]:
    """HTTP PUT of the file at `path` to `url` (http, or https checked as `trust` says, the pin before any byte is
    sent), streamed with its Content-Length: (status, the first 4 KiB of the body). OSError when it fails."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https":
        trust = trust or Trust()
        conn = _HttpsConnection(parts.netloc, timeout=timeout, context=trust.context())
        conn.pin = trust.fingerprint
    else:
        conn = _HttpConnection(parts.netloc, timeout=timeout)
    try:
        with open(path, "rb") as body:
            target = parts.path + (f"?{parts.query}" if parts.query else "")
            conn.request("PUT", target, body=body, headers={"Content-Length": str(os.path.getsize(path)),
                                                            "Content-Type": "application/octet-stream"})
            response = conn.getresponse()
            return response.status, response.read(4096).decode("utf-8", "replace")
    finally:
        conn.release()


def explain(exc: BaseException, url: str) -> str | None:
    """A clear message when `exc` is a certificate refusal (None otherwise): what failed and how to fix it."""
    if isinstance(exc, TrustFailure):
        return str(exc)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"{url}: the certificate is not trusted ({exc.verify_message or exc.reason}); XenServer hosts "
                f"serve a self-signed certificate: {TRUST_FIX}")
    return None


@dataclass(frozen=True)
class PeerCertificate:
    fingerprint: str
    der: bytes


def fetch_certificate(url: str, timeout: float) -> PeerCertificate:
    """The certificate the server at `url` presents, unverified (for trust-on-first-use: its fingerprint is shown
    to the operator, or pinned by the reinstall flow, before anything is sent). OSError when it does not answer."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"{url[:200]!r} is not an https URL: there is no certificate to trust")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # we only read the certificate; nothing is sent over this connection
    ctx.sslsocket_class = ClosingSSLSocket
    with socket.create_connection((parts.hostname, parts.port or 443), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname=parts.hostname) as tls:
            der = tls.getpeercert(binary_form=True) or b""
    return PeerCertificate(fingerprint_of(der), der)


def handshake(url: str, trust: Trust, timeout: float) -> str:
    """One TLS handshake with `url` checked as `trust` says, nothing sent: the fingerprint of the certificate it
    presented. TrustFailure / ssl.SSLCertVerificationError when refused (explain() words it), OSError when the
    server does not answer."""
    parts = urllib.parse.urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port or 443), timeout=timeout) as raw:
        with trust.context().wrap_socket(raw, server_hostname=parts.hostname) as tls:
            got = fingerprint_of(tls.getpeercert(binary_form=True) or b"")
    if trust.fingerprint and got != trust.fingerprint:
        raise FingerprintMismatch(f"{parts.hostname}:{parts.port or 443}", trust.fingerprint, got)
    return got
