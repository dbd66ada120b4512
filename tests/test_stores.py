"""The retry budget stores' semantics, the same for every store, on an injected clock.

Each test runs on the in-process store, the host-wide store (SQLite in a temp folder) and the
Redis store (a real Redis; timed by the fake clock through `server_time=False`), so the Lua
scripts are held to the same answers as the Python rules.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import attrs
import pytest

from avatario_wrapper._stores import (
    DEFAULT_RESERVE,
    BudgetStore,
    HostStore,
    ProcessStore,
    Status,
    Verdict,
    check_scope,
    scope_fingerprint,
)
from avatario_wrapper._stores.rules import QUIET_SECONDS, RECOVERED_MIN
from avatario_wrapper.testing import FakeClock

from .store_kit import allowed, make_store, new_scope

KINDS = ["process", "host", "redis"]


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _store(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock, **options: object
) -> BudgetStore:
    if kind == "redis":
        url = request.getfixturevalue("redis_url")
        fallback = ProcessStore(clock=clock)  # a Redis failure would show as wrong answers
        # Timeouts for a loaded machine: these tests are about answers, not speed.
        slow = {"timeout": 2.0, "connect_timeout": 2.0}
        return make_store(
            "redis", url, clock=clock, server_time=False, fallback=fallback, **slow, **options
        )
    return make_store(kind, str(tmp_path / "budget.sqlite3"), clock=clock, **options)


@pytest.fixture
def store(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> Iterator[BudgetStore]:
    made = _store(kind, request, tmp_path, clock)
    yield made
    made.close()


def _retry(store: BudgetStore, scope: str, share: float | None = 0.2) -> Verdict:
    return store.failed(scope, retry=True, share=share, cool_until=None)


# -- the budget -------------------------------------------------------------------------------


@pytest.mark.parametrize("calls", [0, 1, 4, 5, 40])
def test_retries_are_capped_at_calls_times_share_plus_the_reserve(
    store: BudgetStore, calls: int
) -> None:
    scope = new_scope()
    for _ in range(calls):
        store.deposit(scope)
    assert allowed(store, scope, 60) == math.floor(calls * 0.2 + DEFAULT_RESERVE)
    verdict = _retry(store, scope)
    assert verdict == Verdict(False, "budget", None, verdict.trouble_since)


def test_the_reserve_is_a_parameter(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> None:
    store = _store(kind, request, tmp_path, clock, reserve=1.0)
    scope = new_scope()
    assert allowed(store, scope, 5) == 1
    store.close()


def test_the_default_reserve_meets_issue_26s_goal() -> None:
    # 40 calls in a sustained outage: first attempts plus every retry the budget allows.
    assert (40 + 40 * 0.2 + DEFAULT_RESERVE) / 40 <= 1.3


def test_no_budget_allows_every_retry(store: BudgetStore) -> None:
    scope = new_scope()
    assert allowed(store, scope, 20, share=None) == 20


def test_a_refused_retry_withdraws_nothing_and_a_failure_without_retry_decides_nothing(
    store: BudgetStore,
) -> None:
    scope = new_scope()
    verdict = store.failed(scope, retry=False, share=0.2, cool_until=None)
    assert (verdict.allowed, verdict.refused_by) == (False, None)
    assert allowed(store, scope, 10) == 3
    store.deposit(scope)
    store.deposit(scope)
    store.deposit(scope)
    store.deposit(scope)
    store.deposit(scope)  # 5 calls: one more retry, since refusals spent nothing
    assert allowed(store, scope, 10) == 1


def test_the_window_forgets_calls_and_retries_after_ten_seconds(
    store: BudgetStore, clock: FakeClock
) -> None:
    scope = new_scope()
    for _ in range(10):
        store.deposit(scope)  # budget: 10 x 0.2 + 3 = 5
    assert allowed(store, scope, 4) == 4
    clock.advance(9.5)
    assert allowed(store, scope, 3) == 1  # still the same window
    clock.advance(1.0)  # the first slot's calls and retries are forgotten
    assert allowed(store, scope, 10) == 2  # the reserve, less the retry made at 9.5 s
    clock.advance(10.0)
    store.deposit(scope)
    assert allowed(store, scope, 10) == 3  # floor(1 x 0.2 + 3)


def test_threads_share_one_budget_exactly(store: BudgetStore) -> None:
    scope = new_scope()

    def job() -> int:
        for _ in range(25):
            store.deposit(scope)
        return allowed(store, scope, 25)

    with ThreadPoolExecutor(8) as pool:
        granted = sum(pool.map(lambda _: job(), range(8)))
    assert granted == math.floor(200 * 0.2 + DEFAULT_RESERVE)  # the last failure saw all calls


def test_two_scopes_never_share_a_budget(store: BudgetStore) -> None:
    busy, quiet = new_scope("busy"), new_scope("quiet")
    for _ in range(40):
        store.deposit(busy)
    assert allowed(store, quiet, 20) == 3
    assert allowed(store, busy, 20) == 11
    store.failed(quiet, retry=False, share=None, cool_until=store_time(store) + 30)
    store._clock.advance(2.5)  # type: ignore[attr-defined] # past the failures' slots
    for _ in range(RECOVERED_MIN):
        store.succeeded(quiet)
    status = store.status(busy)
    assert status.cooling_until is None
    assert status.successes == 0
    assert status.trouble_since is not None
    assert store.status(quiet).trouble_since is None


def store_time(store: BudgetStore) -> float:
    """The wall time on the store's (fake) clock."""
    return float(store._clock.time())  # type: ignore[attr-defined]


# -- the shared cool-down -----------------------------------------------------------------


def test_a_cool_down_refuses_retries_until_it_ends(store: BudgetStore, clock: FakeClock) -> None:
    scope = new_scope()
    now = clock.time()
    # The call that heard the Retry-After waits it out itself: its retry is the budget's to
    # grant (and is withdrawn); every other call is refused until the cool-down ends.
    verdict = store.failed(scope, retry=True, share=None, cool_until=now + 5)
    assert verdict.allowed
    assert verdict.cooling_until == pytest.approx(now + 5, abs=1e-3)
    shorter = store.failed(scope, retry=True, share=None, cool_until=now + 1)
    assert shorter.refused_by == "cool_down"  # its wait would end before the cool-down
    clock.advance(4.9)
    assert _retry(store, scope, None).refused_by == "cool_down"
    clock.advance(0.2)
    assert _retry(store, scope, None).allowed
    assert store.status(scope).cooling_until is None


def test_a_cool_down_only_grows_and_is_bounded_to_a_minute(
    store: BudgetStore, clock: FakeClock
) -> None:
    scope = new_scope()
    now = clock.time()
    store.failed(scope, retry=False, share=None, cool_until=now + 10)
    shorter = store.failed(scope, retry=False, share=None, cool_until=now + 2)
    assert shorter.cooling_until == pytest.approx(now + 10, abs=1e-3)
    longer = store.failed(scope, retry=False, share=None, cool_until=now + 3600)
    assert longer.cooling_until == pytest.approx(now + 60, abs=1e-3)
    endless = store.failed(scope, retry=False, share=None, cool_until=math.inf)
    assert endless.cooling_until == pytest.approx(now + 60, abs=1e-3)
    past = store.failed(scope, retry=False, share=None, cool_until=now - 100)
    assert past.cooling_until == pytest.approx(now + 60, abs=1e-3)
    clock.advance(60.5)
    assert store.status(scope).cooling_until is None


# -- trouble and successes ----------------------------------------------------------------------


def test_trouble_starts_at_the_first_failure_and_ends_when_failures_stop(
    store: BudgetStore, clock: FakeClock
) -> None:
    scope = new_scope()
    assert store.status(scope) == Status(None, None, 0, None)
    assert store.deposit(scope) is False
    began = clock.time()
    store.failed(scope, retry=False, share=0.2, cool_until=None)
    clock.advance(3)
    verdict = _retry(store, scope)
    assert verdict.trouble_since == pytest.approx(began, abs=1e-3)
    assert store.status(scope).trouble_since == pytest.approx(began, abs=1e-3)
    assert store.deposit(scope) is True  # a call in a scope in trouble is told so
    clock.advance(0.5)
    # One success beside one failure: still in trouble, and the store says so.
    assert store.succeeded(scope) is True
    status = store.status(scope)
    assert (status.trouble_since, status.successes) == (pytest.approx(began, abs=1e-3), 1)
    clock.advance(2)  # the failure's slot is past: the next successes end the trouble
    for _ in range(RECOVERED_MIN - 1):
        assert store.succeeded(scope) is True
    assert store.status(scope).trouble_since is not None  # a success or two is no recovery
    assert store.succeeded(scope) is False  # the one that ended it
    assert store.succeeded(scope) is False  # and all is well after it
    status = store.status(scope)
    assert (status.trouble_since, status.successes) == (None, 2 + RECOVERED_MIN)
    assert status.last_success == pytest.approx(began + 5.5, abs=1e-3)
    again = store.failed(scope, retry=False, share=0.2, cool_until=None)
    assert again.trouble_since == pytest.approx(clock.time(), abs=1e-3)


def test_a_steady_overload_stays_in_trouble(store: BudgetStore, clock: FakeClock) -> None:
    # Every other attempt refused: each success comes beside as many failures.
    scope = new_scope()
    began = clock.time()
    for _ in range(40):
        store.failed(scope, retry=False, share=0.2, cool_until=None)
        store.succeeded(scope)
        clock.advance(0.25)
    assert store.status(scope).trouble_since == pytest.approx(began, abs=1e-3)


@pytest.mark.parametrize("dated", [0.0, 2.0])
def test_a_failure_counts_when_its_evidence_dates_from(
    store: BudgetStore, clock: FakeClock, dated: float
) -> None:
    # A blackhole's end: connects begun inside it time out (dated back by how long they
    # tried) beside the new calls' successes; counted when they began, they are no news
    # against the successes, which end the trouble. The same failures told as news do not.
    scope = new_scope()
    clock.advance(1.0 - (clock.time() % 1.0) + 0.05)  # the start of a slot
    store.failed(scope, retry=False, share=0.2, cool_until=None)
    clock.advance(2.0)
    for _ in range(RECOVERED_MIN):
        store.failed(scope, retry=False, share=0.2, cool_until=None, dated=dated)
        store.succeeded(scope)
    assert (store.status(scope).trouble_since is None) is (dated > 0)


def test_quiet_is_no_recovery_until_long_after_a_call_could_wait(
    store: BudgetStore, clock: FakeClock
) -> None:
    # A call riding the trouble out sends nothing: the quiet it makes is not Avatario
    # answering again, so the trouble outlasts any call's wait (30 s deadline, 15 s ride-out).
    scope = new_scope()
    store.failed(scope, retry=False, share=0.2, cool_until=None)
    clock.advance(QUIET_SECONDS - 1)
    assert store.status(scope).trouble_since is not None
    assert store.deposit(scope) is True
    clock.advance(2)
    assert store.status(scope).trouble_since is None
    assert store.deposit(scope) is False


def test_an_idle_scope_is_forgotten(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> None:
    if kind == "redis":
        pytest.skip("Redis forgets by the key's TTL on its own clock (test_stores_redis.py)")
    store = _store(kind, request, tmp_path, clock)
    scope = new_scope()
    store.succeeded(scope)
    store.failed(scope, retry=False, share=None, cool_until=None)
    clock.advance(599)
    assert store.status(scope).successes == 1
    clock.advance(2)
    assert store.status(scope) == Status(None, None, 0, None)
    store.close()


# -- the probe ---------------------------------------------------------------------------------


def test_one_probe_at_a_time_for_its_lease(store: BudgetStore, clock: FakeClock) -> None:
    scope = new_scope()
    assert store.take_probe(scope, lease=2.0, share=None)
    assert not store.take_probe(scope, lease=2.0, share=None)
    clock.advance(1.9)
    assert not store.take_probe(scope, lease=2.0, share=None)
    clock.advance(0.2)
    assert store.take_probe(scope, lease=2.0, share=None)


def test_a_success_ends_the_lease(store: BudgetStore) -> None:
    scope = new_scope()
    assert store.take_probe(scope, lease=30.0, share=None)
    store.succeeded(scope)
    assert store.take_probe(scope, lease=30.0, share=None)


def test_a_probe_is_a_retry_from_the_budget(store: BudgetStore, clock: FakeClock) -> None:
    scope = new_scope()
    assert store.take_probe(scope, lease=0.5, share=0.2)  # withdraws one of the reserve's 3
    assert allowed(store, scope, 10) == 2
    clock.advance(1)
    assert not store.take_probe(scope, lease=0.5, share=0.2)  # the budget is spent
    clock.advance(10)
    assert store.take_probe(scope, lease=0.5, share=0.2)


def test_no_probe_while_the_server_asked_to_wait(store: BudgetStore, clock: FakeClock) -> None:
    scope = new_scope()
    store.failed(scope, retry=False, share=None, cool_until=clock.time() + 3)
    assert not store.take_probe(scope, lease=1.0, share=None)
    clock.advance(3.1)
    assert store.take_probe(scope, lease=1.0, share=None)


@pytest.mark.parametrize("lease", [3600.0, math.inf])
def test_a_lease_is_bounded_to_a_minute(store: BudgetStore, clock: FakeClock, lease: float) -> None:
    scope = new_scope()
    assert store.take_probe(scope, lease=lease, share=None)
    clock.advance(59.5)
    assert not store.take_probe(scope, lease=1.0, share=None)
    clock.advance(1.0)
    assert store.take_probe(scope, lease=1.0, share=None)


# -- clock steps ---------------------------------------------------------------------------------


def test_a_wall_clock_stepped_back_blocks_nothing_for_long(
    store: BudgetStore, clock: FakeClock
) -> None:
    scope = new_scope()
    for _ in range(40):
        store.deposit(scope)
    store.failed(scope, retry=False, share=None, cool_until=clock.time() + 50)
    assert store.take_probe(scope, lease=50.0, share=None) is False  # cooling
    clock.epoch -= 3600  # NTP steps the wall clock back an hour
    status = store.status(scope)
    assert status.trouble_since is None or status.trouble_since <= clock.time() + 1e-3
    if store.name != "process":  # wall-timed: the stepped deadlines are over, not an hour long
        assert status.cooling_until is None
    clock.advance(60.5)  # whatever the store's clock, within the bounds everything is free
    assert store.status(scope).cooling_until is None
    assert store.take_probe(scope, lease=1.0, share=0.2)  # a retry: one of the reserve's 3
    clock.advance(1.0)
    assert allowed(store, scope, 5) == 2  # calls "from the future" aged out with the window


@pytest.mark.parametrize("step", [3.0, 7.0])
def test_slots_a_little_ahead_count_until_the_clock_passes_them(
    store: BudgetStore, clock: FakeClock, step: float
) -> None:
    scope = new_scope()
    for _ in range(20):
        store.deposit(scope)  # budget 20 x 0.2 + 3 = 7
    clock.epoch -= step  # a small step back: the 20 calls are "from the future"
    assert allowed(store, scope, 4) == 4  # they still count
    clock.advance(10.5 + step)  # the clock passed them, and the window after them
    assert allowed(store, scope, 10) == 3


@pytest.mark.parametrize("step", [3600, 3605])  # onto the same ring entry, or another
def test_slots_far_ahead_are_forgotten(store: BudgetStore, clock: FakeClock, step: float) -> None:
    scope = new_scope()
    for _ in range(40):
        store.deposit(scope)
    clock.epoch -= step
    expected = 11 if store.name == "process" else 3  # monotonic time did not step
    assert allowed(store, scope, 20) == expected


def test_a_wall_clock_stepped_forward_forgets_the_window(
    store: BudgetStore, clock: FakeClock
) -> None:
    scope = new_scope()
    for _ in range(5):
        _retry(store, scope)
    clock.epoch += 30
    expected = 0 if store.name == "process" else 3  # monotonic time did not move
    assert allowed(store, scope, 5) == expected


# -- async twins, the answers, scopes ---------------------------------------------------------


def test_the_async_twins_share_the_sync_state(store: BudgetStore, clock: FakeClock) -> None:
    scope = new_scope()

    async def main() -> None:
        for _ in range(10):
            await store.adeposit(scope)
        answers = [
            (await store.afailed(scope, retry=True, share=0.2, cool_until=None)).allowed
            for _ in range(6)
        ]
        assert answers == [True] * 5 + [False]
        assert (await store.astatus(scope)).trouble_since is not None
        assert not await store.atake_probe(scope, lease=1.0, share=0.2)  # the budget is spent
        await store.asucceeded(scope)
        assert (await store.astatus(scope)).successes == 1
        assert await store.atake_probe(scope, lease=1.0, share=None)
        await store.aclose()

    asyncio.run(main())
    assert store.status(scope).successes == 1  # the sync side sees it (and still works)


def test_answers_are_frozen_values() -> None:
    verdict = Verdict(True, None, None, 1.0)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        verdict.allowed = False  # type: ignore[misc]
    assert Status(None, None, 0, None) == Status(None, None, 0, None)


@pytest.mark.parametrize(
    "bad", ["", "a" * 129, "has space", "key/slash", "sk_live_x\n", "ключ", "a{b}"]
)
def test_a_scope_must_be_a_short_token(bad: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="scope") as caught:
        check_scope(bad)
    assert bad not in str(caught.value) or not bad
    with pytest.raises(ValueError, match="scope"):
        HostStore(tmp_path / "b.sqlite3").deposit(bad)
    with pytest.raises(ValueError, match="scope"):
        ProcessStore().deposit(bad)


def test_a_scope_fingerprint_hides_the_key_and_tells_origins_and_keys_apart() -> None:
    key = "sk_test_SECRET_KEY_5f2b9c"
    scope = scope_fingerprint("https://avatario.ai", key)
    assert check_scope(scope) == scope
    assert key not in scope
    assert "SECRET" not in scope
    assert scope == scope_fingerprint("https://avatario.ai", key)
    assert scope != scope_fingerprint("https://staging.avatario.ai", key)
    assert scope != scope_fingerprint("https://avatario.ai", key + "x")


def test_store_names(kind: str, store: BudgetStore) -> None:
    assert store.name == kind
    assert "SECRET" not in repr(store)
