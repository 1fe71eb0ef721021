"""Joining and resuming a run's stream, over real HTTP, on two replicas of one database."""

from __future__ import annotations

from typing import Any

import httpx

from main_backend.app import create_app as create_backend
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.chat.conftest import StartBackend, ask, backend_settings, wait_idle
from tests.support.servers import serve_in_thread
from tests.support.sse import TERMINAL_EVENTS, Event, delta_text, read_events, run_stream_path

# Fast polling, so a run of a second or two spans many reads (and many reconnects).
FAST = {"stream_poll_seconds": 0.05}


def slow_answer(upstream: FakeOpenAI, pieces: int = 30, delay: float = 0.05) -> str:
    chunks = [f"w{i} " for i in range(pieces)]
    upstream.script({"chunks": chunks, "chunk_delay": delay})
    return "".join(chunks)


def join(backend: httpx.Client, path: str, last_event_id: str | None = None) -> list[Event]:
    headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
    with backend.stream("GET", path, headers=headers) as response:
        assert response.status_code == 200, response.read()
        return read_events(response.iter_lines())


def stored_answer(backend: httpx.Client, thread_id: str) -> str:
    content: str = backend.get(f"/threads/{thread_id}/messages").json()["messages"][-1]["content"]
    return content


def test_a_running_run_is_joined_from_the_other_replica(
    start_backend: StartBackend, upstream: FakeOpenAI
) -> None:
    driver, other = start_backend(**FAST), start_backend(**FAST)
    answer = slow_answer(upstream)
    with driver.stream("POST", "/chat/stream", json=ask("Long answer please")) as live:
        lines = live.iter_lines()
        started = read_events(lines, most=1)[0].data
        path = run_stream_path(started["thread_id"], started["run_id"])
        joined = join(other, path)  # follows the run live until its end
        relayed = read_events(lines)
    assert (joined[0].event, joined[0].id) == ("run.started", "start")
    assert joined[0].data["run_id"] == started["run_id"]
    assert [m["content"] for m in joined[0].data["messages"]] == ["Long answer please"]
    assert joined[-1].event == "run.completed" and joined[-1].id == "end"
    assert delta_text(joined) == answer == joined[-1].data["message"]["content"]
    assert delta_text(relayed) == answer
    assert stored_answer(other, started["thread_id"]) == answer
    # Polled, the joined stream came in fewer, bigger deltas than the live one: ids
    # still name offsets into the same answer.
    for event in joined[1:-1]:
        attempt, offset = event.id.split("-") if event.id else ("", "")
        assert attempt == "1" and answer[: int(offset)].endswith(event.data["text"])


def test_a_dropped_stream_resumes_on_the_other_replica_without_gaps_or_repeats(
    start_backend: StartBackend, upstream: FakeOpenAI
) -> None:
    replicas = [start_backend(**FAST), start_backend(**FAST)]
    answer = slow_answer(upstream)
    # Dropped after 3 events (run.started and 2 deltas) on the replica driving the run…
    with replicas[0].stream("POST", "/chat/stream", json=ask("Long answer please")) as live:
        seen = read_events(live.iter_lines(), most=3)
    started = seen[0].data
    path = run_stream_path(started["thread_id"], started["run_id"])
    # …then resumed, dropped again after two events, on one replica and the other.
    connections = 1
    while seen[-1].event not in TERMINAL_EVENTS:
        backend = replicas[connections % 2]
        with backend.stream("GET", path, headers={"Last-Event-ID": str(seen[-1].id)}) as resumed:
            seen += read_events(resumed.iter_lines(), most=2)
        connections += 1
    assert connections > 3
    names = [e.event for e in seen]
    assert names[0] == "run.started" and names.count("run.started") == 1
    assert names.count("run.completed") == 1 and "run.restarted" not in names
    assert delta_text(seen) == answer == stored_answer(replicas[1], started["thread_id"])
    ids = [e.id for e in seen]
    assert len(ids) == len(set(ids)), "an event was sent twice"


def test_a_finished_run_is_replayed_and_the_stream_closes(
    backend: httpx.Client, upstream: FakeOpenAI
) -> None:
    upstream.script({"chunks": ["Done ", "and ", "dusted."]})
    answered = backend.post("/chat/", json=ask("Finish first")).json()
    path = run_stream_path(answered["thread_id"], answered["run_id"])
    events = join(backend, path)
    assert [(e.event, e.id) for e in events] == [
        ("run.started", "start"),
        ("delta", "1-16"),
        ("run.completed", "end"),
    ]
    assert events[0].data["version"] == 3
    assert [m["content"] for m in events[0].data["messages"]] == ["Finish first"]
    assert delta_text(events) == "Done and dusted." == answered["message"]["content"]
    assert events[-1].data["message"] == answered["message"]
    # After an id: only what follows it; after the terminal event: nothing.
    assert [(e.event, e.data) for e in join(backend, path, "1-5")] == [
        ("delta", {"text": "and dusted."}),
        ("run.completed", events[-1].data),
    ]
    assert [e.event for e in join(backend, path, "start")] == ["delta", "run.completed"]
    assert join(backend, path, "1-16") == [events[-1]]
    assert join(backend, path, "end") == []


def test_a_cancelled_run_replays_its_partial_answer(
    start_backend: StartBackend, upstream: FakeOpenAI
) -> None:
    driver, other = start_backend(**FAST), start_backend(**FAST)
    slow_answer(upstream, pieces=40, delay=0.1)
    with driver.stream("POST", "/chat/stream", json=ask("Long answer please")) as live:
        started = read_events(live.iter_lines(), most=3)[0].data
        assert other.post(f"/threads/{started['thread_id']}/cancel").status_code == 202
    wait_idle(other, started["thread_id"])
    events = join(other, run_stream_path(started["thread_id"], started["run_id"]))
    assert events[-1].event == "run.cancelled"
    assert delta_text(events) == events[-1].data["message"]["content"]
    assert delta_text(events) == stored_answer(other, started["thread_id"]) != ""


def error_of(response: httpx.Response) -> tuple[int, str, list[Any]]:
    error = response.json()["error"]
    return response.status_code, error["code"], [d.get("field") for d in error["details"] or []]


def test_unknown_runs_and_bad_ids_are_clear_errors(backend: httpx.Client) -> None:
    answered = backend.post("/chat/", json=ask("hello")).json()
    thread_id, run_id = answered["thread_id"], answered["run_id"]
    other_thread = backend.post("/chat/", json=ask("elsewhere")).json()["thread_id"]
    unknown = "6f1c1d52-6a34-4c5e-9b8e-3f0f4f1f2a10"
    for path in (run_stream_path(thread_id, unknown), run_stream_path(other_thread, run_id)):
        response = backend.get(path)
        assert (response.status_code, response.json()["error"]["code"]) == (404, "run_not_found")
    # A run of a thread that is not there (or not the user's) is not found alike, as on
    # GET /threads/{id}/runs/{run_id}.
    missing = backend.get(run_stream_path(unknown, run_id))
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "run_not_found")
    for bad in ("7", "0-3", "1-", "-1-2", "1-2-3", "x", "1-01", "99999999999-1"):
        response = backend.get(run_stream_path(thread_id, run_id), headers={"Last-Event-ID": bad})
        assert error_of(response) == (422, "invalid_request", ["Last-Event-ID"]), bad


def test_a_run_generated_again_after_a_hand_over_says_so_before_its_new_answer(
    start_backend: StartBackend,
    upstream: FakeOpenAI,
    database_url: str,
    agent_url: str,
) -> None:
    settings = backend_settings(database_url, agent_url, shutdown_grace_seconds=0, **FAST)
    first_answer = slow_answer(upstream, pieces=40, delay=0.1)
    with (
        serve_in_thread(create_backend(settings)) as url,
        httpx.Client(base_url=url, timeout=30) as first,
        first.stream("POST", "/chat/stream", json=ask("Long answer please")) as live,
    ):
        seen = read_events(live.iter_lines(), most=2)
    # The first replica stopped mid-answer and handed the run over; another generates it
    # again, from the start.
    assert seen[-1].id == "1-3"
    upstream.script({"chunks": ["The ", "resumed ", "answer."]})
    survivor = start_backend(**FAST)
    started = seen[0].data
    resumed = join(survivor, run_stream_path(started["thread_id"], started["run_id"]), seen[-1].id)
    names = [e.event for e in resumed]
    assert names.count("run.restarted") == 1 and names[-1] == "run.completed"
    restart = names.index("run.restarted")
    assert (resumed[restart].data, resumed[restart].id) == ({"attempt": 2}, "2-0")
    # Before it, at most the first attempt's text saved after the client's last id…
    before, after = resumed[:restart], resumed[restart + 1 :]
    assert all(e.event == "delta" and str(e.id).startswith("1-") for e in before)
    assert first_answer.startswith("w0 " + delta_text(before))
    # …after it, the new answer from its start, which is the one stored.
    stored = stored_answer(survivor, started["thread_id"])
    assert delta_text(after) == "The resumed answer." == stored
    # A client joining afresh sees one answer: the one that was stored.
    fresh = join(survivor, run_stream_path(started["thread_id"], started["run_id"]))
    assert [e.event for e in fresh] == ["run.started", "delta", "run.completed"]
    assert fresh[1].id == "2-19" and delta_text(fresh) == "The resumed answer."
