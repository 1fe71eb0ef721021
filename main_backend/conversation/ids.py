"""Ids derived from a run id, so whatever writes a run's events twice (a retry, a
resumed run on another replica) writes the same ids and the store keeps one copy."""

from __future__ import annotations

import uuid


def run_scoped_id(run_id: str, name: str) -> str:
    return str(uuid.uuid5(_namespace(run_id), name))


def _namespace(run_id: str) -> uuid.UUID:
    # Run ids are UUIDs; one that is not (a stored event written around the checks)
    # still gets ids of its own, so it can be ended like any run.
    try:
        return uuid.UUID(run_id)
    except ValueError:
        return uuid.uuid5(uuid.NAMESPACE_OID, run_id)


def input_event_id(run_id: str, index: int) -> str:
    return run_scoped_id(run_id, f"input-{index}")


def input_message_id(run_id: str, index: int) -> str:
    return run_scoped_id(run_id, f"input-message-{index}")


def run_queued_id(run_id: str) -> str:
    return run_scoped_id(run_id, "queued")


def rolled_back_event_id(run_id: str) -> str:
    return run_scoped_id(run_id, "rolled-back")


def rollback_head_event_id(run_id: str) -> str:
    return run_scoped_id(run_id, "rolled-back-head")


def run_started_id(run_id: str) -> str:
    return run_scoped_id(run_id, "started")


def answer_message_event_id(run_id: str) -> str:
    return run_scoped_id(run_id, "answer")


def answer_message_id(run_id: str) -> str:
    return run_scoped_id(run_id, "answer-message")


def terminal_event_id(run_id: str) -> str:
    """One id for completed, failed and cancelled alike: a run ends once."""
    return run_scoped_id(run_id, "terminal")
