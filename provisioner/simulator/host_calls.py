"""Handlers for session, host, pool, PBD, VBD and task calls of the simulated XAPI (docs/xapi.md "Sessions",
"Host lifecycle calls", "VM and VBD calls", "Tasks and events").

Registered by wire name with their parameter counts (registry.py; docs/simulator.md "Call surface"). pool.join is
join.py, VM calls are vm_calls.py, event.from is event_calls.py."""

from __future__ import annotations

from . import states as st
from . import updates
from . import vm_ops as vr
from .db import NULL_REF, new_ref, xapi_datetime
from .errors import XapiError
from .fresh import password_ok
from .reconnect import forward
from .registry import Call, api, assert_live, sim_host


# ---- session (docs/xapi.md "Sessions") ------------------------------------------------------------
@api("session.login_with_password", 2, 4)
def login(c: Call, uname, pwd, version="1.1", originator=""):
    # injected: xapi's startup is not complete yet (tolerate it: docs/xapi.md "Waiting for the master to return")
    if c.host.login_refusals > 0:
        c.host.login_refusals -= 1
        raise XapiError("HOST_STILL_BOOTING")
    ok = uname == "root" and password_ok(c.world, c.pool, pwd)  # a fresh install checks its crypt hash
    if not ok:  # xapi_session.ml:282: the code sends [uname, msg] although the doc says []
        raise XapiError("SESSION_AUTHENTICATION_FAILED", uname, "Authentication failure")
    ref = new_ref()
    c.pool.sessions[ref] = uname
    return ref


@api("session.logout", 1)
def logout(c: Call):
    c.pool.sessions.pop(c.session, None)
    return ""


@api("session.get_this_host", 2)
def get_this_host(c: Call, _self):
    return c.host.ref


# ---- host (docs/xapi.md "Host lifecycle calls") ---------------------------------------------------
@api("host.disable", 2, 3)
def host_disable(c: Call, ref, auto_enable=True):
    h = sim_host(c, ref)
    forward(c, ref)  # message_forwarding.ml:3534-3545 (reconnect.py)
    h.user_disabled = True  # consider_enabling_host will not undo a user disable until xapi restarts
    h.auto_enable = auto_enable not in (False, "false")
    c.db.update("host", ref, enabled=False)
    return ""


@api("host.enable", 2)
def host_enable(c: Call, ref):
    h = sim_host(c, ref)
    assert_live(c, ref)
    if h.disabled_until_reboot:  # xapi_host_helpers.ml:303-307
        raise XapiError("HOST_DISABLED_UNTIL_REBOOT", ref)
    if h.state == st.XAPI_STARTING or h.enable_refusals > 0:  # xapi_host.ml:77-110 assert_safe_to_reenable
        h.enable_refusals = max(0, h.enable_refusals - 1)
        raise XapiError("HOST_STILL_BOOTING")
    updates.assert_no_pending_mandatory(c.db, ref)  # xapi_host.ml:77-80, after assert_startup_complete
    h.user_disabled = False
    h.auto_enable = True
    c.db.update("host", ref, enabled=True)
    return ""


def _power_op(c: Call, ref: str, op: str):
    """host.reboot/shutdown (xapi_host.ml:858-932): must be disabled (HOST_NOT_DISABLED []), one op at a time,
    returns at once; the real shutdown starts 10 s later."""
    h = sim_host(c, ref)
    if c.db.get("host", ref)["enabled"]:
        raise XapiError("HOST_NOT_DISABLED")
    if h.pending_op:
        raise XapiError("OTHER_OPERATION_IN_PROGRESS", "host", ref, h.pending_op, NULL_REF)
    assert_live(c, ref)
    c.world.begin_power_off(h, op)
    return ""


@api("host.reboot", 2)
def host_reboot(c: Call, ref):
    return _power_op(c, ref, "reboot")


@api("host.shutdown", 2)
def host_shutdown(c: Call, ref):
    return _power_op(c, ref, "shutdown")


@api("host.power_on", 2)
def host_power_on(c: Call, ref):
    """xapi_host.ml:934-942: HOST_IS_LIVE [host] if live; HOST_POWER_ON_MODE_DISABLED [] without a mode."""
    h = sim_host(c, ref)
    rec = c.db.get("host", ref)
    if c.db.get("host_metrics", rec["metrics"])["live"]:
        raise XapiError("HOST_IS_LIVE", ref)
    if not rec["power_on_mode"]:
        raise XapiError("HOST_POWER_ON_MODE_DISABLED")
    c.world.power_on(h.mac)
    return ""


@api("host.evacuate", 2, 4)
def host_evacuate(c: Call, ref, network=NULL_REF, batch_size="0"):
    sim_host(c, ref)
    # runs on the coordinator (message_forwarding.ml:3668-3676), but each migration it starts is forwarded to
    # the host the VM leaves (VM.pool_migrate, message_forwarding.ml:2602-): the same wait (reconnect.py)
    forward(c, ref)
    vr.evacuate(c.world, c.pool, ref)
    return ""


@api("host.get_vms_which_prevent_evacuation", 2)
def host_vms_preventing(c: Call, ref):
    with c.db.lock:
        c.db.get("host", ref)
        return vr.evacuation_plan(c.world, c.pool, ref)[1]


@api("host.assert_can_evacuate", 2)
def host_assert_can_evacuate(c: Call, ref):
    """xapi_host.ml:426-445: CANNOT_EVACUATE_HOST ["code,p1,...|code,..."]."""
    errors = host_vms_preventing(c, ref)
    if errors:
        raise XapiError("CANNOT_EVACUATE_HOST", "|".join(",".join(e) for e in errors.values()))
    return ""


@api("host.get_servertime", 2)
def host_servertime(c: Call, ref):
    c.db.get("host", ref)
    forward(c, ref)  # message_forwarding.ml:3831-3836: a no-op that needs the host itself (reconnect.py)
    return xapi_datetime(c.world.clock.now())


@api("host.destroy", 2)
def host_destroy(c: Call, ref):
    """xapi_host.ml:1109-1176 (host-forget): not live and not the coordinator (HOST_IS_LIVE [host]),
    HA off (HA_IS_ENABLED []), no resident user VMs (HOST_HAS_RESIDENT_VMS [host])."""
    h = sim_host(c, ref)
    db = c.db
    with db.lock:
        rec = db.get("host", ref)
        if h.is_master or db.get("host_metrics", rec["metrics"])["live"]:
            raise XapiError("HOST_IS_LIVE", ref)
        if db.get("pool", c.pool.ref)["ha_enabled"]:
            raise XapiError("HA_IS_ENABLED")
        if any(vr.is_real_vm(db.get("VM", v)) for v in db.find("VM", resident_on=ref)):
            raise XapiError("HOST_HAS_RESIDENT_VMS", ref)
        for cls, key in (("VM", "resident_on"), ("PIF", "host"), ("PBD", "host")):
            for r in db.find(cls, **{key: ref}):
                db.delete(cls, r)
        db.delete("host_metrics", rec["metrics"])
        db.delete("host", ref)
        c.pool.hosts.remove(h)
    return ""


# ---- pool (docs/xapi.md "Host lifecycle calls") ---------------------------------------------------
@api("pool.enable_ha", 3)
def pool_enable_ha(c: Call, heartbeat_srs, configuration):
    """xapi_pool.ml:2942-2950 enable_ha: NOT_SUPPORTED_DURING_UPGRADE while any host's versions differ from the
    coordinator's (helpers.ml:1057-1084, the versions themselves, not the rolling_upgrade_in_progress flag,
    docs/xapi.md "Mixed versions: rolling_upgrade_in_progress"); then xapi_ha.ml:1819-1937 enable: HA_IS_ENABLED [];
    HOST_OFFLINE [host] for a host not live; the statefile goes on the first heartbeat SR, or (none given) on an SR that
    can host one (shared, not ISO), else CANNOT_CREATE_STATE_FILE []."""
    db = c.db
    with db.lock:
        pool = db.get("pool", c.pool.ref)
        mine = st.version_key(db.get("host", pool["master"])["software_version"])
        if any(st.version_key(db.get("host", h)["software_version"]) != mine for h in db.all("host")):
            raise XapiError("NOT_SUPPORTED_DURING_UPGRADE")
        if pool["ha_enabled"]:
            raise XapiError("HA_IS_ENABLED")
        for h in db.all("host"):
            if not db.get("host_metrics", db.get("host", h)["metrics"])["live"]:
                raise XapiError("HOST_OFFLINE", h)
        srs = list(heartbeat_srs) or [r for r in db.all("SR")
                                      if db.get("SR", r)["shared"] and db.get("SR", r)["content_type"] != "iso"]
        if not srs:
            raise XapiError("CANNOT_CREATE_STATE_FILE")
        for sr in srs:
            db.get("SR", sr)
        vdi = db.create("VDI", name_label="Statefile for HA", SR=srs[0], type="ha_statefile")
        db.update("pool", c.pool.ref, ha_enabled=True, ha_statefiles=[vdi])
    return ""


@api("pool.disable_ha", 1)
def pool_disable_ha(c: Call):
    """xapi_pool.ml disable_ha: HA_NOT_ENABLED [] when off; the statefile VDIs go away."""
    db = c.db
    with db.lock:
        pool = db.get("pool", c.pool.ref)
        if not pool["ha_enabled"]:
            raise XapiError("HA_NOT_ENABLED")
        for vdi in pool["ha_statefiles"]:
            if db.exists("VDI", vdi):
                db.delete("VDI", vdi)
        db.update("pool", c.pool.ref, ha_enabled=False, ha_statefiles=[])
    return ""


@api("pool.set_ha_host_failures_to_tolerate", 3)
def pool_set_ha_ftt(c: Call, ref, value):
    c.db.get("pool", ref)
    c.db.update("pool", ref, ha_host_failures_to_tolerate=str(int(value)))  # int64: a decimal string (2.1)
    return ""


@api("pool.set_wlb_enabled", 3)
def pool_set_wlb_enabled(c: Call, ref, value):
    """A plain RW field with a generated setter, no checks (datamodel_pool.ml:2088-2101 wlb_enabled); only what
    reads it (workload_balancing.ml assert_wlb_enabled) cares."""
    c.db.get("pool", ref)
    c.db.update("pool", ref, wlb_enabled=value in (True, "true"))
    return ""


@api("pool.eject", 2)
def pool_eject(c: Call, ref):
    h = sim_host(c, ref)
    if c.db.get("pool", c.pool.ref)["ha_enabled"]:
        raise XapiError("HA_IS_ENABLED")
    if h.is_master:  # the coordinator itself cannot be ejected (xapi_pool.ml:2262-2272)
        raise XapiError("HOST_CANNOT_DESTROY_SELF", ref)
    raise XapiError("NOT_IMPLEMENTED", "pool.eject is not simulated")


# ---- PBD, VBD (docs/xapi.md "VM and VBD calls") ---------------------------------------------------
@api("PBD.plug", 2)
def pbd_plug(c: Call, ref):
    """Returns when the SR is attached: an iSCSI / FC attach can take minutes (devices.slow_plug), so a synchronous
    call outlives a short client timeout; clients run Async.PBD.plug and poll the task (docs/xapi.md
    "Pinned VMs, running tasks, slow PBD.plug")."""
    rec = c.db.get("PBD", ref)
    assert_live(c, rec["host"])
    delay = c.world.pbd_plug_delays.get(rec["SR"], 0.0)
    if delay and not c.world.sleep(delay):
        raise XapiError("INTERNAL_ERROR", "simulator stopping")
    c.db.update("PBD", ref, currently_attached=True)
    return ""


@api("PBD.unplug", 2)
def pbd_unplug(c: Call, ref):
    c.db.update("PBD", ref, currently_attached=False)
    return ""


@api("VBD.eject", 2)
def vbd_eject(c: Call, ref):
    """datamodel_errors.ml:549-561: VBD_NOT_REMOVABLE_MEDIA [vbd], VBD_IS_EMPTY [vbd]."""
    rec = c.db.get("VBD", ref)
    if rec["type"] != "CD":
        raise XapiError("VBD_NOT_REMOVABLE_MEDIA", ref)
    if rec["empty"]:
        raise XapiError("VBD_IS_EMPTY", ref)
    c.db.update("VBD", ref, empty=True, VDI=NULL_REF)
    return ""


@api("VBD.insert", 3)
def vbd_insert(c: Call, ref, vdi):
    rec = c.db.get("VBD", ref)
    c.db.get("VDI", vdi)
    if rec["type"] != "CD":
        raise XapiError("VBD_NOT_REMOVABLE_MEDIA", ref)
    if not rec["empty"]:
        raise XapiError("VBD_NOT_EMPTY", ref)
    c.db.update("VBD", ref, empty=False, VDI=vdi)
    return ""


# ---- task (docs/xapi.md "Tasks and events") -------------------------------------------------------
@api("task.destroy", 2)
def task_destroy(c: Call, ref):
    c.db.delete("task", ref)
    return ""


@api("task.cancel", 2)
def task_cancel(c: Call, ref):
    rec = c.db.get("task", ref)
    if rec["status"] == "pending":
        c.db.update("task", ref, status="cancelling")
    return ""
