"""What the suite's sections share: the stack one engine runs, turns, statistics,
tables and plots."""

from __future__ import annotations

import math
import re
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt

from bench.support.stack import FakeUpstream, ServiceProcess, answered

ADMIN_TOKEN = "bench-admin-token"
# The backend as deployed, except for the limits a benchmark must lift: every request is
# user `local` (AUTH_MODE=none), whose 8 active runs would refuse 16 clients or 1,000
# streams; and the connections to the agent must not be what caps open streams.
BACKEND_ENV = {
    "ADMIN_TOKEN": ADMIN_TOKEN,
    "MAX_ACTIVE_RUNS_PER_USER": "100000",
    "LLM_AGENT_MAX_CONNECTIONS": "5000",
    "LLM_AGENT_POOL_TIMEOUT": "120",
}
MODEL = "gpt-4o-mini"
QUESTION_BYTES = 300
FILLER = "a fairly ordinary sentence of chat text, asked by a user. "
HTTP_TIMEOUT = httpx.Timeout(300.0, connect=30.0)


def question(n: int) -> str:
    """Question `n`: QUESTION_BYTES of ASCII (the fake upstream's echo answers
    "You said: " and the question, so the answer has the same size)."""
    text = f"Question {n:05d}: " + FILLER * (QUESTION_BYTES // len(FILLER) + 1)
    return text[:QUESTION_BYTES]


@dataclass
class Engine:
    """One engine's database, with the processes the sections use on it."""

    key: str  # "sqlite" | "postgres"
    label: str  # "SQLite" | "PostgreSQL"
    url: str  # the backend's DATABASE_URL, at the migration head
    upstream: FakeUpstream
    agent: ServiceProcess
    backend: ServiceProcess
    log_dir: Path
    smoke: bool
    # Starts another backend process on the same database (a context manager).
    start_backend: Callable[..., Any]
    growth_turns: int | None = None  # None: the section's default
    stream_sizes: tuple[int, ...] | None = None


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Section:
    name: str
    title: str
    intro: str
    tables: list[Table] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)  # file names under the output folder
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        parts = [f"## {self.title}\n", self.intro.strip() + "\n"]
        for table in self.tables:
            parts.append(f"**{table.title}**\n")
            parts.append("| " + " | ".join(table.headers) + " |")
            parts.append("|" + "|".join("---" for _ in table.headers) + "|")
            parts.extend("| " + " | ".join(row) + " |" for row in table.rows)
            parts.append("")
        parts.extend(f"- {note}" for note in self.notes)
        if self.notes:
            parts.append("")
        parts.extend(f"![{name}]({name})\n" for name in self.plots)
        return "\n".join(parts)


class SectionModule(Protocol):
    NAME: str

    def measure(self, engine: Engine) -> Any: ...

    def report(self, results: dict[str, Any], out: Path) -> Section: ...


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between ranks; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def fmt(value: float | None, decimals: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{decimals}f}"


def row_line(first: int, *values: float) -> str:
    """A result row on stdout: an integer, then decimals (tests/e2e/test_bench_smoke.py)."""
    shown = " ".join(f"{v:>12.2f}" for v in values if not math.isnan(v))
    return f"  {first:>6} {shown}"


def chat(client: httpx.Client, content: str, thread_id: str | None) -> dict[str, Any]:
    """One `POST /chat/` turn; its answer."""
    body: dict[str, Any] = {"messages": [{"role": "user", "content": content}]}
    if thread_id is not None:
        body["thread_id"] = thread_id
    return answered(client.post("/chat/", json=body))


def timed_chat(client: httpx.Client, content: str, thread_id: str | None) -> tuple[str, float]:
    started = time.perf_counter()
    answer = chat(client, content, thread_id)
    return str(answer["thread_id"]), time.perf_counter() - started


def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


COLOURS = {
    "ours SQLite": "tab:blue",
    "ours PostgreSQL": "tab:orange",
    "LangGraph SQLite": "tab:green",
    "LangGraph PostgreSQL": "tab:red",
    "LangGraph DeltaChannel SQLite": "tab:purple",
    "LangGraph DeltaChannel PostgreSQL": "tab:brown",
}


def line_plot(
    path: Path,
    title: str,
    xlabel: str,
    ylabel: str,
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    logy: bool = False,
    marker: str | None = None,
) -> str:
    """One PNG of a line per series; its file name."""
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, label=label, color=COLOURS.get(label), marker=marker, linewidth=1.4)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path.name


def bar_plot(
    path: Path,
    title: str,
    ylabel: str,
    bars: dict[str, dict[str, float]],
) -> str:
    """Grouped bars: `bars[group][bar] = value`; its file name."""
    groups = list(bars)
    names: list[str] = []
    for values in bars.values():
        names.extend(name for name in values if name not in names)
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        xs = [g + i * width for g in range(len(groups))]
        ys = [bars[group].get(name, 0.0) for group in groups]
        ax.bar(xs, ys, width=width, label=name)
    ax.set_xticks([g + width * (len(names) - 1) / 2 for g in range(len(groups))])
    ax.set_xticklabels(groups, fontsize=8)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path.name


def intro(doc: str | None, **values: object) -> str:
    """A section module's docstring (after its first paragraph) for the results, with
    the names of its sizes (`TURNS`…) replaced by the values this run used."""
    body = (doc or "").split("\n\n", 1)[-1]
    return re.sub(r"\b[A-Z][A-Z_]{2,}\b", lambda m: str(values.get(m.group(0), m.group(0))), body)
