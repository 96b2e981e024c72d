"""The application's authenticator: verifies tokens (signature, claims, revocation), revokes
them, and closes the connections of revoked tokens; plus each WebSocket's authentication state.
"""

from __future__ import annotations

import time
from typing import Any

from ..config import Settings
from ..protocol import CloseCode
from .revocation import Revocations, RevocationUnavailable, create_revocations
from .tokens import MAX_TOKEN_TTL, Claims, TokenError, verify


class Authenticator:
    """Token checks for one application (only built with ``LOCAL_BRIDGE_AUTH=token``)."""

    def __init__(self, settings: Settings, revocations: Revocations | None = None):
        assert settings.SECRET_KEY, "config refuses AUTH=token without SECRET_KEY"
        self.secret: str = settings.SECRET_KEY
        self.timeout = settings.AUTH_TIMEOUT
        self.revocations = revocations if revocations is not None else create_revocations(settings)
        self.revocations.on_revoked = self._close_revoked
        self.revocations.on_resync = self._close_all_revoked
        self._hub: Any = None

    def attach(self, hub: Any) -> None:
        """The hub whose clients a revocation closes (their ``auth`` holds their claims)."""
        self._hub = hub

    def verify(self, token: Any) -> Claims:
        """The claims of a valid, unrevoked token; :class:`TokenError` otherwise (and
        :class:`~.revocation.RevocationUnavailable` when revocation cannot be checked)."""
        claims = verify(token, self.secret)
        if claims.jti is not None and self.revocations.is_revoked(claims.jti):
            raise TokenError("token revoked")
        return claims

    def revoke(self, jti: str) -> None:
        """Refuse every token with ``jti`` from now on, in every process; close their
        connections 4001. Kept as long as any token can live."""
        self.revocations.revoke(jti, MAX_TOKEN_TTL + 60)

    def connection(self, token: str | None) -> ConnectionAuth:
        """The authentication state of a new WebSocket presenting ``token`` (None: it must
        send ``authenticate`` within the timeout)."""
        auth = ConnectionAuth(self)
        if token is None:
            return auth
        try:
            auth.accept(self.verify(token))
        except TokenError as exc:
            auth.refused = str(exc)
        except RevocationUnavailable as exc:  # not the token's fault: retry later (1011)
            auth.refused, auth.refused_code = str(exc), CloseCode.INTERNAL_ERROR
        return auth

    def _close_revoked(self, jti: str) -> None:
        hub = self._hub
        if hub is None:
            return
        for client in hub.clients():
            if client.auth is not None and client.auth.jti == jti:
                hub.remove(client)
                client.transport.close(CloseCode.UNAUTHORIZED, "token revoked")

    def _close_all_revoked(self) -> None:
        """After revocations may have been missed: check every connection's token again."""
        hub = self._hub
        if hub is None:
            return
        for client in hub.clients():
            jti = client.auth.jti if client.auth is not None else None
            if jti is not None and self.revocations.is_revoked(jti):
                hub.remove(client)
                client.transport.close(CloseCode.UNAUTHORIZED, "token revoked")

    def close(self) -> None:
        self.revocations.close()


class ConnectionAuth:
    """One WebSocket's authentication: pending (until ``authenticate`` or ``timeout``),
    refused (a bad token in the URL: closed 4001 right after the handshake), or accepted
    (``claims``, until ``deadline``, the token's expiry in monotonic time)."""

    def __init__(self, authenticator: Authenticator):
        self.authenticator = authenticator
        self.claims: Claims | None = None
        self.refused: str | None = None
        #: The close code of a refused connection: 4001, or 1011 when revocation could not be
        #: checked (the client should retry with backoff, not drop its token).
        self.refused_code: int = CloseCode.UNAUTHORIZED
        self.deadline = time.monotonic() + authenticator.timeout

    @property
    def pending(self) -> bool:
        return self.claims is None and self.refused is None

    def accept(self, claims: Claims) -> Claims:
        """Go on with ``claims`` until their expiry."""
        self.claims = claims
        self.deadline = time.monotonic() + (claims.exp - time.time())
        return claims

    def verify(self, token: Any) -> Claims:
        return self.authenticator.verify(token)

    def allows(self, channel: str) -> bool:
        return self.claims is not None and self.claims.allows(channel)

    def expiry_reason(self) -> str:
        return "authentication timed out" if self.claims is None else "token expired"
