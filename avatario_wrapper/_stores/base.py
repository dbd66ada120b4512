"""What every retry budget store offers: the protocol, its two answers, and the scope's form.

A store keeps, per *scope* (a fingerprint of the Avatario origin and API key, never the key),
the retry budget (Finagle's ``RetryBudget``: first attempts deposit, a retry withdraws, over a
10 s window), the server's shared cool-down (a ``Retry-After`` or a 503 seen by one call), and
whether the scope is in trouble (failing since when; how many successes so far), so that one
caller's success releases the others' waiters. Trouble begins at a failure and ends at a
success once failures are less than a quarter of the latest attempts, or after two minutes
with no failure at all (never merely because the waiting calls went quiet). Every operation
has a sync method and an async twin (``a``-prefixed). No operation ever raises into a call for
a store that is slow or broken: the shared stores fall back to a simpler one and say so once in
a WARNING.

Times a store returns are epoch seconds on the caller's own `Clock.time()`, whatever clock the
store keeps internally (the process store keeps monotonic time, the Redis store the server's).
"""

from __future__ import annotations

import hashlib
import re
from typing import Literal, Protocol

import attrs

#: The environment variable that names the store for every client not given one.
ENV_VAR = "AVATARIO_RETRY_BUDGET_URL"
#: Why a retry was refused: the budget is spent, or the server asked everyone to wait.
RefusedBy = Literal["budget", "cool_down"]

#: A scope as the stores accept it: a short token safe in a file, a log and a Redis key name.
_SCOPE = re.compile(r"[A-Za-z0-9._:-]{1,128}")


@attrs.frozen
class Verdict:
    """What `BudgetStore.failed` decided.

    `allowed` is True only when a retry was asked for and one was withdrawn; `refused_by`
    says why one asked for was refused (None when allowed or not asked for).
    `cooling_until` is the end of the scope's cool-down if one is running, and
    `trouble_since` when the scope's failures began (both epoch seconds, or None).
    """

    allowed: bool
    refused_by: RefusedBy | None
    cooling_until: float | None
    trouble_since: float | None


@attrs.frozen
class Status:
    """A scope as a waiter sees it: in trouble since when, cooling until when, successes so far.

    `successes` only grows (until an idle scope is forgotten): a waiter that saw it change knows
    Avatario answered someone. `last_success` is the time of the latest one (or None).
    `known` is False when the shared store could not be read and a fallback answered: it never
    saw the trouble, so its "no trouble" is no news (a waiter keeps waiting).
    """

    trouble_since: float | None
    cooling_until: float | None
    successes: int
    last_success: float | None
    known: bool = True


class BudgetStore(Protocol):
    """A retry budget, a shared cool-down and the trouble signal, per scope."""

    #: ``"process"``, ``"host"`` or ``"redis"``.
    name: str

    def deposit(self, scope: str) -> bool:
        """A call made its first attempt; True when the scope is in trouble (a success is
        then worth telling the store)."""

    async def adeposit(self, scope: str) -> bool:
        """`deposit` without blocking the event loop."""

    def failed(
        self,
        scope: str,
        *,
        retry: bool,
        share: float | None,
        cool_until: float | None,
        dated: float = 0.0,
    ) -> Verdict:
        """An attempt failed: mark the trouble, extend the cool-down, and maybe take a retry.

        `dated`: the failure tells of the way to Avatario that many seconds ago (a connect
        that timed out tells of the moment it began), and is counted then, not now, where
        the store judges whether Avatario answers again (`rules.ScopeState.recovered`).
        `cool_until` (epoch seconds) extends the scope's cool-down to at most 60 s ahead. With
        `retry`, one retry is withdrawn unless the scope is cooling down or more than
        ``calls * share + reserve`` retries were made in the window (`share` None: no budget).
        """

    async def afailed(
        self,
        scope: str,
        *,
        retry: bool,
        share: float | None,
        cool_until: float | None,
        dated: float = 0.0,
    ) -> Verdict:
        """`failed` without blocking the event loop."""

    def succeeded(self, scope: str) -> bool:
        """An attempt got a success: the success counter moves on, and the trouble is over
        unless failures are still a quarter or more of the latest attempts (`rules`).

        True when the scope is still in trouble after it, or when the store could not tell (a
        fallback answered): the next success is then worth telling too."""

    async def asucceeded(self, scope: str) -> bool:
        """`succeeded` without blocking the event loop."""

    def status(self, scope: str) -> Status:
        """The scope's trouble, cool-down and successes (a cheap read, for waiters to poll)."""

    async def astatus(self, scope: str) -> Status:
        """`status` without blocking the event loop."""

    def take_probe(self, scope: str, *, lease: float, share: float | None) -> bool:
        """True for at most one caller per scope at a time, for `lease` seconds (at most 60).

        A probe is a retry: it is refused while the scope cools down, and, with a `share`,
        when the budget (``calls * share + reserve``) is spent; a granted one is then withdrawn
        from it. `share` None: the retry was withdrawn already (`failed` allowed it), or there
        is no budget. A success in the scope ends the lease early.
        """

    async def atake_probe(self, scope: str, *, lease: float, share: float | None) -> bool:
        """`take_probe` without blocking the event loop."""

    def close(self) -> None:
        """Release connections and files (a later operation opens them again)."""

    async def aclose(self) -> None:
        """`close`, for connections bound to the running event loop."""


def check_scope(scope: str) -> str:
    """`scope` if it is a short token of letters, digits and ``._:-``; ValueError otherwise."""
    if not isinstance(scope, str) or not _SCOPE.fullmatch(scope):
        raise ValueError(
            "a retry budget scope is 1 to 128 letters, digits or '._:-' (a fingerprint such "
            "as scope_fingerprint() makes, never an API key)"
        )
    return scope


def scope_fingerprint(origin: str, api_key: str) -> str:
    """A scope for one Avatario origin and key: 128 bits of SHA-256, so the key never shows."""
    digest = hashlib.sha256(f"{origin}\n{api_key}".encode()).hexdigest()
    return f"v1-{digest[:32]}"


class InlineAsync:
    """The async twins of a store whose every operation is bounded to microseconds or a few
    milliseconds: they run the sync operation inline (a thread hop would cost more)."""

    async def adeposit(self: BudgetStore, scope: str) -> bool:
        return self.deposit(scope)

    async def afailed(
        self: BudgetStore,
        scope: str,
        *,
        retry: bool,
        share: float | None,
        cool_until: float | None,
        dated: float = 0.0,
    ) -> Verdict:
        return self.failed(scope, retry=retry, share=share, cool_until=cool_until, dated=dated)

    async def asucceeded(self: BudgetStore, scope: str) -> bool:
        return self.succeeded(scope)

    async def astatus(self: BudgetStore, scope: str) -> Status:
        return self.status(scope)

    async def atake_probe(
        self: BudgetStore, scope: str, *, lease: float, share: float | None
    ) -> bool:
        return self.take_probe(scope, lease=lease, share=share)

    async def aclose(self: BudgetStore) -> None:
        self.close()
