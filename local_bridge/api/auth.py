"""``POST /api/auth/revoke``: refuse a token by its ``jti`` from now on (API.md)."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from marshmallow import Schema, fields, validate

from ..auth.revocation import RevocationUnavailable
from ..auth.tokens import JTI_PATTERN
from ..state import state_of
from .body import load
from .envelope import ApiError

bp = Blueprint("auth", __name__, url_prefix="/api/auth")


class RevokeSchema(Schema):
    jti = fields.String(required=True, validate=validate.Regexp(JTI_PATTERN))


@bp.post("/revoke")
def revoke():
    """Every process on the same Redis refuses the token from now on and closes its
    connections 4001; 409 while authentication is off (there are no tokens)."""
    body = load(RevokeSchema)
    authenticator = state_of(current_app).auth
    if authenticator is None:
        raise ApiError(409, "conflict", "authentication is off (LOCAL_BRIDGE_AUTH=none)")
    try:
        authenticator.revoke(body["jti"])
    except RevocationUnavailable as exc:
        raise ApiError(503, "unavailable", str(exc)) from None
    return jsonify({"jti": body["jti"], "revoked": True})
