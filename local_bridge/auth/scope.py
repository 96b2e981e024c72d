"""A token's reach over the HTTP event feeds (polling and SSE): which channels, which
client type."""

from __future__ import annotations

from ..api.envelope import ApiError
from ..protocol import CHANNELS, is_valid_channel
from .tokens import Claims


def channels_for(claims: Claims, requested: list[str] | None) -> list[str] | None:
    """The channels a feed follows for ``claims``: those ``requested`` when the token allows
    every one (403 otherwise); with none requested, every channel the token names: the main
    channels its patterns match and its patterns that are themselves channel names (a pattern
    such as ``jobs:*`` names no channel to follow: such a token must request its channels).
    None: every main channel (a token without patterns, nothing requested)."""
    if requested is not None:
        refused = [channel for channel in requested if not claims.allows(channel)]
        if refused:
            raise ApiError(403, "forbidden", f"channel(s) not allowed: {', '.join(refused)}")
        return requested
    if claims.channels is None:
        return None
    named = [channel for channel in sorted(CHANNELS) if claims.allows(channel)]
    named += [
        pattern
        for pattern in claims.channels
        if pattern not in CHANNELS and is_valid_channel(pattern)
    ]
    if not named:
        raise ApiError(
            403, "forbidden", "this token's channel patterns name no channel: request channels="
        )
    return named


def client_type_for(claims: Claims, requested: str | None) -> str | None:
    """The client type a feed acts as: the token's, when it names one (another: 403)."""
    if claims.client_type is None:
        return requested
    if requested is not None and requested != claims.client_type:
        raise ApiError(403, "forbidden", f"this token is for client_type {claims.client_type}")
    return claims.client_type
