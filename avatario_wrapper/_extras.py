"""Optional parts and the one-line hint that installs them (no optional import happens here)."""

from __future__ import annotations

import importlib.util

#: The modules each extra brings, as imported.
EXTRAS: dict[str, tuple[str, ...]] = {
    "cli": ("click", "rich"),
    "server": ("uvicorn", "jsonschema", "yaml", "rfc3986_validator"),
    "aiohttp": ("aiohttp",),
    "livekit": ("livekit.agents", "livekit.api"),
    "contract": ("schemathesis",),
    "otel": ("opentelemetry",),
    "redis": ("redis",),
}


def _absent(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except ModuleNotFoundError:  # a parent package is missing
        return True


def missing(*extras: str) -> list[str]:
    """The modules of `extras` that cannot be imported here."""
    return [m for extra in extras for m in EXTRAS[extra] if _absent(m)]


def hint(what: str, *extras: str) -> str | None:
    """One line saying how to install what `what` needs, or None when nothing is missing."""
    gone = missing(*extras)
    if not gone:
        return None
    # avatario-wrapper is not on a package index yet: it installs from a checkout (or a wheel
    # built from one), so that is the command to name.
    return (
        f"{what} needs the {', '.join(extras)} extra{'s' if len(extras) > 1 else ''} "
        f"(missing: {', '.join(gone)}): pip install '.[{','.join(extras)}]' in a checkout of "
        "avatario-wrapper"
    )
