"""What a value stored in the log may be: the one table of limits, and the checks and the
read-side repair every path shares.

The log is append-only forever, so whatever could not be read back, serialised or folded
must be refused before it is appended (`check_text`, `check_json`). Rows stored before
these checks existed (or written by hand) are repaired as they are read (`sanitise`),
so one odd event never makes a listing or a feed page fail.
"""

from __future__ import annotations

import json
from typing import Any

from loguru import logger

from stubichat_common.text import LONE_SURROGATE, text_problem

# The limits table.
# The largest integer any request may carry (query parameter or body field): every JSON
# client reads it exactly, and a version or position one past it still fits a 64-bit
# column, so no bound check, `+ 1` or SQL bind can overflow.
MAX_INTEGER = 2**53 - 1
# The largest thread version a request may name: versions are 32-bit INTEGER columns
# (Postgres refuses a larger bind with "integer out of range"), and one past it still fits.
MAX_VERSION = 2**31 - 2
# A metadata object (thread or chat metadata): nesting depth and size serialised as JSON.
METADATA_MAX_DEPTH = 32
METADATA_MAX_BYTES = 16 * 1024
# A whole event's data or metadata: the metadata object sits a few levels down in it.
EVENT_MAX_DEPTH = METADATA_MAX_DEPTH + 4
# Reading: containers nested deeper than this are replaced by `TOO_DEEP` (stored rows only
# get there if written around the checks above); well under the serialisers' own limits.
READ_MAX_DEPTH = 64
TOO_DEEP = "[nested too deep]"
# Runs waiting in one thread's queue (`if_busy` enqueue, interrupt, rollback): a thread's
# state carries their ids, and a client that queues more is told to wait (429 queue_full).
MAX_QUEUED_RUNS = 16


class ValueProblem(ValueError):
    """A value that must not be stored; `path` locates it (["metadata", "k"])."""

    def __init__(self, message: str, path: list[str]) -> None:
        super().__init__(message)
        self.message = message
        self.path = path

    @property
    def field(self) -> str:
        return ".".join(self.path)


def check_text(value: str, path: list[str]) -> str:
    problem = text_problem(value)
    if problem is not None:
        raise ValueProblem(problem, path)
    return value


def check_json(value: Any, path: list[str], *, max_depth: int, max_bytes: int | None = None) -> Any:
    """Refuse a JSON value nested deeper than `max_depth`, larger than `max_bytes`
    serialised, or holding a string (or key) `check_text` refuses."""
    _walk(value, path, path, 1, max_depth)
    if max_bytes is not None:
        try:
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueProblem(f"is not storable as JSON: {exc}", path) from exc
        size = len(text.encode())
        if size > max_bytes:
            raise ValueProblem(f"must be at most {max_bytes} bytes as JSON, not {size}", path)
    return value


def _walk(value: Any, root: list[str], path: list[str], depth: int, max_depth: int) -> None:
    if isinstance(value, str):
        check_text(value, path)
        return
    if not isinstance(value, dict | list):
        return
    if depth > max_depth:
        # Named at its top: the path down to the excess would be as long as the nesting.
        raise ValueProblem(f"must not be nested more than {max_depth} levels deep", root)
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueProblem("keys must be strings", path)
            if text_problem(key) is not None:
                # The key cannot name the field: the error would carry the bad string too.
                raise ValueProblem(f"a key {text_problem(key)}", path)
            _walk(item, root, [*path, key], depth + 1, max_depth)
    else:
        for index, item in enumerate(value):
            _walk(item, root, [*path, str(index)], depth + 1, max_depth)


def sanitise(value: Any, where: str = "a stored value") -> Any:
    """`value` as it can be served: lone surrogates become U+FFFD, containers deeper than
    `READ_MAX_DEPTH` become `TOO_DEEP`. The value itself when nothing needed repair, so
    a clean read costs one walk and no copy; a repair is logged (`where` says what)."""
    repaired = _sanitised(value, 1)
    if repaired is not value:
        logger.warning("repaired {} that cannot be served as stored", where)
    return repaired


def _sanitised(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return _clean_text(value)
    if not isinstance(value, dict | list):
        return value
    if depth > READ_MAX_DEPTH:
        return TOO_DEEP
    if isinstance(value, dict):
        items = [(_sanitised(k, depth), _sanitised(v, depth + 1)) for k, v in value.items()]
        if all(k is k0 and v is v0 for (k, v), (k0, v0) in zip(items, value.items(), strict=True)):
            return value
        return dict(items)
    elements = [_sanitised(v, depth + 1) for v in value]
    if all(v is v0 for v, v0 in zip(elements, value, strict=True)):
        return value
    return elements


def _clean_text(value: str) -> str:
    return LONE_SURROGATE.sub("\ufffd", value) if LONE_SURROGATE.search(value) else value
