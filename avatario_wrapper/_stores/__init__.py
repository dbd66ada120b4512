"""Where retry budgets live: in this process, on this host, or in Redis for a fleet.

`BudgetStore` is the protocol (`base`); `ProcessStore`, `HostStore` and, with the ``redis``
extra, `avatario_wrapper._stores.redis.RedisStore` implement it; `store_from_env` picks one
from ``AVATARIO_RETRY_BUDGET_URL``. The rules they share are in `rules`.
"""

from __future__ import annotations

from .base import BudgetStore, RefusedBy, Status, Verdict, check_scope, scope_fingerprint
from .env import ENV_VAR, store_from_env, store_from_url
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
