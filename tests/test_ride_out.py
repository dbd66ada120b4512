"""Riding out a blip (`_ride_out`), step by step: the real call flow, a real in-process store
and a virtual clock; the test plays the driver, answering each step, and plays "the other
calls" by telling the store of their failures and successes between steps.

What it shows: a lone failure retries after its backoff as it always did; while the scope is
in trouble a retry waits, sending nothing, and goes when Avatario answers again (after a part
of the trouble's length) or as the scope's one probe; a cool-down is waited out; a trouble
older than the ride-out window fails a refused retry at once; a wait ends on the client's
close, on Ctrl-C and on cancellation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator, Iterator
from typing import Any

import httpx
import pytest

from avatario_wrapper import (
    APIError,
    AsyncAvatarioClient,
    AvatarioClient,
    InternalServerError,
    RetryPolicy,
    StartSessionResult,
)
from avatario_wrapper._flow import call_flow
from avatario_wrapper._operations import START_SESSION
from avatario_wrapper._reply import Body, Reply
from avatario_wrapper._steps import Ask, Attempt, Call, Sleep
from avatario_wrapper._stores import Status
from avatario_wrapper._stores.rules import RECOVERED_MIN
from avatario_wrapper.testing import FakeClock

from .conftest import BASE_URL, CALL

KEY = "sk_ride_out_key_0001"


def reply(status: int, body: bytes = b"") -> Reply:
    content = body or (b'{"session_id":"s"}' if status == 200 else b'{"error":"e"}')
    answer = Body(status)
    answer.feed(content)
    return Reply(status, "X", httpx.Headers({"content-type": "application/json"}), answer)


class Driver:
    """Runs a call's flow as `_drivers.drive` does, but the test answers each `Attempt`
    (`answers`, in order) and may act between steps (`between`, called with each step)."""

    def __init__(
        self,
        client: AvatarioClient,
        answers: Iterator[Reply],
        between: Callable[[Any], None] = lambda step: None,
    ) -> None:
        self.call: Call[Any] = client._begin(START_SESSION, dict(CALL))
        self.clock: FakeClock = self.call.clock  # type: ignore[assignment]
        self.answers = answers
        self.between = between
        self.steps: list[Any] = []

    def run(self) -> Any:
        flow: Generator[Any, Any, Any] = call_flow(self.call)
        scope = self.call.scope
        assert scope is not None
        step = next(flow)
        while True:
            self.steps.append(step)
            self.between(step)
            if isinstance(step, Attempt):
                answer: Any = next(self.answers)
            elif isinstance(step, Sleep):
                self.clock.sleep(step.seconds)
                answer = None
            elif isinstance(step, Ask):
                answer = getattr(scope, step.operation)(**step.arguments)
            else:  # pragma: no cover - no room in these calls
                raise AssertionError(step)
            try:
                step = flow.send(answer)
            except StopIteration as done:
                return done.value

    @property
    def attempts(self) -> list[Attempt]:
        return [s for s in self.steps if isinstance(s, Attempt)]

    @property
    def sleeps(self) -> list[float]:
        return [s.seconds for s in self.steps if isinstance(s, Sleep)]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(seed=11)


@pytest.fixture
def client(clock: FakeClock) -> Iterator[AvatarioClient]:
    with AvatarioClient(KEY, base_url=BASE_URL, clock=clock) as made:
        yield made


def store(client: AvatarioClient) -> Any:
    """The client's scope: what "the other calls" of the same origin and key share."""
    return client._budget


def test_a_lone_failure_retries_after_its_backoff_as_before(client: AvatarioClient) -> None:
    driver = Driver(client, iter([reply(503), reply(200)]))
    result = driver.run()
    assert isinstance(result, StartSessionResult)
    assert result.attempts == 2
    assert len(driver.sleeps) == 1  # its backoff, no waiting beyond it
    operations = [s.operation for s in driver.steps if isinstance(s, Ask)]
    assert operations == ["deposit", "failed", "status", "take_probe", "succeeded"]


def test_a_granted_retry_that_probes_is_withdrawn_once(
    client: AvatarioClient, clock: FakeClock
) -> None:
    # Every 7th call meets one 503 (a steady trickle of failures, as the memory benchmark
    # plays): each retry is granted and goes as the probe, and costs the budget one retry, not
    # two, so 70 calls in one window all succeed at once (withdrawn twice, the 49th would be
    # refused and ride the whole 15 s window out).
    for i in range(1, 71):
        answers = [reply(503), reply(200)] if i % 7 == 0 else [reply(200)]
        driver = Driver(client, iter(answers))
        result = driver.run()
        assert isinstance(result, StartSessionResult)
        assert result.attempts == len(answers)
        assert sum(driver.sleeps) < 1.0  # its backoff only
    scope = store(client)
    calls, retries = scope.store._state(scope.scope).window(clock.monotonic())
    assert (calls, retries) == (70, 10)


def test_a_refused_retry_probes_once_the_budget_has_room_again(
    client: AvatarioClient, clock: FakeClock
) -> None:
    # The budget is spent and no other call comes to end the trouble (a blip's last calls):
    # the waiter asks the budget again as it polls, and once the window has moved on, its
    # retry goes as the probe, within the ride-out.
    scope = store(client)
    for _ in range(3):
        assert scope.failed(retry=True, share=0.2, cool_until=None).allowed  # the reserve
    began = clock.monotonic()
    driver = Driver(client, iter([reply(503), reply(200)]))
    result = driver.run()
    assert isinstance(result, StartSessionResult)
    assert result.attempts == 2
    assert 9.0 <= clock.monotonic() - began < 15.0  # the window's turn, not the ride-out's end
    probes = [s for s in driver.steps if isinstance(s, Ask) and s.operation == "take_probe"]
    assert len(probes) > 1
    assert probes[-1].arguments["share"] == 0.2  # it asked the budget again
    assert scope.status().successes == 1  # told to the scope (one success ends no trouble)


def test_a_retry_that_waits_out_its_own_retry_after_is_still_the_budgets(
    clock: FakeClock,
) -> None:
    # An overload that answers every start 503 with a Retry-After, and no ride-out: each call
    # waits out the Retry-After it heard itself, and its retry is still withdrawn from the
    # budget (40 calls: 40 + 8 + 3 requests at most, not 3 each).
    def overloaded() -> Reply:
        body = Body(503)
        body.feed(b'{"error":"e"}')
        headers = httpx.Headers({"content-type": "application/json", "retry-after": "0.01"})
        return Reply(503, "X", headers, body)

    policy = RetryPolicy(ride_out=0)
    with AvatarioClient(KEY, base_url=BASE_URL, clock=clock, retry=policy) as client:
        sent = 0
        for _ in range(40):
            driver = Driver(client, iter([overloaded() for _ in range(3)]))
            with pytest.raises(APIError):
                driver.run()
            sent += len(driver.attempts)
    assert 40 < sent <= 51


def test_a_fallback_that_never_saw_the_trouble_releases_no_one(
    client: AvatarioClient, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The shared store cannot be read and its fallback answers "no trouble": that is no news
    # of the shared scope, so the waiter is not released into the trouble outside the budget.
    scope = store(client)
    scope.failed(retry=False, share=0.2, cool_until=None)
    assert scope.take_probe(lease=60.0, share=None)  # someone else is the probe
    blind = Status(None, None, 0, None, known=False)
    monkeypatch.setattr(scope.store, "status", lambda name: blind)
    driver = Driver(client, iter([reply(503)]))
    with pytest.raises(InternalServerError) as caught:
        driver.run()
    assert "ride-out" in (caught.value.not_retried_because or "")
    assert len(driver.attempts) == 1


def test_while_in_trouble_a_retry_waits_and_goes_when_avatario_answers_again(
    client: AvatarioClient, clock: FakeClock
) -> None:
    scope = store(client)
    began = clock.time()
    scope.failed(retry=False, share=0.2, cool_until=None)  # another call's failure
    assert scope.take_probe(lease=60.0, share=None)  # another call is the probe
    recovered_at = began + 4.0

    def others(step: Any) -> None:
        # The other calls: failing until `recovered_at`, then succeeding.
        if isinstance(step, Ask) and step.operation == "status":
            if clock.time() < recovered_at:
                scope.failed(retry=False, share=0.2, cool_until=None)
            else:
                scope.succeeded()
                scope.take_probe(lease=60.0, share=None)  # a success ends the lease

    driver = Driver(client, iter([reply(503), reply(200)]), others)
    result = driver.run()
    assert isinstance(result, StartSessionResult)
    assert len(driver.attempts) == 2  # nothing sent while the trouble lasted
    second = driver.steps.index(driver.attempts[1])
    assert clock.time() >= recovered_at
    # The release: a random part of the trouble's length, then the retry.
    release = driver.steps[second - 1]
    assert isinstance(release, Sleep)
    assert 0.0 <= release.seconds <= clock.time() - began
    assert result.attempts == 2


def _begun(client: AvatarioClient) -> Generator[Any, Any, Any]:
    """A call's flow up to its first attempt: counted while all was well."""
    flow: Generator[Any, Any, Any] = call_flow(client._begin(START_SESSION, dict(CALL)))
    step = next(flow)
    assert isinstance(step, Ask)
    assert step.operation == "deposit"
    assert isinstance(flow.send(store(client).deposit()), Attempt)
    return flow


def _answered(flow: Generator[Any, Any, Any], client: AvatarioClient) -> Any:
    """The flow's attempt gets a 200; what the flow then asks is answered, to its end."""
    answer: Any = reply(200)
    while True:
        try:
            step = flow.send(answer)
        except StopIteration as done:
            return done.value
        assert isinstance(step, Ask)
        answer = getattr(store(client), step.operation)(**step.arguments)


def test_calls_begun_before_the_trouble_end_it_by_their_successes(
    client: AvatarioClient, clock: FakeClock
) -> None:
    # Thousands of calls wait for a connection when a blip begins: their successes after it
    # are Avatario answering again, though they were counted before the trouble, and they
    # release the waiters (once, a burst's waiters rode out to their deadlines beside 4,900
    # successes that the store never heard of).
    early = [_begun(client) for _ in range(RECOVERED_MIN)]
    scope = store(client)
    began = clock.time()
    scope.failed(retry=False, share=0.2, cool_until=None)  # the blip, seen by another call
    assert scope.take_probe(lease=60.0, share=None)  # and another call is its probe

    def others(step: Any) -> None:
        # Once the failures' slots are past, the early calls' answers come.
        if isinstance(step, Ask) and step.operation == "status" and clock.time() - began >= 2.5:
            for flow in early:
                assert isinstance(_answered(flow, client), StartSessionResult)
            early.clear()

    driver = Driver(client, iter([reply(503), reply(200)]), others)
    result = driver.run()
    assert isinstance(result, StartSessionResult)
    assert result.attempts == 2
    assert clock.time() - began < 10.0  # released, not ridden out to the 15 s window
    assert scope.status().trouble_since is None


def test_successes_are_written_only_while_the_scope_is_in_trouble(
    client: AvatarioClient, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    scope = store(client)
    told: list[bool] = []  # what the store answered to each success told: still in trouble?
    real = scope.store.succeeded

    def counted(name: str) -> bool:
        told.append(real(name))
        return told[-1]

    monkeypatch.setattr(scope.store, "succeeded", counted)

    def calls(n: int) -> None:
        for _ in range(n):
            assert isinstance(Driver(client, iter([reply(200)])).run(), StartSessionResult)

    calls(5)
    assert told == []  # calm traffic: no write per success
    scope.failed(retry=False, share=0.2, cool_until=None)  # another call's failure
    clock.advance(2.5)  # its slot is past
    calls(RECOVERED_MIN + 3)
    # Told until the one that ended the trouble, then no more.
    assert told == [True] * (RECOVERED_MIN - 1) + [False]
    # A call's own failure: its success is told (it may hold the probe); here it ends the
    # short trouble its failure began, and the calls after it write nothing.
    told.clear()
    assert Driver(client, iter([reply(503), reply(200)])).run().attempts == 2
    calls(3)
    assert told == [False]


def test_a_stale_all_clear_never_hides_a_newer_trouble(client: AvatarioClient) -> None:
    # Two threads' answers cross: a success hears "over" after another thread's failure
    # began a new trouble. The late "over" must not stop this process telling successes.
    scope = store(client)
    heard = scope._heard
    asked_at = heard.news  # the success asks the store ...
    scope.failed(retry=False, share=0.2, cool_until=None)  # ... a failure meanwhile ...
    heard.hear(False, asked_at)  # ... and the success's answer comes back: "over"
    assert heard.trouble is True
    heard.hear(False, heard.news)  # an answer to a question asked since: taken
    assert heard.trouble is False


def test_clients_of_one_store_share_what_they_heard(tmp_path: Any) -> None:
    url = f"sqlite://{tmp_path}/budget.sqlite3"
    with (
        AvatarioClient(KEY, base_url=BASE_URL, retry_budget_store=url) as one,
        AvatarioClient(KEY, base_url=BASE_URL, retry_budget_store=url) as other,
        AvatarioClient("sk_other_key_000001", base_url=BASE_URL, retry_budget_store=url) as third,
    ):
        store(one).failed(retry=False, share=0.2, cool_until=None)
        assert store(other)._heard is store(one)._heard
        assert store(other)._heard.trouble is True
        assert store(third)._heard.trouble is False  # another key: another scope


def test_a_waiting_call_probes_when_no_one_else_does(
    client: AvatarioClient, clock: FakeClock
) -> None:
    scope = store(client)
    scope.failed(retry=False, share=0.2, cool_until=None)
    assert scope.take_probe(lease=1.0, share=None)  # another call probes, for one second

    def others(step: Any) -> None:
        if isinstance(step, Ask) and step.operation == "status":
            scope.failed(retry=False, share=0.2, cool_until=None)  # still failing

    driver = Driver(client, iter([reply(503), reply(200)]), others)
    assert isinstance(driver.run(), StartSessionResult)
    probes = [s for s in driver.steps if isinstance(s, Ask) and s.operation == "take_probe"]
    assert len(probes) >= 2  # refused while the other lease lasted, then granted
    assert len(driver.attempts) == 2


def test_a_cool_down_another_call_heard_is_waited_out(
    client: AvatarioClient, clock: FakeClock
) -> None:
    scope = store(client)
    until = clock.time() + 5.0
    scope.failed(retry=False, share=0.2, cool_until=until)  # a Retry-After of 5 s, elsewhere
    driver = Driver(client, iter([reply(503), reply(200)]))
    assert isinstance(driver.run(), StartSessionResult)
    first, second = (driver.steps.index(a) for a in driver.attempts)
    assert clock.time() >= until - 1e-6
    assert all(isinstance(s, (Sleep, Ask)) for s in driver.steps[first + 1 : second])


def test_a_waiter_gives_up_when_the_trouble_outlives_the_ride_out(
    client: AvatarioClient, clock: FakeClock
) -> None:
    scope = store(client)
    scope.failed(retry=False, share=0.2, cool_until=None)
    assert scope.take_probe(lease=60.0, share=None)  # the probe is someone else's all along

    def others(step: Any) -> None:
        if isinstance(step, Ask) and step.operation == "status":
            scope.failed(retry=False, share=0.2, cool_until=None)

    driver = Driver(client, iter([reply(503)]), others)
    began = clock.time()
    with pytest.raises(InternalServerError) as caught:
        driver.run()
    why = caught.value.not_retried_because or ""
    assert "did not answer again within the 15 s ride-out" in why
    assert len(driver.attempts) == 1
    assert 15.0 <= clock.time() - began <= 16.0  # the window, once


def test_after_the_ride_out_a_refused_retry_fails_at_once(
    client: AvatarioClient, clock: FakeClock
) -> None:
    scope = store(client)
    scope.failed(retry=False, share=0.2, cool_until=None)
    for _ in range(16):  # trouble older than the window, failures all along
        clock.advance(1.0)
        scope.failed(retry=True, share=0.2, cool_until=None)  # the budget spent meanwhile
    driver = Driver(client, iter([reply(503)]))
    began = clock.time()
    with pytest.raises(InternalServerError) as caught:
        driver.run()
    assert clock.time() == began  # no wait at all
    why = caught.value.not_retried_because or ""
    assert "retry budget is spent" in why
    assert "ride-out" in why


def test_ride_out_zero_is_the_budget_alone(clock: FakeClock) -> None:
    policy = RetryPolicy(ride_out=0)
    with AvatarioClient(KEY, base_url=BASE_URL, clock=clock, retry=policy) as client:
        scope = store(client)
        scope.failed(retry=False, share=0.2, cool_until=None)
        assert scope.take_probe(lease=60.0, share=None)
        driver = Driver(client, iter([reply(503), reply(200)]))
        assert isinstance(driver.run(), StartSessionResult)
    operations = [s.operation for s in driver.steps if isinstance(s, Ask)]
    assert operations == ["deposit", "failed", "succeeded"]  # no status, no probe


# -- a wait ends on close, Ctrl-C and cancellation ------------------------------------------


def _troubled(client: AvatarioClient | AsyncAvatarioClient) -> None:
    scope = client._budget
    scope.failed(retry=False, share=0.2, cool_until=None)
    assert scope.take_probe(lease=60.0, share=None)


def test_closing_the_client_ends_a_wait(clock: FakeClock) -> None:
    class ClosingClock(FakeClock):
        client: Any = None

        def sleep(self, seconds: float) -> None:
            super().sleep(seconds)
            if len(self.sleeps) == 3:  # waiting, past its backoff
                self.client.close()

    closing = ClosingClock(seed=2)
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(503, json={"error": "e"})

    with httpx.Client(transport=httpx.MockTransport(answer)) as http:
        client = AvatarioClient(KEY, base_url=BASE_URL, clock=closing, http_client=http)
        closing.client = client
        _troubled(client)
        with pytest.raises(APIError) as caught:
            client.start_session(**CALL)
    assert len(sent) == 1
    assert "closed" in (caught.value.not_retried_because or "")


def test_ctrl_c_ends_a_wait(clock: FakeClock) -> None:
    class Interrupting(FakeClock):
        def sleep(self, seconds: float) -> None:
            super().sleep(seconds)
            if len(self.sleeps) == 3:
                raise KeyboardInterrupt

    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(503, json={"error": "e"})

    with (
        httpx.Client(transport=httpx.MockTransport(answer)) as http,
        AvatarioClient(KEY, base_url=BASE_URL, clock=Interrupting(), http_client=http) as client,
    ):
        _troubled(client)
        with pytest.raises(KeyboardInterrupt):
            client.start_session(**CALL)
    assert len(sent) == 1


def test_cancelling_the_task_ends_a_wait() -> None:
    waiting = asyncio.Event()

    class Waiting(FakeClock):
        """Sleeps that take real time, so the test can cancel during one."""

        async def asleep(self, seconds: float) -> None:
            self.sleeps.append(seconds)
            self.now += seconds
            if len(self.sleeps) >= 3:  # past its backoff: waiting for Avatario
                waiting.set()
            await asyncio.sleep(0.01)

    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(503, json={"error": "e"})

    async def main() -> None:
        async with (
            httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http,
            AsyncAvatarioClient(KEY, base_url=BASE_URL, clock=Waiting(), http_client=http) as c,
        ):
            _troubled(c)
            task = asyncio.ensure_future(c.start_session(**CALL))
            await waiting.wait()  # the call is riding the trouble out
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(main())
    assert len(sent) == 1
