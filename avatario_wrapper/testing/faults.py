"""The fault script of the fake server, and its small text grammar (shared with the CLI).

A script is a comma-separated list of steps. Each request to ``/start-session`` takes the next
step; when the script runs out, requests are served normally.

    step    := what (":" option)* ("*" count)?
    what    := STATUS | "ok" | "stall" | "reset" | "lost" | "lost-close" | "idle-close"
             | "malformed"
    option  := "retry-after=" (SECONDS | "date+" SECONDS) | "retry-after-ms=" MILLIS
             | "delay=" SECONDS

    STATUS      answer with that status and the spec's JSON error body (for example 503)
    ok          serve the request normally (validation, auth and idempotency included)
    stall       read the request and never answer (until the client gives up)
    reset       read the request and drop the connection with a TCP reset (RST), no response;
                the request is not served (no session)
    lost        serve the request (a session may start), then reset instead of answering:
                the response is lost, as when a proxy or the network fails on the way back
    lost-close  serve the request (a session may start), then close the connection cleanly
                (FIN) without answering, as a server that crashes after acting may. On a
                reused keep-alive connection a client cannot tell this from ``idle-close``:
                both are a clean EOF before any response byte
    idle-close  read the request but do not serve it (no session): close the connection
                cleanly (FIN) at once, as when the server's keep-alive idle timer fires just
                as the request arrives (the idle race a client may safely replay)
    malformed   answer 200 with a body that is not JSON
    retry-after send ``Retry-After`` in seconds, or as an HTTP-date that many seconds ahead
    delay       wait that many seconds before doing the rest of the step

Examples: ``503*2`` (two 503s, then normal service); ``429:retry-after=1,ok``;
``reset,ok:delay=0.5``; ``503:retry-after=date+2``; ``ok,idle-close`` (the second request,
on the connection the first one left open, meets the idle race).
"""

from __future__ import annotations

import math

import attrs

WHATS = frozenset({"ok", "stall", "reset", "lost", "lost-close", "idle-close", "malformed"})
MAX_REPEAT = 10_000


class FaultSyntaxError(ValueError):
    """A fault script that does not follow the grammar; the message says where."""


@attrs.frozen
class Fault:
    """One step of the fault script."""

    what: str = "ok"  # one of WHATS, or a status code
    retry_after: str | None = None  # the Retry-After header value to send, as given
    retry_after_ms: str | None = None
    delay: float = 0.0

    @property
    def status(self) -> int | None:
        return int(self.what) if self.what.isdigit() else None

    def describe(self) -> str:
        """The step in the script grammar, as recorded with each request."""
        parts = [self.what]
        if self.retry_after is not None:
            parts.append(f"retry-after={self.retry_after}")
        if self.retry_after_ms is not None:
            parts.append(f"retry-after-ms={self.retry_after_ms}")
        if self.delay:
            parts.append(f"delay={self.delay:g}")
        return ":".join(parts)


def _seconds(text: str, step: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise FaultSyntaxError(f"{step!r}: {text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise FaultSyntaxError(f"{step!r}: seconds must be finite and ≥ 0")
    return value


def _parse_step(step: str) -> list[Fault]:
    body, star, count_text = step.partition("*")
    count = 1
    if star:
        if not count_text.isdigit() or not 1 <= int(count_text) <= MAX_REPEAT:
            raise FaultSyntaxError(f"{step!r}: the count after '*' must be 1..{MAX_REPEAT}")
        count = int(count_text)
    what, *options = body.split(":")
    if what.isdigit():
        if not 100 <= int(what) <= 599:
            raise FaultSyntaxError(f"{step!r}: {what} is not an HTTP status")
    elif what not in WHATS:
        raise FaultSyntaxError(
            f"{step!r}: expected a status or one of {', '.join(sorted(WHATS))}, got {what!r}"
        )
    fields: dict[str, object] = {"what": what}
    for option in options:
        key, eq, value = option.partition("=")
        if not eq:
            raise FaultSyntaxError(f"{step!r}: option {option!r} needs a value (key=value)")
        if key == "retry-after":
            if value.startswith("date+"):
                _seconds(value[5:], step)
            else:
                _seconds(value, step)
            fields["retry_after"] = value
        elif key == "retry-after-ms":
            _seconds(value, step)
            fields["retry_after_ms"] = value
        elif key == "delay":
            fields["delay"] = _seconds(value, step)
        else:
            raise FaultSyntaxError(f"{step!r}: unknown option {key!r}")
    return [Fault(**fields)] * count  # type: ignore[arg-type]


def parse_faults(script: str) -> list[Fault]:
    """Parse a fault script such as ``"503*2,429:retry-after=1"`` into steps."""
    steps = [part.strip() for part in script.split(",")]
    if script.strip() == "":
        return []
    faults: list[Fault] = []
    for step in steps:
        if not step:
            raise FaultSyntaxError(f"empty step in {script!r}")
        faults.extend(_parse_step(step))
    return faults
