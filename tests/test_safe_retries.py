"""Safe retries, measured where it matters: how many avatars the fake Avatario really started.

Each row of the classification table in docs (not sent / refused / unknown / started) is played
by the fake server over real 127.0.0.1 sockets, for every way a call can travel (the sync
client over httpx, the async client over aiohttp, the async client over a given
httpx.AsyncClient), against a fake that honours ``Idempotency-Key`` and one that ignores it
(as nothing shows Avatario honours it). The assertions count the requests the fake received
and the sessions it started. The retry budget is counted over a mock transport on a virtual
clock (see its tests' docstrings).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avatario_wrapper import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APITimeoutError,
    AsyncAvatarioClient,
    AvatarioClient,
    InternalServerError,
    Outcome,
    RateLimitError,
    RetryPolicy,
    StartSessionResult,
)
from avatario_wrapper.testing import FakeClock, FakeServer, run_fake_server

from .conftest import BASE_URL, CALL, REAL_KINDS, Script, error, ok

pytestmark = pytest.mark.integration

KEY = "sk_safe_retries_key_0001"
FAST = RetryPolicy(initial_delay=0.01, max_delay=0.02)
FAST_UNKNOWN = RetryPolicy(initial_delay=0.01, max_delay=0.02, retry_unknown_outcome=True)

CallResult = StartSessionResult | APIError


# -- the fakes and a client that makes several calls over one pool ------------------------------


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[bool, FakeServer]]:
    with (
        run_fake_server(api_key=KEY) as honouring,
        run_fake_server(api_key=KEY, honour_idempotency_key=False) as ignoring,
    ):
        yield {True: honouring, False: ignoring}


@pytest.fixture(params=[True, False], ids=["honours-key", "ignores-key"])
def fake(request: pytest.FixtureRequest, fakes: dict[bool, FakeServer]) -> FakeServer:
    server = fakes[bool(request.param)]
    server.app.reset()
    return server


@pytest.fixture
def kind(real_kind: str) -> str:
    return real_kind


def calls(
    kind: str,
    server: FakeServer | str,
    scripts: list[str],
    *,
    retry: RetryPolicy = FAST,
    timeout: float = 2.0,
) -> list[CallResult]:
    """One client makes one call per script, in order, over one connection pool; each script
    is queued on the fake just before its call. Returns each call's result or error."""
    url = server if isinstance(server, str) else server.url
    results: list[CallResult] = []
    options: dict[str, Any] = {"base_url": url, "retry": retry, "timeout": timeout}

    def queue(script: str) -> None:
        if script and not isinstance(server, str):
            server.add_faults(script)

    if kind == "sync":
        with AvatarioClient(KEY, **options) as client:
            for script in scripts:
                queue(script)
                try:
                    results.append(client.start_session(**CALL))
                except APIError as failed:
                    results.append(failed)
        return results

    async def run(client: AsyncAvatarioClient) -> None:
        for script in scripts:
            queue(script)
            try:
                results.append(await client.start_session(**CALL))
            except APIError as failed:
                results.append(failed)

    async def main() -> None:
        if kind == "async-httpx":
            async with (
                httpx.AsyncClient() as http,
                AsyncAvatarioClient(KEY, http_client=http, **options) as client,
            ):
                await run(client)
        else:
            async with AsyncAvatarioClient(KEY, **options) as client:
                await run(client)

    asyncio.run(main())
    return results


def one_call(kind: str, server: FakeServer | str, script: str = "", **kw: Any) -> CallResult:
    [result] = calls(kind, server, [script], **kw)
    return result


def failed(result: CallResult, cls: type[APIError] = APIError) -> APIError:
    assert isinstance(result, cls), result
    return result


# -- not sent ----------------------------------------------------------------------------------


def test_a_refused_connection_is_not_sent_and_retried_to_the_limit(kind: str) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there: every attempt is refused before a byte is sent
    error = failed(one_call(kind, f"http://127.0.0.1:{port}"), APIConnectionError)
    assert (error.attempts, error.outcome, error.may_have_started) == (3, Outcome.NOT_SENT, False)


def test_the_idle_race_is_not_resent_it_is_an_unknown_outcome(kind: str, fake: FakeServer) -> None:
    # Call 1 succeeds and leaves its connection in the pool. Call 2 reuses it, but the server
    # closes it cleanly (its idle timer fired) before serving the request. At the socket level
    # this is also a server that started the session and then died (the next test), so the
    # client does not resend it: the call fails "may have started", falsely this time. The
    # keep-alive expiry keeps this rare (docs/retries.md; scripts/reliability measures it).
    first, second = calls(kind, fake, ["", "idle-close"])
    assert isinstance(first, StartSessionResult)
    error = failed(second, APIConnectionError)
    assert (error.attempts, error.outcome, error.may_have_started) == (1, Outcome.UNKNOWN, True)
    assert error.retryable is False
    requests = fake.requests
    assert [(r.fault, r.status) for r in requests] == [(None, 200), ("idle-close", None)]
    assert requests[0].client == requests[1].client  # the reused keep-alive connection
    assert len(fake.sessions) == 1  # nothing was served for call 2


def test_the_idle_race_is_resent_with_its_key_where_unknown_outcomes_may_be(
    kind: str, fake: FakeServer
) -> None:
    first, second = calls(kind, fake, ["", "idle-close"], retry=FAST_UNKNOWN)
    assert isinstance(first, StartSessionResult)
    assert isinstance(second, StartSessionResult), second
    assert second.attempts == 2
    assert [(r.fault, r.status) for r in fake.requests] == [
        (None, 200),
        ("idle-close", None),
        (None, 200),
    ]
    assert len(fake.sessions) == 2  # one per call: the idle race served nothing


def test_lost_close_on_a_reused_connection_is_never_sent_again(kind: str, fake: FakeServer) -> None:
    # The server starts the session and then closes the reused connection cleanly without
    # answering (a crash after acting). The client cannot tell this from the idle race, so
    # neither is resent: one session for the call, whatever the server does with keys.
    first, second = calls(kind, fake, ["", "lost-close"])
    assert isinstance(first, StartSessionResult)
    error = failed(second, APIConnectionError)
    assert (error.attempts, error.outcome, error.may_have_started) == (1, Outcome.UNKNOWN, True)
    assert [(r.fault, r.status) for r in fake.requests] == [(None, 200), ("lost-close", None)]
    assert len(fake.sessions) == 2  # one per call: the second did start, and only once


# -- refused -----------------------------------------------------------------------------------


def test_a_503_is_refused_and_retried_to_one_session(kind: str, fake: FakeServer) -> None:
    result = one_call(kind, fake, "503")
    assert isinstance(result, StartSessionResult), result
    assert result.attempts == len(fake.requests) == 2
    assert len(fake.sessions) == 1


def test_a_429_waits_its_retry_after_then_starts_one_session(kind: str, fake: FakeServer) -> None:
    result = one_call(kind, fake, "429:retry-after=0.05")
    assert isinstance(result, StartSessionResult), result
    first, second = fake.requests
    assert (first.status, second.status) == (429, 200)
    assert second.time - first.time >= 0.04
    assert len(fake.sessions) == 1


def test_a_429_on_every_attempt_ends_as_a_rate_limit_error(kind: str, fake: FakeServer) -> None:
    error = failed(one_call(kind, fake, "429*3"), RateLimitError)
    assert (error.attempts, error.outcome, error.may_have_started) == (3, Outcome.REFUSED, False)
    assert len(fake.requests) == 3
    assert fake.sessions == []


# -- unknown -----------------------------------------------------------------------------------


def test_a_reset_after_the_request_went_out_is_not_resent(kind: str, fake: FakeServer) -> None:
    error = failed(one_call(kind, fake, "reset,ok"), APIConnectionError)
    assert (error.attempts, error.outcome, error.may_have_started) == (1, Outcome.UNKNOWN, True)
    assert len(fake.requests) == 1
    assert fake.sessions == []


def test_a_lost_response_is_not_resent_by_default(kind: str, fake: FakeServer) -> None:
    error = failed(one_call(kind, fake, "lost,ok"), APIConnectionError)
    assert (error.attempts, error.outcome, error.may_have_started) == (1, Outcome.UNKNOWN, True)
    assert error.retryable is False
    assert error.idempotency_key == fake.requests[0].headers["idempotency-key"]
    assert len(fake.requests) == 1
    assert len(fake.sessions) == 1  # the avatar did start


def test_retry_unknown_outcome_after_a_lost_response(kind: str, fake: FakeServer) -> None:
    # With the flag, the lost response is resent with the same key. A server that honours the
    # key returns the session it started; one that ignores the key starts a second avatar:
    # the documented risk of retry_unknown_outcome=True.
    result = one_call(kind, fake, "lost", retry=FAST_UNKNOWN)
    assert isinstance(result, StartSessionResult), result
    assert result.attempts == len(fake.requests) == 2
    assert len({r.headers["idempotency-key"] for r in fake.requests}) == 1
    if fake.honour_idempotency_key:
        assert len(fake.sessions) == 1
        assert result.session_id == fake.sessions[0]["session_id"]
    else:
        assert len(fake.sessions) == 2


def test_a_clean_close_on_a_fresh_connection_is_unknown(kind: str, fake: FakeServer) -> None:
    # The same clean EOF as the idle race, but on a connection opened for this attempt: no
    # idle timer can explain it, so the server may have acted. Not resent.
    error = failed(one_call(kind, fake, "lost-close,ok"), APIConnectionError)
    assert (error.attempts, error.outcome, error.may_have_started) == (1, Outcome.UNKNOWN, True)
    assert len(fake.requests) == 1
    assert len(fake.sessions) == 1


@pytest.mark.parametrize("status", [500, 502, 504])
def test_a_500_502_or_504_is_unknown_and_not_resent(
    kind: str, fake: FakeServer, status: int
) -> None:
    error = failed(one_call(kind, fake, f"{status},ok"), InternalServerError)
    assert (error.attempts, error.outcome, error.may_have_started) == (1, Outcome.UNKNOWN, True)
    assert len(fake.requests) == 1


def test_a_stall_times_out_as_unknown_and_is_not_resent(kind: str, fake: FakeServer) -> None:
    error = failed(one_call(kind, fake, "stall,ok", timeout=0.3), APITimeoutError)
    assert (error.attempts, error.outcome, error.may_have_started) == (1, Outcome.UNKNOWN, True)
    assert len(fake.requests) == 1


# -- started -----------------------------------------------------------------------------------


def test_a_malformed_200_is_started_and_never_resent(kind: str, fake: FakeServer) -> None:
    error = failed(one_call(kind, fake, "malformed,ok"), APIResponseValidationError)
    assert (error.attempts, error.outcome, error.may_have_started) == (1, Outcome.STARTED, True)
    assert len(fake.requests) == 1
    assert fake.app.pending_faults == 1  # the "ok" was never asked for


# -- the property: never two avatars for one call under the default policy ------------------------

FAULT_STEPS = ["503", "429", "500", "502", "504", "reset", "lost", "malformed", "stall", "ok"]
call_scripts = st.lists(
    st.lists(st.sampled_from(FAULT_STEPS), min_size=0, max_size=3), min_size=1, max_size=4
)


@pytest.mark.parametrize("kind", REAL_KINDS)
@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    database=None,
)
@given(scripts=call_scripts)
def test_the_default_policy_starts_at_most_one_session_per_call(
    kind: str, fakes: dict[bool, FakeServer], scripts: list[list[str]]
) -> None:
    # Against a fake that ignores Idempotency-Key, any resend of a request the server may
    # have acted on would show as a second session. Whatever the faults, none does.
    server = fakes[False]
    server.app.reset()
    stalls = any("stall" in script for script in scripts)
    timeout = 0.1 if stalls else 2.0
    for script in scripts:
        server.app.clear_faults()
        before = len(server.sessions)
        [result] = calls(kind, server, [",".join(script)], timeout=timeout)
        started = len(server.sessions) - before
        assert started <= 1, (script, result)
        if isinstance(result, StartSessionResult):
            assert started == 1
            assert result.session_id == server.sessions[-1]["session_id"]
        elif result.may_have_started is False:
            assert started == 0, (script, result)


# -- the retry budget ----------------------------------------------------------------------------

#: The budget alone, as it binds once a scope's trouble is older than the ride-out window (the
#: ride-out itself: tests/test_ride_out.py).
BUDGET_ONLY = RetryPolicy(ride_out=0)


def _count_sync(script: Script, clock: FakeClock, n: int) -> list[CallResult]:
    results: list[CallResult] = []
    with (
        httpx.Client(transport=httpx.MockTransport(script)) as http,
        AvatarioClient(
            KEY, base_url=BASE_URL, clock=clock, http_client=http, retry=BUDGET_ONLY
        ) as client,
    ):
        for _ in range(n):
            try:
                results.append(client.start_session(**CALL))
            except APIError as failed_call:
                results.append(failed_call)
    return results


def test_the_retry_budget_caps_retries_when_every_request_fails() -> None:
    """500 calls from one client against a server answering 503 to everything send at most
    1.3 x 500 requests (a retry budget of 20% of recent calls plus a small reserve).

    The budget is about counting, not sockets: an httpx.MockTransport answers, and the
    backoff sleeps run on a FakeClock (virtual time, so this takes well under a second).
    """
    script = Script(error(503))
    results = _count_sync(script, FakeClock(seed=3), 500)
    assert all(isinstance(r, InternalServerError) for r in results)
    assert 500 < len(script.requests) <= 1.3 * 500
    reasons = [r.not_retried_because or "" for r in results if isinstance(r, APIError)]
    # Every 503 was retryable by the table, and each says why it was not retried (again).
    assert all(isinstance(r, APIError) and r.retryable for r in results)
    assert all("retry budget" in why or "attempts are used" in why for why in reasons)
    assert any("retry budget" in why for why in reasons), "the budget never stopped a retry"


def test_without_faults_500_calls_send_exactly_500_requests() -> None:
    """The budget never holds back a first attempt. (MockTransport and FakeClock, as above.)"""
    script = Script(ok())
    results = _count_sync(script, FakeClock(seed=3), 500)
    assert all(isinstance(r, StartSessionResult) for r in results)
    assert len(script.requests) == 500


class FrozenClock(FakeClock):
    """Virtual time that never moves: every retry falls in one budget window, so the bound
    is exact: retries <= 20% of calls + the reserve of 3."""

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    async def asleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(0)


WORKERS = 8
CALLS_EACH = 50
TOTAL_CALLS = WORKERS * CALLS_EACH
#: One shared budget: calls + 20% of them + the reserve of 3.
SHARED_BOUND = TOTAL_CALLS + 0.2 * TOTAL_CALLS + 3


def _hammer_from_threads(clients: list[AvatarioClient]) -> None:
    barrier = threading.Barrier(len(clients))

    def work(client: AvatarioClient) -> None:
        barrier.wait()
        for _ in range(CALLS_EACH):
            with pytest.raises(InternalServerError):
                client.start_session(**CALL)

    threads = [threading.Thread(target=work, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)


def test_with_options_copies_share_one_budget_across_threads() -> None:
    """Eight threads, each on its own with_options copy, against a server failing with 503:
    together they retry within one budget. A control run with eight separate clients (eight
    budgets) sends more than one budget allows, so the bound really tests the sharing.
    (MockTransport and a frozen virtual clock: this is about counting.)"""
    shared = Script(error(503))
    with (
        httpx.Client(transport=httpx.MockTransport(shared)) as http,
        AvatarioClient(
            KEY, base_url=BASE_URL, clock=FrozenClock(), http_client=http, retry=BUDGET_ONLY
        ) as base,
    ):
        copies = [base.with_options(timeout=5.0 + i) for i in range(WORKERS)]
        _hammer_from_threads(copies)
    assert TOTAL_CALLS + 3 <= len(shared.requests) <= SHARED_BOUND

    separate = Script(error(503))
    with httpx.Client(transport=httpx.MockTransport(separate)) as http:
        clients = [
            AvatarioClient(
                KEY, base_url=BASE_URL, clock=FrozenClock(), http_client=http, retry=BUDGET_ONLY
            )
            for _ in range(WORKERS)
        ]
        _hammer_from_threads(clients)
    assert len(separate.requests) > SHARED_BOUND


def test_with_options_copies_share_one_budget_across_tasks() -> None:
    """The same with eight asyncio tasks on with_options copies of one async client."""
    script = Script(error(503))

    async def main() -> None:
        async with (
            httpx.AsyncClient(transport=httpx.MockTransport(script)) as http,
            AsyncAvatarioClient(
                KEY, base_url=BASE_URL, clock=FrozenClock(), http_client=http, retry=BUDGET_ONLY
            ) as base,
        ):
            copies = [base.with_options(timeout=5.0 + i) for i in range(WORKERS)]

            async def work(client: AsyncAvatarioClient) -> None:
                for _ in range(CALLS_EACH):
                    with pytest.raises(InternalServerError):
                        await client.start_session(**CALL)

            await asyncio.gather(*(work(c) for c in copies))

    asyncio.run(main())
    assert TOTAL_CALLS + 3 <= len(script.requests) <= SHARED_BOUND
