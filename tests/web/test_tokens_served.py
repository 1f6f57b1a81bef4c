"""Named tokens through the real server (`serve`'s Runtime: waitress, the header-time body gate, the app): a named
token's body is admitted and its call audited with the client's address; a viewer's write is refused (403) and
audited; the webhook pump runs with the server."""

from __future__ import annotations

import http.client
import json

from hostile_http import client_ip, serving

from provisioner import tokens


def post(port: int, path: str, body: dict, secret: str, source: str) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20, source_address=(source, 0))
    try:
        conn.request("POST", path, body=json.dumps(body), headers={"Authorization": f"Bearer {secret}",
                                                                   "Content-Type": "application/json"})
        answer = conn.getresponse()
        return answer.status, json.loads(answer.read() or b"{}")
    finally:
        conn.close()


def test_named_tokens_through_the_server(config, store, tmp_path):
    _, operator = tokens.add(store, "ops", tokens.OPERATOR)
    _, viewer = tokens.add(store, "look", tokens.VIEWER)
    host = {"mac": "aa:bb:cc:dd:ee:07", "name": "h7", "pool": "p"}
    with serving(config, store, tmp_path) as srv:
        assert srv.rt.webhooks is not None  # serve runs the webhook pump
        before = store.last_audit_id()
        status, answer = post(srv.port, "/api/v1/hosts", host, viewer, client_ip(5))
        assert status == 403 and "viewer" in answer["error"] and store.get_host("aa:bb:cc:dd:ee:07") is None
        status, _ = post(srv.port, "/api/v1/hosts", host, operator, client_ip(6))
        assert status == 201 and store.get_host("aa:bb:cc:dd:ee:07").name == "h7"
    refused, done = store.audit_rows(since_id=before)
    assert (refused["actor"], refused["outcome"], refused["source"]) == ("look", "refused", client_ip(5))
    assert (done["actor"], done["outcome"], done["source"], done["action"]) == ("ops", "ok", client_ip(6),
                                                                                "api.add_host")
    assert done["details"]["json"]["name"] == "h7"
