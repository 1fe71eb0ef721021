"""The message limits both services apply, each with its own settings."""

from __future__ import annotations

from collections.abc import Sequence


def message_problems(
    contents: Sequence[str], max_messages: int, max_chars: int
) -> list[tuple[str, str]]:
    """(field, message) for too many messages, then for each content that is too long."""
    problems = []
    if len(contents) > max_messages:
        problems.append(("messages", f"at most {max_messages} messages are accepted"))
    problems += [
        (f"messages.{index}.content", f"content must be at most {max_chars} characters")
        for index, content in enumerate(contents)
        if len(content) > max_chars
    ]
    return problems
