"""One async attempt under its own timer, and the caller's cancellation always winning.

`bounded` runs an attempt's exchange (headers and body) within its bound, timed in the loop's
`Deadlines`: the attempts of an event loop in one queue under one loop timer, which cancels
the task as `asyncio.timeout` would, for less work per attempt. On Python 3.11+ a
cancellation the caller requested while the attempt ran is raised even if a library's timer
turned it into a timeout (the task counts requested cancellations); on 3.10, which does not
count them, the attempt runs in a task of its own so the caller's cancellation reaches the
caller alone (the attempt is then cancelled and awaited).
"""

from __future__ import annotations

import collections
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .._reply import Reply
from ..errors import APIConnectionError
from .base import WIRE_IN_PROGRESS, Wire

if TYPE_CHECKING:
    from .._request import PreparedRequest

#: Turns an exception of the transport into our error (the transport's one choke point).
Failure = Callable[["PreparedRequest[Any]", Wire, Exception], "APIConnectionError"]
#: What of a transport's exception may be kept as a cause: no credential, no request body.
Scrub = Callable[[Exception], Exception]


def bounded(
    request: PreparedRequest[Any],
    wire: Wire,
    run: Callable[[], Awaitable[Reply]],
    *,
    bound: float | None,
    caught: Callable[[Exception], bool],
    failure: Failure,
    scrub: Scrub,
    deadlines: Deadlines | None = None,
) -> Awaitable[Reply]:
    """One async attempt, `run()`; with `bound`, the whole of it within that many seconds.

    `run` sets `wire.reply` as soon as the status arrives, so a body that does not finish in
    time still yields that reply (its body marked cut off); an exception `caught` says is the
    transport's becomes `failure(...)`, raised from `scrub(exception)` and outside its handler,
    so no chained exception holds a credential or the request body. While it runs,
    `WIRE_IN_PROGRESS` is `wire` (for the transports' connection hooks).
    """
    if sys.version_info >= (3, 11):
        return _bounded_311(request, wire, run, bound, caught, failure, scrub, deadlines)
    return _bounded_310(request, wire, run, bound, caught, failure, scrub)  # pragma: no cover


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


async def _bounded_311(
    request: PreparedRequest[Any],
    wire: Wire,
    run: Callable[[], Awaitable[Reply]],
    bound: float | None,
    caught: Callable[[Exception], bool],
    failure: Failure,
    scrub: Scrub,
    deadlines: Deadlines | None,
) -> Reply:
    """The attempt under its own timer: the timer cancels the task; a cancellation the caller
    did not ask for (the count of requested cancellations says so) becomes the timeout."""
    asyncio = sys.modules["asyncio"]
    task = asyncio.current_task()
    before = _cancelling(task)
    token = WIRE_IN_PROGRESS.set(wire)
    expiry = None
    if bound is not None and task is not None:
        expiry = (deadlines or Deadlines(asyncio.get_running_loop())).add(task, bound)
    try:
        reply = await run()
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
        settled = _settle(request, wire, error, failure, scrub)
    else:
        if expiry is not None and expiry.fired:
            task.uncancel()  # the timer fired as the answer came and a library kept it
        return reply
    finally:
        if expiry is not None:
            expiry.end()
        WIRE_IN_PROGRESS.reset(token)
    return _reply_or_raise(settled)


def _cancelling(task: Any) -> int:
    """The cancellations requested of `task` and not yet handled (Python 3.11+)."""
    return task.cancelling() if task is not None else 0


def _settle(
    request: PreparedRequest[Any], wire: Wire, exc: Exception, failure: Failure, scrub: Scrub
) -> Reply | APIConnectionError:
    """An exception of the transport: the reply whose body it cut off, or our error (its
    cause the scrubbed exception), to be raised outside the handler."""
    if wire.reply is not None:  # the status arrived, the body did not finish
        wire.reply.body.fail(scrub(exc))
        return wire.reply
    error = failure(request, wire, exc)
    error.__cause__ = scrub(exc)
    return error


def _reply_or_raise(settled: Reply | APIConnectionError) -> Reply:
    if isinstance(settled, BaseException):
        raise settled from settled.__cause__  # raised here: no raw exception as its context
    return settled


def _settle_310(  # pragma: no cover - Python 3.10
    request: PreparedRequest[Any],
    wire: Wire,
    exc: BaseException,
    caught: Callable[[Exception], bool],
    failure: Failure,
    scrub: Scrub,
) -> Reply | APIConnectionError:
    if not isinstance(exc, Exception) or not caught(exc):
        raise exc
    return _settle(request, wire, exc, failure, scrub)


async def _bounded_310(  # pragma: no cover - Python 3.10
    request: PreparedRequest[Any],
    wire: Wire,
    run: Callable[[], Awaitable[Reply]],
    bound: float | None,
    caught: Callable[[Exception], bool],
    failure: Failure,
    scrub: Scrub,
) -> Reply:
    import asyncio  # noqa: PLC0415

    token = WIRE_IN_PROGRESS.set(wire)  # before the inner task, which copies the context
    try:
        inner = asyncio.ensure_future(run() if bound is None else asyncio.wait_for(run(), bound))
        try:
            return await asyncio.shield(inner)
        except asyncio.CancelledError:
            if not inner.done():  # the caller was cancelled, not the attempt
                inner.cancel()
                await asyncio.wait({inner})
                if not inner.cancelled():
                    inner.exception()  # retrieved: the caller's cancellation is what counts
                raise
            if inner.cancelled():
                raise
            exc = inner.exception()
            if exc is None:
                return inner.result()
            settled = _settle_310(request, wire, exc, caught, failure, scrub)
        except Exception as exc:
            settled = _settle_310(request, wire, exc, caught, failure, scrub)
    finally:
        WIRE_IN_PROGRESS.reset(token)
    return _reply_or_raise(settled)
