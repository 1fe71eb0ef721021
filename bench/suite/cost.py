"""stub"""

from pathlib import Path
from typing import Any

from bench.suite.common import Engine, Section

NAME = "cost"


def measure(engine: Engine) -> Any:
    return None


def report(results: dict[str, Any], out: Path) -> Section:
    return Section(NAME, NAME, "")
