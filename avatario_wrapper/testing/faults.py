"""The fake server's faults, and their small text grammar (shared with the CLI).

A script is a comma-separated list of items. An item is either a *step*, played once by the
next request it applies to, or a *chance*, a standing rule drawn on every request it applies
to (with a seeded random generator, so a run can be replayed):

    script    := item ("," item)*
    item      := (operation ":")? what (":" option)* ("*" COUNT | "@" PERCENT "%")?
    operation := an operationId of the spec, e.g. startSession
    what      := STATUS | "ok" | "stall" | "reset" | "lost" | "lost-close" | "lost-stall"
               | "idle-close" | "malformed"
    option    := "retry-after=" (SECONDS | "date+" SECONDS) | "retry-after-ms=" MILLIS
               | "delay=" SECONDS

    operation   only requests to that operation take the item; without it, a request to any
                operation of the spec does
    *COUNT      the step COUNT times in a row (1..10000)
    @PERCENT%   a chance: each request takes this fault with that probability (0 < P <= 100);
                the chances that apply to one operation add up to at most 100 %

    STATUS      answer with that status and the spec's JSON error body (for example 503); a
                2xx answers the operation's documented success body without acting on it
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
    lost-stall  serve the request (a session may start), then never answer (until the client
                gives up): a server that acted and hangs before it answers
    idle-close  read the request but do not serve it (no session): close the connection
                cleanly (FIN) at once, as when the server's keep-alive idle timer fires just
                as the request arrives (the idle race a client may safely replay)
    malformed   answer 200 with a body that is not JSON
    retry-after send ``Retry-After`` in seconds, or as an HTTP-date that many seconds ahead
    delay       wait that many seconds before doing the rest of the step

A request first takes the oldest step that applies to it; only when none is left does it
draw among the chances. Faults apply to the spec's operations only: never to unknown routes
nor to the fake's control endpoint.

Examples: ``503*2`` (two 503s, then normal service); ``429:retry-after=1,ok``;
``reset,ok:delay=0.5``; ``503:retry-after=date+2``; ``lost-stall`` (the session starts, the
answer never comes); ``ok,idle-close`` (the second request,
on the connection the first one left open, meets the idle race); ``503@10%,reset@5%`` (on
every request: 10 % 503, 5 % reset, 85 % served); ``startSession:503*2,getSession:reset@1%``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

import attrs

WHATS = frozenset(
    {"ok", "stall", "reset", "lost", "lost-close", "lost-stall", "idle-close", "malformed"}
)
#: The faults that serve the request (a valid start-session starts its session) and then
#: lose the answer.
SERVED_THEN_LOST = frozenset({"lost", "lost-close", "lost-stall"})
MAX_REPEAT = 10_000
_OPERATION = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")


class FaultSyntaxError(ValueError):
    """A fault script that does not follow the grammar, or names an operation the fake's spec
    does not have; the message says where."""


@attrs.frozen
class Fault:
    """One step (or, with `chance`, one standing random rule) of a fault script."""

    what: str = "ok"  # one of WHATS, or a status code
    retry_after: str | None = None  # the Retry-After header value to send, as given
    retry_after_ms: str | None = None
    delay: float = 0.0
    #: The operationId this fault applies to; None: any operation of the spec.
    operation: str | None = None
    #: A standing rule taken by each request with this probability, in percent (0 < p <= 100);
    #: None: a step, played once.
    chance: float | None = None

    @property
    def status(self) -> int | None:
        return int(self.what) if self.what.isdigit() else None

    def describe(self) -> str:
        """The item in the script grammar, as recorded with each request."""
        parts = [self.what]
        if self.operation is not None:
            parts.insert(0, self.operation)
        if self.retry_after is not None:
            parts.append(f"retry-after={self.retry_after}")
        if self.retry_after_ms is not None:
            parts.append(f"retry-after-ms={self.retry_after_ms}")
        if self.delay:
            parts.append(f"delay={self.delay:g}")
        text = ":".join(parts)
        return text if self.chance is None else f"{text}@{self.chance:g}%"


def _seconds(text: str, step: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise FaultSyntaxError(f"{step!r}: {text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise FaultSyntaxError(f"{step!r}: seconds must be finite and ≥ 0")
    return value


def _chance(text: str, step: str) -> float:
    number = text[:-1] if text.endswith("%") else None
    try:
        value = float(number) if number is not None else math.nan
    except ValueError:
        value = math.nan
    if not 0 < value <= 100:  # also False for nan
        raise FaultSyntaxError(
            f"{step!r}: the chance after '@' must be a percentage in (0, 100], such as 10%"
        )
    return value


def check_what(what: str, step: str) -> None:
    """Raise `FaultSyntaxError` unless `what` is a status or one of `WHATS`."""
    if what.isdigit():
        if not 100 <= int(what) <= 599:
            raise FaultSyntaxError(f"{step!r}: {what} is not an HTTP status")
    elif what not in WHATS:
        raise FaultSyntaxError(
            f"{step!r}: expected a status or one of {', '.join(sorted(WHATS))}, got {what!r}"
        )


def _is_operation(segment: str) -> bool:
    return (
        _OPERATION.fullmatch(segment) is not None and segment not in WHATS and not segment.isdigit()
    )


def _parse_item(step: str) -> list[Fault]:
    body, at, chance_text = step.partition("@")
    body, star, count_text = body.partition("*")
    if star and at:
        raise FaultSyntaxError(f"{step!r}: an item takes a count (*N) or a chance (@P%), not both")
    count = 1
    if star:
        if not count_text.isdigit() or not 1 <= int(count_text) <= MAX_REPEAT:
            raise FaultSyntaxError(f"{step!r}: the count after '*' must be 1..{MAX_REPEAT}")
        count = int(count_text)
    fields: dict[str, object] = {}
    if at:
        fields["chance"] = _chance(chance_text, step)
    segments = body.split(":")
    # An operation name comes first, before a `what`; options always have an "=".
    if len(segments) > 1 and "=" not in segments[1] and _is_operation(segments[0]):
        fields["operation"] = segments.pop(0)
    what, *options = segments
    check_what(what, step)
    fields["what"] = what
    for option in options:
        key, eq, value = option.partition("=")
        if not eq:
            raise FaultSyntaxError(f"{step!r}: option {option!r} needs a value (key=value)")
        if key == "retry-after":
            _seconds(value[5:] if value.startswith("date+") else value, step)
            fields["retry_after"] = value
        elif key == "retry-after-ms":
            _seconds(value, step)
            fields["retry_after_ms"] = value
        elif key == "delay":
            fields["delay"] = _seconds(value, step)
        else:
            raise FaultSyntaxError(f"{step!r}: unknown option {key!r}")
    return [Fault(**fields)] * count  # type: ignore[arg-type]


def parse_faults(script: str | None) -> list[Fault]:
    """Parse a fault script such as ``"503*2,429:retry-after=1,reset@5%"`` into items.

    An empty script (or None) is no faults.
    """
    if script is None or script.strip() == "":
        return []
    faults: list[Fault] = []
    for step in (part.strip() for part in script.split(",")):
        if not step:
            raise FaultSyntaxError(f"empty step in {script!r}")
        faults.extend(_parse_item(step))
    return faults


def as_faults(faults: str | Iterable[Fault] | None) -> list[Fault]:
    """A script, `Fault` objects or None (no faults), as a list of checked faults."""
    if faults is None or isinstance(faults, str):
        return parse_faults(faults)
    checked = list(faults)
    for fault in checked:
        if not isinstance(fault, Fault):
            raise TypeError(f"expected Fault objects or a script string, got {type(fault)!r}")
        step = fault.describe()
        check_what(fault.what, step)
        if fault.operation is not None and not _is_operation(fault.operation):
            raise FaultSyntaxError(f"{step!r}: {fault.operation!r} is not an operation name")
        if fault.chance is not None and not 0 < fault.chance <= 100:
            raise FaultSyntaxError(f"{step!r}: the chance must be a percentage in (0, 100]")
    return checked


def describe_faults(faults: Iterable[Fault]) -> str:
    """Faults as a script (runs of one step written ``step*N``); parses back to the same."""
    items: list[tuple[str, int]] = []
    for fault in faults:
        text = fault.describe()
        if fault.chance is None and items and items[-1][0] == text and items[-1][1] < MAX_REPEAT:
            items[-1] = (text, items[-1][1] + 1)
        else:
            items.append((text, 1))
    return ",".join(text if count == 1 else f"{text}*{count}" for text, count in items)
