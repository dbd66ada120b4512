"""httpx transports, sync and async, and the socket wrappers that hold them to the deadline.

httpx times each phase (connect, write, each read) separately, so a server that trickles its
status line, headers or body a byte at a time could stretch an attempt without end. The
clients therefore wrap the connection pool's network backend (`_Backend`): every connect,
TLS handshake, read and write is given at most the time left before the attempt's deadline
(connecting, at most what is left of ``connect_timeout``), and one past it fails at once. The
same wrappers record how far the exchange got, which is how a failure is classified as "not
sent" or "unknown" (`base.Exchange`). A pool passed in as `http_client` gets the wrappers too
(they do nothing for its other requests); where they cannot be installed (a custom or mock
transport), the exception's type alone classifies a failure and the async transport bounds
the whole exchange with the loop's attempt timer (`base.Deadlines`).

After each reply the connection it came on is looked at before it goes back to the pool
(`_after_reply`): bytes left over after a complete response (a second response, a body on a
204 or a HEAD) make it unusable, so an answer is never taken for a request it does not
answer; and a server's ``Keep-Alive: timeout=N`` sets how long it may idle (`base`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import ssl
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeVar

import httpcore
import httpx

from .._reply import Body, Reply
from .._request import PreparedRequest
from .._settings import resolve_proxy
from .._text import REDACTED
from ..errors import APIConnectionError, ClientClosedError
from .base import (
    CLOSED_MESSAGE,
    CURRENT,
    KEEPALIVE_EXPIRY,
    Exchange,
    LoopBinding,
    close_from_outside,
    close_inherited,
    connection_error,
    exchange_within,
    fork_generation,
    is_timeout,
    keepalive_expiry,
    track,
)

T = TypeVar("T")

#: httpx exceptions after which the request cannot have reached the server whole.
_NOT_SENT = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.ProxyError,
    httpx.UnsupportedProtocol,
    httpx.LocalProtocolError,
)


def _cut(timeout: float | None, error: type[Exception]) -> float | None:
    exchange = CURRENT.get()
    if exchange is None:
        return timeout
    exchange.observed = True
    left = exchange.time_left()
    if left <= 0:
        raise error("the attempt's deadline passed")
    return left if timeout is None else min(timeout, left)


def _cut_connect(timeout: float | None) -> float | None:
    exchange = CURRENT.get()
    if exchange is None:
        return timeout
    exchange.observed = True
    left = exchange.connect_time_left()
    if left <= 0:
        raise httpcore.ConnectTimeout("connect_timeout or the attempt's deadline passed")
    return left if timeout is None else min(timeout, left)


def _wrote() -> None:
    exchange = CURRENT.get()
    if exchange is not None:
        exchange.wrote = True


def _opened() -> None:
    exchange = CURRENT.get()
    if exchange is not None:
        exchange.fresh = True


class _Stream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner
        self.unusable = False  # bytes no request asked for are waiting: never reuse it

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _cut(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        timeout = _cut(timeout, httpcore.WriteTimeout)
        _wrote()
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        timeout = _cut_connect(timeout)
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable" and self.unusable:
            return True  # what httpcore reads as "the server closed it": dropped, not reused
        return self._inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        timeout = _cut_connect(timeout)
        _opened()
        return _Stream(self._inner.connect_tcp(host, port, timeout, local_address, socket_options))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        timeout = _cut_connect(timeout)
        _opened()
        return _Stream(self._inner.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _AsyncStream(httpcore.AsyncNetworkStream):
    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner
        self.unusable = False  # bytes no request asked for are waiting: never reuse it

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, _cut(timeout, httpcore.ReadTimeout))

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        timeout = _cut(timeout, httpcore.WriteTimeout)
        _wrote()
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        timeout = _cut_connect(timeout)
        try:
            return _AsyncStream(await self._inner.start_tls(ssl_context, server_hostname, timeout))
        except BaseException:
            # httpcore closes the TCP stream when the handshake fails, not when the task is
            # cancelled during it: the socket would stay open.
            await _close_shielded(self._inner)
            raise

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable" and self.unusable:
            return True  # what httpcore reads as "the server closed it": dropped, not reused
        return self._inner.get_extra_info(info)


async def _close_shielded(stream: httpcore.AsyncNetworkStream) -> None:
    import anyio  # noqa: PLC0415 - httpx's own dependency; only on this rare path

    with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
        await stream.aclose()


class _AsyncBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, inner: httpcore.AsyncNetworkBackend) -> None:
        self._inner = inner

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        timeout = _cut_connect(timeout)
        _opened()
        return _AsyncStream(
            await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        )

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.AsyncNetworkStream:
        timeout = _cut_connect(timeout)
        _opened()
        return _AsyncStream(await self._inner.connect_unix_socket(path, timeout, socket_options))

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def watch(http: httpx.Client | httpx.AsyncClient) -> bool:
    """Wrap the network backend of `http`'s connection pools; False where there is none.

    Connections opened from now on are watched; ones already pooled are not.
    """
    transports = [http._transport, *http._mounts.values()]
    watched = False
    for transport in transports:
        pool = getattr(transport, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        if backend is None:
            continue
        if not isinstance(backend, (_Backend, _AsyncBackend)):
            wrapper = _AsyncBackend if isinstance(http, httpx.AsyncClient) else _Backend
            pool._network_backend = wrapper(backend)  # type: ignore[union-attr]
        watched = True
    return watched


def own_client(kind: type[T], base_url: str, timeout: float) -> T:
    """A pool made by the client: proxies resolved like every transport's, TLS verified
    (``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` honoured), redirects off, ~/.netrc not read, idle
    connections not reused after `KEEPALIVE_EXPIRY` (unless the server says longer)."""
    proxy = resolve_proxy(base_url)
    return kind(  # type: ignore[call-arg]
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
        proxy=proxy[1] if proxy else None,
        verify=_ssl_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")),
        limits=httpx.Limits(keepalive_expiry=KEEPALIVE_EXPIRY),
    )


@functools.lru_cache(maxsize=4)
def _ssl_context(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    """One verifying TLS context per set of CA locations, shared by the pools the clients
    make: loading the CA bundle costs tens of milliseconds, and a context is safe to share
    across pools and threads. The arguments are the environment's ``SSL_CERT_FILE`` and
    ``SSL_CERT_DIR``, which httpx reads (so a change of either gets a new context)."""
    return httpx.create_ssl_context(trust_env=True)


def _pools(http: httpx.Client | httpx.AsyncClient) -> list[Any]:
    transports = [http._transport, *http._mounts.values()]
    return [pool for t in transports if (pool := getattr(t, "_pool", None)) is not None]


def _connection(response: httpx.Response) -> Any:
    """The httpcore HTTP/1.1 connection a streamed response came on, or None (a mock transport,
    HTTP/2, another httpcore layout)."""
    stream = getattr(getattr(response.stream, "_stream", None), "_httpcore_stream", None)
    return getattr(getattr(stream, "_stream", None), "_connection", None)


def _after_reply(response: httpx.Response, *, complete: bool, owned: bool) -> None:
    """Before the connection goes back to the pool: never reuse it if bytes no request asked
    for are waiting on it (a complete response was followed by more); let it idle as long as
    the server's ``Keep-Alive: timeout=N`` allows (a pool of ours) or no longer than that (a
    pool passed in)."""
    stream = response.extensions.get("network_stream")
    if not isinstance(stream, (_Stream, _AsyncStream)):
        return
    connection = _connection(response)
    if connection is None:
        return
    if complete:
        h11_state = getattr(connection, "_h11_state", None)
        leftover = getattr(h11_state, "trailing_data", (b"", False))
        if leftover[0]:
            stream.unusable = True
            return
    expiry = keepalive_expiry(response.headers)
    if expiry is not None and expiry <= 0:
        stream.unusable = True  # the server keeps it too briefly to reuse safely
        return
    if expiry is not None and hasattr(connection, "_keepalive_expiry"):
        current = connection._keepalive_expiry
        if owned or current is None or expiry < current:
            connection._keepalive_expiry = expiry


def _inherited_sockets(http: httpx.Client | httpx.AsyncClient) -> list[Any]:
    """The sockets of `http`'s pooled connections (taken out of its pools)."""
    sockets = []
    for pool in _pools(http):
        connections = list(getattr(pool, "_connections", []))
        for connection in connections:
            inner = getattr(connection, "_connection", None)
            stream = getattr(inner, "_network_stream", None)
            sock = stream.get_extra_info("socket") if stream is not None else None
            if sock is not None:
                sockets.append(sock)
        if hasattr(pool, "_connections"):
            pool._connections = []
    return sockets


E = TypeVar("E", bound=BaseException)


def _scrub(exc: E) -> E:
    """`exc` with the API key masked in the request it carries (kept as a `__cause__`)."""
    try:
        sent = exc.request  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):  # not an httpx error, or one without a request
        return exc
    if isinstance(sent, httpx.Request) and "x-api-key" in sent.headers:
        sent.headers["x-api-key"] = REDACTED
    return exc


def _failure(
    request: PreparedRequest[Any], exchange: Exchange, exc: Exception
) -> APIConnectionError:
    """The one place an httpx exception becomes ours; timeouts are classified here, once."""
    _scrub(exc)
    timed_out = isinstance(exc, httpx.TimeoutException) or is_timeout(exc)
    outcome = exchange.outcome(not_sent=isinstance(exc, _NOT_SENT))
    return connection_error(
        request, exc, timed_out=timed_out, outcome=outcome, connecting=_connecting(exc)
    )


def _closed_error() -> ClientClosedError:
    return ClientClosedError(CLOSED_MESSAGE)


#: Parsed URLs kept per pool of ours (one per operation path; ids in paths make more).
_MAX_URLS = 64


class _Builder:
    """Builds each attempt's `httpx.Request`.

    On a pool the client made, the request is built directly from the prepared one: its
    headers are complete, the pool has no defaults, cookies or parameters to merge, and the
    parsed URL is kept, so httpx's `build_request` (URL parsing and header merging on every
    call) is skipped; a pool of ours therefore sends no cookies a server set. A pool passed in
    goes through `build_request`, so its own default headers, cookies and parameters apply.
    """

    __slots__ = ("_urls", "owned")

    def __init__(self, *, owned: bool) -> None:
        self.owned = owned
        self._urls: dict[str, httpx.URL] = {}

    def __call__(
        self,
        http: httpx.Client | httpx.AsyncClient,
        request: PreparedRequest[Any],
        timeout: float,
        connect_timeout: float,
    ) -> httpx.Request:
        if not self.owned:
            return http.build_request(
                request.method,
                request.url,
                content=request.content,
                headers=request.headers,
                timeout=httpx.Timeout(timeout, connect=connect_timeout),
            )
        url = self._urls.get(request.url)
        if url is None:
            if len(self._urls) >= _MAX_URLS:
                self._urls.clear()
            url = self._urls[request.url] = httpx.URL(request.url)
        return httpx.Request(
            request.method,
            url,
            content=request.content,
            headers=request.headers,
            extensions={
                "timeout": {
                    "connect": connect_timeout,
                    "read": timeout,
                    "write": timeout,
                    "pool": timeout,
                }
            },
        )


def _keep(body: Body, chunk: bytes, exchange: Exchange, *, in_memory: bool) -> bool:
    """Feed `chunk`; True when reading should stop (limit passed, or the time is up while
    more may come: a body already in memory, as a mock transport gives, has all arrived)."""
    if body.feed(chunk):
        return True
    if not in_memory and exchange.time_left() <= 0:
        body.fail(httpx.ReadTimeout("the attempt's time ran out during the body"))
        return True
    return False


def _connecting(exc: Exception) -> bool:
    return isinstance(exc, httpx.ConnectTimeout)


class HttpxTransport:
    """Sends with an `httpx.Client`: redirects never followed, bodies read raw and bounded."""

    def __init__(self, http: httpx.Client | None, *, base_url: str, timeout: float) -> None:
        self.owns = http is None
        self._base_url, self._timeout = base_url, timeout
        self.http = http if http is not None else own_client(httpx.Client, base_url, timeout)
        watch(self.http)
        self._build = _Builder(owned=self.owns)
        self._closed = False
        self._generation = track(self)

    @property
    def closed(self) -> bool:
        return self._closed or self.http.is_closed

    def _after_fork(self) -> None:
        """In a child process: drop the parent's connections, keep working with new ones."""
        close_inherited(_inherited_sockets(self.http))
        if self.owns:
            self.http = own_client(httpx.Client, self._base_url, self._timeout)
            watch(self.http)
        self._generation = fork_generation()

    def send(self, request: PreparedRequest[Any], timeout: float, connect_timeout: float) -> Reply:
        if self.closed:
            raise _closed_error()
        if self._generation != fork_generation():
            self._after_fork()
        http = self.http
        exchange = Exchange(timeout, connect_timeout)
        token = CURRENT.set(exchange)
        try:
            try:
                response = http.send(
                    self._build(http, request, timeout, connect_timeout),
                    stream=True,
                    follow_redirects=False,
                )
            except httpx.HTTPError as exc:
                raise _failure(request, exchange, exc) from exc
            body = _body(response)
            in_memory = response.is_stream_consumed
            complete = False
            try:
                for chunk in _raw(response):
                    if _keep(body, chunk, exchange, in_memory=in_memory):
                        break
                else:
                    complete = True
            except httpx.HTTPError as exc:
                body.fail(_scrub(exc))
            finally:
                _after_reply(response, complete=complete, owned=self.owns)
                response.close()
            return Reply(response.status_code, response.reason_phrase, response.headers, body)
        finally:
            CURRENT.reset(token)

    def close(self) -> None:
        self._closed = True
        if self.owns:
            self.http.close()


def _body(response: httpx.Response) -> Body:
    if response.is_stream_consumed:  # built in memory (a mock transport): already decoded
        return Body(response.status_code)
    return Body(response.status_code, response.headers.get("content-encoding"))


def _raw(response: httpx.Response) -> Iterator[bytes]:
    """The body's raw bytes. Read from the stream itself, not `iter_raw`, which closes the
    response (handing its connection back to the pool) before `_after_reply` has looked."""
    if response.is_stream_consumed:
        return iter((response.content,))
    stream = response.stream
    if not isinstance(stream, httpx.SyncByteStream):
        raise TypeError("an async response on the sync client")
    return iter(stream)


class AsyncHttpxTransport:
    """Sends with an `httpx.AsyncClient`: the same as `HttpxTransport`, awaited. Where the
    socket wrappers could not be installed (a custom transport), the whole exchange is bounded
    by the attempt's timeout instead."""

    def __init__(self, http: httpx.AsyncClient | None, *, base_url: str, timeout: float) -> None:
        self.owns = http is None
        self._base_url, self._timeout = base_url, timeout
        self.http = http if http is not None else own_client(httpx.AsyncClient, base_url, timeout)
        self._watched = watch(self.http)
        self._build = _Builder(owned=self.owns)
        self._closed = False
        self._loop = LoopBinding()
        self._generation = track(self)

    @property
    def closed(self) -> bool:
        return self._closed or self.http.is_closed

    def _after_fork(self) -> None:
        """In a child process: drop the parent's connections; a pool of ours starts afresh
        (and may serve the child's own event loop)."""
        close_inherited(_inherited_sockets(self.http))
        if self.owns:
            self.http = own_client(httpx.AsyncClient, self._base_url, self._timeout)
            self._watched = watch(self.http)
            self._loop = LoopBinding()
        self._generation = fork_generation()

    async def send(
        self, request: PreparedRequest[Any], timeout: float, connect_timeout: float
    ) -> Reply:
        if self.closed:
            raise _closed_error()
        if self._generation != fork_generation():
            self._after_fork()
        self._loop.check("AsyncAvatarioClient")
        exchange = Exchange(timeout, connect_timeout)
        return await exchange_within(
            request,
            exchange,
            lambda got: self._exchange(request, timeout, connect_timeout, exchange, got),
            # The socket wrappers hold every phase to the deadline and httpx's pool timeout
            # bounds the wait for a connection (not sent); without them, bound it all here.
            bound=None if self._watched else timeout,
            caught=lambda exc: isinstance(exc, httpx.HTTPError) or is_timeout(exc),
            failure=_failure,
            deadlines=self._loop.deadlines(),
        )

    async def _exchange(
        self,
        request: PreparedRequest[Any],
        timeout: float,
        connect_timeout: float,
        exchange: Exchange,
        got: list[Reply],
    ) -> Reply:
        http = self.http
        response = await http.send(
            self._build(http, request, timeout, connect_timeout),
            stream=True,
            follow_redirects=False,
        )
        body = _body(response)
        reply = Reply(response.status_code, response.reason_phrase, response.headers, body)
        got.append(reply)
        in_memory = response.is_stream_consumed
        complete = False
        try:
            async for chunk in _araw(response):
                if _keep(body, chunk, exchange, in_memory=in_memory):
                    break
            else:
                complete = True
        except httpx.HTTPError as exc:
            body.fail(_scrub(exc))
        finally:
            _after_reply(response, complete=complete, owned=self.owns)
            await response.aclose()
        return reply

    async def aclose(self) -> None:
        self._closed = True
        if not self.owns:
            return
        if self._loop.is_other():  # its connections belong to a loop not running here
            waiting = close_from_outside(self._loop.loop, self.http.aclose, in_a_coroutine=True)
            if waiting is not None:
                with contextlib.suppress(Exception):
                    await waiting
            return
        await self.http.aclose()

    def close_from_sync(self) -> None:
        """`aclose` for synchronous code (a sync fixture's teardown): no loop runs here."""
        self._closed = True
        if self.owns and self._loop.loop is not None:
            close_from_outside(self._loop.loop, self.http.aclose, in_a_coroutine=False)


async def _araw(response: httpx.Response) -> AsyncIterator[bytes]:
    """The body's raw bytes, read from the stream itself (see `_raw`)."""
    if response.is_stream_consumed:
        yield response.content
        return
    stream = response.stream
    if not isinstance(stream, httpx.AsyncByteStream):
        raise TypeError("a sync response on the async client")
    async for chunk in stream:
        yield chunk
