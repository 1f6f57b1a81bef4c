"""The simulated machines and pools as the world keeps them: runtime state that is not in a pool's DB."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from . import states as st
from .db import NULL_REF, Db
from .errors import XapiError


def _set_event() -> threading.Event:
    e = threading.Event()
    e.set()
    return e


@dataclass(eq=False)
class SimHost:
    """Runtime state of one simulated host that is not in the pool DB (power state, injections)."""

    name: str
    mac: str
    address: str
    pool: "SimPool"
    ref: str = NULL_REF
    state: str = st.XAPI_RUNNING
    port: int = 0
    boot_count: int = 0
    disabled_until_reboot: bool = False  # set when reboot/shutdown starts (xapi_host_helpers.ml:67-102)
    user_disabled: bool = False          # a user disable since this xapi started blocks auto-enable (2.4)
    pending_op: str = ""                 # reboot/shutdown in progress -> OTHER_OPERATION_IN_PROGRESS
    emergency: XapiError | None = None   # member emergency error while startup is blocked (2.6)
    enable_refusals: int = 0             # injected slow boot: host.enable answers HOST_STILL_BOOTING N times
    login_refusals: int = 0              # injected: the coordinator's login answers HOST_STILL_BOOTING N times
    never_returns: bool = False
    pbds_stay_unplugged: bool = False
    hung: threading.Event = field(default_factory=threading.Event)
    boot_error: str = ""
    auto_enable: bool = True             # host.disable(h, false) keeps it disabled across reboots (xapi >= 25.31)
    new_version: dict | None = None      # set by the boot hook, written by dbsync
    local_sessions: set = field(default_factory=set)  # slave_local_login sessions (member's own memory)
    root_password_hash: str | None = None  # root's crypt hash after a fresh install (simulator/fresh.py)
    power_epoch: int = 0                 # bumped by a hard power cut (crash, BMC off/reset): older threads stop
    power_on_drops: int = 0              # injected: the BMC drops this many power-ons (bmc_target.py)
    override_supported: bool = True      # injected False: the BMC has no boot override (bmc_target.py)
    bmc_log: list = field(default_factory=list)  # what the BMC face did: ("power_on", "dropped: ..."), ...
    # A member's database link to the coordinator's xapi (reconnect.py): down from the coordinator's stop until
    # the member reconnects; forwarded calls wait on link_up meanwhile.
    linked: bool = True
    link_lost_at: float = 0.0
    link_up: threading.Event = field(default_factory=_set_event)
    reconnect_after: float | None = None  # injected: misses the startup kick, reconnects on backoff after this
    reconnect_never: bool = False         # injected: never reconnects
    reconnect_unreachable: bool = False   # injected: until it reconnects, forwarded calls get CANNOT_CONTACT_HOST
    applied_updates: dict = field(default_factory=dict)  # update id -> repo_format.Update since its ISO (updates.py)

    @property
    def serving(self) -> bool:
        return self.state in st.SERVING

    @property
    def is_master(self) -> bool:
        return self.pool.master is self


@dataclass(eq=False)
class SimPool:
    """One pool: its DB lives on the coordinator; sessions and tasks live in the coordinator's memory."""

    name: str
    db: Db = field(default_factory=Db)
    ref: str = NULL_REF
    hosts: list[SimHost] = field(default_factory=list)
    master: SimHost | None = None
    sessions: dict[str, str] = field(default_factory=dict)  # session ref -> user name
    epoch: int = 0  # bumped when the coordinator goes down: waiting event.from calls get a reset
    restarts: int = 0  # coordinator xapi starts (reconnect.py: timers of an older start stop)
    update_conf: object = None  # updates.UpdateConf of this pool's xapi.conf; None: the world's
    synced: dict = field(default_factory=dict)  # repository ref -> repo_format.Repo synced on the coordinator
    update_ops: set = field(default_factory=set)  # pool operations of the update calls under way (update_calls.py)

    def host_by_ref(self, ref: str) -> SimHost:
        for h in self.hosts:
            if h.ref == ref:
                return h
        raise XapiError("HANDLE_INVALID", "host", ref)
