"""Postgres connections that never wait forever for the server.

A server that accepts connections but stops answering (a hung process, a
stalled proxy or load balancer) is not caught at the TCP level: whatever
holds the socket still acknowledges what we send, so TCP keepalives and
`tcp_user_timeout` never fire. Every connection of the app (both SQLAlchemy
engines and the checkpointer's pool) is therefore bounded three ways:

- `connect_timeout`: psycopg gives up establishing a connection;
- `statement_timeout`, on the server: a slow statement on a live server is
  cancelled there, and the connection stays usable;
- the same bound plus a margin on the client: any wait for the server (a
  statement, a commit, a pool's ping) gives up, closes the connection and
  raises `DatabaseUnresponsive`. This is what bounds a silent server. The
  connection is closed rather than cancelled: psycopg's cancel path sends a
  cancel request and waits again, up to 10 s more on a silent server.
"""

from __future__ import annotations

import select
from dataclasses import dataclass
from typing import Any, ClassVar, Self, TypeVar

import psycopg
from psycopg import AsyncConnection
from psycopg.abc import PQGen
from psycopg.connection_async import _WAIT_INTERVAL  # the default of `wait(interval=…)`
from psycopg.conninfo import conninfo_to_dict
from psycopg.errors import _WaitTimeout  # what `wait(…, timeout=…)` raises on expiry
from psycopg.rows import Row

__all__ = [
    "DatabaseTimeouts",
    "DatabaseUnresponsive",
    "bounded_connection_class",
    "check_idle_connection",
    "server_closed",
]

# A live server answers a statement it has to cancel (statement_timeout) with an
# error; the client waits this much longer before it decides the server is silent.
CLIENT_MARGIN_SECONDS = 1.0

RV = TypeVar("RV")


@dataclass(frozen=True, slots=True)
class DatabaseTimeouts:
    # Whole seconds, at least 2 (libpq's rule for connect_timeout).
    connect_seconds: int
    statement_seconds: float

    @property
    def answer_seconds(self) -> float:
        """The longest wait for any answer from the server."""
        return self.statement_seconds + CLIENT_MARGIN_SECONDS


class DatabaseUnresponsive(psycopg.OperationalError):
    """The server did not answer in time; the connection was closed."""


class BoundedConnection(AsyncConnection[Row]):
    """An `AsyncConnection` under `timeouts` (subclassed by `bounded_connection_class`)."""

    timeouts: ClassVar[DatabaseTimeouts]

    @classmethod
    async def connect(cls, conninfo: str = "", **kwargs: Any) -> Self:
        options = conninfo_to_dict(conninfo, **kwargs).get("options")
        # Ours first: an explicit `-c statement_timeout` in DATABASE_URL still wins.
        ours = f"-c statement_timeout={round(cls.timeouts.statement_seconds * 1000)}"
        kwargs["options"] = f"{ours} {options}" if options else ours
        kwargs["connect_timeout"] = cls.timeouts.connect_seconds
        return await super().connect(conninfo, **kwargs)

    # psycopg's own signature and defaults, so its callers' arguments keep their meaning.
    async def wait(
        self,
        gen: PQGen[RV],
        interval: float = _WAIT_INTERVAL,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> RV:
        if timeout is not None:  # a caller with its own bound (notifies, cancel)
            return await super().wait(gen, interval, timeout)
        seconds = self.timeouts.answer_seconds
        try:
            return await super().wait(gen, interval, seconds)
        except _WaitTimeout:
            # The connection is mid-protocol and in an unknown state: never reuse it.
            self.pgconn.finish()
            raise DatabaseUnresponsive(
                f"the database did not answer within {seconds:g} s; connection closed"
            ) from None


def bounded_connection_class(timeouts: DatabaseTimeouts) -> type[BoundedConnection[Any]]:
    """A connection class for psycopg pools and SQLAlchemy's `async_creator_fn`."""
    return type("BoundedConnection", (BoundedConnection,), {"timeouts": timeouts})


def server_closed(connection: AsyncConnection[Any]) -> bool:
    """Whether the server has closed this idle connection, seen without a round trip.

    An idle connection has nothing to read: the server sends nothing unasked. A socket
    that is readable (or a connection psycopg knows to be broken) means the server
    closed it (a restart, `pg_terminate_backend`, an idle timeout), having said so with
    a FATAL message (the app never LISTENs; anything else unasked, a rare notice, costs
    only a new connection). Looking costs a `select` with no wait, where a ping costs
    a round trip. A server that vanished without closing the socket is not seen here.
    """
    if connection.closed or connection.broken:
        return True
    try:
        readable, _, _ = select.select([connection.fileno()], [], [], 0)
    except (OSError, ValueError):  # a socket closed under us
        return True
    return bool(readable)


async def check_idle_connection(connection: AsyncConnection[Any]) -> None:
    """A psycopg pool's `check`: refuse a connection the server closed (no round trip)."""
    if server_closed(connection):
        # Closed, so that the pool discards it rather than hand it out again.
        await connection.close()
        raise psycopg.OperationalError("the server closed the connection")
