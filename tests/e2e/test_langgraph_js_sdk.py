"""The official LangGraph JS SDK (`@langchain/langgraph-sdk`, pinned in tests/js/package.json)
drives Stubichat's `/langgraph` API unchanged: a real `main_backend` and `llm_agent` process,
the fake OpenAI upstream, and `node tests/js/langgraph_sdk_check.mjs <url>`.

The script does the checks that need the SDK's own view of the wire (the parts its
`runs.stream` / `runs.joinStream` yield, what `runs.cancel` resolves to) and prints a JSON
summary with every HTTP exchange it made; this test checks that summary against what the
upstream was asked and what the native API stores for the same threads.

Node and the SDK come from `npm ci` in tests/js (scripts/test runs it). Without them the
test skips, except under CI=true, where it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import HTTP_TIMEOUT, Backends, FakeUpstream, messages_of
from tests.support.servers import REPO_ROOT, ServiceProcess

pytestmark = pytest.mark.e2e

JS_DIR = REPO_ROOT / "tests" / "js"
SCRIPT = JS_DIR / "langgraph_sdk_check.mjs"
SDK_PACKAGE = JS_DIR / "node_modules" / "@langchain" / "langgraph-sdk" / "package.json"
# Leases of 10 s: a backend starved of CPU for a second must not have a run taken over
# and generated again (one upstream request per run is asserted below).
FAST = {"STREAM_POLL_SECONDS": "0.05", "RUN_LEASE_SECONDS": "10"}
SHORT_ANSWER = ["Hi ", "from ", "Stubichat's ", "LangGraph ", "API."]
# Long enough (3 s) that the background run is still running when its join is dropped
# after three chunks and rejoined.
SLOW_ANSWER = [f"w{i} " for i in range(60)]
# Cut short by a cancel after the first chunk.
LONG_ANSWER = [f"long{i} " for i in range(400)]
QUESTIONS = [
    "Hello from the JS SDK",
    "Tell me a long story",
    "Cancel me without waiting",
    "Cancel me and wait",
    "Keep going after a network fault",
]


@pytest.fixture(scope="module")
def node() -> str:
    """The `node` executable, once the SDK is installed; or skip (fail under CI=true)."""
    node = shutil.which("node")
    if node is None:
        reason = "node is not installed"
    elif not SDK_PACKAGE.exists():
        reason = f"the JS SDK is not installed: run `npm ci` in {JS_DIR.relative_to(REPO_ROOT)}"
    else:
        return node
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (mandatory under CI=true)", pytrace=False)
    pytest.skip(reason)


def run_script(node: str, backend: ServiceProcess) -> dict[str, Any]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("LANGGRAPH_", "LANGSMITH_", "LANGCHAIN_"))
    }
    try:
        done = subprocess.run(
            [node, str(SCRIPT), backend.url],
            cwd=JS_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=100,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the JS SDK script hung:\n{exc.stdout!r}\n{exc.stderr!r}")
    try:
        summary: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        pytest.fail(f"no JSON summary (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
    print(json.dumps(summary, indent=1))  # shown when an assertion below fails
    failures = json.dumps(summary["failures"], indent=2)
    assert done.returncode == 0 and summary["ok"], f"{failures}\n{done.stderr}"
    return summary


def requests_of(summary: dict[str, Any], part: str, method: str, suffix: str) -> list[Any]:
    return [
        r
        for r in summary["requests"]
        if r["part"] == part and r["method"] == method and r["path"].endswith(suffix)
    ]


def prompts(upstream: FakeUpstream) -> list[str]:
    """The last user message of each chat-completions request the upstream got."""
    asked = []
    for request in upstream.chat_requests():
        users = [m for m in request["body"]["messages"] if m["role"] == "user"]
        asked.append(users[-1]["content"])
    return asked


def assert_same_thread(
    client: httpx.Client,
    backend: ServiceProcess,
    part: dict[str, Any],
    question: str,
    state: bool = True,
) -> None:
    """The native API shows the thread the SDK used, with the same message ids."""
    native = messages_of(client, backend, part["thread_id"])
    assert [(m["role"], m["content"]) for m in native] == [
        ("user", question),
        ("assistant", part["answer"]["content"]),
    ]
    if state:
        assert [m["id"] for m in native] == [m["id"] for m in part["state_messages"]]
    assert native[1]["id"] == part["answer"]["id"]
    assert native[1]["run_id"] == part["run_id"]


@pytest.mark.parametrize("engine_name", ["sqlite"])
def test_the_langgraph_js_sdk_streams_joins_and_cancels(
    node: str, backends: Backends, upstream: FakeUpstream
) -> None:
    backend = backends.start(**FAST)
    upstream.script(
        {"chunks": SHORT_ANSWER, "chunk_delay": 0.01},
        {"chunks": SLOW_ANSWER, "chunk_delay": 0.05},
        {"chunks": LONG_ANSWER, "chunk_delay": 0.05},
        {"chunks": LONG_ANSWER, "chunk_delay": 0.05},
        {"chunks": SLOW_ANSWER, "chunk_delay": 0.05},
    )
    summary = run_script(node, backend)
    stream, background, cancel = summary["stream"], summary["background"], summary["cancel"]
    reconnect = summary["reconnect"]

    # (a) runs.stream: the chunks the SDK yielded are the upstream's answer.
    assert stream["text"] == "".join(SHORT_ANSWER)
    assert stream["events"][0] == "metadata"
    assert stream["events"].count("messages") == len(SHORT_ANSWER)
    [posted] = requests_of(summary, "stream", "POST", "/runs/stream")
    run_path = f"/threads/{stream['thread_id']}/runs/{stream['run_id']}"
    assert posted["status"] == 200
    assert posted["content_type"].startswith("text/event-stream")
    assert posted["content_location"] == run_path
    assert posted["location"] == run_path + "/stream?stream_mode=messages-tuple&stream_mode=values"

    # (b) joinStream from the start (-1), dropped while the run ran, rejoined after the
    # last event id seen: the whole slow answer, once.
    assert background["status_while_joined"] == "running"
    assert background["first_join"]["events"].count("messages") == 3
    assert background["first_join"]["text"] + background["rejoin"]["text"] == background["text"]
    assert background["text"] == "".join(SLOW_ANSWER)
    joins = requests_of(summary, "background", "GET", "/stream")
    assert [j["last_event_id"] for j in joins] == ["-1", background["rejoin"]["last_event_id"]]
    for join in joins:
        assert join["status"] == 200, join
        assert "stream_mode=values&stream_mode=messages-tuple" in join["query"], join

    # (c) runs.cancel: 202 without waiting, 204 once the run ended when waiting.
    cancels = requests_of(summary, "cancel", "POST", "/cancel")
    assert [(c["query"], c["status"]) for c in cancels] == [
        ("?wait=0&action=interrupt", 202),
        ("?wait=1&action=interrupt", 204),
    ]

    # (d) runs.stream cut in its fourth messages event: the SDK's own reconnect (a GET of
    # the Location with the last id it saw) yields the rest of the modes asked for, once.
    assert reconnect["text"] == "".join(SLOW_ANSWER)
    [cut] = requests_of(summary, "reconnect", "POST", "/runs/stream")
    assert cut["cut_in_event"] == 4
    [resumed] = requests_of(summary, "reconnect", "GET", "/stream")
    assert "/langgraph" + cut["location"] == resumed["path"] + resumed["query"]
    assert resumed["last_event_id"] == reconnect["ids"][3]
    assert resumed["status"] == 200

    # The upstream was asked each question once, in order (no run was generated twice).
    assert prompts(upstream) == QUESTIONS
    with httpx.Client(timeout=HTTP_TIMEOUT) as client:
        assert_same_thread(client, backend, stream, QUESTIONS[0])
        assert_same_thread(client, backend, background, QUESTIONS[1])
        assert_same_thread(client, backend, reconnect, QUESTIONS[4], state=False)
        native = messages_of(client, backend, cancel["thread_id"])
    asked = [m["content"] for m in native if m["role"] == "user"]
    assert asked == QUESTIONS[2:4]
