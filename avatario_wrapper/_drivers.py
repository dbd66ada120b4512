"""The two loops that run a call's flow (`_flow.call_flow`): they do what each step says and
nothing else. The shape of httpx's ``Auth.auth_flow`` driven by ``sync_auth_flow`` /
``async_auth_flow``: the flow decides, the driver sends, sleeps and asks the budget.

Anything a step raises (a cancellation, Ctrl-C, a bug) is thrown into the flow, so the call's
spans end with it; the async driver also honours a cancellation the caller asked for while a
step ran, even where a library swallowed it (Python 3.11+ counts them).
"""

from __future__ import annotations

import sys
from typing import Any, TypeVar

from ._flow import call_flow
from ._reply import Reply
from ._steps import Ask, AsyncSender, Attempt, Call, Sleep, SyncSender, WatchRoom
from .errors import APIConnectionError

ResultT = TypeVar("ResultT")


def drive(call: Call[ResultT], transport: SyncSender) -> ResultT:
    """Run `call`'s flow on a sync transport: send, sleep, ask, hand back what came of it."""
    flow, request, clock, scope = call_flow(call), call.request, call.clock, call.scope
    step = next(flow)
    while True:
        try:
            if type(step) is Attempt:
                try:
                    answer: Any = transport.send(request, step)
                except APIConnectionError as error:
                    answer = error
            elif type(step) is Sleep:
                clock.sleep(step.seconds)
                answer = None
            elif type(step) is Ask and scope is not None:
                answer = getattr(scope, step.operation)(**step.arguments)
            else:
                raise TypeError(f"a sync call has no {type(step).__name__} step")
        except BaseException as error:
            flow.throw(error)  # the flow ends the call's trace and raises it again
            raise
        try:
            step = flow.send(answer)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


async def drive_async(call: Call[ResultT], transport: AsyncSender) -> ResultT:
    """Run `call`'s flow on an async transport. A cancellation the caller asked for while a
    step ran ends the call, even where a library swallowed it (Python 3.11+ counts them)."""
    flow, request, clock, scope, room = (
        call_flow(call),
        call.request,
        call.clock,
        call.scope,
        call.room,
    )
    before = _cancel_requests()
    step = next(flow)
    while True:
        try:
            if type(step) is Attempt:
                if step.number > 1:
                    _raise_if_cancelled(before)
                try:
                    answer: Any = await transport.send(request, step)
                except APIConnectionError as error:
                    answer = error
                if type(answer) is not Reply or not 200 <= answer.status < 300:
                    _raise_if_cancelled(before)  # a failure is never what a cancel ends in
            elif type(step) is Sleep:
                await clock.asleep(step.seconds)
                answer = None
            elif type(step) is Ask and scope is not None:
                answer = await getattr(scope, "a" + step.operation)(**step.arguments)
            elif type(step) is WatchRoom and room is not None:
                answer = await room.joined(step.seconds, clock)
            else:
                raise TypeError("a WatchRoom step without a room to watch")
        except BaseException as error:
            flow.throw(error)
            raise
        try:
            step = flow.send(answer)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


def _raise_if_cancelled(before: int) -> None:
    """The caller cancelled the task while a step ran and a library swallowed it: honour it
    now rather than send again (or report a timeout)."""
    if _cancel_requests() > before:
        raise sys.modules["asyncio"].CancelledError


def _cancel_requests() -> int:
    """How many cancellations of the current task are pending (0 on Python 3.10, which does
    not count them; there the async transports keep the caller's cancellation from being
    lost)."""
    if sys.version_info >= (3, 11):
        task = sys.modules["asyncio"].current_task()
        return task.cancelling() if task is not None else 0  # type: ignore[no-any-return]
    return 0  # pragma: no cover - Python 3.10
