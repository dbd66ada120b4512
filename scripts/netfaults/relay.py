"""The wire between the lab's two namespaces: a user-space relay between two TUN devices.

    python -m netfaults.relay FD_A FD_B SEED

Every IPv4 packet read from one device is written to the other after the faults in force,
each drawn per packet and per direction from a generator seeded with SEED (so a run's fault
draws repeat; which packets meet them depends on timing):

- ``delay`` seconds each way, ± ``jitter`` (uniform), which reorders packets as netem's does;
- ``loss``: the share of packets dropped;
- ``reorder``: the share sent at once, skipping the delay (netem's ``reorder``);
- ``duplicate``: the share written twice (each copy with its own delay);
- ``blackhole`` seconds during which every packet is dropped, once every ``blackhole_every``
  seconds, the first window at a seeded offset after the faults are set.

Commands on stdin, one JSON object a line: ``{"faults": {...}}`` sets the faults (answer
``ok``), ``{"stats": true}`` prints the counts. The relay exits when stdin closes.
"""

from __future__ import annotations

import heapq
import json
import os
import random
import select
import sys
import time
from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class Faults:
    delay: float = 0.0
    jitter: float = 0.0
    loss: float = 0.0
    reorder: float = 0.0
    duplicate: float = 0.0
    blackhole: float = 0.0
    blackhole_every: float = 0.0
    #: When the first blackhole starts, in seconds from now (0: at a seeded random offset).
    blackhole_after: float = 0.0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Faults:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown faults: {sorted(unknown)}")
        return cls(**{k: float(v) for k, v in data.items()})

    def to_json(self) -> dict[str, float]:
        return asdict(self)


def _is_syn(packet: bytes) -> bool:
    """A TCP SYN without ACK: a connection attempt (a kernel's resend included)."""
    head = (packet[0] & 0x0F) * 4
    return len(packet) > head + 13 and packet[9] == 6 and packet[head + 13] & 0x12 == 0x02


class Relay:
    def __init__(self, fd_a: int, fd_b: int, seed: int) -> None:
        self.peer = {fd_a: fd_b, fd_b: fd_a}
        # Seeded fault draws, not cryptography.
        self.rng = {fd_a: random.Random(seed), fd_b: random.Random(seed + 1)}  # noqa: S311
        self.seed = seed
        self.faults = Faults()
        self.hole_start = 0.0
        self.queue: list[tuple[float, int, int, bytes]] = []
        self.sequence = 0
        self.stats = dict.fromkeys(
            ("packets", "syn", "lost", "blackholed", "duplicated", "reordered", "other"), 0
        )
        for fd in self.peer:
            os.set_blocking(fd, False)

    def set_faults(self, faults: Faults) -> None:
        self.faults = faults
        first = random.Random(self.seed + 2)  # noqa: S311 - a seeded offset
        offset = faults.blackhole_after or first.uniform(0, faults.blackhole_every or 0)
        self.hole_start = time.monotonic() + offset

    def in_blackhole(self, now: float) -> bool:
        f = self.faults
        if f.blackhole <= 0 or f.blackhole_every <= 0 or now < self.hole_start:
            return False
        return (now - self.hole_start) % f.blackhole_every < f.blackhole

    def arrived(self, source: int, packet: bytes, now: float) -> None:
        if not packet or packet[0] >> 4 != 4:  # IPv4 only
            self.stats["other"] += 1
            return
        self.stats["packets"] += 1
        self.stats["syn"] += _is_syn(packet)
        f, rng = self.faults, self.rng[source]
        # Every draw is made for every packet, so a fault's draws do not shift the others'.
        lost, dup, reorder = rng.random(), rng.random(), rng.random()
        if self.in_blackhole(now):
            self.stats["blackholed"] += 1
            return
        if lost < f.loss:
            self.stats["lost"] += 1
            return
        copies = 2 if dup < f.duplicate else 1
        self.stats["duplicated"] += copies - 1
        for copy in range(copies):
            wait = max(0.0, f.delay + (rng.uniform(-f.jitter, f.jitter) if f.jitter else 0.0))
            if copy == 0 and reorder < f.reorder:
                self.stats["reordered"] += 1
                wait = 0.0
            self.sequence += 1
            heapq.heappush(self.queue, (now + wait, self.sequence, self.peer[source], packet))

    def flush(self, now: float) -> None:
        while self.queue and self.queue[0][0] <= now:
            _, _, target, packet = heapq.heappop(self.queue)
            try:
                os.write(target, packet)
            except OSError:  # the device's queue is full or it went away: a lost packet
                self.stats["lost"] += 1

    def run(self, control: int) -> None:
        buffered = b""
        readable = [control, *self.peer]
        while True:
            now = time.monotonic()
            self.flush(now)
            wait = max(0.0, self.queue[0][0] - now) if self.queue else None
            ready, _, _ = select.select(readable, [], [], wait)
            now = time.monotonic()
            for fd in ready:
                if fd == control:
                    data = os.read(control, 65536)
                    if not data:
                        return
                    buffered += data
                    while b"\n" in buffered:
                        line, buffered = buffered.split(b"\n", 1)
                        self.command(json.loads(line))
                    continue
                for _ in range(64):  # drain what is there, without starving the other side
                    try:
                        packet = os.read(fd, 65536)
                    except BlockingIOError:
                        break
                    self.arrived(fd, packet, now)

    def command(self, message: dict[str, Any]) -> None:
        if "faults" in message:
            self.set_faults(Faults.from_json(message["faults"]))
            print("ok", flush=True)
        if message.get("stats"):
            print(json.dumps(self.stats), flush=True)


def main(argv: list[str]) -> int:
    fd_a, fd_b, seed = (int(x) for x in argv[:3])
    Relay(fd_a, fd_b, seed).run(sys.stdin.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
