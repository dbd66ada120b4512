"""The async client's default transport when aiohttp is installed (the ``aiohttp`` extra).

Measured in docs/benchmarks.md: httpx's own async pool loses most of its throughput with many
requests in flight on loopback, while aiohttp keeps it, so the async client talks to aiohttp
directly. Imported only when an `AsyncAvatarioClient` sends over aiohttp, never by
``import avatario_wrapper``. A worker's shared `aiohttp.ClientSession` may be passed in.

A session made here has our connector (`_Connector`, through aiohttp's public
``BaseConnector.connect``): it tells the attempt whether its connection is new, refuses to
write a request with too little of the attempt left, and lets each connection idle only as
long as its server allows. aiohttp itself never reuses a connection with bytes left over
after a response, and its own resend of an idempotent request on a reused connection is
stopped by a middleware (`_one_send`): every request on the wire is an attempt the call flow
decided.

Private reaches (pinned to aiohttp 3.14, tested by tests/test_transport_hooks.py):

3. a caller's session's event loop (``ClientSession._loop``; the public ``loop`` property is
   deprecated), so the client belongs to the loop its session belongs to;
4. a caller's session's middlewares (``ClientSession._middlewares``), kept in front of ours
   where a request passes its own (aiohttp lets a request's middlewares replace the session's).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from multidict import CIMultiDict, CIMultiDictProxy

from .._environment import Environment
from .._reply import Body, Reply
from .._request import PreparedRequest
from .._steps import Attempt
from .._text import REDACTED
from ..errors import APIConnectionError
from ._fork import fork_generation
from ._hedge import CONNECT_ATTEMPT_DELAY, HEALTH, MAX_CONNECTS, spread
from ._keepalive import KEEPALIVE_EXPIRY, MAX_KEEPALIVE_EXPIRY, keepalive_expiry
from ._loop import ClosedWithItsLoop, LoopBinding, aclose_on_its_loop, close_from_outside
from ._timer import bounded
from .base import (
    WIRE_IN_PROGRESS,
    TooLateToSend,
    TransportBase,
    Wire,
    connection_error,
    is_timeout,
    too_late_error,
)

_CHUNK = 64 * 1024
#: The longest status line or header field accepted, as with httpx (whose whole head may
#: reach 100 KiB): large enough for real proxies' cookies and traces.
MAX_HEADER_BYTES = 64 * 1024
#: The methods aiohttp sends a second time by itself when a reused connection drops them.
_RESENT_BY_AIOHTTP = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})

#: aiohttp exceptions after which the request cannot have reached the server.
_NOT_SENT: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectorError,
    aiohttp.ClientProxyConnectionError,
    aiohttp.ClientHttpProxyError,  # the proxy refused the tunnel (a 407, say)
    aiohttp.InvalidURL,
)
_CONNECT_TIMEOUT: tuple[type[BaseException], ...] = (
    (aiohttp.ConnectionTimeoutError,) if hasattr(aiohttp, "ConnectionTimeoutError") else ()
)

Middleware = Callable[[Any, Callable[[Any], Awaitable[Any]]], Awaitable[Any]]


#: The sessions the transports made (weakly), and those a forked child inherited from its
#: parent, kept for good (`AiohttpTransport._after_fork`): in a child, a session of the
#: parent's is never closed nor collected, even one whose client the child never uses.
_OURS: weakref.WeakSet[aiohttp.ClientSession] = weakref.WeakSet()
_INHERITED: list[aiohttp.ClientSession] = []


def _keep_inherited() -> None:
    _INHERITED.extend(_OURS)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_keep_inherited)


class _HedgingResolver(AbstractResolver):
    """aiohttp's own resolver, its answers kept `_DNS_TTL` s (aiohttp's cache, which would
    keep a hedged answer through a change of health, is off), each answer given as the
    `MAX_CONNECTS` addresses to race (one address: it, three times) while `HEALTH` allows
    hedging, else as found. aiohappyeyeballs then starts them 250 ms apart."""

    def __init__(self) -> None:
        self._inner = aiohttp.DefaultResolver()
        self._found: dict[tuple[str, int, int], tuple[float, list[ResolveResult]]] = {}

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        key = (host, port, int(family))
        kept = self._found.get(key)
        if kept is not None and time.monotonic() < kept[0]:
            found = kept[1]
        else:
            found = await self._inner.resolve(host, port, family)
            if len(self._found) >= _DNS_ENTRIES:
                self._found.clear()
            self._found[key] = (time.monotonic() + _DNS_TTL, found)
        return spread(found) if HEALTH.hedging(host, port) else found

    async def close(self) -> None:
        await self._inner.close()


#: How long a resolved host is kept, and how many are (aiohttp's own cache's defaults).
_DNS_TTL = 10.0
_DNS_ENTRIES = 1000


class _Connector(aiohttp.TCPConnector):
    """Tells the attempt in progress whether its connection is new, refuses to write with
    too little time left, and closes a pooled connection idle past its own expiry
    (`_keepalive`) instead of handing it out. With `hedge` (a session of ours, no proxy),
    connects are hedged through public API (`_HedgingResolver` and aiohappyeyeballs, one
    race per connect: ``interleave`` drops all its addresses when it fails) and their ends
    recorded in `HEALTH`."""

    def __init__(self, *, hedge: bool = False, **kwargs: Any) -> None:
        # Each connection's own expiry is checked in `connect`; the connector's keep-alive
        # timeout is only the longest any may get.
        if hedge:
            kwargs.update(
                resolver=_HedgingResolver(),
                use_dns_cache=False,
                happy_eyeballs_delay=CONNECT_ATTEMPT_DELAY,
                interleave=MAX_CONNECTS,
            )
        super().__init__(keepalive_timeout=MAX_KEEPALIVE_EXPIRY, **kwargs)
        self._hedging = kwargs.get("resolver")
        self._seen: weakref.WeakSet[Any] = weakref.WeakSet()
        #: protocol -> (when it went back to the pool, how long it may idle there)
        self.idle: weakref.WeakKeyDictionary[Any, tuple[float, float]] = weakref.WeakKeyDictionary()

    async def close(self, *, abort_ssl: bool = False) -> None:
        await super().close(abort_ssl=abort_ssl)
        if self._hedging is not None:  # a resolver given is not closed by aiohttp
            await self._hedging.close()

    async def _connect_recorded(self, req: Any, traces: Any, timeout: Any) -> Any:
        """`connect` of aiohttp, with a new connection's end recorded in `HEALTH` (hedging)."""
        if self._hedging is None:
            return await super().connect(req, traces, timeout)
        try:
            connection = await super().connect(req, traces, timeout)
        except (aiohttp.ClientConnectorError, asyncio.TimeoutError) as exc:
            if not isinstance(exc, aiohttp.ClientConnectorDNSError):
                HEALTH.record(req.url.raw_host, req.port, ok=False)
            raise
        if connection.protocol not in self._seen:  # a new connection: a connect succeeded
            HEALTH.record(req.url.raw_host, req.port, ok=True)
        return connection

    async def connect(self, req: Any, traces: Any, timeout: Any) -> Any:
        wire = WIRE_IN_PROGRESS.get()
        if wire is not None:
            wire.observed = True
            wire.fresh = True  # until a pooled connection comes: waiting or connecting
        while True:
            connection = await self._connect_recorded(req, traces, timeout)
            protocol = connection.protocol
            idle = self.idle.pop(protocol, None)
            if idle is None or time.monotonic() - idle[0] <= idle[1]:
                break
            connection.close()  # idle too long: the server may be closing it
        fresh = protocol not in self._seen
        self._seen.add(protocol)
        if wire is not None:
            wire.fresh = fresh
            wire.connection = protocol
            left = wire.too_late_to_send()
            if left is not None:
                if idle is not None:
                    self.idle[protocol] = idle  # back to the pool, as idle as it was
                connection.release()
                raise TooLateToSend(left)
            wire.wrote = True  # from here on the request is being written
        return connection


def _one_send() -> Middleware:
    """A middleware that lets aiohttp send a request once: aiohttp resends an idempotent
    request by itself when a reused connection drops it, which would be an attempt the flow
    never decided (and, for a read, a second one the budget never saw)."""
    failed: list[BaseException] = []

    async def once(request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
        if failed:
            raise failed[0]
        try:
            return await handler(request)
        except BaseException as exc:
            failed.append(exc)
            raise

    return once


class AiohttpTransport(TransportBase):
    """Sends with one pooled `aiohttp.ClientSession`, opened on first use in the running loop.

    TLS is verified, redirects are never followed, bodies are read raw (never inflated by
    aiohttp) and bounded, and the whole attempt is bounded by its timeout (with the loop's
    attempt timer, which never takes a caller's cancellation for its own). A session made
    here takes proxies from the environment by the same rules as httpx (resolved once, not per
    request: aiohttp's own ``trust_env`` reads them, and ~/.netrc, in a worker thread on every
    request). A session passed in is used as it is and never closed here; the client then
    belongs to that session's event loop.
    """

    def __init__(
        self, session: aiohttp.ClientSession | None = None, *, environment: Environment
    ) -> None:
        self.owns = session is None
        self._session = session
        self._closed = False
        self._environment = environment
        proxy = environment.proxy if session is None else None
        self._proxy = None if proxy is None else proxy.url
        header = None if proxy is None else proxy.authorization()
        # Given as a header, never in the URL aiohttp may show in a message.
        self._proxy_headers = None if header is None else {"Proxy-Authorization": header}
        self._loop = LoopBinding(getattr(session, "_loop", None))  # private reach 3
        self._end = ClosedWithItsLoop()
        self._generation = fork_generation()
        self._last_timeouts: tuple[float, float, aiohttp.ClientTimeout] | None = None

    @property
    def closed(self) -> bool:
        return self._closed or (
            not self.owns and self._session is not None and self._session.closed
        )

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                trust_env=False,
                connector=_Connector(
                    limit=100, ssl=self._environment.tls_context(), hedge=self._proxy is None
                ),
            )
            _OURS.add(self._session)
        return self._session

    def _after_fork(self) -> None:
        """In a child process: a session of ours is left with its parent's connections (a new
        one opens on the child's loop); a session passed in keeps its loop. The one left is
        kept, never collected: collecting it closes its transports, which takes their sockets
        out of the parent loop's epoll, shared across the fork, and the parent then never
        hears the answers on its pooled connections."""
        if self.owns and self._session is not None:
            self._session = None  # kept in _INHERITED since the fork
            self._loop = LoopBinding()
            self._end = ClosedWithItsLoop()

    async def send(self, request: PreparedRequest[Any], attempt: Attempt) -> Reply:
        self._ready()
        self._loop.check("AsyncAvatarioClient")
        session = self._open()
        if self.owns and not self._end.armed:
            await self._end.arm(session.close)
        wire = Wire(attempt)
        try:
            return await bounded(
                request,
                wire,
                lambda: self._exchange(session, request, attempt, wire),
                # The whole attempt is bounded here, not by aiohttp's `total` timer: that
                # timer, entered twice per request, takes back a caller's cancellation that
                # arrives with its own and turns both into a timeout (aiohttp 3.14); ours
                # (`_timer.Deadlines`, which counts cancellations as asyncio.timeout does) is
                # exact.
                bound=attempt.timeout,
                caught=_caught,
                failure=_failure,
                scrub=_scrub,
                deadlines=self._loop.deadlines(),
            )
        except TooLateToSend as signal:
            raise too_late_error(request, signal) from None

    def _timeouts(self, attempt: Attempt) -> aiohttp.ClientTimeout:
        """aiohttp's timeouts for an attempt; the last ones are kept (most attempts have the
        client's own timeout, so they are made once)."""
        timeout, connect = attempt.timeout, attempt.connect_timeout
        last = self._last_timeouts
        if last is not None and last[0] == timeout and last[1] == connect:
            return last[2]
        # No `total` (see `send`). `connect` covers waiting for a pooled connection too, and
        # ends just before the attempt's bound so that its ConnectionTimeoutError (not sent)
        # wins on a session whose connector cannot be watched; `sock_connect` bounds opening
        # a connection (TCP and TLS). Through a proxy `connect` is `connect_timeout`: it is
        # the only timer that covers the proxy's answer to CONNECT (still connecting).
        pooled = connect if self._proxy is not None else timeout - min(0.01, timeout / 10)
        made = aiohttp.ClientTimeout(total=None, connect=pooled, sock_connect=connect)
        self._last_timeouts = (timeout, connect, made)
        return made

    def _middlewares(self, session: aiohttp.ClientSession, method: str) -> Any:
        """The middlewares of a request: ours where aiohttp would resend it by itself."""
        if method not in _RESENT_BY_AIOHTTP:
            return None
        theirs = () if self.owns else tuple(getattr(session, "_middlewares", ()))  # reach 4
        return (*theirs, _one_send())

    async def _exchange(
        self,
        session: aiohttp.ClientSession,
        request: PreparedRequest[Any],
        attempt: Attempt,
        wire: Wire,
    ) -> Reply:
        async with session.request(
            request.method,
            request.url,
            data=request.content,
            headers=request.headers,
            timeout=self._timeouts(attempt),
            allow_redirects=False,
            raise_for_status=False,  # a caller's session may raise on statuses: read them here
            proxy=self._proxy,
            proxy_headers=self._proxy_headers,
            auto_decompress=False,
            max_line_size=MAX_HEADER_BYTES,
            max_field_size=MAX_HEADER_BYTES,
            middlewares=self._middlewares(session, request.method),
        ) as response:
            body = Body(response.status, response.headers.get("content-encoding"))
            reply = wire.reply = Reply(
                response.status, response.reason or "", response.headers, body
            )
            content = response.content
            try:
                # The end is seen without one more read when the last chunk brought it.
                while chunk := await content.read(_CHUNK):
                    if body.feed(chunk) or content.at_eof():
                        break
            except (aiohttp.ClientError, OSError) as exc:
                body.fail(_scrub(exc))
            connector = session.connector
            if wire.connection is not None and isinstance(connector, _Connector):
                said = keepalive_expiry(response.headers)
                connector.idle[wire.connection] = (
                    time.monotonic(),
                    KEEPALIVE_EXPIRY if said is None else said,
                )
            return reply

    async def aclose(self) -> None:
        self._forked()  # a child never closes the session its parent uses
        self._closed = True
        session = self._session
        if self.owns and session is not None:
            self._end.disarm()
            await aclose_on_its_loop(self._loop, session.close)

    def close_from_sync(self) -> None:
        """`aclose` for synchronous code (a sync fixture's teardown): no loop runs here."""
        self._forked()
        self._closed = True
        session = self._session
        if self.owns and session is not None and self._loop.loop is not None:
            self._end.disarm()
            close_from_outside(self._loop.loop, session.close, in_a_coroutine=False)


def _caught(exc: Exception) -> bool:
    """An exception of the transport's (a timeout included), to become an `APIError`."""
    return isinstance(exc, (aiohttp.ClientError, OSError)) or is_timeout(exc)


E = TypeVar("E", bound=BaseException)
#: Request headers that carry a credential: masked in an error's copy of the request.
_CREDENTIALS = frozenset({"x-api-key", "proxy-authorization", "authorization"})


def _scrub(exc: E) -> E:
    """`exc` with the API key masked in the request headers it carries (its repr shows them)."""
    info = getattr(exc, "request_info", None)
    if isinstance(info, aiohttp.RequestInfo) and _CREDENTIALS & {h.lower() for h in info.headers}:
        headers = CIMultiDict(info.headers)
        for name in _CREDENTIALS:
            if name in headers:
                headers[name] = REDACTED
        masked = info._replace(headers=CIMultiDictProxy(headers))  # a named tuple's own API
        exc.request_info = masked  # type: ignore[attr-defined]
        exc.args = tuple(masked if arg is info else arg for arg in exc.args)
    return exc


def _failure(request: PreparedRequest[Any], wire: Wire, exc: Exception) -> APIConnectionError:
    """The one place an aiohttp exception becomes ours; timeouts are classified here, once."""
    _scrub(exc)
    timed_out = isinstance(exc, aiohttp.ServerTimeoutError) or is_timeout(exc)
    not_sent = isinstance(exc, _NOT_SENT + _CONNECT_TIMEOUT)
    return connection_error(
        request,
        exc,
        timed_out=timed_out,
        outcome=wire.outcome(not_sent=not_sent),
        connecting=isinstance(exc, _CONNECT_TIMEOUT) and wire.fresh,
    )
