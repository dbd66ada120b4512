"""OpenTelemetry switches (docs/observability.md). Telemetry itself needs no code:

    pip install '.[otel]'   # in a checkout of avatario-wrapper (not on a package index yet)

The extra brings opentelemetry-api only; the SDK is the application's.

With an OpenTelemetry SDK configured (a global tracer or meter provider; in a LiveKit worker,
livekit-agents' own tracer provider too), every call of `AvatarioClient` and
`AsyncAvatarioClient` is a span ``avatario.<operation>`` with one child span per HTTP attempt,
and feeds the metrics ``http.client.request.duration`` and ``avatario.client.*``. Without an
SDK nothing is recorded and next to nothing is spent; without ``opentelemetry-api`` nothing
is imported. This module holds the two switches there are:

- `set_trace_propagation`: whether each attempt sends a W3C ``traceparent`` to Avatario. Off
  by default (Avatario is a third party and documents no use for it; what correlates a call
  with Avatario's logs is the ``x-request-id`` recorded on every span); also
  ``AVATARIO_TRACE_PROPAGATION=1``.
- `set_enabled`: turn this package's telemetry off (or on again) for the whole process.
"""

from __future__ import annotations

from ._telemetry import (
    TRACE_PROPAGATION_ENV,
    set_enabled,
    set_trace_propagation,
    trace_propagation,
)

__all__ = [
    "TRACE_PROPAGATION_ENV",
    "set_enabled",
    "set_trace_propagation",
    "trace_propagation",
]
