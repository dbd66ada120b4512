"""examples/service.py: the FastAPI service, against the fake through the pytest plugin.

The service's one client is the plugin's ``async_avatario_client`` (so the marker's faults,
retry policy and timeout apply), handed to the lifespan through the example's
``client_factory``; fastapi's TestClient runs the lifespan and the requests on one event loop.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import time
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest
from fastapi.testclient import TestClient

from avatario_wrapper import AsyncAvatarioClient, AvatarioConfigError, RetryPolicy
from avatario_wrapper.testing import FakeServer

from .spec_helpers import ROOT

pytestmark = pytest.mark.integration

BODY = {
    "avatar_id": "face_1",
    "agent_identity": "agent-7",
    "livekit_url": "wss://rooms.example.com",
    "livekit_token": "t.t.t",
}
NO_RETRIES = RetryPolicy.no_retries()
FAST = RetryPolicy(initial_delay=0.01, max_delay=0.01)


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("service_example", ROOT / "examples/service.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic resolves the models' annotations through it
    spec.loader.exec_module(module)
    return module


service_example = _load()


@pytest.fixture
def service(async_avatario_client: AsyncAvatarioClient) -> Iterator[TestClient]:
    app = service_example.create_app(lambda: async_avatario_client)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def started(fake: FakeServer) -> list[Any]:
    """The start-session requests the fake saw (the warm-up's HEAD left out)."""
    return [r for r in fake.requests if r.operation_id == "startSession"]


def eventually(predicate: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + 10
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_an_avatar_starts(service: TestClient, fake_avatario: FakeServer) -> None:
    response = service.post("/avatars", json=BODY)
    assert response.status_code == 201
    answer = response.json()
    [session] = fake_avatario.sessions
    assert answer["session_id"] == session["session_id"]
    assert answer["attempts"] == 1
    [request] = started(fake_avatario)
    assert request.headers["idempotency-key"] == answer["idempotency_key"]
    # The warm-up opened a connection ahead of the call: a HEAD with no key, no session.
    assert eventually(lambda: any(r.method == "HEAD" for r in fake_avatario.requests))
    head = next(r for r in fake_avatario.requests if r.method == "HEAD")
    assert "x-api-key" not in head.headers


def test_the_service_reads_its_configuration_from_the_environment(
    fake_avatario: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AVATARIO_API_KEY", fake_avatario.api_key)
    monkeypatch.setenv("AVATARIO_BASE_URL", fake_avatario.url)
    with TestClient(service_example.create_app()) as client:
        assert client.post("/avatars", json=BODY).status_code == 201
    assert len(fake_avatario.sessions) == 1


def test_a_missing_api_key_stops_the_service_at_start_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AVATARIO_API_KEY", raising=False)
    with (
        pytest.raises(AvatarioConfigError, match="AVATARIO_API_KEY"),
        TestClient(service_example.create_app()),
    ):
        pass


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**BODY, "agent_identity": " "}, "agent_identity"),  # the client's own check
        ({**BODY, "livekit_url": "ftp://rooms.example.com"}, "livekit_url"),
        ({**BODY, "idempotency_key": "has spaces\n"}, "idempotency_key"),
    ],
)
def test_the_callers_bad_input_is_a_422(
    service: TestClient, fake_avatario: FakeServer, body: dict[str, Any], field: str
) -> None:
    response = service.post("/avatars", json=body)
    assert response.status_code == 422
    assert response.json()["field"] == field
    assert started(fake_avatario) == []  # refused before anything was sent


def test_a_body_of_the_wrong_shape_is_fastapis_422(
    service: TestClient, fake_avatario: FakeServer
) -> None:
    response = service.post("/avatars", json={"avatar_id": "face_1"})
    assert response.status_code == 422
    assert started(fake_avatario) == []


@pytest.mark.parametrize(
    "fake_avatario", [{"faults": "401"}, {"faults": "403"}], indirect=True, ids=["401", "403"]
)
def test_our_own_misconfiguration_is_a_500_that_says_nothing(
    service: TestClient, fake_avatario: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    response = service.post("/avatars", json=BODY)
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error"}  # no status, key or request id
    [request] = started(fake_avatario)
    assert "refused this service's credentials" in caplog.text  # the owner's log says why
    assert request.request_id in caplog.text


@pytest.mark.avatario(faults="429:retry-after=7", retry=RetryPolicy(max_retry_after=1))
def test_a_rate_limit_is_a_503_with_avatarios_retry_after(
    service: TestClient, fake_avatario: FakeServer
) -> None:
    response = service.post("/avatars", json=BODY)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "7"
    assert len(started(fake_avatario)) == 1  # a wait that long is the caller's, not ours


@pytest.mark.avatario(faults="503*3", retry=FAST)
def test_refusals_past_the_retries_are_a_503(
    service: TestClient, fake_avatario: FakeServer
) -> None:
    response = service.post("/avatars", json=BODY)
    assert response.status_code == 503
    assert response.headers["retry-after"] == str(service_example.DEFAULT_RETRY_AFTER)
    assert len(started(fake_avatario)) == 3
    assert fake_avatario.sessions == []


@pytest.mark.parametrize(
    ("fake_avatario", "status"),
    [
        ({"faults": "500"}, 502),
        ({"faults": "reset"}, 502),
        ({"faults": "lost"}, 502),
        ({"faults": "malformed"}, 502),  # a 2xx whose body is not a session
        ({"faults": "stall", "timeout": 0.3, "retry": NO_RETRIES}, 504),
    ],
    indirect=["fake_avatario"],
    ids=["500", "reset", "lost", "malformed", "timeout"],
)
def test_an_unknown_outcome_hands_back_the_idempotency_key(
    service: TestClient, fake_avatario: FakeServer, status: int
) -> None:
    response = service.post("/avatars", json=BODY)
    assert response.status_code == status
    key = response.json()["idempotency_key"]
    [request] = started(fake_avatario)
    assert request.headers["idempotency-key"] == key
    # The caller sends the same call again with that key: the avatar starts once.
    again = service.post("/avatars", json={**BODY, "idempotency_key": key})
    assert again.status_code == 201
    assert len(fake_avatario.sessions) == 1
    assert again.json()["session_id"] == fake_avatario.sessions[0]["session_id"]


def test_a_key_used_for_another_request_is_a_409(
    service: TestClient, fake_avatario: FakeServer
) -> None:
    assert service.post("/avatars", json={**BODY, "idempotency_key": "order-42"}).status_code == 201
    other = {**BODY, "avatar_id": "face_2", "idempotency_key": "order-42"}
    assert service.post("/avatars", json=other).status_code == 409
    assert len(fake_avatario.sessions) == 1


@pytest.mark.avatario(
    livekit_api_key="APIserviceTest1", livekit_api_secret="lk-secret-service-0123456789abcdef012"
)
def test_avatario_refusing_the_callers_token_is_their_422(service: TestClient) -> None:
    response = service.post("/avatars", json=BODY)  # "t.t.t" is no LiveKit token
    assert response.status_code == 422
    assert "token" in response.json()["detail"]


@pytest.mark.parametrize("fake_avatario", [{"faults": "404"}], indirect=True)
def test_an_unknown_avatar_is_the_callers_422(service: TestClient) -> None:
    assert service.post("/avatars", json=BODY).status_code == 422


@pytest.mark.parametrize("fake_avatario", [{"faults": "418"}], indirect=True)
def test_any_other_answer_is_a_502(service: TestClient) -> None:
    response = service.post("/avatars", json=BODY)
    assert response.status_code == 502
    assert "idempotency_key" not in response.json()  # Avatario did not act on it


@pytest.mark.avatario(own_server=True, retry=NO_RETRIES)
def test_the_service_starts_while_avatario_is_unreachable(
    async_avatario_client: AsyncAvatarioClient,
    fake_avatario: FakeServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_avatario.stop()  # nothing listens at its address any more
    caplog.set_level(logging.WARNING, logger="avatar_service")
    app = service_example.create_app(lambda: async_avatario_client)
    with TestClient(app) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        response = client.post("/avatars", json=BODY)
        assert response.status_code == 503
        assert response.headers["retry-after"] == str(service_example.DEFAULT_RETRY_AFTER)
        assert eventually(lambda: "Avatario warm-up failed" in caplog.text)
