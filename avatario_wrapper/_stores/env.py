"""Which store a setting names: `store_from_env` reads ``AVATARIO_RETRY_BUDGET_URL``.

``redis://``, ``rediss://`` or ``unix://`` URLs name a Redis store (falling back to the
host-wide one); ``host`` or ``sqlite://`` the host-wide store in its default place,
``sqlite:///path`` or an absolute path one in that file; ``process`` the in-process store.
Unset or empty: None, and the caller keeps its default. A value is never repeated in an
error: it may hold a Redis password.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from .._clock import SYSTEM_CLOCK, Clock
from .._extras import hint
from ..errors import AvatarioConfigError
from .base import ENV_VAR, BudgetStore
from .host import HostStore
from .process import ProcessStore
from .rules import DEFAULT_RESERVE

_EXPECTED = (
    "expected redis://host:port/db, rediss://…, unix:///path, host, sqlite://, "
    "sqlite:///path/to/file, an absolute path, or process"
)
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]{0,15})://")


def store_from_env(
    environ: Mapping[str, str] | None = None,
    *,
    clock: Clock = SYSTEM_CLOCK,
    reserve: float = DEFAULT_RESERVE,
) -> BudgetStore | None:
    """The store ``AVATARIO_RETRY_BUDGET_URL`` names, or None when it is unset or empty."""
    value = (os.environ if environ is None else environ).get(ENV_VAR, "").strip()
    if not value:
        return None
    return store_from_url(value, clock=clock, reserve=reserve, setting=ENV_VAR)


def store_from_url(
    url: str,
    *,
    clock: Clock = SYSTEM_CLOCK,
    reserve: float = DEFAULT_RESERVE,
    setting: str = "retry_budget_store",
) -> BudgetStore:
    """The store `url` names (see the module's docstring); `setting` names it in errors."""
    word = url.strip().lower()
    if word == "process":
        return ProcessStore(clock=clock, reserve=reserve)
    if word in ("host", "sqlite://"):
        return HostStore(clock=clock, reserve=reserve)
    path = url.strip()[len("sqlite://") :] if word.startswith("sqlite://") else url.strip()
    if path.startswith(("/", "~")):
        return HostStore(path, clock=clock, reserve=reserve)
    if word.startswith(("redis://", "rediss://", "unix://")):
        if missing := hint(f"{setting}={word.partition(':')[0]}://…", "redis"):
            raise AvatarioConfigError(setting, missing)
        from .redis import RedisStore  # noqa: PLC0415 - only when asked for: needs redis

        return RedisStore(url.strip(), clock=clock, reserve=reserve, setting=setting)
    found = _SCHEME.match(url.strip())
    got = f"got a {found.group(1).lower()}:// URL" if found else "got something else"
    raise AvatarioConfigError(setting, f"{_EXPECTED}; {got} (the value is not shown)")
