"""What a string must be before it is stored or sent on: Unicode text without NUL.

A NUL is refused by Postgres text columns and by many upstreams; a lone surrogate
(an escape like `\\ud800` that JSON allows) is not a character at all and cannot be
encoded as UTF-8, so it breaks whoever serialises the string next.
"""

from __future__ import annotations

import re

LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def text_problem(value: str) -> str | None:
    """Why `value` cannot be forwarded or stored, or None."""
    if "\x00" in value:
        return "must not contain NUL characters (\\u0000)"
    if LONE_SURROGATE.search(value):
        return "must be valid Unicode: a lone surrogate (\\ud800-\\udfff) is not a character"
    return None


def checked_text(value: str) -> str:
    """`value` unchanged, or ValueError naming its problem (a pydantic AfterValidator)."""
    problem = text_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value
