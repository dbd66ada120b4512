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

A success is told to the store after the call's own failure, or while this process last
heard the scope in trouble (`_Heard`: from a failure, a first attempt's deposit, a status
read, or a success told): none is written while all is well, and every one is while it is
not, also those of calls that began before the trouble did (thousands waiting for a
connection when a blip began), so their successes end it and release its waiters.
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
    end of a trouble to the successes of calls that heard of it.

    Answers cross: a success's "the trouble is over" may come back after another thread's
    failure began a new one. So "over" is taken only from an answer to a question asked
    since the latest news of trouble (`news`, counted), never over newer news."""

    __slots__ = ("__weakref__", "_lock", "news", "trouble")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.trouble = False
        self.news = 0  # how many times trouble was heard of

    def hear(self, trouble: bool, asked_at: int) -> bool:
        """An answer to a question asked when `news` was `asked_at`; returns `trouble`."""
        with self._lock:
            if trouble:
                self.trouble = True
                self.news += 1
            elif self.news == asked_at:
                self.trouble = False
        return trouble


#: store -> scope -> what this process heard; an entry lives while a client of it does.
_heard: weakref.WeakKeyDictionary[BudgetStore, weakref.WeakValueDictionary[str, _Heard]] = (
    weakref.WeakKeyDictionary()
)


def _heard_of(store: BudgetStore, scope: str) -> _Heard:
    with _shared_lock:
        scopes = _heard.get(store)
        if scopes is None:
            scopes = _heard[store] = weakref.WeakValueDictionary()
        heard = scopes.get(scope)
        if heard is None:
            heard = scopes[scope] = _Heard()
        return heard


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
        asked_at = self._heard.news
        return self._heard.hear(self.store.deposit(self.scope), asked_at)

    async def adeposit(self) -> bool:
        asked_at = self._heard.news
        return self._heard.hear(await self.store.adeposit(self.scope), asked_at)

    def failed(
        self, *, retry: bool, share: float | None, cool_until: float | None, dated: float = 0.0
    ) -> Verdict:
        self._status = None
        self._heard.hear(True, 0)  # a failure is trouble, wherever the store keeps it
        return self.store.failed(
            self.scope, retry=retry, share=share, cool_until=cool_until, dated=dated
        )

    async def afailed(
        self, *, retry: bool, share: float | None, cool_until: float | None, dated: float = 0.0
    ) -> Verdict:
        self._status = None
        self._heard.hear(True, 0)
        return await self.store.afailed(
            self.scope, retry=retry, share=share, cool_until=cool_until, dated=dated
        )

    def succeeded(self, *, retried: bool = False) -> None:
        """A call's success, told to the store while this process heard the scope in trouble,
        and always after the call's own failure (`retried`: it may be the scope's probe)."""
        heard = self._heard
        if retried or heard.trouble:
            self._status = None
            asked_at = heard.news
            heard.hear(self.store.succeeded(self.scope), asked_at)

    async def asucceeded(self, *, retried: bool = False) -> None:
        heard = self._heard
        if retried or heard.trouble:
            self._status = None
            asked_at = heard.news
            heard.hear(await self.store.asucceeded(self.scope), asked_at)

    def status(self) -> Status:
        cached = self._fresh()
        if cached is None:
            asked_at = self._heard.news
            cached = self._keep(self.store.status(self.scope), asked_at)
        return cached

    async def astatus(self) -> Status:
        cached = self._fresh()
        if cached is None:
            asked_at = self._heard.news
            cached = self._keep(await self.store.astatus(self.scope), asked_at)
        return cached

    def take_probe(self, *, lease: float, share: float | None) -> bool:
        return self.store.take_probe(self.scope, lease=lease, share=share)

    async def atake_probe(self, *, lease: float, share: float | None) -> bool:
        return await self.store.atake_probe(self.scope, lease=lease, share=share)

    def _fresh(self) -> Status | None:
        if self._status is not None and self._clock.monotonic() - self._read_at < STATUS_TTL:
            return self._status
        return None

    def _keep(self, status: Status, asked_at: int) -> Status:
        self._status, self._read_at = status, self._clock.monotonic()
        if status.known:
            self._heard.hear(status.trouble_since is not None, asked_at)
        return status
