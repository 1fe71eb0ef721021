"""Latency: what a turn adds over calling the upstream directly with the same prompt.

Blocking: for each turn, `POST /chat/` timed as the client sees it, then the exact body
the backend's agent sent upstream (read back from the fake's `/_fake/requests`) sent
again by the openai SDK straight to the fake, timed; added = the two times' difference,
per turn. Streamed: the fake scripted to stream CHUNKS pieces CHUNK_DELAY apart, then
`POST /chat/stream` against a streamed direct call with the same body: added time to
the first token (first `delta` event against first content chunk) and the added gap
between chunks (median gap of each stream, ours minus direct). A new thread every
THREAD_TURNS turns keeps the prompt short.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai

from bench.suite.common import (
    HTTP_TIMEOUT,
    Engine,
    Section,
    Table,
    fmt,
    intro,
    line_plot,
    median,
    percentile,
    question,
    row_line,
    timed_chat,
)

NAME = "latency"
TURNS = 100
SMOKE_TURNS = 3
THREAD_TURNS = 10
CHUNKS = 8
CHUNK_DELAY = 0.02
STREAM_PIECES = [f"piece {i} of a streamed answer, thirty-some bytes. " for i in range(CHUNKS)]


@dataclass
class Latency:
    added: list[float] = field(default_factory=list)  # seconds, per blocking turn
    ours: list[float] = field(default_factory=list)
    direct: list[float] = field(default_factory=list)
    added_ttft: list[float] = field(default_factory=list)
    added_gap: list[float] = field(default_factory=list)


def upstream_body(engine: Engine) -> dict[str, Any]:
    requests = engine.upstream.chat_requests()
    if len(requests) != 1:
        raise RuntimeError(f"expected one upstream call for the turn, got {len(requests)}")
    body: dict[str, Any] = requests[0]["body"]
    return body


def direct(sdk: openai.OpenAI, body: dict[str, Any]) -> tuple[float, float, list[float]]:
    """The body sent again; (total seconds, seconds to the first content, chunk gaps)."""
    started = time.perf_counter()
    if not body.get("stream"):
        sdk.chat.completions.create(**body)
        total = time.perf_counter() - started
        return total, total, []
    first = 0.0
    arrivals = []
    for chunk in sdk.chat.completions.create(**body):
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.perf_counter())
    total = time.perf_counter() - started
    first = arrivals[0] - started if arrivals else total
    return total, first, [b - a for a, b in itertools.pairwise(arrivals)]


def streamed(
    client: httpx.Client, text: str, thread_id: str | None
) -> tuple[str, float, list[float]]:
    """`POST /chat/stream`: (thread id, seconds to the first delta, gaps between deltas)."""
    body: dict[str, Any] = {"messages": [{"role": "user", "content": text}]}
    if thread_id is not None:
        body["thread_id"] = thread_id
    started = time.perf_counter()
    arrivals: list[float] = []
    found = thread_id
    name = ""
    with client.stream("POST", "/chat/stream", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"/chat/stream: {response.status_code} {response.read()!r}")
        for line in response.iter_lines():
            if line.startswith("event:"):
                name = line.partition(":")[2].strip()
            elif line.startswith("data:") and name == "delta":
                arrivals.append(time.perf_counter())
            elif line.startswith("data:") and found is None:
                data = json.loads(line.partition(":")[2])
                if isinstance(data, dict) and data.get("thread_id"):
                    found = str(data["thread_id"])
    if found is None:
        found = response.headers.get("x-thread-id")
    if not arrivals:
        raise RuntimeError("/chat/stream: no delta event")
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    return str(found) if found else "", arrivals[0] - started, gaps


def measure(engine: Engine) -> Latency:
    turns = SMOKE_TURNS if engine.smoke else TURNS
    result = Latency()
    sdk = openai.OpenAI(api_key="sk-bench", base_url=engine.upstream.url, max_retries=0)
    scripted = {"chunks": STREAM_PIECES, "chunk_delay": CHUNK_DELAY}
    try:
        with httpx.Client(base_url=engine.backend.url, timeout=HTTP_TIMEOUT) as client:
            thread_id: str | None = None
            for n in range(1, turns + 1):
                if n % THREAD_TURNS == 1:
                    thread_id = None
                engine.upstream.reset()
                thread_id, ours = timed_chat(client, question(n), thread_id)
                theirs, _, _ = direct(sdk, upstream_body(engine))
                result.ours.append(ours)
                result.direct.append(theirs)
                result.added.append(ours - theirs)
            for n in range(1, turns + 1):
                engine.upstream.reset()
                engine.upstream.script(scripted)
                _found, ttft, gaps = streamed(client, question(n), None)
                body = upstream_body(engine)
                engine.upstream.reset()
                engine.upstream.script(scripted)
                _, direct_ttft, direct_gaps = direct(sdk, {**body, "stream": True})
                result.added_ttft.append(ttft - direct_ttft)
                result.added_gap.append(median(gaps) - median(direct_gaps))
            engine.upstream.reset()
    finally:
        sdk.close()
    print(
        row_line(
            turns,
            percentile(result.added, 50) * 1000,
            percentile(result.added, 99) * 1000,
            percentile(result.added_ttft, 50) * 1000,
        )
    )
    return result


def report(results: dict[str, Latency], out: Path) -> Section:
    section = Section(
        NAME,
        "2. Latency: added over a direct upstream call with the same prompt",
        intro(__doc__, CHUNKS=CHUNKS, CHUNK_DELAY=f"{CHUNK_DELAY} s", THREAD_TURNS=THREAD_TURNS),
    )
    rows = []
    for label, r in results.items():
        rows.append(
            [
                f"ours {label}",
                str(len(r.added)),
                fmt(percentile(r.ours, 50) * 1000, 1),
                fmt(percentile(r.direct, 50) * 1000, 1),
                fmt(percentile(r.added, 50) * 1000, 1),
                fmt(percentile(r.added, 99) * 1000, 1),
                fmt(percentile(r.added_ttft, 50) * 1000, 1),
                fmt(percentile(r.added_ttft, 99) * 1000, 1),
                fmt(percentile(r.added_gap, 50) * 1000, 2),
                fmt(percentile(r.added_gap, 99) * 1000, 2),
            ]
        )
    section.tables.append(
        Table(
            "Added latency (ms)",
            [
                "backend",
                "turns",
                "turn p50",
                "direct p50",
                "added p50",
                "added p99",
                "added TTFT p50",
                "added TTFT p99",
                "added chunk gap p50",
                "added chunk gap p99",
            ],
            rows,
        )
    )
    if results:
        series = {f"ours {label}": _cdf_ms(r.added) for label, r in results.items()}
        section.plots.append(
            line_plot(
                out / "latency_added_cdf.png",
                "Added latency per turn over a direct upstream call (CDF)",
                "added ms",
                "fraction of turns",
                series,
            )
        )
        ttft = {f"ours {label}": _cdf_ms(r.added_ttft) for label, r in results.items()}
        section.plots.append(
            line_plot(
                out / "latency_added_ttft_cdf.png",
                "Added time to first token over a direct streamed call (CDF)",
                "added ms",
                "fraction of streams",
                ttft,
            )
        )
    return section


def _cdf_ms(seconds: list[float]) -> tuple[list[float], list[float]]:
    """An empirical CDF of durations, in milliseconds: (sorted values, fractions)."""
    ordered = sorted(v * 1000 for v in seconds)
    return ordered, [(i + 1) / len(ordered) for i in range(len(ordered))]
