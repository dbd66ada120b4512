"""openapi.yaml is valid, its examples validate, and the generated client matches it."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate

from .spec_helpers import operation, request_examples, response_examples, spec, validator


def test_the_spec_is_valid_openapi_3_1() -> None:
    assert spec()["openapi"].startswith("3.1")
    validate(spec())


def test_the_operation_is_as_designed() -> None:
    op = operation()
    assert op["operationId"] == "startSession"
    assert spec()["servers"] == [
        {"url": "https://avatario.ai/api/sdk", "description": "Production"}
    ]
    scheme = spec()["components"]["securitySchemes"]["apiKey"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "x-api-key")
    assert op["security"] == [{"apiKey": []}]
    assert set(op["responses"]) == {
        *("200", "400", "401", "403", "404", "409", "415", "422", "429", "503", "5XX"),
    }
    rate_limited = spec()["components"]["responses"]["TooManyRequests"]
    assert "Retry-After" in rate_limited["headers"]


@pytest.mark.parametrize("example", request_examples())
def test_request_examples_validate(example: Any) -> None:
    validator("StartSessionRequest").validate(example)


@pytest.mark.parametrize(("status", "example"), response_examples())
def test_response_examples_validate(status: str, example: Any) -> None:
    name = "StartSessionResponse" if status == "200" else "Error"
    validator(name).validate(example)


@pytest.mark.parametrize(
    "bad",
    [
        {"agent_id": "a", "livekit": {"url": "wss://h", "token": "t"}},
        {"avatario_face_id": "", "agent_id": "a", "livekit": {"url": "wss://h", "token": "t"}},
        {"avatario_face_id": "f", "agent_id": "  ", "livekit": {"url": "wss://h", "token": "t"}},
        {"avatario_face_id": "f", "agent_id": "a", "livekit": {"url": "ftp://h", "token": "t"}},
        {"avatario_face_id": "f", "agent_id": "a", "livekit": {"url": "wss://h"}},
        {
            "avatario_face_id": "f",
            "agent_id": "a",
            "livekit": {"url": "wss://h", "token": "t"},
            "video_height": 0,
        },
        {
            "avatario_face_id": "f",
            "agent_id": "a",
            "livekit": {"url": "wss://h", "token": "t"},
            "avatario_face_id_typo": "x",
        },
    ],
)
def test_the_request_schema_rejects_what_the_server_would(bad: dict[str, Any]) -> None:
    assert not validator("StartSessionRequest").is_valid(bad)


def test_the_generated_package_imports() -> None:
    import importlib.util

    from avatario_wrapper._generated import AuthenticatedClient
    from avatario_wrapper._generated.api.sessions import start_session

    # One top-level package: the generated client lives inside avatario_wrapper only.
    assert importlib.util.find_spec("avatario_client") is None
    assert callable(start_session.sync_detailed)
    client = AuthenticatedClient(
        base_url="https://avatario.ai/api/sdk", token="k", auth_header_name="x-api-key", prefix=""
    )
    assert client.get_httpx_client().headers["x-api-key"] == "k"


@pytest.mark.parametrize("example", request_examples())
def test_generated_request_model_round_trips_the_examples(example: dict[str, Any]) -> None:
    from avatario_wrapper._generated.models import StartSessionRequest

    model = StartSessionRequest.from_dict(example)
    assert model.livekit.url == example["livekit"]["url"]
    assert model.to_dict() == example


@pytest.mark.parametrize(("status", "example"), response_examples())
def test_generated_response_models_round_trip_the_examples(status: str, example: Any) -> None:
    from avatario_wrapper._generated.models import Error, StartSessionResponse

    model = StartSessionResponse if status == "200" else Error
    assert model.from_dict(example).to_dict() == example


def test_generated_request_builder_posts_json() -> None:
    from avatario_wrapper._generated import AuthenticatedClient
    from avatario_wrapper._generated.api.sessions import start_session
    from avatario_wrapper._generated.models import StartSessionRequest

    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"session_id": "s"})

    client = AuthenticatedClient(
        base_url="https://avatario.ai/api/sdk", token="k", auth_header_name="x-api-key", prefix=""
    ).set_httpx_client(
        httpx.Client(
            base_url="https://avatario.ai/api/sdk",
            transport=httpx.MockTransport(handler),
            headers={"x-api-key": "k"},
        )
    )
    body = StartSessionRequest.from_dict(request_examples()[0])
    response = start_session.sync_detailed(client=client, body=body, idempotency_key="i-1")

    [request] = seen
    assert request.method == "POST"
    assert request.url.path == "/api/sdk/start-session"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["idempotency-key"] == "i-1"
    assert json.loads(request.content)["avatario_face_id"] == "face_4f1c2a"
    assert response.status_code == 200
    assert response.parsed is not None
