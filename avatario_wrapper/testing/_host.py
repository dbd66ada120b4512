"""The ``Host`` check: the fake answers only requests addressed to it (DNS rebinding).

A web page can point a name it controls at 127.0.0.1 (DNS rebinding) and then reach a fake
on this machine as if it were the page's own origin: the browser sends the page's name in
``Host``. So a request is answered only when its ``Host`` names the fake: ``localhost``,
``127.0.0.1`` or ``[::1]``, the address the connection came in on (ASGI's ``server``), or a
name allowed by `FakeAvatario.allow_host` (the runner allows the host it was told to bind),
each with the port the connection came in on (none: the scheme's, 80 or 443). Anything else
is a JSON 421.
A request with no ``Host`` (HTTP/1.0), or a scope with no ``server``, is not checked.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def host_name(name: str) -> str:
    """A host as the check compares it: lower case, no brackets, no trailing dot."""
    return name.strip().lower().removeprefix("[").removesuffix("]").rstrip(".")


def _split(header: str) -> tuple[str, int | None] | None:
    """A ``Host`` value as (host, port); None when it is not one."""
    header = header.strip()
    if header.startswith("["):
        host, bracket, rest = header[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_text = header.rpartition(":")
        if not colon:
            host, port_text = header, None
        elif ":" in host:  # an IPv6 address must be bracketed
            return None
    if port_text is None:
        return host_name(host), None
    if not port_text.isdigit() or not port_text.isascii():
        return None
    return host_name(host), int(port_text)


def is_addressed_to_us(scope: Any, host_header: str | None, allowed: Iterable[str]) -> bool:
    """Whether a request's ``Host`` names this fake (see the module's docstring)."""
    server = scope.get("server")
    if host_header is None or not server:
        return True
    split = _split(host_header)
    if split is None:
        return False
    host, port = split
    default = _DEFAULT_PORTS.get(scope.get("scheme", "http"), 80)
    local_host, local_port = server[0], server[1] or default
    if (port or default) != local_port:
        return False
    return host in LOOPBACK_NAMES or host == host_name(str(local_host)) or host in allowed
