"""Server-sent events framing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, TypeVar

T = TypeVar("T")

SSE_HEADERS = {
    "Cache-Control": "no-cache",
    # Proxies such as nginx must pass each event on as it comes.
    "X-Accel-Buffering": "no",
}


def sse_event(event: str, data: Any, event_id: int | str | None = None) -> bytes:
    lines = [] if event_id is None else [f"id: {event_id}"]
    lines.append(f"event: {event}")
    lines.append("data: " + json.dumps(data, ensure_ascii=False, separators=(",", ":")))
    return ("\n".join(lines) + "\n\n").encode()


async def with_keepalive(
    source: AsyncIterator[T], interval: float, until: asyncio.Event | None = None
) -> AsyncIterator[T | None]:
    """`source`'s items, and None after every `interval` seconds without one; it ends,
    as if `source` had, as soon as `until` (if given) is set.

    The caller turns None into a `: ping` comment so proxies keep idle streams open.
    """
    iterator = aiter(source)
    pending: asyncio.Future[T] | None = None
    stop = None if until is None else asyncio.ensure_future(until.wait())
    try:
        while until is None or not until.is_set():
            if pending is None:
                pending = asyncio.ensure_future(anext(iterator))
            waiting: set[asyncio.Future[Any]] = {pending} if stop is None else {pending, stop}
            done, _ = await asyncio.wait(
                waiting, timeout=interval, return_when=asyncio.FIRST_COMPLETED
            )
            if pending not in done:
                if not done:
                    yield None
                continue
            try:
                item = pending.result()
            except StopAsyncIteration:
                return
            pending = None
            yield item
    finally:
        for future in (pending, stop):
            if future is not None:
                future.cancel()


PING = b": ping\n\n"
