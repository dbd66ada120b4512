"""The fake's guards, over sockets: it answers only requests addressed to it (DNS rebinding),
and no key a client put in a path, a query string or a header is kept in what it records,
reports or logs."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from avatario_wrapper.testing import FakeAvatario, FakeServer, OperationRequest, run_fake_server
from avatario_wrapper.testing._shared_fake import describe

from .spec_helpers import validator
from .test_fake_server import BODY, KEY
from .test_fake_spec import call_app, with_session_lookup

pytestmark = pytest.mark.integration

#: A real key sent to the fake by mistake: not the fake's own, and kept nowhere either.
REAL_KEY = "sk_live_REAL_KEY_by_mistake_42"
LK_KEY = "APIguardTest01"
LK_SECRET = "lk_guard_SECRET_0123456789abcdef"


@pytest.fixture
def server() -> Any:
    with run_fake_server(api_key=KEY) as running:
        yield running


def post(url: str, *, host: str | None = None, key: str = KEY) -> httpx.Response:
    headers = {"x-api-key": key} if host is None else {"x-api-key": key, "host": host}
    return httpx.post(f"{url}/start-session", json=BODY, headers=headers)


# -- the Host header ----------------------------------------------------------------------------


def test_a_request_for_another_host_is_a_421_and_starts_nothing(server: Any) -> None:
    port = server.port
    for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1:{port + 1}", f"[::2]:{port}"):
        response = post(server.url, host=host)
        assert response.status_code == 421, host
        validator("Error").validate(response.json())
        assert response.json()["error"] == "misdirected_request"
        assert "DNS rebinding" in response.json()["message"]
    assert server.sessions == []
    assert [r.status for r in server.requests] == [421] * 4
    assert all(r.operation_id is None for r in server.requests)


def test_the_loopback_names_and_the_bound_address_with_its_port_are_answered(server: Any) -> None:
    port = server.port
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST.:{port}", f"[::1]:{port}"):
        assert post(server.url, host=host).status_code == 200, host
    assert post(server.url).status_code == 200  # what httpx sends by itself
    assert len(server.sessions) == 5


def test_the_control_endpoint_is_guarded_too() -> None:
    with run_fake_server(api_key=KEY, control=True) as server:
        control = f"{server.url}/_fake/faults"
        headers = {"x-api-key": KEY, "host": f"evil.example:{server.port}"}
        assert httpx.put(control, content="503", headers=headers).status_code == 421
        assert server.faults == ""
        assert httpx.get(control, headers={"x-api-key": KEY}).status_code == 200


def test_another_name_can_be_allowed() -> None:
    app = FakeAvatario(api_key=KEY)
    app.allow_host("DevBox.test")
    with FakeServer(app) as server:
        assert post(server.url, host=f"devbox.test:{server.port}").status_code == 200
        assert post(server.url, host=f"devbox.test:{server.port + 1}").status_code == 421
        assert post(server.url, host=f"other.test:{server.port}").status_code == 421


def test_the_host_a_server_is_told_to_bind_is_answered() -> None:
    with run_fake_server(api_key=KEY, host="localhost") as server:
        assert post(server.url, host=f"localhost:{server.port}").status_code == 200
    with run_fake_server(api_key=KEY, host="::1") as server:
        assert server.url.startswith("http://[::1]:")
        assert post(server.url).status_code == 200


def test_in_process_the_app_answers_the_host_its_transport_names() -> None:
    fake = FakeAvatario(api_key=KEY)  # httpx's ASGITransport: server = the URL's host and port
    status, _, _ = call_app(fake, "POST", "/start-session", headers={"x-api-key": KEY})
    assert status != 421
    status, _, _ = call_app(
        fake, "POST", "/start-session", headers={"x-api-key": KEY, "host": "evil.example"}
    )
    assert status == 421


# -- keys in paths, query strings and headers ---------------------------------------------------


def test_no_key_is_recorded_from_a_path_a_query_or_a_header() -> None:
    with run_fake_server(
        api_key=KEY, livekit_api_key=LK_KEY, livekit_api_secret=LK_SECRET
    ) as server:
        with httpx.Client() as http:
            http.post(f"{server.url}/start-session/{KEY}?api_key={KEY}&page=2", json=BODY)
            http.post(
                f"{server.url}/start-session?token={LK_SECRET}&next=%2F{REAL_KEY}",
                json=BODY,
                headers={"x-api-key": REAL_KEY, "referer": f"https://a.test/?k={REAL_KEY}"},
            )
            http.post(
                f"{server.url}/start-session/{KEY.upper()}",
                headers={"authorization": f"Bearer {REAL_KEY}"},
            )
        first, second, third = server.requests
        assert first.path == "/start-session/[redacted]"
        assert first.query == "api_key=%5Bredacted%5D&page=2"
        assert second.query == "token=%5Bredacted%5D&next=%2F[redacted]"
        assert second.headers["x-api-key"] == "[redacted]"
        assert second.headers["referer"] == "https://a.test/?k=[redacted]"
        assert third.path == f"/start-session/{KEY.upper()}"  # not a key: kept as sent
        assert third.headers["authorization"] == "[redacted]"
        shown = repr(server.requests) + describe(server)
        for secret in (KEY, REAL_KEY, LK_SECRET):
            assert secret not in shown
        assert "POST /start-session/[redacted] -> 404" in describe(server)


def test_the_log_of_a_failing_handler_shows_no_key_from_the_path(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeAvatario(api_key=KEY, spec=with_session_lookup())

    def broken(request: OperationRequest) -> Any:
        raise RuntimeError("boom")

    fake.register_handler("getSession", broken)
    with caplog.at_level(logging.ERROR, logger="avatario_wrapper.testing"):
        status, _, _ = call_app(fake, "GET", f"/sessions/{KEY}", headers={"x-api-key": KEY})
    assert status == 500
    assert "the fake Avatario failed on GET /sessions/[redacted]" in caplog.text
    assert KEY not in caplog.text
    assert fake.requests[0].path == "/sessions/[redacted]"


def test_the_control_endpoint_never_echoes_a_key_it_is_given() -> None:
    with run_fake_server(api_key=KEY, control=True) as server:
        control = f"{server.url}/_fake/faults"
        answers = [
            httpx.get(f"{control}?api_key={REAL_KEY}"),
            httpx.put(f"{control}?seed={REAL_KEY}", content="503", headers={"x-api-key": KEY}),
            httpx.get(control, headers={"x-api-key": KEY}),
        ]
    assert [a.status_code for a in answers] == [401, 400, 200]
    for answer in answers:
        assert REAL_KEY not in answer.text
