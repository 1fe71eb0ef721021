"""The documents in docs/ stay in step with the code: every route, error code, event type
and setting the code has is documented, every relative link resolves, and nothing points
outside the repository. Each list comes from the code itself (the OpenAPI schemas, the
error tables, the event catalogue, env.example), never from a copy kept here."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from llm_agent.errors import AgentError
from main_backend.api import errors as backend_errors
from main_backend.events import types as event_types
from main_backend.llm_client import LLM_CODES
from stubichat_common.errors import HTTP_CODES
from tests.support.servers import REPO_ROOT
from tests.unit.test_openapi import SCHEMAS

DOCS = REPO_ROOT / "docs"
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
# Generated or local-only, never part of the repository (see .gitignore).
NOT_IN_REPO = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache"}
NOT_IN_REPO |= {"data", "build", "node_modules"}
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def doc(name: str) -> str:
    return (DOCS / name).read_text()


def table_rows(text: str, key: str) -> list[str]:
    """The table rows of `text` whose first cell is `key` in backticks."""
    return [line for line in text.splitlines() if line.startswith(f"| `{key}` |")]


# ---- api.md ----------------------------------------------------------------------------------


def routes(schema: dict[str, Any]) -> set[str]:
    return {
        f"{method.upper()} {path}"
        for path, operations in schema["paths"].items()
        for method in operations
        if method in HTTP_METHODS
    }


@pytest.mark.parametrize("service", sorted(SCHEMAS))
def test_every_route_of_the_openapi_schema_is_in_the_api_document(service: str) -> None:
    schema: Callable[[], dict[str, Any]] = SCHEMAS[service]
    found = routes(schema())
    assert found, "the schema lists no route"
    text = doc("api.md")
    assert sorted(r for r in found if f"`{r}`" not in text) == []


def agent_error_types(base: type[AgentError] = AgentError) -> Iterator[type[AgentError]]:
    yield base
    for error in base.__subclasses__():
        yield from agent_error_types(error)


def backend_codes() -> set[str]:
    domain = {code for _, code in backend_errors._DOMAIN.values()}
    return set(HTTP_CODES.values()) | domain | set(backend_errors.RUN_ERRORS) | set(LLM_CODES)


def agent_codes() -> set[str]:
    return set(HTTP_CODES.values()) | {error.code for error in agent_error_types()}


@pytest.mark.parametrize("codes", [backend_codes, agent_codes], ids=["main_backend", "llm_agent"])
def test_every_error_code_has_a_row_in_the_api_document(codes: Callable[[], set[str]]) -> None:
    found = codes()
    assert len(found) > len(HTTP_CODES), "the service's own codes were not found"
    text = doc("api.md")
    assert sorted(c for c in found if not table_rows(text, c)) == []


# ---- design.md -------------------------------------------------------------------------------


def catalogue() -> dict[str, frozenset[str]]:
    """Every event type `types.py` names (its dotted string constants), with the fields
    its data must carry."""
    names = {
        value
        for name, value in vars(event_types).items()
        if name.isupper() and isinstance(value, str) and re.fullmatch(r"[a-z]+\.[a-z_]+", value)
    }
    return {name: event_types.REQUIRED_FIELDS.get(name, frozenset()) for name in names}


def test_every_event_type_and_its_fields_are_in_the_design_document() -> None:
    found = catalogue()
    assert len(found) >= len(event_types.REQUIRED_FIELDS) > 0
    text = doc("design.md")
    problems = []
    for event_type, fields in sorted(found.items()):
        rows = table_rows(text, event_type)
        if not rows:
            problems.append(f"{event_type}: no row")
            continue
        problems += [f"{event_type}: {f}" for f in sorted(fields) if f"`{f}`" not in rows[0]]
    assert problems == []


# ---- operations.md ---------------------------------------------------------------------------


def test_every_setting_of_env_example_has_a_row_in_the_operations_document() -> None:
    lines = (REPO_ROOT / "env.example").read_text().splitlines()
    names = [line.split("=", 1)[0] for line in lines if line and not line.startswith("#")]
    assert names
    text = doc("operations.md")
    assert sorted(n for n in names if not table_rows(text, n)) == []


# ---- links -----------------------------------------------------------------------------------


def documents() -> list[Path]:
    return [REPO_ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def anchors(path: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings."""
    found = set()
    for line in path.read_text().splitlines():
        heading = re.match(r"#{1,6} (.+)", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower())
            found.add(slug.replace(" ", "-"))
    return found


def broken_links(path: Path) -> Iterator[str]:
    in_code = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code:
            continue
        for target in LINK.findall(line):
            if re.match(r"[a-z]+:", target):
                continue  # http:, https:, mailto:
            file_part, _, fragment = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            if not linked.is_file():
                yield f"{path.name}: {target} (no such file)"
            elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
                yield f"{path.name}: {target} (no such heading)"


def test_the_documents_exist_and_every_relative_link_resolves() -> None:
    names = {p.name for p in documents() if p.is_file()}
    assert {"README.md", "api.md", "design.md", "operations.md"} <= names
    readme = (REPO_ROOT / "README.md").read_text()
    for name in ("api.md", "design.md", "operations.md"):
        assert f"(docs/{name})" in readme, f"the README does not link docs/{name}"
    assert [bad for path in documents() for bad in broken_links(path)] == []


# ---- nothing outside the repository ----------------------------------------------------------


def repository_files(root: Path) -> Iterator[Path]:
    for path in root.iterdir():
        if path.name in NOT_IN_REPO or path.name.endswith(".egg-info"):
            continue
        if path.is_dir():
            yield from repository_files(path)
        elif path.is_file():
            yield path


def test_no_file_points_outside_the_repository() -> None:
    # Built, so that this file does not name it itself.
    outside = "/".join(["..", "shared"]).encode()
    files = list(repository_files(REPO_ROOT))
    assert len(files) > 50
    assert [str(p.relative_to(REPO_ROOT)) for p in files if outside in p.read_bytes()] == []
    # Nor by name: the contract and the design are docs/api.md and docs/design.md.
    elsewhere = re.compile(rb"\b(?:" + b"|".join([b"API", b"DESIGN", b"STYLE"]) + rb")\.md")
    assert [str(p.relative_to(REPO_ROOT)) for p in files if elsewhere.search(p.read_bytes())] == []
