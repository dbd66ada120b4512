"""Proxies and CA locations from the environment, on every transport, set at run time.

A CONNECT proxy on 127.0.0.1 tunnels to a TLS server on 127.0.0.1 whose certificate (made by
trustme) names ``avatario.test``: the client is told its base URL is
``https://avatario.test:PORT`` (not loopback, so it goes through the proxy, which dials the
real address). The proxy checks its credentials, refuses with a 407, or never answers the
CONNECT. Every variable is set after the package was imported, before the client is made.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import select
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme

from avatario_wrapper import (
    APIConnectionError,
    APITimeoutError,
    AsyncAvatarioClient,
    AvatarioClient,
    Outcome,
    RetryPolicy,
    StartSessionResult,
)

from .conftest import API_KEY, CALL
from .loopback import http_response, loopback

pytestmark = pytest.mark.integration

USER = "proxyuser"
PASSWORD = "proxy-PASSWORD-s3cr3t"
OK = http_response(200, b'{"session_id": "via-proxy"}')
KINDS = ["sync", "async-aiohttp", "async-httpx"]
_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "SSL_CERT_FILE", "SSL_CERT_DIR")


class ConnectProxy:
    """A CONNECT proxy: ``tunnel`` (credentials checked, then bytes relayed to the TLS
    server), ``407``, or ``silent`` (reads the CONNECT, never answers)."""

    def __init__(self, mode: str, target_port: int) -> None:
        self.mode = mode
        self.target_port = target_port
        self.connects: list[bytes] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def url(self, *, credentials: bool = True) -> str:
        userinfo = f"{USER}:{PASSWORD}@" if credentials else ""
        return f"http://{userinfo}127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        head = b""
        with contextlib.suppress(OSError):
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
        self.connects.append(head)
        if self.mode == "silent":
            self._held.append(conn)
            return
        expected = base64.b64encode(f"{USER}:{PASSWORD}".encode())
        if self.mode == "407" or b"Basic " + expected not in head:
            conn.sendall(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b'Proxy-Authenticate: Basic realm="t"\r\nContent-Length: 0\r\n\r\n'
            )
            conn.close()
            return
        upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
        conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self._relay(conn, upstream)

    def _relay(self, a: socket.socket, b: socket.socket) -> None:
        with a, b, contextlib.suppress(OSError):
            while not self._stop.is_set():
                ready, _, _ = select.select([a, b], [], [], 0.1)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (b if sock is a else a).sendall(data)

    def __enter__(self) -> ConnectProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()
        for conn in self._held:
            conn.close()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("avatario.test", "localhost").configure_cert(context)
    return context


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "async-httpx":  # the async client's own httpx pool, aiohttp or not
        monkeypatch.setattr("avatario_wrapper._clients._aiohttp_fits", lambda environment: False)
    return str(request.param)


def call(kind: str, base_url: str, retry: RetryPolicy, **options: Any) -> Any:
    """One start_session on a client of `kind` made now (it reads the environment now)."""
    if kind == "sync":
        with AvatarioClient(API_KEY, base_url=base_url, retry=retry, **options) as client:
            return client.start_session(**CALL)

    async def main() -> Any:
        async with contextlib.AsyncExitStack() as stack:
            if kind == "async-aiohttp-caller":  # a worker's session, proxies its own business
                options["http_client"] = await stack.enter_async_context(
                    aiohttp.ClientSession(trust_env=True)
                )
            client = await stack.enter_async_context(
                AsyncAvatarioClient(API_KEY, base_url=base_url, retry=retry, **options)
            )
            return await client.start_session(**CALL)

    return asyncio.run(main())


def secret_free(*texts: object) -> None:
    encoded = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    for text in texts:
        assert PASSWORD not in str(text)
        assert encoded not in str(text)


# -- a tunnel, with credentials --------------------------------------------------------------


def test_a_proxy_with_credentials_tunnels_the_call(
    kind: str, server_tls: ssl.SSLContext, ca_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with loopback(OK, tls=server_tls) as server, ConnectProxy("tunnel", server.port) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url())
        monkeypatch.setenv("SSL_CERT_FILE", ca_file)
        result = call(kind, f"https://avatario.test:{server.port}/api/sdk", RetryPolicy())
    assert isinstance(result, StartSessionResult)
    assert result.session_id == "via-proxy"
    [connect] = proxy.connects
    assert connect.startswith(f"CONNECT avatario.test:{server.port} ".encode())
    assert len(server.requests) == 1


# -- a proxy that refuses, or never answers: not sent, retried ---------------------------------


@pytest.mark.parametrize("kind", [*KINDS, "async-aiohttp-caller"], indirect=True)
def test_a_proxys_refusal_is_not_sent_and_never_shows_its_credentials(
    kind: str,
    server_tls: ssl.SSLContext,
    ca_file: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    policy = RetryPolicy(max_attempts=2, initial_delay=0.0, retry_budget=None)
    with loopback(OK, tls=server_tls) as server, ConnectProxy("407", server.port) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url())
        monkeypatch.setenv("SSL_CERT_FILE", ca_file)
        with pytest.raises(APIConnectionError) as caught:
            call(kind, f"https://avatario.test:{server.port}/api/sdk", policy)
    error = caught.value
    assert error.outcome is Outcome.NOT_SENT
    assert error.may_have_started is False
    assert error.attempts == 2 == len(proxy.connects)  # not sent, so retried
    assert server.requests == []
    chain: list[BaseException] = []
    link: BaseException | None = error
    while link is not None:
        chain.append(link)
        link = link.__cause__ or link.__context__
    secret_free(str(error), repr(error), caplog.text, *map(repr, chain), *map(str, chain))


def test_a_connect_the_proxy_never_answers_is_bounded_by_connect_timeout(
    kind: str, server_tls: ssl.SSLContext, ca_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = RetryPolicy(max_attempts=2, initial_delay=0.0, retry_budget=None)
    with loopback(OK, tls=server_tls) as server, ConnectProxy("silent", server.port) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url())
        monkeypatch.setenv("SSL_CERT_FILE", ca_file)
        began = time.monotonic()
        with pytest.raises(APITimeoutError) as caught:
            call(
                kind,
                f"https://avatario.test:{server.port}/api/sdk",
                policy,
                timeout=20.0,
                connect_timeout=0.5,
            )
        took = time.monotonic() - began
    error = caught.value
    assert error.outcome is Outcome.NOT_SENT
    assert error.may_have_started is False
    assert error.attempts == 2 == len(proxy.connects)
    # Two attempts of connect_timeout each, far from the 20 s attempt timeout (loaded-machine
    # margin; the precise bound is scripts/bench's business).
    assert took < 8.0
    secret_free(str(error))


# -- the environment as it is when the client is made ----------------------------------------


def test_ssl_cert_file_set_at_run_time_is_trusted(
    kind: str, server_tls: ssl.SSLContext, ca_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    once = RetryPolicy(max_attempts=1)
    with loopback(OK, OK, tls=server_tls) as server:
        url = f"https://localhost:{server.port}/api/sdk"
        with pytest.raises(APIConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            call(kind, url, once)
        monkeypatch.setenv("SSL_CERT_FILE", ca_file)
        assert call(kind, url, once).session_id == "via-proxy"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to hash a CA folder")
def test_ssl_cert_dir_set_at_run_time_is_trusted(
    kind: str,
    server_tls: ssl.SSLContext,
    ca_file: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = tmp_path / "certs"
    folder.mkdir()
    digest = subprocess.run(
        ["openssl", "x509", "-hash", "-noout", "-in", ca_file],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    shutil.copy(ca_file, folder / f"{digest}.0")
    with loopback(OK, tls=server_tls) as server:
        monkeypatch.setenv("SSL_CERT_DIR", str(folder))
        result = call(kind, f"https://localhost:{server.port}/api/sdk", RetryPolicy())
    assert result.session_id == "via-proxy"


def test_no_proxy_set_at_run_time_bypasses_the_proxy(
    kind: str, server_tls: ssl.SSLContext, ca_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The proxy would refuse; NO_PROXY names the host, so the call goes to it directly
    # (avatario.test resolves to nothing here: a name resolved through the proxy only).
    with ConnectProxy("407", 9) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url())
        monkeypatch.setenv("NO_PROXY", "localhost")
        monkeypatch.setenv("SSL_CERT_FILE", ca_file)
        with loopback(OK, tls=server_tls) as server:
            result = call(kind, f"https://localhost:{server.port}/api/sdk", RetryPolicy())
    assert result.session_id == "via-proxy"
    assert proxy.connects == []


def test_a_variable_set_after_the_client_was_made_changes_nothing(
    kind: str, server_tls: ssl.SSLContext, ca_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    once = RetryPolicy(max_attempts=1)

    async def twice(url: str) -> None:
        async with AsyncAvatarioClient(API_KEY, base_url=url, retry=once) as client:
            monkeypatch.setenv("SSL_CERT_FILE", ca_file)  # too late for this client
            with pytest.raises(APIConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
                await client.start_session(**CALL)

    with loopback(OK, tls=server_tls) as server:
        url = f"https://localhost:{server.port}/api/sdk"
        if kind == "sync":
            with AvatarioClient(API_KEY, base_url=url, retry=once) as client:
                monkeypatch.setenv("SSL_CERT_FILE", ca_file)
                with pytest.raises(APIConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
                    client.start_session(**CALL)
        else:
            asyncio.run(twice(url))
