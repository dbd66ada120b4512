"""The steps of a call's flow, and what a flow is given: the vocabulary of `_flow`.

A step is what the flow asks of its driver (`_drivers`); the driver answers it:

    Attempt    send the request once, within the step's limits   → the `Reply`, or the
                                                                    `APIConnectionError`
    Sleep      wait on the client's clock                        → None
    Ask        ask the call's retry budget (`_budget.BudgetScope`) → its answer
    WatchRoom  (AvatarSession) watch the room for the avatar,    → True joined · False not
               on the client's clock                                within the time · None
                                                                    the room cannot tell

The transports take an `Attempt` (its limits); nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    from ._budget import BudgetScope
    from ._clock import Clock
    from ._reply import Reply
    from ._request import PreparedRequest
    from ._settings import RetryPolicy
    from ._telemetry import CallTrace
    from .errors import APIError

ResultT = TypeVar("ResultT")
ResultT_co = TypeVar("ResultT_co", covariant=True)


class Attempt:
    """Send the request once: the whole attempt within `timeout`, opening a connection within
    `connect_timeout`, and the request written only while `min_send_time` is left."""

    __slots__ = ("connect_timeout", "min_send_time", "number", "timeout")

    def __init__(
        self, number: int, timeout: float, connect_timeout: float, min_send_time: float
    ) -> None:
        self.number = number
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.min_send_time = min_send_time

    def __repr__(self) -> str:
        return f"Attempt({self.number}, timeout={self.timeout:.3f})"


class Sleep:
    """Wait `seconds` on the client's clock before the next attempt."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


class Ask:
    """Ask the call's retry budget: ``scope.<operation>(**arguments)`` (or its ``a``-twin)."""

    __slots__ = ("arguments", "operation")

    def __init__(self, operation: str, **arguments: Any) -> None:
        self.operation = operation
        self.arguments: Mapping[str, Any] = arguments

    def __repr__(self) -> str:
        return f"Ask({self.operation})"


class WatchRoom:
    """Watch the LiveKit room up to `seconds` for the avatar to join."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


Step = Attempt | Sleep | Ask | WatchRoom


class SyncSender(Protocol):
    """What `drive` needs of a transport: one attempt sent (`_transports.base`)."""

    def send(self, request: PreparedRequest[Any], attempt: Attempt) -> Reply:
        """The reply, or an `APIConnectionError` raised."""


class AsyncSender(Protocol):
    """What `drive_async` needs of a transport."""

    async def send(self, request: PreparedRequest[Any], attempt: Attempt) -> Reply:
        """The reply, or an `APIConnectionError` raised."""


class RoomWatch(Protocol[ResultT_co]):
    """How an `AvatarSession` settles an unknown outcome: by the room it sent the avatar to."""

    #: How long the avatar may take to join (bounded by what is left of the call).
    seconds: float

    async def joined(self, seconds: float, clock: Clock) -> bool | None:
        """True when the avatar joins within `seconds` on `clock` (the client's); None when
        the room cannot tell."""

    def settled(self, error: APIError, attempts: int) -> ResultT_co:
        """The result of a call whose answer was lost but whose avatar joined."""


class Call(Generic[ResultT]):
    """What one call's flow needs, made by the client for each call."""

    __slots__ = (
        "clock",
        "connect_timeout",
        "is_closed",
        "policy",
        "request",
        "room",
        "scope",
        "timeout",
        "trace",
    )

    def __init__(
        self,
        request: PreparedRequest[ResultT],
        *,
        policy: RetryPolicy,
        timeout: float,
        connect_timeout: float | None,
        clock: Clock,
        scope: BudgetScope | None,
        is_closed: Callable[[], bool],
        trace: CallTrace,
        room: RoomWatch[ResultT] | None = None,
    ) -> None:
        self.request = request
        self.policy = policy
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.clock = clock
        #: The retry budget's scope; None for `warm_up`, which is outside any budget.
        self.scope = scope
        self.is_closed = is_closed
        self.trace = trace
        self.room = room


class Deadline:
    """What is left of ``max_elapsed``, on the client's clock."""

    __slots__ = ("_clock", "_ends")

    def __init__(self, clock: Clock, seconds: float) -> None:
        self._clock = clock
        self._ends = clock.monotonic() + seconds

    def left(self) -> float:
        return self._ends - self._clock.monotonic()
