"""Reading JSON request bodies: content type, syntax, and schema validation."""
from __future__ import annotations

import json
from typing import Any

from flask import request
from marshmallow import Schema, ValidationError

from .errors import ApiError, validation_error


def json_body(required: bool = True) -> Any:
    """The request's JSON body (415 when it is not JSON, 400 when it does not parse).

    With ``required`` False an empty body reads as ``{}``.
    """
    raw = request.get_data(cache=True)
    if not raw:
        if required:
            raise ApiError(415, "unsupported_media_type", "a JSON body is required")
        return {}
    if request.mimetype != "application/json":
        raise ApiError(415, "unsupported_media_type", "the body must be application/json")
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except ValueError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "invalid_json", "the body is not valid JSON: nested too deeply") from None


def _refuse_constant(name: str) -> Any:
    # Python's parser accepts NaN and Infinity, which are not JSON and which no client can read.
    raise ValueError(f"{name} is not a JSON value")


def load_object(required: bool = True) -> dict[str, Any]:
    """The request body, which must be a JSON object (422 otherwise)."""
    body = json_body(required)
    if not isinstance(body, dict):
        raise validation_error({"_schema": ["the body must be a JSON object"]})
    return body


def load(schema: Schema, required: bool = True) -> dict[str, Any]:
    """The request body validated by ``schema`` (422 with ``fields`` when invalid)."""
    body = load_object(required)
    try:
        return schema.load(body)
    except ValidationError as exc:
        raise validation_error(exc.normalized_messages()) from None
