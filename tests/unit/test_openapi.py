"""Both OpenAPI schemas document every status a route can answer, each error in the
envelope's schema: enumerated from the schemas themselves, route by route."""

from __future__ import annotations

from typing import Any

import pytest

from llm_agent.app import create_app as create_agent
from llm_agent.settings import Settings as AgentSettings
from main_backend.app import create_app as create_backend
from main_backend.settings import Settings as BackendSettings
from stubichat_common.errors import ErrorEnvelope

PUBLIC = {"/", "/health", "/metrics"}  # the only routes anyone may call, in both services
ENVELOPE_REF = "#/components/schemas/ErrorEnvelope"


def backend_schema() -> dict[str, Any]:
    return create_backend(BackendSettings(_env_file=None)).openapi()


def agent_schema() -> dict[str, Any]:
    return create_agent(AgentSettings(_env_file=None)).openapi()


SCHEMAS = {"main_backend": backend_schema, "llm_agent": agent_schema}


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
    ]


@pytest.fixture(params=sorted(SCHEMAS))
def schema(request: pytest.FixtureRequest) -> dict[str, Any]:
    return SCHEMAS[request.param]()


def test_every_route_documents_the_statuses_of_the_http_layer(schema: dict[str, Any]) -> None:
    for method, path, operation in operations(schema):
        where = f"{method} {path}"
        statuses = set(operation["responses"])
        if path not in PUBLIC:
            assert "401" in statuses, where
        if method in {"POST", "PUT", "PATCH"}:
            assert {"408", "413"} <= statuses, where
        if "requestBody" in operation:
            assert {"415", "422"} <= statuses, where
        if operation.get("parameters"):
            assert "422" in statuses, where


def test_every_error_answer_references_the_envelope(schema: dict[str, Any]) -> None:
    components = schema["components"]["schemas"]
    assert "HTTPValidationError" not in components  # FastAPI's 422 body is not ours
    for method, path, operation in operations(schema):
        for status, response in operation["responses"].items():
            if status[0] not in "45" or (path, status) == ("/health", "503"):
                continue
            content = response.get("content", {})
            assert content["application/json"]["schema"] == {"$ref": ENVELOPE_REF}, (
                method,
                path,
                status,
            )
            assert response["description"] != "Validation Error"
    assert components["ErrorEnvelope"]["required"] == ["error"]
    info = components[components["ErrorEnvelope"]["properties"]["error"]["$ref"].split("/")[-1]]
    assert set(info["required"]) == {"code", "message", "request_id"}
    # The documented shape is the one the services answer with.
    ErrorEnvelope.model_validate({"error": {"code": "x", "message": "y", "request_id": None}})


def test_the_backend_documents_database_and_streaming_answers() -> None:
    schema = backend_schema()
    for method, path, operation in operations(schema):
        if path not in PUBLIC:
            description = operation["responses"]["503"]["description"]
            assert "database_unavailable" in description, (method, path)
    for path in ("/chat/", "/chat/stream"):
        assert "text/event-stream" in schema["paths"][path]["post"]["responses"]["200"]["content"]
    assert "application/json" in schema["paths"]["/chat/"]["post"]["responses"]["200"]["content"]


def test_the_agent_documents_its_upstream_errors() -> None:
    schema = agent_schema()
    for path in ("/generate/", "/generate/stream"):
        responses = schema["paths"][path]["post"]["responses"]
        for status, code in (
            ("429", "upstream_rate_limited"),
            ("502", "upstream_error"),
            ("502", "upstream_auth_failed"),
            ("503", "provider_not_configured"),
            ("504", "upstream_timeout"),
        ):
            assert code in responses[status]["description"], (path, status)
