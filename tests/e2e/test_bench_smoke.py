"""Every benchmark in bench/ still runs, in its smoke mode, so none can rot unnoticed.

The convention for a benchmark, which a new one meets to be covered here without
changes: it is a script `bench/<name>.py`; `--smoke` makes it run a few fast
iterations; it prints its results as table rows, an integer (the size measured)
then one or more measurements with decimals. A benchmark that needs PostgreSQL
gets it from `tests.support.databases.require_postgres`, so under CI=true an
unreachable server fails it as it fails the tests.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.servers import REPO_ROOT

pytestmark = pytest.mark.e2e

BENCHMARKS = sorted((REPO_ROOT / "bench").glob("*.py"))
RESULT_ROW = re.compile(r"^ *\d+( +\d+\.\d+)+ *$", re.MULTILINE)


def test_the_benchmarks_are_found() -> None:
    assert BENCHMARKS, "no bench/*.py found"


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda path: path.stem)
def test_the_benchmark_runs_in_smoke_mode(script: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(script), "--smoke"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"{script.name} --smoke failed:\n{result.stderr}"
    assert RESULT_ROW.search(result.stdout), (
        f"{script.name} --smoke printed no result rows:\n{result.stdout}"
    )
