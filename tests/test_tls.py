"""TLS with certificates made at test time (trustme): verified by default, custom CA works."""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import Any

import httpx
import pytest
import trustme

from avatario_wrapper import APIConnectionError, AsyncAvatarioClient, AvatarioClient, RetryPolicy

from .conftest import API_KEY, CALL, TRANSPORT_ERRORS
from .loopback import http_response, loopback

pytestmark = pytest.mark.integration

OK = http_response(200, json.dumps({"session_id": "tls-1"}).encode())
ONCE = RetryPolicy(max_attempts=1)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture(scope="module")
def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def test_sync_client_verifies_certificates_by_default(server_tls: ssl.SSLContext) -> None:
    with loopback(OK, tls=server_tls) as server:
        with AvatarioClient(API_KEY, base_url=server.url, retry=ONCE) as client:
            with pytest.raises(APIConnectionError) as caught:
                client.start_session(**CALL)
    assert server.requests == []  # nothing was sent over the untrusted connection
    assert isinstance(caught.value.__cause__, TRANSPORT_ERRORS)
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)


@pytest.mark.parametrize("sender", ["aiohttp", "httpx"])
def test_async_client_verifies_certificates_by_default(
    server_tls: ssl.SSLContext, sender: str
) -> None:
    async def main(url: str) -> None:
        http = httpx.AsyncClient() if sender == "httpx" else None
        async with AsyncAvatarioClient(API_KEY, base_url=url, retry=ONCE, http_client=http) as c:
            await c.start_session(**CALL)

    with loopback(OK, tls=server_tls) as server:
        with pytest.raises(APIConnectionError) as caught:
            asyncio.run(main(server.url))
    assert server.requests == []
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)


def test_a_custom_ca_through_http_client_works(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    with loopback(OK, tls=server_tls) as server:
        with (
            httpx.Client(verify=client_tls) as http,
            AvatarioClient(API_KEY, base_url=server.url, http_client=http) as client,
        ):
            result = client.start_session(**CALL)
    assert result.session_id == "tls-1"
    assert len(server.requests) == 1


def test_a_custom_ca_through_an_async_http_client_works(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    async def main(url: str) -> Any:
        async with httpx.AsyncClient(verify=client_tls) as http:
            async with AsyncAvatarioClient(API_KEY, base_url=url, http_client=http) as client:
                return await client.start_session(**CALL)

    with loopback(OK, tls=server_tls) as server:
        assert asyncio.run(main(server.url)).session_id == "tls-1"


def test_plain_http_to_a_remote_host_is_refused_before_any_io() -> None:
    from avatario_wrapper import AvatarioConfigError

    sent: list[httpx.Request] = []
    http = httpx.Client(
        transport=httpx.MockTransport(lambda r: sent.append(r) or httpx.Response(200))
    )
    with pytest.raises(AvatarioConfigError, match="https"):
        AvatarioClient(API_KEY, base_url="http://avatario.ai/api/sdk", http_client=http)
    assert sent == []
