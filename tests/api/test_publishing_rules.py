"""The publish path's quick check of a broadcast body agrees with BroadcastSchema: whatever it
accepts, the schema loads to the same value; whatever it refuses is left to the schema."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from local_bridge.api.publishing import BroadcastSchema, plainly_valid

SCHEMA = BroadcastSchema()
PLAIN = {"type": "bench.tick", "data": {"i": 1}}


def schema_load(body: Any) -> dict[str, Any] | None:
    try:
        return SCHEMA.load(body)
    except ValidationError:
        return None


@pytest.mark.parametrize(
    "body",
    [
        PLAIN,
        {**PLAIN, "channel": "system"},
        {**PLAIN, "channel": None, "client_types": None},
        {**PLAIN, "channel": "", "client_types": ["lightroom", "a-b_c"]},
        {**PLAIN, "type": "x" * 64, "data": {}},
        {**PLAIN, "type": "photo.imported", "data": {"nested": {"list": [1, 2.5, None]}}},
    ],
)
def test_valid_bodies_load_as_the_schema_loads_them(body: dict[str, Any]) -> None:
    assert plainly_valid(body) == schema_load(body) is not None


@pytest.mark.parametrize(
    "body",
    [
        [],
        "text",
        {},
        {"type": "bench.tick"},
        {"data": {}},
        {**PLAIN, "type": ""},
        {**PLAIN, "type": "x" * 65},
        {**PLAIN, "type": 5},
        {**PLAIN, "type": None},
        {**PLAIN, "data": None},
        {**PLAIN, "data": []},
        {**PLAIN, "channel": 3},
        {**PLAIN, "client_types": []},
        {**PLAIN, "client_types": "lightroom"},
        {**PLAIN, "client_types": ["Lightroom"]},
        {**PLAIN, "client_types": [None]},
        {**PLAIN, "client_types": ["x" * 33]},
        {**PLAIN, "extra": 1},
    ],
)
def test_wrong_bodies_are_left_to_the_schema(body: Any) -> None:
    assert schema_load(body) is None
    assert plainly_valid(body) is None


JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.text(max_size=70)
JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)
FIELD = st.sampled_from(["type", "channel", "client_types", "data", "other"])
CLIENT_TYPE = st.sampled_from(["lightroom", "web-ui", "a_1", "", "A", "x" * 33, None, 1])


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        FIELD,
        JSON | st.lists(CLIENT_TYPE, max_size=3) | st.dictionaries(st.text(max_size=3), JSON),
    )
)
def test_any_body_agrees_with_the_schema(body: dict[str, Any]) -> None:
    quick = plainly_valid(body)
    if quick is not None:
        assert quick == schema_load(body)
