"""Every benchmark in bench/ still runs, in its smoke mode, so none can rot unnoticed.

The convention for a benchmark, which a new one meets to be covered here without
changes: it is a script `bench/<name>.py`; `--smoke` makes it run a few fast
iterations; it prints its results as table rows, an integer (the size measured)
then one or more measurements with decimals. A benchmark that needs PostgreSQL
gets it from `tests.support.databases.require_postgres`, so under CI=true an
unreachable server fails it as it fails the tests. What the benchmarks share lives in
subfolders (`bench/support/`, `bench/suite/`), which are not benchmarks.

The suite (`bench/suite.py`) writes its results too: here into a temporary `--out`
(never `bench/results/`), which must hold the markdown and a plot per section.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.servers import REPO_ROOT

pytestmark = pytest.mark.e2e

# bench/__init__.py makes bench a package (for the subfolders' imports): not a benchmark.
BENCHMARKS = sorted(p for p in (REPO_ROOT / "bench").glob("*.py") if not p.name.startswith("_"))
RESULT_ROW = re.compile(r"^ *\d+( +\d+\.\d+)+ *$", re.MULTILINE)
TIMEOUT = 60
# The suite starts more processes (a backend, a second one counting SQL statements) and
# holds streams open: more time than one benchmark (about 2.5 minutes with the 2 cores
# under a load of 7-9; much less alone), still a smoke run.
SUITE_TIMEOUT = 240
# Each section's plots (file name prefixes), as bench/suite/<section>.py writes them.
SECTION_PLOTS = ("growth_", "latency_", "throughput", "streams_", "replay_", "cost_")


def smoke(script: Path, *args: str) -> str:
    """Its stdout. A benchmark over its time is killed with the processes it started
    (its own session), so none outlives the test."""
    process = subprocess.Popen(
        [sys.executable, str(script), "--smoke", *args],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    timeout = SUITE_TIMEOUT if script.stem == "suite" else TIMEOUT
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"{script.name} --smoke took over {timeout} s:\n{stdout}\n{stderr}")
    assert process.returncode == 0, f"{script.name} --smoke failed:\n{stderr}"
    assert RESULT_ROW.search(stdout), f"{script.name} --smoke printed no result rows:\n{stdout}"
    return stdout


def test_the_benchmarks_are_found() -> None:
    assert BENCHMARKS, "no bench/*.py found"


@pytest.mark.parametrize(
    "script", [b for b in BENCHMARKS if b.stem != "suite"], ids=lambda path: path.stem
)
def test_the_benchmark_runs_in_smoke_mode(script: Path) -> None:
    smoke(script)


@pytest.mark.timeout(SUITE_TIMEOUT + 30)
def test_the_suite_writes_its_tables_and_a_plot_per_section(tmp_path: Path) -> None:
    smoke(REPO_ROOT / "bench" / "suite.py", "--out", str(tmp_path))
    text = (tmp_path / "README.md").read_text()
    for number, name in enumerate(
        ("Growth", "Latency", "Throughput", "Streams", "Replay", "Cost"), start=1
    ):
        assert f"## {number}. {name}" in text, text
    assert text.count("|---") >= 6, text
    plots = sorted(p.name for p in tmp_path.glob("*.png"))
    for prefix in SECTION_PLOTS:
        assert any(p.startswith(prefix) for p in plots), f"no {prefix}* plot in {plots}"
    for plot in tmp_path.glob("*.png"):
        assert plot.read_bytes().startswith(b"\x89PNG"), plot.name
        assert f"]({plot.name})" in text, f"{plot.name} is not shown in the markdown"
