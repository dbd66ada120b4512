"""Construction: env fallbacks, the base-URL rule, policies, options, reprs."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from avatario_wrapper import (
    AsyncAvatarioClient,
    AvatarioClient,
    AvatarioConfigError,
    RetryPolicy,
    StartSessionResult,
    VideoOptions,
)

from .conftest import API_KEY, CALL, TOKEN, Script, ok


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AVATARIO_API_KEY", raising=False)
    monkeypatch.delenv("AVATARIO_BASE_URL", raising=False)


@pytest.mark.parametrize("cls", [AvatarioClient, AsyncAvatarioClient])
def test_no_key_is_a_config_error_naming_the_env_var(cls: type) -> None:
    with pytest.raises(AvatarioConfigError, match="AVATARIO_API_KEY") as caught:
        cls()
    assert caught.value.field == "api_key"


def test_key_and_base_url_fall_back_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVATARIO_API_KEY", API_KEY)
    monkeypatch.setenv("AVATARIO_BASE_URL", "https://staging.avatario.test/sdk/")
    script = Script(ok())
    with AvatarioClient(http_client=httpx.Client(transport=httpx.MockTransport(script))) as c:
        assert c.base_url == "https://staging.avatario.test/sdk"
        c.start_session(**CALL)
    [request] = script.requests
    assert request.headers["x-api-key"] == API_KEY
    assert str(request.url) == "https://staging.avatario.test/sdk/start-session"


def test_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVATARIO_API_KEY", "from-env")
    monkeypatch.setenv("AVATARIO_BASE_URL", "https://env.example")
    client = AvatarioClient("from-arg", base_url="https://arg.example")
    assert client.base_url == "https://arg.example"
    assert client._settings.api_key == "from-arg"
    client.close()


def test_the_default_base_url_is_production() -> None:
    with AvatarioClient(API_KEY) as client:
        assert client.base_url == "https://avatario.ai/api/sdk"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080",
        "http://127.8.9.10",
        "http://localhost:1234/api",
        "http://[::1]:9000",
        "https://example.com",
    ],
)
def test_https_or_loopback_is_accepted(url: str) -> None:
    AvatarioClient(API_KEY, base_url=url).close()


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://avatario.ai/api/sdk", "must use https"),
        ("http://10.0.0.5", "must use https"),
        ("http://localhost.evil.com", "must use https"),
        ("ftp://avatario.ai", "absolute http"),
        ("avatario.ai/api", "absolute http"),
        ("https://user:pass@avatario.ai", "credentials"),
        ("https://avatario.ai/?x=1", "query"),
    ],
)
def test_bad_base_urls_are_refused_before_any_io(url: str, problem: str) -> None:
    script = Script(ok())
    with pytest.raises(AvatarioConfigError, match=problem) as caught:
        AvatarioClient(
            API_KEY, base_url=url, http_client=httpx.Client(transport=httpx.MockTransport(script))
        )
    assert caught.value.field == "base_url"
    assert script.requests == []


def test_plain_http_can_be_allowed_explicitly() -> None:
    client = AvatarioClient(API_KEY, base_url="http://avatario.internal", allow_insecure_http=True)
    assert client.base_url == "http://avatario.internal"
    client.close()


@pytest.mark.parametrize("key", ["has space", "line\nbreak", "tab\t"])
def test_keys_that_cannot_be_a_header_are_refused_without_echo(key: str) -> None:
    with pytest.raises(AvatarioConfigError) as caught:
        AvatarioClient(key)
    assert key not in str(caught.value)


def test_tls_verification_is_on_for_owned_pools() -> None:
    with AvatarioClient(API_KEY) as client:
        http = client._transport.http
        pool = http._transport._pool  # type: ignore[attr-defined]
        assert pool._ssl_context.verify_mode.name == "CERT_REQUIRED"
        assert http.follow_redirects is False


def test_repr_hides_the_key() -> None:
    client = AvatarioClient(API_KEY, timeout=3.0)
    text = repr(client)
    assert API_KEY not in text
    assert "api_key='***'" in text
    assert "timeout=3.0" in text
    assert API_KEY not in repr(client._settings)
    client.close()


def test_with_options_shares_the_pool_and_never_closes_it() -> None:
    client = AvatarioClient(API_KEY, base_url="https://a.example")
    fast = client.with_options(timeout=1.5, retry=RetryPolicy(max_attempts=1))
    assert fast._transport is client._transport
    assert (fast.timeout, fast.retry.max_attempts) == (1.5, 1)
    assert (client.timeout, client.retry.max_attempts) == (10.0, 3)
    fast.close()
    assert not client._transport.http.is_closed
    client.close()
    assert client._transport.http.is_closed


def test_with_options_applies_its_own_settings_per_call() -> None:
    script = Script(ok())
    with httpx.Client(transport=httpx.MockTransport(script)) as http:
        client = AvatarioClient(API_KEY, base_url="https://a.example", http_client=http)
        client.with_options(timeout=1.5).start_session(**CALL)
        client.start_session(**CALL)
    timeouts = [r.extensions["timeout"]["read"] for r in script.requests]
    assert timeouts == [1.5, 10.0]


def test_an_injected_pool_is_not_closed_by_the_client() -> None:
    http = httpx.Client()
    with AvatarioClient(API_KEY, http_client=http):
        pass
    assert not http.is_closed
    http.close()


def test_async_client_sends_over_aiohttp_when_installed_and_closes_it() -> None:
    from avatario_wrapper._transports.aiohttp import AiohttpTransport

    async def main() -> None:
        async with AsyncAvatarioClient(API_KEY) as client:
            sender = client._transport
            assert isinstance(sender, AiohttpTransport)
            session = sender._open()
        assert session.closed

    asyncio.run(main())


def test_async_client_uses_a_given_httpx_pool_and_leaves_it_open() -> None:
    from avatario_wrapper._transports.httpx import AsyncHttpxTransport

    async def main() -> None:
        async with httpx.AsyncClient() as http:
            async with AsyncAvatarioClient(API_KEY, http_client=http) as client:
                assert isinstance(client._transport, AsyncHttpxTransport)
            assert not http.is_closed

    asyncio.run(main())


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"initial_delay": -1}, "initial_delay"),
        ({"max_delay": float("nan")}, "max_delay"),
        ({"max_elapsed": 0}, "max_elapsed"),
        ({"max_retry_after": float("inf")}, "max_retry_after"),
        ({"retry_statuses": {200, 503}}, "retry_statuses"),
        ({"retry_statuses": {42}}, "retry_statuses"),
    ],
)
def test_bad_retry_policies_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(AvatarioConfigError) as caught:
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_retry_policy_defaults_are_as_designed() -> None:
    policy = RetryPolicy()
    assert policy.max_attempts == 3
    assert policy.initial_delay == 0.5
    assert policy.max_delay == 8.0
    assert policy.max_elapsed == 30.0
    assert policy.respect_retry_after is True
    assert policy.max_retry_after == 60.0
    assert policy.retry_statuses == frozenset({408, 429, 500, 502, 503, 504})
    assert RetryPolicy.no_retries().max_attempts == 1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"height": 0}, "height"),
        ({"width": 4097}, "width"),
        ({"background_url": "ftp://x.example/a.png"}, "background_url"),
        ({"background_url": "not a url"}, "background_url"),
        ({"background_url": "https://user:pass@cdn.example/a.png"}, "background_url"),
        ({"background_url": "https://cdn.example/a\u202egnp.exe"}, "background_url"),
        ({"background_url": "https://cdn.example/a%E2%80%AEgnp.exe"}, "background_url"),
    ],
)
def test_bad_video_options_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(AvatarioConfigError) as caught:
        VideoOptions(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_video_sizes_must_be_ints() -> None:
    with pytest.raises(TypeError, match="height must be an int"):
        VideoOptions(height=720.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        VideoOptions(width=True)


def test_value_types_are_frozen() -> None:
    result = StartSessionResult(
        session_id="s", data={}, request_id=None, attempts=1, status_code=200
    )
    with pytest.raises(AttributeError):
        result.session_id = "other"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        RetryPolicy().max_attempts = 9  # type: ignore[misc]
    assert TOKEN not in repr(VideoOptions())


def test_a_plain_livekit_url_beyond_loopback_needs_the_clients_allowance() -> None:
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={"session_id": "s"})

    call = {**CALL, "livekit_url": "ws://livekit.internal:7880"}
    with httpx.Client(transport=httpx.MockTransport(answer)) as http:
        strict = AvatarioClient(API_KEY, base_url="https://x.test", http_client=http)
        with pytest.raises(AvatarioConfigError) as refused:
            strict.start_session(**call)
        assert refused.value.field == "livekit_url"
        assert sent == []  # refused before any I/O
        allowed = AvatarioClient(
            API_KEY, base_url="https://x.test", http_client=http, allow_insecure_http=True
        )
        assert allowed.start_session(**call).session_id == "s"
        assert allowed.with_options(timeout=3.0).start_session(**call).session_id == "s"
    assert [r.read() and json.loads(r.content)["livekit"]["url"] for r in sent] == [
        "ws://livekit.internal:7880"
    ] * 2
