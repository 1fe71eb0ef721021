"""The one reading of `Authorization: Bearer <token>`, shared by both services."""

from __future__ import annotations

import pytest

from stubichat_common.auth import bearer_matches, bearer_token


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),
        ("BEARER  abc ", "abc"),
        ("Bearer", None),
        ("Bearer   ", None),
        ("Basic abc", None),
        ("abc", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        ("Bearer s3cret", True),
        ("bearer s3cret ", True),
        ("Bearer s3cre", False),
        ("Bearer s3cret2", False),
        ("Basic s3cret", False),
        ("Bearer ", False),
        (None, False),
    ],
)
def test_bearer_matches(header: str | None, matches: bool) -> None:
    assert bearer_matches(header, "s3cret") is matches
