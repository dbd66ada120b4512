"""How long a pooled connection may idle before it is reused: never near the moment the
server may give it up (a request sent on a connection the server is closing has an unknown
outcome; docs/retries.md)."""

from __future__ import annotations

import re
from collections.abc import Mapping

#: How long a connection of a pool the client made may sit idle and still be reused, when the
#: server does not say (``Keep-Alive: timeout=N``). Below the idle timeouts of common servers
#: (gunicorn 2 s, uvicorn and Node.js 5 s), so a request is not sent on a connection the server
#: is closing.
KEEPALIVE_EXPIRY = 1.5
#: A server's ``Keep-Alive: timeout=N`` is trusted up to this many seconds of idle time.
MAX_KEEPALIVE_EXPIRY = 60.0
_KEEP_ALIVE_TIMEOUT = re.compile(r"(?:^|[,;\s])timeout\s*=\s*(\d+(?:\.\d+)?)", re.IGNORECASE)


def keepalive_expiry(headers: Mapping[str, str]) -> float | None:
    """How long the connection may idle before reuse, from the reply's ``Keep-Alive`` header.

    ``timeout=N`` means the server keeps it at least N seconds; it is reused only until
    ``N - max(1, N / 5)`` (4 s for Node.js's 5, 60 s at most), well before the server may let
    it go. None when the server said nothing.
    """
    value = headers.get("keep-alive")
    if value is None:
        return None
    found = _KEEP_ALIVE_TIMEOUT.search(value)
    if found is None:
        return None
    seconds = float(found.group(1))
    return max(0.0, min(MAX_KEEPALIVE_EXPIRY, seconds - max(1.0, seconds / 5)))
