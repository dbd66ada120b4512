"""A client's retry budget: one scope of a store, as the call flow uses it.

The scope is the Avatario origin and the API key's fingerprint (`_stores.scope_fingerprint`:
never the key), so two keys never share a budget and one key's calls share it wherever the
store reaches:

    "process"   this client and its `with_options` copies (the clients' default)
    "host"      every process of this user on this machine (AvatarSession's default)
    redis://…   every process that names the same Redis (a fleet)

``AVATARIO_RETRY_BUDGET_URL`` names the store for every client not given one. The host and
Redis stores are made once per process and shared by its clients (one SQLite connection, one
Redis pool); a "process" store is each client's own. `status` is read at most every
`STATUS_TTL` seconds per scope in this process: many waiters polling make one read.

A success is told to the store only while this process last heard the scope in trouble
(`_Heard`: from a failure, a first attempt's deposit, a status read, or a success told): no
write per call while all is well, and every success while it is not, also those of calls that
began before the trouble did (thousands waiting for a connection when a blip began), so their
successes end it and release its waiters.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import TYPE_CHECKING

from ._stores.base import ENV_VAR, Status, Verdict, scope_fingerprint
from ._stores.process import ProcessStore

if TYPE_CHECKING:
    from ._clock import Clock
    from ._stores import BudgetStore

#: How long a status read serves the waiters of one scope in this process.
STATUS_TTL = 0.1
#: What a client uses when neither its `retry_budget_store` nor the environment names one.
DEFAULT_STORE = "process"

_shared: dict[tuple[str, Clock], BudgetStore] = {}
_shared_lock = threading.Lock()


def store_for(setting: str | None, clock: Clock) -> BudgetStore:
    """The store a client's `retry_budget_store` names: its own for "process"; else the one
    this process shares for that setting (and clock). None: ``AVATARIO_RETRY_BUDGET_URL``,
    else "process"."""
    source = "retry_budget_store"
    if setting is None:
        setting = os.environ.get(ENV_VAR, "").strip()
        source = ENV_VAR
        if not setting:
            setting, source = DEFAULT_STORE, "retry_budget_store"
    if not isinstance(setting, str):
        raise TypeError(f"retry_budget_store must be a str, not {type(setting).__name__}")
    setting = setting.strip()
    if setting.lower() == "process":
        return ProcessStore(clock=clock)
    with _shared_lock:
        store = _shared.get((setting, clock))
        if store is None:
            from ._stores.env import store_from_url  # noqa: PLC0415 - SQLite, Redis: when named

            store = _shared[setting, clock] = store_from_url(setting, clock=clock, setting=source)
        return store


class _Heard:
    """Whether this process last heard a scope in trouble, shared by every client of the
    scope's store here. A hint: wrong, it costs one store write per success, or leaves the
    end of a trouble to the successes of calls that heard of it."""

    __slots__ = ("trouble",)

    def __init__(self) -> None:
        self.trouble = False


_heard: weakref.WeakKeyDictionary[BudgetStore, dict[str, _Heard]] = weakref.WeakKeyDictionary()


def _heard_of(store: BudgetStore, scope: str) -> _Heard:
    with _shared_lock:
        return _heard.setdefault(store, {}).setdefault(scope, _Heard())


class BudgetScope:
    """One scope of a store: the retry budget, cool-down and trouble of an origin and key."""

    __slots__ = ("_clock", "_heard", "_read_at", "_status", "name", "scope", "store")

    def __init__(self, store: BudgetStore, origin: str, api_key: str, clock: Clock) -> None:
        self.store = store
        self.name = store.name
        self.scope = scope_fingerprint(origin, api_key)
        self._clock = clock
        self._status: Status | None = None
        self._read_at = float("-inf")
        self._heard = _heard_of(store, self.scope)

    def __repr__(self) -> str:
        return f"BudgetScope({self.name})"

    def deposit(self) -> bool:
        return self._hear(self.store.deposit(self.scope))

    async def adeposit(self) -> bool:
        return self._hear(await self.store.adeposit(self.scope))

    def failed(
        self, *, retry: bool, share: float | None, cool_until: float | None, dated: float = 0.0
    ) -> Verdict:
        self._status = None
        self._heard.trouble = True  # a failure is trouble, wherever the store keeps it
        return self.store.failed(
            self.scope, retry=retry, share=share, cool_until=cool_until, dated=dated
        )

    async def afailed(
        self, *, retry: bool, share: float | None, cool_until: float | None, dated: float = 0.0
    ) -> Verdict:
        self._status = None
        self._heard.trouble = True
        return await self.store.afailed(
            self.scope, retry=retry, share=share, cool_until=cool_until, dated=dated
        )

    def succeeded(self) -> None:
        """A call's success, told to the store while this process heard the scope in trouble."""
        if self._heard.trouble:
            self._status = None
            self._hear(self.store.succeeded(self.scope))

    async def asucceeded(self) -> None:
        if self._heard.trouble:
            self._status = None
            self._hear(await self.store.asucceeded(self.scope))

    def status(self) -> Status:
        cached = self._fresh()
        if cached is None:
            cached = self._keep(self.store.status(self.scope))
        return cached

    async def astatus(self) -> Status:
        cached = self._fresh()
        if cached is None:
            cached = self._keep(await self.store.astatus(self.scope))
        return cached

    def take_probe(self, *, lease: float, share: float | None) -> bool:
        return self.store.take_probe(self.scope, lease=lease, share=share)

    async def atake_probe(self, *, lease: float, share: float | None) -> bool:
        return await self.store.atake_probe(self.scope, lease=lease, share=share)

    def _fresh(self) -> Status | None:
        if self._status is not None and self._clock.monotonic() - self._read_at < STATUS_TTL:
            return self._status
        return None

    def _keep(self, status: Status) -> Status:
        self._status, self._read_at = status, self._clock.monotonic()
        if status.known:
            self._hear(status.trouble_since is not None)
        return status

    def _hear(self, trouble: bool) -> bool:
        self._heard.trouble = trouble
        return trouble
