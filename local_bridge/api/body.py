"""Reading JSON request bodies: content type, syntax, schema validation, and the flat
``fields`` of a 422 answer."""

from __future__ import annotations

from typing import Any

from flask import Flask, g, request
from marshmallow import Schema, ValidationError

from ..protocol import JsonSyntaxError, parse_json
from .envelope import ApiError, validation_error

#: Methods that change state: each needs an ``application/json`` body (``{}`` without fields).
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_UNREAD = object()
_SCHEMAS: dict[type[Schema], Schema] = {}


def init_app(app: Flask) -> None:
    """Refuse, before any view runs, a state-changing request without a JSON body.

    An HTML form or a "simple" cross-site request cannot send ``application/json``, so it can
    never change anything. Requests that match no route keep their 404 or 405.
    """

    @app.before_request
    def require_json_body():
        if request.method in BODY_METHODS and request.routing_exception is None:
            json_body()


def json_body() -> Any:
    """The request's JSON body: 415 when it is empty or not ``application/json``, 400
    ``invalid_json`` when it does not parse. Parsed once per request."""
    parsed = getattr(g, "json_body", _UNREAD)
    if parsed is not _UNREAD:
        return parsed
    if request.mimetype != "application/json":
        raise ApiError(
            415,
            "unsupported_media_type",
            "the body must be application/json ({} when the request has no fields)",
        )
    raw = request.get_data(cache=True)
    if not raw:
        raise ApiError(
            415,
            "unsupported_media_type",
            "a JSON body is required ({} when the request has no fields)",
        )
    try:
        g.json_body = parse_json(raw)
    except JsonSyntaxError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    return g.json_body


def load_object() -> dict[str, Any]:
    """The request body, which must be a JSON object (422 otherwise)."""
    body = json_body()
    if not isinstance(body, dict):
        raise validation_error({"_schema": ["the body must be a JSON object"]})
    return body


def load(schema: type[Schema]) -> dict[str, Any]:
    """The request body validated by an instance of ``schema`` (422 with flat ``fields`` when
    invalid)."""
    body = load_object()
    try:
        return schema_of(schema).load(body)
    except ValidationError as exc:
        raise validation_error(flat_fields(exc.normalized_messages())) from None


def schema_of(schema: type[Schema]) -> Schema:
    """The one instance of ``schema`` every request shares: building one copies each declared
    field (a tenth of a small request's time), and loading keeps no state on the instance."""
    instance = _SCHEMAS.get(schema)
    if instance is None:
        instance = _SCHEMAS[schema] = schema()
    return instance


def flat_fields(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """Validation messages, nested as marshmallow builds them, as flat dotted keys.

    Each key is the path of the offending value, each value a list of messages:

    - a nested field: ``counters.files_scanned``; a list item: ``kinds.0``;
    - a map entry: the ``{"key": [...]}`` / ``{"value": [...]}`` level marshmallow adds under
      the entry is dropped, so errors about an entry's key and about its value both read as
      ``<field>.<entry key>``;
    - ``_schema`` (about an object as a whole) reads as that object's own path, and stays
      ``_schema`` for the body itself.

    ``prefix`` is put before every key (``data`` gives ``data.job_id``, ``data`` itself for the
    object as a whole).
    """
    flat: dict[str, list[str]] = {}
    _flatten(messages, prefix, flat)
    return flat


def _flatten(node: Any, path: str, flat: dict[str, list[str]]) -> None:
    if isinstance(node, dict):
        entries = path and _is_map_entries(node)
        for key, child in node.items():
            if entries:
                for part in child.values():  # the entry's "key" and "value" errors
                    _flatten(part, _join(path, key), flat)
            elif key == "_schema":
                _flatten(child, path or "_schema", flat)
            else:
                _flatten(child, _join(path, key), flat)
    elif isinstance(node, (list, tuple)) and all(isinstance(item, str) for item in node):
        flat.setdefault(path or "_schema", []).extend(node)
    elif isinstance(node, (list, tuple)):
        for item in node:
            _flatten(item, path, flat)
    else:
        flat.setdefault(path or "_schema", []).append(str(node))


def _is_map_entries(node: dict[Any, Any]) -> bool:
    """Whether ``node`` holds a map field's entry errors: every value is marshmallow's
    ``{"key": ..., "value": ...}`` wrapper (a field's own errors would be a list)."""
    return bool(node) and all(
        isinstance(child, dict) and child and set(child) <= {"key", "value"}
        for child in node.values()
    )


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)
