"""Syncing an update repository on the simulated coordinator: fetch it (a mirror URL over HTTP(S), a remote pool's
coordinator over HTTPS pinned to its certificate, or a bundle already unpacked), check it as reposync does, and
record what xapi records (docs/xapi.md "Update repositories").

Sources: ocaml/xapi/repository.ml:150-320 (sync: per origin, the auth and the error codes), :428-489
(set_available_updates: hash, latest_synced_updates_applied), xapi_pool.ml:4099-4127 (sync_repos, sync_updates,
last_update_sync). The content is read with repo_format (the simulator's own reader), never the product's.
"""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
import xmlrpc.client
from typing import TYPE_CHECKING, Callable

from . import repo_format as rf
from . import updates as up
from .db import xapi_datetime
from .errors import XapiError
from .hosts import SimPool

if TYPE_CHECKING:
    from .world import World

FETCH_TIMEOUT = 30.0  # seconds of wall time per file


def fetch_tree(get: Callable[[str], bytes | None]) -> dict[str, bytes]:
    """What reposync downloads: repomd.xml and its signature, every metadata file, every package of primary."""
    repomd = get("repodata/repomd.xml")
    if repomd is None:
        raise rf.RepoError("repodata/repomd.xml not found")
    files = {"repodata/repomd.xml": repomd}
    sig = get("repodata/repomd.xml.asc")
    if sig is not None:
        files["repodata/repomd.xml.asc"] = sig
    entries = rf.repomd_entries(repomd)
    for e in entries.values():
        body = get(e["location"])
        if body is not None:
            files[e["location"]] = body
    if "primary" in entries and entries["primary"]["location"] in files:
        for location, _ in rf.primary_packages(rf.open_metadata(files, entries["primary"]["location"])):
            body = get(location)
            if body is not None:
                files[location] = body
    return files


def _getter(base: str, context: ssl.SSLContext | None, cookie: str = "") -> Callable[[str], bytes | None]:
    base = base.rstrip("/") + "/"

    def get(path: str) -> bytes | None:
        req = urllib.request.Request(base + path, headers={"Cookie": cookie} if cookie else {})
        try:
            with urllib.request.urlopen(req, timeout=FETCH_TIMEOUT, context=context) as resp:
                return resp.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise rf.RepoError(f"GET {base + path}: HTTP {exc.code}") from None
    return get


def _pinned(certificate: str) -> ssl.SSLContext:
    """stunnel's check of the remote coordinator (repository.ml:190-215, StunnelClientProxyAuth): its certificate
    must be the one the repository record names."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    try:
        ctx.load_verify_locations(cadata=certificate)
    except (ssl.SSLError, ValueError) as exc:
        raise XapiError("SSL_VERIFY_ERROR", f"certificate unusable: {exc}") from None
    return ctx


def _remote_pool_base(world: "World", pool: SimPool, url: str) -> str:
    """https://IP[:port]/repository/enabled: the port is 443 on a real host; a simulated coordinator listens on a
    high port, found from its address when the URL names none."""
    ip, port = up.remote_pool_address(url)
    if port is None:
        masters = [p.master for p in world.pools.values() if p is not pool and p.master is not None
                   and p.master.address == ip and p.master.serving]
        port = masters[0].port if masters else 443
    host = f"[{ip}]" if ":" in ip else ip
    return f"https://{host}:{port}/repository/enabled"


def _remote_pool_tree(world: "World", pool: SimPool, rec: dict, username: str, password: str) -> dict[str, bytes]:
    """repository.ml:174-214: log in to the remote coordinator with the given credentials over TLS pinned to the
    certificate, then fetch its enabled repository with that session."""
    base = _remote_pool_base(world, pool, rec["binary_url"])
    ctx = _pinned(rec["certificate"])
    proxy = xmlrpc.client.ServerProxy(base.rsplit("/repository/enabled", 1)[0] + "/", context=ctx)
    try:
        answer = proxy.session.login_with_password(username, password, "2.21", "xapi")
    except ssl.SSLCertVerificationError as exc:
        raise XapiError("SSL_VERIFY_ERROR", str(exc.verify_message or exc)) from None
    except (OSError, xmlrpc.client.ProtocolError):
        raise XapiError("UPDATE_SYNCING_REMOTE_POOL_COORDINATOR_CONNECTION_FAILED") from None
    finally:
        proxy("close")()
    if answer.get("Status") != "Success":
        raise XapiError(*answer.get("ErrorDescription", ["UPDATE_SYNCING_REMOTE_POOL_COORDINATOR_SERVICE_FAILED"]))
    try:
        return fetch_tree(_getter(base, ctx, cookie=f"session_id={answer['Value']}"))
    except (OSError, rf.RepoError):
        raise XapiError("REPOSYNC_FAILED") from None


def sync_one(world: "World", pool: SimPool, ref: str, *, username: str = "", password: str = "",
             bundle: dict[str, bytes] | None = None) -> rf.Repo:
    """repository.ml:150-320 sync: fetch and check one repository; a failure is REPOSYNC_FAILED (the caller of a
    bundle maps it to BUNDLE_SYNC_FAILED), a refused certificate SSL_VERIFY_ERROR."""
    rec = pool.db.record("Repository", ref)
    conf = up.conf(world, pool)
    if rec["origin"] == "bundle":
        files = bundle if bundle is not None else {}
    elif rec["origin"] == "remote_pool":
        files = _remote_pool_tree(world, pool, rec, username, password)
    else:
        try:
            files = fetch_tree(_getter(rec["binary_url"], ssl.create_default_context()))
        except (OSError, rf.RepoError):
            raise XapiError("REPOSYNC_FAILED") from None
    try:
        repo = rf.read_repo(files, conf.gpg_key, gpgcheck=conf.gpgcheck)
    except (rf.RepoError, OSError, KeyError, ValueError, EOFError):
        raise XapiError("REPOSYNC_FAILED") from None
    pool.synced[ref] = repo
    return repo


def set_available_updates(world: "World", pool: SimPool) -> str:
    """repository.ml:428-489: the enabled update repository's hash is its updateinfo checksum; every host's
    latest_synced_updates_applied says whether it lacks any of its updates; last_update_sync is now."""
    db = pool.db
    ref = single_enabled_update_repository(pool)
    repo = pool.synced.get(ref)
    if repo is None:
        raise XapiError("REPOSYNC_FAILED")
    with db.lock:
        db.update("Repository", ref, hash=repo.checksum)
        for h in pool.hosts:
            if db.exists("host", h.ref):
                state = "no" if up.applicable(h, repo) else "yes"
                db.update("host", h.ref, latest_synced_updates_applied=state)
        db.update("pool", pool.ref, last_update_sync=xapi_datetime(world.clock.now()))
    return repo.checksum


def single_enabled_update_repository(pool: SimPool) -> str:
    """repository_helpers.ml:1379-1400: NO_REPOSITORY_ENABLED [], MULTIPLE_UPDATE_REPOSITORIES_ENABLED []."""
    db = pool.db
    with db.lock:
        enabled = [r for r in db.get("pool", pool.ref)["repositories"] if db.get("Repository", r)["update"]]
    if not enabled:
        raise XapiError("NO_REPOSITORY_ENABLED")
    if len(enabled) > 1:
        raise XapiError("MULTIPLE_UPDATE_REPOSITORIES_ENABLED")
    return enabled[0]
