"""The OpenAPI 3 description of /api/v1, served (without a token) at /api/v1/openapi.json.

To document a new route, add ONE row to OPERATIONS (tests/web/test_openapi.py fails, naming the route, when
app.url_map and this table disagree). A row: method, path under /api/v1 (Flask's `<mac>` spelled `{mac}`),
one-line summary, request body schema (None, a schema name, or CSV), the success status with its body
(`{key: schema}`; `[name]` is a list of that schema), the error statuses it can answer, and query parameters.
Every operation but the spec itself needs `Authorization: Bearer <api_token>` and may answer 401 (and 429 after
too many wrong tokens from one address).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from flask import Flask, jsonify

from provisioner.coordinator import remedies
from provisioner.model import BMC_KINDS, BOOT_METHODS

API_PREFIX = "/api/v1"
CSV = "text/csv"
SPEC_PATH = "/openapi.json"


class Op(NamedTuple):
    method: str
    path: str
    summary: str
    body: str | None = None
    ok: tuple[int, dict[str, Any]] = (200, {})
    errors: tuple[int, ...] = ()
    query: tuple[tuple[str, str, str], ...] = ()  # (name, type, description)


OPERATIONS: tuple[Op, ...] = (
    Op("GET", "/hosts", "List registered hosts", ok=(200, {"hosts": ["Host"]}),
       query=(("pool", "string", "only the hosts of this pool"),)),
    Op("POST", "/hosts", "Register a host", "HostInput", (201, {"host": "Host", "warnings": ["string"]}), (400, 409)),
    Op("POST", "/hosts/import", "Import hosts from CSV, all or nothing (header: mac,name,pool and any of disk,"
       "firmware,ip,notes,boot_mac,multipath,boot_method,bmc_kind,bmc_address,bmc_username,bmc_system_id,site; "
       "bmc_password_file only in the CLI's import: give BMC passwords here with PATCH bmc_password)",
       CSV, (201, {"imported": "integer", "hosts": ["Host"]}), (400, 413, 409, 422)),
    Op("GET", "/hosts/{mac}", "Show one host", ok=(200, {"host": "Host"}), errors=(400, 404)),
    Op("PATCH", "/hosts/{mac}", "Change some fields of a host", "HostPatch", (200, {"host": "Host", "warnings": ["string"]}),
       (400, 404, 409)),
    Op("DELETE", "/hosts/{mac}", "Remove a host (its live attempt is disarmed)", ok=(200, {"removed": "Host"}),
       errors=(400, 404)),
    Op("POST", "/hosts/{mac}/arm", "Arm the host: its next network boot installs the upgrade of `media`, once",
       "ArmInput", (201, {"attempt": "Attempt"}), (400, 404, 409)),
    Op("POST", "/hosts/{mac}/disarm", "Cancel the host's live attempt", ok=(200, {"disarmed": ["Attempt"]}),
       errors=(400, 404)),
    Op("GET", "/hosts/{mac}/attempts", "The host's attempts, newest first", ok=(200, {"attempts": ["Attempt"]}),
       errors=(400, 404)),
    Op("POST", "/hosts/{mac}/reinstall", "Lab only: wipe and fresh-install a host that is in no live pool, then "
       "join it to `pool` (202; the flow goes on in the server)", "ReinstallInput", (202, {"reinstall": "object"}),
       (400, 404, 409, 500, 502)),
    Op("GET", "/hosts/{mac}/reinstall", "The host's reinstalls (newest first) and the progress of the newest",
       ok=(200, {"reinstalls": ["object"], "progress": ["string"]}), errors=(400, 404)),
    Op("GET", "/media", "List imported media", ok=(200, {"media": ["Media"]})),
    Op("GET", "/updates", "List update repositories (offline bundles and mirrors)",
       ok=(200, {"updates": ["UpdateRepo"]})),
    Op("POST", "/updates", "Import an update bundle (a path on the server) or register a mirror URL, checked first: "
       "422 names the problem and nothing is kept", "UpdatesInput", (201, {"updates": "UpdateRepo"}),
       (400, 409, 422)),
    Op("GET", "/updates/{name}", "One update repository with its updates and guidances",
       ok=(200, {"updates": "UpdateRepo"}), errors=(404,)),
    Op("DELETE", "/updates/{name}", "Remove an update repository (refused while a run uses it)",
       ok=(200, {"removed": "UpdateRepo"}), errors=(404, 409)),
    Op("GET", "/events", "The event log, oldest first, 1000 at most per call", ok=(200, {"events": ["Event"]}),
       errors=(400,), query=(("mac", "string", "only the events of this host"),
                             ("since", "integer", "only the events with a larger id (paging)"))),
    Op("GET", "/audit", "The audit trail of operator actions, oldest first (docs/audit.md)",
       ok=(200, {"audit": ["AuditRow"]}), errors=(400,),
       query=(("since", "integer", "only the rows with a larger id (paging)"),
              ("limit", "integer", "rows at most (1000)"), ("actor", "string", "only this token name or user"))),
    Op("GET", "/audit/verify", "Recompute the audit trail's hash chain: the first row edited, inserted or deleted",
       ok=(200, {"ok": "boolean", "rows": "integer", "head": "string", "broken_id": "integer", "why": "string"})),
    Op("GET", "/pools", "List pools (never their passwords)", ok=(200, {"pools": ["Pool"]})),
    Op("POST", "/pools", "Add or replace a pool's XAPI connection details", "PoolInput", (201, {"pool": "Pool"}),
       (400, 409)),
    Op("PATCH", "/pools/{name}", "Change the pool's default boot method", "PoolPatch", (200, {"pool": "Pool"}),
       (400, 404)),
    Op("POST", "/pools/certificate", "The certificate an https URL presents (trust-on-first-use: show it, then "
       "send its fingerprint)", "CertificateInput", (200, {"certificate": "object"}), (400,)),
    Op("POST", "/pools/{name}/trust", "Change how the pool's certificate is trusted (fingerprint or CA)",
       "TrustInput", (200, {"pool": "Pool"}), (400, 404)),
    Op("POST", "/pools/{name}/discover", "Register the pool's hosts by their management PIF MACs",
       "DiscoverInput", (200, {"discovery": "Discovery"}), (400, 404, 500, 502)),
    Op("GET", "/pools/{name}/plan", "Every precheck and the upgrade order, with no side effect",
       ok=(200, {"plan": "object"}), errors=(400, 404, 500, 502),
       query=(("media", "string", "the media to upgrade to (required)"),
              *((name, "boolean", f"plan with the start option {name}")
                for name in ("disable_ha_wlb", "migrate_back", "power_cycle", "stop_pinned_vms")),
              ("consent", "string", "a consent-level precheck code the operator agrees to (repeatable; "
               "docs/prechecks.md)"),
              ("updates", "string", "an update repository (`updates list`): the plan lists the updates per host"),
              ("parallel", "string", "N or auto: the plan shows the members' waves and why each size (docs/waves.md)"),
              ("max_failures", "string", "K or P%: no new wave once that many members failed"),
              ("group_tag_prefix", "string", "host tags with this prefix are groups: never two in one wave"))),
    Op("POST", "/pools/{name}/upgrade", "Start a rolling pool upgrade (master first); it goes on in the server",
       "UpgradeInput", (202, {"run": "Run"}), (400, 404, 409, 500, 502, 503)),
    Op("POST", "/pools/{name}/upgrade/resume", "Resume the pool's unfinished run", ok=(202, {"run": "Run"}),
       errors=(400, 404, 409, 500, 502, 503)),
    Op("POST", "/pools/{name}/upgrade/abort", "Ask the pool's run to stop before its next destructive step",
       ok=(200, {"run": "Run"}), errors=(400, 404, 409)),
    Op("POST", "/pools/{name}/upgrade/mark-failed", "Mark a host the run is waiting on (installer running past "
       "every timer) failed: the waiting step fails it and its remedy is classified from evidence",
       "MarkFailedInput", (200, {"run": "Run", "host": "string"}), (400, 404, 409)),
    Op("POST", "/pools/{name}/upgrade/restore-settings", "Put back now the HA, WLB and VM auto_poweron settings "
       "ended runs turned off and left off; refused while a run of the pool is active",
       ok=(200, {"restore": "object"}), errors=(400, 404, 409, 500, 502)),
    Op("GET", "/runs", "Upgrade runs, newest first", ok=(200, {"runs": ["Run"]}),
       query=(("pool", "string", "only the runs of this pool"),)),
    Op("GET", "/runs/{run_id}", "One run: each host's step, reason and remedy", ok=(200, {"run": "Run"}),
       errors=(404,)),
    Op("POST", "/hosts/{mac}/reinstall", "Lab reinstall-and-join: fresh-install a host that is not a live pool "
       "member (its disk is WIPED; `confirm` = its name), then pool.join it; goes on in the server (or resumes)",
       "ReinstallInput", (202, {"reinstall": "Reinstall", "data_lost": ["object"]}), (400, 404, 409, 500, 502)),
    Op("GET", "/hosts/{mac}/reinstall", "The host's reinstalls, newest first, and the newest one's progress lines",
       ok=(200, {"reinstalls": ["Reinstall"], "progress": ["string"], "data_lost": ["object"]}), errors=(400, 404)),
    Op("GET", SPEC_PATH, "This OpenAPI description (no token needed)", ok=(200, {})),
)

_STR, _INT, _OPT_STR = {"type": "string"}, {"type": "integer"}, {"type": ["string", "null"]}
_TRUST = {"fingerprint": {"type": "string", "description": "SHA-256 of the master's certificate, hex, colons optional "
                          "(https needs this or ca_pem)"},
          "ca_pem": {"type": "string", "description": "PEM text of the CA that signs the certificate"}}
_HOST_FIELDS = {
    "mac": {"type": "string", "example": "aa:bb:cc:dd:ee:01", "description": "any spelling in, canonical out"},
    "name": _STR, "pool": _STR,
    "disk": {**_OPT_STR, "description": "boot disk of the installation, e.g. /dev/disk/by-id/scsi-3600..."},
    "firmware": {"type": "string", "enum": ["bios", "uefi"]}, "ip": _OPT_STR, "notes": _STR,
    "boot_mac": {**_OPT_STR, "description": "the NIC it network-boots from when not `mac` (bond, provisioning NIC); "
                 "unique across hosts like mac"},
    "multipath": {"type": "boolean",
                  "description": "boot from SAN: the installer gets device_mapper_multipath=enabled"},
    "boot_method": {"type": ["string", "null"], "enum": [*BOOT_METHODS, None],
                    "description": "null: the pool's default boot method"},
    "bmc_kind": {"type": ["string", "null"], "enum": [*BMC_KINDS, None]},
    "bmc_address": {**_OPT_STR, "description": "Redfish: the service root URL (https://bmc:443); IPMI: host[:port]"},
    "bmc_username": _OPT_STR,
    "bmc_system_id": {**_OPT_STR, "description": "Redfish system id; null: found by the host's MAC"},
    "site": {**_OPT_STR, "description": "the site whose boot server boots it (docs/sites.md); absent on POST: the "
             "registering server's site; null: any server (as before sites). A site no server registered yet is "
             "accepted with a `warnings` entry in the answer"},
}
_BMC_PASSWORD = {"bmc_password": {"type": "string", "writeOnly": True, "description": "stored encrypted, never "
                                  "returned; absent, null or empty: keep the stored one"}}
_HOST_OUT = {**_HOST_FIELDS, "bmc_password_set": {"type": "boolean", "readOnly": True,
                                                  "description": "whether a BMC password is stored"}}
SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": {"type": "object", "required": ["error"], "properties": {
        "error": _STR, "field": _OPT_STR, "problems": {"type": "array", "items": {"type": "object"}}}},
    "Host": {"type": "object", "required": list(_HOST_OUT), "properties": _HOST_OUT},
    "HostInput": {"type": "object", "required": ["mac", "name", "pool"], "properties": {**_HOST_FIELDS,
                                                                                        **_BMC_PASSWORD}},
    "HostPatch": {"type": "object", "properties": {**{k: v for k, v in _HOST_FIELDS.items() if k != "mac"},
                                                   **_BMC_PASSWORD}},
    "ArmInput": {"type": "object", "required": ["media"], "properties": {
        "media": _STR, "window_seconds": {"type": "integer", "minimum": 1}}},
    "Attempt": {"type": "object", "description": "one arming of one host (its token is never returned)",
                "properties": {"id": _INT, "mac": _STR, "media": _STR, "state": {"type": "string", "enum": [
                    "armed", "started", "succeeded", "failed", "disarmed", "expired"]},
                    "max_runs": _INT, "runs": _INT, "run_id": _OPT_STR, "window_until": _OPT_STR,
                    "exit_code": {"type": ["integer", "null"]}, "created_at": _STR, "updated_at": _STR,
                    "started_at": _OPT_STR, "finished_at": _OPT_STR,
                    "boot_client": {**_OPT_STR, "description": "the first address its boot config went to: the "
                                    "answer file and scripts are served to it or the host's ip only"}}},
    "Media": {"type": "object", "properties": {
        "name": _STR, "path": _STR, "product_name": _STR, "product_version": _STR, "platform_version": _STR,
        "build": _OPT_STR, "boot_files": {"type": "array", "items": _STR}, "added_at": _STR,
        "sites": {"type": "object", "description": "per site: {state: ready|syncing|failed, servers: [{server, "
                  "state, path, error}]}: which site's boot server has the tree (docs/sites.md)"}}},
    "UpdatesInput": {"type": "object", "required": ["name", "source"], "properties": {
        "name": _STR, "source": {"type": "string", "description": "an .xsbundle's path on the server, or a mirror's "
                                 "http(s) URL"},
        "product_version": {"type": "string", "description": "the XenServer version it must be for (default: an "
                            "imported media's)"},
        "allow_unsigned": {"type": "boolean", "description": "accept it without a verified signature (recorded)"},
        "check": {"type": "boolean", "default": True, "description": "false: register a mirror without reading it"}}},
    "UpdateRepo": {"type": "object", "description": "an update repository (docs/updates.md)", "properties": {
        "name": _STR, "kind": {"type": "string", "enum": ["bundle", "mirror"]}, "source": _STR,
        "product_version": _OPT_STR, "signed": {"type": "boolean"}, "unsigned": {"type": "boolean"},
        "checked": {"type": "boolean"}, "update_ids": {"type": "array", "items": _STR}, "update_level": _STR,
        "repo_url": _OPT_STR, "bundle_url": _OPT_STR, "sha256": _OPT_STR, "size": {"type": ["integer", "null"]},
        "details": {"type": "object"}, "added_at": _STR}},
    "Pool": {"type": "object", "properties": {"name": _STR, "url": _STR, "username": _STR, "created_at": _STR,
                                              "updated_at": _STR, "boot_method": {"type": "string",
                                                                                  "enum": list(BOOT_METHODS)},
                                              "trust": {"type": "string", "enum": ["fingerprint", "ca", "system"]},
                                              "tls_fingerprint": _STR, "tls_ca": _STR}},
    "CertificateInput": {"type": "object", "required": ["url"], "properties": {"url": _STR}},
    "TrustInput": {"type": "object", "properties": _TRUST},
    "PoolPatch": {"type": "object", "required": ["boot_method"], "properties": {
        "boot_method": {"type": "string", "enum": list(BOOT_METHODS),
                        "description": "default of the pool's hosts whose own boot_method is null"}}},
    "PoolInput": {"type": "object", "required": ["name", "url", "password"], "properties": {
        "name": _STR, "url": {"type": "string", "example": "https://10.0.0.10"},
        "username": {"type": "string", "default": "root"}, "password": {"type": "string", "writeOnly": True},
        **_TRUST}},
    "DiscoverInput": {"type": "object", "properties": {"firmware": {"type": "string", "enum": ["bios", "uefi"]}}},
    "Discovery": {"type": "object", "properties": {k: {"type": "array", "items": {}}
                                                   for k in ("added", "unchanged", "conflicts")}},
    "MarkFailedInput": {"type": "object", "required": ["host"], "properties": {
        "host": {"type": "string", "description": "the host's name or MAC; its step must be power_on, wait_down "
                 "or wait_up"}}},
    "UpgradeInput": {"type": "object", "required": ["media"], "properties": {
        "media": _STR, **{k: {"type": "boolean"} for k in ("stop_on_failure", "disable_ha_wlb", "migrate_back",
                                                           "power_cycle", "stop_pinned_vms")},
        "consent": {"type": "array", "items": _STR, "description": "consent-level precheck codes the operator "
                    "agrees to (docs/prechecks.md)"},
        "host_up_timeout": {"type": "number", "minimum": 60, "maximum": 86400, "description": "seconds a host "
                            "may take to come back once its installer reported (default: the configuration's "
                            "host_up_timeout_s, 1200); kept with the run"},
        "updates": {"type": "string", "description": "an update repository (`updates list`): CONVERGE brings each "
                    "upgraded host, then the pool, to its update level (docs/converge.md); kept with the run"},
        "parallel": {"type": ["string", "integer"], "description": "N or \"auto\": after the master, the members in "
                     "waves of at most N hosts, or the largest safe ones (docs/waves.md)"},
        "max_failures": {"type": ["string", "integer"], "description": "K or \"P%\": no new wave starts once that "
                         "many members failed; the wave in flight finishes"},
        "group_tag_prefix": {"type": "string", "description": "host tags starting with it are groups (rack:, "
                             "feed:): never two hosts of one group in a wave"}}},
    "Run": {"type": "object", "description": "the run report (provisioner.coordinator.report)", "properties": {
        "id": _STR, "pool": _STR, "media": _STR, "state": _STR, "reason": _OPT_STR, "running_here": {"type": "boolean"},
        "hosts": {"type": "array", "items": {"$ref": "#/components/schemas/RunHost"}}}},
    "RunHost": {"type": "object", "description": "one host of a run; a FAILED host has a remedy classified from "
                "evidence (docs/remedies.md)", "properties": {
        "mac": _STR, "name": _STR, "role": _STR, "step": _STR, "reason": _OPT_STR, "remedy": _OPT_STR,
        "waiting": {"type": ["string", "null"], "description": "what the run waits for at this host now: members "
                    "reconnecting to a restarted master, a retried call, the host-up timeout"},
        "remedy_class": {"type": ["string", "null"], "enum": [*remedies.CLASSES, None]},
        "evidence": {"type": "array", "items": {"type": "object", "properties": {
            "kind": _STR, "when": _STR, "what": _STR}}},
        "host_down": {"type": "boolean", "description": "not live, not answering or unknown when it failed"}}},
    "ReinstallInput": {"type": "object", "required": ["pool", "media", "confirm"], "properties": {
        "pool": _STR, "media": _STR, "confirm": {"type": "string", "description": "the host's registered name"},
        "forget": {"type": "boolean", "description": "host.destroy the dead member's record first"},
        "root_password_hash": {"type": "string", "writeOnly": True, "description": "crypt(3) hash only "
                               "(default: the server's PROVISIONER_ROOT_PASSWORD_HASH)"},
        "host_url": _STR,
        "accept_data_loss": {"type": "boolean", "description": "accept that the VM disks, suspend images and "
                             "snapshots on the host's local storage are wiped (refused without it; 409 lists them)"},
        "fix_before_join": {"type": "boolean", "description": "go on although pool.join needs the new host fixed "
                            "first (updates, edition, backend): the flow waits at join_refused; POST again to retry"}}},
    "Reinstall": {"type": "object", "description": "one reinstall-and-join flow (never its root-password hash)",
                  "properties": {"id": _INT, "mac": _STR, "pool": _STR, "media": _STR, "step": {
                      "type": "string", "enum": ["forget", "arm", "installing", "wait_xapi", "join", "join_refused",
                                                 "wait_joined", "done", "failed"]},
                      "host_name": _STR, "old_uuid": _OPT_STR, "old_pool": _OPT_STR, "new_uuid": _OPT_STR,
                      "host_url": _STR, "network": {"type": "object"}, "attempt_id": {"type": ["integer", "null"]},
                      "reason": _OPT_STR, "created_at": _STR, "updated_at": _STR}},
    "Event": {"type": "object", "properties": {
        "id": _INT, "ts": _STR, "mac": _OPT_STR, "run_id": _OPT_STR, "kind": _STR, "details": {"type": "object"}}},
    "AuditRow": {"type": "object", "properties": {
        "id": _INT, "ts": _STR, "actor": _STR, "actor_kind": {"type": "string", "enum": ["token", "dashboard", "cli"]},
        "source": _STR, "action": _STR, "target": _STR, "outcome": _STR, "details": {"type": "object"},
        "prev_hash": _STR, "hash": _STR}},
}
_ERROR_TEXT = {400: "invalid input (the message names the field)", 401: "missing or wrong bearer token",
               404: "no such record", 409: "conflicts with the current state", 413: "body too large",
               422: "rejected as a whole; `problems` lists every bad row", 500: "a stored secret cannot be read",
               502: "the pool did not answer or XAPI refused", 503: "this server does not drive runs (not `serve`)",
               429: "too many failed authentications from this address; see Retry-After",
               403: "the token's role does not allow this (viewer: reads only; operator: not tokens/webhooks)"}


def _schema(ref: Any) -> dict[str, Any]:
    if isinstance(ref, list):
        return {"type": "array", "items": _schema(ref[0])}
    if ref in SCHEMAS:
        return {"$ref": f"#/components/schemas/{ref}"}
    return {"type": ref}


def _operation(op: Op) -> dict[str, Any]:
    status, fields = op.ok
    body = {"type": "object", "properties": {k: _schema(v) for k, v in fields.items()}}
    responses: dict[str, Any] = {str(status): {"description": "success",
                                               "content": {"application/json": {"schema": body}}}}
    public = op.path == SPEC_PATH
    refused = set() if public else {401, 429} | ({403} if op.method != "GET" else set())  # 403: the token's role
    for code in sorted(set(op.errors) | refused):
        responses[str(code)] = {"description": _ERROR_TEXT.get(code, "error"), "content": {
            "application/json": {"schema": _schema("Error")}}}
    result: dict[str, Any] = {"summary": op.summary, "operationId": _operation_id(op), "responses": responses}
    params = [{"name": name, "in": "path", "required": True, "schema": _STR}
              for name in _path_params(op.path)]
    params += [{"name": name, "in": "query", "required": False, "description": text, "schema": {"type": kind}}
               for name, kind, text in op.query]
    if params:
        result["parameters"] = params
    if op.body == CSV:
        result["requestBody"] = {"required": True, "content": {CSV: {"schema": _STR}}}
    elif op.body:
        result["requestBody"] = {"required": True, "content": {"application/json": {"schema": _schema(op.body)}}}
    if public:
        result["security"] = []
    return result


def _path_params(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{") and part.endswith("}")]


def _operation_id(op: Op) -> str:
    words = [p.strip("{}").replace(".", "_") for p in op.path.split("/") if p]
    return "_".join([op.method.lower(), *words])


def spec() -> dict[str, Any]:
    """The whole OpenAPI document (a fresh dict)."""
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(API_PREFIX + op.path, {})[op.method.lower()] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {"title": "provisioner REST API", "version": "1",
                 "description": "Host registry, arming, media, pools, rolling upgrade runs and the event log "
                                "of the XenServer upgrade provisioner. Errors are JSON {\"error\": \"...\"}."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {"schemas": SCHEMAS,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                      "description": "the server's api_token"}}},
    }


def openapi_view():
    return jsonify(spec())


def init_app(app: Flask) -> None:
    """Serve the description outside the API blueprint, so fetching it needs no token."""
    app.add_url_rule(API_PREFIX + SPEC_PATH, "openapi", openapi_view, methods=["GET"])
