"""Joining and resuming a run's stream over real processes: two `main_backend` processes
on one database (a SQLite file, or Postgres), one `llm_agent`, the fake upstream.

What only separate processes show: a replica serves a run it does not drive from the
database alone (no memory shared with the driving one), on both engines; and the
progress writes counted in the database, from every process, per turn.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from typing import Any

import httpx
import pytest

from main_backend.conversation.ids import terminal_event_id
from main_backend.conversation.progress import SAVE_SECONDS
from main_backend.events.types import RUN_COMPLETED
from tests.e2e.conftest import (
    HTTP_TIMEOUT,
    Backends,
    FakeUpstream,
    ask,
    messages_of,
    poll,
    read_log,
)
from tests.support import databases
from tests.support.servers import ServiceProcess
from tests.support.sse import (
    TERMINAL_EVENTS,
    Event,
    delta_text,
    iter_events,
    parse_sse,
    read_events,
    run_stream_path,
)

pytestmark = pytest.mark.e2e

# Joined streams read the database every 50 ms, so a run of two seconds spans many reads.
# Leases of 10 s (the e2e default is 1 s, for the crash tests): a backend starved of CPU
# for a second on a busy machine must not have its run taken over and generated again,
# which these tests do not look at.
FAST = {"STREAM_POLL_SECONDS": "0.05", "RUN_LEASE_SECONDS": "10"}
# How many deltas the first client reads before it drops its /chat/stream.
DROP_AFTER = 3


def slow_answer(upstream: FakeUpstream, pieces: int = 40, delay: float = 0.05) -> str:
    """Script an answer of `pieces` pieces `delay` apart; returns its text."""
    chunks = [f"w{i} " for i in range(pieces)]
    upstream.script({"chunks": chunks, "chunk_delay": delay})
    return "".join(chunks)


def stored_answer(
    client: httpx.Client, backend: ServiceProcess, thread_id: str, run_id: str
) -> str:
    """The run's answer as the API stores it (`GET /threads/{id}/messages`)."""
    [answer] = [m for m in messages_of(client, backend, thread_id) if m["run_id"] == run_id]
    content: str = answer["content"]
    return content


def resume(
    client: httpx.Client, backend: ServiceProcess, path: str, last_event_id: str, most: int
) -> list[Event]:
    """Resume a run's stream after `last_event_id`, read `most` events, drop it."""
    headers = {"Last-Event-ID": last_event_id}
    with client.stream("GET", backend.url + path, headers=headers) as response:
        assert response.status_code == 200, response.read()
        events = read_events(response.iter_lines(), most=most)
    assert events, f"the stream after {last_event_id} closed without an event"
    return events


def offsets(events: list[Event]) -> list[int]:
    """The answer offsets the deltas' ids name (`<attempt>-<offset>`, attempt 1)."""
    ids = [str(e.id) for e in events if e.event == "delta"]
    assert all(i.startswith("1-") for i in ids), ids
    return [int(i.removeprefix("1-")) for i in ids]


# 1 ------------------------------------------------------------------------------------


def test_a_dropped_stream_resumes_on_the_other_replica_again_and_again(
    backends: Backends, upstream: FakeUpstream
) -> None:
    replicas = (backends.start(**FAST), backends.start(**FAST))
    answer = slow_answer(upstream)
    with httpx.Client(timeout=HTTP_TIMEOUT) as client:
        # The replica driving the run relays it from memory: dropped after 3 deltas…
        with client.stream("POST", replicas[0].url + "/chat/stream", json=ask("Go on")) as live:
            assert live.status_code == 200, live.read()
            seen = read_events(live.iter_lines(), most=1 + DROP_AFTER)
        assert [e.event for e in seen] == ["run.started"] + ["delta"] * DROP_AFTER
        started = seen[0].data
        path = run_stream_path(started["thread_id"], started["run_id"])
        # …then resumed on the other replica, dropped after one event, resumed on the
        # first, and so on until the terminal event. Each connection gets at least one
        # event, so there are at least two resumes (the rest of the answer, then the end),
        # one on each replica, however fast the run goes; a live run makes many more.
        served_by: list[int] = []
        while seen[-1].event not in TERMINAL_EVENTS:
            replica = (len(served_by) + 1) % 2
            seen += resume(client, replicas[replica], path, str(seen[-1].id), most=1)
            served_by.append(replica)
        stored = [
            stored_answer(client, replica, started["thread_id"], started["run_id"])
            for replica in replicas
        ]
    print(f"\n{len(served_by)} resumes after the first drop; {len(seen)} events")
    assert len(served_by) >= 2 and set(served_by) == {0, 1}
    names = [e.event for e in seen]
    assert names == ["run.started"] + ["delta"] * (len(seen) - 2) + ["run.completed"]
    ids = [e.id for e in seen]
    assert len(ids) == len(set(ids)), f"an event was sent twice: {ids}"
    # Nothing missing, nothing repeated, at every step: each delta ends where its id
    # says, and starts where the previous one ended.
    text = ""
    for event, offset in zip(seen[1:-1], offsets(seen), strict=True):
        text += event.data["text"]
        assert len(text) == offset and answer.startswith(text), (event, text)
    assert delta_text(seen) == answer == seen[-1].data["message"]["content"]
    assert stored == [answer, answer]


# 2 ------------------------------------------------------------------------------------


def test_a_finished_run_replays_on_the_other_replica_at_its_location(
    backends: Backends, upstream: FakeUpstream
) -> None:
    driver, other = backends.start(**FAST), backends.start(**FAST)
    upstream.script({"chunks": ["Done ", "and ", "dusted."], "chunk_delay": 0.01})
    with httpx.Client(timeout=HTTP_TIMEOUT) as client:
        response = client.post(driver.url + "/chat/stream", json=ask("Finish first"))
        assert response.status_code == 200, response.text
        live = parse_sse(response.text)
        started, ended = live[0], live[-1]
        assert (started.event, ended.event) == ("run.started", "run.completed")
        thread_id, run_id = started.data["thread_id"], started.data["run_id"]
        # run.started names the run; Location is where its stream is joined.
        assert ended.data["message"]["run_id"] == run_id
        location = response.headers["location"]
        assert location == run_stream_path(thread_id, run_id)

        # On the other replica, without Last-Event-ID: the whole run, then the stream
        # closes after its terminal event (read to its end here).
        with client.stream("GET", other.url + location) as joined:
            assert joined.status_code == 200, joined.read()
            assert joined.headers["content-type"].startswith("text/event-stream")
            replay = list(iter_events(joined.iter_lines()))
        assert [(e.event, e.id) for e in replay] == [
            ("run.started", "start"),
            ("delta", "1-16"),
            ("run.completed", "end"),
        ]
        assert replay[0].data["run_id"] == run_id
        assert [m["content"] for m in replay[0].data["messages"]] == ["Finish first"]
        assert replay[-1].data["message"] == ended.data["message"]
        assert delta_text(replay) == delta_text(live) == "Done and dusted."
        assert stored_answer(client, other, thread_id, run_id) == "Done and dusted."

        # After the terminal event there is nothing to send, on either replica.
        for backend in (other, driver):
            after_end = client.get(backend.url + location, headers={"Last-Event-ID": "end"})
            assert after_end.status_code == 200, after_end.text
            assert parse_sse(after_end.text) == []


# 3 ------------------------------------------------------------------------------------


def listen(client: httpx.Client, url: str) -> list[Event]:
    with client.stream("GET", url) as response:
        assert response.status_code == 200, response.read()
        return list(iter_events(response.iter_lines()))


def turn_with_listeners(
    client: httpx.Client, driver: ServiceProcess, other: ServiceProcess, listeners: int
) -> tuple[Event, Event, list[list[Event]]]:
    """One streamed turn on `driver` while `listeners` clients join it on `other`:
    (run.started, the terminal event, each listener's events)."""
    with (
        client.stream("POST", driver.url + "/chat/stream", json=ask("Long answer")) as live,
        ThreadPoolExecutor(max_workers=listeners) as pool,
    ):
        assert live.status_code == 200, live.read()
        events = iter_events(live.iter_lines())
        started = next(events)
        url = other.url + live.headers["location"]
        joined = [pool.submit(listen, client, url) for _ in range(listeners)]
        ended = list(events)[-1]
        return started, ended, [f.result() for f in joined]


def generation_time(database_url: str, started: dict[str, Any]) -> float:
    """How long the answer took to generate, in seconds, as its run.completed event
    records it (`latency_ms`, measured by the LLM agent)."""
    log, _ = read_log(database_url, started["thread_id"])
    [completed] = [e for e in log if e.event_id == terminal_event_id(started["run_id"])]
    assert completed.type == RUN_COMPLETED, completed
    seconds: float = completed.data["latency_ms"] / 1000
    return seconds


def test_progress_writes_follow_the_generation_time_not_the_listeners(
    backends: Backends, upstream: FakeUpstream, database_url: str
) -> None:
    databases.log_writes(database_url, "run_progress", "run_id")
    driver, other = backends.start(**FAST), backends.start(**FAST)
    writes: dict[int, int] = {}
    with httpx.Client(timeout=HTTP_TIMEOUT) as client:
        for listeners in (1, 5):
            answer = slow_answer(upstream, pieces=30)
            started, ended, joined = turn_with_listeners(client, driver, other, listeners)
            assert ended.event == "run.completed"
            assert [delta_text(events) for events in joined] == [answer] * listeners
            run_id = started.data["run_id"]

            # The run's last write empties its progress row, after its terminal event.
            def trimmed(run_id: str = run_id) -> bool:
                sql = "SELECT count(*) FROM run_progress WHERE run_id = :r AND text = ''"
                return databases.count(database_url, sql, r=run_id) == 1

            poll(trimmed, 30, "the ended run's progress row to be emptied")
            times = databases.logged_writes(database_url, run_id)
            generation_seconds = generation_time(database_url, started.data)
            # One write when the generation starts, at most one per SAVE_SECONDS while
            # the deltas come (plus one for the last batch, and one window of slack for
            # the deltas' relay from the agent), one to empty the row after the end.
            bound = generation_seconds / SAVE_SECONDS + 5
            print(
                f"\n{listeners} listener(s): {len(times)} progress writes "
                f"for {generation_seconds:.2f} s of generation (bound {bound:.1f})"
            )
            assert 3 <= len(times) <= bound, times
            # The saves in between come at least SAVE_SECONDS apart (each waits that
            # long after the previous one committed; 10 ms for the timers' granularity).
            saves = times[1:-1]
            gaps = [later - earlier for earlier, later in pairwise(saves)]
            assert all(gap >= SAVE_SECONDS - 0.01 for gap in gaps), gaps
            writes[listeners] = len(times)
    # The listeners only read: five of them polled the row about 150 times in all, and
    # the writes stayed within the same bound as with one.
    print(f"progress writes per turn by listeners: {writes}")


def test_the_write_log_counts_each_insert_and_update(database_url: str) -> None:
    """The instrument itself: one entry per row written, none for a read."""
    databases.log_writes(database_url, "run_progress", "run_id")
    insert = (
        "INSERT INTO run_progress (run_id, thread_id, attempt, text, updated_at) "
        "VALUES (:r, 't', 1, '', CURRENT_TIMESTAMP)"
    )
    for run_id in ("a", "b"):
        databases.execute(database_url, insert, r=run_id)
    databases.execute(database_url, "UPDATE run_progress SET text = 'x' WHERE run_id = 'a'")
    databases.execute(database_url, "UPDATE run_progress SET text = 'y' WHERE run_id = 'a'")
    databases.query(database_url, "SELECT * FROM run_progress")
    assert len(databases.logged_writes(database_url, "a")) == 3
    assert len(databases.logged_writes(database_url, "b")) == 1
