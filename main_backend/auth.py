"""Who is asking: `local` without auth, the `sub` of an HS256 JWT, or the admin."""

from __future__ import annotations

import jwt

from main_backend.errors import DomainError
from stubichat_common.auth import bearer_matches, bearer_token
from stubichat_common.text import text_problem

LOCAL_USER = "local"
CLOCK_LEEWAY_SECONDS = 30
# NumericDate claims: PyJWT turns "1700000000" into a number, RFC 7519 does not.
_TIME_CLAIMS = ("exp", "nbf", "iat")


class Unauthorized(DomainError):
    pass


class AdminDisabled(DomainError):
    def __init__(self) -> None:
        super().__init__("the admin API is disabled: set ADMIN_TOKEN to enable it")


def user_from_authorization(
    header: str | None,
    secret_key: str,
    audience: str | None = None,
    issuer: str | None = None,
) -> str:
    token = bearer_token(header)
    if token is None:
        raise Unauthorized("an 'Authorization: Bearer <token>' header is required")
    try:
        claims = jwt.decode(
            token,
            secret_key,
            algorithms=["HS256"],
            audience=audience,
            issuer=issuer,
            leeway=CLOCK_LEEWAY_SECONDS,
            options={"require": ["exp", "sub"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("the token has expired") from exc
    except jwt.PyJWTError as exc:
        raise Unauthorized("the token is not valid") from exc
    for name in _TIME_CLAIMS:
        value = claims.get(name)
        if name in claims and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise Unauthorized(f"the token's '{name}' claim must be a number of seconds")
    subject = claims["sub"]
    if (
        not isinstance(subject, str)
        or not subject
        or len(subject) > 255
        or text_problem(subject) is not None
    ):
        raise Unauthorized("the token's subject is not a usable user id")
    return subject


def check_admin(header: str | None, admin_token: str | None) -> None:
    """The admin API opens to `Authorization: Bearer <ADMIN_TOKEN>` only."""
    if not admin_token:
        raise AdminDisabled()
    if not bearer_matches(header, admin_token):
        raise Unauthorized("the admin API needs 'Authorization: Bearer <ADMIN_TOKEN>'")
