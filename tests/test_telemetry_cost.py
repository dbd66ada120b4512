"""What telemetry costs when unused, checked in fresh interpreters; and the tools around it.

- Without ``opentelemetry`` (made unimportable) calls work and nothing tries to import it.
- With it installed but unused, neither ``import avatario_wrapper`` nor a call imports it.
- With the API imported and no SDK, a call records nothing; an SDK set as the global provider
  afterwards (the real, process-wide path) is picked up by the next call.
- docs/observability.md's examples run (each in its own interpreter: they set process-wide
  providers); ``scripts/trace-picture`` draws valid SVGs of the same shape as the committed
  ones; ``benchmarks/otel_overhead.py`` runs; ``avatario demo --spans`` prints span trees.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from rich.console import Console

from avatario_wrapper.cli import _demo, _span_tree
from avatario_wrapper.cli._demo import run_demo

from .spec_helpers import ROOT

#: A sync and an async call over httpx.MockTransport, and a warm_up: no socket needed.
CALLS = """
import asyncio, sys, httpx
from avatario_wrapper import AsyncAvatarioClient, AvatarioClient
from avatario_wrapper.telemetry import set_trace_propagation

CALL = dict(avatar_id="a", agent_identity="b", livekit_url="wss://x.example",
            livekit_token="t" * 30)

def answer(request):
    return httpx.Response(200, json={"session_id": "s"}, headers={"x-request-id": "r"})

def calls():
    set_trace_propagation(True)
    transport = httpx.MockTransport(answer)
    with httpx.Client(transport=transport) as http, AvatarioClient(
        "k" * 20, base_url="https://avatario.test", http_client=http
    ) as client:
        client.start_session(**CALL)
        client.warm_up()
        sent = transport

    async def main():
        async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
            async with AsyncAvatarioClient(
                "k" * 20, base_url="https://avatario.test", http_client=http
            ) as client:
                await client.start_session(**CALL)
                await client.warm_up()

    asyncio.run(main())

def otel_modules():
    return sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")
"""


def run(code: str, **env: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", CALLS + code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env={**_env(), **env},
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    for name in list(env):
        if name.startswith(("OTEL_", "AVATARIO_")):
            del env[name]
    return env


def test_without_opentelemetry_calls_work_and_nothing_tries_to_import_it() -> None:
    code = """
import importlib.abc
tried = []

class Unimportable(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "opentelemetry":
            tried.append(name)
            raise ImportError(f"{name} is made unimportable here")
        return None

sys.meta_path.insert(0, Unimportable())
try:
    import opentelemetry.trace
except ImportError:
    pass
else:
    raise AssertionError("opentelemetry was importable")
tried.clear()
import avatario_wrapper, avatario_wrapper.telemetry
calls()
assert tried == [], tried
assert otel_modules() == [], otel_modules()
print("ok")
"""
    assert run(code).strip() == "ok"


def test_installed_but_unused_opentelemetry_is_never_imported() -> None:
    code = """
import importlib.metadata
assert importlib.metadata.version("opentelemetry-api")  # installed
import avatario_wrapper
assert otel_modules() == [], otel_modules()
calls()
assert otel_modules() == [], otel_modules()
print("ok")
"""
    assert run(code).strip() == "ok"


def test_the_api_without_an_sdk_records_nothing_and_a_later_sdk_is_picked_up() -> None:
    code = """
import json
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from avatario_wrapper import _telemetry

calls()  # the API imported, the proxies in place: nobody listens
none = _telemetry.current_tracer() is None

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
calls()
spans = [s.name for s in exporter.get_finished_spans()]
data = reader.get_metrics_data()
names = sorted(m.name for r in data.resource_metrics for s in r.scope_metrics for m in s.metrics)
calls_counted = [
    p.value for r in data.resource_metrics for s in r.scope_metrics for m in s.metrics
    if m.name == "avatario.client.calls" for p in m.data.data_points
]
print(json.dumps({"none": none, "spans": spans, "metrics": names, "calls": sum(calls_counted)}))
"""
    out = json.loads(run(code))
    assert out["none"] is True
    # Only the second round of calls: two start_session and two warm_up, one attempt each.
    assert sorted(out["spans"]) == sorted(
        ["POST", "avatario.start_session", "HEAD", "avatario.warm_up"] * 2
    )
    assert out["metrics"] == [
        "avatario.client.call.attempts",
        "avatario.client.call.duration",
        "avatario.client.calls",
        "http.client.request.duration",
    ]
    assert out["calls"] == 4


def test_a_provider_named_by_the_environment_is_honoured() -> None:
    """OTEL_PYTHON_TRACER_PROVIDER names a provider the API loads on first use: our check
    asks the API for it rather than deciding nobody listens."""
    code = """
from opentelemetry import trace
assert trace._TRACER_PROVIDER is None
calls()
assert type(trace._TRACER_PROVIDER).__name__ == "TracerProvider", trace._TRACER_PROVIDER
print("ok")
"""
    assert run(code, OTEL_PYTHON_TRACER_PROVIDER="sdk_tracer_provider").strip() == "ok"


# -- docs/observability.md ----------------------------------------------------------------------

DOC = ROOT / "docs" / "observability.md"
PY_BLOCK = re.compile(r"^```py\n(.*?)^```", re.DOTALL | re.MULTILINE)


def test_the_service_example_prints_the_spans_and_metrics() -> None:
    service, _ = PY_BLOCK.findall(DOC.read_text())
    result = subprocess.run(
        [sys.executable, "-c", service],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env=_env(),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    names = re.findall(r'"name": "([^"]+)"', result.stdout)
    assert names.count("POST") == 3
    assert "avatario.start_session" in names
    assert "http.client.request.duration" in names  # the metrics, exported at exit
    assert '"avatario.outcome": "started"' in result.stdout


def test_the_livekit_example_runs() -> None:
    pytest.importorskip("livekit.agents")
    _, worker = PY_BLOCK.findall(DOC.read_text())
    code = worker + "\nfrom avatario_wrapper import _telemetry\nprint(_telemetry.current_tracer())"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env=_env(),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # livekit's tracer is the one our spans use once its provider is set.
    assert "_DynamicTracer" in result.stdout


# -- scripts/trace-picture ----------------------------------------------------------------------


def _tree_of(svg: Path) -> list[str]:
    root = ET.parse(svg).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    [desc] = root.findall("{http://www.w3.org/2000/svg}desc")
    return (desc.text or "").splitlines()


@pytest.mark.integration
def test_the_trace_pictures_are_drawn_from_spans_and_the_committed_ones_match(
    tmp_path: Path,
) -> None:
    pytest.importorskip("livekit.agents")
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "trace_picture.py"),
            "--quick",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    expected = {
        "trace-retries.svg": [
            "0 avatario.start_session",
            "1 POST",
            "1 POST",
            "1 POST",
        ],
        "trace-avatar-session.svg": [
            "0 avatario.avatar_session.start",
            "1 avatario.start_session",
            "2 POST",
            "2 avatario.avatar_join_wait",  # a step of the call, beside its attempt
        ],
    }
    for name, tree in expected.items():
        fresh = tmp_path / name
        assert _tree_of(fresh) == tree
        assert _tree_of(ROOT / "docs" / name) == tree  # the committed picture: same shape
        text = fresh.read_text()
        assert "backoff" in text or "join_wait" in text
        assert f"]({name})" in DOC.read_text()


# -- the benchmark and the demo -------------------------------------------------------------------


def test_the_overhead_benchmark_runs() -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "otel_overhead.py"),
            "--calls",
            "20",
            "--rounds",
            "1",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env=_env(),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for arm in ("off (no otel)", "api only, no SDK", "sdk, in-memory", "sdk, global providers"):
        assert arm in result.stdout
    assert "the hook alone" in result.stdout


@pytest.mark.integration
def test_demo_spans_prints_each_scenes_span_tree_without_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    canary = "LEAKCANARY0123456789abcdef"
    monkeypatch.setattr(_demo.secrets, "token_hex", lambda n=None: canary)
    out = io.StringIO()
    assert run_demo(Console(file=out, width=140), spans=True) == 0
    text = out.getvalue()
    assert text.count("avatario.start_session  internal") == 5  # every scene that sent
    assert "resend 2 · HTTP 200" in text  # 503, 503, then service
    assert "backoff 1.00 s (Retry-After)" in text
    assert "spans: none (nothing was sent)" in text  # the blank agent identity
    assert canary not in text


def test_demo_spans_without_the_sdk_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_span_tree, "sdk_installed", lambda: False)
    out = io.StringIO()
    assert run_demo(Console(file=out, width=200), spans=True) == 2
    assert "pip install opentelemetry-sdk" in out.getvalue()
