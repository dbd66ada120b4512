"""The fake Avatario: validation, auth, recording, idempotency and every fault, over sockets."""

from __future__ import annotations

import asyncio
import email.utils
import json
import socket
import time
from typing import Any

import httpx
import pytest

from avatario_wrapper import (
    APIConnectionError,
    APIResponseValidationError,
    APITimeoutError,
    AsyncAvatarioClient,
    AuthenticationError,
    AvatarioClient,
    InternalServerError,
    MissingAgentIdentityError,
    RateLimitError,
    RetryPolicy,
)
from avatario_wrapper.testing import Fault, parse_faults, run_fake_server
from avatario_wrapper.testing.faults import FaultSyntaxError

from .conftest import CALL, TOKEN, call_real
from .spec_helpers import validator

pytestmark = pytest.mark.integration

KEY = "sk_fake_server_key_0001"
FAST = RetryPolicy(initial_delay=0.01, max_delay=0.05)
BODY = {
    "avatario_face_id": "f",
    "agent_id": "a",
    "livekit": {"url": "wss://h.example", "token": "t0k"},
}


@pytest.fixture
def server() -> Any:
    with run_fake_server(api_key=KEY) as running:
        yield running


def post(server: Any, body: Any = BODY, **headers: str) -> httpx.Response:
    send = {"x-api-key": KEY, **headers}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(
        f"{server.url}/start-session",
        content=content,
        headers={"content-type": "application/json", **{k: v for k, v in send.items() if v}},
    )


def test_binds_loopback_only(server: Any) -> None:
    assert server.url.startswith("http://127.0.0.1:")


def test_a_valid_request_starts_a_session_with_a_spec_valid_response(server: Any) -> None:
    response = post(server)
    assert response.status_code == 200
    validator("StartSessionResponse").validate(response.json())
    assert response.json()["session_id"].startswith("sess_")
    assert response.headers["x-request-id"].startswith("req_")
    assert len(server.sessions) == 1


@pytest.mark.parametrize("key", [None, "wrong"])
def test_a_missing_or_wrong_key_is_a_401(server: Any, key: str | None) -> None:
    response = post(server, **{"x-api-key": key or ""})
    assert response.status_code == 401
    validator("Error").validate(response.json())
    assert server.sessions == []


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"not json", 400),
        (b"[1, 2]", 400),
        ({**BODY, "agent_id": ""}, 422),
        ({**BODY, "extra": 1}, 422),
        ({k: v for k, v in BODY.items() if k != "livekit"}, 422),
        ({**BODY, "video_height": 0}, 422),
        ({**BODY, "custom_background_url": "not a uri"}, 422),
    ],
)
def test_schema_violations_get_the_spec_error(server: Any, body: Any, status: int) -> None:
    response = post(server, body)
    assert response.status_code == status
    validator("Error").validate(response.json())
    assert server.sessions == []


def test_a_bad_idempotency_key_is_a_422(server: Any) -> None:
    response = post(server, **{"idempotency-key": "has space"})
    assert response.status_code == 422
    assert "Idempotency-Key" in response.json()["message"]


def test_requests_are_recorded_with_the_key_redacted(server: Any) -> None:
    post(server)
    [recorded] = server.requests
    assert recorded.method == "POST"
    assert recorded.path == "/start-session"
    assert recorded.headers["x-api-key"] == "[redacted]"
    assert recorded.json() == BODY
    assert recorded.status == 200
    assert abs(recorded.time - time.time()) < 60
    assert KEY not in repr(server.requests)
    assert server.sessions[0]["payload"]["livekit"]["token"] == "[redacted]"


def test_the_same_idempotency_key_returns_the_same_session(server: Any) -> None:
    first = post(server, **{"idempotency-key": "k-1"})
    again = post(server, **{"idempotency-key": "k-1"})
    other = post(server, {**BODY, "agent_id": "b"}, **{"idempotency-key": "k-1"})
    assert first.json()["session_id"] == again.json()["session_id"]
    assert other.status_code == 409
    assert len(server.sessions) == 1


def test_undocumented_methods_are_refused(server: Any) -> None:
    response = httpx.get(f"{server.url}/start-session")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


def test_status_faults_with_retry_after_in_seconds_and_as_a_date(server: Any) -> None:
    server.add_faults("429:retry-after=3,503:retry-after=date+30,503:retry-after-ms=250")
    first, second, third, fourth = (post(server) for _ in range(4))
    assert (first.status_code, first.headers["retry-after"]) == (429, "3")
    when = email.utils.parsedate_to_datetime(second.headers["retry-after"])
    assert 25 < when.timestamp() - time.time() <= 31
    assert third.headers["retry-after-ms"] == "250"
    validator("Error").validate(first.json())
    assert fourth.status_code == 200
    assert [r.fault for r in server.requests][:3] == [
        "429:retry-after=3",
        "503:retry-after=date+30",
        "503:retry-after-ms=250",
    ]


def test_delay_fault_waits_before_answering(server: Any) -> None:
    server.add_faults("ok:delay=0.3")
    started = time.monotonic()
    assert post(server).status_code == 200
    assert time.monotonic() - started >= 0.3


def test_malformed_fault_is_a_200_that_is_not_json(server: Any) -> None:
    server.add_faults("malformed")
    response = post(server)
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_reset_fault_drops_the_connection_without_a_response(server: Any) -> None:
    server.add_faults("reset")
    with pytest.raises(httpx.TransportError):
        post(server)
    assert server.requests[0].status is None
    assert post(server).status_code == 200  # the server lives on


def test_stall_fault_never_answers(server: Any) -> None:
    server.add_faults("stall")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{server.url}/start-session", json=BODY, headers={"x-api-key": KEY}, timeout=0.3
        )


# -- the wrapper against the fake, sync and async ---------------------------------------------


def call(kind: str, server: Any, key: str = KEY, **overrides: Any) -> Any:
    return call_real(kind, server.url, api_key=key, retry=FAST, **overrides)


@pytest.fixture
def kind(real_kind: str) -> str:
    return real_kind


def test_wrapper_success(kind: str, server: Any) -> None:
    result = call(kind, server)
    assert result.session_id == server.sessions[0]["session_id"]
    assert result.request_id == server.requests[0].headers.get("x-request-id") or result.request_id
    assert result.data["agent_id"] == CALL["agent_identity"]
    assert TOKEN not in json.dumps(server.sessions)


def test_wrapper_recovers_from_a_5xx_burst_with_one_session(kind: str, server: Any) -> None:
    server.add_faults("503*2")
    result = call(kind, server)
    assert result.attempts == 3
    assert len(server.sessions) == 1
    assert len({r.headers["idempotency-key"] for r in server.requests}) == 1


def test_wrapper_honours_retry_after(kind: str, server: Any) -> None:
    server.add_faults("429:retry-after=0.4")
    started = time.monotonic()
    result = call(kind, server)
    assert result.attempts == 2
    first, second = server.requests
    assert second.time - first.time >= 0.35
    assert time.monotonic() - started >= 0.4


def test_wrapper_gives_up_on_a_retry_after_past_the_limit(kind: str, server: Any) -> None:
    server.add_faults("429:retry-after=600")
    with pytest.raises(RateLimitError) as caught:
        call(kind, server)
    assert caught.value.retry_after == 600
    assert len(server.requests) == 1


def test_wrapper_does_not_retry_a_401(kind: str, server: Any) -> None:
    with pytest.raises(AuthenticationError) as caught:
        call(kind, server, key="not-the-key")
    assert caught.value.attempts == 1
    assert len(server.requests) == 1


def test_wrapper_precondition_sends_nothing(kind: str, server: Any) -> None:
    with pytest.raises(MissingAgentIdentityError):
        call(kind, server, agent_identity="")
    assert server.requests == []


def test_an_idempotent_retry_after_a_lost_response_starts_one_session(
    kind: str, server: Any
) -> None:
    # The first attempt reaches the server and starts the session, but the response is lost
    # (the connection is reset); the retry carries the same key and gets the same session.
    server.add_faults("lost")
    result = call(kind, server)
    assert result.attempts == 2
    assert [r.status for r in server.requests] == [None, 200]
    assert len(server.sessions) == 1
    assert result.session_id == server.sessions[0]["session_id"]


def test_wrapper_maps_faults_to_errors(kind: str, server: Any) -> None:
    server.add_faults("reset*3")
    with pytest.raises(APIConnectionError):
        call(kind, server)
    server.add_faults("malformed")
    with pytest.raises(APIResponseValidationError):
        call(kind, server)
    server.add_faults("500*3")
    with pytest.raises(InternalServerError):
        call(kind, server)
    server.add_faults("stall*3")
    with (
        AvatarioClient(
            KEY, base_url=server.url, timeout=0.2, retry=RetryPolicy(max_attempts=2, max_elapsed=1)
        ) as client,
        pytest.raises(APITimeoutError),
    ):
        client.start_session(**CALL)


def test_async_context_manager_runs_the_server() -> None:
    async def main() -> int:
        async with run_fake_server(api_key=KEY) as server:
            async with AsyncAvatarioClient(KEY, base_url=server.url) as client:
                await client.start_session(**CALL)
            return len(server.sessions)

    assert asyncio.run(main()) == 1


def test_stop_frees_the_port() -> None:
    with run_fake_server(api_key=KEY) as server:
        port = server.port
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


# -- the fault grammar --------------------------------------------------------------------------


def test_fault_grammar() -> None:
    assert parse_faults("") == []
    assert parse_faults("503*2, ok") == [Fault("503"), Fault("503"), Fault("ok")]
    [step] = parse_faults("429:retry-after=date+2:delay=0.5")
    assert (step.status, step.retry_after, step.delay) == (429, "date+2", 0.5)
    assert parse_faults("stall,reset,lost,malformed")[3].status is None


def test_the_fake_compares_requests_with_defaults_filled_in(server: Any) -> None:
    explicit = {**BODY, "video_height": 720, "video_width": 1280, "custom_background_url": None}
    first = post(server, BODY, **{"idempotency-key": "same"})
    second = post(server, explicit, **{"idempotency-key": "same"})
    assert first.json()["session_id"] == second.json()["session_id"]


@pytest.mark.parametrize(
    "script",
    [
        "boom",
        "503*0",
        "503*x",
        "99",
        "600",
        "503:retry-after",
        "503:retry-after=-1",
        "503:colour=red",
        "ok,,ok",
        "ok:delay=nan",
    ],
)
def test_bad_fault_scripts_say_what_is_wrong(script: str) -> None:
    with pytest.raises(FaultSyntaxError):
        parse_faults(script)


def test_faults_can_be_inspected_cleared_and_the_fake_reset(server: Any) -> None:
    server.add_faults("503*2,reset")
    assert server.app.pending_faults == 3
    server.app.clear_faults()
    assert server.app.pending_faults == 0
    assert post(server, **{"idempotency-key": "k-reset"}).status_code == 200
    assert len(server.requests) == len(server.sessions) == 1
    server.app.reset()
    assert server.requests == []
    assert server.sessions == []
    # The idempotency key is forgotten too: the same key starts a new session.
    assert post(server, **{"idempotency-key": "k-reset"}).status_code == 200
    assert len(server.sessions) == 1


def test_a_client_that_leaves_before_its_body_arrives_is_recorded_not_crashed() -> None:
    from avatario_wrapper.testing import FakeAvatario

    fake = FakeAvatario(api_key=KEY, faults="503")
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/start-session",
        "raw_path": b"/start-session",
        "query_string": b"",
        "headers": [(b"content-length", b"10")],
        "http_version": "1.1",
        "scheme": "http",
        "server": ("127.0.0.1", 1),
        "client": ("127.0.0.1", 2),
        "root_path": "",
    }
    asyncio.run(fake(scope, receive, send))
    [recorded] = fake.requests
    assert recorded.status is None
    assert fake.pending_faults == 1  # the fault is kept for a request that can take it
