"""``GET /api/openapi.json``: served, valid OpenAPI 3.1, and in step with the routes.

The drift check compares the application's URL map with the document in both directions, so a
route added without its description (or a description left behind by a removed route) fails
here.
"""

from __future__ import annotations

import re

import pytest

from local_bridge import create_app, state_of
from local_bridge.api.dashboard import PAGE_ENDPOINTS
from local_bridge.api.ws import WEBSOCKET_ENDPOINTS
from local_bridge.app import RATE_EXEMPT

#: Routes deliberately left out of the document: static files and the dashboard's HTML pages
#: (and the WebSocket endpoints).
EXCLUDED_ENDPOINTS = frozenset({"static"}) | PAGE_ENDPOINTS
#: Methods Flask adds to every rule by itself.
IMPLICIT_METHODS = frozenset({"HEAD", "OPTIONS"})
#: Readiness answers 503 with its own body (which check failed), not the error envelope.
HEALTH_DEGRADED = ("get", "/api/system/health", "503")
_CONVERTER = re.compile(r"<(?:[a-z_]+(?:\([^)]*\))?:)?([a-zA-Z_][a-zA-Z0-9_]*)>")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('openapi')}/t.db"
    application = create_app({"DATABASE_URL": url})
    yield application
    state_of(application).close()


@pytest.fixture(scope="module")
def document(app):
    response = app.test_client().get("/api/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return response.get_json()


def openapi_path(rule: str) -> str:
    """A Werkzeug rule (``/api/jobs/<job_id>``) as an OpenAPI path (``/api/jobs/{job_id}``)."""
    return _CONVERTER.sub(r"{\1}", rule)


def routes(app) -> set[tuple[str, str]]:
    """Every (method, OpenAPI path) the application routes, but pages, static files and
    WebSockets."""
    found = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint in EXCLUDED_ENDPOINTS or rule.endpoint in WEBSOCKET_ENDPOINTS:
            continue
        if rule.websocket:
            continue
        for method in sorted((rule.methods or set()) - IMPLICIT_METHODS):
            found.add((method.lower(), openapi_path(rule.rule)))
    return found


def described(document) -> set[tuple[str, str]]:
    return {
        (method, path)
        for path, operations in document["paths"].items()
        for method in operations
        if method in {"get", "post", "put", "patch", "delete"}
    }


def test_every_route_is_described_and_every_description_routed(app, document):
    missing = routes(app) - described(document)
    stale = described(document) - routes(app)
    assert not missing, f"routes without an OpenAPI operation: {sorted(missing)}"
    assert not stale, f"OpenAPI operations without a route: {sorted(stale)}"


def test_path_parameters_are_named_as_in_the_route(document):
    for path, operations in document["paths"].items():
        in_path = set(re.findall(r"{([^}]+)}", path))
        for method, operation in operations.items():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == in_path, f"{method.upper()} {path}: {declared} != {in_path}"


def test_a_route_added_without_description_is_caught(document, tmp_path):
    """The check itself can fail: an extra route shows up as missing."""
    extra = create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/extra.db"})
    try:
        extra.add_url_rule("/api/undocumented/<thing_id>", "undocumented", lambda thing_id: "")
        missing = routes(extra) - described(document)
        assert missing == {("get", "/api/undocumented/{thing_id}")}
    finally:
        state_of(extra).close()


def test_the_document_is_valid_openapi_3_1(document):
    schemathesis = pytest.importorskip("schemathesis")
    schema = schemathesis.openapi.from_dict(document)
    operations = list(schema.get_all_operations())
    assert all(result.ok() for result in operations), [
        str(result.err()) for result in operations if not result.ok()
    ]
    assert document["openapi"] == "3.1.0"
    assert len(operations) == len(described(document))


def test_every_operation_answers_its_errors_with_the_envelope(document):
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            for status, response in responses.items():
                if int(status) >= 400 and (method, path, status) != HEALTH_DEGRADED:
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (method, path)
            assert {"400", "403", "503"} <= set(responses), (method, path)
            assert ("429" in responses) == (operation["x-endpoint"] not in RATE_EXEMPT)
            if "requestBody" in operation:
                assert operation["requestBody"]["required"] is True
                assert {"413", "415", "422"} <= set(responses), (method, path)
                body = operation["requestBody"]["content"]["application/json"]["schema"]
                assert "$ref" in body, (method, path)


def test_security_follows_the_roles(document):
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": schemes["bearerAuth"]["description"],
    }
    by_endpoint = {
        operation["x-endpoint"]: operation
        for operations in document["paths"].values()
        for operation in operations.values()
    }
    assert by_endpoint["system.health"]["security"] == []
    assert by_endpoint["metrics"]["security"] == [] == by_endpoint["metrics"]["x-roles"]
    assert "401" not in by_endpoint["system.health"]["responses"]
    assert by_endpoint["websocket_admin.broadcast"]["x-roles"] == ["admin"]
    assert by_endpoint["workflow.claim_job"]["x-roles"] == ["worker", "admin"]
    assert by_endpoint["workflow.create_session"]["security"] == [{"bearerAuth": []}]
    assert by_endpoint["events.stream"]["security"] == [{"bearerAuth": []}, {"tokenQuery": []}]
    assert by_endpoint["workflow.create_session"]["x-roles"] == ["client", "worker", "admin"]
    assert "401" in by_endpoint["workflow.create_session"]["responses"]


def test_lists_claim_publish_and_stream_shapes(document):
    paths, schemas = document["paths"], document["components"]["schemas"]
    page = schemas["JobPage"]
    assert set(page["required"]) == {"items", "next_cursor"}
    assert page["properties"]["next_cursor"]["type"] == ["string", "null"]
    claim = paths["/api/jobs/claim"]["post"]["responses"]
    assert "content" not in claim["204"] and "200" in claim
    broadcast = paths["/api/websocket/broadcast"]["post"]["responses"]["202"]
    assert broadcast["content"]["application/json"]["schema"]["$ref"].endswith("/Published")
    stream = paths["/api/events/stream"]["get"]["responses"]["200"]
    assert list(stream["content"]) == ["text/event-stream"]
    limit = next(p for p in paths["/api/sessions"]["get"]["parameters"] if p["name"] == "limit")
    assert limit["schema"]["type"] == "integer" and limit["schema"]["minimum"] == 1
    assert "/ws" not in paths and not any(path.startswith("/ws/") for path in paths)
