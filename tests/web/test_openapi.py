"""/api/v1/openapi.json: served without a token, valid JSON, and exactly the /api/v1 routes of the app."""

from __future__ import annotations

import json
import re

from provisioner.web import openapi

IGNORED_METHODS = {"HEAD", "OPTIONS"}


def _route_pairs(app) -> set[tuple[str, str]]:
    """(OpenAPI path, method) of every /api/v1 rule; Flask's <conv:name> becomes {name}."""
    pairs = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(openapi.API_PREFIX + "/") or rule.rule == openapi.API_PREFIX:
            path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
            pairs |= {(path, method) for method in rule.methods - IGNORED_METHODS}
    return pairs


def _spec_pairs(spec: dict) -> set[tuple[str, str]]:
    return {(path, method.upper()) for path, ops in spec["paths"].items() for method in ops}


def test_every_api_route_is_described_and_every_described_path_is_a_route(app):
    routes, described = _route_pairs(app), _spec_pairs(openapi.spec())
    undocumented = sorted(routes - described)
    assert not undocumented, f"routes missing from OPERATIONS in provisioner/web/openapi.py: {undocumented}"
    stale = sorted(described - routes)
    assert not stale, f"OPERATIONS in provisioner/web/openapi.py describe routes the app lacks: {stale}"
    assert ("/api/v1/hosts/{mac}", "PATCH") in routes  # the comparison sees real routes


def test_served_without_a_token_as_valid_json(client):
    answer = client.get("/api/v1/openapi.json")
    assert answer.status_code == 200 and answer.mimetype == "application/json"
    spec = json.loads(answer.data)
    assert spec["openapi"].startswith("3.") and spec["info"]["title"]
    assert spec == json.loads(json.dumps(openapi.spec()))
    assert client.get("/api/v1/hosts").status_code == 401  # the API itself still needs the token


def test_every_operation_has_a_summary_responses_and_resolvable_refs():
    spec = openapi.spec()
    ids = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            where = f"{method.upper()} {path}"
            assert op["summary"].strip(), where
            assert op["responses"] and all(code.isdigit() for code in op["responses"]), where
            assert any(code.startswith("2") for code in op["responses"]), where
            assert all(r["description"] for r in op["responses"].values()), where
            if path != "/api/v1/openapi.json":
                assert "401" in op["responses"], where
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == set(re.findall(r"\{(\w+)\}", path)), where
            ids.append(op["operationId"])
    assert len(ids) == len(set(ids)), "operationIds must be unique"
    for ref in re.findall(r'"\$ref": "#/components/schemas/(\w+)"', json.dumps(spec)):
        assert ref in spec["components"]["schemas"], ref


def test_the_spec_needs_no_token_but_the_rest_does():
    spec = openapi.spec()
    assert spec["security"] == [{"bearer": []}]
    assert spec["paths"]["/api/v1/openapi.json"]["get"]["security"] == []
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
