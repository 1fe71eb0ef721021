"""TextBuffer: an answer kept in blocks reads back exactly, from any offset."""

from __future__ import annotations

from main_backend.conversation.progress import BLOCK_PIECES, TextBuffer


def test_any_suffix_reads_back_across_blocks() -> None:
    pieces = [f"w{i} " * (i % 3) for i in range(BLOCK_PIECES * 3 + 5)]  # some empty
    buffer = TextBuffer()
    for piece in pieces:
        buffer.add(piece)
    text = "".join(pieces)
    assert buffer.length == len(text)
    assert buffer.text() == text
    for offset in range(len(text) + 2):
        assert buffer.since(offset) == text[offset:]


def test_pieces_are_joined_into_blocks() -> None:
    buffer = TextBuffer()
    for _ in range(BLOCK_PIECES * 4):
        buffer.add("ab")
    # Four blocks, not a part per piece.
    assert len(buffer._parts) == 4
    assert buffer.text() == "ab" * BLOCK_PIECES * 4


def test_an_empty_buffer_reads_empty() -> None:
    buffer = TextBuffer()
    assert buffer.text() == buffer.since(0) == buffer.since(5) == ""
