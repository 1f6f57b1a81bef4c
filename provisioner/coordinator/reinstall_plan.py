"""The checks of a lab reinstall-and-join (docs/architecture.md "Lab reinstall-and-join"): read-only, every refusal
named, nothing changed.

A fresh install wipes the disk, so it is refused unless the operator confirmed the host by name, the host is not
the master of any registered pool, not a live member of any (asked through each registered pool's XAPI, since
the registry can be stale) and does not answer on its management address, has no resident VMs left, the VM disks
on its local SRs are accepted as lost by name (--accept-data-loss), pool.join would take the fresh host (join.py
compares the master with what the media installs), and the root-password hash is a crypt(3) hash of the pool's
stored password (the flow logs in to the new standalone host with it to run pool.join).
"""

from __future__ import annotations

import dataclasses
import socket
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable

from provisioner import cryptpw, states
from provisioner.boot import attempts
from provisioner.coordinator import pools
from provisioner.coordinator.reinstall_join import check_join
from provisioner.coordinator.plan import at_target
from provisioner.model import ValidationError, normalize_mac
from provisioner.store import NotFoundError, Store
from provisioner.xapi import HostInfo, PoolDriver, XapiError, XapiUnreachable

Connect = Callable[[str], PoolDriver]
Answers = Callable[[str], bool]  # XAPI URL -> does something accept a connection there?
PROBE_TIMEOUT = 3.0
GiB = 1024 ** 3


class ReinstallRefused(ValueError):
    """The reinstall may not start; `problems` says every reason (nothing was changed)."""

    def __init__(self, problems: list[str], data_loss: list[dict] | None = None):
        self.problems = list(problems)
        self.data_loss = list(data_loss or [])  # the disks the fresh install would have wiped
        super().__init__("reinstall refused, nothing changed: " + "; ".join(self.problems))


@dataclass
class ReinstallPlan:
    """What the flow would do, and every reason it may not; `ok` when it may start."""

    mac: str
    pool: str
    media: str
    host_name: str = ""
    forget: bool = False  # the dead member's record will be host.destroy'ed first
    old_uuid: str | None = None
    old_pool: str | None = None
    master: str = ""
    master_version: str = ""
    host_url: str = ""
    network: dict = field(default_factory=lambda: {"mode": "dhcp", "dns": []})
    accept_data_loss: bool = False
    fix_before_join: bool = False  # the operator brings the new host to the pool's level before it joins
    data_loss: list[dict] = field(default_factory=list)  # LocalDisk records: what the fresh install wipes
    join: dict = field(default_factory=dict)  # the master's pool.join facts and what the media installs
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {**{k: v for k, v in self.__dict__.items()}, "ok": self.ok}


def check_confirmation(store: Store, mac: str, confirm: Any):
    """The registered host, if `confirm` is exactly its name; a ValidationError before anything else is asked."""
    host = store.get_host(normalize_mac(mac))
    if host is None:
        raise NotFoundError(f"no host with MAC {normalize_mac(mac)} is registered")
    if not isinstance(confirm, str) or not confirm.strip():
        raise ValidationError(f"a reinstall WIPES the disk of {host.name}: confirm it by name with "
                              f"--confirm {host.name}", "confirm")
    if confirm.strip() != host.name:
        raise ValidationError(f"{confirm.strip()!r} is not the name of host {host.mac} ({host.name}): nothing done",
                              "confirm")
    return host


def _derive_url(pool_url: str, address: str | None) -> str:
    """The new host's XAPI URL: the pool URL with the host's address (same scheme and port)."""
    if not address:
        return ""
    parts = urllib.parse.urlsplit(pool_url)
    host = f"[{address}]" if ":" in address else address
    return urllib.parse.urlunsplit((parts.scheme, host + (f":{parts.port}" if parts.port else ""), "/", "", ""))


def _check_member(plan: ReinstallPlan, name: str, driver: PoolDriver, info: HostInfo, *, ha: bool) -> None:
    """The host is known to pool `name`: only a dead member, with --forget, may go on."""
    where = f"pool {name} knows {plan.host_name} ({plan.mac}) as {info.name}, uuid {info.uuid}"
    if info.is_master:
        plan.problems.append(f"{where}: it is the pool MASTER; a master is never reinstalled (vendor rule: upgrade "
                             "it first, and if that fails restore it to a working version)")
        return
    if info.live:
        plan.problems.append(f"{where}: it is a LIVE member; a fresh install would wipe a working host (shut it "
                             "down with `xe host-disable` + `xe host-shutdown` first, then use --forget)")
        return
    try:
        resident = [v.name for v in driver.vms() if v.resident_on == info.ref]
    except (XapiUnreachable, XapiError) as exc:
        plan.problems.append(f"{where}: cannot list its VMs: {exc}")
        return
    if resident:
        plan.problems.append(f"{where}: VMs still resident on the dead host ({', '.join(resident)}): host.destroy "
                             "would fail with HOST_HAS_RESIDENT_VMS; reset them first (`xe vm-reset-powerstate "
                             "uuid=... --force`, VM.power_state_reset) or `xe host-declare-dead`")
    if not plan.forget:
        plan.problems.append(f"{where}: a dead member; forget it first (--forget runs host.destroy, "
                             "`xe host-forget`), or the pool keeps a dead host record")
    elif ha:
        plan.problems.append(f"{where}: HA is enabled on pool {name}: host.destroy would fail with HA_IS_ENABLED "
                             "(`xe pool-ha-disable` first)")
    if plan.old_uuid is not None and plan.old_uuid != info.uuid:
        plan.problems.append(f"{where}: the MAC is also known elsewhere (uuid {plan.old_uuid}); forget one first")
    plan.old_uuid, plan.old_pool = info.uuid, name
    try:
        plan.network = driver.management_network(info.ref)
    except (XapiUnreachable, XapiError) as exc:
        plan.notes.append(f"management network unknown ({exc}): the fresh install uses DHCP")


def answers(url: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """True when something accepts a TCP connection at the URL's address and port (its XAPI, https or http):
    a host that answers there is running, whatever the pool's records say."""
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname:
        return False
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def describe_disk(disk: dict) -> str:
    """One lost disk in words: VM (power state) or snapshot of VM, VDI name, size, SR."""
    if disk.get("snapshot_of"):
        owner = f"snapshot {disk['vm']!r} of VM {disk['snapshot_of']!r}"
    elif disk.get("vm"):
        owner = f"VM {disk['vm']!r} ({disk.get('power_state') or '?'})"
    else:
        owner = "no VM"
    return (f"{owner}: {disk['role']} {disk['vdi']!r} {disk['size'] / GiB:.1f} GiB on SR {disk['sr']!r} "
            f"(VDI {disk['vdi_uuid']})")


def _check_data_loss(plan: ReinstallPlan, name: str, driver: PoolDriver, info: HostInfo) -> None:
    """Every VDI on the host's local SRs, read BEFORE host.destroy (its PBDs go with it, the VDI records stay and
    point at nothing: xapi_host.ml destroy, docs/real-world.md "host.destroy and local disks"); refused unless the
    operator accepted the loss."""
    try:
        disks = driver.local_disks(info.ref)
    except (XapiUnreachable, XapiError) as exc:
        plan.problems.append(f"pool {name}: cannot list the disks on {info.name}'s local storage ({exc}): a "
                             "fresh install would wipe them unseen")
        return
    plan.data_loss = [dataclasses.asdict(d) for d in disks]
    if not disks:
        plan.notes.append(f"no VM disks on {info.name}'s local storage in pool {name}: nothing is lost")
        return
    vms = sorted({d.vm for d in disks if d.vm})
    what = (f"the fresh install wipes {info.name}'s local storage: {len(disks)} disk(s) of {len(vms)} VM(s) and "
            f"snapshot(s) are lost for good ({', '.join(vms) or 'unattached disks'})")
    if plan.accept_data_loss:
        plan.notes.append(f"{what}; accepted with --accept-data-loss")
    else:
        plan.problems.append(f"{what}; move or export them first (`xe vm-export`, `xe vdi-copy` to a shared SR), "
                             "or accept the loss by name with --accept-data-loss (REST: \"accept_data_loss\": true)")


def make_reinstall_plan(store: Store, mac: str, pool: str, media_name: str, *, confirm: Any, forget: bool,
                        root_password_hash: Any, connect: Connect, host_url: str | None = None,
                        accept_data_loss: bool = False, fix_before_join: bool = False,
                        answers: Answers = answers) -> ReinstallPlan:
    """Every check of a reinstall of `mac` into `pool` with `media_name`; changes nothing.

    Raises NotFoundError / ValidationError for an unknown host or a missing/wrong confirmation (no XAPI call is
    made then); every other reason lands in plan.problems.
    """
    host = check_confirmation(store, mac, confirm)
    plan = ReinstallPlan(host.mac, pool, media_name, host_name=host.name, forget=bool(forget),
                         accept_data_loss=bool(accept_data_loss), fix_before_join=bool(fix_before_join))
    media = None
    try:
        _, media = attempts.check_armable(store, host.mac, media_name)
    except (NotFoundError, ValidationError) as exc:
        plan.problems.append(str(exc))
    record = store.get_pool(pool)
    problem = cryptpw.hash_problem(root_password_hash)
    if problem:  # never quote the value: it might be a plain-text password given by mistake
        plan.problems.append(f"root password hash {problem} (give --root-password-hash-file FILE or set "
                             "PROVISIONER_ROOT_PASSWORD_HASH)")
    elif record is not None and not cryptpw.verify(pools.pool_password(store, pool), root_password_hash):
        plan.problems.append(f"the root password hash does not match pool {pool}'s stored password: the new host "
                             "would refuse the login that runs pool.join (make it with `openssl passwd -6` from "
                             "the pool password)")
    if record is None:
        plan.problems.append(f"no pool named {pool!r} is registered (`provisioner pools add`)")
    same_name = [h for h in store.list_hosts(pool=pool) if h.name == host.name and h.mac != host.mac]
    if same_name:
        plan.problems.append(f"pool {pool} already has a host named {host.name} (MAC {same_name[0].mac})")
    for run in store.list_runs(pool, active_only=True):
        plan.problems.append(f"pool {pool} has upgrade run {run.id} in progress ({run.state}): let it end or abort it")
    live = store.current_attempt(host.mac)
    if live is not None and live.state == states.STARTED:
        plan.problems.append(f"an installer is running on {host.mac} (attempt {live.id}): wait for it to report")
    if store.active_reinstall(host.mac) is not None:
        plan.problems.append(f"host {host.mac} already has a reinstall in progress")
    address = host.ip
    for known in store.list_pools():
        try:
            driver = connect(known.name)
            found = driver.hosts()
            ha = bool(driver.pool_info().get("ha_enabled"))
        except (XapiUnreachable, XapiError) as exc:
            plan.problems.append(f"cannot ask pool {known.name} whether {host.mac} is a live member there ({exc})")
            continue
        for info in found:
            if info.mac and normalize_mac(info.mac) == host.mac:
                _check_member(plan, known.name, driver, info, ha=ha)
                if not info.is_master:
                    _check_data_loss(plan, known.name, driver, info)
                address = address or info.address
            if known.name == pool and info.is_master:
                plan.master, plan.master_version = info.address, info.product_version
                if not info.live:
                    plan.problems.append(f"the master of pool {pool} ({info.name}) is not live: pool.join needs it")
                if media is not None and not at_target(info, media):
                    plan.problems.append(
                        f"the master of pool {pool} runs {info.product_version} (build {info.build_number}), the "
                        f"media {media.name} is {media.product_version} (build {media.build}): pool.join would fail "
                        "with POOL_HOSTS_NOT_COMPATIBLE; upgrade the master first (`provisioner upgrade start "
                        f"{pool} --media {media.name}`)")
                elif media is not None:
                    found = check_join(pool, driver, info, media, fix_before_join=plan.fix_before_join)
                    plan.join = found.join if found.join is not None else plan.join
                    plan.problems += found.problems
                    plan.notes += found.notes
    if plan.old_uuid is None:
        plan.notes.append("no registered pool knows this host: there are no VM disks of it to list (a host never "
                          "in a registered pool, or one already forgotten: its local SR's disks are not ours to see)")
    if plan.forget and plan.old_uuid is None:
        plan.forget = False
        plan.notes.append("--forget: no registered pool knows this host, nothing to forget")
    if plan.old_uuid:
        plan.notes.append(f"host.destroy of uuid {plan.old_uuid} in pool {plan.old_pool} comes first")
    plan.host_url = host_url or (_derive_url(record.url, address) if record else "")
    if not plan.host_url:
        plan.problems.append("no address for the new host's XAPI: register its management IP (`provisioner hosts "
                             "update MAC --ip ...`) or pass --host-url")
    elif answers(plan.host_url):
        where = urllib.parse.urlsplit(plan.host_url).netloc
        plan.problems.append(f"the host answers on {where}: it is running; shut it down first (`xe host-disable` + "
                             "`xe host-shutdown`, or power it off), then run the command again")
    return plan
