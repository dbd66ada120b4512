"""The async client's default transport when aiohttp is installed (the ``aiohttp`` extra).

Measured in docs/benchmarks.md: httpx's own async pool loses most of its throughput with many
requests in flight on loopback, while aiohttp keeps it, so the async client talks to aiohttp
directly. Imported only when an `AsyncAvatarioClient` sends over aiohttp, never by
``import avatario_wrapper``. A worker's shared `aiohttp.ClientSession` may be passed in.
"""

from __future__ import annotations

from typing import Any, TypeVar

import aiohttp
from aiohttp.http_parser import RawResponseMessage
from multidict import CIMultiDict, CIMultiDictProxy

from .._reply import Body, Reply
from .._request import PreparedRequest
from .._settings import resolve_proxy
from .._text import REDACTED
from ..errors import APIConnectionError, ClientClosedError
from .base import CLOSED_MESSAGE, CURRENT, Exchange, connection_error, exchange_within, is_timeout

_CHUNK = 64 * 1024
#: How long after the attempt's timeout the whole-exchange bound fires, behind aiohttp's own.
_BACKSTOP = 0.05
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
    """Tells the exchange in progress whether its connection is new and when it is ready."""

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


class AiohttpTransport:
    """Sends with one pooled `aiohttp.ClientSession`, opened on first use in the running loop.

    TLS is verified, redirects are never followed, bodies are read raw (never inflated by
    aiohttp) and bounded, and the whole exchange is bounded by the attempt's timeout. A session
    made here takes proxies from the environment by the same rules as httpx (resolved once,
    not per request: aiohttp's own ``trust_env`` reads them, and ~/.netrc, in a worker thread
    on every request). A session passed in is used as it is and never closed here.
    """

    def __init__(self, session: aiohttp.ClientSession | None = None, *, base_url: str) -> None:
        self.owns = session is None
        self._session = session
        self._closed = False
        found = resolve_proxy(base_url) if session is None else None
        self._proxy = found[1] if found else None

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

    async def send(self, request: PreparedRequest[Any], timeout: float) -> Reply:
        if self.closed:
            raise ClientClosedError(CLOSED_MESSAGE)
        session = self._open()
        exchange = Exchange(timeout)
        # A connector of ours reports the connection; with another, only exception types tell.
        exchange.observed = isinstance(session.connector, _Connector)
        return await exchange_within(
            request,
            exchange,
            lambda got: self._exchange(session, request, timeout, got),
            # aiohttp's own timers (total, connect) end the attempt at `timeout` and say which
            # phase it was in; this bound only backs them up.
            timeout=timeout + _BACKSTOP,
            caught=lambda exc: isinstance(exc, (aiohttp.ClientError, OSError)) or is_timeout(exc),
            failure=_failure,
        )

    async def _exchange(
        self,
        session: aiohttp.ClientSession,
        request: PreparedRequest[Any],
        timeout: float,
        got: list[Reply],
    ) -> Reply:
        async with session.request(
            request.method,
            request.url,
            data=request.content,
            headers=request.headers,
            # `connect` covers waiting for a pooled connection too, and ends just before `total`
            # so that its ConnectionTimeoutError (not sent) wins on a session whose connector
            # cannot be watched.
            timeout=aiohttp.ClientTimeout(total=timeout, connect=timeout - min(0.01, timeout / 10)),
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
            try:
                async for chunk in response.content.iter_chunked(_CHUNK):
                    if body.feed(chunk):
                        break
            except (aiohttp.ClientError, OSError) as exc:
                body.fail(_scrub(exc))
            return reply

    async def aclose(self) -> None:
        self._closed = True
        if self.owns and self._session is not None:
            await self._session.close()


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
    if isinstance(exc, aiohttp.ServerDisconnectedError) and not isinstance(
        exc.message, RawResponseMessage
    ):
        exchange.eof_before_response = True  # closed cleanly before a whole status line
    timed_out = isinstance(exc, aiohttp.ServerTimeoutError) or is_timeout(exc)
    not_sent = isinstance(exc, _NOT_SENT + _CONNECT_TIMEOUT)
    return connection_error(
        request, exc, timed_out=timed_out, outcome=exchange.outcome(not_sent=not_sent)
    )
