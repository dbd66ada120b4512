"""Time to avatar in a LiveKit worker: `AvatarSession.start` wall time, ours against the old plugin.

    .venv/bin/python benchmarks/time_to_avatar.py [--processes 7] [--repeats 20] [--out FILE]

Over TLS on loopback: trustme makes a CA and a certificate for 127.0.0.1, `benchmarks/server.py
--tls` serves ``POST .../start-session`` with it, and every measured process trusts the CA the
same way (``SSL_CERT_FILE`` in its environment). Three kinds of worker process, run one at a
time and interleaved (ours, plugin, ours-warm, ours, ...), each a fresh Python:

- ``ours``: `avatario_wrapper.livekit.AvatarSession` as in a job (inside
  ``http_context.open()``, so it sends over the worker's shared aiohttp session);
- ``plugin``: `livekit.plugins.avatario.AvatarSession` (livekit-plugins-avatario 1.8.9), its
  hard-coded ``DEFAULT_API_URL`` pointed at the fake and its ``get_job_context`` answering the
  agent's identity (no job runs here); it opens a new aiohttp session per start;
- ``ours-warm``: ours with ``client=AsyncAvatarioClient(...)`` after ``await
  client.warm_up()`` (untimed, as in a worker's prewarm).

Each process times its first `start` (after imports and setup), then ``--repeats`` more, each
with a new `AvatarSession` and a new real `AgentSession` on a stand-in connected room (no
LiveKit server runs here; see tests/test_livekit.py). Only the ``await avatar.start(...)`` is
timed. Prints a JSON of the medians and the ratios; ``--out`` also writes it (docs/
time-to-avatar.json, which `benchmarks/run.py` renders into docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve()
MODES = ("ours", "plugin", "ours-warm")
API_KEY = "sk_bench_key"
AGENT = "agent-bench"
LK_ENV = {
    "LIVEKIT_URL": "wss://rooms.example.com",
    "LIVEKIT_API_KEY": "APIbenchKEY",
    "LIVEKIT_API_SECRET": "bench_secret_0123456789abcdef0123456789abcdef",
}


# -- the measured process ----------------------------------------------------------------------


async def _worker(mode: str, base_url: str, repeats: int) -> dict[str, Any]:
    from importlib.metadata import version

    from livekit import rtc
    from livekit.agents import AgentSession, utils

    class Participant:
        def __init__(self, identity: str) -> None:
            self.identity = identity
            self.name = identity
            self.kind = rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
            self.state = rtc.ParticipantState.PARTICIPANT_STATE_ACTIVE
            self.attributes: dict[str, str] = {}
            self.track_publications: dict[str, Any] = {}

        def register_rpc_method(self, name: str, handler: Any) -> None:
            pass

    class StandInRoom(rtc.EventEmitter[str]):
        """A connected room (as tests/test_livekit.py's): no LiveKit server runs here."""

        def __init__(self) -> None:
            super().__init__()
            self.name = "room-bench"
            self.local_participant = Participant(AGENT)
            self.remote_participants: dict[str, Participant] = {}

        def isconnected(self) -> bool:
            return True

    client = None
    if mode == "plugin":
        import livekit.plugins.avatario.api as plugin_api
        import livekit.plugins.avatario.avatar as plugin_avatar
        from livekit.plugins.avatario import AvatarSession as PluginSession

        plugin_api.DEFAULT_API_URL = base_url  # hard-coded in the plugin
        job = SimpleNamespace(local_participant_identity=AGENT)
        plugin_avatar.get_job_context = lambda: job  # type: ignore[attr-defined]

        def new_avatar() -> Any:
            return PluginSession(avatar_id="face_1", api_key=API_KEY)
    else:
        from avatario_wrapper import AsyncAvatarioClient
        from avatario_wrapper.livekit import AvatarSession

        if mode == "ours-warm":
            client = AsyncAvatarioClient(API_KEY, base_url=base_url)

            def new_avatar() -> Any:
                return AvatarSession(avatar_id="face_1", client=client)
        else:
            os.environ["AVATARIO_BASE_URL"] = base_url

            def new_avatar() -> Any:
                return AvatarSession(avatar_id="face_1", api_key=API_KEY)

    times = []
    async with utils.http_context.open():  # what a job gives its entrypoint
        if client is not None:
            await client.warm_up()
        for _ in range(1 + repeats):
            avatar = new_avatar()
            session: AgentSession[None] = AgentSession()
            room = StandInRoom()
            started = time.perf_counter()
            await avatar.start(session, room)  # type: ignore[arg-type]
            times.append(time.perf_counter() - started)
            await avatar.aclose()
    if client is not None:
        await client.aclose()
    versions = f"livekit-agents {version('livekit-agents')}, aiohttp {version('aiohttp')}"
    return {"first_s": times[0], "repeat_s": times[1:], "versions": versions}


# -- the driver --------------------------------------------------------------------------------


def _start_server(tmp: Path) -> tuple[subprocess.Popen[str], str, dict[str, str]]:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca_file, cert_file, key_file = tmp / "ca.pem", tmp / "cert.pem", tmp / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "server.py"), "--tls", cert_file, key_file],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    port = server.stdout.readline().split()[1]
    env = {**os.environ, **LK_ENV, "SSL_CERT_FILE": str(ca_file), "PYTHONPATH": str(ROOT)}
    for name in ("SSL_CERT_DIR", "AVATARIO_BASE_URL", "HTTPS_PROXY", "https_proxy"):
        env.pop(name, None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1"
    return server, f"https://127.0.0.1:{port}/api/sdk", env


def _run(python: str, mode: str, url: str, repeats: int, env: dict[str, str]) -> dict[str, Any]:
    command = [python, str(HERE), "--worker", mode, "--url", url, "--repeats", str(repeats)]
    done = subprocess.run(
        command, check=False, env=env, capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise RuntimeError(f"{mode} worker failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _shown(python: str) -> str:
    """The interpreter's path relative to the checkout when it lives in it."""
    path = Path(python).absolute()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else python


def measure(
    ours_python: str, plugin_python: str, processes: int, repeats: int, prime: bool = True
) -> dict[str, Any]:
    pythons = {"ours": ours_python, "plugin": plugin_python, "ours-warm": ours_python}
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        server, url, env = _start_server(Path(tmp))
        try:
            for mode in MODES if prime else ():  # one untimed round: disk caches, .pyc
                _run(pythons[mode], mode, url, 1, env)
            for _ in range(processes):
                for mode in MODES:
                    runs[mode].append(_run(pythons[mode], mode, url, repeats, env))
        finally:
            server.terminate()
            server.wait()

    def ms(seconds: float) -> float:
        return round(seconds * 1000, 3)

    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "processes": processes,
        "repeats": repeats,
        "pythons": {side: _shown(pythons[side]) for side in ("ours", "plugin")},
        "versions": {side: runs[side][0]["versions"] for side in ("ours", "plugin")},
        "modes": {},
    }
    for mode in MODES:
        firsts = [run["first_s"] for run in runs[mode]]
        repeated = [t for run in runs[mode] for t in run["repeat_s"]]
        result["modes"][mode] = {
            "first_ms": {"median": ms(statistics.median(firsts)), "min": ms(min(firsts))},
            "repeat_ms": {"median": ms(statistics.median(repeated)), "min": ms(min(repeated))},
        }
    modes = result["modes"]

    def ratio(a: str, kind: str, b: str) -> float:
        return round(modes[a][kind]["median"] / modes[b][kind]["median"], 3)

    result["ratios"] = {
        "first_ours_vs_plugin": ratio("ours", "first_ms", "plugin"),
        "first_warm_vs_plugin": ratio("ours-warm", "first_ms", "plugin"),
        "repeat_ours_vs_plugin": ratio("ours", "repeat_ms", "plugin"),
        "repeat_warm_vs_plugin": ratio("ours-warm", "repeat_ms", "plugin"),
    }
    result["goals"] = {
        "repeated_starts_le_0.5x_plugin": result["ratios"]["repeat_ours_vs_plugin"] <= 0.5,
        "warm_first_start_le_0.5x_plugin_first": result["ratios"]["first_warm_vs_plugin"] <= 0.5,
    }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=7, help="fresh processes per side")
    parser.add_argument("--repeats", type=int, default=20, help="starts after the first")
    parser.add_argument("--ours-python", default=str(ROOT / ".venv" / "bin" / "python"))
    parser.add_argument(
        "--plugin-python", default=str(ROOT / ".bench" / "plugin" / "bin" / "python")
    )
    parser.add_argument(
        "--no-prime", action="store_true", help="skip the untimed first round (smoke tests)"
    )
    parser.add_argument("--out", help="also write the JSON here (e.g. docs/time-to-avatar.json)")
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(asyncio.run(_worker(args.worker, args.url, args.repeats))))
        return 0
    result = measure(
        args.ours_python, args.plugin_python, args.processes, args.repeats, not args.no_prime
    )
    text = json.dumps(result, indent=2) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
