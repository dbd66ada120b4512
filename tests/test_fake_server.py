"""The fake Avatario: validation, auth, recording, idempotency and every fault, over sockets."""

from __future__ import annotations

import asyncio
import base64
import email.utils
import hashlib
import hmac
import json
import socket
import time
from collections.abc import Iterator
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
    UnprocessableEntityError,
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


_HTTP: list[httpx.Client] = []


@pytest.fixture(scope="module", autouse=True)
def _http() -> Iterator[None]:
    """One HTTP client for the module's `post` calls (making one per call costs ~20 ms)."""
    with httpx.Client() as client:
        _HTTP.append(client)
        yield
        _HTTP.clear()


def post(server: Any, body: Any = BODY, **headers: str) -> httpx.Response:
    send = {"x-api-key": KEY, **headers}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return _HTTP[0].post(
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
    response = post(server)
    [recorded] = server.requests
    assert recorded.method == "POST"
    assert recorded.path == "/start-session"
    assert (recorded.operation_id, recorded.route) == ("startSession", "/start-session")
    assert recorded.request_id == response.headers["x-request-id"]
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
    validator("Error").validate(response.json())
    assert response.headers["x-request-id"] == response.json()["request_id"]


def test_the_api_sdk_prefix_serves_the_same_operation(server: Any) -> None:
    response = _HTTP[0].post(
        f"{server.url}/api/sdk/start-session", json=BODY, headers={"x-api-key": KEY}
    )
    assert response.status_code == 200
    assert server.requests[0].route == "/start-session"
    assert server.requests[0].path == "/api/sdk/start-session"


def test_a_2xx_fault_answers_the_documented_body_without_starting_a_session(server: Any) -> None:
    server.add_faults("200")
    response = post(server)
    assert response.status_code == 200
    validator("StartSessionResponse").validate(response.json())
    assert server.sessions == []


def test_a_body_past_the_limit_is_refused_in_json(server: Any) -> None:
    response = post(server, b"[" + b" " * (1024 * 1024) + b"]")
    assert response.status_code == 413
    validator("Error").validate(response.json())


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
    # (the connection is reset): an unknown outcome, resent only when the policy says the
    # deployment deduplicates. The retry carries the same key and gets the same session.
    server.add_faults("lost")
    policy = RetryPolicy(initial_delay=0.01, max_delay=0.05, retry_unknown_outcome=True)
    result = call_real(kind, server.url, api_key=KEY, retry=policy)
    assert result.attempts == 2
    assert [r.status for r in server.requests] == [None, 200]
    assert len(server.sessions) == 1
    assert result.session_id == server.sessions[0]["session_id"]


def test_a_lost_response_is_not_resent_by_default(kind: str, server: Any) -> None:
    server.add_faults("lost")
    with pytest.raises(APIConnectionError) as caught:
        call(kind, server)
    assert caught.value.attempts == len(server.requests) == 1
    assert caught.value.may_have_started is True
    assert len(server.sessions) == 1  # it did start: the client must not send it again


def test_wrapper_maps_faults_to_errors(kind: str, server: Any) -> None:
    # Under the default policy a reset, a 500 or a stall after the request went out is an
    # unknown outcome: one attempt, never resent; a malformed 2xx started the session.
    server.add_faults("reset*3")
    with pytest.raises(APIConnectionError) as caught:
        call(kind, server)
    assert caught.value.attempts == 1
    assert server.app.pending_faults == 2
    server.app.clear_faults()
    server.add_faults("malformed")
    with pytest.raises(APIResponseValidationError):
        call(kind, server)
    server.add_faults("500*3")
    with pytest.raises(InternalServerError) as status_error:
        call(kind, server)
    assert status_error.value.attempts == 1
    server.app.clear_faults()
    server.add_faults("stall*3")
    with (
        AvatarioClient(
            KEY, base_url=server.url, timeout=0.2, retry=RetryPolicy(max_attempts=2, max_elapsed=1)
        ) as client,
        pytest.raises(APITimeoutError) as timed_out,
    ):
        client.start_session(**CALL)
    assert timed_out.value.attempts == 1
    assert [r.fault for r in server.requests] == ["reset", "malformed", "500", "stall"]


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
    assert [f.what for f in parse_faults("lost-close,idle-close*2")] == [
        "lost-close",
        "idle-close",
        "idle-close",
    ]


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
        "idle",
        "close",
        "lost-reset",
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


# -- how each connection fault ends the exchange, seen from a raw socket ------------------------


def raw_exchange(server: Any) -> bytes | type[OSError]:
    """Send one valid request on a new socket; what came back: bytes (b"" for a clean EOF)
    or the error class of a reset."""
    body = json.dumps(BODY).encode()
    head = (
        f"POST /start-session HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nx-api-key: {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(head.encode() + body)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            return ConnectionResetError
        return received


@pytest.mark.parametrize(
    ("fault", "ending", "sessions"),
    [
        ("reset", ConnectionResetError, 0),  # RST, not served
        ("lost", ConnectionResetError, 1),  # served, then RST
        ("idle-close", b"", 0),  # FIN, not served
        ("lost-close", b"", 1),  # served, then FIN
    ],
)
def test_connection_faults_end_with_a_reset_or_a_clean_close(
    server: Any, fault: str, ending: Any, sessions: int
) -> None:
    server.add_faults(fault)
    assert raw_exchange(server) == ending
    [recorded] = server.requests
    assert (recorded.fault, recorded.status) == (fault, None)
    assert len(server.sessions) == sessions
    assert post(server).status_code == 200  # the server lives on


def test_idle_close_on_a_kept_alive_connection_is_a_disconnect_not_a_reset(server: Any) -> None:
    # What a pooled client sees in the idle race: its reused connection ends with a clean EOF
    # before any response byte (httpx: RemoteProtocolError, not a ReadError from a reset).
    with httpx.Client(base_url=server.url, headers={"x-api-key": KEY}) as http:
        assert http.post("/start-session", json=BODY).status_code == 200
        server.add_faults("idle-close")
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            http.post("/start-session", json=BODY)
    assert [r.status for r in server.requests] == [200, None]
    assert len(server.sessions) == 1


# -- 415 ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/jsonx", None]
)
def test_a_body_that_is_not_application_json_is_a_415(
    server: Any, content_type: str | None
) -> None:
    headers = {"x-api-key": KEY}
    if content_type is not None:
        headers["content-type"] = content_type
    response = httpx.post(
        f"{server.url}/start-session", content=json.dumps(BODY).encode(), headers=headers
    )
    assert response.status_code == 415
    validator("Error").validate(response.json())
    assert response.json()["error"] == "unsupported_media_type"
    assert server.sessions == []


def test_json_with_parameters_and_any_case_is_accepted(server: Any) -> None:
    response = post(server, **{"content-type": "Application/JSON; charset=utf-8"})
    assert response.status_code == 200


def test_the_key_is_checked_before_the_media_type(server: Any) -> None:
    response = httpx.post(
        f"{server.url}/start-session", content=b"x", headers={"content-type": "text/plain"}
    )
    assert response.status_code == 401


# -- the Idempotency-Key switch ------------------------------------------------------------------


def test_a_fake_that_ignores_the_idempotency_key_starts_a_session_per_request() -> None:
    with run_fake_server(api_key=KEY, honour_idempotency_key=False) as ignoring:
        assert ignoring.honour_idempotency_key is False
        first = post(ignoring, **{"idempotency-key": "k-1"})
        again = post(ignoring, **{"idempotency-key": "k-1"})
        other = post(ignoring, {**BODY, "agent_id": "b"}, **{"idempotency-key": "k-1"})
        unchecked = post(ignoring, **{"idempotency-key": "has space"})
    assert [r.status_code for r in (first, again, other, unchecked)] == [200] * 4
    assert first.json()["session_id"] != again.json()["session_id"]
    assert len(ignoring.sessions) == 4


def test_the_default_fake_honours_the_key(server: Any) -> None:
    assert server.honour_idempotency_key is True
    assert server.app.honour_idempotency_key is True


def test_fake_server_options_go_to_the_app_it_builds() -> None:
    from avatario_wrapper.testing import FakeAvatario, FakeServer

    built = FakeServer(api_key=KEY, faults="503", honour_idempotency_key=False)
    assert (built.api_key, built.app.pending_faults, built.honour_idempotency_key) == (
        KEY,
        1,
        False,
    )
    with pytest.raises(ValueError, match="FakeAvatario"):
        FakeServer(FakeAvatario(), honour_idempotency_key=False)
    with pytest.raises(ValueError, match="both"):
        FakeAvatario(livekit_api_key="lk-key")


# -- LiveKit token verification ------------------------------------------------------------------

LK_KEY = "APIfakeKey0001"
LK_SECRET = "lk-secret-0123456789abcdef0123456789abcdef"  # ≥ 32 bytes, as HS256 wants
AGENT = "agent-7"


def mint(
    *,
    key: str = LK_KEY,
    secret: str = LK_SECRET,
    kind: str = "agent",
    identity: str = "avatario-avatar-agent",
    room: str | None = "room-1",
    room_join: bool = True,
    on_behalf: str | None = AGENT,
    ttl: float = 600,
) -> str:
    """A token minted by LiveKit's own library, as the avatar plugin mints it."""
    import datetime

    from livekit.api import AccessToken, VideoGrants

    token = (
        AccessToken(key, secret)
        .with_kind(kind)  # type: ignore[arg-type]
        .with_identity(identity)
        .with_name("Avatar")
        .with_grants(VideoGrants(room_join=room_join, room=room or ""))
        .with_ttl(datetime.timedelta(seconds=ttl))
    )
    if on_behalf is not None:
        token = token.with_attributes({"lk.publish_on_behalf": on_behalf})
    return token.to_jwt()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_signed(claims: dict[str, Any], *, alg: str = "HS256", secret: str = LK_SECRET) -> str:
    """A JWT built here, for claims LiveKit's library will not write."""
    head = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims).encode())
    signature = hmac.new(secret.encode(), f"{head}.{payload}".encode(), hashlib.sha256).digest()
    return f"{head}.{payload}.{b64(signature)}"


def good_claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": LK_KEY,
        "sub": "avatario-avatar-agent",
        "kind": "agent",
        "nbf": now,
        "exp": now + 600,
        "video": {"roomJoin": True, "room": "room-1"},
        "attributes": {"lk.publish_on_behalf": AGENT},
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


@pytest.fixture(scope="module")
def verifying() -> Any:
    with run_fake_server(api_key=KEY, livekit_api_key=LK_KEY, livekit_api_secret=LK_SECRET) as s:
        yield s


def post_token(server: Any, token: str, agent_id: str = AGENT) -> httpx.Response:
    body = {**BODY, "agent_id": agent_id, "livekit": {"url": "wss://h.example", "token": token}}
    return post(server, body)


def test_a_token_minted_by_livekit_for_the_agent_is_accepted(verifying: Any) -> None:
    before = len(verifying.sessions)
    response = post_token(verifying, mint())
    assert response.status_code == 200
    assert len(verifying.sessions) == before + 1
    assert post_token(verifying, hand_signed(good_claims())).status_code == 200


@pytest.mark.parametrize(
    ("token", "names"),
    [
        (lambda: mint(secret="another-secret-0123456789abcdef0123456789"), "signature"),
        (lambda: mint(key="APIsomeoneElse"), "'iss'"),
        (lambda: mint(ttl=-120), "expired ('exp'"),
        (lambda: hand_signed(good_claims(exp=None)), "no expiry ('exp')"),
        (lambda: hand_signed(good_claims(nbf=int(time.time()) + 300)), "'nbf'"),
        (lambda: mint(kind="standard"), "kind"),
        (lambda: hand_signed(good_claims(sub=None)), "'sub'"),
        (lambda: hand_signed(good_claims(sub="")), "'sub'"),
        (lambda: mint(room_join=False), "video.roomJoin"),
        (lambda: hand_signed(good_claims(video={"roomJoin": True})), "video.room"),
        (lambda: mint(on_behalf=None), "no 'lk.publish_on_behalf' attribute"),
        (lambda: mint(on_behalf="agent-8"), "'lk.publish_on_behalf' attribute is not the"),
        (lambda: hand_signed(good_claims(), alg="none"), "HS256"),
        (lambda: "not-a-jwt", "three dot-separated parts"),
        (lambda: "a.b.c", "base64url"),
        (lambda: f"{b64(b'[]')}.{b64(b'{}')}.{b64(b'x')}", "header is not a JSON object"),
    ],
)
def test_a_bad_token_is_a_422_naming_what_is_wrong(verifying: Any, token: Any, names: str) -> None:
    before = len(verifying.sessions)
    text = token()
    response = post_token(verifying, text)
    assert response.status_code == 422
    validator("Error").validate(response.json())
    message = response.json()["message"]
    assert message.startswith("livekit/token: ")
    assert names in message
    assert text not in message
    assert LK_SECRET not in message
    assert len(verifying.sessions) == before


def test_token_verification_records_nothing_secret(verifying: Any) -> None:
    token = mint()
    post_token(verifying, token)
    shown = repr(verifying.app) + repr(verifying.requests) + json.dumps(verifying.sessions)
    assert LK_SECRET not in shown
    assert token not in shown
    assert verifying.app.verifies_tokens is True


def test_tokens_are_not_checked_without_a_livekit_secret(server: Any) -> None:
    assert server.app.verifies_tokens is False
    assert post_token(server, "anything-at-all").status_code == 200


def test_the_wrapper_sends_a_livekit_token_the_verifying_fake_accepts(verifying: Any) -> None:
    with AvatarioClient(KEY, base_url=verifying.url, retry=FAST) as client:
        result = client.start_session(**{**CALL, "livekit_token": mint(on_behalf="agent-7")})
        with pytest.raises(UnprocessableEntityError, match=r"lk\.publish_on_behalf"):
            client.start_session(**{**CALL, "livekit_token": mint(on_behalf="someone-else")})
    assert result.session_id
