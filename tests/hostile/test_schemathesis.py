"""schemathesis over every operation of ``/api/openapi.json``, in process on SQLite.

Each generated request, valid (positive) or not (negative), must be answered without a server
error, with a status, content type and body the document declares for it; and a request
answered 4xx must change nothing: no row of sessions, photos, jobs or exports, no event on the
bus. With ``LOCAL_BRIDGE_AUTH=token`` the same requests carrying a bad token, or a role too weak
for the operation (the document's ``x-roles``), are refused 401 / 403; with an admin's token
they keep the same contract.

Budget: a few examples per operation, derandomized, in CI; ``LOCAL_BRIDGE_HOSTILE=long`` runs
hundreds per operation (minutes) with a random seed.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import text

from budget import LONG, examples
from local_bridge import create_app, state_of
from local_bridge.api import openapi
from local_bridge.auth.tokens import ROLES, mint

EXAMPLES = examples(ci=12, long=400)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
TABLES = ("sessions", "photos", "jobs", "exports")
#: A long poll is held at most this long here (the document allows 30 s).
MAX_WAIT = "0.05"
STREAM_PATH = "/api/events/stream"


class FirstChunkOfStreams:
    """WSGI middleware: an SSE answer ends after its first chunk (``retry:``), so a generated
    request to ``/api/events/stream`` that is admitted gets a finite body to check. Closing the
    stream's iterator takes its subscriber off the bus, as a client hanging up would."""

    def __init__(self, wsgi_app):
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        body = self.wsgi_app(environ, start_response)
        if environ.get("PATH_INFO") != STREAM_PATH:
            return body
        return self._first_chunk(body)

    @staticmethod
    def _first_chunk(body):
        try:
            for chunk in body:
                yield chunk
                break
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()


def seed(app, headers: dict[str, str] | None = None) -> dict[str, list[str]]:
    """A few rows for path ids to hit: a session with a pending and a plain photo, a queued
    and a running job, a running export. Returns the ids by path parameter name."""
    client = app.test_client()
    client.environ_base.update(
        {f"HTTP_{name.upper().replace('-', '_')}": value for name, value in (headers or {}).items()}
    )

    def made(response, status=(200, 201)):
        assert response.status_code in status, response.get_json()
        return response.get_json()

    session = made(client.post("/api/sessions", json={"name": "s", "import_folder": "/in"}))
    photo = {"file_name": "a.jpg", "file_path": "/in/a.jpg", "source": "camera"}
    pending = made(client.post(f"/api/sessions/{session['id']}/photos", json=photo))
    plain = made(client.post(f"/api/sessions/{session['id']}/photos", json=photo))
    made(
        client.post(
            f"/api/photos/{pending['id']}/analysis",
            json={"ai_score": 0.5, "analysis_results": {"faces": 1}},
        )
    )
    running = made(client.post("/api/jobs", json={"kind": "analysis", "photo_id": plain["id"]}))
    made(client.post("/api/jobs/claim", json={"worker": "w1"}))
    queued = made(client.post("/api/jobs", json={"kind": "analysis"}))
    export = made(
        client.post(
            "/api/exports",
            json={"photo_id": plain["id"], "preset_name": "web", "destination": "/out"},
        )
    )
    return {
        "session_id": [session["id"]],
        "photo_id": [pending["id"], plain["id"]],
        "job_id": [queued["id"], running["id"]],
        "export_id": [export["id"]],
        "client_id": ["nobody"],
    }


def snapshot(app) -> tuple[Any, ...]:
    """Everything a request could write: every row of the workflow's tables, and the bus's
    seq and count of published events."""
    state = state_of(app)
    digest = hashlib.sha256()
    with state.database.engine.connect() as connection:
        for table in TABLES:
            for row in connection.execute(text(f"SELECT * FROM {table} ORDER BY id")):  # noqa: S608
                digest.update(repr(tuple(row)).encode())
            digest.update(b"|")
    return digest.hexdigest(), state.bus.last_seq, state.bus.events_published


def fuzzing_app(folder, headers: dict[str, str] | None = None, **config: Any):
    """An application on a fresh SQLite file, seeded, serving :data:`schema`'s document."""
    # Progress reports are published (almost) at once: no conflation timer publishes later,
    # during another request.
    application = create_app(
        {"DATABASE_URL": f"sqlite:///{folder}/t.db", "PROGRESS_RATE": 1000, **config}
    )
    served = application.test_client().get("/api/openapi.json").get_json()
    assert served == openapi.spec_json()
    ids = seed(application, headers)
    assert SEEDED in ({}, ids)  # fresh databases number alike: the hooks serve both apps
    SEEDED.update(ids)
    application.wsgi_app = FirstChunkOfStreams(application.wsgi_app)
    return application


@pytest.fixture(scope="module")
def fuzzed_app(tmp_path_factory):
    application = fuzzing_app(tmp_path_factory.mktemp("schemathesis"))
    yield application
    state_of(application).close()


#: Tokens of each role for the application with authentication on.
SECRET = "schemathesis-secret-key-of-32-bytes-or-more"
TOKENS = {role: mint(SECRET, sub=role, role=role, ttl=3600)[0] for role in ROLES}


def bearer(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


@pytest.fixture(scope="module")
def guarded_app(tmp_path_factory):
    """The same, with ``LOCAL_BRIDGE_AUTH=token``."""
    application = fuzzing_app(
        tmp_path_factory.mktemp("schemathesis_auth"),
        bearer("admin"),
        AUTH="token",
        SECRET_KEY=SECRET,
    )
    yield application
    state_of(application).close()


#: The document the application serves (``fuzzed_app`` checks it is this one), loaded when the
#: module is collected so that each operation is a test of its own.
schema = schemathesis.openapi.from_dict(openapi.spec_json())
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
    max_examples=EXAMPLES,
    deterministic=not LONG,
)
#: Ids of the seeded rows by path parameter name (``fuzzed_app`` fills it in).
SEEDED: dict[str, list[str]] = {}


@schema.hook
def flatmap_path_parameters(context, path_parameters):
    """Half the time, the path's ids are those of seeded rows, so that actions reach real
    resources (and their state checks) instead of answering 404."""
    if not path_parameters:
        return st.just(path_parameters)
    real = st.fixed_dictionaries(
        {
            name: st.sampled_from(SEEDED[name]) if name in SEEDED else st.just(value)
            for name, value in path_parameters.items()
        }
    )
    return st.one_of(st.just(path_parameters), real)


@schema.hook
def flatmap_body(context, body):
    """Likewise for a ``photo_id`` in a body (a job's or an export's photo)."""
    if not isinstance(body, dict) or "photo_id" not in body:
        return st.just(body)
    return st.one_of(
        st.just(body),
        st.sampled_from(SEEDED["photo_id"]).map(lambda photo_id: {**body, "photo_id": photo_id}),
    )


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    derandomize=not LONG,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_keeps_its_contract(case, fuzzed_app):
    call_and_check(case, fuzzed_app)


@schema.parametrize()
@settings(
    max_examples=examples(ci=4, long=100),
    derandomize=not LONG,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_with_auth_on_only_the_right_token_gets_through(case, guarded_app):
    """Auth on: a bad token is answered 401 and a role too weak 403; an admin's token gets
    the same contract as with auth off."""
    roles = case.operation.definition.raw["x-roles"]
    attempts = [({"Authorization": "Bearer not-a-token"}, (401,))] if roles else []
    if roles and roles[0] != ROLES[0]:
        weaker = ROLES[ROLES.index(roles[0]) - 1]
        # (schemathesis drops the Authorization header from some cases: refused 401 too)
        attempts.append((bearer(weaker), (401, 403)))
    for headers, refusals in attempts:
        response = call_and_check(case, guarded_app, headers)
        # 404 and 405: no route matched, so there is no endpoint to check a token for; another
        # method than the operation's (schemathesis tries some) is not this operation
        if case.method == case.operation.method.upper():
            assert response.status_code in (*refusals, 404, 405), (
                f"{case.method} {case.formatted_path} with {response.request.headers}: "
                f"{response.status_code}"
            )
    call_and_check(case, guarded_app, bearer("admin"))


def call_and_check(case, app, headers: dict[str, str] | None = None):
    """Send ``case`` to ``app``; check the answer against the document, and that a 4xx
    answer wrote nothing and published nothing."""
    if case.query and "wait" in case.query:
        case.query["wait"] = _short_wait(case.query["wait"])
    before = snapshot(app)
    response = case.call(app=app, headers=headers)
    case.validate_response(response, checks=CHECKS, headers=headers)
    if 400 <= response.status_code < 500:
        assert snapshot(app) == before, (
            f"{case.method} {case.formatted_path} answered {response.status_code} "
            "but changed the database or published an event"
        )
    return response


def _short_wait(value: Any) -> Any:
    """A valid ``wait`` held at most :data:`MAX_WAIT`; anything else unchanged (it must be
    refused, and is, at once)."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return value
    return MAX_WAIT if 0 < seconds <= 30 else value


def test_the_snapshot_sees_every_kind_of_write(tmp_path):
    """The "nothing written" check can fail: a new row, a changed row and an event each
    change the snapshot."""
    application = create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/w.db"})
    try:
        client = application.test_client()
        empty = snapshot(application)
        session = client.post("/api/sessions", json={"name": "s", "import_folder": "/in"})
        created = snapshot(application)
        assert created[0] != empty[0] and created[1:] != empty[1:]
        state_of(application).bus.publish("custom.ping", {})
        published = snapshot(application)
        assert published[0] == created[0] and published[1:] != created[1:]
        with state_of(application).database.engine.begin() as connection:
            connection.execute(
                text("UPDATE sessions SET name = 'x' WHERE id = :id"),
                {"id": int(session.get_json()["id"])},
            )
        assert snapshot(application)[0] != published[0]
    finally:
        state_of(application).close()
