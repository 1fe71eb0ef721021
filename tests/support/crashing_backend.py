"""The real main backend, killed with SIGKILL at one chosen point of a turn (fault injection).

`uvicorn tests.support.crashing_backend:app` serves `main_backend.main:app` unchanged,
except that this process kills itself (`kill -9`, no clean-up of any kind) when it
reaches the point named by `CRASH_AT="<point>:<n>"`, counted from the process start:

- `checkpoint-before`, `checkpoint-after`: around the n-th checkpoint LangGraph saves
  (the saver's `aput`);
- `writes-before`, `writes-after`: around the n-th save of a step's writes (`aput_writes`);
- `append-before`, `append-after`: around the n-th `EventStore.append` (after: committed);
- `delta`: on receiving the n-th answer delta from the LLM agent, before relaying it.

Only the moment of death is injected: every call runs the real code and returns its
real result. For tests only; nothing in the product imports this.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from functools import wraps
from typing import Any

from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from main_backend.events.store import EventStore
from main_backend.llm_client import LLMAgentClient, LLMDelta

_point, _, _nth = os.environ["CRASH_AT"].rpartition(":")
CRASH_AT = (_point, int(_nth))
_calls: Counter[str] = Counter()


def _count(name: str) -> int:
    _calls[name] += 1
    return _calls[name]


def _die_if_at(point: str, nth: int) -> None:
    if (point, nth) == CRASH_AT:
        os.kill(os.getpid(), signal.SIGKILL)


def _around(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    """`method`, dying before or after its n-th call when CRASH_AT names it."""

    @wraps(method)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        nth = _count(name)
        _die_if_at(f"{name}-before", nth)
        result = await method(*args, **kwargs)
        _die_if_at(f"{name}-after", nth)
        return result

    return wrapper


for _saver in (AsyncSqliteSaver, AsyncPostgresSaver):
    _saver.aput = _around("checkpoint", _saver.aput)  # type: ignore[method-assign]
    _saver.aput_writes = _around("writes", _saver.aput_writes)  # type: ignore[method-assign]
EventStore.append = _around("append", EventStore.append)  # type: ignore[method-assign]

_stream = LLMAgentClient.stream


@wraps(_stream)
async def _dying_stream(self: LLMAgentClient, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
    stream = _stream(self, *args, **kwargs)
    assert isinstance(stream, AsyncGenerator)  # typed as an iterator, written as a generator
    async with aclosing(stream) as items:
        async for item in items:
            if isinstance(item, LLMDelta):
                _die_if_at("delta", _count("delta"))
            yield item


LLMAgentClient.stream = _dying_stream  # type: ignore[method-assign]

from main_backend.main import app  # noqa: E402  (after the patches, so they hold from the start)

__all__ = ["app"]
