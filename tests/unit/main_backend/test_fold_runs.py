"""The pure fold of a thread's run events into its runs."""

from __future__ import annotations

from datetime import timedelta

from main_backend.events.fold import fold_runs
from main_backend.events.types import RUN_CANCELLED, RUN_FAILED, NewEvent
from tests.support.events import message_added, run_completed, run_started, thread_created
from tests.unit.main_backend.test_fold import T0, stored


def cancelled(run_id: str, **data: object) -> NewEvent:
    return NewEvent(RUN_CANCELLED, {"run_id": run_id, "message_id": f"m-{run_id}", **data})


def test_each_run_folds_from_its_start_to_its_end() -> None:
    answer = message_added("Hello!", role="assistant", run_id="r1")
    completed = run_completed("r1", answer.data["message_id"])
    completed.data.update(usage={"total_tokens": 7}, model="gpt-4o-mini-2024")
    runs = fold_runs(
        stored(
            [
                thread_created(),
                message_added("Hi?"),
                run_started("r1", 2),
                answer,
                completed,
                message_added("Again?"),
                run_started("r2", 6),
                NewEvent(
                    RUN_FAILED,
                    {
                        "run_id": "r2",
                        "error": {"code": "llm_timeout", "message": "too slow"},
                        "partial_content": "Hel",
                        "model": "",
                    },
                ),
                run_started("r3", 8),
                cancelled("r3", cancelled_by="interrupt"),
                run_started("r4", 10),
            ]
        )
    )
    r1, r2, r3, r4 = (runs[r] for r in ("r1", "r2", "r3", "r4"))
    assert (r1.status, r1.message_id, r1.usage, r1.error) == (
        "completed",
        answer.data["message_id"],
        {"total_tokens": 7},
        None,
    )
    # The model the agent reports, once the run ended; else the one asked for.
    assert (r1.model, r2.model, r4.model) == ("gpt-4o-mini-2024", "gpt-4o-mini", "gpt-4o-mini")
    assert r1.created_at == r1.started_at == T0 + timedelta(seconds=3)
    assert r1.ended_at == T0 + timedelta(seconds=5)
    assert (r2.status, r2.error, r2.message_id) == (
        "failed",
        {"code": "llm_timeout", "message": "too slow"},
        None,
    )
    assert (r3.status, r3.cancelled_by, r3.message_id) == ("cancelled", "interrupt", "m-r3")
    assert (r4.status, r4.ended_at, r4.cancelled_by) == ("running", None, None)


def test_a_cancel_written_before_cancelled_by_existed_was_the_users() -> None:
    runs = fold_runs(stored([thread_created(), run_started("r1", 1), cancelled("r1")]))
    assert runs["r1"].cancelled_by == "user"


def test_an_append_folds_onto_the_runs_stored_before_it() -> None:
    events = stored([thread_created(), run_started("r1", 1), cancelled("r1")])
    started = fold_runs(events[:2])
    ended = fold_runs(events[2:], started)
    assert list(ended) == ["r1"]
    assert ended["r1"].status == "cancelled"
    assert ended["r1"].created_at == started["r1"].created_at


def test_odd_run_events_are_skipped() -> None:
    runs = fold_runs(
        stored(
            [
                thread_created(),
                NewEvent(RUN_FAILED, {"run_id": "never-started", "error": {}}),
                NewEvent("run.started", {"model": "no run id"}),
                NewEvent("run.completed", {"run_id": 5}),
                NewEvent("run.started", {"run_id": "x" * 65}),
                run_started("r1", 1),
                run_started("r1", 1),
                NewEvent(RUN_FAILED, {"run_id": "r1", "error": "not an object"}),
                cancelled("r1"),
                cancelled("r2", cancelled_by="someone"),
            ]
        )
    )
    assert list(runs) == ["r1"]
    # A failure whose error says nothing gets the defaults the chat routes use; the
    # second end is skipped.
    assert runs["r1"].status == "failed"
    assert runs["r1"].error == {"code": "internal_error", "message": "the run failed"}
    assert runs["r1"].started_at == T0 + timedelta(seconds=6)


def test_ids_longer_than_the_append_allows_are_not_kept() -> None:
    long_id = "x" * 65
    runs = fold_runs(
        stored(
            [
                thread_created(),
                run_started(long_id, 1),
                run_started("r1", 1),
                run_completed("r1", long_id),
            ]
        )
    )
    assert list(runs) == ["r1"]
    assert (runs["r1"].status, runs["r1"].message_id) == ("completed", None)
