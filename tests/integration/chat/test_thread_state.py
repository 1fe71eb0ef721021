"""A thread's LangGraph state: the thread id is the LangGraph thread, and each run on it
starts from a clean state on top of the previous run's checkpoint."""

from __future__ import annotations

import httpx

from tests.fakes.openai_server import FakeOpenAI
from tests.integration.chat.conftest import ask
from tests.support.checkpoints import checkpoint_runs, graph_history, graph_state
from tests.support.sse import parse_sse


def test_a_new_run_starts_from_a_clean_state(
    backend: httpx.Client, upstream: FakeOpenAI, database_url: str
) -> None:
    upstream.script({"content": "First answer."})
    first = backend.post("/chat/", json=ask("First question")).json()
    thread_id = first["thread_id"]
    state = graph_state(database_url, thread_id)
    assert state.values["run_id"] == first["run_id"] and state.values["recorded"]
    assert state.values["outcome"]["content"] == "First answer."

    # Look while the second run generates: a run saves its one checkpoint at its exit
    # (durability "exit"), so the thread still holds only the first run's.
    upstream.script({"chunks": ["Second ", "answer."], "chunk_delay": 1.5})
    with backend.stream(
        "POST", "/chat/stream", json=ask("Second question", thread_id=thread_id)
    ) as stream:
        lines = stream.iter_lines()
        seen = []
        for line in lines:
            seen.append(line)
            if line == "event: delta":
                break
        during = checkpoint_runs(database_url, thread_id)
        seen.extend(lines)
    events = parse_sse("\n".join(seen))
    second = events[0].data["run_id"]
    assert second != first["run_id"]
    assert events[-1].event == "run.completed"
    assert during == [(thread_id, first["run_id"])]

    # Once it ended, its checkpoint is the thread's, and nothing of the first run's state
    # reached it: every field is the second run's own.
    after = graph_state(database_url, thread_id)
    assert after.next == ()
    assert after.values["run_id"] == second and after.values["recorded"]
    assert after.values["outcome"]["content"] == "Second answer."
    assert after.values["prompt_version"] == 6  # the second question's version
    # The message the run answers: its question.
    assert after.values["parent_id"] == events[0].data["messages"][-1]["id"]
    assert after.values["request_id"] != state.values["request_id"]
    history = graph_history(database_url, thread_id, second)
    assert history and all(s.metadata and s.metadata["run_id"] == second for s in history)
