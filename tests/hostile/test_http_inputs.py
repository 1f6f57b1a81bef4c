"""Issue 15 finding 11 (API inputs): a lone surrogate or 1,000-deep JSON answered 500 with a traceback;
`window_seconds` of 1e20 failed and `true` was accepted as 1 second. Every API input error is now a 400 naming
the problem, and the field when there is one; the API keeps working after each."""

from __future__ import annotations

import pytest

from hostile_http import ARMED
from provisioner import media
from provisioner.model import Host
from helpers import make_media_tree

JSON = {"Content-Type": "application/json"}
DEEP = "[" * 1000 + "]" * 1000
HOST = '"mac": "52:54:00:15:00:07", "pool": "p", "disk": "/dev/sda"'

CASES = [
    # (what, method, path, body, field or None, words in the error)
    ("lone surrogate in a value", "post", "/api/v1/hosts", '{%s, "name": "\\ud800"}' % HOST, "name", "surrogate"),
    ("lone surrogate in a key", "post", "/api/v1/hosts", '{%s, "\\udfff": 1}' % HOST, "\\udfff", "surrogate"),
    ("lone surrogate in a PATCH", "patch", f"/api/v1/hosts/{ARMED}", '{"notes": "a\\udc00b"}', "notes",
     "surrogate"),
    ("1,000-deep JSON body", "post", "/api/v1/hosts", DEEP, None, "nested"),
    ("1,000-deep JSON in a field", "post", "/api/v1/hosts", '{%s, "name": %s}' % (HOST, DEEP), None, "nested"),
    ("20-deep JSON in a field", "post", "/api/v1/hosts", '{%s, "notes": %s}' % (HOST, "[" * 20 + "]" * 20),
     "notes", "nested"),
    ("1,000-deep JSON to another blueprint", "post", "/api/v1/pools", DEEP, None, "nested"),
    ("not JSON", "post", "/api/v1/hosts", "{nope", None, "not valid JSON"),
    ("not UTF-8", "post", "/api/v1/hosts", b'{"name": "\xff"}', None, "not valid JSON"),
    ("window_seconds 1e20", "post", f"/api/v1/hosts/{ARMED}/arm", '{"media": "xs84", "window_seconds": 1e20}',
     "window_seconds", "whole number"),
    ("window_seconds 10**20", "post", f"/api/v1/hosts/{ARMED}/arm",
     '{"media": "xs84", "window_seconds": 100000000000000000000}', "window_seconds", "between"),
    ("window_seconds true", "post", f"/api/v1/hosts/{ARMED}/arm", '{"media": "xs84", "window_seconds": true}',
     "window_seconds", "whole number"),
    ("window_seconds -5", "post", f"/api/v1/hosts/{ARMED}/arm", '{"media": "xs84", "window_seconds": -5}',
     "window_seconds", "between"),
    ("window_seconds \"60\"", "post", f"/api/v1/hosts/{ARMED}/arm", '{"media": "xs84", "window_seconds": "60"}',
     "window_seconds", "whole number"),
    ("since superscript two", "get", "/api/v1/events?since=%C2%B2", None, "since", "integer"),
    ("since past 64 bits", "get", "/api/v1/events?since=99999999999999999999", None, "since", "integer"),
]


@pytest.fixture
def api(client, store, config, tmp_path):
    media.import_media(store, config, "xs84", make_media_tree(tmp_path / "tree"))
    store.add_host(Host.from_fields({"mac": ARMED, "name": "victim", "pool": "p", "disk": "/dev/disk/by-id/d-1"}))
    return client


@pytest.mark.parametrize("what,method,path,body,field,words", CASES, ids=[c[0] for c in CASES])
def test_api_input_errors_are_400_with_the_field(api, auth, what, method, path, body, field, words):
    response = getattr(api, method)(path, data=body, headers={**auth, **JSON})
    assert response.status_code == 400, response.get_data(as_text=True)
    error = response.get_json()
    assert words in error["error"]
    if field is not None:
        assert error["field"] == field
    # the API still answers, and the host the bad request named is unchanged
    assert api.get(f"/api/v1/hosts/{ARMED}", headers=auth).get_json()["host"]["notes"] == ""


def test_a_good_window_still_arms(api, auth):
    response = api.post(f"/api/v1/hosts/{ARMED}/arm", json={"media": "xs84", "window_seconds": 600}, headers=auth)
    assert response.status_code == 201 and response.get_json()["attempt"]["window_until"]
