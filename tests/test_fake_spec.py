"""The fake serves every operation of its spec: routing, checks, examples, handlers.

A spec with an operation the fake has no handler for (``GET /sessions/{session_id}``) proves
the generic path: the example answer (for ids the fake knows: its example's and the ids it
issued; the spec's 404 for others), the key, JSON 404/405, odd ids, faults, request ids.
"""

from __future__ import annotations

import asyncio
import copy
import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import pytest

from avatario_wrapper.testing import (
    FakeAvatario,
    FakeServer,
    OperationRequest,
    OperationResponse,
    run_fake_server,
)
from avatario_wrapper.testing._examples import schema_example

from .spec_helpers import spec, validator

pytestmark = pytest.mark.integration

KEY = "sk_fake_spec_key_0001"
EXAMPLE = {"session_id": "sess_01HZX3Q9K2", "status": "live"}
#: The id of the example: without a handler, the fake knows it and the ids it issued itself.
ID = EXAMPLE["session_id"]
SESSION_STATUS = {
    "type": "object",
    "additionalProperties": False,
    "required": ["session_id", "status"],
    "properties": {
        "session_id": {"type": "string", "minLength": 1},
        "status": {"type": "string", "enum": ["starting", "live", "ended"]},
    },
}


def with_session_lookup(*, example: bool = True) -> dict[str, Any]:
    """The bundled spec plus ``GET /sessions/{session_id}`` (operationId getSession)."""
    document = copy.deepcopy(spec())
    document["components"]["schemas"]["SessionStatus"] = SESSION_STATUS
    media: dict[str, Any] = {"schema": {"$ref": "#/components/schemas/SessionStatus"}}
    if example:
        media["examples"] = {"live": {"summary": "A live session", "value": EXAMPLE}}
    document["paths"]["/sessions/{session_id}"] = {
        "get": {
            "operationId": "getSession",
            "summary": "A session's status",
            "parameters": [
                {
                    "name": "session_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "minLength": 1},
                }
            ],
            "responses": {
                "200": {
                    "description": "The session.",
                    "headers": {"x-request-id": {"$ref": "#/components/headers/RequestId"}},
                    "content": {"application/json": media},
                },
                "401": {"$ref": "#/components/responses/Unauthorized"},
                "404": {"$ref": "#/components/responses/NotFound"},
                "5XX": {"$ref": "#/components/responses/ServerError"},
            },
        }
    }
    return document


def status_validator() -> jsonschema.protocols.Validator:
    return jsonschema.Draft202012Validator(SESSION_STATUS)


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with run_fake_server(api_key=KEY, spec=with_session_lookup()) as running:
        yield running


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(headers={"x-api-key": KEY}) as client:
        yield client


def is_json_error(response: httpx.Response) -> None:
    """The spec's Error body, as JSON, with the request id in the header and the body."""
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    validator("Error").validate(body)
    assert body["request_id"] == response.headers["x-request-id"]


# -- an operation without a handler ---------------------------------------------------------------


def test_an_operation_without_a_handler_answers_the_spec_example(
    server: FakeServer, http: httpx.Client
) -> None:
    response = http.get(f"{server.url}/sessions/{ID}")
    assert response.status_code == 200
    assert response.json() == EXAMPLE
    status_validator().validate(response.json())
    assert response.headers["x-request-id"].startswith("req_")
    [recorded] = server.requests
    assert (recorded.operation_id, recorded.route, recorded.status) == (
        "getSession",
        "/sessions/{session_id}",
        200,
    )
    assert recorded.request_id == response.headers["x-request-id"]


def test_an_id_the_fake_never_issued_gets_the_specs_404(
    server: FakeServer, http: httpx.Client
) -> None:
    response = http.get(f"{server.url}/sessions/sess_never")
    assert response.status_code == 404
    is_json_error(response)
    assert response.json()["error"] == "not_found"
    assert server.requests[-1].status == 404


def test_an_id_the_fake_issued_is_answered_from_the_example(
    server: FakeServer, http: httpx.Client
) -> None:
    started = http.post(
        f"{server.url}/start-session",
        json={
            "avatario_face_id": "face_1",
            "agent_id": "agent-1",
            "livekit": {"url": "wss://lk.test", "token": "t0k3n"},
        },
    )
    assert started.status_code == 200, started.text
    session_id = started.json()["session_id"]
    response = http.get(f"{server.url}/sessions/{session_id}")
    assert response.status_code == 200
    assert response.json() == {**EXAMPLE, "session_id": session_id}


def test_it_is_served_under_the_server_url_path_too(server: FakeServer, http: httpx.Client) -> None:
    assert http.get(f"{server.url}/api/sdk/sessions/{ID}").json() == EXAMPLE


def test_it_needs_the_key(server: FakeServer) -> None:
    for headers in ({}, {"x-api-key": "wrong"}):
        response = httpx.get(f"{server.url}/sessions/{ID}", headers=headers)
        assert response.status_code == 401
        is_json_error(response)


@pytest.mark.parametrize(
    "path",
    [
        "/nowhere",
        "/sessions",
        "/sessions/",  # a path parameter never matches an empty segment
        "/sessions/a/b",
        "/start-session/",
        "/api/sdk",
        "/api/sdk/nowhere",
        "/%FF",
        "/sessions%2Fx",
    ],
)
def test_unknown_routes_are_a_json_404(server: FakeServer, http: httpx.Client, path: str) -> None:
    response = http.get(f"{server.url}{path}")
    assert response.status_code == 404
    is_json_error(response)
    assert server.requests[-1].operation_id is None
    assert server.requests[-1].status == 404


@pytest.mark.parametrize(
    ("raw_id", "decoded"),
    [
        ("%0A", "\n"),
        ("a%0Ab", "a\nb"),
        ("a%2Fb", "a/b"),  # one segment: the slash was encoded
        ("%20", " "),
        ("%C3%A9t%C3%A9", "été"),
        ("%00", "\x00"),
        ("%FF", "\ufffd"),  # not UTF-8: decoded with a replacement character
    ],
)
def test_any_id_in_one_segment_gets_a_json_answer(
    server: FakeServer, http: httpx.Client, raw_id: str, decoded: str
) -> None:
    seen: list[OperationRequest] = []

    def lookup(request: OperationRequest) -> OperationResponse:
        seen.append(request)
        return OperationResponse(
            200, {"session_id": request.path_params["session_id"], "status": "live"}
        )

    server.register_handler("getSession", lookup)
    response = http.get(f"{server.url}/sessions/{raw_id}")
    assert response.status_code == 200
    assert response.json()["session_id"] == decoded
    assert [r.path_params["session_id"] for r in seen] == [decoded]


def test_a_newline_in_an_id_is_answered_in_json_without_a_handler(
    server: FakeServer, http: httpx.Client
) -> None:
    response = http.get(f"{server.url}/sessions/%0A")
    assert response.status_code == 404  # an id the fake never issued
    is_json_error(response)
    assert "\\n" in response.json()["message"]  # the newline quoted as an escape, not a line


def test_another_method_on_a_known_path_is_a_json_405(
    server: FakeServer, http: httpx.Client
) -> None:
    for method, path, allowed in (
        ("DELETE", "/sessions/{ID}", "GET"),
        ("GET", "/start-session", "POST"),
        ("PUT", "/api/sdk/start-session", "POST"),
        ("HEAD", "/start-session", "POST"),
    ):
        response = http.request(method, f"{server.url}{path}")
        assert response.status_code == 405, (method, path)
        assert response.headers["allow"] == allowed
        assert response.headers["x-request-id"].startswith("req_")
        if method != "HEAD":
            is_json_error(response)


def test_faults_apply_to_it(server: FakeServer, http: httpx.Client) -> None:
    server.add_faults("getSession:503:retry-after=1,startSession:500")
    first = http.get(f"{server.url}/sessions/{ID}")
    assert (first.status_code, first.headers["retry-after"]) == (503, "1")
    is_json_error(first)
    assert http.get(f"{server.url}/sessions/{ID}").status_code == 200  # played once
    server.add_faults("getSession:reset")
    with pytest.raises(httpx.TransportError):
        http.get(f"{server.url}/sessions/{ID}")
    server.add_faults("200")  # a 2xx fault answers the documented body without acting
    assert http.get(f"{server.url}/sessions/{ID}").json() == EXAMPLE
    assert [r.fault for r in server.requests] == [
        "getSession:503:retry-after=1",
        None,
        "getSession:reset",
        "200",
    ]
    assert server.faults == "startSession:500"  # still waiting for a start-session request


def test_every_answer_carries_a_request_id(server: FakeServer, http: httpx.Client) -> None:
    answers = [
        http.get(f"{server.url}/sessions/{ID}"),
        httpx.get(f"{server.url}/sessions/{ID}"),
        http.get(f"{server.url}/nowhere"),
        http.post(f"{server.url}/sessions/{ID}"),
        http.post(f"{server.url}/start-session", content=b"{"),
        http.post(f"{server.url}/start-session", json={}),
    ]
    ids = [a.headers["x-request-id"] for a in answers]
    assert len(set(ids)) == len(ids)
    assert [a.status_code for a in answers] == [200, 401, 404, 405, 415, 422]
    assert [r.request_id for r in server.requests] == ids


def test_malformed_http_is_refused_in_json(server: FakeServer) -> None:
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(b"GET /a b c HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b"content-type: application/json" in head.lower()
    assert b"x-request-id: req_" in head.lower()
    validator("Error").validate(json.loads(body))


# -- a schema without an example ------------------------------------------------------------------


def test_without_an_example_the_answer_is_built_from_the_schema() -> None:
    fake = FakeAvatario(api_key=KEY, spec=with_session_lookup(example=False))
    status, body, headers = call_app(fake, "GET", "/sessions/string", headers={"x-api-key": KEY})
    assert status == 200
    status_validator().validate(body)
    assert body == {"session_id": "string", "status": "starting"}  # its id is the example's
    assert headers["x-request-id"].startswith("req_")


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "integer", "minimum": 5, "maximum": 9},
        {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 0.5},
        {"type": "integer", "exclusiveMinimum": 2.5},
        {"type": "integer", "maximum": -3},
        {"type": "number", "exclusiveMaximum": -1},
        {"type": "string", "minLength": 12, "maxLength": 20},
        {"type": "string", "format": "date-time"},
        {"type": "string", "format": "uri"},
        {"type": ["null", "boolean"]},
        {"type": "array", "items": {"type": "string", "format": "uuid"}, "minItems": 2},
        {
            "allOf": [
                {"type": "object", "required": ["a"], "properties": {"a": {"const": 1}}},
                {"type": "object", "required": ["b"], "properties": {"b": {"enum": ["x"]}}},
            ]
        },
        {"oneOf": [{"type": "integer", "minimum": 3}, {"type": "string"}]},
        {"$ref": "#/components/schemas/StartSessionRequest"},
        {"$ref": "#/components/schemas/Error"},
    ],
)
def test_a_minimal_instance_validates_against_its_schema(schema: dict[str, Any]) -> None:
    document = spec()
    instance = schema_example(document, schema)
    cls = jsonschema.Draft202012Validator
    cls(
        {**schema, "components": document["components"]}, format_checker=cls.FORMAT_CHECKER
    ).validate(instance)


# -- parameters ------------------------------------------------------------------------------------


def with_parameters() -> dict[str, Any]:
    document = with_session_lookup()
    document["paths"]["/sessions/{session_id}"]["get"]["parameters"] += [
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}},
        {"name": "tags", "in": "query", "schema": {"type": "array", "items": {"type": "string"}}},
        {
            "name": "X-Trace",
            "in": "header",
            "required": True,
            "schema": {"type": "string", "maxLength": 5},
        },
    ]
    return document


@pytest.mark.parametrize(
    ("query", "headers", "status", "names"),
    [
        ("?limit=3&tags=a&tags=b", {"x-trace": "t"}, 200, None),
        ("?limit=0", {"x-trace": "t"}, 422, "limit (query)"),
        ("?limit=three", {"x-trace": "t"}, 422, "limit (query)"),
        ("", {}, 422, "X-Trace (header): it is required"),
        ("", {"x-trace": "too long"}, 422, "X-Trace (header)"),
    ],
)
def test_parameters_are_checked_against_their_schemas(
    query: str, headers: dict[str, str], status: int, names: str | None
) -> None:
    fake = FakeAvatario(api_key=KEY, spec=with_parameters())
    seen: list[OperationRequest] = []

    def lookup(request: OperationRequest) -> OperationResponse:
        seen.append(request)
        return OperationResponse(200, EXAMPLE)

    fake.register_handler("getSession", lookup)
    answer_status, body, _ = call_app(
        fake, "GET", "/sessions/x", query=query, headers={"x-api-key": KEY, **headers}
    )
    assert answer_status == status
    if names is not None:
        validator("Error").validate(body)
        assert names in body["message"]
    else:
        [request] = seen
        assert request.params == {"session_id": "x", "limit": 3, "tags": ["a", "b"], "X-Trace": "t"}
        assert "x-api-key" not in request.headers


# -- handlers --------------------------------------------------------------------------------------


def test_a_handler_keeps_state_for_a_new_operation() -> None:
    fake = FakeAvatario(api_key=KEY, spec=with_session_lookup())
    statuses = {"sess_a": "live"}

    async def lookup(request: OperationRequest) -> OperationResponse:  # a coroutine works too
        status = statuses.get(request.path_params["session_id"])
        if status is None:
            return request.error(404, "not_found", "No session with that id.")
        assert request.documented is not None
        assert request.documented.body == EXAMPLE
        return OperationResponse(
            200, {"session_id": request.path_params["session_id"], "status": status}
        )

    fake.register_handler("getSession", lookup)
    auth = {"x-api-key": KEY}
    assert call_app(fake, "GET", "/sessions/sess_a", headers=auth)[:2] == (
        200,
        {"session_id": "sess_a", "status": "live"},
    )
    status, body, headers = call_app(fake, "GET", "/sessions/sess_b", headers=auth)
    assert status == 404
    validator("Error").validate(body)
    assert body["request_id"] == headers["x-request-id"]


def test_a_handler_is_registered_for_an_operation_of_the_spec_only() -> None:
    fake = FakeAvatario(api_key=KEY)
    with pytest.raises(ValueError, match=r"no operation 'noSuchOperation'.*startSession"):
        fake.register_handler("noSuchOperation", lambda request: OperationResponse(200))
    assert "startSession" in fake.operation_ids
    assert FakeAvatario(spec=with_session_lookup()).operation_ids == ("getSession", "startSession")


def test_a_failing_handler_is_a_json_500(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeAvatario(api_key=KEY, spec=with_session_lookup())

    def broken(request: OperationRequest) -> OperationResponse:
        raise RuntimeError("boom")

    fake.register_handler("getSession", broken)
    status, body, _ = call_app(fake, "GET", "/sessions/x", headers={"x-api-key": KEY})
    assert status == 500
    validator("Error").validate(body)
    assert "the fake Avatario failed" in caplog.text
    fake.register_handler("getSession", lambda request: {"not": "a response"})  # type: ignore[arg-type,return-value]
    assert call_app(fake, "GET", "/sessions/x", headers={"x-api-key": KEY})[0] == 500
    assert [(r.operation_id, r.status) for r in fake.requests] == [("getSession", 500)] * 2


def test_a_spec_the_fake_cannot_serve_is_refused_with_the_reason() -> None:
    document = with_session_lookup()
    del document["paths"]["/sessions/{session_id}"]["get"]["operationId"]
    with pytest.raises(ValueError, match=r"GET /sessions/\{session_id\} has no operationId"):
        FakeAvatario(spec=document)
    document = with_session_lookup()
    document["components"]["securitySchemes"]["apiKey"] = {"type": "oauth2", "flows": {}}
    with pytest.raises(ValueError, match=r"apiKey .* and http bearer"):
        FakeAvatario(spec=document)
    with pytest.raises(ValueError, match="OpenAPI document"):
        FakeAvatario(spec={"openapi": "3.1.0"})


@pytest.mark.parametrize(
    ("scheme", "query", "headers", "recorded_query"),
    [
        (
            {"type": "apiKey", "in": "query", "name": "key"},
            f"?key={KEY}&x=1",
            {},
            "key=%5Bredacted%5D&x=1",
        ),
        ({"type": "apiKey", "in": "cookie", "name": "key"}, "", {"cookie": f"key={KEY}"}, ""),
        ({"type": "http", "scheme": "bearer"}, "", {"authorization": f"Bearer {KEY}"}, ""),
    ],
)
def test_other_security_schemes_are_checked_and_kept_out_of_records(
    scheme: dict[str, str], query: str, headers: dict[str, str], recorded_query: str
) -> None:
    document = with_session_lookup()
    document["components"]["securitySchemes"]["other"] = scheme
    document["paths"]["/sessions/{session_id}"]["get"]["security"] = [{"other": []}]
    fake = FakeAvatario(api_key=KEY, spec=document)
    assert call_app(fake, "GET", f"/sessions/{ID}", query=query, headers=headers)[0] == 200
    assert call_app(fake, "GET", "/sessions/x", headers={"x-api-key": KEY})[0] == 401
    assert (
        call_app(
            fake, "GET", "/sessions/x", query="?key=wrong", headers={"authorization": "Bearer no"}
        )[0]
        == 401
    )
    recorded = fake.requests[0]
    assert recorded.query == recorded_query
    assert KEY not in repr(recorded)


def test_concrete_paths_win_over_templates() -> None:
    document = with_session_lookup()
    document["paths"]["/sessions/active"] = {
        "get": {
            "operationId": "activeSessions",
            "responses": {
                "200": {"description": "ok", "content": {"application/json": {"example": []}}}
            },
        }
    }
    fake = FakeAvatario(api_key=KEY, spec=document)
    auth = {"x-api-key": KEY}
    assert call_app(fake, "GET", "/sessions/active", headers=auth)[1] == []
    assert call_app(fake, "GET", f"/sessions/{ID}", headers=auth)[1] == EXAMPLE
    assert [r.operation_id for r in fake.requests] == ["activeSessions", "getSession"]


# -- in-process ASGI ------------------------------------------------------------------------------


def call_app(
    fake: FakeAvatario,
    method: str,
    path: str,
    *,
    query: str = "",
    headers: dict[str, str] | None = None,
    body: bytes = b"",
) -> tuple[int, Any, dict[str, str]]:
    """One request through the ASGI app in this thread: (status, JSON body, headers)."""

    async def main() -> tuple[int, Any, dict[str, str]]:
        transport = httpx.ASGITransport(app=fake)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            response = await client.request(method, path + query, headers=headers, content=body)
        data = response.json() if response.content else None
        return response.status_code, data, dict(response.headers)

    return asyncio.run(main())
