"""Cancelling a run, in the conversation layer: no HTTP, the real database."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from main_backend.conversation.chat import ChatService
from main_backend.conversation.checkpoints import open_checkpointer
from main_backend.conversation.graph import TurnContext, TurnDeps, build_turn_graph
from main_backend.conversation.idempotency import IdempotencyKeys
from main_backend.conversation.leases import RunLeases
from main_backend.conversation.progress import RunProgress
from main_backend.conversation.runner import RunHandle, TurnRunner
from main_backend.db import Database
from main_backend.errors import NoActiveRun, ThreadNotFound
from main_backend.events.store import EventStore
from main_backend.llm_client import LLMAgentClient
from tests.support.events import message_added, run_started, thread_created
from tests.support.servers import free_port


@pytest.fixture
async def chat(db: Database, store: EventStore, database_url: str) -> AsyncIterator[ChatService]:
    leases = RunLeases(db, "here", lease_seconds=30, max_active_per_owner=10)
    # Cancelling never calls the LLM agent: nothing listens there.
    llm = LLMAgentClient(f"http://127.0.0.1:{free_port()}", timeout=1)
    try:
        async with open_checkpointer(database_url) as checkpointer:
            progress = RunProgress(db)
            graph = build_turn_graph(TurnDeps(store, llm, None, 1000, progress), checkpointer)
            runner = TurnRunner(
                graph, checkpointer, store, leases, poll_seconds=1, sweep_seconds=1, max_resumes=1
            )
            yield ChatService(store, runner, IdempotencyKeys(db, 24), progress)
    finally:
        await llm.aclose()


async def thread(store: EventStore, owner: str, *, running: bool) -> tuple[str, str]:
    thread_id, run_id = str(uuid.uuid4()), str(uuid.uuid4())
    events = [thread_created(owner=owner), message_added("hi")]
    await store.append(thread_id, [*events, run_started(run_id, 2)] if running else events, 0)
    return thread_id, run_id


async def test_cancel_reaches_a_run_driven_elsewhere_through_its_lease(
    chat: ChatService, store: EventStore
) -> None:
    thread_id, run_id = await thread(store, "alice", running=True)
    assert not await chat.runner.leases.cancel_requested(run_id)
    assert await chat.cancel("alice", thread_id) == run_id
    assert await chat.runner.leases.cancel_requested(run_id)


async def test_cancel_stops_a_run_driven_here_at_once(chat: ChatService, store: EventStore) -> None:
    thread_id, run_id = await thread(store, "alice", running=True)
    handle = chat.runner.local[run_id] = RunHandle(thread_id, run_id, TurnContext())
    assert await chat.cancel("alice", thread_id) == run_id
    assert handle.cancel.is_set() and handle.context.cancel_reason == "user"
    assert await chat.runner.leases.cancel_requested(run_id) == "user"


async def test_a_rollback_request_is_not_downgraded_by_a_later_cancel(
    chat: ChatService, store: EventStore
) -> None:
    thread_id, run_id = await thread(store, "alice", running=True)
    handle = chat.runner.local[run_id] = RunHandle(thread_id, run_id, TurnContext())
    await chat.runner.leases.request_cancel(run_id, thread_id, "rollback")
    chat.runner.request_local_cancel(run_id, "rollback")
    assert await chat.cancel("alice", thread_id) == run_id
    assert handle.context.cancel_reason == "rollback"
    assert await chat.runner.leases.cancel_requested(run_id) == "rollback"


async def test_a_thread_without_an_active_run_has_nothing_to_cancel(
    chat: ChatService, store: EventStore
) -> None:
    thread_id, _ = await thread(store, "alice", running=False)
    with pytest.raises(NoActiveRun):
        await chat.cancel("alice", thread_id)


async def test_another_users_run_is_not_found(chat: ChatService, store: EventStore) -> None:
    thread_id, run_id = await thread(store, "alice", running=True)
    with pytest.raises(ThreadNotFound):
        await chat.cancel("bob", thread_id)
    assert not await chat.runner.leases.cancel_requested(run_id)
