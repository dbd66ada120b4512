"""`AvatarSession`'s spans: where they go (livekit-agents' tracer when it has one) and what
they say. Nothing secret is ever an attribute: ids, counts and outcomes only."""

from __future__ import annotations

from typing import Any

from livekit.agents.telemetry import tracer as livekit_tracer
from livekit.agents.telemetry.trace_types import ATTR_PROVIDER_REQUEST_IDS, ATTR_RETRY_COUNT
from opentelemetry import trace as otel_trace

from .. import _telemetry
from .._operations import StartSessionResult
from ..errors import APIError, AvatarioError, Outcome

#: The spans of `AvatarSession.start` and of its waits for the avatar to join.
START_SPAN = "avatario.avatar_session.start"
JOIN_WAIT_SPAN = "avatario.avatar_join_wait"
#: The span event of a second avatar joining under the same identity.
SECOND_AVATAR_EVENT = "avatario.second_avatar_joined"


def _livekit_tracer() -> Any:
    """livekit-agents' tracer when it was given a tracer provider of its own, else None (then
    it follows the global provider, and so does `_telemetry`)."""
    provider = getattr(livekit_tracer, "_tracer_provider", None)
    if provider is None or isinstance(
        provider, (otel_trace.ProxyTracerProvider, otel_trace.NoOpTracerProvider)
    ):
        return None
    return livekit_tracer


def follow_livekit() -> None:
    """Send our spans where livekit-agents sends its own (called once, at import)."""
    _telemetry.follow_tracer(_livekit_tracer)


def record_result(span: Any, result: StartSessionResult, settled_by: str) -> None:
    """`AvatarSession.start`'s span attributes for a result (nothing secret: ids only)."""
    values: dict[str, Any] = {
        "avatario.attempts": result.attempts,
        ATTR_RETRY_COUNT: max(0, result.attempts - 1),
        "avatario.outcome": Outcome.STARTED.value,
        "avatario.settled_by": settled_by,
    }
    if result.idempotency_key:
        values["avatario.idempotency_key"] = result.idempotency_key
    ids = [i for i in (result.request_id, result.session_id) if isinstance(i, str) and i]
    if ids:
        values[ATTR_PROVIDER_REQUEST_IDS] = ids
    if result.session_id:
        values["avatario.session_id"] = result.session_id
    span.set_attributes(values)


def record_failure(span: Any, error: BaseException) -> None:
    """`AvatarSession.start`'s span status and attributes for a failure."""
    values: dict[str, Any] = {"error.type": _telemetry.error_type(error)}
    description = type(error).__qualname__
    if isinstance(error, AvatarioError):
        description = str(error)  # one line, no secret (errors.py)
    if isinstance(error, APIError):
        values.update(
            {
                "avatario.attempts": error.attempts,
                ATTR_RETRY_COUNT: max(0, error.attempts - 1),
                "avatario.outcome": error.outcome.value,
                "avatario.may_have_started": error.may_have_started,
            }
        )
        if error.idempotency_key:
            values["avatario.idempotency_key"] = error.idempotency_key
        request_id = getattr(error, "request_id", None)
        if isinstance(request_id, str) and request_id:
            values[ATTR_PROVIDER_REQUEST_IDS] = [request_id]
        if error.not_retried_because:
            values["avatario.not_retried_because"] = error.not_retried_because
    span.set_attributes(values)
    span.set_status(otel_trace.StatusCode.ERROR, description)


class EventSpans:
    """Where an event of the avatar's life goes: `AvatarSession.start`'s span while it is
    open, else the span current when `start` was called (inside a job, livekit-agents' job
    span, which lasts the job)."""

    __slots__ = ("_spans",)

    def __init__(self, start: Any = None) -> None:
        # Made before `start`'s span is current; once ended, a span records nothing more.
        self._spans = (start, otel_trace.get_current_span())

    def add_event(self, name: str, attributes: dict[str, Any]) -> None:
        for span in self._spans:
            if span is not None and span.is_recording():
                span.add_event(name, attributes)
                return
