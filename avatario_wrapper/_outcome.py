"""What a failed attempt says Avatario may have done: the outcome table, in one place.

    not sent  nothing of the request can have reached Avatario: DNS, refused, connect, TLS,
              proxy or pool failure, or not one byte of the request written
    refused   a status saying Avatario did not act on it: a 4xx (or a 3xx, never followed), 503
    unknown   the request went out and no answer says what happened: a read timeout, a reset or
              a clean close before the whole answer (on a fresh or a reused connection), 500,
              502, 504 and any other 5xx
    started   any 2xx, whatever its body says

Whether a failure is resent follows from it (`_retry`): not sent, always; refused, when its
status is in the policy's ``retry_statuses``; unknown, only for operations that only read (or
with ``retry_unknown_outcome=True``); started, never. An operation that starts a session "may
have started" it when the outcome is unknown or started; one that only reads never started
anything, whatever the outcome. The wording of every message about it is here too.
"""

from __future__ import annotations

import enum

__all__ = [
    "Outcome",
    "may_have_started",
    "outcome_of_status",
    "unknown_outcome_note",
    "unreadable_success_note",
]


class Outcome(str, enum.Enum):
    """What Avatario may have done with a failed attempt (see [Retries](../retries.md)).

    A `str` enum: each member's value is its lower-case name (``"not_sent"``, ``"refused"``,
    ``"unknown"``, ``"started"``).
    """

    NOT_SENT = "not_sent"
    """The request never reached Avatario whole: DNS, refused, connect, TLS, proxy or pool
    failure, or not one byte of it written. Always safe to send again."""
    REFUSED = "refused"
    """Avatario (or a proxy) answered with a status saying it did not act: a 4xx, 503."""
    UNKNOWN = "unknown"
    """The request went out and no answer says what happened: a read timeout, a reset or a
    close before the answer (on a fresh or a reused connection), 500, 502, 504."""
    STARTED = "started"
    """A 2xx arrived: the operation was carried out (a session started), whatever the body
    says."""


#: The one 5xx that says the server did not act on the request (it may later).
_REFUSED_5XX = frozenset({503})


def outcome_of_status(status: int) -> Outcome:
    """What a status says Avatario did: 2xx started, 3xx/4xx and 503 refused, other 5xx unknown."""
    if 200 <= status < 300:
        return Outcome.STARTED
    if 300 <= status < 500 or status in _REFUSED_5XX:
        return Outcome.REFUSED
    return Outcome.UNKNOWN


def may_have_started(outcome: Outcome, *, starts_session: bool) -> bool:
    """True when an operation that starts sessions may have started one despite the failure."""
    return starts_session and outcome in (Outcome.UNKNOWN, Outcome.STARTED)


def unknown_outcome_note(*, starts_session: bool) -> str:
    """Appended to a "no response" message when the request went out."""
    if starts_session:
        return " (the request went out: Avatario may have started the session)"
    return " (the request went out; no answer arrived)"


def unreadable_success_note(*, starts_session: bool) -> str:
    """Appended to the message of a 2xx whose body breaks the spec (never resent)."""
    if starts_session:
        return "; the session may have started, so the request is not sent again"
    return ""
