"""Domain errors of the main backend. The API layer maps them to HTTP in one place."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error the domain raises on purpose."""


class InvalidEvent(DomainError):
    """An event that must not be stored: unknown type, missing field, NUL byte…"""


class VersionConflict(DomainError):
    """The thread is not at the version the writer expected; nothing was written."""

    def __init__(self, thread_id: str, expected: int, actual: int) -> None:
        super().__init__(
            f"thread {thread_id} is at version {actual}, not the expected {expected}"
        )
        self.thread_id = thread_id
        self.expected = expected
        self.actual = actual


class EventIdConflict(DomainError):
    """Some of the events' ids are stored already, but not as exactly this append."""
