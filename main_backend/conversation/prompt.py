"""Prompt building: a pure function of the thread's log (docs/design.md, principle 4).

`prompt_at` is the prompt a turn answering a message sends: the system prompt, then
as much of the newest history as fits in the context budget, where the history is
the path from that message up to the thread's first (threads are trees; other
branches are never read). The turn graph's `call_llm` node and the admin replay
both call it, so a replay shows exactly what the model saw. `select_history`
decides which messages fit; `collect_history` feeds it from the store newest-first
and stops reading as soon as the budget is full, so a turn at version 10,000, or
under the 150th edit of a question, reads about what a turn at version 10 reads;
`assemble_prompt` puts the result together. A message never changes once added,
nor does its parent, so the prompt answering a message is the same forever.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

from main_backend.events.fold import MessageState, ThreadState
from main_backend.events.store import EventStore
from stubichat_common.tokens import estimate_tokens


@dataclass(frozen=True, slots=True)
class Prompt:
    messages: list[dict[str, str]]
    estimated_tokens: int


def select_history(
    newest_first: Iterable[MessageState], budget_tokens: int
) -> tuple[list[MessageState], bool]:
    """The newest messages that fit in `budget_tokens`, oldest first, and whether
    the budget ran out (True) or the history did (False).

    The latest user message is always kept, even alone over budget; a message
    never goes in cut; empty messages (a cancelled run's empty partial) are skipped.
    """
    kept: list[MessageState] = []
    used = 0
    seen_user = False
    for message in newest_first:
        if not message.content:
            continue
        cost = estimate_tokens(message.content)
        must_keep = message.role == "user" and not seen_user
        if used + cost > budget_tokens and not must_keep:
            kept.reverse()
            return kept, True
        kept.append(message)
        used += cost
        seen_user = seen_user or message.role == "user"
    kept.reverse()
    return kept, False


def assemble_prompt(system_prompt: str | None, history: list[MessageState]) -> Prompt:
    """System prompt first, then `history` (already selected, oldest first)."""
    messages = []
    tokens = 0
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
        tokens += estimate_tokens(system_prompt)
    messages += [{"role": m.role, "content": m.content} for m in history]
    tokens += sum(estimate_tokens(m.content) for m in history)
    return Prompt(messages, tokens)


def history_budget(system_prompt: str | None, max_context_tokens: int) -> int:
    return max_context_tokens - (estimate_tokens(system_prompt) if system_prompt else 0)


async def collect_history(
    newest_first: AsyncIterator[MessageState], budget_tokens: int
) -> list[MessageState]:
    """Read newest-first only until the budget is full, then select."""
    window: list[MessageState] = []
    used = 0
    seen_user = False
    async for message in newest_first:
        window.append(message)
        used += estimate_tokens(message.content) if message.content else 0
        seen_user = seen_user or message.role == "user"
        if used > budget_tokens and seen_user:
            break
    selected, _ = select_history(window, budget_tokens)
    return selected


def system_prompt_for(own: str | None, default: str | None) -> str | None:
    """The thread's own system prompt, else the deployment's SYSTEM_PROMPT."""
    return own or default


async def prompt_at(
    store: EventStore,
    thread: ThreadState,
    leaf_id: str | None,
    default_system_prompt: str | None,
    max_context_tokens: int,
) -> Prompt:
    """The prompt a turn answering `leaf_id` sends: what fits of its path, newest first."""
    system_prompt = system_prompt_for(thread.system_prompt, default_system_prompt)
    return await prompt_on_path(store, thread.thread_id, leaf_id, system_prompt, max_context_tokens)


async def prompt_on_path(
    store: EventStore,
    thread_id: str,
    leaf_id: str | None,
    system_prompt: str | None,
    max_context_tokens: int,
) -> Prompt:
    """`prompt_at` for a caller that knows the system prompt (the thread is not read)."""
    history = await collect_history(
        store.iter_path(thread_id, leaf_id), history_budget(system_prompt, max_context_tokens)
    )
    return assemble_prompt(system_prompt, history)
