"""The fleet-wide store: budgets in Redis, shared by every process that names the same server.

Each operation is one Lua script (`redis_scripts`), run with EVALSHA (EVAL when the server
has not seen it yet, as after a restart), atomic inside Redis and timed by the server's clock.
Sockets time out after a few milliseconds and redis-py's own retries are off, so a Redis that
is slow or down costs a call at most one timeout: the operation goes to the fallback store
(host-wide by default), one WARNING says so, and Redis is tried again after a pause. Sync
calls use redis-py's client; the async twins use its asyncio client (one per event loop), so
an event loop never blocks on Redis. The URL's credentials never appear in a message or repr.
"""

from __future__ import annotations

import asyncio
import urllib.parse
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import attrs
import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError
from redis.retry import Retry

from .._clock import SYSTEM_CLOCK, Clock
from .._text import one_line
from ..errors import AvatarioConfigError
from .base import BudgetStore, RefusedBy, Status, Verdict, check_scope
from .fallback import Outage
from .host import HostStore
from .redis_scripts import DEPOSIT, FAILED, STATUS, SUCCEEDED, TAKE_PROBE, Script
from .rules import DEFAULT_RESERVE, MAX_COOL_DOWN, MAX_LEASE

T = TypeVar("T")

#: Reading a reply: a script takes tens of microseconds in Redis, a round trip 0.1 ms on
#: loopback and about 0.5 ms on a LAN; 50 ms leaves room for a Redis on a machine with every
#: core busy (5 ms did not: 40 job processes starting at once on 2 cores made Redis miss it,
#: and the fleet's budget split between Redis and the fallback), and costs a call little
#: when Redis hangs: one operation per process per `recheck_after`.
DEFAULT_TIMEOUT = 0.05
#: Opening a connection (TCP, TLS for rediss://, then AUTH/SELECT): once per pooled
#: connection, and once per `recheck_after` while Redis is unreachable.
DEFAULT_CONNECT_TIMEOUT = 0.1
#: How long operations go to the fallback after Redis failed, before Redis is tried again.
DEFAULT_RECHECK_AFTER = 5.0
KEY_PREFIX = "avatario:budget:"

_SCHEMES = ("redis", "rediss", "unix")
_DEPOSIT, _FAILED, _SUCCEEDED, _STATUS, _TAKE_PROBE = map(
    Script, (DEPOSIT, FAILED, SUCCEEDED, STATUS, TAKE_PROBE)
)
_FAILURES = (redis.RedisError, OSError, asyncio.TimeoutError, ValueError, TypeError, LookupError)
_INSTEAD = {"host": "the host-wide store", "process": "this process's own budget"}


class RedisStore:
    """Budgets in Redis, shared by a fleet; a host-wide store while Redis cannot answer."""

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        clock: Clock = SYSTEM_CLOCK,
        reserve: float = DEFAULT_RESERVE,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        recheck_after: float = DEFAULT_RECHECK_AFTER,
        fallback: BudgetStore | None = None,
        server_time: bool = True,
        setting: str = "url",
    ) -> None:
        """`url`: ``redis://[user:password@]host[:port][/db]``, ``rediss://…`` or
        ``unix:///path[?db=N]``. `server_time=False` times the scripts by `clock` instead of
        the server (for tests, or a fleet whose clocks are known to agree). `setting` names
        where the URL came from in a config error."""
        self._shown, self._secrets = _check_url(url, setting)
        self._url = url
        self._clock = clock
        self._reserve = reserve
        self._options: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": connect_timeout,
            "health_check_interval": 0,
        }
        self._server_time = server_time
        self._own_fallback = fallback is None
        self._fallback = fallback or HostStore(clock=clock, reserve=reserve)
        instead = _INSTEAD.get(self._fallback.name, f"the {self._fallback.name} store")
        self._outage = Outage(f"Redis at {self._shown}", instead, recheck_after, clock)
        self._sync = redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), **self._options)
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, redis.asyncio.Redis] = (
            weakref.WeakKeyDictionary()
        )

    def __repr__(self) -> str:
        return f"RedisStore({self._shown!r})"

    # -- the operations -----------------------------------------------------------------------

    def deposit(self, scope: str) -> bool:
        return self._call(scope, _DEPOSIT, (), _granted, lambda f: f.deposit(scope))

    async def adeposit(self, scope: str) -> bool:
        return await self._acall(scope, _DEPOSIT, (), _granted, lambda f: f.adeposit(scope))

    def failed(
        self,
        scope: str,
        *,
        retry: bool,
        share: float | None,
        cool_until: float | None,
        dated: float = 0.0,
    ) -> Verdict:
        return self._call(
            scope,
            _FAILED,
            self._failed_args(retry, share, cool_until, dated),
            _verdict,
            lambda f: f.failed(scope, retry=retry, share=share, cool_until=cool_until, dated=dated),
        )

    async def afailed(
        self,
        scope: str,
        *,
        retry: bool,
        share: float | None,
        cool_until: float | None,
        dated: float = 0.0,
    ) -> Verdict:
        return await self._acall(
            scope,
            _FAILED,
            self._failed_args(retry, share, cool_until, dated),
            _verdict,
            lambda f: f.afailed(
                scope, retry=retry, share=share, cool_until=cool_until, dated=dated
            ),
        )

    def succeeded(self, scope: str) -> bool:
        return self._call(scope, _SUCCEEDED, (), _still, lambda f: _unsure(f.succeeded(scope)))

    async def asucceeded(self, scope: str) -> bool:
        return await self._acall(
            scope, _SUCCEEDED, (), _still, lambda f: _aunsure(f.asucceeded(scope))
        )

    def status(self, scope: str) -> Status:
        return self._call(
            scope, _STATUS, (), _status, lambda f: attrs.evolve(f.status(scope), known=False)
        )

    async def astatus(self, scope: str) -> Status:
        return await self._acall(scope, _STATUS, (), _status, lambda f: _unknown(f.astatus(scope)))

    def take_probe(self, scope: str, *, lease: float, share: float | None) -> bool:
        return self._call(
            scope,
            _TAKE_PROBE,
            (_number(min(lease, MAX_LEASE)), _number(share), repr(self._reserve)),
            _granted,
            lambda f: f.take_probe(scope, lease=lease, share=share),
        )

    async def atake_probe(self, scope: str, *, lease: float, share: float | None) -> bool:
        return await self._acall(
            scope,
            _TAKE_PROBE,
            (_number(min(lease, MAX_LEASE)), _number(share), repr(self._reserve)),
            _granted,
            lambda f: f.atake_probe(scope, lease=lease, share=share),
        )

    def close(self) -> None:
        """Close the sync client's connections (async ones: `aclose` on their event loop)."""
        self._sync.close()
        if self._own_fallback:
            self._fallback.close()

    async def aclose(self) -> None:
        """Close the running event loop's connections and the sync client's."""
        client = self._async.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()
        self.close()

    # -- calling Redis ------------------------------------------------------------------------

    def _failed_args(
        self, retry: bool, share: float | None, cool_until: float | None, dated: float
    ) -> tuple[str, ...]:
        # The cool-down travels as seconds from now: processes need not agree on the time.
        # Bounded here as by the rules, so that Lua never sees "inf".
        delay = None if cool_until is None else min(cool_until - self._clock.time(), MAX_COOL_DOWN)
        return (
            "1" if retry else "",
            _number(share),
            _number(delay),
            repr(self._reserve),
            repr(float(dated)),
        )

    def _args(self, scope: str, args: tuple[str, ...]) -> tuple[str, ...]:
        now = "" if self._server_time else repr(self._clock.time())
        return (KEY_PREFIX + check_scope(scope), now, *args)

    def _call(
        self,
        scope: str,
        script: Script,
        args: tuple[str, ...],
        read: Callable[[Any, float], T],
        fallback: Callable[[BudgetStore], T],
    ) -> T:
        keys_and_args = self._args(scope, args)
        if not self._outage.down:
            try:
                try:
                    reply = self._sync.evalsha(script.sha, 1, *keys_and_args)
                except NoScriptError:
                    reply = self._sync.eval(script.source, 1, *keys_and_args)
                return self._read(read, reply)
            except _FAILURES as error:
                self._outage.failed(self._describe(error))
        return fallback(self._fallback)

    async def _acall(
        self,
        scope: str,
        script: Script,
        args: tuple[str, ...],
        read: Callable[[Any, float], T],
        fallback: Callable[[BudgetStore], Awaitable[T]],
    ) -> T:
        keys_and_args = self._args(scope, args)
        if self._outage.down:
            return await fallback(self._fallback)
        client = self._aclient()
        try:
            try:
                reply = await client.evalsha(script.sha, 1, *keys_and_args)
            except NoScriptError:
                reply = await client.eval(script.source, 1, *keys_and_args)
            return self._read(read, reply)
        except _FAILURES as error:
            self._outage.failed(self._describe(error))
        return await fallback(self._fallback)

    def _read(self, read: Callable[[Any, float], T], reply: Any) -> T:
        """A script's reply, read on our clock (an unreadable one fails like Redis would)."""
        result = read(reply, self._clock.time())
        self._outage.worked()
        return result

    def _aclient(self) -> redis.asyncio.Redis:
        """The running event loop's client (asyncio connections belong to one loop)."""
        loop = asyncio.get_running_loop()
        client = self._async.get(loop)
        if client is None:
            retry = AsyncRetry(NoBackoff(), 0)
            client = redis.asyncio.Redis.from_url(self._url, retry=retry, **self._options)
            self._async[loop] = client
        return client

    def _describe(self, error: BaseException) -> str:
        """The error in one line; its text withheld if it holds any part of the URL's
        credentials (redis-py's own messages never do, a server's might)."""
        text = str(error)
        if any(secret in text for secret in self._secrets):
            text = "(its message is withheld: it names a credential)"
        return one_line(f"{type(error).__name__}: {text}" if text else type(error).__name__)


def _check_url(url: str, setting: str) -> tuple[str, tuple[str, ...]]:
    """(the URL as shown in messages: no credentials, no query; its credentials), or a
    config error naming `setting` that never repeats the URL."""
    if not isinstance(url, str):
        raise AvatarioConfigError(setting, "a Redis URL must be a string")
    parts = urllib.parse.urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise AvatarioConfigError(setting, "a Redis URL starts with redis://, rediss:// or unix://")
    secrets = tuple(
        s
        for raw in (parts.username, parts.password)
        if raw
        for s in {raw, urllib.parse.unquote(raw)}
    )
    if scheme == "unix":
        if not parts.path:
            raise AvatarioConfigError(setting, "a unix:// Redis URL names the socket's path")
        return f"unix://{parts.path}", secrets
    try:
        port = parts.port or 6379
    except ValueError:
        raise AvatarioConfigError(
            setting, "the Redis URL's port is not a number from 0 to 65535"
        ) from None
    host = parts.hostname
    if not host:
        raise AvatarioConfigError(setting, "the Redis URL names no host")
    db = parts.path.strip("/") or "0"
    if not db.isdigit():
        raise AvatarioConfigError(setting, "the Redis URL's path is a database number (/0)")
    shown_host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown_host}:{port}/{db}", secrets


def _number(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _at(age: Any, now: float) -> float | None:
    """An age the script gave (seconds before its now) as a time on our clock."""
    text = _text(age)
    return now - float(text) if text else None


def _until(left: Any, now: float) -> float | None:
    """What the script said is left (seconds after its now) as a time on our clock."""
    text = _text(left)
    return now + float(text) if text else None


_REFUSED: dict[str, RefusedBy | None] = {"": None, "budget": "budget", "cool_down": "cool_down"}


def _still(reply: Any, now: float) -> bool:
    """Whether the scope is still in trouble after a success (the script's 1 or 0)."""
    return bool(reply == 1)


def _unsure(heard: bool) -> bool:
    """A fallback heard the success, but cannot tell the shared scope's trouble: as if still
    in trouble, so the next success is told too."""
    return True


async def _aunsure(heard: Awaitable[bool]) -> bool:
    await heard
    return True


def _verdict(reply: Any, now: float) -> Verdict:
    allowed, refused, left, age = reply
    return Verdict(allowed == 1, _REFUSED[_text(refused)], _until(left, now), _at(age, now))


def _status(reply: Any, now: float) -> Status:
    trouble, left, successes, last = reply
    return Status(_at(trouble, now), _until(left, now), int(successes), _at(last, now))


def _granted(reply: Any, now: float) -> bool:
    return bool(reply == 1)


async def _unknown(status: Awaitable[Status]) -> Status:
    """A fallback's status, marked as no news of the shared scope."""
    return attrs.evolve(await status, known=False)
