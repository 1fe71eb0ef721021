"""The LangGraph Server API (`/langgraph`) driven by the official Python SDK
(`langgraph_sdk`), unchanged, over real processes: the fake OpenAI upstream, `llm_agent`
and one `main_backend` per engine (SQLite, Postgres), each its own uvicorn process.

What the SDK shows that the adapter's own tests cannot: the requests it really sends
(query parameters such as `stream_mode=` or `subgraphs=false`, its headers, a
`Last-Event-ID`), and that it reads the answers as LangGraph's: its typed errors, the
`Content-Location` it takes the run id from, its SSE decoding and event ids, and its own
reconnect (to `Location`, with `Last-Event-ID`) when a TCP proxy resets its connection.
Each thread is checked against the native API too (`/threads/...`: the same thread, the
same log and tree), and the prompts the upstream received against the conversation.

The processes are shared by the whole module, per engine (the backend takes two seconds
to start): `engine_name` and `database_url` are module-scoped here, and each test works
on threads of its own.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from itertools import pairwise
from typing import Any, cast

import httpx
import pytest
from langgraph_sdk import get_client, get_sync_client
from langgraph_sdk.client import LangGraphClient
from langgraph_sdk.errors import ConflictError, NotFoundError, UnprocessableEntityError
from langgraph_sdk.schema import MultitaskStrategy, RunCreateMetadata, StreamPart

from tests.e2e.conftest import Backends, FakeUpstream
from tests.e2e.test_chat_processes import prompt_of
from tests.e2e.test_run_stream_processes import FAST, slow_answer
from tests.support import databases
from tests.support.servers import ServiceProcess
from tests.support.tcp_proxy import tcp_proxy

pytestmark = pytest.mark.e2e

ENGINES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
TIMEOUT = httpx.Timeout(30.0, connect=5.0)
SDK_TIMEOUT = (5.0, 30.0, 30.0, 5.0)  # connect, read, write, pool
CHAT = "chat"  # the graph's id, which names its assistant too
# The assistant's own id: a UUID, as LangGraph Server's (it answers to both names).
CHAT_UUID = str(uuid.uuid5(uuid.NAMESPACE_URL, "stubichat:chat"))
STREAM_MODES: list[Any] = ["values", "messages-tuple"]


# Processes, one set per engine -------------------------------------------------------


@pytest.fixture(scope="module", params=ENGINES)
def engine_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def database_url(
    engine_name: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A fresh database at the migration head, for the module (tests/conftest.py's,
    module-scoped)."""
    if engine_name == "sqlite":
        target = tmp_path_factory.mktemp("lg-db") / "stubichat.db"
        databases.copy_sqlite(request.getfixturevalue("sqlite_template"), target)
        yield f"sqlite:///{target}"
        return
    name = databases.create_postgres_database(request.getfixturevalue("postgres_template"))
    yield databases.postgres_url(name)
    databases.drop_postgres_database(name)


@pytest.fixture(scope="module")
def backend(
    database_url: str, llm_agent_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    group = Backends(database_url, llm_agent_url, tmp_path_factory.mktemp("lg-backend"))
    try:
        yield group.start(**FAST)
    finally:
        group.stop_all()


@pytest.fixture
async def lg(backend: ServiceProcess) -> AsyncIterator[LangGraphClient]:
    """The SDK's async client, as an application makes it (no API key)."""
    async with get_client(url=f"{backend.url}/langgraph", api_key=None, timeout=SDK_TIMEOUT) as c:
        yield c


@pytest.fixture
async def native(backend: ServiceProcess) -> AsyncIterator[httpx.AsyncClient]:
    """The native API of the same backend."""
    async with httpx.AsyncClient(base_url=backend.url, timeout=TIMEOUT) as client:
        yield client


# Helpers -----------------------------------------------------------------------------


def said(text: str) -> dict[str, Any]:
    """A run's input: one human message, in LangChain's form."""
    return {"messages": [{"type": "human", "content": text}]}


def asked(text: str) -> dict[str, Any]:
    """A run's input: one user message, in OpenAI's form."""
    return {"messages": [{"role": "user", "content": text}]}


def messages(values: Any) -> list[dict[str, Any]]:
    """A state's messages (LangChain dicts)."""
    found: list[dict[str, Any]] = values["messages"]
    return found


def pairs(values: Any) -> list[tuple[str, str]]:
    """(type, content) of a state's messages."""
    return [(m["type"], m["content"]) for m in messages(values)]


def chunks(parts: list[StreamPart]) -> list[dict[str, Any]]:
    """The message chunks of `messages` events (stream mode `messages-tuple`)."""
    return [p.data[0] for p in parts if p.event == "messages"]


def chunk_text(parts: list[StreamPart]) -> str:
    return "".join(c["content"] for c in chunks(parts))


def values_of(parts: list[StreamPart]) -> list[dict[str, Any]]:
    return [p.data for p in parts if p.event == "values"]


def event_names(parts: list[StreamPart]) -> list[str]:
    """The events' names, without a closing `end` (which LangGraph may send)."""
    names = [p.event for p in parts]
    return names[:-1] if names[-1:] == ["end"] else names


async def read_all(parts: AsyncIterator[StreamPart]) -> list[StreamPart]:
    return [part async for part in parts]


async def read_some(parts: AsyncIterator[StreamPart], chunk_count: int) -> list[StreamPart]:
    """Read until `chunk_count` answer chunks came, then drop the connection."""
    stream = cast(AsyncGenerator[StreamPart, None], parts)
    seen: list[StreamPart] = []
    try:
        async for part in stream:
            seen.append(part)
            if len(chunks(seen)) >= chunk_count:
                break
    finally:
        await stream.aclose()
    assert len(chunks(seen)) == chunk_count, f"the stream ended early: {seen}"
    return seen


async def within(seconds: float, check: Callable[[], Awaitable[Any]], what: str) -> Any:
    """`check()`'s first truthy result, polled; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while not (result := await check()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {seconds}s waiting for {what}")
        await asyncio.sleep(0.05)
    return result


async def run_status(lg: LangGraphClient, thread_id: str, run_id: str) -> str:
    status: str = (await lg.runs.get(thread_id, run_id))["status"]
    return status


async def native_json(native: httpx.AsyncClient, path: str) -> Any:
    response = await native.get(path)
    assert response.status_code == 200, response.text
    return response.json()


async def native_messages(native: httpx.AsyncClient, thread_id: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = (await native_json(native, f"/threads/{thread_id}/messages"))[
        "messages"
    ]
    return messages


async def new_thread(lg: LangGraphClient) -> str:
    thread_id: str = (await lg.threads.create())["thread_id"]
    return thread_id


async def generating(lg: LangGraphClient, thread_id: str, run_id: str) -> None:
    """Until the run streams its answer: two chunks read from its joined stream."""
    await read_some(lg.runs.join_stream(thread_id, run_id, stream_mode=STREAM_MODES), 2)


def prompts(upstream: FakeUpstream) -> list[list[tuple[str, str]]]:
    return [prompt_of(r) for r in upstream.chat_requests()]


def error_body(error: httpx.HTTPStatusError) -> dict[str, Any]:
    """An error's body, which carries LangGraph's `detail` and the native envelope."""
    body: dict[str, Any] = error.response.json()
    assert isinstance(body.get("detail"), str) and body["detail"], body
    assert isinstance(body.get("error"), dict), body
    return body


# 1 Assistants ------------------------------------------------------------------------


async def test_the_chat_assistant_is_found_and_read(lg: LangGraphClient) -> None:
    found = await lg.assistants.search()
    assert [(a["assistant_id"], a["graph_id"]) for a in found] == [(CHAT_UUID, CHAT)]
    assert await lg.assistants.search(graph_id=CHAT) == found
    assert await lg.assistants.search(graph_id="another") == []
    assert await lg.assistants.search(offset=1) == []

    assistant = await lg.assistants.get(CHAT)
    assert assistant == found[0]
    # Also by its UUID.
    assert await lg.assistants.get(CHAT_UUID) == assistant
    # Its graph (one node, `chat`) and its schemas.
    graph = await lg.assistants.get_graph(CHAT)
    assert CHAT in {node["id"] for node in graph["nodes"]}
    schemas = await lg.assistants.get_schemas(CHAT)
    assert schemas["graph_id"] == CHAT
    assert "messages" in (schemas["input_schema"] or {}).get("properties", {})

    with pytest.raises(NotFoundError) as missing:
        await lg.assistants.get("another")
    assert missing.value.status_code == 404
    error_body(missing.value)


# 2 Threads ---------------------------------------------------------------------------


async def test_threads_are_created_read_updated_and_deleted(
    lg: LangGraphClient, native: httpx.AsyncClient
) -> None:
    tag = uuid.uuid4().hex
    made = await lg.threads.create(metadata={"tag": tag, "n": 1})
    thread_id = made["thread_id"]
    uuid.UUID(thread_id)  # the server names it
    assert (made["status"], made["metadata"]) == ("idle", {"tag": tag, "n": 1})
    assert (made["values"] or {}).get("messages", []) == []
    assert made["interrupts"] == {}
    assert await lg.threads.get(thread_id) == made

    # With an id of the client's: taken as it is; a second create raises, or returns it.
    mine = str(uuid.uuid4())
    named = await lg.threads.create(thread_id=mine, metadata={"tag": tag, "n": 2})
    assert named["thread_id"] == mine
    with pytest.raises(ConflictError) as conflict:
        await lg.threads.create(thread_id=mine, if_exists="raise")
    assert conflict.value.status_code == 409
    error_body(conflict.value)
    with pytest.raises(ConflictError):
        await lg.threads.create(thread_id=mine)  # `raise` is the default
    again = await lg.threads.create(
        thread_id=mine, metadata={"tag": "other"}, if_exists="do_nothing"
    )
    assert again == named

    # Metadata is merged, like LangGraph's.
    updated = await lg.threads.update(thread_id, metadata={"n": 10, "colour": "blue"})
    assert updated["metadata"] == {"tag": tag, "n": 10, "colour": "blue"}
    assert (await lg.threads.get(thread_id))["metadata"] == updated["metadata"]

    # The same thread on the native API, both ways.
    seen = await native_json(native, f"/threads/{thread_id}")
    assert (seen["id"], seen["metadata"], seen["status"]) == (
        thread_id,
        {"tag": tag, "n": 10, "colour": "blue"},
        "idle",
    )
    response = await native.post("/threads", json={"metadata": {"tag": tag, "n": 3}})
    assert response.status_code == 201, response.text
    native_id = response.json()["id"]
    from_native = await lg.threads.get(native_id)
    assert (from_native["thread_id"], from_native["metadata"], from_native["status"]) == (
        native_id,
        {"tag": tag, "n": 3},
        "idle",
    )

    # Search: by metadata, by status, paged.
    ours = {thread_id, mine, native_id}
    found = await lg.threads.search(metadata={"tag": tag}, limit=10)
    assert {t["thread_id"] for t in found} == ours
    assert [t["thread_id"] for t in await lg.threads.search(metadata={"tag": tag, "n": 2})] == [
        mine
    ]
    assert await lg.threads.search(metadata={"tag": tag}, status="busy") == []
    idle = await lg.threads.search(metadata={"tag": tag}, status="idle")
    assert {t["thread_id"] for t in idle} == ours
    first_page = await lg.threads.search(metadata={"tag": tag}, limit=2)
    second_page = await lg.threads.search(metadata={"tag": tag}, limit=2, offset=2)
    assert (len(first_page), len(second_page)) == (2, 1)
    assert [t["thread_id"] for t in first_page + second_page] == [t["thread_id"] for t in found]
    assert await lg.threads.search(metadata={"tag": tag}, offset=3) == []

    # Deleted: gone from both APIs and from the search.
    await lg.threads.delete(thread_id)
    with pytest.raises(NotFoundError) as gone:
        await lg.threads.get(thread_id)
    error_body(gone.value)
    assert (await native.get(f"/threads/{thread_id}")).status_code == 404
    with pytest.raises(NotFoundError):
        await lg.threads.delete(thread_id)
    left = await lg.threads.search(metadata={"tag": tag})
    assert {t["thread_id"] for t in left} == {mine, native_id}


# 3 A streamed run --------------------------------------------------------------------


async def test_a_streamed_run_sends_metadata_values_and_message_chunks(
    lg: LangGraphClient, native: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    upstream.script({"chunks": ["Hello ", "from ", "the ", "graph."]})
    thread_id = await new_thread(lg)
    created: list[RunCreateMetadata] = []
    parts = await read_all(
        lg.runs.stream(
            thread_id,
            CHAT,
            input=said("Who speaks?"),
            stream_mode=STREAM_MODES,
            on_run_created=created.append,
        )
    )

    # First the run's metadata, with the id the Content-Location header names.
    assert parts[0].event == "metadata", parts
    run_id = parts[0].data["run_id"]
    assert created == [{"run_id": run_id, "thread_id": thread_id}]
    # The state at the start (the input), the answer's chunks, the state at the end.
    names = event_names(parts)
    assert names == ["metadata", "values"] + ["messages"] * (len(names) - 3) + ["values"], names
    start, end = values_of(parts)
    assert pairs(start) == [("human", "Who speaks?")]
    assert pairs(end) == [("human", "Who speaks?"), ("ai", "Hello from the graph.")]
    question, answer = end["messages"]
    assert start["messages"][0]["id"] == question["id"]
    assert answer["tool_calls"] == [] and answer["invalid_tool_calls"] == []

    # The chunks joined are the answer, under its id.
    assert chunk_text(parts) == answer["content"]
    assert {c["id"] for c in chunks(parts)} == {answer["id"]}
    assert {c["type"] for c in chunks(parts)} == {"AIMessageChunk"}
    metadata = [p.data[1] for p in parts if p.event == "messages"]
    assert all(
        (m["langgraph_node"], m["run_id"], m["thread_id"], m["assistant_id"], m["graph_id"])
        == ("chat", run_id, thread_id, CHAT_UUID, CHAT)
        for m in metadata
    ), metadata

    assert prompts(upstream) == [[("user", "Who speaks?")]]
    # The run and the thread, as LangGraph and the native API see them.
    run = await lg.runs.get(thread_id, run_id)
    assert (run["run_id"], run["thread_id"], run["assistant_id"], run["status"]) == (
        run_id,
        thread_id,
        CHAT_UUID,
        "success",
    )
    thread = await lg.threads.get(thread_id)
    assert thread["status"] == "idle"
    assert thread["values"] == end
    assert (thread["metadata"] or {}).get("graph_id") == CHAT
    assert (thread["metadata"] or {}).get("assistant_id") == CHAT_UUID
    listed = await native_messages(native, thread_id)
    assert [(m["id"], m["role"], m["content"]) for m in listed] == [
        (question["id"], "user", "Who speaks?"),
        (answer["id"], "assistant", "Hello from the graph."),
    ]
    assert listed[1]["run_id"] == run_id
    native_run = await native_json(native, f"/threads/{thread_id}/runs/{run_id}")
    assert (native_run["status"], native_run["message_id"]) == ("completed", answer["id"])


# 4 A second turn ---------------------------------------------------------------------


async def test_a_second_turn_sends_the_first_from_the_log(
    lg: LangGraphClient, native: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    upstream.script({"content": "Four."}, {"content": "Eight."})
    thread_id = await new_thread(lg)
    first = await read_all(
        lg.runs.stream(thread_id, CHAT, input=said("Two plus two?"), stream_mode=STREAM_MODES)
    )
    assert chunk_text(first) == "Four."
    # The second turn in OpenAI's form, its content as LangChain's text blocks.
    second_input: dict[str, Any] = {
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Twice that?"}]}]
    }
    second = await read_all(
        lg.runs.stream(thread_id, CHAT, input=second_input, stream_mode=STREAM_MODES)
    )
    assert chunk_text(second) == "Eight."
    start, end = values_of(second)
    assert pairs(start) == [("human", "Two plus two?"), ("ai", "Four."), ("human", "Twice that?")]
    assert pairs(end) == [*pairs(start), ("ai", "Eight.")]
    assert end["messages"][:2] == values_of(first)[-1]["messages"]

    assert prompts(upstream) == [
        [("user", "Two plus two?")],
        [("user", "Two plus two?"), ("assistant", "Four."), ("user", "Twice that?")],
    ]
    listed = await native_messages(native, thread_id)
    assert [(m["id"], m["content"]) for m in listed] == [
        (m["id"], m["content"]) for m in end["messages"]
    ]
    runs = (await native_json(native, f"/threads/{thread_id}/runs"))["runs"]
    assert {r["id"] for r in runs} == {first[0].data["run_id"], second[0].data["run_id"]}


# 5 State and history -----------------------------------------------------------------


async def test_state_and_history_follow_the_log(
    lg: LangGraphClient, native: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    upstream.script({"content": "A1"}, {"content": "A2"})
    thread_id = await new_thread(lg)
    empty = await lg.threads.get_state(thread_id)
    assert (empty["values"], empty["next"], empty["parent_checkpoint"]) == (
        {"messages": []},
        [],
        None,
    )
    await lg.runs.wait(thread_id, CHAT, input=said("Q1"))
    await lg.runs.wait(thread_id, CHAT, input=said("Q2"))
    listed = await native_messages(native, thread_id)
    ids = [m["id"] for m in listed]

    state = await lg.threads.get_state(thread_id)
    assert pairs(state["values"]) == [("human", "Q1"), ("ai", "A1"), ("human", "Q2"), ("ai", "A2")]
    assert [m["id"] for m in messages(state["values"])] == ids
    assert state["next"] == [] and state["tasks"] == [] and state["interrupts"] == []
    assert state["checkpoint"] == {
        "thread_id": thread_id,
        "checkpoint_ns": "",
        "checkpoint_id": ids[-1],
    }

    # Newest first: one state per message, then the empty one; each one's parent is the
    # state after it in the list.
    history = await lg.threads.get_history(thread_id)
    assert history[0] == state
    assert [len(messages(h["values"])) for h in history] == [4, 3, 2, 1, 0]
    assert [h["checkpoint"]["checkpoint_id"] for h in history[:4]] == ids[::-1]
    assert history[-1]["checkpoint"] == empty["checkpoint"]
    for newer, older in pairwise(history):
        assert newer["parent_checkpoint"] == older["checkpoint"], (newer, older)
        assert messages(newer["values"])[:-1] == messages(older["values"])
    assert history[-1]["parent_checkpoint"] is None
    assert [h["next"] for h in history] == [[], ["chat"], [], ["chat"], []]

    # Paged with `before`, a checkpoint or its id; limited.
    assert await lg.threads.get_history(thread_id, limit=2) == history[:2]
    assert await lg.threads.get_history(thread_id, before=history[1]["checkpoint"]) == history[2:]
    assert (
        await lg.threads.get_history(
            thread_id, before=history[0]["checkpoint"]["checkpoint_id"], limit=2
        )
        == history[1:3]
    )
    assert await lg.threads.get_history(thread_id, before=history[-1]["checkpoint"]) == []
    # One state by its checkpoint id.
    assert await lg.threads.get_state(thread_id, checkpoint_id=ids[1]) == history[2]


async def test_a_run_starts_from_the_current_checkpoint_only(
    lg: LangGraphClient, upstream: FakeUpstream
) -> None:
    """A UI sends the state it shows as `checkpoint`: its head is taken, an older one is
    refused (branching is the native edit and regenerate)."""
    upstream.script({"content": "A1"}, {"content": "A2"})
    thread_id = await new_thread(lg)
    empty = await lg.threads.get_state(thread_id)
    await lg.runs.wait(thread_id, CHAT, input=said("Q1"), checkpoint=empty["checkpoint"])
    head = await lg.threads.get_state(thread_id)
    values = await lg.runs.wait(
        thread_id, CHAT, input=said("Q2"), checkpoint_id=head["checkpoint"]["checkpoint_id"]
    )
    assert isinstance(values, dict)
    assert pairs(values) == [("human", "Q1"), ("ai", "A1"), ("human", "Q2"), ("ai", "A2")]
    with pytest.raises(UnprocessableEntityError) as older:
        await lg.runs.create(thread_id, CHAT, input=said("Q3"), checkpoint=head["checkpoint"])
    error_body(older.value)
    assert len(await lg.runs.list(thread_id)) == 2


async def test_a_native_edit_makes_a_branch_the_state_and_history_follow(
    lg: LangGraphClient, native: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    """The same thread is a tree in both APIs: an edit through the native API is the
    LangGraph state at once, and the old branch stays readable by its checkpoints."""
    upstream.script({"content": "A1"}, {"content": "A2"}, {"content": "A2 edited"})
    thread_id = await new_thread(lg)
    await lg.runs.wait(thread_id, CHAT, input=said("Q1"))
    await lg.runs.wait(thread_id, CHAT, input=said("Q2"))
    old = await lg.threads.get_state(thread_id)
    q2 = messages(old["values"])[2]
    edited = await native.post(
        f"/threads/{thread_id}/messages/{q2['id']}/edit", json={"content": "Q2 edited"}
    )
    assert edited.status_code == 200, edited.text

    state = await lg.threads.get_state(thread_id)
    assert pairs(state["values"]) == [
        ("human", "Q1"),
        ("ai", "A1"),
        ("human", "Q2 edited"),
        ("ai", "A2 edited"),
    ]
    assert messages(state["values"])[:2] == messages(old["values"])[:2]
    assert state["checkpoint"]["checkpoint_id"] == edited.json()["message"]["id"]
    # The old branch: its state by its checkpoint, its history from it.
    old_id = old["checkpoint"]["checkpoint_id"]
    assert await lg.threads.get_state(thread_id, checkpoint_id=old_id) == old
    branch = await lg.threads.get_history(thread_id, checkpoint=old["checkpoint"])
    assert branch[0] == old and len(branch) == 5
    # A run may not start from it: it is not the thread's state.
    with pytest.raises(UnprocessableEntityError):
        await lg.runs.create(thread_id, CHAT, input=said("Q3"), checkpoint=old["checkpoint"])
    assert prompts(upstream)[-1] == [("user", "Q1"), ("assistant", "A1"), ("user", "Q2 edited")]


async def test_a_queued_streamed_run_starts_from_the_answered_state(
    lg: LangGraphClient, upstream: FakeUpstream
) -> None:
    first_answer = slow_answer(upstream, pieces=20, delay=0.04)
    thread_id = await new_thread(lg)
    first = await lg.runs.create(thread_id, CHAT, input=said("Q1"))
    await generating(lg, thread_id, first["run_id"])
    parts = await read_all(
        lg.runs.stream(
            thread_id,
            CHAT,
            input=said("Q2"),
            stream_mode=STREAM_MODES,
            multitask_strategy="enqueue",
        )
    )
    start, end = values_of(parts)
    assert pairs(start) == [("human", "Q1"), ("ai", first_answer), ("human", "Q2")]
    assert pairs(end) == [*pairs(start), ("ai", "You said: Q2")]
    assert chunk_text(parts) == "You said: Q2"
    assert (await lg.runs.get(thread_id, first["run_id"]))["status"] == "success"


def test_the_sync_client_streams_and_joins(backend: ServiceProcess, upstream: FakeUpstream) -> None:
    upstream.script({"content": "Sync one."}, {"content": "Sync two."})
    with get_sync_client(
        url=f"{backend.url}/langgraph", api_key=None, timeout=SDK_TIMEOUT
    ) as client:
        thread_id = client.threads.create()["thread_id"]
        created: list[RunCreateMetadata] = []
        parts = list(
            client.runs.stream(
                thread_id,
                CHAT,
                input=said("One"),
                stream_mode=STREAM_MODES,
                on_run_created=created.append,
            )
        )
        assert parts[0].event == "metadata"
        assert created == [{"run_id": parts[0].data["run_id"], "thread_id": thread_id}]
        assert chunk_text(parts) == "Sync one."
        run = client.runs.create(thread_id, CHAT, input=said("Two"))
        joined = list(client.runs.join_stream(thread_id, run["run_id"]))
        assert chunk_text(joined) == "Sync two."
        assert pairs(client.runs.join(thread_id, run["run_id"]))[-1] == ("ai", "Sync two.")
        assert client.threads.get_state(thread_id)["values"] == values_of(joined)[-1]


# 6 wait, list, get -------------------------------------------------------------------


async def test_wait_returns_the_final_values_and_runs_are_listed(
    lg: LangGraphClient, upstream: FakeUpstream
) -> None:
    upstream.script({"content": "First."}, {"content": "Second."}, {"content": "Stateless."})
    thread_id = str(uuid.uuid4())
    created: list[RunCreateMetadata] = []
    # A thread made by its first run (`if_not_exists: create`).
    values = await lg.runs.wait(
        thread_id,
        CHAT,
        input=said("One?"),
        if_not_exists="create",
        on_run_created=created.append,
    )
    assert isinstance(values, dict)
    assert pairs(values) == [("human", "One?"), ("ai", "First.")]
    values = await lg.runs.wait(thread_id, CHAT, input=asked("Two?"), on_run_created=created.append)
    assert isinstance(values, dict)
    assert pairs(values)[2:] == [("human", "Two?"), ("ai", "Second.")]
    assert [c["thread_id"] for c in created] == [thread_id, thread_id]
    first_id, second_id = (c["run_id"] for c in created)

    runs = await lg.runs.list(thread_id)
    assert [(r["run_id"], r["status"]) for r in runs] == [
        (second_id, "success"),
        (first_id, "success"),
    ]
    assert all(r["thread_id"] == thread_id and r["assistant_id"] == CHAT_UUID for r in runs)
    assert [r["run_id"] for r in await lg.runs.list(thread_id, limit=1, offset=1)] == [first_id]
    assert await lg.runs.list(thread_id, status="pending") == []
    run = await lg.runs.get(thread_id, first_id)
    assert run == runs[1]
    assert (await lg.threads.get(thread_id))["values"] == values

    # Stateless: a new thread per run.
    stateless = await lg.runs.wait(None, CHAT, input=said("Alone?"))
    assert isinstance(stateless, dict)
    assert pairs(stateless) == [("human", "Alone?"), ("ai", "Stateless.")]
    assert prompts(upstream)[2] == [("user", "Alone?")]


# 7 A background run dropped and rejoined ---------------------------------------------


async def test_a_background_run_rejoined_after_a_drop_loses_and_repeats_nothing(
    lg: LangGraphClient, native: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    text = slow_answer(upstream, pieces=40, delay=0.05)  # two seconds
    thread_id = await new_thread(lg)
    created: list[RunCreateMetadata] = []
    run = await lg.runs.create(
        thread_id,
        CHAT,
        input=said("Take your time"),
        stream_mode=STREAM_MODES,
        stream_resumable=True,
        on_run_created=created.append,
    )
    run_id = run["run_id"]
    assert created == [{"run_id": run_id, "thread_id": thread_id}]
    assert run["status"] in ("pending", "running")
    assert (run["thread_id"], run["assistant_id"]) == (thread_id, CHAT_UUID)

    # Joined (the run's own stream modes), dropped after three chunks…
    before = await read_some(lg.runs.join_stream(thread_id, run_id), 3)
    last_id = before[-1].id
    assert last_id is not None, before
    # …rejoined after the last event seen, read to the end.
    after = await read_all(
        lg.runs.join_stream(thread_id, run_id, stream_mode=STREAM_MODES, last_event_id=last_id)
    )
    assert (await lg.runs.get(thread_id, run_id))["status"] == "success"
    assert values_of(after), after
    final = values_of(after)[-1]
    assert pairs(final) == [("human", "Take your time"), ("ai", text)]
    # The first connection began at the start, the second right after its last event.
    assert before[0].event == "metadata" and before[0].data["run_id"] == run_id
    assert pairs(values_of(before)[0]) == [("human", "Take your time")]
    assert chunk_text(before) + chunk_text(after) == text
    assert chunks(after), after
    answer_id = final["messages"][-1]["id"]
    assert {c["id"] for c in chunks(before) + chunks(after)} == {answer_id}
    chunk_ids = [p.id for p in before + after if p.event == "messages"]
    assert None not in chunk_ids and len(set(chunk_ids)) == len(chunk_ids), chunk_ids

    # A rejoin from the start (`-1`) replays the whole run.
    replay = await read_all(
        lg.runs.join_stream(thread_id, run_id, stream_mode=STREAM_MODES, last_event_id="-1")
    )
    assert chunk_text(replay) == text and values_of(replay)[-1] == final
    listed = await native_messages(native, thread_id)
    assert [m["content"] for m in listed] == ["Take your time", text]
    assert listed[1]["id"] == answer_id


@pytest.mark.parametrize(
    ("how", "modes"),
    [
        ("stream", STREAM_MODES),
        ("stream", ["messages-tuple", "updates"]),
        ("join", ["messages-tuple", "updates"]),
    ],
    ids=["stream-values", "stream-updates", "join-updates"],
)
async def test_the_sdk_resumes_a_cut_stream_by_itself_in_the_modes_asked(
    lg: LangGraphClient,
    backend: ServiceProcess,
    upstream: FakeUpstream,
    how: str,
    modes: list[Any],
) -> None:
    """The connection of `runs.stream` (or `runs.join_stream`) is reset mid-answer: the
    SDK reconnects by itself (to `Location`, with `Last-Event-ID`) and the stream goes on
    as asked for."""
    text = slow_answer(upstream, pieces=40, delay=0.05)  # two seconds
    thread_id = await new_thread(lg)
    parts: list[StreamPart] = []
    cut_after: int | None = None
    with tcp_proxy("127.0.0.1", backend.port) as proxy:
        url = f"http://127.0.0.1:{proxy.port}/langgraph"
        async with get_client(url=url, api_key=None, timeout=SDK_TIMEOUT) as cut:
            if how == "stream":
                stream = cut.runs.stream(thread_id, CHAT, input=said("Cut me"), stream_mode=modes)
            else:
                run = await cut.runs.create(thread_id, CHAT, input=said("Cut me"))
                stream = cut.runs.join_stream(thread_id, run["run_id"], stream_mode=modes)
            async for part in stream:
                parts.append(part)
                if len(chunks(parts)) == 3 and cut_after is None:
                    cut_after = len(parts)
                    proxy.set_mode("refuse")  # resets the connection…
                    proxy.set_mode("forward")  # …and takes the reconnect
    assert cut_after is not None and cut_after < len(parts)
    run_id = parts[0].data["run_id"]
    reconnects = backend.output().count(f"GET /langgraph/threads/{thread_id}/runs/{run_id}/stream")
    assert reconnects >= (1 if how == "stream" else 2), "the SDK did not reconnect"
    assert chunk_text(parts) == text
    chunk_ids = [p.id for p in parts if p.event == "messages"]
    assert None not in chunk_ids and len(set(chunk_ids)) == len(chunk_ids), chunk_ids
    names = event_names(parts)
    assert names.count("metadata") == 1
    assert set(names) == {"metadata", "messages"} | {
        {"values": "values", "updates": "updates"}[m] for m in modes if m != "messages-tuple"
    }, names
    final = {"type": "ai", "content": text}
    if "values" in modes:
        assert pairs(values_of(parts)[-1]) == [("human", "Cut me"), ("ai", text)]
    if "updates" in modes:
        [update] = [p.data for p in parts if p.event == "updates"]
        assert [{k: m[k] for k in final} for m in update["chat"]["messages"]] == [final]


# 8 Multitask strategies --------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["reject", "enqueue", "interrupt", "rollback"])
async def test_each_multitask_strategy(
    lg: LangGraphClient,
    native: httpx.AsyncClient,
    upstream: FakeUpstream,
    strategy: MultitaskStrategy,
) -> None:
    first_answer = slow_answer(upstream, pieces=30, delay=0.04)  # 1.2 seconds
    thread_id = await new_thread(lg)
    first = await lg.runs.create(thread_id, CHAT, input=said("Q1"), stream_mode=STREAM_MODES)
    await generating(lg, thread_id, first["run_id"])
    assert (await lg.threads.get(thread_id))["status"] == "busy"

    if strategy == "reject":
        with pytest.raises(ConflictError) as refused:
            await lg.runs.create(thread_id, CHAT, input=said("Q2"), multitask_strategy="reject")
        assert refused.value.status_code == 409
        error_body(refused.value)
        final = await lg.runs.join(thread_id, first["run_id"])
        assert pairs(final) == [("human", "Q1"), ("ai", first_answer)]
        runs = await lg.runs.list(thread_id)
        assert [(r["run_id"], r["status"]) for r in runs] == [(first["run_id"], "success")]
        assert prompts(upstream) == [[("user", "Q1")]]
        return

    second = await lg.runs.create(thread_id, CHAT, input=said("Q2"), multitask_strategy=strategy)
    if strategy == "enqueue":
        assert second["status"] == "pending"
    final = await lg.runs.join(thread_id, second["run_id"])
    first_run = await lg.runs.get(thread_id, first["run_id"])
    second_run = await lg.runs.get(thread_id, second["run_id"])
    runs = await lg.runs.list(thread_id)
    assert [r["run_id"] for r in runs] == [second["run_id"], first["run_id"]]
    assert second_run["status"] == "success"
    state = await lg.threads.get_state(thread_id)
    assert state["values"] == final
    history = pairs(final)
    native_first = await native_json(native, f"/threads/{thread_id}/runs/{first['run_id']}")

    if strategy == "enqueue":
        assert first_run["status"] == "success"
        assert history == [
            ("human", "Q1"),
            ("ai", first_answer),
            ("human", "Q2"),
            ("ai", "You said: Q2"),
        ]
        assert prompts(upstream) == [
            [("user", "Q1")],
            [("user", "Q1"), ("assistant", first_answer), ("user", "Q2")],
        ]
        assert native_first["status"] == "completed"
        return
    assert first_run["status"] == "interrupted"
    assert (native_first["status"], native_first["cancelled_by"]) == ("cancelled", strategy)
    if strategy == "rollback":
        # The rolled-back input is gone: the thread holds the second turn alone.
        assert history == [("human", "Q2"), ("ai", "You said: Q2")]
        assert prompts(upstream)[-1] == [("user", "Q2")]
    else:
        # Interrupted: the first question stays, with what of its answer was written.
        assert history[0] == ("human", "Q1") and history[-2:] == [
            ("human", "Q2"),
            ("ai", "You said: Q2"),
        ]
        kept = [content for kind, content in history[1:-2]]
        assert all(first_answer.startswith(c) and len(c) < len(first_answer) for c in kept)
    assert (await lg.threads.get(thread_id))["status"] == "idle"


# 9 Cancel ----------------------------------------------------------------------------


async def test_a_running_run_cancelled_and_waited_for_is_interrupted(
    lg: LangGraphClient, native: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    text = slow_answer(upstream, pieces=100, delay=0.05)  # five seconds
    thread_id = await new_thread(lg)
    run = await lg.runs.create(thread_id, CHAT, input=said("Stop me"), stream_mode=STREAM_MODES)
    run_id = run["run_id"]
    await generating(lg, thread_id, run_id)
    assert (await lg.runs.get(thread_id, run_id))["status"] == "running"

    started = time.monotonic()
    await lg.runs.cancel(thread_id, run_id, wait=True)
    assert time.monotonic() - started < 4, "the cancel waited for the whole answer"
    assert (await lg.runs.get(thread_id, run_id))["status"] == "interrupted"
    assert (await lg.threads.get(thread_id))["status"] == "idle"
    native_run = await native_json(native, f"/threads/{thread_id}/runs/{run_id}")
    assert (native_run["status"], native_run["cancelled_by"]) == ("cancelled", "user")
    state = await lg.threads.get_state(thread_id)
    assert pairs(state["values"])[0] == ("human", "Stop me")
    assert all(len(c) < len(text) for kind, c in pairs(state["values"])[1:])
    # An ended run has nothing to cancel.
    with pytest.raises(ConflictError) as ended:
        await lg.runs.cancel(thread_id, run_id)
    error_body(ended.value)


async def test_a_dropped_stream_cancels_its_run_when_asked_to(
    lg: LangGraphClient, upstream: FakeUpstream
) -> None:
    """`on_disconnect: cancel` on runs.stream, `cancel_on_disconnect` on join_stream."""
    slow_answer(upstream, pieces=100, delay=0.05)
    slow_answer(upstream, pieces=100, delay=0.05)
    thread_id = await new_thread(lg)
    streamed = await read_some(
        lg.runs.stream(
            thread_id,
            CHAT,
            input=said("Hang up"),
            stream_mode=STREAM_MODES,
            on_disconnect="cancel",
        ),
        2,
    )
    first = streamed[0].data["run_id"]
    await within(
        10,
        lambda: _is(run_status(lg, thread_id, first), "interrupted"),
        "the streamed run to be cancelled",
    )
    background = await lg.runs.create(thread_id, CHAT, input=said("Hang up again"))
    second = background["run_id"]
    await read_some(
        lg.runs.join_stream(thread_id, second, stream_mode=STREAM_MODES, cancel_on_disconnect=True),
        2,
    )
    await within(
        10,
        lambda: _is(run_status(lg, thread_id, second), "interrupted"),
        "the joined run to be cancelled",
    )
    assert (await lg.threads.get(thread_id))["status"] == "idle"


async def _is(value: Awaitable[Any], expected: Any) -> bool:
    same: bool = await value == expected
    return same


# 10 Join -----------------------------------------------------------------------------


async def test_join_blocks_until_the_final_values(
    lg: LangGraphClient, upstream: FakeUpstream
) -> None:
    text = slow_answer(upstream, pieces=10, delay=0.05)
    thread_id = await new_thread(lg)
    run = await lg.runs.create(thread_id, CHAT, input=said("Join me"))
    final = await lg.runs.join(thread_id, run["run_id"])
    assert pairs(final) == [("human", "Join me"), ("ai", text)]
    assert (await lg.runs.get(thread_id, run["run_id"]))["status"] == "success"
    # Joined again once it ended: the same values, at once.
    assert await lg.runs.join(thread_id, run["run_id"]) == final


# A failed run -----------------------------------------------------------------------


async def test_a_failed_run_ends_with_an_error_event_and_wait_reports_it(
    lg: LangGraphClient, upstream: FakeUpstream
) -> None:
    upstream.script({"status": 401}, {"status": 401}, {"status": 401})
    thread_id = await new_thread(lg)
    parts = await read_all(
        lg.runs.stream(thread_id, CHAT, input=said("Fail"), stream_mode=STREAM_MODES)
    )
    assert event_names(parts) == ["metadata", "values", "error"], parts
    run_id = parts[0].data["run_id"]
    error = parts[2].data
    assert isinstance(error["error"], str) and error["error"], error
    assert isinstance(error["message"], str) and error["message"], error
    assert (await lg.runs.get(thread_id, run_id))["status"] == "error"

    waited = await lg.runs.wait(thread_id, CHAT, input=said("Fail again"), raise_error=False)
    assert isinstance(waited, dict) and list(waited) == ["__error__"], waited
    assert waited["__error__"]["error"] == error["error"]
    with pytest.raises(Exception, match=error["error"]):
        await lg.runs.wait(thread_id, CHAT, input=said("And again"))
    runs = await lg.runs.list(thread_id)
    assert [r["status"] for r in runs] == ["error"] * 3
    # The questions stay, unanswered.
    state = await lg.threads.get_state(thread_id)
    assert pairs(state["values"]) == [
        ("human", "Fail"),
        ("human", "Fail again"),
        ("human", "And again"),
    ]


# 11 Errors ---------------------------------------------------------------------------


async def test_errors_carry_their_status_and_a_detail(lg: LangGraphClient) -> None:
    unknown = str(uuid.uuid4())
    with pytest.raises(NotFoundError) as missing:
        await lg.threads.get(unknown)
    error_body(missing.value)
    with pytest.raises(NotFoundError):
        await lg.threads.get_state(unknown)
    with pytest.raises(NotFoundError):
        await lg.runs.create(unknown, CHAT, input=said("Anyone?"))
    with pytest.raises(NotFoundError):
        await read_all(lg.runs.stream(unknown, CHAT, input=said("Anyone?")))
    # runs.wait and runs.join raise httpx's own error (not a typed one).
    with pytest.raises(httpx.HTTPStatusError) as waited:
        await lg.runs.wait(unknown, CHAT, input=said("Anyone?"))
    assert waited.value.response.status_code == 404
    thread_id = await new_thread(lg)
    with pytest.raises(NotFoundError):
        await lg.runs.get(thread_id, str(uuid.uuid4()))
    with pytest.raises(NotFoundError) as other_assistant:
        await lg.runs.create(thread_id, "another", input=said("Anyone?"))
    error_body(other_assistant.value)

    # Invalid bodies: 422.
    with pytest.raises(UnprocessableEntityError) as invalid:
        await lg.threads.create(if_exists=cast(Any, "sometimes"))
    assert invalid.value.status_code == 422
    error_body(invalid.value)
    with pytest.raises(UnprocessableEntityError) as bad_search:
        await lg.http.post("/threads/search", json={"limit": "many"})
    error_body(bad_search.value)
    with pytest.raises(UnprocessableEntityError) as bad_strategy:
        await lg.runs.create(
            thread_id, CHAT, input=said("Hm"), multitask_strategy=cast(Any, "shout")
        )
    error_body(bad_strategy.value)
    assert await lg.runs.list(thread_id) == []


# A thread list (agent-chat-ui's) shows each thread's first message from its values.


async def test_search_and_update_show_a_threads_values(
    lg: LangGraphClient, upstream: FakeUpstream
) -> None:
    tag = uuid.uuid4().hex
    thread_id = (await lg.threads.create(metadata={"tag": tag}))["thread_id"]
    await lg.runs.wait(thread_id, CHAT, input=said("Hello"))
    expected = (await lg.threads.get(thread_id))["values"]
    assert pairs(expected) == [("human", "Hello"), ("ai", "You said: Hello")]
    [found] = await lg.threads.search(metadata={"tag": tag})
    updated = await lg.threads.update(thread_id, metadata={"seen": True})
    assert (found["values"], updated["values"]) == (expected, expected)
