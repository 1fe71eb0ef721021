"""The one message-limit check, with each service's own limits."""

from __future__ import annotations

from stubichat_common.limits import message_problems


def test_within_the_limits_there_is_no_problem() -> None:
    assert message_problems(["ab", "abc"], max_messages=2, max_chars=3) == []


def test_too_many_messages_then_each_content_too_long_in_order() -> None:
    assert message_problems(["abcd", "ok", "abcde"], max_messages=2, max_chars=3) == [
        ("messages", "at most 2 messages are accepted"),
        ("messages.0.content", "content must be at most 3 characters"),
        ("messages.2.content", "content must be at most 3 characters"),
    ]
