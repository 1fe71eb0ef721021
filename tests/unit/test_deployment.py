"""The Docker Compose deployment, checked by reading its files: no Docker engine needed.

docker-compose.yml, the Dockerfile's two final targets (main-backend, llm-agent),
docker/nginx.conf and .dockerignore must agree with each other and with the code: the
settings they pass exist, the entry points import, the image holds what the app reads.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib
import json
import re
import shlex
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from fastapi import FastAPI
from pydantic_settings import BaseSettings

from llm_agent.settings import Settings as AgentSettings
from main_backend.app import ALEMBIC_INI
from main_backend.db import normalize_database_url
from main_backend.settings import Settings as BackendSettings
from tests.support.servers import REPO_ROOT

SERVICES = {"postgres", "migrate", "main-backend", "llm-agent", "nginx"}
ONE_SHOT = {"migrate"}
APP_SETTINGS: dict[str, type[BaseSettings]] = {
    "migrate": BackendSettings,
    "main-backend": BackendSettings,
    "llm-agent": AgentSettings,
}
# What each image runs: (Dockerfile target, module:app, port).
TARGETS = {
    "main-backend": ("main_backend.main:app", 8000),
    "llm-agent": ("llm_agent.main:app", 8001),
}
FIRST_PARTY = {"main_backend", "llm_agent", "stubichat_common", "migrations"}
POSTGRES_IMAGE_VARIABLES = {
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "POSTGRES_PASSWORD_FILE",
    "POSTGRES_DB",
    "POSTGRES_INITDB_ARGS",
    "POSTGRES_INITDB_WALDIR",
    "POSTGRES_HOST_AUTH_METHOD",
    "PGDATA",
}
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL", re.IGNORECASE)


# ---- reading the files --------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict), "docker-compose.yml is not a mapping"
    return loaded


def service(name: str) -> dict[str, Any]:
    found: dict[str, Any] = compose()["services"][name]
    return found


def interpolate(text: str) -> str:
    """Compose's `${VAR:-default}` with nothing set: the default (or empty)."""
    return re.sub(r"\$\{\w+(?::?-([^}]*))?\}", lambda m: m.group(1) or "", text)


def environment(name: str) -> dict[str, str]:
    env = service(name).get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: interpolate(str(value)) for key, value in env.items()}


def depends_on(name: str) -> dict[str, str]:
    deps = service(name).get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {dep: spec.get("condition", "service_started") for dep, spec in deps.items()}


def expose(name: str) -> set[int]:
    return {int(str(port).split("/")[0]) for port in service(name).get("expose", [])}


def seconds(duration: str | int) -> float:
    """Compose ("1m30s") and nginx ("300s", "5m", "300") durations."""
    if re.fullmatch(r"\d+", str(duration)):
        return float(duration)
    total = 0.0
    for amount, unit in re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s)", str(duration)):
        total += float(amount) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[unit]
    return total


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


@cache
def dockerfile() -> list[Stage]:
    text = re.sub(r"\\\n", " ", (REPO_ROOT / "Dockerfile").read_text())
    stages: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            alias = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], alias))
        else:
            stages[-1].instructions.append((keyword, args))
    return stages


def stage(name: str) -> Stage:
    return next(s for s in dockerfile() if s.name == name)


def chain(name: str) -> list[Stage]:
    """The stage and the stages it is built FROM, the base image's stage first."""
    names = {s.name for s in dockerfile()}
    stages = [stage(name)]
    while stages[0].base in names:
        stages.insert(0, stage(stages[0].base))
    return stages


def copy_flags_and_paths(args: str) -> tuple[dict[str, str], list[str]]:
    words = json.loads(args) if args.startswith("[") else shlex.split(args)
    flags = dict(w[2:].partition("=")[::2] for w in words if w.startswith("--"))
    return flags, [w for w in words if not w.startswith("--")]


def copied(name: str) -> dict[str, PurePosixPath]:
    """Repository path (no trailing slash) -> where the image holds it, along the chain."""
    places: dict[str, PurePosixPath] = {}
    workdir = PurePosixPath("/")
    for st in chain(name):
        for keyword, args in st.instructions:
            if keyword == "WORKDIR":
                workdir = workdir / args
            elif keyword in {"COPY", "ADD"}:
                flags, paths = copy_flags_and_paths(args)
                if "from" in flags:
                    continue
                *sources, dest = paths
                target = workdir / dest
                for source in sources:
                    source = source.rstrip("/")
                    into_dir = (REPO_ROOT / source).is_file() and (
                        dest.endswith("/") or dest in {".", "./"}
                    )
                    places[source] = target / PurePosixPath(source).name if into_dir else target
    return places


def exec_form(args: str) -> list[str]:
    assert args.startswith("["), f"use the exec form (signals reach the process): {args}"
    parsed = json.loads(args)
    assert isinstance(parsed, list) and all(isinstance(a, str) for a in parsed), args
    return parsed


@cache
def nginx_conf() -> str:
    text = (REPO_ROOT / "docker" / "nginx.conf").read_text()
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def directives(name: str) -> list[str]:
    return [m.strip() for m in re.findall(rf"(?m)^\s*{name}\s+([^;]*);", nginx_conf())]


def size_in_bytes(size: str) -> int:
    match = re.fullmatch(r"(\d+)([kKmMgG]?)", size)
    assert match, f"not an nginx size: {size}"
    number, unit = match.groups()
    return int(number) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit.lower()]


# ---- docker-compose.yml -------------------------------------------------------------------


def test_the_compose_file_names_exactly_the_five_services() -> None:
    assert set(compose()["services"]) == SERVICES


def test_every_long_running_service_has_a_healthcheck() -> None:
    for name in SERVICES - ONE_SHOT:
        check = service(name).get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"


def test_the_app_healthchecks_probe_their_own_health_route() -> None:
    for name, (_, port) in TARGETS.items():
        assert f"127.0.0.1:{port}/health" in " ".join(service(name)["healthcheck"]["test"])
        assert expose(name) == {port}


def test_postgres_keeps_its_data_in_a_declared_named_volume() -> None:
    postgres = service("postgres")
    assert postgres["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    named = [v.split(":")[0] for v in postgres["volumes"] if not v.startswith((".", "/"))]
    assert named and set(named) <= set(compose().get("volumes") or {})
    assert set(environment("postgres")) <= POSTGRES_IMAGE_VARIABLES


def test_migrate_runs_alembic_once_with_the_main_backend_image() -> None:
    migrate, backend = service("migrate"), service("main-backend")
    command = migrate["command"]
    assert (command if isinstance(command, str) else " ".join(command)) == "alembic upgrade head"
    assert migrate["image"] == backend["image"]
    assert migrate["build"] == backend["build"]
    assert str(migrate.get("restart", "no")) == "no"
    assert depends_on("migrate") == {"postgres": "service_healthy"}


def test_main_backend_starts_after_migrations_and_a_healthy_agent() -> None:
    assert depends_on("main-backend") == {
        "migrate": "service_completed_successfully",
        "llm-agent": "service_healthy",
        "postgres": "service_healthy",
    }
    assert seconds(service("main-backend")["stop_grace_period"]) >= 30


def test_llm_agent_can_be_scaled() -> None:
    agent = service("llm-agent")
    assert "container_name" not in agent and "ports" not in agent
    assert expose("llm-agent") == {8001}


def test_only_nginx_publishes_a_port_and_it_uses_the_mounted_config() -> None:
    assert [name for name in SERVICES if "ports" in service(name)] == ["nginx"]
    nginx = service("nginx")
    assert nginx["image"].startswith("nginx:")
    (mapping,) = nginx["ports"]
    assert interpolate(str(mapping)).split(":")[-1] == directives("listen")[0].split(":")[-1]
    assert any(v.startswith("./docker/nginx.conf:/etc/nginx/nginx.conf") for v in nginx["volumes"])
    assert depends_on("nginx") == {"main-backend": "service_healthy"}


def test_the_app_services_get_only_real_setting_names() -> None:
    for name, settings in APP_SETTINGS.items():
        names = {field_name.upper() for field_name in settings.model_fields}
        unknown = set(environment(name)) - names
        assert not unknown, f"{name} is passed variables it does not read: {unknown}"
        assert service(name).get("env_file"), f"{name} does not read .env"


def test_the_backend_reaches_the_compose_postgres_and_agent() -> None:
    postgres = environment("postgres")
    for name in ("migrate", "main-backend"):
        url = normalize_database_url(environment(name)["DATABASE_URL"])
        assert (url.host, url.port) == ("postgres", 5432)
        assert (url.username, url.password, url.database) == (
            postgres["POSTGRES_USER"],
            postgres["POSTGRES_PASSWORD"],
            postgres["POSTGRES_DB"],
        )
    agent = urlsplit(environment("main-backend")["LLM_AGENT_URL"])
    assert (agent.hostname, agent.port) == ("llm-agent", TARGETS["llm-agent"][1])


def test_the_build_targets_are_stages_of_the_dockerfile() -> None:
    for name in TARGETS:
        assert service(name)["build"]["target"] == name
        assert stage(name)


# ---- Dockerfile ---------------------------------------------------------------------------


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_each_target_is_a_slim_runtime_fed_by_a_builder(target: str) -> None:
    stages = chain(target)
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", stages[0].base)
    sources = {
        source
        for st in stages
        for args in st.args("COPY")
        if (source := copy_flags_and_paths(args)[0].get("from")) is not None
    }
    assert sources, f"{target} copies nothing from a builder stage"
    for source in sources:
        assert source not in {s.name for s in stages}, "a builder must not be in the runtime"
        assert stage(source).args("RUN"), f"builder {source} builds nothing"


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_each_target_runs_uvicorn_as_a_non_root_user_with_a_healthcheck(target: str) -> None:
    module_app, port = TARGETS[target]
    final = stage(target)
    (user,) = final.args("USER")
    assert user.split(":")[0] not in {"root", "0"}
    (healthcheck,) = final.args("HEALTHCHECK")
    assert f"127.0.0.1:{port}/health" in healthcheck
    assert final.args("EXPOSE") == [str(port)]
    (command,) = final.args("CMD") + final.args("ENTRYPOINT")
    argv = exec_form(command)
    assert argv[:2] == ["uvicorn", module_app]
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    assert argv[argv.index("--port") + 1] == str(port)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_the_entry_points_expose_an_asgi_app(
    target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env: the image has none either
    for name in {*AgentSettings.model_fields, *BackendSettings.model_fields}:
        monkeypatch.delenv(name.upper(), raising=False)
    module, attribute = TARGETS[target][0].split(":")
    app = getattr(importlib.import_module(module), attribute)
    assert isinstance(app, FastAPI)
    assert "/health" in app.openapi()["paths"]


def first_party_imports(package: str) -> set[str]:
    found = set()
    for path in (REPO_ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module.split(".")[0])
    return found & FIRST_PARTY


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_each_image_holds_the_packages_its_code_imports(target: str) -> None:
    places = copied(target)
    package = TARGETS[target][0].split(".")[0]
    needed = {package} | first_party_imports(package)
    if package == "main_backend":
        needed |= {"migrations"} | first_party_imports("migrations")
    assert needed <= set(places), f"{target} lacks {needed - set(places)}"
    assert {places[name].parent for name in needed} == {places[package].parent}


def test_the_main_backend_image_has_alembic_ini_beside_its_package() -> None:
    # main_backend/app.py reads alembic.ini next to the package, as in the repository.
    assert ALEMBIC_INI == REPO_ROOT / "alembic.ini"
    places = copied("main-backend")
    root = places["main_backend"].parent
    assert places["alembic.ini"] == root / "alembic.ini"
    assert places["migrations"] == root / "migrations"
    workdirs = [args for st in chain("main-backend") for args in st.args("WORKDIR")]
    assert PurePosixPath(workdirs[-1]) == root, "alembic runs from the directory of alembic.ini"


def test_no_secret_is_baked_into_an_image() -> None:
    for st in dockerfile():
        for args in st.args("ENV"):
            pairs = re.findall(r"(\w+)=", args) or [args.split()[0]]
            assert not [name for name in pairs if SECRET_NAME.search(name)], args
        for args in st.args("ARG"):
            assert not SECRET_NAME.search(args.split("=")[0]), args
        for args in st.args("COPY") + st.args("ADD"):
            assert ".env" not in copy_flags_and_paths(args)[1], args


# ---- .dockerignore ------------------------------------------------------------------------


def dockerignore() -> list[str]:
    lines = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip().strip("/") for line in lines if line.strip() and line[0] != "#"]


def ignored(path: str) -> bool:
    parts = PurePosixPath(path).parts
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for pattern in dockerignore():
        assert not pattern.startswith("!"), "keep .dockerignore free of exceptions"
        tails = [pattern[3:], "*/" + pattern[3:]] if pattern.startswith("**/") else [pattern]
        if any(fnmatch.fnmatch(p, tail) for p in prefixes for tail in tails):
            return True
    return False


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    for path in (
        ".env",
        "backend/.env",
        ".venv",
        "data/stubichat.db",
        ".git/HEAD",
        "main_backend/__pycache__/app.cpython-311.pyc",
        "tests/conftest.py",
    ):
        assert ignored(path), f"{path} would be sent to the build"


def test_dockerignore_keeps_what_the_images_copy() -> None:
    sources = {"pyproject.toml"} | {s for target in TARGETS for s in copied(target)}
    for source in sources:
        root = REPO_ROOT / source
        files = (
            [root]
            if root.is_file()
            else [p for p in root.rglob("*.py") if "__pycache__" not in p.parts]
        )
        assert files, f"{source} does not exist"
        for path in files:
            relative = path.relative_to(REPO_ROOT).as_posix()
            assert not ignored(relative), f"{relative} is copied but ignored"


# ---- docker/nginx.conf --------------------------------------------------------------------


def test_nginx_streams_unbuffered_with_long_timeouts() -> None:
    assert directives("proxy_buffering") == ["off"]
    assert directives("proxy_cache") == ["off"]
    assert directives("proxy_http_version") == ["1.1"]
    assert 'Connection ""' in directives("proxy_set_header")
    for name in ("proxy_read_timeout", "proxy_send_timeout"):
        values = [seconds(value) for value in directives(name)]
        assert values and min(values) >= 300, name
    assert not [d for d in directives("proxy_ignore_headers") if "X-Accel-Buffering" in d]


def test_nginx_forwards_the_request_id_and_client_address() -> None:
    headers = {d.split()[0].lower(): d.split(None, 1)[1] for d in directives("proxy_set_header")}
    assert {"x-request-id", "x-forwarded-for", "x-forwarded-proto", "host"} <= set(headers)
    assert "$http_x_request_id" in nginx_conf() and "$request_id" in nginx_conf()


def test_nginx_limits_bodies_like_the_services() -> None:
    (limit,) = directives("client_max_body_size")
    assert size_in_bytes(limit) == BackendSettings.model_fields["max_request_bytes"].default
    assert size_in_bytes(limit) == AgentSettings.model_fields["max_request_bytes"].default


def test_nginx_bounds_slow_headers_and_bodies() -> None:
    # uvicorn has no header deadline: the reverse proxy must have one.
    body_deadline = BackendSettings.model_fields["request_body_timeout_seconds"].default
    for name in ("client_header_timeout", "client_body_timeout"):
        (value,) = directives(name)
        assert 0 < seconds(value) <= body_deadline, name
    assert directives("proxy_request_buffering") in ([], ["on"])


def test_nginx_proxies_to_the_main_backend_through_docker_dns() -> None:
    variables = {name: value for name, value in (d.split(None, 1) for d in directives("set"))}
    targets = {variables.get(p, p) for p in directives("proxy_pass")}
    assert targets == {f"http://main-backend:{TARGETS['main-backend'][1]}"}
    if any(p.startswith("$") for p in directives("proxy_pass")):
        # A variable makes nginx resolve the name at run time, through Docker's DNS.
        assert any(r.startswith("127.0.0.11 ") for r in directives("resolver"))


# ---- docs/operations.md ---------------------------------------------------------------------


def test_the_operations_guide_explains_the_deployment() -> None:
    guide = (REPO_ROOT / "docs" / "operations.md").read_text()
    section = guide.split("## Deploy with Docker Compose\n", 1)[1].split("\n## ", 1)[0]
    assert guide.index("## Deploy with Docker Compose") < guide.index("## Configuration")
    for needle in (
        "cp env.example .env",
        "docker compose up -d --build",
        "alembic upgrade head",
        "--scale llm-agent=3",
    ):
        assert needle in section, needle
