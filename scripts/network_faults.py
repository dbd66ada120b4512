"""Real network faults: every transport, and the old plugin, through the kernel's TCP stack.

    scripts/network-faults                      # the full matrix and the connect-timeout
                                                # measurement; writes docs/reliability.md's
                                                # network-faults section (~6 minutes)
    scripts/network-faults --quick --out DIR    # a short run (under 2 minutes); the tests
    scripts/network-faults --check              # can this machine run it? (exit 0, or 3 and why)
    scripts/network-faults --hedging            # hedged connects (issue 31): 20 % loss with a
                                                # fresh client per call, a 3 s blackhole, a
                                                # sustained one; writes its own section

The client and the fake Avatario (ignoring ``Idempotency-Key``) sit in two network namespaces
joined by a user-space relay between two TUN devices (`netfaults.lab`, `netfaults.relay`),
which delays, jitters, drops, reorders, duplicates and blackholes packets. Each call has its
own avatar id, so the fake's sessions are matched to calls; once the run is over and no
request has arrived for a while, every call of this project's clients is held to:

- at most one session;
- a result only with a session; an error with ``may_have_started=False`` only without one;
- typed errors only (every exception an `AvatarioError`);
- the call ends at most ``--overshoot-limit`` (50 ms) past its deadline (`max_elapsed`).

The old plugin (livekit-plugins-avatario 1.8.9, in .bench/plugin, made by scripts/bench or by
scripts/network-faults) makes the same calls on the same faults; its figures are reported,
not held to anything. The connect-timeout measurement makes calls on fresh connections at
20 % loss with a 2 s deadline, with ``connect_timeout=None`` and with the client's default
(where the client has the parameter; feature-detected).
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import json
import os
import platform
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netfaults.lab import Lab, why_unavailable
from netfaults.node import SERVER_NAME
from netfaults.relay import Faults
from netfaults.report import update

ROOT = Path(__file__).resolve().parent.parent
KEY = "network-faults-key-0001"
DEADLINE = 2.0
TRANSPORTS = ("sync", "async-aiohttp", "async-httpx")
UNAVAILABLE = 3
#: The transports on their own pools (the async client over httpx where aiohttp is absent).
OWN_POOLS = ("sync", "async-aiohttp", "async-httpx-own")
#: The server's host name in the hedging run: a client reaches Avatario by name.
LAB_NAME = SERVER_NAME
DEFAULT_MAX_ELAPSED = 30.0  # RetryPolicy's default deadline


@dataclass(frozen=True)
class Row:
    name: str
    faults: Faults


FULL_ROWS = (
    Row("clean", Faults()),
    Row("50 ms ± 20 ms each way", Faults(delay=0.05, jitter=0.02)),
    Row("5 % loss each way", Faults(loss=0.05)),
    Row("20 % loss each way", Faults(loss=0.20)),
    Row("reordering: 25 % of packets skip a 10 ms delay", Faults(delay=0.01, reorder=0.25)),
    Row(
        "duplication: 10 % of packets twice (5 ± 5 ms)",
        Faults(delay=0.005, jitter=0.005, duplicate=0.10),
    ),
    Row("1.5 s blackhole every 5 s", Faults(blackhole=1.5, blackhole_every=5.0)),
)
# The short run's blackhole comes every 3 s, so its few calls (2.4 s) surely meet one.
QUICK_ROWS = (
    FULL_ROWS[1],
    FULL_ROWS[3],
    Row("1.5 s blackhole every 3 s", Faults(blackhole=1.5, blackhole_every=3.0)),
)


def has_connect_timeout() -> bool:
    from avatario_wrapper import AvatarioClient  # noqa: PLC0415

    return "connect_timeout" in inspect.signature(AvatarioClient).parameters


class Run:
    """The lab, and every call made in it, by avatar id."""

    def __init__(self, lab: Lab, plugin_python: str | None) -> None:
        self.lab = lab
        self.plugin_python = plugin_python
        self.calls: dict[str, dict[str, Any]] = {}  # avatar id: the call's record

    def calls_of(self, kind: str, prefix: str, spec: dict[str, Any]) -> list[dict[str, Any]]:
        spec = {"url": self.lab.url, "key": KEY, "prefix": prefix, **spec}
        if kind == "plugin":
            assert self.plugin_python is not None
            argv = [self.plugin_python, "-m", "netfaults.plugin_calls", json.dumps(spec)]
        else:
            spec["transport"] = kind
            argv = [sys.executable, "-m", "netfaults.calls", json.dumps(spec)]
        # The plugin has no deadline: 3 attempts of up to 10 s and 2 s sleeps each call.
        limit = 60.0 + int(spec["calls"]) * (40.0 if kind == "plugin" else DEADLINE + 1.0)
        out = self.lab.run_in_client(argv, timeout=limit)
        records = [json.loads(line) for line in out.splitlines() if line.strip()]
        if len(records) != int(spec["calls"]):
            raise RuntimeError(f"{kind}: {len(records)} records for {spec['calls']} calls")
        for record in records:
            record["kind"] = kind
            record["deadline"] = None if kind == "plugin" else float(spec["max_elapsed"])
            self.calls[record["id"]] = record
        return records


def matrix(run: Run, rows: tuple[Row, ...], calls: int, spacing: float) -> list[dict[str, Any]]:
    kinds = [*TRANSPORTS, *(["plugin"] if run.plugin_python else [])]
    results = []
    for number, row in enumerate(rows):
        run.lab.set_faults(row.faults)
        before = run.lab.relay_stats()
        started = time.monotonic()
        ids: dict[str, list[str]] = {}
        for kind in kinds:
            spec = {
                "calls": calls,
                "spacing": spacing,
                "concurrency": 4,
                "max_elapsed": DEADLINE,
                "fresh": False,
                "connect_timeout": "default",
            }
            records = run.calls_of(kind, f"face_m{number}_{kind}", spec)
            ids[kind] = [r["id"] for r in records]
            print(f"  {row.name}: {kind} done", file=sys.stderr)
        after = run.lab.relay_stats()
        results.append(
            {
                "row": row.name,
                "faults": row.faults.to_json(),
                "ids": ids,
                "seconds": time.monotonic() - started,
                "packets": after["packets"] - before["packets"],
                "dropped": sum(after[k] - before[k] for k in ("lost", "blackholed")),
            }
        )
    return results


def connect_measurement(run: Run, calls: int) -> dict[str, Any]:
    """Fresh connections at 20 % loss, `DEADLINE` s: connect_timeout=None, then the default."""
    run.lab.set_faults(Faults(loss=0.20))
    available = has_connect_timeout()
    variants = ["none", "default"] if available else ["none"]
    ids: dict[str, dict[str, list[str]]] = {}
    for variant in variants:
        ids[variant] = {}
        for kind in TRANSPORTS:
            spec = {
                "calls": calls,
                "concurrency": 20,
                "max_elapsed": DEADLINE,
                "fresh": True,
                "connect_timeout": variant,
            }
            records = run.calls_of(kind, f"face_c{variant}_{kind}", spec)
            ids[variant][kind] = [r["id"] for r in records]
            print(f"  connect_timeout={variant}: {kind} done", file=sys.stderr)
    return {"available": available, "ids": ids}


@dataclass(frozen=True)
class HedgeRow:
    name: str
    faults: Faults
    spec: dict[str, Any]


def hedge_rows(calls: int, blip_calls: int, outage_seconds: float) -> tuple[HedgeRow, ...]:
    """The hedging run's rows: each on every own-pool transport, the faults set afresh."""
    hole = 1e6  # longer than any run: one blackhole, from `blackhole_after` on
    return (
        HedgeRow(
            "20 % loss each way, a fresh client per call, 20 at a time, `max_elapsed=2`",
            Faults(loss=0.20),
            {"calls": calls, "concurrency": 20, "max_elapsed": DEADLINE, "fresh": True},
        ),
        HedgeRow(
            "a 3 s blackhole 1 s in, one client starting a call every 50 ms, default policy",
            Faults(blackhole=3.0, blackhole_every=hole, blackhole_after=1.0),
            {
                "calls": blip_calls,
                "spacing": 0.05,
                "concurrency": blip_calls,
                "max_elapsed": DEFAULT_MAX_ELAPSED,
                "policy": "default",
                "fresh": False,
            },
        ),
        HedgeRow(
            f"a sustained blackhole ({outage_seconds:g} s of calls), one client starting a call "
            "every 50 ms, `max_elapsed=2`",
            Faults(blackhole=hole, blackhole_every=2 * hole, blackhole_after=0.001),
            {
                "calls": int(outage_seconds / 0.05),
                "spacing": 0.05,
                "concurrency": int(outage_seconds / 0.05),
                "max_elapsed": DEADLINE,
                "fresh": False,
            },
        ),
    )


def hedging(run: Run, rows: tuple[HedgeRow, ...]) -> list[dict[str, Any]]:
    results = []
    for number, row in enumerate(rows):
        for kind in OWN_POOLS:
            run.lab.set_faults(row.faults)
            before = run.lab.relay_stats()
            spec = {**row.spec, "connect_timeout": "default", "name": LAB_NAME}
            records = run.calls_of(kind, f"face_h{number}_{kind}", spec)
            after = run.lab.relay_stats()
            run.lab.set_faults(Faults())
            results.append(
                {
                    "row": row.name,
                    "kind": kind,
                    "ids": [r["id"] for r in records],
                    "syn": after["syn"] - before["syn"],
                    "dropped": sum(after[k] - before[k] for k in ("lost", "blackholed")),
                }
            )
            print(f"  {row.name}: {kind} done", file=sys.stderr)
    return results


def render_hedging(
    results: list[dict[str, Any]],
    calls: dict[str, dict[str, Any]],
    *,
    seed: int,
    wall: float,
    before: dict[str, Any] | None,
    before_label: str,
) -> tuple[str, list[str]]:
    """The section; `before`: an earlier run's ``--json`` records, shown beside (the code
    before a change, say)."""
    broken: list[str] = []
    table = [
        "| faults | client | successes | errors (type, outcome) | requests / sessions "
        "| SYNs sent per call (resends included) | worst overshoot past the deadline "
        f"| {before_label}: successes, SYNs per call |",
        "|" + " --- |" * 8,
    ]
    earlier = {(r["row"], r["kind"]): r for r in (before or {}).get("rows", [])}
    shown = ""
    for result in results:
        s = _summary([calls[i] for i in result["ids"]])
        broken += s["broken"]
        faults = result["row"] if result["row"] != shown else ""
        shown = result["row"]
        table.append(
            f"| {faults} | {result['kind']} | {_rate(s['ok'], s['calls'])} "
            f"| {_errors_cell(s['errors'])} | {s['requests']} / {s['sessions']} "
            f"| {result['syn'] / s['calls']:.2f} | {s['worst_overshoot'] * 1000:+.0f} ms "
            f"| {_earlier(earlier.get((result['row'], result['kind'])), before)} |"
        )
    lines = [
        "## Hedged connects",
        "",
        f"Measured {datetime.date.today().isoformat()} on {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, Linux {platform.release()}, by "
        f"`scripts/network-faults --hedging` (seed {seed}, {wall / 60:.1f} minutes), in the "
        "lab of the section above, each transport on its own pool (`async-httpx-own`: "
        "`AsyncAvatarioClient` with aiohttp not installed), the server called by a host name "
        f"(`{LAB_NAME}`, resolved in the client's process). SYNs are counted at the relay: "
        "every connection attempt, and every resend of one by the kernel. The last column is "
        f"an earlier run (`--before`): {before_label}.",
        "",
        *table,
        "",
        f"Broken invariants: {len(broken)}"
        + (f" ({'; '.join(broken[:8])})" if broken else "")
        + ".",
    ]
    return "\n".join(lines), broken


def _rate(ok: int, calls: int) -> str:
    return f"{ok} / {calls} ({100 * ok / calls:.1f} %)"


def _earlier(result: dict[str, Any] | None, before: dict[str, Any] | None) -> str:
    if result is None or before is None:
        return "–"
    records = [before["calls"][i] for i in result["ids"]]
    ok = sum(1 for r in records if r["ok"])
    return f"{_rate(ok, len(records))}, {result['syn'] / len(records):.2f}"


def judge(
    calls: dict[str, dict[str, Any]], counts: dict[str, dict[str, int]], overshoot_limit: float
) -> None:
    """Add each call's sessions, requests and broken invariants to its record."""
    for avatar, record in calls.items():
        record["sessions"] = counts["sessions"].get(avatar, 0)
        record["requests"] = counts["requests"].get(avatar, 0)
        broken = []
        if record["kind"] != "plugin":
            if record["sessions"] > 1:
                broken.append(f"{record['sessions']} sessions")
            if record["ok"] and record["sessions"] == 0:
                broken.append("a result, but no session")
            if not record["ok"] and not record.get("typed"):
                broken.append(f"untyped {record['error']}")
            if not record["ok"] and not record.get("may_have_started") and record["sessions"]:
                broken.append("may_have_started=False, but a session started")
            record["overshoot"] = record["elapsed"] - record["deadline"]
            if record["overshoot"] > overshoot_limit:
                broken.append(f"ended {record['overshoot'] * 1000:.0f} ms past its deadline")
        record["broken"] = broken


def _summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    errors: Counter[str] = Counter()
    for r in records:
        if not r["ok"]:
            errors[f"{r['error']}, {r['outcome']}" if r.get("outcome") else r["error"]] += 1
    plugin = bool(records) and records[0]["kind"] == "plugin"
    return {
        "calls": len(records),
        "ok": sum(1 for r in records if r["ok"]),
        "errors": dict(errors),
        "requests": sum(r["requests"] for r in records),
        "sessions": sum(r["sessions"] for r in records),
        "doubles": sum(1 for r in records if r["sessions"] > 1),
        "worst_overshoot": None if plugin else max(r["overshoot"] for r in records),
        "longest": max(r["elapsed"] for r in records),
        "broken": [f"{r['id']}: {', '.join(r['broken'])}" for r in records if r["broken"]],
    }


def _errors_cell(errors: dict[str, int]) -> str:
    return "; ".join(f"{k} ×{v}" for k, v in sorted(errors.items(), key=lambda e: -e[1])) or "–"


def render(
    rows: list[dict[str, Any]],
    connect: dict[str, Any] | None,
    calls: dict[str, dict[str, Any]],
    *,
    quick: bool,
    seed: int,
    overshoot_limit: float,
    plugin_note: str,
    wall: float,
    spacing: float,
) -> tuple[str, list[str]]:
    """The markdown section, and every broken invariant."""
    broken: list[str] = []
    table = [
        "| faults | client | calls | successes | errors (type, outcome) | requests / sessions "
        "| calls with 2+ sessions | worst overshoot past the 2 s deadline |",
        "|" + " --- |" * 8,
    ]
    for row in rows:
        faults = f"{row['row']} ({row['packets']:,} packets, {row['dropped']:,} dropped)"
        for kind, ids in row["ids"].items():
            s = _summary([calls[i] for i in ids])
            broken += s["broken"]
            if kind == "plugin":
                slow = sum(1 for i in ids if calls[i]["elapsed"] > DEADLINE)
                over = f"no deadline; longest call {s['longest']:.1f} s, {slow} over {DEADLINE:g} s"
                client = "old plugin 1.8.9"
            else:
                worst = s["worst_overshoot"]
                # Signed: -10 ms is a call that gave up 10 ms before its deadline.
                over = f"{worst * 1000:+.0f} ms" if worst > -0.1 else "– (none came near it)"
                client = kind
            table.append(
                f"| {faults} | {client} | {s['calls']} | {s['ok']} | {_errors_cell(s['errors'])} "
                f"| {s['requests']} / {s['sessions']} | {s['doubles']} | {over} |"
            )
            faults = ""
    lines = [
        "## Real network faults",
        "",
        f"Measured {datetime.date.today().isoformat()} on {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, Linux {platform.release()}, by "
        f"`scripts/network-faults{' --quick' if quick else ''}` (seed {seed}, "
        f"{wall / 60:.1f} minutes).",
        "",
        "The client and the fake Avatario (ignoring `Idempotency-Key`, so every request it "
        "serves starts a session) run in two network namespaces joined by a user-space relay "
        "between two TUN devices (`scripts/netfaults/`): every call goes through the "
        "kernel's own TCP stack (SYN and data retransmission, RTO backoff) and the relay "
        "applies the faults to each IPv4 packet, each way, drawn from a seeded generator. "
        "The kernel here has no netem; the relay plays its delay, jitter, loss, reorder and "
        "duplicate, and a timed blackhole (every packet dropped for a window). Each row: "
        "the three transports one after the other (`AvatarioClient`; `AsyncAvatarioClient` "
        "over aiohttp; `AsyncAvatarioClient(http_client=httpx.AsyncClient())`), each one "
        "client making its calls 4 at a time over keep-alive connections, one starting every "
        f"{spacing:g} s, with "
        f"`RetryPolicy(max_elapsed={DEADLINE:g})` and the default `timeout`, then the old "
        f"plugin the same way. {plugin_note}",
        "",
        "Every call has its own avatar id, so sessions are matched to calls once no request "
        "has arrived for 2 s (a request a client gave up on can still be in its kernel's send "
        "queue). Each call of this project's clients is held to: at most one session, a "
        "result only with a session, `may_have_started=False` only when no session started, "
        "typed errors only, and an end at most "
        f"{overshoot_limit * 1000:.0f} ms past its deadline.",
        "",
        *table,
    ]
    if connect is not None:
        lines += ["", *_connect_lines(connect, calls, broken)]
    lines += [
        "",
        f"Broken invariants: {len(broken)}"
        + (f" ({'; '.join(broken[:8])})" if broken else "")
        + ".",
    ]
    return "\n".join(lines), broken


def _connect_lines(
    connect: dict[str, Any], calls: dict[str, dict[str, Any]], broken: list[str]
) -> list[str]:
    lines = [
        "### A lost SYN against a 2 s deadline (connect timeout)",
        "",
        "Linux retransmits a lost SYN after 1 s and again 2 s later, so at 20 % loss one "
        "call in five loses its first SYN and one in twenty-five its second. Each call here "
        "opens a fresh connection (a fresh client, made before the calls start), 20 calls at "
        f"a time, with `RetryPolicy(max_elapsed={DEADLINE:g})`, with `connect_timeout=None` "
        "(only the attempt's timeout bounds connecting: the client's behaviour before the "
        "parameter) and with the client's default.",
        "",
        "| transport | connect_timeout=None: successes | errors | worst overshoot "
        "| default: successes | errors | worst overshoot |",
        "|" + " --- |" * 7,
    ]
    for kind in TRANSPORTS:
        cells = []
        for variant in ("none", "default"):
            ids = connect["ids"].get(variant, {}).get(kind)
            if ids is None:
                cells += ["not in this build (no `connect_timeout` parameter yet)", "–", "–"]
                continue
            s = _summary([calls[i] for i in ids])
            broken += s["broken"]
            rate = 100 * s["ok"] / s["calls"]
            cells += [
                f"{s['ok']} / {s['calls']} ({rate:.1f} %)",
                _errors_cell(s["errors"]),
                f"{s['worst_overshoot'] * 1000:+.0f} ms",
            ]
        lines.append(f"| {kind} | {' | '.join(cells)} |")
    return lines


def _plugin(args: argparse.Namespace) -> tuple[str | None, str]:
    if args.no_plugin:
        return None, "The old plugin was left out of this run (`--no-plugin`)."
    python = Path(args.plugin_python)
    if not python.exists():
        return None, (
            f"The old plugin was not run: no {python} (scripts/bench, or scripts/network-faults "
            "without --quick, makes it)."
        )
    return str(python), (
        "The old plugin runs in its own environment (.bench/plugin), its hard-coded production "
        "URL pointed at the lab's fake as benchmarks/workloads.py does; it has no deadline, "
        "so its longest call is shown instead of an overshoot."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (the tests)")
    parser.add_argument("--check", action="store_true", help="only say whether a lab can run")
    parser.add_argument("--out", default=str(ROOT / "docs"), help="where reliability.md is")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--calls", type=int, help="calls per row and client (60; quick 8)")
    parser.add_argument(
        "--connect-calls", type=int, help="calls per transport and variant (200; quick 10)"
    )
    parser.add_argument("--overshoot-limit", type=float, default=0.05, help="seconds")
    parser.add_argument(
        "--plugin-python", default=str(ROOT / ".bench" / "plugin" / "bin" / "python")
    )
    parser.add_argument("--no-plugin", action="store_true")
    parser.add_argument("--json", help="also write every call's record to this file")
    parser.add_argument("--hedging", action="store_true", help="only the hedged-connects run")
    parser.add_argument("--blip-calls", type=int, default=100, help="calls in the 3 s blackhole")
    parser.add_argument(
        "--outage-seconds", type=float, default=10.0, help="the sustained blackhole's calls"
    )
    parser.add_argument("--before", help="an earlier --hedging run's --json, shown beside")
    parser.add_argument("--before-label", default="none given", help="what --before ran")
    args = parser.parse_args()
    reason = why_unavailable()
    if args.check or reason is not None:
        print(reason or "this machine can run scripts/network-faults")
        return UNAVAILABLE if reason is not None else 0
    calls = args.calls or (8 if args.quick else 60)
    connect_calls = args.connect_calls or (10 if args.quick else 200)
    spacing = 0.3 if args.quick else 0.1  # 8 calls over 2.4 s; 60 over 6 s
    if args.hedging:
        return _hedging_main(args)
    plugin_python, plugin_note = _plugin(args)
    started = time.monotonic()
    with Lab(seed=args.seed, api_key=KEY) as lab:
        print(f"lab up: {lab.url}", file=sys.stderr, flush=True)
        run = Run(lab, plugin_python)
        rows = matrix(run, QUICK_ROWS if args.quick else FULL_ROWS, calls, spacing)
        connect = connect_measurement(run, connect_calls)
        lab.set_faults(Faults())
        counts = lab.settle()
    judge(run.calls, counts, args.overshoot_limit)
    section, broken = render(
        rows,
        connect,
        run.calls,
        quick=args.quick,
        seed=args.seed,
        overshoot_limit=args.overshoot_limit,
        plugin_note=plugin_note,
        wall=time.monotonic() - started,
        spacing=spacing,
    )
    return _written(args, "network-faults", section, broken, {"rows": rows, "calls": run.calls})


def _hedging_main(args: argparse.Namespace) -> int:
    started = time.monotonic()
    rows = hedge_rows(args.calls or 300, args.blip_calls, args.outage_seconds)
    with Lab(seed=args.seed, api_key=KEY) as lab:
        print(f"lab up: {lab.url}", file=sys.stderr, flush=True)
        run = Run(lab, None)
        results = hedging(run, rows)
        counts = lab.settle()
    judge(run.calls, counts, args.overshoot_limit)
    section, broken = render_hedging(
        results,
        run.calls,
        seed=args.seed,
        wall=time.monotonic() - started,
        before=json.loads(Path(args.before).read_text()) if args.before else None,
        before_label=args.before_label,
    )
    return _written(args, "hedged-connects", section, broken, {"rows": results, "calls": run.calls})


def _written(
    args: argparse.Namespace, name: str, section: str, broken: list[str], records: Any
) -> int:
    """The section written into reliability.md (and the records to --json); the exit code."""
    path = Path(args.out) / "reliability.md"
    update(path, {name: section})
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1))
    print(section)
    print(f"wrote {path}; broken invariants: {len(broken)}", file=sys.stderr)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
