"""What every transport shares: the protocols, the exchange record, the connection error."""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, Protocol, TypeVar

from .._reply import Reply
from .._request import PreparedRequest
from .._text import safe_line
from ..errors import APIConnectionError, APITimeoutError, Outcome

T = TypeVar("T")

CLOSED_MESSAGE = "the Avatario client is closed; make a new one to send requests"


class SyncTransport(Protocol):
    """Sends one attempt and returns the reply, or raises an `APIConnectionError`."""

    @property
    def closed(self) -> bool: ...

    def send(self, request: PreparedRequest[Any], timeout: float) -> Reply: ...

    def close(self) -> None: ...


class AsyncTransport(Protocol):
    """The same as `SyncTransport`, awaited."""

    @property
    def closed(self) -> bool: ...

    async def send(self, request: PreparedRequest[Any], timeout: float) -> Reply: ...

    async def aclose(self) -> None: ...


class Exchange:
    """How far one attempt got on the wire, as the transport saw it; and its deadline.

    `observed` is False when the transport could not watch the socket (a connection from
    before this client, or a custom or mock transport): then only the exception's type tells
    whether the request was sent.
    """

    __slots__ = ("ends", "eof_before_response", "fresh", "observed", "received", "wrote")

    def __init__(self, timeout: float) -> None:
        self.ends = time.monotonic() + timeout
        self.observed = False
        self.fresh = False  # a new connection was opened for this attempt
        self.wrote = False  # a byte of the request may have left
        self.received = False  # a byte of a response arrived
        self.eof_before_response = False  # the server closed cleanly before any response byte

    def time_left(self) -> float:
        return self.ends - time.monotonic()

    def outcome(self, *, not_sent: bool) -> Outcome:
        """`not_sent`: the transport's exception says the request never left whole.

        Otherwise the request is taken as not sent only when nothing of it was written, or in
        the idle race: a reused keep-alive connection that the server had closed (a clean
        EOF, not a reset) before any response byte, the case Go's net/http replays for
        requests with an Idempotency-Key (``transportReadFromServerError`` on a reused conn).
        """
        if not_sent:
            return Outcome.NOT_SENT
        if self.observed and (
            not self.wrote or (not self.fresh and self.eof_before_response and not self.received)
        ):
            return Outcome.NOT_SENT
        return Outcome.UNKNOWN


#: The exchange in progress in this thread or task (read by the socket wrappers).
CURRENT: ContextVar[Exchange | None] = ContextVar("avatario_exchange", default=None)


def connection_error(
    request: PreparedRequest[Any],
    exc: BaseException,
    *,
    timed_out: bool,
    outcome: Outcome,
) -> APIConnectionError:
    """The one constructor of "no response" errors (raise it `from exc`)."""
    cls = APITimeoutError if timed_out else APIConnectionError
    what = "timed out waiting for Avatario" if timed_out else "could not reach Avatario"
    detail = safe_line(str(exc), request.secrets)
    message = f"{what}: {type(exc).__name__}" + (f": {detail}" if detail else "")
    if outcome is Outcome.UNKNOWN and request.method != "HEAD":  # warm_up's HEAD starts nothing
        message += " (the request went out: Avatario may have started the session)"
    return cls(message, outcome=outcome, idempotency_key=request.idempotency_key)


def is_timeout(exc: BaseException) -> bool:
    """A timeout from the standard library: `TimeoutError`, or (Python 3.10) asyncio's own."""
    if isinstance(exc, TimeoutError):
        return True
    asyncio = sys.modules.get("asyncio")  # not imported: none of its exceptions can exist
    return asyncio is not None and isinstance(exc, asyncio.TimeoutError)


async def within(awaitable: Awaitable[T], seconds: float) -> T:
    """`awaitable`, cancelled with TimeoutError after `seconds` (asyncio.timeout needs no
    extra task; Python 3.10 has only wait_for)."""
    import asyncio  # noqa: PLC0415 - not at import: the sync client never needs it

    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await awaitable
    return await asyncio.wait_for(awaitable, seconds)  # pragma: no cover - Python 3.10


async def exchange_within(
    request: PreparedRequest[Any],
    exchange: Exchange,
    run: Callable[[list[Reply]], Awaitable[Reply]],
    *,
    timeout: float,
    caught: Callable[[Exception], bool],
    failure: Callable[[PreparedRequest[Any], Exchange, Exception], APIConnectionError],
) -> Reply:
    """One async attempt, bounded whole (headers and body) by `timeout`.

    `run` appends the reply to the list it is given as soon as the status arrives, so a body
    that does not finish in time still yields that reply (its body marked cut off); an
    exception `caught` says is the transport's becomes `failure(...)`, raised from it.
    """
    token = CURRENT.set(exchange)
    got: list[Reply] = []
    try:
        return await within(run(got), timeout)
    except Exception as exc:
        if not caught(exc):
            raise
        if got:  # the status arrived, the body did not finish
            got[0].body.fail(exc)
            return got[0]
        raise failure(request, exchange, exc) from exc
    finally:
        CURRENT.reset(token)
