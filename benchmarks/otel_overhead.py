"""What OpenTelemetry costs a call: the figures in docs/observability.md.

    .venv/bin/python benchmarks/otel_overhead.py               # the figures in the docs
    .venv/bin/python benchmarks/otel_overhead.py --calls 500   # a quick look

A warm, in-memory loop of sync ``start_session`` calls (one `AvatarioClient` over an
`httpx.MockTransport` that answers 200 at once: no socket, so the telemetry is a large share
of what is measured), timed in three arms side by side, interleaved round by round so drift
and noise fall on every arm alike:

- **off**: the hook forced off (``avatario_wrapper.telemetry.set_enabled(False)``), which is
  what a process without ``opentelemetry-api`` runs: `start_call` returns None at once;
- **api**: ``opentelemetry.trace`` and ``opentelemetry.metrics`` imported, no SDK configured
  (the global providers are the API's proxies): the per-call check finds nobody listening;
- **sdk**: an SDK `TracerProvider` exporting every span to an `InMemorySpanExporter` through a
  `SimpleSpanProcessor` (exported in-line, the dearest set-up) and an SDK `MeterProvider` with
  an `InMemoryMetricReader`: two spans and four measurements per call.

Each arm's timed calls follow a few untimed ones in the same arm, so what the previous arm
left in the caches (the sdk arm's spans) is not charged to it. The sdk arm hands its
providers to the package directly (the in-process switch tests use) so
the three arms can alternate in one process; a last, separate run sets them as the real global
providers to show that path costs the same. The hook's own cost with nobody listening is also
timed alone (``start_call`` on a prepared request), where the whole-call difference is within
noise. Reported: the median over rounds of CPU microseconds per call (the thread's
CPU time, which other work on a shared machine moves less than the wall clock), each arm
against **off** as a difference and a ratio, and the median of each round's difference to the
**off** arm of the same round (drift between rounds cancels out).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from avatario_wrapper import AvatarioClient, _telemetry  # noqa: E402
from avatario_wrapper._operations import START_SESSION  # noqa: E402
from avatario_wrapper._request import prepare  # noqa: E402
from avatario_wrapper.telemetry import set_enabled  # noqa: E402

KEY = "bench-key-0123456789"
CALL: dict[str, Any] = {
    "avatar_id": "face_1",
    "agent_identity": "agent-7",
    "livekit_url": "wss://rooms.example.com",
    "livekit_token": "header.payload.signature",
}
BODY = b'{"session_id":"sess_1"}'


def answer(request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        200,
        content=BODY,
        headers={"content-type": "application/json", "x-request-id": "req_1"},
    )


def per_call(client: AvatarioClient, calls: int) -> float:
    """CPU microseconds per call over `calls` calls (garbage collection held off meanwhile).

    The thread's CPU time, not the wall clock: on a machine shared with other work the wall
    clock also counts the time others ran; the CPU time counts only this loop's own work.
    """
    gc.collect()
    gc.disable()
    try:
        began = time.thread_time()
        for _ in range(calls):
            client.start_session(**CALL)
        return (time.thread_time() - began) / calls * 1e6
    finally:
        gc.enable()


def sdk_providers() -> tuple[Any, Any, Callable[[], None]]:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])

    def drain() -> None:
        exporter.clear()
        reader.get_metrics_data()

    return tracer_provider, meter_provider, drain


def hook_alone(client: AvatarioClient, rounds: int, calls: int) -> float:
    """Nanoseconds per `start_call` that finds nobody listening (API imported, no SDK)."""
    request = prepare(client._settings, START_SESSION, CALL)
    start_call = _telemetry.start_call
    times = []
    for _ in range(rounds):
        began = time.thread_time()
        for _ in range(calls):
            start_call(request)
        times.append((time.thread_time() - began) / calls * 1e9)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500, help="calls per arm per round")
    parser.add_argument("--rounds", type=int, default=60)
    args = parser.parse_args()

    import opentelemetry.metrics
    import opentelemetry.trace  # the api arm: imported, no SDK

    assert isinstance(
        opentelemetry.trace.get_tracer_provider(), opentelemetry.trace.ProxyTracerProvider
    )
    tracer_provider, meter_provider, drain = sdk_providers()

    def arm_off() -> None:
        set_enabled(False)

    def arm_api() -> None:
        set_enabled(True)
        _telemetry.set_providers(None, None)

    def arm_sdk() -> None:
        set_enabled(True)
        _telemetry.set_providers(tracer_provider, meter_provider)

    arms: dict[str, Callable[[], None]] = {"off": arm_off, "api": arm_api, "sdk": arm_sdk}
    results: dict[str, list[float]] = {name: [] for name in arms}
    transport = httpx.MockTransport(answer)
    with (
        httpx.Client(transport=transport) as http,
        AvatarioClient(KEY, base_url="https://avatario.test/api/sdk", http_client=http) as client,
    ):
        for setup in arms.values():  # warm every path once
            setup()
            per_call(client, 200)
        order = list(arms)
        for round_number in range(args.rounds):
            # Each round starts with another arm, so none always runs first (or last).
            shift = round_number % len(order)
            for name in order[shift:] + order[:shift]:
                arms[name]()
                per_call(client, args.calls // 5)  # untimed: settle after the previous arm
                results[name].append(per_call(client, args.calls))
                drain()
        set_enabled(True)
        _telemetry.set_providers(None, None)
        nobody = hook_alone(client, args.rounds, 20000)
        # The real global path, last (a global provider cannot be unset).
        opentelemetry.trace.set_tracer_provider(tracer_provider)
        opentelemetry.metrics.set_meter_provider(meter_provider)
        per_call(client, 200)
        global_sdk = []
        for _ in range(args.rounds):
            global_sdk.append(per_call(client, args.calls))
            drain()

    medians = {name: statistics.median(values) for name, values in results.items()}
    base = medians["off"]
    # Each round's difference to the off arm of the same round, then their median: drift
    # between rounds cancels out.
    paired = {
        name: statistics.median(v - o for v, o in zip(values, results["off"], strict=True))
        for name, values in results.items()
    }
    print(
        f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"{platform.processor() or platform.platform()}"
    )
    print(f"{args.rounds} rounds x {args.calls} calls per arm; median of rounds; CPU µs per call")
    print(f"{'arm':<24}{'µs/call':>9}{'vs off':>9}{'ratio':>7}{'paired':>9}")
    for name, value in medians.items():
        label = {"off": "off (no otel)", "api": "api only, no SDK", "sdk": "sdk, in-memory"}[name]
        print(
            f"{label:<24}{value:>9.1f}{value - base:>+9.1f}{value / base:>7.2f}"
            f"{paired[name]:>+9.1f}"
        )
    glob = statistics.median(global_sdk)
    print(f"{'sdk, global providers':<24}{glob:>9.1f}{glob - base:>+9.1f}{glob / base:>7.2f}")
    print(f"the hook alone, nobody listening: {nobody:.0f} ns per call")
    print("paired: the median of each round's difference to the off arm of the same round")


if __name__ == "__main__":
    main()
