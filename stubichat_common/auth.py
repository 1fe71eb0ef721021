"""`Authorization: Bearer <token>` as both services read it."""

from __future__ import annotations

import hmac


def bearer_token(header: str | None) -> str | None:
    """The token of a Bearer `Authorization` header (scheme in any case), or None."""
    scheme, _, token = (header or "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def bearer_matches(header: str | None, expected: str) -> bool:
    """Whether the header carries the `expected` token; constant time, so the token
    cannot be guessed from how long a refusal takes."""
    token = bearer_token(header)
    return token is not None and hmac.compare_digest(token.encode(), expected.encode())
