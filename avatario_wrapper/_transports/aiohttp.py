"""The async client's default transport when aiohttp is installed (the ``aiohttp`` extra).

Measured in docs/benchmarks.md: httpx's own async pool loses most of its throughput with many
requests in flight on loopback, while aiohttp keeps it, so the async client talks to aiohttp
directly. Imported only when an `AsyncAvatarioClient` sends over aiohttp, never by
``import avatario_wrapper``. A worker's shared `aiohttp.ClientSession` may be passed in.
aiohttp itself never reuses a connection with bytes left over after a response.
"""

from __future__ import annotations

import contextlib
import time
import weakref
from typing import Any, TypeVar

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

from .._reply import Body, Reply
from .._request import PreparedRequest
from .._settings import resolve_proxy
from .._text import REDACTED
from ..errors import APIConnectionError, ClientClosedError
from .base import (
    CLOSED_MESSAGE,
    CURRENT,
    KEEPALIVE_EXPIRY,
    MAX_KEEPALIVE_EXPIRY,
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

_CHUNK = 64 * 1024
#: The longest status line or header field accepted, as with httpx (whose whole head may
#: reach 100 KiB): large enough for real proxies' cookies and traces.
MAX_HEADER_BYTES = 64 * 1024

#: aiohttp exceptions after which the request cannot have reached the server.
_NOT_SENT: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectorError,
    aiohttp.ClientProxyConnectionError,
    aiohttp.InvalidURL,
)
_CONNECT_TIMEOUT: tuple[type[BaseException], ...] = (
    (aiohttp.ConnectionTimeoutError,) if hasattr(aiohttp, "ConnectionTimeoutError") else ()
)


class _Connector(aiohttp.TCPConnector):
    """Tells the exchange in progress whether its connection is new and when it is ready, and
    lets each connection idle only as long as its server allows (`base.keepalive_expiry`)."""

    def __init__(self, **kwargs: Any) -> None:
        # Idle connections are checked against their own expiry (see _release); the
        # connector's keep-alive timeout is only the longest any may get.
        super().__init__(keepalive_timeout=MAX_KEEPALIVE_EXPIRY, **kwargs)
        self.expiry: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()

    async def _create_connection(self, req: Any, traces: Any, timeout: Any) -> Any:
        exchange = CURRENT.get()
        if exchange is not None:
            exchange.fresh = True
        return await super()._create_connection(req, traces, timeout)

    async def connect(self, req: Any, traces: Any, timeout: Any) -> Any:
        connection = await super().connect(req, traces, timeout)
        exchange = CURRENT.get()
        if exchange is not None:
            exchange.wrote = True  # from here on the request is being written
        return connection

    async def _get(self, key: Any, traces: Any) -> Any:
        # aiohttp reuses a pooled connection while it has idled no longer than the
        # connector's keep-alive timeout; each of ours has its own expiry, checked first.
        # Every entry is looked at: aiohttp goes on past a closed one to the next in the same
        # call, so one in the middle can be taken without coming to an end of the queue.
        pooled = self._conns.get(key)
        if pooled:
            now = time.monotonic()
            expiry = self.expiry
            for entry in list(pooled):
                protocol, since = entry
                if now - since > expiry.get(protocol, KEEPALIVE_EXPIRY):
                    pooled.remove(entry)
                    protocol.close()
            if not pooled:
                del self._conns[key]
        return await super()._get(key, traces)


class AiohttpTransport:
    """Sends with one pooled `aiohttp.ClientSession`, opened on first use in the running loop.

    TLS is verified, redirects are never followed, bodies are read raw (never inflated by
    aiohttp) and bounded, and the whole exchange is bounded by the attempt's timeout (with
    the loop's attempt timer, which never takes a caller's cancellation for its own). A session
    made here takes proxies from the environment by the same rules as httpx (resolved once,
    not per request: aiohttp's own ``trust_env`` reads them, and ~/.netrc, in a worker thread
    on every request). A session passed in is used as it is and never closed here; the client
    then belongs to that session's event loop.
    """

    def __init__(self, session: aiohttp.ClientSession | None = None, *, base_url: str) -> None:
        self.owns = session is None
        self._session = session
        self._closed = False
        found = resolve_proxy(base_url) if session is None else None
        self._proxy = found[1] if found else None
        self._loop = LoopBinding(getattr(session, "_loop", None))
        self._generation = track(self)
        self._last_timeouts: tuple[float, float, aiohttp.ClientTimeout] | None = None

    @property
    def closed(self) -> bool:
        return self._closed or (
            not self.owns and self._session is not None and self._session.closed
        )

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                trust_env=False, connector=_Connector(limit=100, ssl=True)
            )
        return self._session

    def _after_fork(self) -> None:
        """In a child process: a session of ours is dropped with its parent's connections (a
        new one opens on the child's loop); a session passed in keeps its loop."""
        if self.owns and self._session is not None:
            close_inherited(_sockets(self._session))
            self._session = None
            self._loop = LoopBinding()
        self._generation = fork_generation()

    async def send(
        self, request: PreparedRequest[Any], timeout: float, connect_timeout: float
    ) -> Reply:
        if self.closed:
            raise ClientClosedError(CLOSED_MESSAGE)
        if self._generation != fork_generation():
            self._after_fork()
        self._loop.check("AsyncAvatarioClient")
        session = self._open()
        exchange = Exchange(timeout, connect_timeout)
        # A connector of ours reports the connection; with another, only exception types tell.
        ours = isinstance(session.connector, _Connector)
        exchange.observed = ours
        return await exchange_within(
            request,
            exchange,
            lambda got: self._exchange(session, request, timeout, connect_timeout, got),
            # The whole attempt is bounded here, not by aiohttp's `total` timer: that timer,
            # entered twice per request, takes back a caller's cancellation that arrives with
            # its own and turns both into a timeout (aiohttp 3.14); ours (`base.Deadlines`,
            # which counts cancellations as asyncio.timeout does) is exact.
            bound=timeout,
            caught=_caught,
            failure=_failure,
            deadlines=self._loop.deadlines(),
        )

    def _timeouts(self, timeout: float, connect_timeout: float) -> aiohttp.ClientTimeout:
        """aiohttp's timeouts for an attempt; the last ones are kept (most attempts have the
        client's own timeout, so they are made once)."""
        last = self._last_timeouts
        if last is not None and last[0] == timeout and last[1] == connect_timeout:
            return last[2]
        # No `total` (see `send`). `connect` covers waiting for a pooled connection too, and
        # ends just before the attempt's bound so that its ConnectionTimeoutError (not sent)
        # wins on a session whose connector cannot be watched; `sock_connect` bounds opening
        # a connection (TCP and TLS).
        made = aiohttp.ClientTimeout(
            total=None,
            connect=timeout - min(0.01, timeout / 10),
            sock_connect=min(connect_timeout, timeout),
        )
        self._last_timeouts = (timeout, connect_timeout, made)
        return made

    async def _exchange(
        self,
        session: aiohttp.ClientSession,
        request: PreparedRequest[Any],
        timeout: float,
        connect_timeout: float,
        got: list[Reply],
    ) -> Reply:
        async with session.request(
            request.method,
            request.url,
            data=request.content,
            headers=request.headers,
            timeout=self._timeouts(timeout, connect_timeout),
            allow_redirects=False,
            raise_for_status=False,  # a caller's session may raise on statuses: read them here
            proxy=self._proxy,
            auto_decompress=False,
            max_line_size=MAX_HEADER_BYTES,
            max_field_size=MAX_HEADER_BYTES,
        ) as response:
            body = Body(response.status, response.headers.get("content-encoding"))
            reply = Reply(response.status, response.reason or "", response.headers, body)
            got.append(reply)
            expiry = keepalive_expiry(response.headers)
            if expiry is not None and isinstance(session.connector, _Connector):
                protocol = getattr(response, "_protocol", None)  # kept after its release
                if protocol is not None:
                    session.connector.expiry[protocol] = expiry
            content = response.content
            try:
                # The end is seen without one more read when the last chunk brought it.
                while chunk := await content.read(_CHUNK):
                    if body.feed(chunk) or content.at_eof():
                        break
            except (aiohttp.ClientError, OSError) as exc:
                body.fail(_scrub(exc))
            return reply

    async def aclose(self) -> None:
        self._closed = True
        session = self._session
        if not self.owns or session is None:
            return
        if self._loop.is_other():  # its connections belong to a loop not running here
            waiting = close_from_outside(self._loop.loop, session.close, in_a_coroutine=True)
            if waiting is not None:
                with contextlib.suppress(Exception):
                    await waiting
            return
        await session.close()

    def close_from_sync(self) -> None:
        """`aclose` for synchronous code (a sync fixture's teardown): no loop runs here."""
        self._closed = True
        session = self._session
        if self.owns and session is not None and self._loop.loop is not None:
            close_from_outside(self._loop.loop, session.close, in_a_coroutine=False)


def _sockets(session: aiohttp.ClientSession) -> list[Any]:
    """The sockets of `session`'s idle pooled connections (taken out of the pool)."""
    connector = session.connector
    conns = getattr(connector, "_conns", None)
    sockets = []
    if conns:
        for pooled in conns.values():
            for protocol, _ in pooled:
                transport = getattr(protocol, "transport", None)
                sock = transport.get_extra_info("socket") if transport is not None else None
                if sock is not None:
                    sockets.append(sock)
        conns.clear()
    return sockets


def _caught(exc: Exception) -> bool:
    """An exception of the transport's (a timeout included), to become an `APIError`."""
    return isinstance(exc, (aiohttp.ClientError, OSError)) or is_timeout(exc)


E = TypeVar("E", bound=BaseException)


def _scrub(exc: E) -> E:
    """`exc` with the API key masked in the request headers it carries (its repr shows them)."""
    info = getattr(exc, "request_info", None)
    if isinstance(info, aiohttp.RequestInfo) and "x-api-key" in info.headers:
        headers = CIMultiDict(info.headers)
        headers["x-api-key"] = REDACTED
        masked = info._replace(headers=CIMultiDictProxy(headers))
        exc.request_info = masked  # type: ignore[attr-defined]
        exc.args = tuple(masked if arg is info else arg for arg in exc.args)
    return exc


def _failure(
    request: PreparedRequest[Any], exchange: Exchange, exc: BaseException
) -> APIConnectionError:
    """The one place an aiohttp exception becomes ours; timeouts are classified here, once."""
    _scrub(exc)
    timed_out = isinstance(exc, aiohttp.ServerTimeoutError) or is_timeout(exc)
    not_sent = isinstance(exc, _NOT_SENT + _CONNECT_TIMEOUT)
    return connection_error(
        request,
        exc,
        timed_out=timed_out,
        outcome=exchange.outcome(not_sent=not_sent),
        connecting=isinstance(exc, _CONNECT_TIMEOUT) and exchange.fresh,
    )
