"""Spans recorded in memory and drawn as a tree: ``avatario demo --spans`` and
``scripts/trace-picture``. Needs ``opentelemetry-sdk`` (and ``rich`` to draw).

`SpanRecorder` hands an SDK `TracerProvider` (exporting to an `InMemorySpanExporter`) to this
package only, never as the process-wide provider; `tree` draws what it recorded, children and
events in time order:

    avatario.start_session  internal  1.13 s  started · 3 attempts
    ├── POST  client  2.1 ms  HTTP 503 · error.type=503
    ├── ⏸ backoff 0.41 s
    ├── POST  client  1.8 ms  resend 1 · HTTP 503 · error.type=503
    ├── ⏸ backoff 0.70 s
    └── POST  client  2.0 ms  resend 2 · HTTP 200
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

from .. import _telemetry

__all__ = ["SDK_HINT", "SpanRecorder", "describe", "sdk_installed", "tree"]

SDK_HINT = "needs opentelemetry-sdk: pip install opentelemetry-sdk"


def sdk_installed() -> bool:
    try:
        return importlib.util.find_spec("opentelemetry.sdk") is not None
    except ModuleNotFoundError:
        return False


class SpanRecorder:
    """Records this package's spans in memory while it is open (a context manager)."""

    def __init__(self) -> None:
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415 - optional
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: PLC0415
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: PLC0415
            InMemorySpanExporter,
        )

        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self._before: tuple[Any, Any] | None = None

    def __enter__(self) -> SpanRecorder:
        self._before = _telemetry.set_providers(self.provider, None)
        return self

    def __exit__(self, *exc: object) -> None:
        before = self._before or (None, None)
        _telemetry.set_providers(*before)
        self.provider.shutdown()

    def take(self) -> list[Any]:
        """The spans ended since the last `take`, oldest first."""
        spans = list(self.exporter.get_finished_spans())
        self.exporter.clear()
        return sorted(spans, key=lambda s: s.start_time or 0)


def _ms(nanos: int) -> str:
    seconds = nanos / 1e9
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1000:.1f} ms"


def describe(span: Any) -> str:
    """One line for a span: name, kind, duration and what its attributes say."""
    a = span.attributes or {}
    kind = span.kind.name.lower()
    took = _ms((span.end_time or 0) - (span.start_time or 0))
    notes: list[str] = []
    if "http.request.resend_count" in a:
        notes.append(f"resend {a['http.request.resend_count']}")
    if "http.response.status_code" in a:
        notes.append(f"HTTP {a['http.response.status_code']}")
    if "avatario.outcome" in a:
        notes.append(str(a["avatario.outcome"]))
    if "avatario.attempts" in a:
        notes.append(f"{a['avatario.attempts']} attempt(s)")
    if "avatario.join_wait.result" in a:
        notes.append(f"avatar {a['avatario.join_wait.result'].replace('_', ' ')}")
    if "avatario.settled_by" in a:
        notes.append(f"settled by {a['avatario.settled_by']}")
    if "lk.retry_count" in a:
        notes.append(f"lk.retry_count={a['lk.retry_count']}")
    if "error.type" in a:
        notes.append(f"error.type={str(a['error.type']).rpartition('.')[2]}")
    if a.get("avatario.may_have_started"):
        notes.append("may have started")
    return f"{span.name}  {kind}  {took}  {' · '.join(notes)}".rstrip()


def _event_line(event: Any) -> str:
    a = event.attributes or {}
    if event.name == "avatario.backoff":
        why = " (Retry-After)" if a.get("avatario.backoff.from_retry_after") else ""
        return f"⏸ backoff {float(a.get('avatario.backoff.delay', 0.0)):.2f} s{why}"
    if event.name == "avatario.retry_budget.refused":
        return "✋ retry refused by the retry budget"
    return f"• {event.name}"


def tree(spans: Sequence[Any]) -> list[Any]:
    """`rich.tree.Tree`s of `spans`, one per root (a span whose parent is not among them)."""
    from rich.markup import escape  # noqa: PLC0415 - the cli extra
    from rich.tree import Tree  # noqa: PLC0415

    ids = {s.context.span_id for s in spans}
    children: dict[int, list[Any]] = {}
    roots: list[Any] = []
    for span in sorted(spans, key=lambda s: s.start_time or 0):
        parent: int | None = span.parent.span_id if span.parent is not None else None
        if parent is not None and parent in ids:
            children.setdefault(parent, []).append(span)
        else:
            roots.append(span)

    def grow(node: Any, span: Any) -> None:
        items: list[tuple[int, Any]] = [
            (c.start_time or 0, c) for c in children.get(span.context.span_id, [])
        ]
        items += [(e.timestamp, e) for e in span.events]
        for _, item in sorted(items, key=lambda pair: pair[0]):
            if hasattr(item, "context"):
                grow(node.add(_label(item, escape)), item)
            else:
                node.add(f"[yellow]{escape(_event_line(item))}[/]")

    trees = []
    for root in roots:
        top = Tree(_label(root, escape), guide_style="dim")
        grow(top, root)
        trees.append(top)
    return trees


def _label(span: Any, escape: Any) -> str:
    failed = span.status.status_code.name == "ERROR"
    colour = "red" if failed else "green" if span.kind.name == "INTERNAL" else "cyan"
    name, _, rest = describe(span).partition("  ")
    return f"[bold {colour}]{escape(name)}[/]  {escape(rest)}"
