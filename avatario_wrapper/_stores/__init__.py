"""Where retry budgets live: in this process, on this host, or in Redis for a fleet.

`BudgetStore` is the protocol (`base`); `ProcessStore`, `HostStore` and, with the ``redis``
extra, `avatario_wrapper._stores.redis.RedisStore` implement it; `store_from_env` picks one
from ``AVATARIO_RETRY_BUDGET_URL``. The rules they share are in `rules`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import (
        ENV_VAR,
        BudgetStore,
        RefusedBy,
        Status,
        Verdict,
        check_scope,
        scope_fingerprint,
    )
    from .env import store_from_env, store_from_url
    from .host import HostStore
    from .process import ProcessStore
    from .rules import DEFAULT_RESERVE

__all__ = [
    "DEFAULT_RESERVE",
    "ENV_VAR",
    "BudgetStore",
    "HostStore",
    "ProcessStore",
    "RefusedBy",
    "Status",
    "Verdict",
    "check_scope",
    "scope_fingerprint",
    "store_from_env",
    "store_from_url",
]

#: Imported on first use: a client that keeps its budget in its own process never loads
#: SQLite (or the store from the environment) at import.
_LAZY = {
    "DEFAULT_RESERVE": ".rules",
    "ENV_VAR": ".base",
    "BudgetStore": ".base",
    "HostStore": ".host",
    "ProcessStore": ".process",
    "RefusedBy": ".base",
    "Status": ".base",
    "Verdict": ".base",
    "check_scope": ".base",
    "scope_fingerprint": ".base",
    "store_from_env": ".env",
    "store_from_url": ".env",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
