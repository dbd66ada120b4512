"""What every transport shares: the protocols, the exchange record, the connection error, the
keep-alive rule, and life in the user's process (one event loop, fork, cancellation)."""

from __future__ import annotations

import collections
import contextlib
import os
import re
import socket
import sys
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from contextvars import ContextVar
from typing import Any, Protocol

from .._outcome import Outcome, unknown_outcome_note
from .._reply import Reply
from .._request import PreparedRequest
from .._text import safe_line
from ..errors import APIConnectionError, APITimeoutError, WrongEventLoopError

CLOSED_MESSAGE = "the Avatario client is closed; make a new one to send requests"

#: How long a connection of a pool the client made may sit idle and still be reused, when the
#: server does not say (``Keep-Alive: timeout=N``). Below the idle timeouts of common servers
#: (gunicorn 2 s, uvicorn and Node.js 5 s), so a request is not sent on a connection the server
#: is closing: that would be an unknown outcome (docs/retries.md).
KEEPALIVE_EXPIRY = 1.5
#: A server's ``Keep-Alive: timeout=N`` is trusted up to this many seconds of idle time.
MAX_KEEPALIVE_EXPIRY = 60.0
_KEEP_ALIVE_TIMEOUT = re.compile(r"(?:^|[,;\s])timeout\s*=\s*(\d+(?:\.\d+)?)", re.IGNORECASE)


def keepalive_expiry(headers: Mapping[str, str]) -> float | None:
    """How long the connection may idle before reuse, from the reply's ``Keep-Alive`` header.

    ``timeout=N`` means the server keeps it at least N seconds; it is reused only until
    ``N - max(1, N / 5)`` (4 s for Node.js's 5, 60 s at most), well before the server may let
    it go. None when the server said nothing.
    """
    value = headers.get("keep-alive")
    if value is None:
        return None
    found = _KEEP_ALIVE_TIMEOUT.search(value)
    if found is None:
        return None
    seconds = float(found.group(1))
    return max(0.0, min(MAX_KEEPALIVE_EXPIRY, seconds - max(1.0, seconds / 5)))


class SyncTransport(Protocol):
    """Sends one attempt and returns the reply, or raises an `APIConnectionError`."""

    @property
    def closed(self) -> bool: ...

    def send(
        self, request: PreparedRequest[Any], timeout: float, connect_timeout: float
    ) -> Reply: ...

    def close(self) -> None: ...


class AsyncTransport(Protocol):
    """The same as `SyncTransport`, awaited."""

    @property
    def closed(self) -> bool: ...

    async def send(
        self, request: PreparedRequest[Any], timeout: float, connect_timeout: float
    ) -> Reply: ...

    async def aclose(self) -> None: ...

    def close_from_sync(self) -> None:
        """`aclose` for synchronous code where no event loop runs."""


class Exchange:
    """How far one attempt got on the wire, as the transport saw it; and its deadlines.

    `observed` is False when the transport could not watch the socket (a connection from
    before this client, or a custom or mock transport): then only the exception's type tells
    whether the request was sent.
    """

    __slots__ = ("connect_ends", "connect_timeout", "ends", "fresh", "observed", "wrote")

    def __init__(self, timeout: float, connect_timeout: float | None = None) -> None:
        self.ends = time.monotonic() + timeout
        self.connect_timeout = timeout if connect_timeout is None else connect_timeout
        self.connect_ends: float | None = None  # set when connecting starts
        self.observed = False
        self.fresh = False  # a new connection was opened for this attempt
        self.wrote = False  # a byte of the request may have left

    def time_left(self) -> float:
        return self.ends - time.monotonic()

    def connect_time_left(self) -> float:
        """What is left for connecting (TCP, TLS and a proxy's tunnel together)."""
        now = time.monotonic()
        if self.connect_ends is None:
            self.connect_ends = now + self.connect_timeout
        return min(self.ends, self.connect_ends) - now

    def outcome(self, *, not_sent: bool) -> Outcome:
        """`not_sent`: the transport's exception says the request never left.

        Otherwise the request counts as not sent only when the socket was watched and not one
        byte of it was written. A request written on a reused keep-alive connection that then
        closed before any response byte is unknown, not sent: at the socket level that is
        also a server that died after starting the session (see docs/retries.md).
        """
        if not_sent or (self.observed and not self.wrote):
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


def is_timeout(exc: BaseException) -> bool:
    """A timeout from the standard library: `TimeoutError`, or (Python 3.10) asyncio's own."""
    if isinstance(exc, TimeoutError):
        return True
    asyncio = sys.modules.get("asyncio")  # not imported: none of its exceptions can exist
    return asyncio is not None and isinstance(exc, asyncio.TimeoutError)


# -- one event loop ---------------------------------------------------------------------------


class LoopBinding:
    """The event loop an async transport belongs to: the first it sends on, or its pool's."""

    __slots__ = ("_deadlines", "loop")

    def __init__(self, loop: Any = None) -> None:
        self.loop = loop
        self._deadlines: Deadlines | None = None

    def deadlines(self) -> Deadlines:
        """The timers of the attempts on the bound loop (bind it first, with `check`)."""
        found = self._deadlines
        if found is None or found.loop is not self.loop:
            found = self._deadlines = Deadlines(self.loop)
        return found

    def check(self, client: str) -> None:
        """Bind to the running loop, or raise `WrongEventLoopError` if bound to another."""
        running = _asyncio().get_running_loop()
        if self.loop is None:
            self.loop = running
        elif self.loop is not running:
            raise WrongEventLoopError(wrong_loop_message(client, self.loop))

    def is_other(self) -> bool:
        """True when a loop is bound and it is not the one running in this thread."""
        import asyncio  # noqa: PLC0415

        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        return self.loop is not None and self.loop is not running


def wrong_loop_message(client: str, loop: Any) -> str:
    state = "now closed" if loop.is_closed() else "still open, in another thread or task runner"
    return (
        f"this {client} belongs to another event loop (the one it first sent on, {state}); "
        "nothing was sent. Make the client inside the event loop that uses it, one per loop "
        "(with pytest-asyncio or anyio, in a fixture of the same scope as the event loop; in a "
        "service, in its lifespan)"
    )


# -- fork -------------------------------------------------------------------------------------

#: Bumped in a child process after os.fork(): a transport made in another generation drops the
#: connections it inherited (they belong to the parent) and opens its own.
_generation = [0]
_transports: weakref.WeakSet[Any] = weakref.WeakSet()


def fork_generation() -> int:
    return _generation[0]


def track(transport: Any) -> int:
    """Watch `transport` across forks; returns the current generation."""
    _transports.add(transport)
    return _generation[0]


def _after_fork_in_child() -> None:
    _generation[0] += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def close_inherited(sockets: list[Any]) -> None:
    """Close a child's copies of its parent's sockets: only the descriptors, which sends
    nothing (no FIN, no TLS close_notify) while the parent keeps its own copies open.

    Only plain `socket.socket` objects (a sync pool's) are closed here, after `detach()`, so
    nothing closes the descriptor a second time. An event loop's sockets are left to the
    garbage collector: their transports would close them again, perhaps after the number was
    reused.
    """
    for sock in sockets:
        if not isinstance(sock, socket.socket):
            continue
        try:
            fd = sock.detach()
        except OSError:
            continue
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


def close_from_outside(
    loop: Any,
    closing: Callable[[], Coroutine[Any, Any, None]],
    *,
    in_a_coroutine: bool,
) -> Awaitable[None] | None:
    """Close a pool whose connections belong to `loop`, from outside that loop.

    A loop running in another thread closes them itself (the returned awaitable, or a wait of
    up to 5 s from synchronous code); a loop that is idle is run to close them, when no other
    loop runs in this thread. A closed loop's connections cannot be closed any more (their
    transports need the loop): they are left as the loop's owner left them, as an idle loop
    seen from a coroutine of another loop is left to close its own.
    """
    import asyncio  # noqa: PLC0415 - only async pools get here

    if loop.is_closed():
        return None
    if loop.is_running():
        future = asyncio.run_coroutine_threadsafe(closing(), loop)
        if in_a_coroutine:
            return asyncio.wait_for(asyncio.wrap_future(future), 5.0)
        with contextlib.suppress(Exception):
            future.result(5.0)
        return None
    if not in_a_coroutine:
        loop.run_until_complete(closing())
    return None


# -- cancellation and bounds (async) ---------------------------------------------------------


def exchange_within(
    request: PreparedRequest[Any],
    exchange: Exchange,
    run: Callable[[list[Reply]], Awaitable[Reply]],
    *,
    bound: float | None,
    caught: Callable[[Exception], bool],
    failure: Callable[[PreparedRequest[Any], Exchange, Exception], APIConnectionError],
    deadlines: Deadlines | None = None,
) -> Awaitable[Reply]:
    """One async attempt; with `bound`, the whole of it (headers and body) within that
    (timed in `deadlines`, the loop's, when given).

    `run` appends the reply to the list it is given as soon as the status arrives, so a body
    that does not finish in time still yields that reply (its body marked cut off); an
    exception `caught` says is the transport's becomes `failure(...)`, raised from it.

    The caller's cancellation always wins: on Python 3.11+ a cancellation requested while the
    exchange ran is raised even if a library's timer turned it into a timeout; on 3.10, which
    does not count cancellations, the exchange runs in its own task so the caller's
    cancellation reaches the caller alone (the exchange is then cancelled and awaited).
    While it runs, `CURRENT` is the exchange (for the connection hooks of the transports).
    """
    if sys.version_info >= (3, 11):
        return _exchange_311(request, exchange, run, bound, caught, failure, deadlines)
    return _exchange_310(request, exchange, run, bound, caught, failure)  # pragma: no cover


class _Expiry:
    """An attempt's timer: when it fires it cancels the task, and says it did."""

    __slots__ = ("deadline", "done", "fired", "handle", "task")

    def __init__(self, task: Any, deadline: float) -> None:
        self.task = task
        self.deadline = deadline
        self.fired = False
        self.done = False
        self.handle: Any = None  # a timer of its own, when it could not join the queue

    def fire(self) -> None:
        if not self.done:
            self.fired = True
            self.task.cancel()

    def end(self) -> None:
        """The attempt is over: the timer no longer fires, and lets go of the task."""
        self.done = True
        self.task = None
        if self.handle is not None:
            self.handle.cancel()


class Deadlines:
    """The timers of one event loop's attempts, as one queue under one loop timer.

    An attempt's timer is an entry in a queue ordered by deadline (attempts with the same
    timeout start in order, so their deadlines come in order) and the loop holds one timer,
    for the first entry. An attempt that ends marks its entry done; the loop timer, when it
    fires, fires every entry that is due and not done and is set again for the first one
    left. Per attempt this is an entry added, where `loop.call_at` would push and later cancel
    a timer in the loop's heap (with its Python comparisons). An attempt whose deadline comes
    before the last entry's (a shorter timeout) gets a loop timer of its own.
    """

    __slots__ = ("_handle", "_queue", "loop")

    def __init__(self, loop: Any) -> None:
        self.loop = loop
        self._queue: collections.deque[_Expiry] = collections.deque()
        self._handle: Any = None

    def add(self, task: Any, seconds: float) -> _Expiry:
        loop, queue = self.loop, self._queue
        expiry = _Expiry(task, loop.time() + seconds)
        while queue and queue[0].done:  # ended attempts leave at once: the queue stays short
            queue.popleft()
        if queue and expiry.deadline < queue[-1].deadline:
            expiry.handle = loop.call_at(expiry.deadline, expiry.fire)
            return expiry
        queue.append(expiry)
        handle = self._handle
        # The loop timer may still be set for an entry that ended and left: it must never be
        # later than the first entry's deadline.
        if handle is None or handle.when() > queue[0].deadline:
            if handle is not None:
                handle.cancel()
            self._handle = loop.call_at(queue[0].deadline, self._due)
        return expiry

    def _due(self) -> None:
        self._handle = None
        now, queue = self.loop.time(), self._queue
        while queue and (queue[0].done or queue[0].deadline <= now):
            queue.popleft().fire()
        if queue:
            self._handle = self.loop.call_at(queue[0].deadline, self._due)


async def _exchange_311(
    request: PreparedRequest[Any],
    exchange: Exchange,
    run: Callable[[list[Reply]], Awaitable[Reply]],
    bound: float | None,
    caught: Callable[[Exception], bool],
    failure: Callable[[PreparedRequest[Any], Exchange, Exception], APIConnectionError],
    deadlines: Deadlines | None,
) -> Reply:
    """The attempt under its own timer, as `asyncio.timeout` would run it, with less work per
    call: the timer cancels the task; a cancellation the caller did not ask for (the count of
    requested cancellations says so) becomes the attempt's timeout."""
    asyncio = _asyncio()
    task = asyncio.current_task()
    before = _cancelling(task)
    token = CURRENT.set(exchange)
    got: list[Reply] = []
    expiry = None
    if bound is not None and task is not None:
        expiry = (deadlines or Deadlines(asyncio.get_running_loop())).add(task, bound)
    try:
        reply = await run(got)
    except BaseException as exc:
        if expiry is not None and expiry.fired:
            task.uncancel()  # our timer's cancellation, handled here
        if not isinstance(exc, (Exception, asyncio.CancelledError)):
            raise  # KeyboardInterrupt, SystemExit, GeneratorExit: never made a cancellation
        if _cancelling(task) > before:  # the caller's: it wins, whatever a library made of it
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise asyncio.CancelledError from exc
        error: BaseException = exc
        if isinstance(exc, asyncio.CancelledError):
            if expiry is None or not expiry.fired:
                raise
            error = TimeoutError("the attempt's time ran out")
            error.__cause__ = exc
        if not isinstance(error, Exception) or not caught(error):
            raise
        if got:  # the status arrived, the body did not finish
            got[0].body.fail(error)
            return got[0]
        raise failure(request, exchange, error) from error
    else:
        if expiry is not None and expiry.fired:
            task.uncancel()  # the timer fired as the answer came and a library kept it
        return reply
    finally:
        if expiry is not None:
            expiry.end()
        CURRENT.reset(token)


def _asyncio() -> Any:
    """asyncio, imported by whoever runs a coroutine (not at import: the sync client never
    needs it)."""
    module = sys.modules.get("asyncio")
    if module is None:  # pragma: no cover - a coroutine is running, so it is imported
        import asyncio as module  # noqa: PLC0415
    return module


def _cancelling(task: Any) -> int:
    """The cancellations requested of `task` and not yet handled (Python 3.11+)."""
    return task.cancelling() if task is not None else 0


async def _exchange_310(  # pragma: no cover - Python 3.10
    request: PreparedRequest[Any],
    exchange: Exchange,
    run: Callable[[list[Reply]], Awaitable[Reply]],
    bound: float | None,
    caught: Callable[[Exception], bool],
    failure: Callable[[PreparedRequest[Any], Exchange, Exception], APIConnectionError],
) -> Reply:
    import asyncio  # noqa: PLC0415

    token = CURRENT.set(exchange)  # before the inner task, which copies the context
    got: list[Reply] = []
    try:
        inner = asyncio.ensure_future(
            run(got) if bound is None else asyncio.wait_for(run(got), bound)
        )
        try:
            return await asyncio.shield(inner)
        except asyncio.CancelledError:
            if not inner.done():  # the caller was cancelled, not the exchange
                inner.cancel()
                await asyncio.wait({inner})
                if not inner.cancelled():
                    inner.exception()  # retrieved: the caller's cancellation is what counts
                raise
            if inner.cancelled():
                raise
            exc: BaseException | None = inner.exception()
            if exc is None:
                return inner.result()
            return _settle(request, exchange, exc, got, caught, failure)
        except Exception as exc:
            return _settle(request, exchange, exc, got, caught, failure)
    finally:
        CURRENT.reset(token)


def _settle(  # pragma: no cover - Python 3.10
    request: PreparedRequest[Any],
    exchange: Exchange,
    exc: BaseException,
    got: list[Reply],
    caught: Callable[[Exception], bool],
    failure: Callable[[PreparedRequest[Any], Exchange, Exception], APIConnectionError],
) -> Reply:
    if not isinstance(exc, Exception) or not caught(exc):
        raise exc
    if got:
        got[0].body.fail(exc)
        return got[0]
    raise failure(request, exchange, exc) from exc
