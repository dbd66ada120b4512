"""Draw the span trees in docs/observability.md from real exported spans: docs/trace-*.svg.

    scripts/trace-picture                    # rewrite docs/trace-retries.svg and
                                             # docs/trace-avatar-session.svg
    scripts/trace-picture --quick --out DIR  # short backoff waits, into DIR (used by the tests)

Each scenario runs against the fake Avatario on 127.0.0.1 with the OpenTelemetry SDK exporting
to an `InMemorySpanExporter`; the picture is a waterfall of the spans it exported (one row per
span, indented under its parent, a bar from its start to its end), the call span's events
(backoff waits, drawn as the wait they announce), and each span's attributes under the chart.

- ``retries``: `AvatarioClient.start_session` against a fake answering 503, 503, then serving,
  with the default `RetryPolicy` (its jitter drawn from a seeded generator, so the waits are
  the same on every run; the HTTP exchanges' own durations vary a little);
- ``avatar-session``: `avatario_wrapper.livekit.AvatarSession.start` whose answer is lost (the
  fake starts the session, then resets the connection), settled by the avatar joining the room.
  The room is the testing kit's `StandInRoom` (no LiveKit server runs here); the avatar joins
  it 0.3 s after the fake started the session.

The SVG carries the tree it draws in its ``<desc>`` (one ``depth name`` per line), which the
tests compare with a fresh run: the timings change, the shape must not.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from avatario_wrapper import AvatarioClient, RetryPolicy  # noqa: E402
from avatario_wrapper._clock import SystemClock  # noqa: E402
from avatario_wrapper.cli._span_tree import SpanRecorder  # noqa: E402
from avatario_wrapper.testing import run_fake_server  # noqa: E402

KEY = "trace-picture-key-0001"
CALL = {
    "avatar_id": "face_4f1c2a",
    "agent_identity": "agent-7",
    "livekit_url": "wss://rooms.example.com",
    "livekit_token": "header.payload.signature",
}
LK_KEY = "APIpictureKEY"
LK_SECRET = "picture_SECRET_0123456789abcdef0123456789abcdef"  # noqa: S105 - the fake's
ROOM = "room-42"

# -- the scenarios -----------------------------------------------------------------------------


class SeededClock(SystemClock):
    """The real clock, with jitter drawn from a seeded generator: the same waits every run."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self._random = random.Random(seed)  # noqa: S311 - jitter, not cryptography


def retries(quick: bool) -> list[Any]:
    policy = RetryPolicy(initial_delay=0.05, max_delay=0.1) if quick else RetryPolicy()
    with SpanRecorder() as recorder, run_fake_server(api_key=KEY, faults="503*2") as server:
        clock = SeededClock(seed=5)
        with AvatarioClient(KEY, base_url=server.url, retry=policy, clock=clock) as client:
            client.start_session(**CALL)
        return recorder.take()


def avatar_session(quick: bool) -> list[Any]:
    # livekit-agents takes seconds to import: only for this scenario.
    from livekit.agents import AgentSession  # noqa: PLC0415

    from avatario_wrapper.livekit import AvatarSession  # noqa: PLC0415
    from avatario_wrapper.testing import StandInRoom  # noqa: PLC0415

    os.environ.update(
        LIVEKIT_URL="wss://rooms.example.com",
        LIVEKIT_API_KEY=LK_KEY,
        LIVEKIT_API_SECRET=LK_SECRET,
    )

    async def main() -> list[Any]:
        with SpanRecorder() as recorder:
            async with run_fake_server(
                api_key=KEY,
                faults="lost",
                livekit_api_key=LK_KEY,
                livekit_api_secret=LK_SECRET,
            ) as server:
                os.environ["AVATARIO_BASE_URL"] = server.url
                room = StandInRoom(ROOM, agent_identity="agent-7")
                avatar = AvatarSession(avatar_id="face_4f1c2a", api_key=KEY)
                # The avatar arrives a moment after the fake started its session.
                with room.avatars_from(server, join_after=0.05 if quick else 0.3):
                    try:
                        await avatar.start(AgentSession(), room=room)
                    finally:
                        await avatar.aclose()
            return recorder.take()

    return asyncio.run(main())


SCENARIOS: dict[str, tuple[str, Callable[[bool], list[Any]]]] = {
    "retries": ("start_session: 503, 503, then served (default RetryPolicy)", retries),
    "avatar-session": (
        "AvatarSession.start: the answer is lost, the avatar joins the room",
        avatar_session,
    ),
}

# -- the picture -------------------------------------------------------------------------------

ROW = 30
LEFT = 300
WIDTH = 1000
RIGHT = 24
FONT = "font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace"
COLOURS = {"INTERNAL": "#3b6fb6", "CLIENT": "#2e8b57", "ERROR": "#c0392b", "WAIT": "#8e6bbf"}


def ordered(spans: list[Any]) -> list[tuple[int, Any]]:
    """(depth, span), depth-first, children in start order."""
    ids = {s.context.span_id for s in spans}
    kids: dict[int | None, list[Any]] = {}
    for span in sorted(spans, key=lambda s: s.start_time):
        parent = span.parent.span_id if span.parent is not None else None
        kids.setdefault(parent if parent in ids else None, []).append(span)
    out: list[tuple[int, Any]] = []

    def walk(span: Any, depth: int) -> None:
        out.append((depth, span))
        for child in kids.get(span.context.span_id, []):
            walk(child, depth + 1)

    for root in kids.get(None, []):
        walk(root, 0)
    return out


def _ms(nanos: float) -> str:
    return f"{nanos / 1e9:.2f} s" if nanos >= 1e9 else f"{nanos / 1e6:.1f} ms"


def _note(span: Any) -> str:
    a = span.attributes or {}
    parts = []
    if "http.response.status_code" in a:
        parts.append(f"HTTP {a['http.response.status_code']}")
    if "error.type" in a and "http.response.status_code" not in a:
        parts.append(str(a["error.type"]).rpartition(".")[2])
    if "avatario.outcome" in a and span.kind.name == "INTERNAL":
        parts.append(str(a["avatario.outcome"]))
    if "avatario.join_wait.result" in a:
        parts.append(str(a["avatario.join_wait.result"]).replace("_", " "))
    return " · ".join([_ms(span.end_time - span.start_time), *parts])


def _details(rows: list[tuple[int, Any]], width: int = 150) -> list[str]:
    """Each span's attributes and events as text lines, wrapped at `width` characters."""
    details: list[str] = []
    for depth, span in rows:
        attributes = " ".join(f"{k}={v!r}" for k, v in (span.attributes or {}).items())
        details.append(f"{'  ' * depth}{span.name}: {attributes}")
        for event in span.events:
            event_attributes = " ".join(f"{k}={v!r}" for k, v in (event.attributes or {}).items())
            details.append(f"{'  ' * depth}  event {event.name}: {event_attributes}")
    wrapped: list[str] = []
    for detail in details:
        line, indent = detail, len(detail) - len(detail.lstrip())
        while len(line) > width:
            cut = line.rfind(" ", 0, width)
            cut = cut if cut > indent + 10 else width
            wrapped.append(line[:cut])
            line = " " * (indent + 4) + line[cut:].lstrip()
        wrapped.append(line)
    return wrapped


def draw(title: str, spans: list[Any]) -> str:
    rows = ordered(spans)
    t0 = min(s.start_time for s in spans)
    t1 = max(s.end_time for s in spans)
    span_ns = max(1, t1 - t0)
    plot = WIDTH - LEFT - RIGHT - 130  # room for the note after the longest bar

    def x(t: float) -> float:
        return LEFT + (t - t0) / span_ns * plot

    wrapped = _details(rows)
    top = 56
    chart_height = len(rows) * ROW
    axis_y = top + chart_height + 8
    details_y = axis_y + 40
    height = details_y + len(wrapped) * 15 + 16
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{escape(title)}">',
        "<desc>" + escape("\n".join(f"{d} {s.name}" for d, s in rows)) + "</desc>",
        f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
        f'<text x="16" y="24" style="{FONT};font-size:15px;font-weight:bold">'
        f"{escape(title)}</text>",
        f'<text x="16" y="42" style="{FONT};font-size:11px" fill="#666">rendered from the spans '
        "the OpenTelemetry SDK exported (scripts/trace-picture)</text>",
    ]
    for i, (depth, span) in enumerate(rows):
        y = top + i * ROW
        if i % 2 == 0:
            out.append(f'<rect x="0" y="{y}" width="{WIDTH}" height="{ROW}" fill="#f6f8fa"/>')
        kind = span.kind.name
        out.append(
            f'<text x="{16 + depth * 18}" y="{y + 19}" style="{FONT};font-size:12px">'
            f"{escape(span.name)}</text>"
            f'<text x="{LEFT - 10}" y="{y + 19}" text-anchor="end" '
            f'style="{FONT};font-size:10px" fill="#888">{kind.lower()}</text>'
        )
        colour = COLOURS[kind] if kind in COLOURS else COLOURS["INTERNAL"]
        if span.name.endswith("join_wait"):
            colour = COLOURS["WAIT"]
        if span.status.status_code.name == "ERROR":
            colour = COLOURS["ERROR"]
        left, right = x(span.start_time), max(x(span.end_time), x(span.start_time) + 2)
        out.append(
            f'<rect x="{left:.1f}" y="{y + 7}" width="{right - left:.1f}" height="16" rx="3" '
            f'fill="{colour}"/>'
        )
        out.append(
            f'<text x="{right + 6:.1f}" y="{y + 19}" style="{FONT};font-size:11px">'
            f"{escape(_note(span))}</text>"
        )
        for event in span.events:
            ex = x(event.timestamp)
            a = event.attributes or {}
            delay = float(a.get("avatario.backoff.delay", 0.0))
            end = x(event.timestamp + delay * 1e9)
            out.append(
                f'<rect x="{ex:.1f}" y="{y + 10}" width="{max(end - ex, 1):.1f}" height="10" '
                'fill="#f5b041" fill-opacity="0.85" stroke="#b9770e"/>'
            )
            why = " (Retry-After)" if a.get("avatario.backoff.from_retry_after") else ""
            text = f"backoff {delay:.2f} s{why}" if event.name == "avatario.backoff" else event.name
            out.append(
                f'<text x="{ex + 3:.1f}" y="{y + 5}" style="{FONT};font-size:9px" '
                f'fill="#b9770e">{escape(text)}</text>'
            )
    out.append(f'<line x1="{LEFT}" y1="{axis_y}" x2="{LEFT + plot}" y2="{axis_y}" stroke="#999"/>')
    for k in range(6):
        t = t0 + span_ns * k / 5
        out.append(
            f'<line x1="{x(t):.1f}" y1="{axis_y}" x2="{x(t):.1f}" y2="{axis_y + 4}" '
            'stroke="#999"/>'
            f'<text x="{x(t):.1f}" y="{axis_y + 16}" text-anchor="middle" '
            f'style="{FONT};font-size:10px" fill="#666">{escape(_ms(t - t0))}</text>'
        )
    out.append(
        f'<text x="16" y="{details_y - 6}" style="{FONT};font-size:11px;font-weight:bold">'
        "attributes and events</text>"
    )
    for j, line in enumerate(wrapped):
        out.append(
            f'<text x="16" y="{details_y + 10 + j * 15}" style="{FONT};font-size:10px" '
            f'xml:space="preserve">{escape(line)}</text>'
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="folder for the SVGs")
    parser.add_argument("--quick", action="store_true", help="short waits (for the tests)")
    parser.add_argument("scenario", nargs="*", choices=[*SCENARIOS, []], default=[])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.scenario or list(SCENARIOS):
        title, run = SCENARIOS[name]
        spans = run(args.quick)
        path = args.out / f"trace-{name}.svg"
        path.write_text(draw(title, spans), encoding="utf-8")
        print(f"wrote {path} ({len(spans)} spans)")


if __name__ == "__main__":
    main()
