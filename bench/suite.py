"""The benchmark suite (issue 14): ours beside LangGraph's documented chatbot pattern.

    .venv/bin/python bench/suite.py [--smoke] [--engine both|sqlite|postgres] [--out DIR]
                                    [--only SECTION,...]

Real processes, as deployed: the wire-level fake OpenAI upstream
(`tests/fakes/openai_server.py`, echoing by default), `uvicorn llm_agent.main:app`
(openai provider) in front of it, and per engine `uvicorn main_backend.main:app` on a
fresh database at the migration head (SQLite file, then Postgres at TEST_POSTGRES_URL).
The peers run in this process on fresh databases of the same engine. Sections (each a
module of `bench/suite/`): growth, latency, throughput, streams, replay, cost.

Writes OUT/README.md (a markdown table per section, the machine and its load noted)
and PNG plots into OUT (default: bench/results/). Every figure is a ratio or a
distribution from one run: compare numbers of one run, not across runs.

--smoke: tiny sizes, SQLite only unless --engine says otherwise, only to prove the suite
runs (tests/e2e/test_bench_smoke.py, which passes a temporary --out); its numbers mean
nothing.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import pickle
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from bench.suite import (  # noqa: E402
    common,
    cost,
    growth,
    latency,
    replay,
    streams,
    throughput,
)
from bench.support.stack import backend, upstream_and_agent  # noqa: E402
from tests.support import databases  # noqa: E402

# The order they run in: the streams section last, since a thousand streams leave the
# backend's heap larger for whatever follows; the report keeps the order.
RUN_ORDER: list[Any] = [cost, latency, growth, throughput, replay, streams]
REPORT_ORDER: list[Any] = [growth, latency, throughput, streams, replay, cost]
NAMES = [module.NAME for module in REPORT_ORDER]


def postgres_version(url: str) -> str:
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            return str(row[0]) if row else "?"
    except psycopg.Error:
        return "n/a"


def enable_pg_stat_statements(url: str) -> None:
    """The view, in the bench database (the library is loaded server-wide or not)."""
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    except psycopg.Error as exc:
        print(f"pg_stat_statements unavailable: {exc}".strip(), file=sys.stderr)


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def machine(
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
    engines: list[str],
) -> str:
    versions = ", ".join(
        f"{name} {importlib.metadata.version(name)}"
        for name in ("langgraph", "langgraph-checkpoint-sqlite", "langgraph-checkpoint-postgres")
    )
    lines = [
        f"- date (UTC): {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M}; "
        f"commit {git_commit()}",
        f"- machine: {os.cpu_count()} cores, {platform.machine()}, {platform.system()} "
        f"{platform.release()}; load average (1, 5, 15 min) before "
        f"{', '.join(f'{v:.2f}' for v in load_before)}, after "
        f"{', '.join(f'{v:.2f}' for v in load_after)}",
        f"- python {platform.python_version()}; SQLite {sqlite3.sqlite_version}; "
        f"PostgreSQL {postgres_version(databases.POSTGRES_ADMIN_URL)}; {versions}",
        f"- engines measured: {', '.join(engines) or 'none'}",
        "- one machine runs the client (this script and the peers), the backend, the agent, "
        "the fake upstream and the database: their CPU is shared, and other work may run "
        "meanwhile (see the load average)",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: does it run?")
    parser.add_argument(
        "--engine", choices=("both", "sqlite", "postgres"), help="default: both (smoke: sqlite)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--only", help=f"comma-separated sections of: {', '.join(NAMES)}")
    parser.add_argument(
        "--growth-turns", type=int, help=f"default {growth.TURNS} (smoke {growth.SMOKE_TURNS})"
    )
    parser.add_argument(
        "--stream-sizes",
        help=f"comma-separated; default {','.join(map(str, streams.SIZES))}",
    )
    parser.add_argument(
        "--report-from",
        type=Path,
        help="render OUT from the measurements a run saved (their path is printed) instead",
    )
    parser.add_argument("--note", default="", help="a line added to the results' header")
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else set(NAMES)
    unknown = only - set(NAMES)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    engine = args.engine or ("sqlite" if args.smoke else "both")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    started = time.monotonic()
    results: dict[str, dict[str, Any]] = {name: {} for name in NAMES}
    measured: list[str] = []
    if args.report_from:
        saved = pickle.loads(args.report_from.read_bytes())
        results, measured, load = saved["results"], saved["measured"], saved["load"]
        seconds = saved["seconds"]
    else:
        measure_all(args, engine, only, results, measured)
        saved_path = Path(tempfile.gettempdir()) / f"stubichat-bench-{os.getpid()}.pickle"
        load, seconds = (load_before, os.getloadavg()), time.monotonic() - started
        saved_path.write_bytes(
            pickle.dumps(
                {"results": results, "measured": measured, "load": load, "seconds": seconds}
            )
        )
        print(f"\nmeasurements saved: {saved_path} (--report-from renders them again)")
    write_report(args, out, only, results, measured, load, seconds)


def measure_all(
    args: argparse.Namespace,
    engine: str,
    only: set[str],
    results: dict[str, dict[str, Any]],
    measured: list[str],
) -> None:
    with ExitStack() as stack:
        log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        upstream, agent = stack.enter_context(upstream_and_agent(log_dir))
        targets = databases.bench_databases(
            sqlite=engine != "postgres",
            postgres=engine != "sqlite",
            postgres_required=engine == "postgres",
        )
        for url, label in targets:
            key = "sqlite" if url.startswith("sqlite") else "postgres"
            if key == "postgres":
                enable_pg_stat_statements(url)
            start_backend = partial(backend, url, agent, log_dir, **common.BACKEND_ENV)
            with start_backend(name=f"backend-{key}") as service:
                current = common.Engine(
                    key,
                    label,
                    url,
                    upstream,
                    agent,
                    service,
                    log_dir,
                    args.smoke,
                    start_backend,
                    growth_turns=args.growth_turns,
                    stream_sizes=tuple(int(n) for n in args.stream_sizes.split(","))
                    if args.stream_sizes
                    else None,
                )
                for module in RUN_ORDER:
                    if module.NAME not in only:
                        continue
                    print(f"\n{label}: {module.NAME}", flush=True)
                    section_started = time.monotonic()
                    results[module.NAME][label] = module.measure(current)
                    print(f"  ({time.monotonic() - section_started:.1f} s)", flush=True)
            measured.append(label)


def write_report(
    args: argparse.Namespace,
    out: Path,
    only: set[str],
    results: dict[str, dict[str, Any]],
    measured: list[str],
    load: tuple[tuple[float, float, float], tuple[float, float, float]],
    seconds: float,
) -> None:
    sections = [
        module.report(results[module.NAME], out) for module in REPORT_ORDER if module.NAME in only
    ]
    header = [
        "# Benchmark results" + (" (smoke: the numbers mean nothing)" if args.smoke else ""),
        "",
        "Written by `"
        + " ".join([".venv/bin/python bench/suite.py", *sys.argv[1:]])
        + f"` in {seconds:.0f} s.",
        "",
        machine(*load, measured),
    ]
    if args.note:
        header.append(f"- {args.note}")
    text = "\n".join(header) + "\n\n" + "\n".join(s.markdown() for s in sections)
    (out / "README.md").write_text(text)
    print("\n" + text)
    print(f"\nwritten: {out / 'README.md'} and {sum(len(s.plots) for s in sections)} plots")


if __name__ == "__main__":
    main()
