"""Trusting the simulator's self-signed XAPI certificates in tests (docs/xapi.md "TLS").

The product side pins a host's fingerprint (`trust(sim)`, what `pools add --fingerprint` stores). Tests of the
simulator's own XAPI semantics talk to it with the real XenAPI package over HTTPS verified against the
certificate the host presents at that moment (read first, like trust-on-first-use), so each call still does a real
verified handshake with host-name checking.
"""

from __future__ import annotations

import ssl
import urllib.parse
import xmlrpc.client

import XenAPI

from provisioner.xapi_tls import ClosingSSLSocket


def trust(sim, pool: str | None = None) -> dict:
    """add_pool's trust arguments for the simulated pool's master: its pinned fingerprint."""
    return {"fingerprint": sim.master_fingerprint(pool)}


def context(url: str) -> ssl.SSLContext | None:
    """A verifying client context whose only CA is the certificate the server at `url` presents (None: http)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https":
        return None
    pem = ssl.get_server_certificate((parts.hostname, parts.port), timeout=10)
    ctx = ssl.create_default_context(cadata=pem)
    ctx.sslsocket_class = ClosingSSLSocket  # a reset handshake leaves no descriptor behind (xapi_tls.py)
    return ctx


class _Transport(xmlrpc.client.SafeTransport):
    def __init__(self, ctx: ssl.SSLContext, timeout: float | None):
        super().__init__(context=ctx)
        self.timeout = timeout

    def make_connection(self, host):
        conn = super().make_connection(host)
        if self.timeout is not None:
            conn.timeout = self.timeout
        return conn


def transport(url: str, timeout: float | None = None):
    ctx = context(url)
    return _Transport(ctx, timeout) if ctx else None


def session(url: str, timeout: float | None = None) -> XenAPI.Session:
    """XenAPI.Session on a simulated host, its certificate trusted (not logged in)."""
    return XenAPI.Session(url, transport=transport(url, timeout))


def proxy(url: str) -> xmlrpc.client.ServerProxy:
    """A raw XML-RPC proxy on a simulated host, its certificate trusted."""
    return xmlrpc.client.ServerProxy(url, context=context(url))
