"""The LangGraph API over real HTTP on both engines: the same threads as the native API,
bad requests refused before anything is appended, states along any branch, and a stream
that resumes after any of its events with nothing lost or repeated."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.fakes.openai_server import FakeOpenAI
from tests.integration.chat.conftest import ask, wait_idle
from tests.support.databases import event_count
from tests.support.sse import Event, parse_sse

LG = "/langgraph"


def lg_run(content: str, **fields: Any) -> dict[str, Any]:
    return {
        "assistant_id": "chat",
        "input": {"messages": [{"type": "human", "content": content}]},
        **fields,
    }


def streamed(
    backend: httpx.Client, path: str, body: object = None, **headers: str
) -> tuple[httpx.Response, list[Event]]:
    method = "GET" if body is None else "POST"
    with backend.stream(method, path, json=body, headers=headers) as response:
        text = response.read().decode()
    return response, parse_sse(text)


def test_a_thread_is_the_same_thread_in_both_apis(
    backend: httpx.Client, upstream: FakeOpenAI
) -> None:
    made = backend.post(f"{LG}/threads", json={"metadata": {"project": "a"}}).json()
    thread_id = made["thread_id"]
    native = backend.get(f"/threads/{thread_id}").json()
    assert native["metadata"] == {"project": "a"} and native["message_count"] == 0

    upstream.script({"content": "First answer."})
    assert backend.post("/chat/", json=ask("First question", thread_id=thread_id)).is_success
    upstream.script({"content": "Second answer."})
    values = backend.post(f"{LG}/threads/{thread_id}/runs/wait", json=lg_run("Second")).json()
    # The second turn's prompt replays the first, from the log.
    assert [m["content"] for m in upstream.chat_requests[-1].body["messages"][-3:]] == [
        "First question",
        "First answer.",
        "Second",
    ]
    listed = backend.get(f"/threads/{thread_id}/messages").json()["messages"]
    assert [(m["id"], m["content"]) for m in listed] == [
        (m["id"], m["content"]) for m in values["messages"]
    ]
    assert [m["type"] for m in values["messages"]] == ["human", "ai", "human", "ai"]

    # A run of the chat graph marks the thread as its own (what LangGraph UIs list by),
    # and PATCH merges metadata as LangGraph does.
    patched = backend.patch(f"{LG}/threads/{thread_id}", json={"metadata": {"x": 1}}).json()
    assert patched["metadata"] == {
        "project": "a",
        "graph_id": "chat",
        "assistant_id": "b2db6f9d-57f4-586b-810b-fc7599a942f2",
        "x": 1,
    }
    assert backend.get(f"/threads/{thread_id}").json()["metadata"] == patched["metadata"]
    found = backend.post(f"{LG}/threads/search", json={"metadata": {"x": 1}}).json()
    assert [t["thread_id"] for t in found] == [thread_id]

    assert backend.delete(f"{LG}/threads/{thread_id}").status_code == 204
    assert backend.get(f"/threads/{thread_id}").status_code == 404
    gone = backend.get(f"{LG}/threads/{thread_id}")
    assert gone.status_code == 404 and gone.json()["detail"] == gone.json()["error"]["message"]


def test_threads_by_id_search_and_sort(backend: httpx.Client) -> None:
    chosen = backend.post(f"{LG}/threads", json={"thread_id": "my-own-id"})
    assert chosen.status_code == 200 and chosen.json()["thread_id"] == "my-own-id"
    taken = backend.post(f"{LG}/threads", json={"thread_id": "my-own-id"})
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "thread_exists"
    kept = backend.post(f"{LG}/threads", json={"thread_id": "my-own-id", "if_exists": "do_nothing"})
    assert kept.status_code == 200 and kept.json()["created_at"] == chosen.json()["created_at"]
    ids = [
        backend.post(f"{LG}/threads", json={"metadata": {"n": n, "even": n % 2 == 0}}).json()[
            "thread_id"
        ]
        for n in range(5)
    ]
    evens = backend.post(f"{LG}/threads/search", json={"metadata": {"even": True}}).json()
    assert [t["thread_id"] for t in evens] == [ids[4], ids[2], ids[0]]
    page = backend.post(
        f"{LG}/threads/search",
        json={"metadata": {"even": True}, "limit": 1, "offset": 1, "sort_by": "created_at"},
    ).json()
    assert [t["thread_id"] for t in page] == [ids[2]]
    oldest = backend.post(
        f"{LG}/threads/search", json={"sort_by": "created_at", "sort_order": "asc", "limit": 2}
    ).json()
    assert [t["thread_id"] for t in oldest] == ["my-own-id", ids[0]]
    idle = backend.post(f"{LG}/threads/search", json={"status": "idle", "limit": 100}).json()
    assert len(idle) == 6
    assert backend.post(f"{LG}/threads/search", json={"status": "busy"}).json() == []


def test_states_follow_any_branch_of_the_tree(backend: httpx.Client, upstream: FakeOpenAI) -> None:
    upstream.script({"content": "Answer one."}, {"content": "Answer two."})
    first = backend.post("/chat/", json=ask("Question one")).json()
    thread_id = first["thread_id"]
    backend.post("/chat/", json=ask("Question two", thread_id=thread_id))
    messages = backend.get(f"/threads/{thread_id}/messages").json()["messages"]
    upstream.script({"content": "Answer two, edited."})
    edit = f"/threads/{thread_id}/messages/{messages[2]['id']}/edit"
    assert backend.post(edit, json={"content": "Question two, edited"}).is_success

    state = backend.get(f"{LG}/threads/{thread_id}/state").json()
    contents = [m["content"] for m in state["values"]["messages"]]
    assert contents == [
        "Question one",
        "Answer one.",
        "Question two, edited",
        "Answer two, edited.",
    ]
    assert state["next"] == []
    # The other branch, by its last checkpoint; its history runs up to the shared root.
    old_leaf = messages[3]["id"]
    old = backend.get(f"{LG}/threads/{thread_id}/state/{old_leaf}").json()
    assert [m["content"] for m in old["values"]["messages"]][2:] == ["Question two", "Answer two."]
    history = backend.post(
        f"{LG}/threads/{thread_id}/history", json={"checkpoint": {"checkpoint_id": old_leaf}}
    ).json()
    assert [h["checkpoint"]["checkpoint_id"] for h in history[:4]] == [
        m["id"] for m in reversed(messages)
    ]
    assert history[1]["next"] == ["chat"]  # the question, waiting for its answer
    active = backend.post(f"{LG}/threads/{thread_id}/history", json={"limit": 2}).json()
    assert active[0]["checkpoint"] == state["checkpoint"]
    assert active[0]["parent_checkpoint"] == active[1]["checkpoint"]
    missing = backend.get(f"{LG}/threads/{thread_id}/state/no-such-message")
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "message_not_found")


def test_a_run_from_the_threads_current_checkpoint_is_a_turn_an_older_one_is_refused(
    backend: httpx.Client, upstream: FakeOpenAI
) -> None:
    upstream.script({"content": "One."}, {"content": "Two."})
    thread_id = backend.post("/chat/", json=ask("Q1")).json()["thread_id"]
    head = backend.get(f"{LG}/threads/{thread_id}/state").json()["checkpoint"]
    answered = backend.post(
        f"{LG}/threads/{thread_id}/runs/wait", json=lg_run("Q2", checkpoint=head)
    ).json()
    assert [m["content"] for m in answered["messages"]] == ["Q1", "One.", "Q2", "Two."]
    before = event_count_of(backend, thread_id)
    stale = backend.post(f"{LG}/threads/{thread_id}/runs/wait", json=lg_run("Q3", checkpoint=head))
    assert stale.status_code == 422 and stale.json()["error"]["details"][0]["field"] == "checkpoint"
    assert event_count_of(backend, thread_id) == before


def event_count_of(backend: httpx.Client, thread_id: str) -> int:
    return int(backend.get(f"/threads/{thread_id}").json()["version"])


BAD_RUNS: list[tuple[dict[str, Any], int, str]] = [
    ({"input": {"messages": [{"type": "human", "content": "x"}]}}, 422, "assistant_id"),
    (lg_run("x", assistant_id="agent"), 404, ""),
    ({"assistant_id": "chat"}, 422, "input"),
    ({"assistant_id": "chat", "input": {"messages": []}}, 422, "input.messages"),
    ({"assistant_id": "chat", "input": {"messages": "hi", "extra": 1}}, 422, "input"),
    (
        {"assistant_id": "chat", "input": {"messages": [{"type": "tool", "content": "x"}]}},
        422,
        "input.messages[0]",
    ),
    (lg_run(" "), 422, "input.messages.0.content"),
    (lg_run("x" * 100_001), 422, ""),
    (lg_run("x", command={"resume": "yes"}), 422, "command"),
    (lg_run("x", interrupt_before=["chat"]), 422, "interrupt_before"),
    (lg_run("x", webhook="http://example.com"), 422, "webhook"),
    (lg_run("x", after_seconds=5), 422, "after_seconds"),
    (lg_run("x", stream_mode=["values", "events"]), 422, "stream_mode"),
    (lg_run("x", multitask_strategy="ignore"), 422, "multitask_strategy"),
    (lg_run("x", context={"temperature": 5}), 422, "context.temperature"),
    (lg_run("x", config={"configurable": {"max_tokens": 0}}), 422, "context.max_tokens"),
    (lg_run("x", checkpoint={"checkpoint_id": "somewhere-else"}), 422, "checkpoint"),
    (lg_run("x", config={"configurable": "abc"}), 422, "config.configurable"),
    (lg_run("x", on_completion="delete"), 422, "on_completion"),
]


@pytest.mark.parametrize("route", ["runs/wait", "runs/stream", "runs"])
def test_a_bad_run_is_refused_with_detail_and_appends_nothing(
    backend: httpx.Client, upstream: FakeOpenAI, database_url: str, route: str
) -> None:
    thread_id = backend.post(f"{LG}/threads", json={}).json()["thread_id"]
    before = event_count(database_url)
    for body, status, field in BAD_RUNS:
        for path in (f"{LG}/threads/{thread_id}/{route}", f"{LG}/{route}"):
            response = backend.post(path, json=body)
            assert response.status_code == status, (path, sorted(body), response.text[:200])
            error = response.json()
            assert error["detail"] == error["error"]["message"] and error["detail"]
            if field:
                assert field in [d["field"] for d in error["error"].get("details", [])], error
    missing = backend.post(f"{LG}/threads/no-such-thread/{route}", json=lg_run("x"))
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "thread_not_found")
    assert event_count(database_url) == before
    assert upstream.chat_requests == []


def test_if_not_exists_create_makes_the_thread_with_the_id_given(
    backend: httpx.Client, upstream: FakeOpenAI
) -> None:
    upstream.script({"content": "Made."})
    path = f"{LG}/threads/client-made-id/runs/wait"
    answered = backend.post(path, json=lg_run("Hello", if_not_exists="create"))
    assert answered.status_code == 200, answered.text
    assert answered.headers["Content-Location"].startswith("/threads/client-made-id/runs/")
    thread = backend.get(f"{LG}/threads/client-made-id").json()
    assert thread["metadata"]["graph_id"] == "chat"
    assert [m["content"] for m in thread["values"]["messages"]] == ["Hello", "Made."]


def test_a_stream_resumes_after_any_of_its_events_with_nothing_lost_or_repeated(
    backend: httpx.Client, upstream: FakeOpenAI
) -> None:
    upstream.script({"chunks": ["The ", "answer ", "in ", "pieces."]})
    thread_id = backend.post(f"{LG}/threads", json={}).json()["thread_id"]
    modes = ["values", "messages-tuple", "updates"]
    response, events = streamed(
        backend,
        f"{LG}/threads/{thread_id}/runs/stream",
        lg_run("Tell me", stream_mode=modes),
    )
    run_path = response.headers["Content-Location"]
    assert response.headers["Location"].startswith(f"{run_path}/stream?")
    names = [e.event for e in events]
    assert names[0] == "metadata" and events[0].data["run_id"] == run_path.rsplit("/", 1)[1]
    assert names[1] == "values" and names[-2:] == ["updates", "values"]
    chunks = [e.data for e in events if e.event == "messages"]
    answer = events[-1].data["messages"][-1]
    assert "".join(c[0]["content"] for c in chunks) == answer["content"] == "The answer in pieces."
    assert {c[0]["id"] for c in chunks} == {answer["id"]}
    assert {c[1]["langgraph_node"] for c in chunks} == {"chat"}
    assert events[-2].data == {"chat": {"messages": [answer]}}
    ids = [e.id for e in events[1:]]
    assert None not in ids and len(set(ids)) == len(ids)

    # From the start, then after every event: exactly what followed it (the answer's
    # pieces may be cut differently once it is read back from the database).
    query = "&".join(f"stream_mode={m}" for m in modes)
    join = f"{LG}{run_path}/stream?{query}"
    _, again = streamed(backend, join, **{"Last-Event-ID": "-1"})
    assert shape(again) == shape(events)
    for cut, seen in enumerate(events[1:], start=2):
        assert seen.id is not None
        _, rest = streamed(backend, join, **{"Last-Event-ID": seen.id})
        assert shape(rest) == shape(events[cut:]), seen.id


def shape(events: list[Event]) -> list[tuple[str, Any]]:
    """The events with each run of answer pieces joined into its text."""
    shaped: list[tuple[str, Any]] = []
    for e in events:
        if e.event == "messages" and shaped and shaped[-1][0] == "messages":
            shaped[-1] = ("messages", shaped[-1][1] + e.data[0]["content"])
        elif e.event == "messages":
            shaped.append(("messages", e.data[0]["content"]))
        else:
            shaped.append((e.event, e.data))
    return shaped


def test_runs_are_listed_read_joined_and_cancelled_as_langgraph_names_them(
    backend: httpx.Client, upstream: FakeOpenAI
) -> None:
    upstream.script({"content": "Done."})
    thread_id = backend.post(f"{LG}/threads", json={}).json()["thread_id"]
    first = backend.post(f"{LG}/threads/{thread_id}/runs/wait", json=lg_run("One"))
    first_run = first.headers["Content-Location"].rsplit("/", 1)[1]
    upstream.script({"chunks": ["slow "] * 50, "chunk_delay": 0.2})
    created = backend.post(f"{LG}/threads/{thread_id}/runs", json=lg_run("Two"))
    run = created.json()
    assert created.headers["Content-Location"] == f"/threads/{thread_id}/runs/{run['run_id']}"
    assert run["status"] in ("pending", "running") and run["assistant_id"]
    busy = backend.post(f"{LG}/threads/{thread_id}/runs", json=lg_run("Three"))
    assert (busy.status_code, busy.json()["error"]["code"]) == (409, "thread_busy")
    cancelled = backend.post(
        f"{LG}/threads/{thread_id}/runs/{run['run_id']}/cancel", params={"wait": 1}
    )
    assert cancelled.status_code == 204
    listed = backend.get(f"{LG}/threads/{thread_id}/runs").json()
    assert [(r["run_id"], r["status"]) for r in listed] == [
        (run["run_id"], "interrupted"),
        (first_run, "success"),
    ]
    only = backend.get(f"{LG}/threads/{thread_id}/runs", params={"status": "success"}).json()
    assert [r["run_id"] for r in only] == [first_run]
    joined = backend.get(f"{LG}/threads/{thread_id}/runs/{first_run}/join").json()
    assert joined["messages"][-1]["content"] == "Done."
    again = backend.post(f"{LG}/threads/{thread_id}/runs/{run['run_id']}/cancel")
    assert (again.status_code, again.json()["error"]["code"]) == (409, "no_active_run")
    wait_idle(backend, thread_id)


def test_a_failed_run_answers_its_error_in_each_form(
    backend: httpx.Client, upstream: FakeOpenAI
) -> None:
    upstream.script(*[{"status": 400, "error_message": "no such model"}] * 8)
    thread_id = backend.post(f"{LG}/threads", json={}).json()["thread_id"]
    waited = backend.post(f"{LG}/threads/{thread_id}/runs/wait", json=lg_run("Q"))
    assert waited.status_code == 200
    assert waited.json()["__error__"]["error"] == "llm_upstream_error"
    _, events = streamed(
        backend, f"{LG}/threads/{thread_id}/runs/stream", lg_run("Q", stream_mode="values")
    )
    assert events[-1].event == "error" and events[-1].data["error"] == "llm_upstream_error"
    runs = backend.get(f"{LG}/threads/{thread_id}/runs").json()
    assert [r["status"] for r in runs] == ["error", "error"]
    assert backend.get(f"{LG}/threads/{thread_id}").json()["status"] == "idle"


def test_odd_thread_requests_are_refused_and_write_nothing(
    backend: httpx.Client, database_url: str
) -> None:
    """Ids a client chooses go into URLs and headers; fields asking for what this server
    does not do are refused, not ignored."""
    before = event_count(database_url)
    for body, field in [
        ({"thread_id": "线程"}, "thread_id"),
        ({"thread_id": "a b"}, "thread_id"),
        ({"thread_id": "x" * 65}, "thread_id"),
        ({"supersteps": [{"updates": []}]}, "supersteps"),
        ({"ttl": {"ttl": 5}}, "ttl"),
    ]:
        response = backend.post(f"{LG}/threads", json=body)
        assert response.status_code == 422, (body, response.text)
        assert field in [d["field"] for d in response.json()["error"]["details"]]
    created = backend.post(
        f"{LG}/threads/%E7%BA%BF/runs/wait", json=lg_run("x", if_not_exists="create")
    )
    assert created.status_code == 422 and created.json()["error"]["details"][0]["field"] == (
        "thread_id"
    )
    values = backend.post(f"{LG}/threads/search", json={"values": {"messages": []}})
    assert values.status_code == 422
    assert event_count(database_url) == before


def test_concurrent_metadata_merges_are_all_kept(backend: httpx.Client) -> None:
    thread_id = backend.post(f"{LG}/threads", json={"metadata": {"base": 0}}).json()["thread_id"]
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(
                lambda n: (
                    backend.patch(
                        f"{LG}/threads/{thread_id}", json={"metadata": {f"k{n}": n}}
                    ).status_code
                ),
                range(16),
            )
        )
    assert answers == [200] * 16
    metadata = backend.get(f"{LG}/threads/{thread_id}").json()["metadata"]
    assert metadata == {"base": 0, **{f"k{n}": n for n in range(16)}}


def test_history_pages_by_either_sdks_before_and_filters_before_its_limit(
    backend: httpx.Client, upstream: FakeOpenAI
) -> None:
    upstream.script({"content": "A1"}, {"content": "A2"})
    thread_id = backend.post("/chat/", json=ask("Q1")).json()["thread_id"]
    backend.post("/chat/", json=ask("Q2", thread_id=thread_id))
    history = f"{LG}/threads/{thread_id}/history"
    first = backend.post(history, json={"limit": 2}).json()
    oldest_shown = first[-1]["checkpoint"]
    expected = backend.post(history, json={"limit": 2, "before": oldest_shown}).json()
    assert [s["values"]["messages"][-1]["content"] for s in expected] == ["A1", "Q1"]
    # The JS SDK names a checkpoint as a config.
    config = {"configurable": {"thread_id": thread_id, **oldest_shown}}
    assert backend.post(history, json={"limit": 2, "before": config}).json() == expected
    asked = backend.post(history, json={"limit": 1, "metadata": {"source": "input"}}).json()
    assert [s["values"]["messages"][-1]["content"] for s in asked] == ["Q2"]


def test_a_run_cancelled_while_queued_joins_to_the_threads_state(
    backend: httpx.Client, upstream: FakeOpenAI
) -> None:
    upstream.script({"chunks": ["slow "] * 40, "chunk_delay": 0.1})
    thread_id = backend.post(f"{LG}/threads", json={}).json()["thread_id"]
    first = backend.post(f"{LG}/threads/{thread_id}/runs", json=lg_run("One")).json()
    queued = backend.post(
        f"{LG}/threads/{thread_id}/runs", json=lg_run("Two", multitask_strategy="enqueue")
    ).json()
    assert queued["status"] == "pending"
    cancel = f"{LG}/threads/{thread_id}/runs/{queued['run_id']}/cancel"
    assert backend.post(cancel).status_code == 202
    joined = backend.get(f"{LG}/threads/{thread_id}/runs/{queued['run_id']}/join").json()
    state = backend.get(f"{LG}/threads/{thread_id}/state").json()
    assert joined == state["values"] and joined["messages"][0]["content"] == "One"
    backend.get(f"{LG}/threads/{thread_id}/runs/{first['run_id']}/join")
    wait_idle(backend, thread_id)
