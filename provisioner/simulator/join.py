"""pool.join in the simulator: xapi's pre-join checks in xapi's order, each refusal with xapi's code and params.

Source: xapi-project/xen-api ocaml/xapi/xapi_pool.ml at e2ee48d (pre_join_checks, called in this order at
:1046-1080); error names and parameters from ocaml/idl/datamodel_errors.ml. Checks the simulator has nothing to
model for (clustering, bonds, tunnels, SR-IOV, external auth, TLS, certificates, SM features) always pass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import states as st
from . import vm_ops as vr
from .db import NULL_REF, Db
from .errors import XapiError
from .fresh import password_ok
from .hosts import SimHost, SimPool
from .registry import Call, api
from .updates import assert_no_pending_mandatory

if TYPE_CHECKING:
    from .world import World


def _management_vlan(db: Db, host_ref: str) -> str:
    """The VLAN tag of the host's management PIF, -1 for none (PIF.VLAN, an int64: a decimal string on the wire)."""
    pif = next((p for p in db.find("PIF", host=host_ref) if db.get("PIF", p)["management"]), None)
    return str(db.get("PIF", pif)["VLAN"]) if pif else "-1"


def _homogeneous_updates(db: Db, host_ref: str) -> set[str]:
    """:346-357 updates_on: uuids of the host's Pool_update records with enforce_homogeneity."""
    found = (db.get("pool_update", u) for u in db.get("host", host_ref)["updates"] if db.exists("pool_update", u))
    return {u["uuid"] for u in found if u["enforce_homogeneity"]}


def _compatibility(sv: dict) -> tuple:
    """:560-601 compatibility_info: platform_version and product_brand (else platform_name)."""
    return sv.get("platform_version"), sv.get("product_brand", sv.get("platform_name"))


def pre_join_checks(c: Call, target: SimPool, force: bool) -> None:
    """xapi_pool.ml:65-1081 pre_join_checks, run on the joining host `c.host` against `target`'s coordinator."""
    me, db, theirs_db = c.host, c.db, target.db
    if db.get("pool", c.pool.ref)["ha_enabled"] or theirs_db.get("pool", target.ref)["ha_enabled"]:
        raise XapiError("HA_IS_ENABLED")  # :84-97 ha_is_not_enable_on_me / on_the_distant_pool
    if len(db.all("host")) > 1:  # :424-434 assert_i_know_of_no_other_hosts
        raise XapiError("POOL_JOINING_HOST_CANNOT_BE_MASTER_OF_OTHER_HOSTS")
    if any(vr.is_real_vm(db.get("VM", v)) and db.get("VM", v)["power_state"] == "Running" for v in db.all("VM")):
        raise XapiError("POOL_JOINING_HOST_CANNOT_HAVE_RUNNING_VMS")  # :435-458
    mine = db.get("host", me.ref)
    theirs = theirs_db.get("host", target.master.ref)
    # :963-990 assert_no_host_pending_mandatory_guidance: on the joiner, then on the remote coordinator
    assert_no_pending_mandatory(db, me.ref)
    if theirs["pending_guidances"]:
        raise XapiError("HOST_PENDING_MANDATORY_GUIDANCES_NOT_EMPTY", target.master.ref)
    my_sv, their_sv = mine["software_version"], theirs["software_version"]
    if _compatibility(my_sv) != _compatibility(their_sv):  # :571-603 assert_hosts_compatible
        raise XapiError("POOL_HOSTS_NOT_COMPATIBLE")
    fields = ("xapi", "product_brand", "git_id")  # :605-644 assert_hosts_homogeneous (build number not checked)
    if not force and [my_sv.get(k, "") for k in fields] != [their_sv.get(k, "") for k in fields]:
        raise XapiError("POOL_HOSTS_NOT_HOMOGENEOUS", "Software version differs")
    my_vlan, their_vlan = _management_vlan(db, me.ref), _management_vlan(theirs_db, target.master.ref)
    if my_vlan != their_vlan:  # :537-560 assert_management_vlan_are_same: [local, remote]
        raise XapiError("POOL_JOINING_HOST_MANAGEMENT_VLAN_DOES_NOT_MATCH", my_vlan, their_vlan)
    # :204-284 assert_restrictions_match: editions all equal, else v6d orders them. The simulator has no v6d:
    # any other edition counts as a mismatch, reported against the coordinator's edition.
    editions = {theirs_db.get("host", h)["edition"] for h in theirs_db.all("host")}
    if editions != {mine["edition"]}:
        raise XapiError("LICENSE_HOST_POOL_MISMATCH", f'host edition = "{mine["edition"]}"',
                        f'pool edition = "{theirs["edition"]}"')
    # :679-698 assert_homogeneous_vswitch_configuration: the master's software_version network_backend, "bridge"
    # when it has none, against the joiner's running backend (our software_version says which one it runs).
    if my_sv.get("network_backend", "bridge") != their_sv.get("network_backend", "bridge"):
        raise XapiError("OPERATION_NOT_ALLOWED", "Network backends differ")
    my_api = f'{mine["API_version_major"]}.{mine["API_version_minor"]}'  # :285-314
    their_api = f'{theirs["API_version_major"]}.{theirs["API_version_minor"]}'
    if my_api != their_api:
        raise XapiError("POOL_JOINING_HOST_MUST_HAVE_SAME_API_VERSION", my_api, their_api)
    my_schema, their_schema = my_sv.get("db_schema", ""), their_sv.get("db_schema", "")
    if not my_schema or not their_schema or my_schema != their_schema:  # :315-345
        raise XapiError("POOL_JOINING_HOST_MUST_HAVE_SAME_DB_SCHEMA", my_schema, their_schema)
    if _homogeneous_updates(db, me.ref) != _homogeneous_updates(theirs_db, target.master.ref):  # :346-382
        raise XapiError("POOL_HOSTS_NOT_HOMOGENEOUS",
                        f'Updates on local host {mine["name_label"]} and pool host {theirs["name_label"]} differ')


@api("pool.join", 4, 5)
def pool_join(c: Call, master_address, user, password, force=False):
    """Called on the joining standalone host (xapi_pool.ml join: pre_join_checks, then xapi restarts)."""
    world, me = c.world, c.host
    if me.state == st.XAPI_STARTING:  # :66-82 assert_management_interface_exists
        raise XapiError("HOST_STILL_BOOTING")
    target = next((p for p in world.pools.values() if p.master and p.master.address == master_address
                   and p is not c.pool), None)
    if target is None or not target.master.serving:  # :41-47
        raise XapiError("POOL_JOINING_HOST_CONNECTION_FAILED")
    if user != "root" or not password_ok(world, target, password):  # the joiner logs in to the coordinator
        raise XapiError("SESSION_AUTHENTICATION_FAILED", user, "Authentication failure")
    with c.db.lock, target.db.lock:
        pre_join_checks(c, target, force in (True, "true"))
    world.spawn(move_host_to_pool, world, me, target, name=f"sim-join-{me.name}")
    return ""


def apply_updates(pool: SimPool, host_ref: str, updates: list[tuple[str, str]]) -> None:
    """What `xe update-apply` leaves in a pool's DB: a Pool_update record per (uuid, name) and host.updates
    naming it (the same uuid in every pool: the update's own uuid, datamodel_pool_update.ml)."""
    db = pool.db
    with db.lock:
        refs = list(db.get("host", host_ref)["updates"])
        for uuid, name in updates:
            found = db.find("pool_update", uuid=uuid)
            ref = found[0] if found else db.create("pool_update", uuid=uuid, name_label=name, version="1.0")
            if ref not in refs:
                refs.append(ref)
        db.update("host", host_ref, updates=refs)


def move_host_to_pool(world: "World", h: SimHost, target: SimPool) -> None:
    """pool.join: the joiner's xapi restarts as a member; its host record (same uuid) moves into the
    coordinator's DB (new ref), its own one-host pool disappears."""
    old = h.pool
    rec = old.db.record("host", h.ref)
    metrics = old.db.record("host_metrics", rec["metrics"])
    pifs = [old.db.record("PIF", p) for p in old.db.find("PIF", host=h.ref)]
    db = target.db
    with db.lock:
        m = db.create("host_metrics", **metrics)
        rec.update(metrics=m, resident_VMs=[], PIFs=[], PBDs=[], control_domain=NULL_REF,  # same update uuids:
                   updates=[db.by_uuid("pool_update", old.db.get("pool_update", u)["uuid"])  # pre_join_checks
                            for u in rec["updates"] if old.db.exists("pool_update", u)])
        h.ref = db.create("host", **rec)
        for p in pifs:
            p.update(host=h.ref, network=NULL_REF)
            db.create("PIF", **p)
        for sr in db.find("SR", shared=True):
            db.create("PBD", host=h.ref, SR=sr, currently_attached=True)
    world.pools = {k: v for k, v in world.pools.items() if v is not old}
    h.pool = target
    target.hosts.append(h)
    world.update_memory(target)
