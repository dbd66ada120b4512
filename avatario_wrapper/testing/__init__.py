"""Test helpers for services that use avatario_wrapper.

`FakeClock` (and its `FakeTimer`) needs nothing beyond the core install. The fake Avatario
server (`FakeAvatario`, `run_fake_server`, `Fault`, ...) needs the ``server`` extra (``pip
install '.[server]'`` in a checkout); it is imported only when first used. The stand-in
LiveKit room (`StandInRoom`, `AvatarLink`, `ParticipantRemoval`: see
`avatario_wrapper.testing.livekit`) needs the ``livekit`` extra as well.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .._extras import hint
from ._clock import FakeClock, FakeTimer

if TYPE_CHECKING:
    from ._handlers import OperationRequest, OperationResponse
    from ._start_session import SessionStarted
    from .app import FakeAvatario, RecordedRequest
    from .faults import Fault, FaultSyntaxError, parse_faults
    from .livekit import AvatarLink, ParticipantRemoval, StandInRoom
    from .runner import FakeServer, run_fake_server

__all__ = [
    "AvatarLink",
    "FakeAvatario",
    "FakeClock",
    "FakeServer",
    "FakeTimer",
    "Fault",
    "FaultSyntaxError",
    "OperationRequest",
    "OperationResponse",
    "ParticipantRemoval",
    "RecordedRequest",
    "SessionStarted",
    "StandInRoom",
    "parse_faults",
    "run_fake_server",
]

_LAZY = {
    "FakeAvatario": "app",
    "RecordedRequest": "app",
    "Fault": "faults",
    "FaultSyntaxError": "faults",
    "parse_faults": "faults",
    "OperationRequest": "_handlers",
    "OperationResponse": "_handlers",
    "SessionStarted": "_start_session",
    "FakeServer": "runner",
    "run_fake_server": "runner",
    "AvatarLink": "livekit",
    "ParticipantRemoval": "livekit",
    "StandInRoom": "livekit",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    extras = ("livekit", "server") if module == "livekit" else ("server",)
    problem = hint(f"avatario_wrapper.testing.{name}", *extras)
    if problem is not None:
        raise ModuleNotFoundError(problem)
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
