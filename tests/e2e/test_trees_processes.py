"""Threads as trees over real processes: the fake OpenAI upstream, `llm_agent` and
`main_backend` each run as their own uvicorn process, on a real database (both engines).

What only real processes show: edit, regenerate and checkout through the real HTTP
routes and the real OpenAI SDK path, with the prompts the upstream really received
(an edited branch never sends the old one, a regeneration sends exactly the prompt the
first answer had); the tree as every listing shows it (the active path, `parent_id`,
`sibling_ids`); and a regeneration started on one replica, joined on the other, whose
answer both replicas then list as the active leaf. (A backend killed mid-edit or
mid-regeneration: test_crash_boundaries.py.)
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from main_backend.events.types import MESSAGE_ADDED, RUN_STARTED
from tests.e2e.conftest import (
    HTTP_TIMEOUT,
    Backends,
    FakeUpstream,
    ask,
    chat,
    messages_of,
    read_log,
)
from tests.e2e.test_chat_processes import prompt_of
from tests.e2e.test_run_stream_processes import FAST, listen, slow_answer
from tests.support.servers import ServiceProcess
from tests.support.sse import delta_text, iter_events, parse_sse, run_stream_path

pytestmark = pytest.mark.e2e

ADMIN_TOKEN = "trees-e2e-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def post(
    client: httpx.Client,
    backend: ServiceProcess,
    path: str,
    body: dict[str, Any],
    status: int = 200,
) -> httpx.Response:
    response = client.post(backend.url + path, json=body)
    assert response.status_code == status, response.text
    return response


def edit(
    client: httpx.Client, backend: ServiceProcess, thread_id: str, message_id: str, content: str
) -> dict[str, Any]:
    path = f"/threads/{thread_id}/messages/{message_id}/edit"
    answer: dict[str, Any] = post(client, backend, path, {"content": content}).json()
    return answer


def regenerate(
    client: httpx.Client, backend: ServiceProcess, thread_id: str, message_id: str
) -> dict[str, Any]:
    path = f"/threads/{thread_id}/messages/{message_id}/regenerate"
    answer: dict[str, Any] = post(client, backend, path, {}).json()
    return answer


def checkout(
    client: httpx.Client, backend: ServiceProcess, thread_id: str, message_id: str
) -> list[dict[str, Any]]:
    """The active path `POST /threads/{id}/checkout` answers; the listing says the same."""
    path = f"/threads/{thread_id}/checkout"
    listed: list[dict[str, Any]] = post(client, backend, path, {"message_id": message_id}).json()[
        "messages"
    ]
    assert listed == messages_of(client, backend, thread_id)
    return listed


def contents(path: list[dict[str, Any]]) -> list[str]:
    return [m["content"] for m in path]


def check_path(path: list[dict[str, Any]]) -> None:
    """A listing is one path: each message under the one before, each among its siblings."""
    parents = [m["parent_id"] for m in path]
    assert parents == [None] + [m["id"] for m in path[:-1]], path
    assert all(m["id"] in m["sibling_ids"] for m in path), path
    roles = [m["role"] for m in path]
    assert roles == ["user", "assistant"] * (len(path) // 2), roles


def thread_version(client: httpx.Client, backend: ServiceProcess, thread_id: str) -> int:
    response = client.get(f"{backend.url}/threads/{thread_id}")
    assert response.status_code == 200, response.text
    version: int = response.json()["version"]
    return version


def assert_projections_verified(client: httpx.Client, backend: ServiceProcess) -> None:
    response = client.get(backend.url + "/admin/projections/verify", headers=ADMIN)
    assert response.status_code == 200, response.text
    assert response.json() == {"ok": True, "mismatches": []}


# 1 ------------------------------------------------------------------------------------


def test_edit_regenerate_and_checkout_build_one_tree_and_the_prompts_follow_it(
    backends: Backends, upstream: FakeUpstream, database_url: str
) -> None:
    upstream.script(
        {"content": "A1"},
        {"content": "A2"},
        {"content": "A1 edited"},
        {"content": "A3"},
        {"content": "A3 again"},
        {"chunks": ["A3 ", "once ", "more"]},
        {"content": "A4"},
        {"content": "A2 edited"},
        {"content": "A1 edited, again"},
    )
    old_branch = {"Q1?", "A1", "Q2?", "A2"}
    backend = backends.start(ADMIN_TOKEN=ADMIN_TOKEN)
    with httpx.Client(timeout=HTTP_TIMEOUT) as client:
        # A conversation of two turns: one branch.
        thread_id = chat(client, backend, ask("Q1?"))["thread_id"]
        chat(client, backend, ask("Q2?", thread_id=thread_id))
        q1, a1, q2, a2 = original = messages_of(client, backend, thread_id)
        check_path(original)
        assert contents(original) == ["Q1?", "A1", "Q2?", "A2"]
        assert [m["sibling_ids"] for m in original] == [[m["id"]] for m in original]

        # Edit the first question: a second root, answered from itself alone.
        edited = edit(client, backend, thread_id, q1["id"], "Q1 edited?")
        assert edited["message"]["content"] == "A1 edited"
        q1e, a1e = path = messages_of(client, backend, thread_id)
        check_path(path)
        assert contents(path) == ["Q1 edited?", "A1 edited"]
        assert (q1e["parent_id"], q1e["sibling_ids"]) == (None, [q1["id"], q1e["id"]])
        assert a1e["id"] == edited["message"]["id"] and a1e["run_id"] == edited["run_id"]
        assert edited["message"]["parent_id"] == q1e["id"]

        # A turn on the edited branch, then its answer regenerated twice (the second
        # time streamed, and from the then active answer).
        third = chat(client, backend, ask("Q3?", thread_id=thread_id))
        again = regenerate(client, backend, thread_id, third["message"]["id"])
        assert again["message"]["content"] == "A3 again"
        path = messages_of(client, backend, thread_id)
        check_path(path)
        assert contents(path) == ["Q1 edited?", "A1 edited", "Q3?", "A3 again"]
        q3, a3 = path[2], third["message"]
        assert path[3]["sibling_ids"] == [a3["id"], again["message"]["id"]]

        response = post(
            client,
            backend,
            f"/threads/{thread_id}/messages/{again['message']['id']}/regenerate",
            {"stream": True},
        )
        streamed = parse_sse(response.text)
        names = [e.event for e in streamed]
        assert names == ["run.started", "delta", "delta", "delta", "run.completed"], names
        assert streamed[0].data["messages"] == []  # a regeneration adds no input
        once_more = streamed[-1].data["message"]
        assert once_more["content"] == delta_text(streamed) == "A3 once more"
        assert once_more["parent_id"] == q3["id"]
        path = messages_of(client, backend, thread_id)
        check_path(path)
        assert path[3]["id"] == once_more["id"]
        regenerated = [a3["id"], again["message"]["id"], once_more["id"]]
        assert path[3]["sibling_ids"] == regenerated

        # Flip between the versions.
        version = thread_version(client, backend, thread_id)
        assert checkout(client, backend, thread_id, q1["id"]) == [
            {**q1, "sibling_ids": [q1["id"], q1e["id"]]},
            a1,
            q2,
            a2,
        ]
        assert thread_version(client, backend, thread_id) == version + 1
        assert checkout(client, backend, thread_id, q1["id"]) == checkout(
            client, backend, thread_id, a2["id"]
        )
        assert thread_version(client, backend, thread_id) == version + 1  # already active
        path = checkout(client, backend, thread_id, a3["id"])
        check_path(path)
        assert contents(path) == ["Q1 edited?", "A1 edited", "Q3?", "A3"]
        assert path[3]["sibling_ids"] == regenerated
        checked_out_at = thread_version(client, backend, thread_id)

        # A turn on the branch checked out: its prompt is that branch's, nothing else.
        fourth = chat(client, backend, ask("Q4?", thread_id=thread_id))
        assert fourth["message"]["content"] == "A4"
        # The newest leaf under the edited question is that turn's answer…
        path = checkout(client, backend, thread_id, q1e["id"])
        check_path(path)
        assert contents(path) == ["Q1 edited?", "A1 edited", "Q3?", "A3", "Q4?", "A4"]
        # …and each regenerated answer is a leaf of its own.
        path = checkout(client, backend, thread_id, again["message"]["id"])
        check_path(path)
        assert contents(path) == ["Q1 edited?", "A1 edited", "Q3?", "A3 again"]
        assert path[3]["sibling_ids"] == regenerated

        # Back on the first branch, its second question edited: the edit keeps what it
        # follows.
        checkout(client, backend, thread_id, a2["id"])
        edited_q2 = edit(client, backend, thread_id, q2["id"], "Q2 edited?")
        path = messages_of(client, backend, thread_id)
        check_path(path)
        assert contents(path) == ["Q1?", "A1", "Q2 edited?", "A2 edited"]
        q2e = path[2]
        assert q2e["parent_id"] == a1["id"]
        assert [m["sibling_ids"] for m in path] == [
            [q1["id"], q1e["id"]],
            [a1["id"]],
            [q2["id"], q2e["id"]],
            [edited_q2["message"]["id"]],
        ]

        # An answer off the active path regenerated: its branch becomes the active one.
        off_path = regenerate(client, backend, thread_id, a1e["id"])
        path = messages_of(client, backend, thread_id)
        check_path(path)
        assert contents(path) == ["Q1 edited?", "A1 edited, again"]
        assert path[1]["sibling_ids"] == [a1e["id"], off_path["message"]["id"]]

        # A fork copies the path that was active at its version: the one checked out then.
        fork = post(
            client, backend, f"/threads/{thread_id}/fork", {"at_version": checked_out_at}, 201
        )
        forked = messages_of(client, backend, fork.json()["id"])
        check_path(forked)
        assert contents(forked) == ["Q1 edited?", "A1 edited", "Q3?", "A3"]

        # The admin replay at each run's prompt version shows the prompt that run sent.
        events, thread = read_log(database_url, thread_id)
        replayed = []
        for started in [e for e in events if e.type == RUN_STARTED]:
            replay = client.get(
                f"{backend.url}/admin/threads/{thread_id}/replay",
                params={"at_version": started.data["prompt_version"]},
                headers=ADMIN,
            )
            assert replay.status_code == 200, replay.text
            replayed.append(
                [(m["role"], m["content"]) for m in replay.json()["prompt"]["messages"]]
            )

        assert_projections_verified(client, backend)

    # What the upstream was sent: each branch's own path, and a regeneration the very
    # prompt of the answer it regenerates.
    requests = upstream.chat_requests()
    prompts = [prompt_of(r) for r in requests]
    assert prompts == [
        [("user", "Q1?")],
        [("user", "Q1?"), ("assistant", "A1"), ("user", "Q2?")],
        [("user", "Q1 edited?")],
        [("user", "Q1 edited?"), ("assistant", "A1 edited"), ("user", "Q3?")],
        [("user", "Q1 edited?"), ("assistant", "A1 edited"), ("user", "Q3?")],
        [("user", "Q1 edited?"), ("assistant", "A1 edited"), ("user", "Q3?")],
        [
            ("user", "Q1 edited?"),
            ("assistant", "A1 edited"),
            ("user", "Q3?"),
            ("assistant", "A3"),
            ("user", "Q4?"),
        ],
        [("user", "Q1?"), ("assistant", "A1"), ("user", "Q2 edited?")],
        [("user", "Q1 edited?")],
    ]
    for prompt in prompts[2:-2] + prompts[-1:]:
        assert not old_branch & {content for _, content in prompt}, prompt
    bodies = [[(m["role"], m["content"]) for m in r["body"]["messages"]] for r in requests]
    assert bodies[4] == bodies[3] and bodies[5] == bodies[3]  # system prompt included
    assert replayed == bodies

    # The log: each run's run.started names the message it answers, and the answer
    # hangs under it.
    assert thread is not None and thread.active_run_id is None
    answered = {e.data["run_id"]: e.data["parent_id"] for e in events if e.type == RUN_STARTED}
    answers = {
        e.data["run_id"]: e.data["parent_id"]
        for e in events
        if e.type == MESSAGE_ADDED and e.data["role"] == "assistant"
    }
    assert answers == answered
    assert answered[edited["run_id"]] == q1e["id"]
    assert answered[again["run_id"]] == answered[streamed[0].data["run_id"]] == q3["id"]
    assert answered[fourth["run_id"]] == fourth["message"]["parent_id"] != q3["id"]
    assert answered[edited_q2["run_id"]] == q2e["id"]
    assert answered[off_path["run_id"]] == q1e["id"]


# 2 ------------------------------------------------------------------------------------


def test_a_regeneration_started_on_one_replica_is_joined_and_listed_on_the_other(
    backends: Backends, upstream: FakeUpstream
) -> None:
    one = backends.start(**FAST, ADMIN_TOKEN=ADMIN_TOKEN)
    other = backends.start(**FAST, ADMIN_TOKEN=ADMIN_TOKEN)
    upstream.script({"content": "The first answer."})
    with httpx.Client(timeout=HTTP_TIMEOUT) as client:
        first = chat(client, one, ask("Which answer?"))
        thread_id = first["thread_id"]
        question, answer = messages_of(client, other, thread_id)
        text = slow_answer(upstream, pieces=60)  # three seconds

        # Started in the background on one replica…
        accepted = post(
            client,
            one,
            f"/threads/{thread_id}/messages/{answer['id']}/regenerate",
            {"background": True},
            status=202,
        )
        run_id = accepted.json()["run_id"]
        location = accepted.headers["location"]
        assert location == run_stream_path(thread_id, run_id)
        # …joined on the other, from its start to its end.
        with client.stream("GET", other.url + location) as joined:
            assert joined.status_code == 200, joined.read()
            events = iter_events(joined.iter_lines())
            stream = [next(events)]
            # While it runs, the old answer stays the active leaf, and the thread is busy.
            busy = client.get(f"{other.url}/threads/{thread_id}").json()
            assert busy["status"] == "busy", busy
            assert messages_of(client, other, thread_id) == [question, answer]
            refused = client.post(
                f"{other.url}/threads/{thread_id}/checkout", json={"message_id": question["id"]}
            )
            assert refused.status_code == 409, refused.text
            assert refused.json()["error"]["code"] == "thread_busy"
            stream += events
        assert stream[0].event == "run.started", stream
        assert (stream[0].data["run_id"], stream[0].data["messages"]) == (run_id, [])
        assert stream[-1].event == "run.completed", stream[-1]
        assert delta_text(stream) == text == stream[-1].data["message"]["content"]
        new = stream[-1].data["message"]
        assert (new["parent_id"], new["run_id"]) == (question["id"], run_id)

        # Both replicas list the new answer as the active leaf, beside the old one.
        listings = [messages_of(client, replica, thread_id) for replica in (one, other)]
        assert listings[0] == listings[1]
        assert [m["id"] for m in listings[0]] == [question["id"], new["id"]]
        assert listings[0][1]["sibling_ids"] == [answer["id"], new["id"]]
        versions = {thread_version(client, replica, thread_id) for replica in (one, other)}
        assert versions == {stream[-1].data["version"]}
        assert_projections_verified(client, other)
        # A listener joining after the end replays the same run, on either replica.
        replay = listen(client, one.url + location)
        assert delta_text(replay) == text and replay[-1].data["message"] == new

    prompts = [prompt_of(r) for r in upstream.chat_requests()]
    assert prompts == [[("user", "Which answer?")]] * 2
