"""`FakeClock`: virtual time, and timers that run when a sleep passes their time."""

from __future__ import annotations

import asyncio

import pytest

from avatario_wrapper.testing import FakeClock


def test_without_timers_a_sleep_only_moves_time_and_is_recorded() -> None:
    clock = FakeClock(start=1000.0)
    clock.sleep(1.5)
    asyncio.run(clock.asleep(2.0))
    clock.advance(0.5)
    assert (clock.now, clock.monotonic(), clock.time()) == (4.0, 4.0, 1004.0)
    assert clock.sleeps == [1.5, 2.0]  # advance() is no sleep


def test_timers_run_in_order_at_their_time_as_time_passes() -> None:
    clock = FakeClock()
    ran: list[tuple[str, float]] = []
    clock.call_later(3.0, lambda: ran.append(("c", clock.now)))
    clock.call_later(1.0, lambda: ran.append(("a", clock.now)))
    clock.call_later(1.0, lambda: ran.append(("b", clock.now)))  # same time: in call order
    cancelled = clock.call_later(2.0, lambda: ran.append(("never", clock.now)))
    cancelled.cancel()
    clock.sleep(1.0)  # a timer due exactly at the end of a sleep runs in it
    assert ran == [("a", 1.0), ("b", 1.0)]
    clock.advance(5.0)
    assert ran == [("a", 1.0), ("b", 1.0), ("c", 3.0)]
    assert clock.now == 6.0


def test_a_timer_set_by_a_timer_runs_in_the_same_sleep() -> None:
    clock = FakeClock()
    ran: list[float] = []
    clock.call_later(1.0, lambda: clock.call_later(1.0, lambda: ran.append(clock.now)))
    clock.sleep(5.0)
    assert ran == [2.0]


def test_an_async_sleeper_cancelled_by_what_a_timer_did_stops_at_that_time() -> None:
    async def main() -> float:
        clock = FakeClock()
        sleeper = asyncio.ensure_future(clock.asleep(30.0))
        clock.call_later(8.0, sleeper.cancel)  # e.g. an avatar joins and ends a wait
        with pytest.raises(asyncio.CancelledError):
            await sleeper
        return clock.now

    assert asyncio.run(main()) == 8.0


def test_an_async_sleep_lets_the_loop_see_each_timers_effect() -> None:
    async def main() -> list[str]:
        clock = FakeClock()
        seen: list[str] = []
        event = asyncio.Event()

        async def watcher() -> None:
            await event.wait()
            seen.append(f"seen at {clock.now:g}")

        task = asyncio.ensure_future(watcher())
        await asyncio.sleep(0)
        clock.call_later(2.0, event.set)
        clock.call_later(4.0, lambda: seen.append("second timer"))
        await clock.asleep(10.0)
        await task
        return seen

    assert asyncio.run(main()) == ["seen at 2", "second timer"]
