"""Telemetry of calls and attempts: OpenTelemetry spans and metrics, only when someone listens.

    start_call(request) ──▶ NO_TRACE     nobody listens: every event is a no-op
                       └──▶ CallTrace    one span per call, one child span per attempt, metrics

This module never causes an import of OpenTelemetry: providers are looked up only in a process that
has imported ``opentelemetry.trace`` or ``opentelemetry.metrics`` itself (configuring an SDK
does), and telemetry is on only when one of the global providers is not the API's default
no-op/proxy provider. The check runs on every call (two dict lookups when OpenTelemetry was
never imported; two provider lookups when it was), so an SDK configured later is picked up by
the next call. A LiveKit worker's own tracer provider is followed too: `avatario_wrapper.livekit`
registers livekit-agents' tracer with `follow_tracer`.

What is recorded, and why each name (docs/observability.md has the tables):

- the call: an INTERNAL span ``avatario.<operation>`` (the logical operation; the HTTP
  semantic conventions ask for one CLIENT span per attempt and no encompassing CLIENT span),
  with the ``avatario.*`` attributes set when it ends, backoff waits and budget refusals as
  events, status ERROR with the error's one-line message;
- each attempt: a CLIENT span following the HTTP client conventions (``http.request.method``,
  ``server.address``, ``server.port``, ``url.full``, ``http.request.resend_count`` from the
  second attempt on, ``http.response.status_code``, ``error.type``); while it runs it is the
  current span, and with trace propagation on (`set_trace_propagation`) its id is sent as the
  W3C ``traceparent`` of that attempt (never ``tracestate`` or baggage);
- metrics: ``http.client.request.duration`` per attempt, and ``avatario.client.*`` per call.

No secret reaches telemetry: every string taken from a request, a result or an error is
redacted of the call's secrets (the API key, the LiveKit token), and server text arrives here
already made one printable line by `_reply`. A failure inside telemetry never fails a call.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import urllib.parse
from collections.abc import Callable
from functools import lru_cache
from typing import Any, Protocol

from ._text import one_line, redact
from ._version import __version__
from .errors import APIError, APIResponseValidationError, APIStatusError, AvatarioError

__all__ = [
    "TRACE_PROPAGATION_ENV",
    "CallTrace",
    "current_tracer",
    "error_type",
    "follow_tracer",
    "set_enabled",
    "set_providers",
    "set_trace_propagation",
    "start_call",
    "trace_propagation",
]

logger = logging.getLogger("avatario_wrapper")

#: The instrumentation scope of every span and instrument made here.
SCOPE = "avatario_wrapper"
#: ``1``/``true``/``yes``/``on`` sends a W3C ``traceparent`` with every attempt; anything else
#: (or unset) does not. `set_trace_propagation` overrides it.
TRACE_PROPAGATION_ENV = "AVATARIO_TRACE_PROPAGATION"
_TRUE = frozenset({"1", "true", "yes", "on"})

#: Bucket boundaries the HTTP semantic conventions advise for ``http.client.request.duration``.
HTTP_DURATION_BUCKETS = (
    0.0, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0
)  # fmt: skip
#: A call includes its backoff waits and is bounded by ``max_elapsed`` (30 s by default).
CALL_DURATION_BUCKETS = (*HTTP_DURATION_BUCKETS, 15, 20, 30, 45, 60, 120)
ATTEMPT_BUCKETS = (1, 2, 3, 4, 5, 6, 8, 10)


class CallTrace(Protocol):
    """What the request path tells telemetry about one call."""

    def attempt_started(self, number: int) -> None:
        """Attempt `number` (1 for the first) is about to be sent."""

    def attempt_ended(self, result: Any, error: BaseException | None) -> None:
        """The attempt returned `result` or raised `error`."""

    def backoff(self, delay: float, *, from_retry_after: bool) -> None:
        """The call waits `delay` seconds before its next attempt."""

    def budget_refused(self) -> None:
        """A retry was due but the retry budget refused it."""

    def ride_out(self, outcome: str, seconds: float) -> None:
        """The call waited `seconds` out of trouble: ``released``, ``probe`` or ``gave_up``."""

    def ended(self, result: Any, error: BaseException | None, attempts: int) -> None:
        """The call is over: `result` returned, or `error` raised, after `attempts` attempts."""


class _NoTrace:
    """The trace of a call nobody listens to: every event costs one empty method call."""

    __slots__ = ()

    def attempt_started(self, number: int) -> None:
        pass

    def attempt_ended(self, result: Any, error: BaseException | None) -> None:
        pass

    def backoff(self, delay: float, *, from_retry_after: bool) -> None:
        pass

    def budget_refused(self) -> None:
        pass

    def ride_out(self, outcome: str, seconds: float) -> None:
        pass

    def ended(self, result: Any, error: BaseException | None, attempts: int) -> None:
        pass


NO_TRACE: CallTrace = _NoTrace()


# -- switches ---------------------------------------------------------------------------------


class _State:
    """The process-wide switches and the instruments of the providers last used."""

    __slots__ = ("cache", "enabled", "propagation", "providers", "tracer_source")

    def __init__(self) -> None:
        self.enabled = True
        self.propagation: bool | None = None  # None: the environment decides
        #: Providers used instead of the global ones (tests, the demo, scripts); None: global.
        self.providers: tuple[Any, Any] | None = None
        #: Returns a tracer to use instead of the global provider's, or None (`follow_tracer`).
        self.tracer_source: Callable[[], Any] | None = None
        self.cache: _Instruments | None = None


_state = _State()


def set_enabled(enabled: bool) -> None:
    """Turn this package's telemetry off or on again, for the whole process.

    Args:
        enabled: False: no call records a span or a measurement, whatever providers are
            configured. True (the default): calls are traced and measured whenever a tracer
            or meter provider is configured.
    """
    _state.enabled = bool(enabled)


def set_trace_propagation(enabled: bool | None) -> None:
    """Whether each attempt sends its span to Avatario as a W3C ``traceparent`` header.

    Off by default: Avatario is a third party that documents no use for it, and what
    correlates a call with its logs is the ``x-request-id`` every span records (see
    docs/observability.md). Only ``traceparent`` is ever sent: never ``tracestate`` or baggage.

    Args:
        enabled: True: every attempt sends its own span's id. False: never, whatever the
            environment says. None: ``AVATARIO_TRACE_PROPAGATION`` decides (``1``, ``true``,
            ``yes`` or ``on``: send; anything else or unset: do not).
    """
    _state.propagation = None if enabled is None else bool(enabled)


def trace_propagation() -> bool:
    """Whether attempts send a ``traceparent`` now: `set_trace_propagation`'s setting, else
    ``AVATARIO_TRACE_PROPAGATION``. (It takes a span to send: nothing is sent while no
    tracer provider is configured.)"""
    if _state.propagation is not None:
        return _state.propagation
    return os.environ.get(TRACE_PROPAGATION_ENV, "").strip().lower() in _TRUE


def set_providers(
    tracer_provider: Any = None, meter_provider: Any = None
) -> tuple[Any, Any] | None:
    """Use these providers instead of the global ones (both None: the global ones again).

    For tests, the demo and scripts, which must not set the process-wide providers. Returns
    the providers used before, or None.
    """
    before = _state.providers
    none = tracer_provider is None and meter_provider is None
    _state.providers = None if none else (tracer_provider, meter_provider)
    _state.cache = None
    return before


def follow_tracer(source: Callable[[], Any] | None) -> None:
    """Take spans' tracer from `source()` when it returns one (else the global provider's).

    `avatario_wrapper.livekit` passes a function returning livekit-agents' tracer when a
    tracer provider was given to it (livekit's ``set_tracer_provider``, or LiveKit Cloud's),
    so inside a worker our spans go where the agent's go.
    """
    _state.tracer_source = source
    _state.cache = None


# -- is anyone listening? ---------------------------------------------------------------------

_modules = sys.modules
_ERRORS_MODULE = APIError.__module__


class _Instruments:
    """The tracer and the instruments of the providers in use, built once per pair."""

    __slots__ = (
        "attempt_duration",
        "attempts",
        "budget_refusals",
        "call_duration",
        "calls",
        "context",
        "meter_key",
        "trace",
        "tracer",
        "tracer_key",
    )

    def __init__(self, tracer_key: Any, tracer: Any, meter_key: Any, meter: Any) -> None:
        self.tracer_key = tracer_key
        self.meter_key = meter_key
        self.tracer = tracer
        self.trace: Any = None
        self.context: Any = None
        if tracer is not None:
            from opentelemetry import context, trace  # noqa: PLC0415 - already imported

            self.trace = trace
            self.context = context
        self.attempt_duration: Any = None
        self.call_duration: Any = None
        self.attempts: Any = None
        self.calls: Any = None
        self.budget_refusals: Any = None
        if meter is not None:
            self.attempt_duration = _histogram(
                meter,
                "http.client.request.duration",
                "s",
                "Duration of HTTP client requests: one per attempt.",
                HTTP_DURATION_BUCKETS,
            )
            self.call_duration = _histogram(
                meter,
                "avatario.client.call.duration",
                "s",
                "Duration of Avatario calls, every attempt and backoff wait included.",
                CALL_DURATION_BUCKETS,
            )
            self.attempts = _histogram(
                meter,
                "avatario.client.call.attempts",
                "{attempt}",
                "Attempts each Avatario call made.",
                ATTEMPT_BUCKETS,
            )
            self.calls = meter.create_counter(
                "avatario.client.calls",
                unit="{call}",
                description="Avatario calls, by outcome (started, refused, unknown, not_sent).",
            )
            self.budget_refusals = meter.create_counter(
                "avatario.client.retry_budget.refusals",
                unit="{retry}",
                description="Retries that were due but refused by the retry budget.",
            )


def _histogram(meter: Any, name: str, unit: str, description: str, buckets: Any) -> Any:
    try:
        return meter.create_histogram(
            name, unit=unit, description=description, explicit_bucket_boundaries_advisory=buckets
        )
    except TypeError:  # opentelemetry-api < 1.23 has no bucket advice
        return meter.create_histogram(name, unit=unit, description=description)


def _recording(provider: Any, *defaults: Any) -> Any:
    """`provider`, or None when it is one of the API's defaults (it records nothing)."""
    return None if provider is None or isinstance(provider, defaults) else provider


def _tracer_key() -> Any:
    """The tracer provider (or followed tracer) in use, or None when spans go nowhere."""
    source = _state.tracer_source
    if source is not None:
        tracer = source()
        if tracer is not None:
            return tracer
    trace = _modules.get("opentelemetry.trace")
    if trace is None:
        return None
    try:
        provider = trace.get_tracer_provider()
        return _recording(provider, trace.ProxyTracerProvider, trace.NoOpTracerProvider)
    except AttributeError:  # opentelemetry.trace is half imported by another thread
        return None


def _meter_key() -> Any:
    metrics = _modules.get("opentelemetry.metrics")
    if metrics is None:
        return None
    try:
        provider = metrics.get_meter_provider()
        return _recording(provider, _proxy_meter_provider(metrics), metrics.NoOpMeterProvider)
    except AttributeError:
        return None


def _proxy_meter_provider(metrics: Any) -> Any:
    """The class of the API's stand-in meter provider, returned while none is set. The API
    exports no name for it (its tracer twin is public): the one private name read here."""
    internal = _modules.get("opentelemetry.metrics._internal", metrics)
    return getattr(internal, "_ProxyMeterProvider", metrics.NoOpMeterProvider)


def _in_use() -> _Instruments | None:
    """The instruments for the providers in use now, or None when nobody listens."""
    if _state.providers is not None:
        tracer_key, meter_key = _state.providers
    else:
        tracer_key, meter_key = _tracer_key(), _meter_key()
    if tracer_key is None and meter_key is None:
        return None
    instruments = _state.cache
    if (
        instruments is not None
        and instruments.tracer_key is tracer_key
        and instruments.meter_key is meter_key
    ):
        return instruments
    return _build(tracer_key, meter_key)


def _build(tracer_key: Any, meter_key: Any) -> _Instruments:
    if tracer_key is None:
        tracer = None
    elif hasattr(tracer_key, "get_tracer"):  # a provider
        tracer = tracer_key.get_tracer(SCOPE, __version__)
    else:  # a tracer (followed)
        tracer = tracer_key
    meter = None if meter_key is None else meter_key.get_meter(SCOPE, __version__)
    instruments = _state.cache = _Instruments(tracer_key, tracer, meter_key, meter)
    return instruments


def current_tracer() -> Any:
    """The tracer spans go to now, or None when nobody listens (for `livekit`'s own spans)."""
    if not _state.enabled:
        return None
    try:
        instruments = _in_use()
    except Exception:
        logger.debug("Avatario telemetry could not find a tracer", exc_info=True)
        return None
    return None if instruments is None else instruments.tracer


def start_call(request: Any) -> CallTrace:
    """The trace of a call about to start; `NO_TRACE` when telemetry is off (nobody listens)."""
    state = _state
    if not state.enabled:
        return NO_TRACE
    if (
        state.providers is None
        and state.tracer_source is None
        and "opentelemetry.trace" not in _modules
        and "opentelemetry.metrics" not in _modules
    ):
        return NO_TRACE
    try:
        instruments = _in_use()
        return NO_TRACE if instruments is None else _CallTrace(instruments, request)
    except Exception:  # telemetry never fails a call
        logger.debug("Avatario telemetry could not start a call's trace", exc_info=True)
        return NO_TRACE


# -- what is recorded ---------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _server(url: str) -> tuple[str, str, int]:
    """``(url.full, server.address, server.port)`` of a request URL, credentials removed."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if "@" in parts.netloc:  # never the case (base_url refuses credentials); scrubbed anyway
        netloc = "REDACTED:REDACTED@" + parts.netloc.rpartition("@")[2]
        url = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return url, host, port


def error_type(error: BaseException) -> str:
    """``error.type``: the status as text for a status error, else the exception's class (our
    public class for our errors, whatever subclass carries them, e.g. livekit's dual ones)."""
    return _error_type(error, _status_of(None, error))


def _error_type(error: BaseException, status: int | None) -> str:
    if isinstance(error, APIStatusError) and status is not None:
        return str(status)
    mro = type(error).__mro__
    cls = next((c for c in mro if c.__module__ == _ERRORS_MODULE), mro[0])
    return f"{cls.__module__}.{cls.__qualname__}"


def _status_of(result: Any, error: BaseException | None) -> int | None:
    if error is not None:
        if isinstance(error, (APIStatusError, APIResponseValidationError)):
            return error.status_code
        return None
    status = getattr(result, "status_code", None)
    if status is None:
        status = getattr(result, "status", None)  # warm_up's raw reply
    return status if isinstance(status, int) and status > 0 else None


class _CallTrace:
    """One call's spans and measurements (see the module docstring)."""

    __slots__ = (
        "_attempt",
        "_attempt_began",
        "_attempt_token",
        "_attempts",
        "_began",
        "_context",
        "_headers",
        "_instruments",
        "_request",
        "_request_ids",
        "_secrets",
        "_server",
        "_span",
        "_token",
    )

    def __init__(self, instruments: _Instruments, request: Any) -> None:
        self._instruments = instruments
        self._request = request
        self._secrets: tuple[str, ...] = tuple(request.secrets)
        self._headers = request.headers
        self._server = _server(request.url)
        self._request_ids: list[str] = []
        self._attempts = 0
        self._attempt: Any = None
        self._attempt_token: Any = None
        self._attempt_began = 0.0
        self._span: Any = None
        self._context: Any = None
        self._token: Any = None
        self._began = time.perf_counter()
        tracer = instruments.tracer
        if tracer is not None:
            attributes: dict[str, Any] = {"avatario.operation": request.name}
            if request.idempotency_key:
                attributes["avatario.idempotency_key"] = self._text(request.idempotency_key)
            trace = instruments.trace
            self._span = tracer.start_span(
                f"avatario.{request.name}", kind=trace.SpanKind.INTERNAL, attributes=attributes
            )
            self._context = trace.set_span_in_context(self._span)
            self._token = instruments.context.attach(self._context)

    def _text(self, value: object, limit: int = 200) -> str:
        return one_line(redact(str(value), self._secrets), limit)

    def attempt_started(self, number: int) -> None:
        self._attempts = number
        self._attempt_began = time.perf_counter()
        instruments = self._instruments
        if instruments.tracer is None:
            return
        try:
            url, host, port = self._server
            method = self._request.method
            attributes: dict[str, Any] = {
                "http.request.method": method,
                "server.address": host,
                "server.port": port,
                "url.full": redact(url, self._secrets),
            }
            if number > 1:
                attributes["http.request.resend_count"] = number - 1
            trace = instruments.trace
            span = self._attempt = instruments.tracer.start_span(
                method, context=self._context, kind=trace.SpanKind.CLIENT, attributes=attributes
            )
            self._attempt_token = instruments.context.attach(trace.set_span_in_context(span))
            if trace_propagation():
                ids = span.get_span_context()
                if ids.is_valid:
                    self._request.headers = {
                        **self._headers,
                        "traceparent": f"00-{ids.trace_id:032x}-{ids.span_id:016x}-"
                        f"{int(ids.trace_flags):02x}",
                    }
        except Exception:
            logger.debug("Avatario telemetry failed at an attempt's start", exc_info=True)

    def attempt_ended(self, result: Any, error: BaseException | None) -> None:
        try:
            self._attempt_ended(result, error, time.perf_counter() - self._attempt_began)
        except Exception:
            logger.debug("Avatario telemetry failed at an attempt's end", exc_info=True)

    def _attempt_ended(self, result: Any, error: BaseException | None, seconds: float) -> None:
        instruments = self._instruments
        status = _status_of(result, error)
        kind = None if error is None else _error_type(error, status)
        request_id = getattr(error if error is not None else result, "request_id", None)
        if isinstance(request_id, str) and request_id:
            request_id = self._text(request_id)
            self._request_ids.append(request_id)
        else:
            request_id = None
        if instruments.attempt_duration is not None:
            _, host, port = self._server
            attributes: dict[str, Any] = {
                "http.request.method": self._request.method,
                "server.address": host,
                "server.port": port,
            }
            if status is not None:
                attributes["http.response.status_code"] = status
            if kind is not None:
                attributes["error.type"] = kind
            instruments.attempt_duration.record(seconds, attributes)
        span = self._attempt
        if span is None:
            return
        self._attempt = None
        try:
            values: dict[str, Any] = {}
            if status is not None:
                values["http.response.status_code"] = status
            if request_id is not None:
                values["avatario.request_id"] = request_id
            if error is not None and kind is not None:
                values["error.type"] = kind
                if isinstance(error, APIError):
                    values["avatario.outcome"] = error.outcome.value
                span.set_status(
                    instruments.trace.StatusCode.ERROR, self._describe(error, whole=False)
                )
            if values:
                span.set_attributes(values)
            span.end()
        finally:
            token, self._attempt_token = self._attempt_token, None
            if token is not None:
                instruments.context.detach(token)

    def _describe(self, error: BaseException, *, whole: bool) -> str:
        """The status description: our one-line message (never a foreign exception's text)."""
        if isinstance(error, APIError):
            return self._text(str(error) if whole else error.message, 1000)
        if isinstance(error, AvatarioError):
            return self._text(error, 1000)
        return type(error).__qualname__

    def backoff(self, delay: float, *, from_retry_after: bool) -> None:
        span = self._span
        if span is None:
            return
        try:
            span.add_event(
                "avatario.backoff",
                {
                    "avatario.attempt": self._attempts,
                    "avatario.backoff.delay": float(delay),
                    "avatario.backoff.from_retry_after": bool(from_retry_after),
                },
            )
        except Exception:
            logger.debug("Avatario telemetry failed at a backoff", exc_info=True)

    def budget_refused(self) -> None:
        try:
            instruments = self._instruments
            if instruments.budget_refusals is not None:
                instruments.budget_refusals.add(1, {"avatario.operation": self._request.name})
            if self._span is not None:
                self._span.add_event(
                    "avatario.retry_budget.refused", {"avatario.attempt": self._attempts}
                )
        except Exception:
            logger.debug("Avatario telemetry failed at a budget refusal", exc_info=True)

    def ride_out(self, outcome: str, seconds: float) -> None:
        if self._span is None:
            return
        try:
            self._span.add_event(
                "avatario.ride_out",
                {
                    "avatario.attempt": self._attempts,
                    "avatario.ride_out.outcome": outcome,
                    "avatario.ride_out.seconds": float(seconds),
                },
            )
        except Exception:
            logger.debug("Avatario telemetry failed at a ride-out", exc_info=True)

    def ended(self, result: Any, error: BaseException | None, attempts: int) -> None:
        try:
            self._ended(result, error, attempts, time.perf_counter() - self._began)
        except Exception:
            logger.debug("Avatario telemetry failed at a call's end", exc_info=True)

    def _ended(
        self, result: Any, error: BaseException | None, attempts: int, seconds: float
    ) -> None:
        instruments = self._instruments
        request = self._request
        outcome: str | None = None
        kind: str | None = None
        if error is None:
            if request.operation is not None:  # warm_up has no outcome: any answer will do
                outcome = "started"
        else:
            kind = _error_type(error, _status_of(None, error))
            if isinstance(error, APIError):
                outcome = error.outcome.value
        if instruments.calls is not None:
            attributes: dict[str, Any] = {"avatario.operation": request.name}
            if outcome is not None:
                attributes["avatario.outcome"] = outcome
            if kind is not None:
                attributes["error.type"] = kind
            instruments.call_duration.record(seconds, attributes)
            instruments.attempts.record(attempts, attributes)
            instruments.calls.add(1, attributes)
        span = self._span
        if span is None:
            return
        self._span = None
        try:
            values: dict[str, Any] = {"avatario.attempts": attempts}
            if outcome is not None:
                values["avatario.outcome"] = outcome
            if self._request_ids:
                values["avatario.request_ids"] = tuple(self._request_ids)
            session_id = getattr(result, "session_id", None)
            if isinstance(session_id, str) and session_id:
                values["avatario.session_id"] = self._text(session_id)
            if isinstance(error, APIError):
                values["avatario.may_have_started"] = error.may_have_started
                if error.not_retried_because:
                    values["avatario.not_retried_because"] = self._text(
                        error.not_retried_because, 400
                    )
            if kind is not None and error is not None:
                values["error.type"] = kind
                span.set_status(
                    instruments.trace.StatusCode.ERROR, self._describe(error, whole=True)
                )
            span.set_attributes(values)
            span.end()
        finally:
            token, self._token = self._token, None
            if token is not None:
                instruments.context.detach(token)
