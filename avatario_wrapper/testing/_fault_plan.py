"""The faults a running fake plays: steps in order, standing chances drawn with a seed.

Thread-safe: the server's thread takes faults while a test (or the control endpoint) changes
them. Each operation draws from its own generator, seeded with ``"{seed}/{operationId}"``, so
the faults one operation meets depend only on the seed and on how many of its own requests
drew, whatever other operations are called meanwhile.
"""

from __future__ import annotations

import itertools
import random
import threading
from collections import deque
from collections.abc import Collection, Iterable

from .faults import Fault, FaultSyntaxError, as_faults, describe_faults

_TOTAL = 100.0


def random_seed() -> int:
    """A seed for a fake given none (shown, so a failing run can be replayed)."""
    return random.SystemRandom().randrange(2**32)


class FaultPlan:
    """The pending steps and the standing chances of one fake, for the operations it serves."""

    def __init__(self, operation_ids: Collection[str], *, seed: int | None = None) -> None:
        self._operation_ids = frozenset(operation_ids)
        self._lock = threading.Lock()
        self._order = itertools.count()
        # Steps by the operation they name (None: any), each tagged with its place in the script.
        self._steps: dict[str | None, deque[tuple[int, Fault]]] = {}
        self._chances: list[Fault] = []
        self._seed = random_seed() if seed is None else seed
        self._generators: dict[str, random.Random] = {}

    @property
    def seed(self) -> int:
        with self._lock:
            return self._seed

    @property
    def pending(self) -> int:
        """How many steps are left to play (standing chances are not counted)."""
        with self._lock:
            return sum(len(queue) for queue in self._steps.values())

    @property
    def script(self) -> str:
        """What is left, in the script grammar: the pending steps in order, then the chances."""
        with self._lock:
            steps = sorted(itertools.chain(*self._steps.values()), key=lambda item: item[0])
            return describe_faults([fault for _, fault in steps] + self._chances)

    def add(self, faults: str | Iterable[Fault] | None) -> None:
        """Queue more steps and add more chances."""
        checked = self._checked(faults)
        with self._lock:
            self._check_total(self._chances + [f for f in checked if f.chance is not None])
            self._append(checked)

    def replace(self, faults: str | Iterable[Fault] | None, *, seed: int | None = None) -> None:
        """Put `faults` in place of every step and chance; the draws restart from the seed
        (`seed`, or the current one)."""
        checked = self._checked(faults)
        with self._lock:
            self._check_total([f for f in checked if f.chance is not None])
            self._steps.clear()
            self._chances.clear()
            if seed is not None:
                self._seed = seed
            self._generators.clear()
            self._append(checked)

    def clear(self) -> None:
        """Drop every pending step and every chance."""
        with self._lock:
            self._steps.clear()
            self._chances.clear()

    def take(self, operation_id: str) -> Fault | None:
        """The fault a request to `operation_id` meets now, if any.

        The oldest pending step naming that operation (or none) is played; without one, the
        chances that apply are drawn.
        """
        with self._lock:
            mine = self._steps.get(operation_id)
            anyone = self._steps.get(None)
            heads = [queue for queue in (mine, anyone) if queue]
            if heads:
                queue = min(heads, key=lambda q: q[0][0])
                return queue.popleft()[1]
            chances = [f for f in self._chances if f.operation in (None, operation_id)]
            if not chances:
                return None
            generator = self._generators.get(operation_id)
            if generator is None:
                generator = random.Random(f"{self._seed}/{operation_id}")  # noqa: S311 - test faults
                self._generators[operation_id] = generator
            draw = generator.random() * _TOTAL
            for fault in chances:
                assert fault.chance is not None
                draw -= fault.chance
                if draw < 0:
                    return fault
            return None

    # -- helpers (the lock is held by the caller where it says so) ----------------------------

    def _checked(self, faults: str | Iterable[Fault] | None) -> list[Fault]:
        checked = as_faults(faults)
        for fault in checked:
            if fault.operation is not None and fault.operation not in self._operation_ids:
                known = ", ".join(sorted(self._operation_ids)) or "none"
                raise FaultSyntaxError(
                    f"{fault.describe()!r}: the spec has no operation {fault.operation!r} "
                    f"(its operations: {known})"
                )
        return checked

    def _check_total(self, chances: list[Fault]) -> None:
        for operation_id in sorted(self._operation_ids):
            total = sum(f.chance or 0 for f in chances if f.operation in (None, operation_id))
            if total > _TOTAL + 1e-9:
                raise FaultSyntaxError(
                    f"the chances for {operation_id} add up to {total:g}% (at most 100%)"
                )

    def _append(self, faults: list[Fault]) -> None:  # the lock is held
        for fault in faults:
            if fault.chance is not None:
                self._chances.append(fault)
            else:
                queue = self._steps.setdefault(fault.operation, deque())
                queue.append((next(self._order), fault))
