"""Keyset pages, newest first: an opaque cursor names the last row a page gave out."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from main_backend.errors import InvalidRequest


def encode_cursor(at: datetime, key: str) -> str:
    raw = json.dumps([at.isoformat(), key]).encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        at, key = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return datetime.fromisoformat(at), str(key)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise InvalidRequest("cursor is not one this API gave out", "cursor") from exc


def newest_first(
    query: sa.Select[Any], at: sa.ColumnElement[Any], key: sa.ColumnElement[Any], cursor: str | None
) -> sa.Select[Any]:
    """`query` ordered by (`at`, `key`) descending, after the row `cursor` names."""
    query = query.order_by(at.desc(), key.desc())
    if not cursor:
        return query
    cursor_at, cursor_key = decode_cursor(cursor)
    return query.where(sa.or_(at < cursor_at, sa.and_(at == cursor_at, key < cursor_key)))
