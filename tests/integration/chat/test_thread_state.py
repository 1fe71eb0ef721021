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

    # Look while the second run generates: all its checkpoints so far are stored.
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
        during = graph_state(database_url, thread_id)
        second = during.values["run_id"]
        history = graph_history(database_url, thread_id, second)
        before = checkpoint_runs(database_url, thread_id)
        seen.extend(lines)
    events = parse_sse("\n".join(seen))
    assert events[0].data["run_id"] == second != first["run_id"]
    assert events[-1].event == "run.completed"

    # The run went on top of the first run's last checkpoint, ...
    assert before[0] == (thread_id, first["run_id"])
    assert {run for _, run in before[1:]} == {second}
    # ... and nothing of the first run's state reached it: the START step saw `recorded`
    # unset and routed to record_input, and the run's outcome is unknown until call_llm.
    assert during.next == ("call_llm",)
    assert during.values["outcome"] is None
    assert during.values["prompt_version"] == 6  # the second question's version
    # The message the run answers: its question.
    assert during.values["parent_id"] == events[0].data["messages"][-1]["id"]
    start = [s for s in history if s.metadata and s.metadata["source"] == "loop"][-1]
    assert start.next == ("record_input",)
    request_id = start.values["request_id"]
    assert isinstance(request_id, str) and request_id
    assert start.values == {
        "thread_id": thread_id,
        "run_id": second,
        "request_id": request_id,
        "user": "local",
        "recorded": None,
        "model": None,
        "params": None,
        "prompt_version": None,
        "parent_id": None,
        "outcome": None,
    }
