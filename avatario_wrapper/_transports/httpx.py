"""httpx transports, sync and async, and the socket wrappers that hold them to the deadline.

httpx times each phase (connect, write, each read) separately, so a server that trickles its
status line, headers or body a byte at a time could stretch an attempt without end. The
clients therefore wrap the connection pool's network backend (`_Backend`): every connect,
TLS handshake, read and write is given at most the time left before the attempt's deadline,
and one past it fails at once. The same wrappers record how far the exchange got, which is
how a failure is classified as "not sent" or "unknown" (`base.Exchange`). A pool passed in as
`http_client` gets the wrappers too (they do nothing for its other requests); where they cannot
be installed (a custom or mock transport), the exception's type alone classifies a failure.
The async transport also bounds the whole exchange with `asyncio.timeout`.
"""

from __future__ import annotations

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
    Exchange,
    connection_error,
    exchange_within,
    is_timeout,
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


def _saw(data: bytes) -> bytes:
    exchange = CURRENT.get()
    if exchange is not None:
        if data:
            exchange.received = True
        elif not exchange.received:
            exchange.eof_before_response = True
    return data


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

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return _saw(self._inner.read(max_bytes, _cut(timeout, httpcore.ReadTimeout)))

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
        timeout = _cut(timeout, httpcore.ConnectTimeout)
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
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
        timeout = _cut(timeout, httpcore.ConnectTimeout)
        _opened()
        return _Stream(self._inner.connect_tcp(host, port, timeout, local_address, socket_options))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        timeout = _cut(timeout, httpcore.ConnectTimeout)
        _opened()
        return _Stream(self._inner.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _AsyncStream(httpcore.AsyncNetworkStream):
    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return _saw(await self._inner.read(max_bytes, _cut(timeout, httpcore.ReadTimeout)))

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
        timeout = _cut(timeout, httpcore.ConnectTimeout)
        return _AsyncStream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


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
        timeout = _cut(timeout, httpcore.ConnectTimeout)
        _opened()
        return _AsyncStream(
            await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        )

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.AsyncNetworkStream:
        timeout = _cut(timeout, httpcore.ConnectTimeout)
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
    (``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` honoured), redirects off, ~/.netrc not read."""
    proxy = resolve_proxy(base_url)
    return kind(  # type: ignore[call-arg]
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
        proxy=proxy[1] if proxy else None,
        verify=httpx.create_ssl_context(trust_env=True),
    )


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
    return connection_error(request, exc, timed_out=timed_out, outcome=outcome)


def _closed_error() -> ClientClosedError:
    return ClientClosedError(CLOSED_MESSAGE)


def _build(
    http: httpx.Client | httpx.AsyncClient, request: PreparedRequest[Any], timeout: float
) -> httpx.Request:
    return http.build_request(
        request.method,
        request.url,
        content=request.content,
        headers=request.headers,
        timeout=timeout,
    )


def _keep(body: Body, chunk: bytes, exchange: Exchange) -> bool:
    """Feed `chunk`; True when reading should stop (limit passed, or the time is up)."""
    if body.feed(chunk):
        return True
    if exchange.time_left() <= 0:
        body.fail(httpx.ReadTimeout("the attempt's time ran out during the body"))
        return True
    return False


class HttpxTransport:
    """Sends with an `httpx.Client`: redirects never followed, bodies read raw and bounded."""

    def __init__(self, http: httpx.Client | None, *, base_url: str, timeout: float) -> None:
        self.owns = http is None
        self.http = http if http is not None else own_client(httpx.Client, base_url, timeout)
        watch(self.http)
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed or self.http.is_closed

    def send(self, request: PreparedRequest[Any], timeout: float) -> Reply:
        if self.closed:
            raise _closed_error()
        exchange = Exchange(timeout)
        token = CURRENT.set(exchange)
        try:
            try:
                response = self.http.send(
                    _build(self.http, request, timeout), stream=True, follow_redirects=False
                )
            except httpx.HTTPError as exc:
                raise _failure(request, exchange, exc) from exc
            body = _body(response)
            try:
                for chunk in _raw(response):
                    if _keep(body, chunk, exchange):
                        break
            except httpx.HTTPError as exc:
                body.fail(_scrub(exc))
            finally:
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
    if response.is_stream_consumed:
        return iter((response.content,))
    return response.iter_raw()


class AsyncHttpxTransport:
    """Sends with an `httpx.AsyncClient`: the same as `HttpxTransport`, awaited, and the
    whole exchange (headers and body) bounded by the attempt's timeout."""

    def __init__(self, http: httpx.AsyncClient | None, *, base_url: str, timeout: float) -> None:
        self.owns = http is None
        self.http = http if http is not None else own_client(httpx.AsyncClient, base_url, timeout)
        watch(self.http)
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed or self.http.is_closed

    async def send(self, request: PreparedRequest[Any], timeout: float) -> Reply:
        if self.closed:
            raise _closed_error()
        exchange = Exchange(timeout)
        return await exchange_within(
            request,
            exchange,
            lambda got: self._exchange(request, timeout, exchange, got),
            timeout=timeout,
            caught=lambda exc: isinstance(exc, httpx.HTTPError) or is_timeout(exc),
            failure=_failure,
        )

    async def _exchange(
        self,
        request: PreparedRequest[Any],
        timeout: float,
        exchange: Exchange,
        got: list[Reply],
    ) -> Reply:
        response = await self.http.send(
            _build(self.http, request, timeout), stream=True, follow_redirects=False
        )
        body = _body(response)
        reply = Reply(response.status_code, response.reason_phrase, response.headers, body)
        got.append(reply)
        try:
            async for chunk in _araw(response):
                if _keep(body, chunk, exchange):
                    break
        except httpx.HTTPError as exc:
            body.fail(_scrub(exc))
        finally:
            await response.aclose()
        return reply

    async def aclose(self) -> None:
        self._closed = True
        if self.owns:
            await self.http.aclose()


async def _araw(response: httpx.Response) -> AsyncIterator[bytes]:
    if response.is_stream_consumed:
        yield response.content
        return
    async for chunk in response.aiter_raw():
        yield chunk
