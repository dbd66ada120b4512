"""What every transport shares: the two protocols side by side, the record of how far an
attempt got on the wire, and the one constructor of "no response" errors.

A transport sends one attempt (`_flow.Attempt`: its number and its limits) and returns the
`Reply`, or raises an `APIConnectionError` whose `outcome` says whether the request can have
reached Avatario. It never sends anything the flow did not decide: no retry, no redirect.
"""

from __future__ import annotations

import sys
import time
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

from .._outcome import Outcome, unknown_outcome_note
from .._steps import AsyncSender, SyncSender
from .._text import safe_line
from ..errors import APIConnectionError, APITimeoutError, ClientClosedError
from ._fork import fork_generation

if TYPE_CHECKING:
    from .._reply import Reply
    from .._request import PreparedRequest
    from .._steps import Attempt

CLOSED_MESSAGE = "the Avatario client is closed; make a new one to send requests"


class SyncTransport(SyncSender, Protocol):
    """Sends one attempt (`send`) and returns the reply, or raises an `APIConnectionError`."""

    @property
    def closed(self) -> bool: ...

    def close(self) -> None: ...


class AsyncTransport(AsyncSender, Protocol):
    """The same as `SyncTransport`, awaited."""

    @property
    def closed(self) -> bool: ...

    async def aclose(self) -> None: ...

    def close_from_sync(self) -> None:
        """`aclose` for synchronous code where no event loop runs."""


class TransportBase:
    """What every transport does before it sends: refuse once closed, and in a child process
    after ``os.fork()`` let go of the parent's connections first (`_after_fork`)."""

    _generation = 0

    @property
    def closed(self) -> bool:
        raise NotImplementedError

    def _after_fork(self) -> None:
        raise NotImplementedError

    def _ready(self) -> None:
        if self.closed:
            raise closed_error()
        self._forked()

    def _forked(self) -> None:
        """Leave what the parent process owns to it, once per fork (before sending or
        closing anything in a child)."""
        if self._generation != fork_generation():
            self._after_fork()
            self._generation = fork_generation()


class Wire:
    """How far one attempt got on the wire, as the transport saw it, and its deadlines.

    `observed` is False when the transport could not watch the connection (a pool it cannot
    see into, a custom or mock transport): then only the exception's type tells whether the
    request was sent. `tunnelling` is True while a proxy's CONNECT is under way: that is
    still connecting (bounded by ``connect_timeout``; nothing of the request has left).
    """

    __slots__ = (
        "connect_ends",
        "connect_timeout",
        "connection",
        "ends",
        "fresh",
        "observed",
        "reply",
        "send_by",
        "tunnelling",
        "wrote",
    )

    def __init__(self, attempt: Attempt) -> None:
        now = time.monotonic()
        self.ends = now + attempt.timeout
        #: The request is written only before this moment (`Attempt.min_send_time`).
        self.send_by = self.ends - attempt.min_send_time
        self.connect_timeout = attempt.connect_timeout
        self.connect_ends: float | None = None  # set when connecting starts
        self.observed = False
        self.fresh = False  # a new connection was opened for this attempt
        self.tunnelling = False
        self.wrote = False  # a byte of the request may have left
        self.reply: Reply | None = None  # set once the status line arrived
        self.connection: Any = None  # what the transport's pool lent the attempt, if it says

    def time_left(self) -> float:
        return self.ends - time.monotonic()

    def connect_time_left(self) -> float:
        """What is left for connecting (TCP, TLS and a proxy's tunnel together)."""
        now = time.monotonic()
        if self.connect_ends is None:
            self.connect_ends = now + self.connect_timeout
        return min(self.ends, self.connect_ends) - now

    def too_late_to_send(self) -> float | None:
        """The seconds left of the attempt when that is too little to write the request and
        hear the answer (waiting for a connection took the rest), else None."""
        now = time.monotonic()
        return self.ends - now if now > self.send_by else None

    def outcome(self, *, not_sent: bool) -> Outcome:
        """`not_sent`: the transport's exception says the request never left.

        Otherwise the request counts as not sent only when the connection was watched and not
        one byte of the request was written. A request written on a reused keep-alive
        connection that then closed before any response byte is unknown, not "not sent": at
        the socket level that is also a server that died after starting the session
        (docs/retries.md).
        """
        if not_sent or (self.observed and not self.wrote):
            return Outcome.NOT_SENT
        return Outcome.UNKNOWN


#: The wire of the attempt in progress in this thread or task, for the transports' connection
#: hooks (which the libraries call with no word of the request they serve).
WIRE_IN_PROGRESS: ContextVar[Wire | None] = ContextVar("avatario_wire", default=None)


class TooLateToSend(Exception):
    """Raised by a transport's hook where the request would be written with too little of
    the attempt left; becomes a "not sent" `APITimeoutError` (`too_late_error`)."""

    def __init__(self, left: float) -> None:
        super().__init__(f"{max(0.0, left):.3f} s left")
        self.left = left


def connection_error(
    request: PreparedRequest[Any],
    exc: BaseException,
    *,
    timed_out: bool,
    outcome: Outcome,
    connecting: bool = False,
) -> APIConnectionError:
    """The one constructor of "no response" errors (raise it `from exc`).

    `connecting`: the attempt timed out while opening a connection (the hint names
    ``connect_timeout``).
    """
    cls = APITimeoutError if timed_out else APIConnectionError
    what = "timed out waiting for Avatario" if timed_out else "could not reach Avatario"
    detail = safe_line(str(exc), request.secrets)
    message = f"{what}: {type(exc).__name__}" + (f": {detail}" if detail else "")
    if timed_out and connecting:
        message += " (connecting took longer than connect_timeout allows; raise it for slow links)"
    starts = request.starts_session
    if outcome is Outcome.UNKNOWN:
        message += unknown_outcome_note(starts_session=starts)
    return cls(
        message,
        outcome=outcome,
        idempotency_key=request.idempotency_key,
        may_have_started=starts and outcome is Outcome.UNKNOWN,
    )


def too_late_error(request: PreparedRequest[Any], signal: TooLateToSend) -> APITimeoutError:
    """The "not sent" error of an attempt whose connection came with too little time left."""
    return APITimeoutError(
        f"not sent: only {max(0.0, signal.left):.3f} s of the attempt was left once a "
        "connection was ready, too little to hear an answer (min_attempt_time; the pool was "
        "busy or connecting was slow)",
        outcome=Outcome.NOT_SENT,
        idempotency_key=request.idempotency_key,
        may_have_started=False,
    )


def closed_error() -> ClientClosedError:
    return ClientClosedError(CLOSED_MESSAGE)


def is_timeout(exc: BaseException) -> bool:
    """A timeout from the standard library: `TimeoutError`, or (Python 3.10) asyncio's own."""
    if isinstance(exc, TimeoutError):
        return True
    asyncio = sys.modules.get("asyncio")  # not imported: none of its exceptions can exist
    return asyncio is not None and isinstance(exc, asyncio.TimeoutError)
