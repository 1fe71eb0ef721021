"""Domain errors of the main backend. The API layer maps them to HTTP in one place."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error the domain raises on purpose."""

    # Seconds after which trying again may succeed (sent as Retry-After), if known.
    retry_after: float | None = None


class InvalidEvent(DomainError):
    """An event that must not be stored: unknown type, missing field, NUL byte…"""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class VersionConflict(DomainError):
    """The thread is not at the version the writer expected; nothing was written."""

    def __init__(self, thread_id: str, expected: int, actual: int) -> None:
        super().__init__(f"thread {thread_id} is at version {actual}, not the expected {expected}")
        self.thread_id = thread_id
        self.expected = expected
        self.actual = actual


class EventIdConflict(DomainError):
    """Some of the events' ids are stored already, but not as exactly this append."""


class InvalidRequest(DomainError):
    """A request the domain refuses as it stands (422), naming the field."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ThreadNotFound(DomainError):
    """No such thread for this user: missing, another user's, or deleted alike."""

    def __init__(self, thread_id: str) -> None:
        super().__init__(f"thread {thread_id} was not found")
        self.thread_id = thread_id


class AssistantNotFound(DomainError):
    """The LangGraph API's one assistant is `chat`: any other is not found."""

    def __init__(self, assistant_id: str) -> None:
        super().__init__(f"assistant {assistant_id} not found: the one assistant is 'chat'")
        self.assistant_id = assistant_id


class ThreadExists(DomainError):
    """A thread with the id asked for exists already (or did: ids are never reused)."""

    def __init__(self, thread_id: str) -> None:
        super().__init__(f"thread {thread_id} exists already")
        self.thread_id = thread_id


class ThreadBusy(DomainError):
    """A run is active on the thread; nothing was appended."""

    def __init__(self, thread_id: str, run_id: str | None) -> None:
        super().__init__(f"thread {thread_id} is answering another message (run {run_id})")
        self.thread_id = thread_id
        self.run_id = run_id


class RunNotFound(DomainError):
    """No such run in this user's thread: missing, another thread's or user's alike."""

    def __init__(self, thread_id: str, run_id: str) -> None:
        super().__init__(f"run {run_id} of thread {thread_id} was not found")
        self.thread_id = thread_id
        self.run_id = run_id


class MessageNotFound(DomainError):
    """No such message in this user's thread (or one a rollback took out of the tree)."""

    def __init__(self, thread_id: str, message_id: str) -> None:
        super().__init__(f"message {message_id} of thread {thread_id} was not found")
        self.thread_id = thread_id
        self.message_id = message_id


class NoActiveRun(DomainError):
    """Nothing to cancel: the thread has no active run, or the run named has ended."""

    def __init__(
        self, thread_id: str, run_id: str | None = None, status: str | None = None
    ) -> None:
        if run_id is None:
            super().__init__(f"thread {thread_id} has no active run")
        else:
            ended = f" (status {status})" if status else ""
            super().__init__(f"run {run_id} of thread {thread_id} is not active{ended}")


class IdempotencyKeyReused(DomainError):
    def __init__(self) -> None:
        super().__init__("this Idempotency-Key was used with a different request body")


class RequestInProgress(DomainError):
    def __init__(self) -> None:
        super().__init__("a request with this Idempotency-Key is still running")


class TooManyActiveRuns(DomainError):
    """The user has as many runs in flight as allowed; nothing was appended."""

    def __init__(self, limit: int, retry_after: float) -> None:
        answers = "answer" if limit == 1 else "answers"
        super().__init__(
            f"you already have {limit} {answers} in progress, the most allowed "
            "at once; send this message again when one of them has finished"
        )
        self.limit = limit
        self.retry_after = retry_after


class QueueFull(DomainError):
    """The thread has as many queued runs as allowed; nothing was appended."""

    # About one answer's time: the queue moves when the active run ends.
    retry_after = 5.0

    def __init__(self, thread_id: str, limit: int) -> None:
        super().__init__(
            f"thread {thread_id} already has {limit} messages waiting for an answer, the "
            "most allowed; send this one when the thread has caught up"
        )
        self.thread_id = thread_id


class RunCancelledBeforeStart(DomainError):
    """The run waited in its thread's queue and was cancelled before it started: there
    is no answer, not even a partial one."""

    def __init__(self, thread_id: str, run_id: str) -> None:
        super().__init__(f"run {run_id} of thread {thread_id} was cancelled before it started")
        self.thread_id = thread_id
        self.run_id = run_id


class ShuttingDown(DomainError):
    """This replica is shutting down: it takes no new run, or hands over the one asked
    about (`thread_id`, `run_id`: where its answer can be read later)."""

    def __init__(
        self, retry_after: float, thread_id: str | None = None, run_id: str | None = None
    ) -> None:
        if run_id is None:
            message = "this server is shutting down; send the request again"
        else:
            message = (
                "this server is shutting down; another one completes this answer: read it "
                "later from the thread, or join the run's stream"
            )
        super().__init__(message)
        self.retry_after = retry_after
        self.thread_id = thread_id
        self.run_id = run_id
