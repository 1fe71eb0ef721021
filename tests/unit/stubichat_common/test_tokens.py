"""The one token estimate, shared by the backend's context budget and the echo provider."""

from __future__ import annotations

from stubichat_common.tokens import MESSAGE_OVERHEAD_TOKENS, estimate_tokens


def test_a_message_costs_its_framing_plus_about_four_characters_a_token() -> None:
    assert estimate_tokens("") == MESSAGE_OVERHEAD_TOKENS == 4
    assert estimate_tokens("word") == 4 + 1
    assert estimate_tokens("words") == 4 + 2  # a started token counts
    assert estimate_tokens("x" * 40) == 4 + 10


def test_the_estimate_grows_with_the_text_and_never_needs_a_tokenizer() -> None:
    assert estimate_tokens("") < estimate_tokens("word") < estimate_tokens("word " * 100)
