"""Loguru set-up: one sink, optional JSON lines, stdlib and uvicorn logs routed in."""

from __future__ import annotations

import inspect
import logging
import sys

from loguru import logger


class _InterceptHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        frame, depth = inspect.currentframe(), 0
        while frame and (depth == 0 or frame.f_code.co_filename == logging.__file__):
            frame = frame.f_back
            depth += 1
        logger.opt(depth=depth, exception=record.exc_info).log(level, record.getMessage())


def setup_logging(level: str = "INFO", json_lines: bool = False) -> None:
    logger.remove()
    logger.configure(extra={"request_id": "-"})
    if json_lines:
        logger.add(sys.stderr, level=level.upper(), serialize=True)
    else:
        logger.add(
            sys.stderr,
            level=level.upper(),
            format="{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <7} | {extra[request_id]} | {message}",
        )
    # The root logger at the sink's level: a library's record below it (aiosqlite
    # logs every statement at DEBUG) is then never built, rather than built, routed
    # to loguru and dropped there. Loguru's level numbers are the stdlib's.
    root_level = logger.level(level.upper()).no
    logging.basicConfig(handlers=[_InterceptHandler()], level=root_level, force=True)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        stdlib_logger = logging.getLogger(name)
        stdlib_logger.handlers = []
        stdlib_logger.propagate = True
    # Our middleware writes the access line, with the request id and latency;
    # httpx's own line per outgoing request is noise beside it.
    for name in ("uvicorn.access", "httpx", "httpcore"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root_level))
