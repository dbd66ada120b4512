"""The WARNING a call logs when an attempt failed: what failed, and what comes next.

One line per retry, refusal or wait; the error text never holds a secret or raw server text
(`_reply` made it one redacted line). The record's ``avatario_*`` fields carry the same facts
for a handler that formats its own (the command line's `cli._console`).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._steps import Call
    from .errors import APIError

logger = logging.getLogger("avatario_wrapper")


def log_attempt(
    call: Call[Any], error: APIError, attempts: int, what_next: str, delay: float | None = None
) -> None:
    """One WARNING: attempt `attempts` of `call` failed with `error`; `what_next` follows."""
    name, policy = call.request.name, call.policy
    status = getattr(error, "status_code", None)
    request_id = getattr(error, "request_id", None)
    what = f"HTTP {status}" if status is not None else f"{type(error).__name__}: {error.message}"
    logger.warning(
        "Avatario %s attempt %d/%d failed (%s, request id %s); %s",
        name,
        attempts,
        policy.max_attempts,
        what,
        request_id or "none",
        what_next,
        extra={
            "avatario_operation": name,
            "avatario_attempt": attempts,
            "avatario_max_attempts": policy.max_attempts,
            "avatario_status_code": status,
            "avatario_request_id": request_id,
            "avatario_outcome": error.outcome.value,
            "avatario_delay": delay,
        },
    )


def clock_time(moment: float) -> str:
    """An epoch time as the local time of day, for a message (``14:02:07``)."""
    return time.strftime("%H:%M:%S", time.localtime(moment))
