"""Who is asking: `local` without auth, or the `sub` of an HS256 JWT."""

from __future__ import annotations

import jwt

from main_backend.errors import DomainError

LOCAL_USER = "local"
CLOCK_LEEWAY_SECONDS = 30


class Unauthorized(DomainError):
    pass


def user_from_authorization(header: str | None, secret_key: str) -> str:
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("an 'Authorization: Bearer <token>' header is required")
    try:
        claims = jwt.decode(token.strip(), secret_key, algorithms=["HS256"],
                            leeway=CLOCK_LEEWAY_SECONDS, options={"require": ["exp", "sub"]})
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("the token has expired") from exc
    except jwt.PyJWTError as exc:
        raise Unauthorized("the token is not valid") from exc
    subject = claims["sub"]
    if not isinstance(subject, str) or not subject or len(subject) > 255 or "\x00" in subject:
        raise Unauthorized("the token's subject is not a usable user id")
    return subject
