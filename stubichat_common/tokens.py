"""Token estimates without a tokenizer (nothing to download, the same on every replica).

The backend trims the history to its context budget with them; the echo provider
reports its usage with them, so its numbers match what the backend budgeted.
"""

from __future__ import annotations

# Every chat message costs a few tokens of framing (role, separators) besides its text.
MESSAGE_OVERHEAD_TOKENS = 4


def estimate_tokens(text: str) -> int:
    """The estimated cost of one chat message whose content is `text`: about four
    characters per token, plus the message's framing."""
    return (len(text) + 3) // 4 + MESSAGE_OVERHEAD_TOKENS
