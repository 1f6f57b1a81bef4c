"""XenApiDriver's calls for bringing hosts to one update level (coordinator/converge.py, docs/converge.md).

XenServer 8 takes updates from a Repository object enabled on the pool: a mirror (Repository.introduce), an offline
bundle (Repository.introduce_bundle, then the bundle file PUT to /bundle on the master, which unpacks and syncs it),
or another pool's coordinator (Repository.introduce_remote_pool, for a standalone host about to join that pool).
pool.sync_updates returns the hash of the synced updateinfo; host.apply_updates(host, hash) applies it and leaves the
host's last_update_hash at that hash and its pending_guidances set (reboot_host, restart_toolstack, ...).
No XenAPI here: the mixin calls through XenApiDriver's `call`, `wait_task` and `put` (xapi.py).
"""

from __future__ import annotations

import re
import xmlrpc.client
from dataclasses import dataclass

REBOOT_GUIDANCES = frozenset({"reboot_host", "reboot_host_on_livepatch_failure",
                              "reboot_host_on_kernel_livepatch_failure", "reboot_host_on_xen_livepatch_failure"})
"""Mandatory guidances a host reboot carries out (datamodel_common.ml update_guidances)."""
TOOLSTACK_GUIDANCES = frozenset({"restart_toolstack"})
"""Carried out by host.restart_agent (xe host-restart-agent)."""

BUNDLE_URI = "/bundle"  # Constants.put_bundle_uri (xapi-consts/constants.ml:165)
ENABLED_REPOSITORY_URI = "/repository/enabled"  # Constants.get_enabled_repository_uri: a remote_pool's binary_url


@dataclass(frozen=True)
class UpdateLevel:
    """A host's update state as XAPI shows it (host record fields; datamodel_host.ml ~3325-3385)."""

    last_update_hash: str  # the updateinfo hash host.apply_updates last applied ("" after an ISO install)
    latest_synced: str  # latest_synced_updates_applied: yes / no / unknown
    last_software_update: str  # DateTime of the last apply
    pending: tuple[str, ...]  # pending_guidances: mandatory (reboot_host, restart_toolstack, ...)
    recommended: tuple[str, ...] = ()  # pending_guidances_recommended
    product_version: str = ""
    build_number: str = ""

    def as_dict(self) -> dict:
        return {"last_update_hash": self.last_update_hash, "latest_synced": self.latest_synced,
                "last_software_update": self.last_software_update, "pending": list(self.pending),
                "recommended": list(self.recommended), "product_version": self.product_version,
                "build_number": self.build_number}


@dataclass(frozen=True)
class RepositoryInfo:
    ref: str
    uuid: str
    name: str
    origin: str  # remote | bundle | remote_pool
    binary_url: str
    hash: str  # the updateinfo hash of its last sync ("" until synced)


def guidance_name(value: str) -> str:
    """XAPI's enum name of a guidance (reboot_host); updateinfo.xml spells it RebootHost (updateinfo.ml)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", str(value)).lower()


def level_of(rec: dict) -> UpdateLevel:
    """An UpdateLevel from a host record (host.get_record)."""
    sv = rec.get("software_version", {}) or {}
    return UpdateLevel(last_update_hash=str(rec.get("last_update_hash") or ""),
                       latest_synced=str(rec.get("latest_synced_updates_applied") or "unknown"),
                       last_software_update=str(rec.get("last_software_update") or ""),
                       pending=tuple(sorted(guidance_name(g) for g in rec.get("pending_guidances") or ())),
                       recommended=tuple(sorted(guidance_name(g)
                                                for g in rec.get("pending_guidances_recommended") or ())),
                       product_version=str(sv.get("product_version", "")), build_number=str(sv.get("build_number", "")))


def task_value(result):
    """An Async task's result: XAPI keeps it XML-RPC encoded (task.result "<value>...</value>"); decoded here."""
    if isinstance(result, str) and result.lstrip().startswith("<value"):
        wrapped = f"<methodResponse><params><param>{result}</param></params></methodResponse>"
        return xmlrpc.client.loads(wrapped)[0][0]
    return result


class UpdateCalls:
    """Repository, pool and host update calls, over XenApiDriver's `call`, `wait_task` and `put`."""

    def repositories(self) -> list[RepositoryInfo]:
        """Every Repository record of the pool (Repository.get_all_records)."""
        return sorted((RepositoryInfo(ref=ref, uuid=str(r.get("uuid", "")), name=str(r.get("name_label", "")),
                                      origin=str(r.get("origin", "remote")), binary_url=str(r.get("binary_url", "")),
                                      hash=str(r.get("hash", "")))
                       for ref, r in self.call("Repository.get_all_records").items()), key=lambda r: r.name)

    def introduce_bundle_repository(self, name: str, description: str) -> str:
        """Repository.introduce_bundle: the record a PUT /bundle fills (datamodel_repository.ml introduce_bundle)."""
        return self.call("Repository.introduce_bundle", name, description)

    def introduce_mirror_repository(self, name: str, description: str, binary_url: str, source_url: str = "",
                                    gpgkey_path: str = "") -> str:
        """Repository.introduce(name, description, binary_url, source_url, update=true, gpgkey_path): a yum
        mirror of updates (binary_url must be in the pool's repository-domain-name-allowlist). XAPI checks
        source_url like binary_url (repository.ml assert_url_is_valid): none given, the binary URL is passed."""
        return self.call("Repository.introduce", name, description, binary_url, source_url or binary_url, True,
                         gpgkey_path)

    def introduce_remote_pool_repository(self, name: str, description: str, binary_url: str,
                                         certificate: str) -> str:
        """Repository.introduce_remote_pool: a standalone host takes its updates from a pool's coordinator
        (binary_url https://<coordinator>/repository/enabled, certificate its PEM host certificate)."""
        return self.call("Repository.introduce_remote_pool", name, description, binary_url, certificate)

    def forget_repository(self, ref: str) -> None:
        self.call("Repository.forget", ref)

    def pool_repositories(self) -> list[str]:
        return list(self.call("pool.get_repositories", self.call("pool.get_all")[0]))

    def set_pool_repositories(self, refs: list[str]) -> None:
        """pool.set_repositories: the enabled set (a bundle or remote_pool repository must be the only one)."""
        self.call("pool.set_repositories", self.call("pool.get_all")[0], list(refs))

    def sync_updates(self, *, force: bool = False, username: str = "", password: str = "") -> str:
        """pool.sync_updates as an Async task: the hash of the synced updateinfo. username / password: those of
        the remote pool (a remote_pool repository, XAPI 25.7.0+); without them the 4-argument form."""
        pool = self.call("pool.get_all")[0]
        if username:
            return str(task_value(self.task("pool.sync_updates", pool, force, "", "", username, password)))
        return str(task_value(self.task("pool.sync_updates", pool, force, "", "")))

    def upload_bundle(self, path: str, timeout: float | None = None) -> None:
        """PUT the bundle file to /bundle on the master with this session and a new task (xapi_pool.ml
        put_bundle_handler): XAPI unpacks it and syncs the enabled bundle repository; the task's error (e.g.
        BUNDLE_UNPACK_FAILED, BUNDLE_SYNC_FAILED, BUNDLE_REPO_NOT_ENABLED) comes back as an XapiError."""
        task = self.call("task.create", "provisioner: upload update bundle", path.rsplit("/", 1)[-1])
        try:
            self.put(BUNDLE_URI, path, task=task, timeout=timeout)
            self.wait_task(task, "PUT /bundle", timeout=timeout)
        finally:
            self.destroy_task(task)

    def update_level(self, host_ref: str) -> UpdateLevel:
        return level_of(self.call("host.get_record", host_ref))

    def apply_updates(self, host_ref: str, hash_: str) -> list[list[str]]:
        """host.apply_updates(host, hash) as an Async task (it disables the host itself, HA must be off): the
        warnings it returns (livepatch failures, recommended guidances)."""
        result = task_value(self.task("host.apply_updates", host_ref, hash_))
        return [list(r) for r in result or []] if isinstance(result, list) else []

    def restart_toolstack(self, host_ref: str) -> None:
        """host.restart_agent: restarts xapi on that host (clears a pending restart_toolstack guidance)."""
        self.call("host.restart_agent", host_ref)

    def host_operations(self, host_ref: str) -> list[str]:
        """host.current_operations values: "shutdown" while an accepted host.reboot / host.shutdown is under way
        (xapi_host.ml shutdown_and_reboot_common: kept after the call returned, until the host goes down)."""
        return sorted(str(v) for v in (self.call("host.get_current_operations", host_ref) or {}).values())

    def server_certificate(self, host_ref: str) -> str:
        """host.get_server_certificate: the PEM certificate the host serves (for introduce_remote_pool)."""
        return str(self.call("host.get_server_certificate", host_ref))
