"""Token authentication (PROTOCOL.md section 6): tokens, the endpoint policy, revocation."""

from .revocation import RevocationUnavailable
from .service import Authenticator, ConnectionAuth
from .tokens import ROLES, Claims, TokenError, mint, parse_ttl, verify

__all__ = [
    "ROLES",
    "Authenticator",
    "Claims",
    "ConnectionAuth",
    "RevocationUnavailable",
    "TokenError",
    "mint",
    "parse_ttl",
    "verify",
]
