"""The attempts' timers of one event loop (`Deadlines`): one loop timer for a queue of them.

Each test runs on a real event loop with deadlines of a few tens of milliseconds; they assert
which attempts were cancelled and in what order, never how long anything took.
"""

from __future__ import annotations

import asyncio
import sys

import pytest

from avatario_wrapper._steps import Attempt
from avatario_wrapper._transports._timer import Deadlines, _bounded_311
from avatario_wrapper._transports.base import Wire

pytestmark = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="Python 3.10 bounds attempts with asyncio.wait_for"
)


async def _forever(name: str, order: list[str]) -> None:
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        order.append(name)
        raise


def test_due_attempts_are_cancelled_in_order_and_only_they() -> None:
    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        deadlines = Deadlines(loop)
        order: list[str] = []
        tasks = {n: asyncio.create_task(_forever(n, order)) for n in ("a", "b", "c")}
        await asyncio.sleep(0)
        first = deadlines.add(tasks["a"], 0.02)
        second = deadlines.add(tasks["b"], 0.04)
        third = deadlines.add(tasks["c"], 0.06)
        second.end()  # b's attempt ended in time: its timer never fires
        await asyncio.wait([tasks["a"], tasks["c"]])
        assert first.fired
        assert third.fired
        assert not second.fired
        assert not tasks["b"].done()
        tasks["b"].cancel()
        await asyncio.gather(tasks["b"], return_exceptions=True)
        return order

    assert asyncio.run(main()) == ["a", "c", "b"]


def test_a_shorter_deadline_after_a_longer_one_fires_first() -> None:
    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        deadlines = Deadlines(loop)
        order: list[str] = []
        long = asyncio.create_task(_forever("long", order))
        short = asyncio.create_task(_forever("short", order))
        await asyncio.sleep(0)
        deadlines.add(long, 0.2)
        deadlines.add(short, 0.02)  # out of order: a loop timer of its own
        await asyncio.wait([long, short])
        return order

    assert asyncio.run(main()) == ["short", "long"]


def test_ended_attempts_leave_the_queue_and_the_loop_keeps_one_timer() -> None:
    async def main() -> tuple[int, int, int]:
        loop = asyncio.get_running_loop()
        deadlines = Deadlines(loop)
        task = asyncio.current_task()
        scheduled = len(loop._scheduled)  # type: ignore[attr-defined]
        for _ in range(1000):
            deadlines.add(task, 10.0).end()
        last = deadlines.add(task, 10.0)
        queued = len(deadlines._queue)
        timers = len(loop._scheduled) - scheduled  # type: ignore[attr-defined]
        last.end()
        return queued, timers, task.cancelling() if task else -1

    # Only the live entry is queued; one loop timer serves them all; nothing was cancelled.
    assert asyncio.run(main()) == (1, 1, 0)


def test_an_ended_attempt_lets_go_of_its_task() -> None:
    async def main() -> None:
        deadlines = Deadlines(asyncio.get_running_loop())
        entry = deadlines.add(asyncio.current_task(), 10.0)
        assert entry.task is asyncio.current_task()
        entry.end()
        assert entry.task is None
        entry.fire()  # a late loop timer: nothing to cancel
        assert not entry.fired

    asyncio.run(main())


def test_the_timer_keeps_serving_after_it_fired() -> None:
    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        deadlines = Deadlines(loop)
        order: list[str] = []
        one = asyncio.create_task(_forever("one", order))
        await asyncio.sleep(0)
        deadlines.add(one, 0.01)
        await asyncio.wait([one])
        two = asyncio.create_task(_forever("two", order))  # the queue is empty again
        await asyncio.sleep(0)
        deadlines.add(two, 0.01)
        await asyncio.wait([two])
        return order

    assert asyncio.run(main()) == ["one", "two"]


def test_a_deadline_earlier_than_the_loop_timer_of_an_ended_entry_still_fires() -> None:
    # The queue emptied with its loop timer still set for the ended entry's later deadline;
    # an attempt with a shorter timeout (a with_options copy, a retry cut short by
    # max_elapsed) must be cancelled at its own deadline, not at that one.
    async def main() -> tuple[bool, float]:
        loop = asyncio.get_running_loop()
        deadlines = Deadlines(loop)
        order: list[str] = []
        deadlines.add(asyncio.current_task(), 60.0).end()
        short = asyncio.create_task(_forever("short", order))
        await asyncio.sleep(0)
        entry = deadlines.add(short, 0.02)
        timer_at = deadlines._handle.when() - entry.deadline  # type: ignore[union-attr]
        await asyncio.wait([short], timeout=30)
        return short.cancelled(), timer_at

    cancelled, timer_at = asyncio.run(main())
    assert cancelled
    assert timer_at == 0.0


class Stop(BaseException):
    """Stands for KeyboardInterrupt or SystemExit, which the test cannot raise harmlessly."""


def test_a_base_exception_is_never_made_a_cancellation() -> None:
    # A caller's cancellation pending while the exchange raises something that is not an
    # Exception (KeyboardInterrupt, SystemExit, GeneratorExit): that is what propagates.
    seen: list[str] = []

    async def exchange() -> None:
        async def run() -> object:
            task = asyncio.current_task()
            assert task is not None
            task.cancel()  # the caller's, requested while the exchange runs
            raise Stop

        try:
            await _bounded_311(
                None,  # type: ignore[arg-type]
                Wire(Attempt(1, 10.0, 10.0, 0.5)),
                run,  # type: ignore[arg-type]
                10.0,
                lambda exc: True,
                lambda *args: AssertionError("not a transport failure"),  # type: ignore[arg-type,return-value]
                lambda exc: exc,
                None,
            )
        except Stop:
            seen.append("stop")
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def main() -> None:
        task = asyncio.create_task(exchange())
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    assert seen == ["stop"]
