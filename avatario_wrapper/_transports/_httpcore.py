"""What the httpx transports need from httpcore: its documented ``trace`` extension, our own
network backend, and the two things no public API offers (pinned to httpx 0.28 / httpcore 1.0
and tested by tests/test_transport_hooks.py).

- The ``trace`` request extension (`on_event`, `on_event_async`) tells how far an attempt got:
  a new connection was opened, a proxy's CONNECT is under way (still connecting), the request
  headers are about to be written. Just before they are, an attempt whose wait for a
  connection left too little time stops there (`TooLateToSend`): nothing was written.
- The network backend (`Backend`, `AsyncBackend`) wraps every connection the pool opens: each
  connect, TLS handshake, read and write gets at most the time left before the attempt's
  deadline (connecting, at most what is left of ``connect_timeout``), so a server that
  trickles bytes cannot stretch an attempt; and its streams answer httpcore's "is it
  readable?" with yes when the connection must not be reused (bytes no request asked for, or
  idle past the server's ``Keep-Alive`` allowance), which makes httpcore drop it.

Private reaches, each for a reason no hook serves:

1. `install`: a pool's network backend (``Client._transport``/``_mounts``, the transport's
   ``_pool``, the pool's ``_network_backend``). httpx builds its pools with httpcore's own
   backend and no way to pass another; a pool the caller made is reached the same way.
2. `has_stray_bytes`: h11's ``trailing_data`` of the connection a response came on (through
   the response stream to httpcore's connection and its ``_h11_state``): bytes that arrived
   after the complete response, which httpcore would read as the next request's answer.
"""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import Awaitable, Mapping
from typing import Any

import httpcore
import httpx

from . import _hedge
from .base import WIRE_IN_PROGRESS, TooLateToSend


def _within_deadline(timeout: float | None, error: type[Exception]) -> float | None:
    wire = WIRE_IN_PROGRESS.get()
    if wire is None:
        return timeout
    wire.observed = True
    left = wire.connect_time_left() if wire.tunnelling else wire.time_left()
    if left <= 0:
        raise error("the attempt's deadline passed")
    return left if timeout is None else min(timeout, left)


def _within_connect_time(timeout: float | None) -> float | None:
    wire = WIRE_IN_PROGRESS.get()
    if wire is None:
        return timeout
    wire.observed = True
    left = wire.connect_time_left()
    if left <= 0:
        raise httpcore.ConnectTimeout("connect_timeout or the attempt's deadline passed")
    return left if timeout is None else min(timeout, left)


# -- the trace extension ------------------------------------------------------------------------


def on_event(event: str, info: Mapping[str, Any]) -> None:
    """httpcore's ``trace`` extension: what happened on the connection (see the docstring)."""
    wire = WIRE_IN_PROGRESS.get()
    if wire is None:
        return
    wire.observed = True
    if event.endswith("send_request_headers.started"):
        sent = info.get("request")
        if getattr(sent, "method", None) == b"CONNECT":
            wire.tunnelling = True  # a proxy's tunnel: still connecting
            return
        wire.tunnelling = False
        left = wire.too_late_to_send()
        if left is not None:
            raise TooLateToSend(left)
        wire.wrote = True
    elif event in _OPENING:
        wire.fresh = True
    elif event == "http11.receive_response_headers.complete" and wire.tunnelling:
        wire.tunnelling = False  # the proxy answered the CONNECT


async def on_event_async(event: str, info: Mapping[str, Any]) -> None:
    """`on_event` for the async pool, which awaits the extension."""
    on_event(event, info)


_OPENING = frozenset({"connection.connect_tcp.started", "connection.connect_unix_socket.started"})


# -- the network backend ------------------------------------------------------------------------


class _Opened(weakref.WeakSet[Any]):
    """The streams a backend opened, TLS layers included, while they live."""


class _Idle:
    """When a pooled connection stops being reusable (checked by httpcore before each reuse)."""

    __slots__ = ("reusable_until", "unusable")

    def __init__(self) -> None:
        self.unusable = False  # bytes no request asked for are waiting
        self.reusable_until: float | None = None

    def expired(self) -> bool:
        until = self.reusable_until
        return self.unusable or (until is not None and time.monotonic() > until)


class Stream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, opened: _Opened) -> None:
        self._inner = inner
        self._opened = opened
        self.idle = _Idle()
        opened.add(self)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _within_deadline(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _within_deadline(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        timeout = _within_connect_time(timeout)
        return Stream(self._inner.start_tls(ssl_context, server_hostname, timeout), self._opened)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable" and self.idle.expired():
            return True  # what httpcore reads as "the server closed it": dropped, not reused
        return self._inner.get_extra_info(info)


class AsyncStream(httpcore.AsyncNetworkStream):
    def __init__(self, inner: httpcore.AsyncNetworkStream, opened: _Opened) -> None:
        self._inner = inner
        self._opened = opened
        self.idle = _Idle()
        opened.add(self)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, _within_deadline(timeout, httpcore.ReadTimeout))

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, _within_deadline(timeout, httpcore.WriteTimeout))

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        timeout = _within_connect_time(timeout)
        try:
            return AsyncStream(
                await self._inner.start_tls(ssl_context, server_hostname, timeout), self._opened
            )
        except BaseException:
            # httpcore closes the TCP stream when the handshake fails, not when the task is
            # cancelled during it: the socket would stay open.
            await _close_shielded(self._inner)
            raise

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable" and self.idle.expired():
            return True
        return self._inner.get_extra_info(info)


async def _close_shielded(stream: httpcore.AsyncNetworkStream) -> None:
    import anyio  # noqa: PLC0415 - httpx's own dependency; only on this rare path

    with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
        await stream.aclose()


class Backend(httpcore.NetworkBackend):
    """httpcore's backend, every operation held to the attempt's deadline; remembers the
    streams it opened (a child process after ``fork`` closes their descriptors). With
    `hedge` (the client's own pool, no proxy), TCP connects are hedged (`_hedge`)."""

    def __init__(self, inner: httpcore.NetworkBackend, *, hedge: bool = False) -> None:
        self._inner = inner
        self.hedge = hedge
        self.opened = _Opened()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        timeout = _within_connect_time(timeout)

        def single() -> httpcore.NetworkStream:
            return self._inner.connect_tcp(host, port, timeout, local_address, socket_options)

        if not self.hedge:
            return Stream(single(), self.opened)
        inner = _hedge.connect_sync(host, port, timeout, local_address, socket_options, single)
        return Stream(inner, self.opened)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        timeout = _within_connect_time(timeout)
        return Stream(self._inner.connect_unix_socket(path, timeout, socket_options), self.opened)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class AsyncBackend(httpcore.AsyncNetworkBackend):
    """`Backend` for the async pool."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend, *, hedge: bool = False) -> None:
        self._inner = inner
        self.hedge = hedge
        self.opened = _Opened()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        timeout = _within_connect_time(timeout)

        def single(left: float | None) -> Awaitable[httpcore.AsyncNetworkStream]:
            return self._inner.connect_tcp(host, port, left, local_address, socket_options)

        if not self.hedge:
            return AsyncStream(await single(timeout), self.opened)
        return AsyncStream(await _hedge.connect_async(host, port, timeout, single), self.opened)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.AsyncNetworkStream:
        timeout = _within_connect_time(timeout)
        inner = await self._inner.connect_unix_socket(path, timeout, socket_options)
        return AsyncStream(inner, self.opened)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


# -- the private reaches ------------------------------------------------------------------------


def install(
    http: httpx.Client | httpx.AsyncClient, *, hedge: bool = False
) -> list[Backend | AsyncBackend]:
    """Our backend in every connection pool of `http` (private reach 1); the backends, empty
    where `http` has no httpcore pool (a mock or custom transport). Connections opened from
    now on are watched; ones already pooled are not. `hedge`: only for a pool of ours."""
    backends: list[Backend | AsyncBackend] = []
    for transport in [http._transport, *http._mounts.values()]:
        pool = getattr(transport, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        if backend is None:
            continue
        if not isinstance(backend, (Backend, AsyncBackend)):
            wrapper = AsyncBackend if isinstance(http, httpx.AsyncClient) else Backend
            backend = pool._network_backend = wrapper(backend, hedge=hedge)  # type: ignore[union-attr]
        backends.append(backend)
    return backends


def forget_inherited(backends: list[Backend | AsyncBackend]) -> list[Any]:
    """In a child after ``fork``: every connection the backends opened is never reused (httpcore
    drops it), and the sockets of the sync ones are returned for their descriptors to close."""
    sockets: dict[int, Any] = {}  # a TLS layer and its TCP stream share one descriptor
    for backend in backends:
        for stream in list(backend.opened):
            stream.idle.unusable = True
            sock = stream.get_extra_info("socket")
            with contextlib.suppress(Exception):
                sockets.setdefault(sock.fileno(), sock)
        backend.opened.clear()
    return list(sockets.values())


def h11_connection(response: httpx.Response) -> Any:
    """The h11 state of the HTTP/1.1 connection a streamed response came on (private reach
    2), or None (a mock transport, HTTP/2)."""
    stream = getattr(getattr(response.stream, "_stream", None), "_httpcore_stream", None)
    connection = getattr(getattr(stream, "_stream", None), "_connection", None)
    return getattr(connection, "_h11_state", None)


def has_stray_bytes(response: httpx.Response) -> bool:
    """Whether bytes arrived after this complete response on its connection (h11's public
    ``trailing_data``); False where the connection cannot be seen."""
    leftover = getattr(h11_connection(response), "trailing_data", (b"", False))
    return bool(leftover[0])
