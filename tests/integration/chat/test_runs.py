"""Runs across replicas: resuming orphans, closing the unresumable, cancelling anywhere."""

from __future__ import annotations

import asyncio

import httpx
from loguru import logger

from main_backend.app import create_app as create_backend
from main_backend.conversation.ids import run_started_id
from main_backend.db import create_database
from main_backend.events.store import EventStore
from main_backend.events.types import RUN_STARTED, NewEvent
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.chat.conftest import StartBackend, ask, backend_settings, wait_idle
from tests.support.events import message_added, thread_created
from tests.support.servers import serve_in_thread
from tests.support.sse import parse_sse

RUN_ID = "6f1c1d52-6a34-4c5e-9b8e-3f0f4f1f2a10"


def orphan_run(database_url: str, params: dict[str, object] | None = None) -> str:
    """A thread whose run started on a replica that died before writing anything else."""

    async def write() -> None:
        db = create_database(database_url)
        try:
            await EventStore(db).append(
                "orphaned",
                [
                    thread_created(owner="local"),
                    message_added("Are you still there?"),
                    NewEvent(
                        RUN_STARTED,
                        {
                            "run_id": RUN_ID,
                            "model": "gpt-4o-mini",
                            "params": params or {"temperature": 0.5, "max_tokens": None},
                            "prompt_version": 2,
                        },
                        {"user": "local"},
                        run_started_id(RUN_ID),
                    ),
                ],
                0,
            )
        finally:
            await db.dispose()

    asyncio.run(write())
    return "orphaned"


def test_an_orphaned_run_is_resumed_from_its_started_event(
    start_backend: StartBackend, upstream: FakeOpenAI, database_url: str
) -> None:
    thread_id = orphan_run(database_url)
    upstream.script({"content": "Yes, still here."})
    backend = start_backend()
    wait_idle(backend, thread_id)
    messages = backend.get(f"/threads/{thread_id}/messages").json()["messages"]
    assert [(m["role"], m["content"], m["run_id"]) for m in messages] == [
        ("user", "Are you still there?", None),
        ("assistant", "Yes, still here.", RUN_ID),
    ]
    sent = upstream.chat_requests[0].body
    assert sent["messages"] == [{"role": "user", "content": "Are you still there?"}]
    assert sent["temperature"] == 0.5


def test_a_run_that_cannot_be_resumed_is_closed_as_interrupted(
    start_backend: StartBackend, upstream: FakeOpenAI, database_url: str
) -> None:
    thread_id = orphan_run(database_url)
    backend = start_backend(run_max_resumes=0)
    thread = wait_idle(backend, thread_id)
    assert thread["version"] == 4
    assert upstream.chat_requests == []
    # The question stays, unanswered: an empty retry answers it.
    retried = backend.post("/chat/", json={"thread_id": thread_id, "messages": []})
    assert retried.status_code == 200


def test_every_failure_of_a_resumed_run_is_logged(
    upstream: FakeOpenAI, database_url: str, agent_url: str
) -> None:
    # Parameters the graph cannot use: each take-over fails in call_llm, before any
    # outcome, and is retried until the run is closed as interrupted.
    thread_id = orphan_run(database_url, params={"max_tokens": None})
    settings = backend_settings(database_url, agent_url, run_lease_seconds=0.5, run_max_resumes=1)
    # Creating the app sets logging up (removing every sink); the sweeper may take the
    # orphan over as soon as the app serves, so listen in between.
    app = create_backend(settings)
    failures: list[str] = []
    sink = logger.add(lambda m: failures.append(m) if "failed before its outcome" in m else None)
    try:
        with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=30) as backend:
            thread = wait_idle(backend, thread_id)
    finally:
        logger.remove(sink)
    assert thread["version"] == 4  # closed as interrupted, after the failed take-over
    assert failures, "the resumed run's failure was not logged"
    assert RUN_ID in failures[0] and "KeyError: 'temperature'" in failures[0]


def test_a_run_handed_over_mid_answer_sends_the_prompt_it_first_sent(
    start_backend: StartBackend, upstream: FakeOpenAI, database_url: str, agent_url: str
) -> None:
    # A budget that keeps only the newest messages: the window is chosen, not the whole log.
    shared = {"max_context_tokens": 60, "system_prompt": "Be brief."}
    settings = backend_settings(database_url, agent_url, shutdown_grace_seconds=0, **shared)
    question = "last question " + "y" * 40
    with (
        serve_in_thread(create_backend(settings)) as url,
        httpx.Client(base_url=url, timeout=30) as first,
    ):
        thread_id = first.post("/chat/", json=ask("question 0 " + "y" * 40)).json()["thread_id"]
        for i in range(1, 4):
            upstream.script({"content": f"answer {i} " + "x" * 40})
            first.post("/chat/", json=ask(f"question {i} " + "y" * 40, thread_id=thread_id))
        upstream.script({"chunks": [f"w{i} " for i in range(40)], "chunk_delay": 0.1})
        with first.stream("POST", "/chat/stream", json=ask(question, thread_id=thread_id)) as live:
            for line in live.iter_lines():
                if line == "event: delta":
                    break
    # The first replica stopped mid-answer and handed the run over; another takes it.
    upstream.script({"content": "The resumed answer."})
    survivor = start_backend(**shared)
    wait_idle(survivor, thread_id)
    *_, cut_off, resumed = upstream.chat_requests
    assert resumed.body["messages"] == cut_off.body["messages"]
    sent = cut_off.body["messages"]
    assert sent[0] == {"role": "system", "content": "Be brief."}
    assert sent[-1] == {"role": "user", "content": question}
    assert {"role": "user", "content": "question 0 " + "y" * 40} not in sent  # trimmed
    messages = survivor.get(f"/threads/{thread_id}/messages").json()["messages"]
    assert [m["content"] for m in messages[-2:]] == [question, "The resumed answer."]


def test_cancel_reaches_the_run_on_another_replica(
    start_backend: StartBackend, upstream: FakeOpenAI
) -> None:
    replica_a, replica_b = start_backend(), start_backend()
    upstream.script({"chunks": [f"w{i} " for i in range(40)], "chunk_delay": 0.1})
    text = ""
    with replica_a.stream("POST", "/chat/stream", json=ask("Long answer please")) as live:
        for line in live.iter_lines():
            text += line + "\n"
            if line == "event: delta" and text.count("event: delta") == 2:
                thread_id = parse_sse(text)[0].data["thread_id"]
                assert replica_b.post(f"/threads/{thread_id}/cancel").status_code == 202
    events = parse_sse(text)
    assert events[-1].event == "run.cancelled"
    partial = "".join(e.data["text"] for e in events if e.event == "delta")
    assert events[-1].data["message"]["content"] == partial
    assert wait_idle(replica_b, thread_id)["message_count"] == 2


def test_cors_preflight_follows_the_setting(start_backend: StartBackend) -> None:
    backend = start_backend(cors_origins="https://app.example.com")
    preflight = backend.options(
        "/chat/",
        headers={"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example.com"
    other = backend.options(
        "/chat/",
        headers={"Origin": "https://evil.example.com", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in other.headers
