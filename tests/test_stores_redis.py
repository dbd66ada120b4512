"""The Redis store against a real redis-server: keys, scripts, the server's clock, credentials,
and what a call sees when Redis dies, hangs or refuses it.

`redis_url` is the run's shared server (use fresh scopes, flush nothing); `private_redis` is a
test's own, to kill, restart or flush. Timing bounds are loose (a loaded machine).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from avatario_wrapper._stores import HostStore, ProcessStore, Status
from avatario_wrapper._stores.redis import RedisStore
from avatario_wrapper.errors import AvatarioConfigError
from avatario_wrapper.testing import FakeClock

from .redis_server import RedisServer
from .store_kit import allowed, new_scope, run_jobs

#: Far above the few milliseconds an operation takes when Redis fails, far below a call.
SLOW = 0.5
PASSWORD = "s3cr3t-REDIS-pass"
#: Generous timeouts for tests about answers rather than speed (a loaded machine).
PATIENT: dict[str, Any] = {"timeout": 2.0, "connect_timeout": 2.0}


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="avatario_wrapper")
    return caplog


def _field(url: str, scope: str, name: str) -> Any:
    """One field of a scope's hash, read by a client of the test's own."""
    with redis.Redis.from_url(url) as peek:
        return peek.hget(f"avatario:budget:{scope}", name)


def _messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level]


# -- the URL ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://user:s3cr3t-REDIS-pass@h:6379/0", "starts with redis://"),
        ("redis://:s3cr3t-REDIS-pass@/0", "names no host"),
        ("redis://:s3cr3t-REDIS-pass@h:99999/0", "port"),
        ("redis://:s3cr3t-REDIS-pass@h:6379/zero", "database number"),
        ("unix://", "socket's path"),
    ],
)
def test_a_bad_url_is_a_config_error_that_never_repeats_it(url: str, problem: str) -> None:
    with pytest.raises(AvatarioConfigError) as caught:
        RedisStore(url, setting="AVATARIO_RETRY_BUDGET_URL")
    assert caught.value.field == "AVATARIO_RETRY_BUDGET_URL"
    assert problem in str(caught.value)
    assert PASSWORD not in str(caught.value)
    assert "h:" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"redis://avatario:{PASSWORD}@redis.internal:6380/2?ssl_cert_reqs=none", "redis://redis.internal:6380/2"),
        (f"rediss://:{PASSWORD}@[::1]/0", "rediss://[::1]:6379/0"),
        ("unix:///run/redis/redis.sock?db=1", "unix:///run/redis/redis.sock"),
    ],
)  # fmt: skip
def test_the_url_is_shown_without_credentials(url: str, shown: str) -> None:
    store = RedisStore(url)
    assert repr(store) == f"RedisStore({shown!r})"
    store.close()


def test_credentials_in_the_url_work_and_never_show_in_a_warning(
    redis_binary: str, tmp_path: Path, logs: pytest.LogCaptureFixture
) -> None:
    with RedisServer(redis_binary, tmp_path, "--requirepass", PASSWORD) as server:
        good = f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0"
        store = RedisStore(good, fallback=ProcessStore(), **PATIENT)
        scope = new_scope()
        store.succeeded(scope)
        assert _field(good, scope, "succ") == b"1"
        wrong = RedisStore(
            f"redis://:{PASSWORD}x@127.0.0.1:{server.port}/0",
            fallback=HostStore(tmp_path / "host.sqlite3"),
            **PATIENT,
        )
        wrong.succeeded(scope)  # refused by the server: the call goes on with the host store
        store.close()
        wrong.close()
    [warning] = _messages(logs, logging.WARNING)
    assert f"redis://127.0.0.1:{server.port}/0" in warning
    assert "host-wide store" in warning
    assert PASSWORD not in "\n".join(r.getMessage() + str(r.args) for r in logs.records)
    assert PASSWORD not in logs.text


# -- keys, scripts, clock ----------------------------------------------------------------------


def test_one_namespaced_key_per_scope_that_expires_when_abandoned(redis_url: str) -> None:
    store = RedisStore(redis_url, fallback=ProcessStore(), **PATIENT)
    scope, unseen = new_scope(), new_scope()
    store.deposit(scope)
    assert store.status(unseen) == Status(None, None, 0, None)
    with redis.Redis.from_url(redis_url) as peek:
        assert 590_000 < peek.pttl(f"avatario:budget:{scope}") <= 600_000
        assert not peek.exists(f"avatario:budget:{unseen}")  # a read writes nothing
        fields = peek.hgetall(f"avatario:budget:{scope}")
    assert sorted(k[:1] for k in fields) == [b"c", b"f", b"o", b"r", b"s"]  # one ring entry
    assert sum(int(v) for k, v in fields.items() if k.startswith(b"c")) == 1
    store.close()


def test_scripts_are_sent_again_after_the_server_forgot_them(
    private_redis: RedisServer, logs: pytest.LogCaptureFixture
) -> None:
    store = RedisStore(private_redis.url, fallback=ProcessStore(), **PATIENT)
    scope = new_scope()
    store.succeeded(scope)
    with redis.Redis.from_url(private_redis.url) as admin:
        admin.script_flush()
    store.succeeded(scope)  # NOSCRIPT, then EVAL
    assert store.status(scope).successes == 2
    assert _messages(logs, logging.WARNING) == []
    store.close()


def test_the_fleet_shares_the_servers_clock_whatever_each_process_thinks(
    redis_url: str,
) -> None:
    ahead = FakeClock(start=time.time() + 1000)  # a process whose wall clock is 1000 s fast
    skewed = RedisStore(redis_url, clock=ahead, fallback=ProcessStore(), **PATIENT)
    honest = RedisStore(redis_url, fallback=ProcessStore(), **PATIENT)
    scope = new_scope()
    verdict = skewed.failed(scope, retry=True, share=None, cool_until=ahead.time() + 5)
    assert verdict.allowed  # its own wait covers the cool-down it brought
    assert verdict.cooling_until == pytest.approx(ahead.time() + 5, abs=0.5)
    status = honest.status(scope)
    assert status.cooling_until == pytest.approx(time.time() + 5, abs=0.5)  # not 1005 s
    assert status.trouble_since == pytest.approx(time.time(), abs=0.5)
    skewed.close()
    honest.close()


# -- Redis failing ----------------------------------------------------------------------------


def _run(store: RedisStore, scope: str, mode: str) -> None:
    """A call's worth of operations, through the sync methods or the async twins."""
    if mode == "sync":
        store.deposit(scope)
        store.failed(scope, retry=True, share=0.2, cool_until=None)
        store.status(scope)
        store.take_probe(scope, lease=1.0, share=0.2)
        store.succeeded(scope)
        return

    async def main() -> None:
        await store.adeposit(scope)
        await store.afailed(scope, retry=True, share=0.2, cool_until=None)
        await store.astatus(scope)
        await store.atake_probe(scope, lease=1.0, share=0.2)
        await store.asucceeded(scope)
        await store.aclose()

    asyncio.run(main())


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_redis_killed_mid_run_calls_go_on_with_one_warning(
    private_redis: RedisServer,
    tmp_path: Path,
    clock: FakeClock,
    logs: pytest.LogCaptureFixture,
    mode: str,
) -> None:
    fallback = HostStore(tmp_path / "host.sqlite3")
    # Patient timeouts: a refused connection fails at once anyway, and a loaded machine must
    # not make Redis look down before it is.
    store = RedisStore(private_redis.url, clock=clock, fallback=fallback, **PATIENT)
    scope = new_scope()
    _run(store, scope, mode)
    assert fallback.status(scope).successes == 0  # all in Redis so far
    private_redis.kill()
    slowest = 0.0
    for _ in range(30):
        started = time.monotonic()
        _run(store, scope, mode)
        slowest = max(slowest, time.monotonic() - started)
    assert slowest < SLOW
    [warning] = _messages(logs, logging.WARNING)
    assert f"Redis at {private_redis.url} cannot be used" in warning
    assert "using the host-wide store" in warning
    assert "tried again every 5 s" in warning
    assert fallback.status(scope).successes == 30
    # Back after the pause, on the same address: Redis is used again, and an INFO says so.
    private_redis.start(port=private_redis.port)
    clock.advance(5.1)
    _run(store, scope, mode)
    assert fallback.status(scope).successes == 30
    assert _field(private_redis.url, scope, "succ") == b"1"
    assert _messages(logs, logging.INFO) == [
        f"Avatario retry budget: Redis at {private_redis.url} works again"
    ]
    assert len(_messages(logs, logging.WARNING)) == 1
    store.close()


class _Silent:
    """A loopback server that accepts connections and never says a word (a hung Redis)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_redis_that_never_answers_costs_a_call_one_timeout(
    tmp_path: Path, logs: pytest.LogCaptureFixture, mode: str
) -> None:
    silent = _Silent()
    try:
        store = RedisStore(
            f"redis://127.0.0.1:{silent.port}/0", fallback=HostStore(tmp_path / "h.sqlite3")
        )
        started = time.monotonic()
        _run(store, new_scope(), mode)
        assert time.monotonic() - started < SLOW  # one 5 ms timeout, then the fallback
        [warning] = _messages(logs, logging.WARNING)
        assert "Timeout" in warning
        store.close()
    finally:
        silent.close()


def test_nothing_listening_falls_back_at_once(
    tmp_path: Path, logs: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: connections are refused
    store = RedisStore(f"redis://127.0.0.1:{port}/0", fallback=ProcessStore())
    scope = new_scope()
    for _ in range(5):
        store.deposit(scope)
    assert allowed(store, scope, 9) == 4  # the fallback's budget: 5 x 0.2 + 3
    # The fallback cannot tell the shared scope's trouble: a success says "maybe still".
    calm = new_scope()
    assert store.succeeded(calm) is True
    assert asyncio.run(_asucceeded(store, calm)) is True
    assert len(_messages(logs, logging.WARNING)) == 1


def test_a_success_says_whether_the_scope_is_still_in_trouble(redis_url: str) -> None:
    store = RedisStore(redis_url, fallback=ProcessStore(), **PATIENT)
    scope = new_scope()
    assert store.succeeded(scope) is False
    store.failed(scope, retry=False, share=0.2, cool_until=None)
    assert asyncio.run(_asucceeded(store, scope)) is True
    store.close()


async def _asucceeded(store: RedisStore, scope: str) -> bool:
    """`asucceeded` on a loop of its own, its connections closed before the loop is."""
    try:
        return await store.asucceeded(scope)
    finally:
        await store.aclose()


def test_the_async_client_follows_the_event_loop(redis_url: str) -> None:
    store = RedisStore(redis_url, fallback=ProcessStore(), **PATIENT)
    scope = new_scope()

    async def one() -> int:
        await store.asucceeded(scope)
        status = await store.astatus(scope)
        await store.aclose()
        return status.successes

    assert asyncio.run(one()) == 1
    assert asyncio.run(one()) == 2  # a new loop, a new client: nothing bound to the old one
    assert store.status(scope).successes == 2


# -- a fleet ----------------------------------------------------------------------------------


def test_two_groups_of_spawned_processes_share_one_budget(redis_url: str, tmp_path: Path) -> None:
    """40 job processes in two groups (two hosts, each its own host-wide fallback file), one
    first attempt and one retry asked for each: floor(40 x 0.2 + 3) retries go, in all."""
    scope = new_scope()
    hosts = [str(tmp_path / f"host-{i % 2}.sqlite3") for i in range(40)]
    outcomes = run_jobs("redis", redis_url, hosts, scope)
    assert [w for _, w in outcomes if w] == []  # Redis answered every one of them
    assert sum(granted for granted, _ in outcomes) == 11
    with redis.Redis.from_url(redis_url) as peek:
        fields = peek.hgetall(f"avatario:budget:{scope}")
    assert sum(int(v) for k, v in fields.items() if k.startswith(b"c")) == 40
    assert sum(int(v) for k, v in fields.items() if k.startswith(b"r")) == 11
