"""Contains all the data models used in inputs/outputs"""

from .error import Error
from .live_kit_room import LiveKitRoom
from .start_session_request import StartSessionRequest
from .start_session_response import StartSessionResponse

__all__ = (
    "Error",
    "LiveKitRoom",
    "StartSessionRequest",
    "StartSessionResponse",
)
