"""The bearer token: ``Authorization: Bearer <token>`` on every request but ``/health``."""
from __future__ import annotations

import hmac

__all__ = ["token_matches"]


def token_matches(authorization: str | None, token: str | None) -> bool:
    """Whether an ``Authorization`` header carries ``token``; always True when the server has no token.

    Compared with ``hmac.compare_digest``, whose time does not depend on where the strings differ, so the
    token cannot be guessed one character at a time.
    """
    if token is None:
        return True
    scheme, _, given = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode("utf-8"), token.encode("utf-8"))
