"""Every third-party module the code imports comes from a package pyproject.toml declares.

An import that only works because some other package happens to pull its provider in
(as `httpx2` came in through the OpenAI SDK) breaks when that package changes its own
dependencies. The product's imports must be covered by `[project] dependencies`, those
of tests and benchmarks by the dependencies plus the `test` extra.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from collections.abc import Iterable
from functools import cache
from importlib.metadata import packages_distributions, requires

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.servers import REPO_ROOT

PRODUCT = ("main_backend", "llm_agent", "stubichat_common", "migrations")
FIRST_PARTY = {*PRODUCT, "tests", "bench"}
# Imported directly, declared through the package whose foundation they are: that package
# sets their version (pydantic pins pydantic-core exactly), so a second declaration here
# could only conflict with it. Each pair is checked below to still hold.
DECLARED_THROUGH = {
    "pydantic-core": "pydantic",
    "starlette": "fastapi",
    "packaging": "pytest",
}


def _with_extras(specs: Iterable[str]) -> set[str]:
    """The named distributions, and those their requested extras add."""
    names: set[str] = set()
    for spec in specs:
        requirement = Requirement(spec)
        names.add(canonicalize_name(requirement.name))
        for extra in requirement.extras:
            for dependency in requires(requirement.name) or []:
                added = Requirement(dependency)
                if added.marker is not None and added.marker.evaluate({"extra": extra}):
                    names.add(canonicalize_name(added.name))
    return names


@cache
def declared(*, test_extra: bool) -> frozenset[str]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    specs: list[str] = project["dependencies"]
    if test_extra:
        specs = [*specs, *project["optional-dependencies"]["test"]]
    names = _with_extras(specs)
    return frozenset(
        names | {child for child, parent in DECLARED_THROUGH.items() if parent in names}
    )


def third_party_imports(folder: str) -> dict[str, set[str]]:
    """Top-level module -> files importing it, for modules outside the stdlib and this repo."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO_ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top not in sys.stdlib_module_names and top not in FIRST_PARTY:
                    found.setdefault(top, set()).add(str(path.relative_to(REPO_ROOT)))
    return found


def undeclared(folders: Iterable[str], allowed: frozenset[str]) -> dict[str, list[str]]:
    providers = packages_distributions()
    missing: dict[str, list[str]] = {}
    for folder in folders:
        for module, files in third_party_imports(folder).items():
            provided_by = {canonicalize_name(name) for name in providers.get(module, [])}
            if not provided_by & allowed:
                missing.setdefault(f"{module} ({', '.join(sorted(provided_by))})", []).extend(files)
    return missing


def test_the_product_imports_only_declared_dependencies() -> None:
    missing = undeclared(PRODUCT, declared(test_extra=False))
    assert not missing, f"imported but not in [project] dependencies: {missing}"


def test_tests_and_benchmarks_import_only_declared_dependencies() -> None:
    missing = undeclared(("tests", "bench"), declared(test_extra=True))
    assert not missing, f"imported but not declared (dependencies or the test extra): {missing}"


@pytest.mark.parametrize(("child", "parent"), sorted(DECLARED_THROUGH.items()))
def test_a_package_declared_through_another_still_comes_with_it(child: str, parent: str) -> None:
    assert child in {canonicalize_name(Requirement(r).name) for r in requires(parent) or []}, (
        f"{parent} no longer requires {child}: declare {child} in pyproject.toml"
    )
