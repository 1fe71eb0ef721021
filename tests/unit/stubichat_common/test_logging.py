"""Stdlib logging routed into loguru at the configured level, and not below it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from loguru import logger

from stubichat_common.logging import setup_logging

Configure = Callable[[str], list[str]]


@pytest.fixture
def configure() -> Iterator[Configure]:
    """Set logging up at a level; returns the messages that reach loguru from then on."""

    def at(level: str) -> list[str]:
        setup_logging(level)  # removes every loguru sink: listen after it
        routed: list[str] = []
        logger.add(lambda m: routed.append(m.record["message"]), level=0)
        return routed

    yield at
    setup_logging()  # the default set-up, for whatever runs next in this process


@pytest.fixture
def built_records() -> Iterator[list[logging.LogRecord]]:
    """Every stdlib log record built while the test runs."""
    built: list[logging.LogRecord] = []
    factory = logging.getLogRecordFactory()

    def counting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        built.append(record)
        return record

    logging.setLogRecordFactory(counting_factory)
    yield built
    logging.setLogRecordFactory(factory)


def test_a_library_debug_record_is_not_even_built_at_info(
    configure: Configure, built_records: list[logging.LogRecord]
) -> None:
    routed = configure("INFO")
    library = logging.getLogger("aiosqlite")
    assert not library.isEnabledFor(logging.DEBUG)
    library.debug("executing a statement")
    library.info("a library fact")
    assert [r.getMessage() for r in built_records] == ["a library fact"]
    assert routed == ["a library fact"]


def test_a_library_debug_record_is_routed_at_debug(
    configure: Configure, built_records: list[logging.LogRecord]
) -> None:
    routed = configure("debug")
    library = logging.getLogger("aiosqlite")
    assert library.isEnabledFor(logging.DEBUG)
    library.debug("executing a statement")
    assert [r.getMessage() for r in built_records] == ["executing a statement"]
    assert routed == ["executing a statement"]


def test_noisy_libraries_stay_at_warning_or_above(configure: Configure) -> None:
    configure("DEBUG")
    assert logging.getLogger("aiosqlite").isEnabledFor(logging.DEBUG)
    assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
    configure("ERROR")
    assert not logging.getLogger("httpx").isEnabledFor(logging.WARNING)
    assert not logging.getLogger("aiosqlite").isEnabledFor(logging.WARNING)
