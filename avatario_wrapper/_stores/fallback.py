"""When a shared store cannot be used: its operations go to a fallback for a while, and one
WARNING says so per outage (not one per call); an INFO says when the shared store is back."""

from __future__ import annotations

import logging
import threading

from .._clock import Clock

logger = logging.getLogger("avatario_wrapper")


class Outage:
    """Whether a shared store may be tried now, and the one WARNING when it fails."""

    def __init__(self, what: str, instead: str, recheck_after: float, clock: Clock) -> None:
        self._what = what  # e.g. "the host-wide store /run/user/1000/avatario/budget.sqlite3"
        self._instead = instead  # e.g. "this process's own budget"
        self._recheck_after = recheck_after
        self._clock = clock
        self._lock = threading.Lock()
        self._until: float | None = None  # on the monotonic clock: when to try again
        self._warned = False

    @property
    def down(self) -> bool:
        """True while operations should go to the fallback without trying the store."""
        until = self._until
        return until is not None and self._clock.monotonic() < until

    def failed(self, reason: str) -> None:
        """The store just failed (`reason`: one line, no secret): fall back for a while."""
        with self._lock:
            self._until = self._clock.monotonic() + self._recheck_after
            if self._warned:
                return
            self._warned = True
        logger.warning(
            "Avatario retry budget: %s cannot be used (%s); using %s until it can "
            "(tried again every %g s)",
            self._what,
            reason,
            self._instead,
            self._recheck_after,
        )

    def worked(self) -> None:
        """The store answered: the outage, if any, is over."""
        if not self._warned and self._until is None:
            return
        with self._lock:
            self._until = None
            warned, self._warned = self._warned, False
        if warned:
            logger.info("Avatario retry budget: %s works again", self._what)
