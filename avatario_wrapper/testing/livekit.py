"""A stand-in connected LiveKit room, so an agent's avatar start runs in unit tests.

It exists because no LiveKit server runs in unit tests: `AvatarSession.start` needs a
*connected* room (the agent's identity, the avatar joining, the agent's audio streamed to it),
and a real `livekit.rtc.Room` connects only to a server. `StandInRoom` plays one::

    room = StandInRoom("room-42", agent_identity="agent-7")   # inside the event loop
    with room.avatars_from(fake):                             # the fake's avatars join it
        result = await avatar.start(AgentSession(), room=room)
        await avatar.wait_for_join()

**What it is.** A subclass of `livekit.rtc.Room`, connected from the moment it is made, that
never loads LiveKit's native client. Participants and track publications are livekit's own
`rtc.RemoteParticipant` / `rtc.RemoteTrackPublication`, built from the protocol records
LiveKit's client builds them from; events go through livekit's own `EventEmitter`.

**Implemented** (what livekit-agents 1.8.9 touches on the avatar path: `AvatarSession.start`,
the base avatar session's join wait and removal, `DataStreamAudioOutput`):

- the room: `name`, `sid`, `metadata`, `connection_state`, `isconnected()`,
  `local_participant`, `remote_participants`, `num_participants`, `on` / `off` / `once` /
  `emit`, byte and text stream handler registration, `disconnect()` (emits
  ``connection_state_changed`` and ``disconnected`` as livekit's does);
- the agent (`StandInLocalParticipant`): identity, name, kind ``agent``, attributes;
  `register_rpc_method` / `unregister_rpc_method`; `perform_rpc` (answered by the handlers a
  test gives remote participants with `StandInRoom.set_rpc_handler`, recorded in
  `rpc_calls`); `stream_bytes` (a writer that keeps what is written, in `byte_streams`);
  `set_attributes` / `set_metadata` / `set_name` (applied and announced at once);
- remote participants (`add_participant`, `publish_track`, `remove_participant`), with the
  events a real room emits, in its order: ``participant_connected``, ``participant_active``,
  ``track_published`` per track; on leaving, ``track_unpublished`` per track, then
  ``participant_disconnected`` (as LiveKit's Rust client does);
- calls from a remote participant to the agent's RPC methods (`rpc_from`);
- the avatar: `avatars_from(fake)` makes each session the fake Avatario starts for this room
  add the avatar (identity and name from the token, kind ``agent``, a video and an audio
  track) on the room's own event loop (`_avatar_link`); ``join_after=N`` plays a slow avatar
  (on the room's `FakeClock` when it is given one: ``StandInRoom(..., clock=clock)``),
  ``join=False`` one that never arrives;
- LiveKit's side of the room: `participants_on_server` (who is still in it, also after the
  agent disconnected: an avatar nobody removed);
- a job (`_livekit_job`): `job_context()` runs code inside livekit-agents' own
  ``fake_job_context`` for this room, whose LiveKit server API is a stand-in that removes
  participants from this room by name (``RoomService.RemoveParticipant``, what
  `AvatarSession` ends its avatar with), records every request (`removals`) and can be made
  to fail (`removal_fault`); `end_job()` shuts the job down in livekit-agents 1.8.9's order
  (the AgentSession closed, the room disconnected, then the shutdown callbacks).

**Not implemented** (each raises `NotImplementedError` naming itself; nothing reaches
livekit's native client): connecting, publishing or subscribing media (publications carry no
track and are never subscribed; no audio or video frames), data packets, text streams,
``send_bytes`` / ``send_file``, DTMF, transcriptions, data tracks, RPC interceptors,
end-to-end encryption, statistics, reconnection. So ``AgentSession.start(room=...)`` (its
RoomIO publishes the agent's audio and subscribes to the user's microphone) does not run on
it: give `AvatarSession.start` an `AgentSession` that is not started, or test the conversation
with livekit-agents' own test mode.

What a test with it shows is that your code and livekit-agents react correctly to a room's
events and calls; that a real room and a real Avatario produce them is LiveKit's and
Avatario's part. Needs the ``livekit`` extra (and the ``server`` extra for the fake).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from .._extras import hint

# The room needs livekit; the fake whose avatars join it, the server extra.
_PROBLEM = hint("avatario_wrapper.testing.livekit", "livekit", "server")
if _PROBLEM is not None:
    raise ModuleNotFoundError(_PROBLEM)

from livekit import rtc  # noqa: E402 - after the extra's check

# The protocol records livekit's own Room builds its participants and publications from.
from livekit.rtc._proto import handle_pb2, participant_pb2, track_pb2  # noqa: E402

from ._avatar_link import AVATAR_TRACKS, RPC_CLEAR_BUFFER, AvatarLink, SessionSource  # noqa: E402
from ._livekit_job import ParticipantRemoval, RemovalFault, ServerSide, end_job, job_context  # noqa: E402

if TYPE_CHECKING:
    from livekit.agents import JobContext

    from ._clock import FakeClock

__all__ = [
    "AVATAR_TRACKS",
    "RPC_CLEAR_BUFFER",
    "AvatarLink",
    "ParticipantRemoval",
    "StandInByteStreamWriter",
    "StandInLocalParticipant",
    "StandInRoom",
]

logger: logging.Logger = logging.getLogger("avatario_wrapper.testing")

_NO_HANDLE = 0  # livekit's INVALID_HANDLE: an object with it never calls the native client
_WHY = "a StandInRoom has no LiveKit server behind it (see avatario_wrapper.testing.livekit)"

RpcHandler = Callable[[rtc.RpcInvocationData], "Awaitable[str | None] | str | None"]
_Handler = TypeVar("_Handler", bound=RpcHandler)


def _sid(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def _now_ms() -> int:
    return int(time.time() * 1000)


def _rpc_error(code: rtc.RpcError.ErrorCode) -> rtc.RpcError:
    """The error LiveKit gives an RPC caller for `code`, with livekit's own message."""
    return rtc.RpcError(code, rtc.RpcError.ErrorMessage[code])


def _not_implemented(name: str, *, asynchronous: bool) -> Callable[..., Any]:
    message = f"{name} is not implemented: {_WHY}"

    if asynchronous:

        async def refuse_async(self: object, *args: Any, **kwargs: Any) -> NoReturn:
            raise NotImplementedError(message)

        refuse_async.__name__ = name
        refuse_async.__doc__ = f"Not implemented: {_WHY}."
        return refuse_async

    def refuse(self: object, *args: Any, **kwargs: Any) -> NoReturn:
        raise NotImplementedError(message)

    refuse.__name__ = name
    refuse.__doc__ = f"Not implemented: {_WHY}."
    return refuse


# -- the agent's side --------------------------------------------------------------------------


class StandInByteStreamWriter(rtc.ByteStreamWriter):
    """A byte stream the agent opened: it keeps what is written instead of sending it.

    `data` is every byte written so far, `closed` whether the sender closed it (the end of
    an audio segment for `DataStreamAudioOutput`); `info` is livekit's `ByteStreamInfo`
    (topic, name, attributes such as ``sample_rate``).
    """

    def __init__(
        self,
        local_participant: StandInLocalParticipant,
        *,
        name: str,
        topic: str,
        attributes: dict[str, str] | None,
        stream_id: str,
        total_size: int | None,
        mime_type: str,
        destination_identities: list[str] | None,
    ) -> None:
        super().__init__(
            local_participant,
            name=name,
            topic=topic,
            attributes=attributes,
            stream_id=stream_id,
            total_size=total_size,
            mime_type=mime_type,
            destination_identities=destination_identities,
        )
        self.topic = topic
        self.destination_identities: tuple[str, ...] = tuple(destination_identities or ())
        self.closed: bool = False
        self.close_reason: str = ""
        self._chunks: list[bytes] = []

    @property
    def data(self) -> bytes:
        """Every byte written to the stream so far."""
        return b"".join(self._chunks)

    async def write(self, data: bytes) -> None:
        if self.closed:
            raise RuntimeError("Cannot write after stream is closed")  # livekit's message
        self._chunks.append(bytes(data))

    async def aclose(self, *, reason: str = "", attributes: dict[str, str] | None = None) -> None:
        if self.closed:
            raise RuntimeError("Stream already closed")  # livekit's message
        self.closed = True
        self.close_reason = reason
        if attributes:
            self.info.attributes = {**(self.info.attributes or {}), **attributes}

    def __repr__(self) -> str:
        return (
            f"StandInByteStreamWriter(topic={self.topic!r}, "
            f"to={list(self.destination_identities)!r}, bytes={len(self.data)}, "
            f"closed={self.closed!r})"
        )


class StandInLocalParticipant(rtc.LocalParticipant):
    """The agent in a `StandInRoom`: livekit's `LocalParticipant`, its server calls played.

    Records what the agent sent: `rpc_calls` (livekit's `RpcCallInfo`, in order) and
    `byte_streams` (`StandInByteStreamWriter`, in order).
    """

    def __init__(self, room: StandInRoom, info: participant_pb2.ParticipantInfo) -> None:
        owned = participant_pb2.OwnedParticipant(
            handle=handle_pb2.FfiOwnedHandle(id=_NO_HANDLE), info=info
        )
        super().__init__(room._room_queue, owned)
        self._stand_in_room = room
        self._record = owned.info  # the very record livekit reads the properties from
        self.rpc_calls: list[rtc.RpcCallInfo] = []
        self.byte_streams: list[StandInByteStreamWriter] = []

    def __repr__(self) -> str:
        return f"StandInLocalParticipant(identity={self.identity!r})"

    # -- RPC -------------------------------------------------------------------------------

    def register_rpc_method(
        self, method_name: str, handler: _Handler | None = None
    ) -> _Handler | Callable[[_Handler], _Handler]:
        """Keep `handler` for `method_name` (as livekit does); `rpc_from` calls it. As
        livekit's (same signature), it is a decorator when `handler` is left out."""

        def register(handler_func: _Handler) -> _Handler:
            self._rpc_handlers[method_name] = handler_func
            return handler_func

        return register(handler) if handler is not None else register

    def unregister_rpc_method(self, method: str) -> None:
        self._rpc_handlers.pop(method, None)

    async def perform_rpc(
        self,
        *,
        destination_identity: str,
        method: str,
        payload: str,
        response_timeout: float | None = None,
        max_round_trip_latency: float | None = None,
    ) -> str:
        """Call `method` on a remote participant: its handler from `set_rpc_handler` answers.

        As LiveKit answers: ``RECIPIENT_NOT_FOUND`` when no such participant is in the room,
        ``UNSUPPORTED_METHOD`` when it has no handler for `method`, ``APPLICATION_ERROR``
        when its handler raises anything but an `rtc.RpcError`.
        """
        self.rpc_calls.append(
            rtc.RpcCallInfo(
                destination_identity=destination_identity,
                method=method,
                payload=payload,
                response_timeout=response_timeout,
                max_round_trip_latency=max_round_trip_latency,
            )
        )
        room = self._stand_in_room
        if not room.isconnected():
            raise _rpc_error(rtc.RpcError.ErrorCode.SEND_FAILED)
        if destination_identity not in room.remote_participants:
            raise _rpc_error(rtc.RpcError.ErrorCode.RECIPIENT_NOT_FOUND)
        handler = room._remote_rpc_handlers.get((destination_identity, method))
        data = rtc.RpcInvocationData(
            request_id=str(uuid.uuid4()),
            caller_identity=self.identity,
            payload=payload,
            response_timeout=response_timeout if response_timeout is not None else 15.0,
            method=method,
        )
        return await _answer(handler, data)

    # -- streams -----------------------------------------------------------------------------

    async def stream_bytes(
        self,
        name: str,
        *,
        total_size: int | None = None,
        mime_type: str = "application/octet-stream",
        attributes: dict[str, str] | None = None,
        stream_id: str | None = None,
        destination_identities: list[str] | None = None,
        topic: str = "",
    ) -> StandInByteStreamWriter:
        """Open a byte stream that keeps what is written (see `byte_streams`)."""
        if not self._stand_in_room.isconnected():
            raise rtc.StreamError("the room is not connected")
        writer = StandInByteStreamWriter(
            self,
            name=name,
            topic=topic,
            attributes=attributes,
            stream_id=stream_id or str(uuid.uuid4()),
            total_size=total_size,
            mime_type=mime_type,
            destination_identities=destination_identities,
        )
        self.byte_streams.append(writer)
        return writer

    # -- what the agent says about itself ------------------------------------------------------

    async def set_attributes(self, attributes: dict[str, str]) -> None:
        """Update the attributes (an empty value removes one, as LiveKit does) and announce
        ``participant_attributes_changed`` with what changed."""
        changed: dict[str, str] = {}
        for key, value in attributes.items():
            if self._record.attributes.get(key, "") != value:
                changed[key] = value
            if value:
                self._record.attributes[key] = value
            elif key in self._record.attributes:
                del self._record.attributes[key]
        if changed:
            self._stand_in_room.emit("participant_attributes_changed", changed, self)

    async def set_metadata(self, metadata: str) -> None:
        old = self._record.metadata
        self._record.metadata = metadata
        self._stand_in_room.emit("participant_metadata_changed", self, old, metadata)

    async def set_name(self, name: str) -> None:
        old = self._record.name
        self._record.name = name
        self._stand_in_room.emit("participant_name_changed", self, old, name)


for _name in (
    "publish_data",
    "publish_dtmf",
    "publish_transcription",
    "publish_track",
    "unpublish_track",
    "publish_data_track",
    "stream_text",
    "send_text",
    "send_bytes",
    "send_file",
):
    setattr(StandInLocalParticipant, _name, _not_implemented(_name, asynchronous=True))
for _name in (
    "add_rpc_interceptor",
    "remove_rpc_interceptor",
    "set_track_subscription_permissions",
):
    setattr(StandInLocalParticipant, _name, _not_implemented(_name, asynchronous=False))


async def _answer(handler: RpcHandler | None, data: rtc.RpcInvocationData) -> str:
    """Run an RPC handler as LiveKit does for its caller: errors become `rtc.RpcError`."""
    if handler is None:
        raise _rpc_error(rtc.RpcError.ErrorCode.UNSUPPORTED_METHOD)
    try:
        answer = handler(data)
        if inspect.isawaitable(answer):
            answer = await answer
    except rtc.RpcError:
        raise
    except Exception as error:
        logger.warning("an RPC handler for %s raised %s", data.method, type(error).__name__)
        raise _rpc_error(rtc.RpcError.ErrorCode.APPLICATION_ERROR) from error
    return answer if isinstance(answer, str) else ""


# -- the room ----------------------------------------------------------------------------------


class StandInRoom(rtc.Room):
    """A LiveKit room, connected without a server (see the module docstring).

    Make it inside the event loop that runs the agent (an async test, or ``asyncio.run``):
    its events are delivered on that loop, and its test controls (`add_participant`,
    `publish_track`, `remove_participant`) must be called there.

    `name` is the room's name (the one the avatar's token names); the agent is the local
    participant, identity `agent_identity`, of kind ``agent``.
    """

    def __init__(
        self,
        name: str = "test-room",
        *,
        agent_identity: str = "test-agent",
        agent_name: str | None = None,
        metadata: str = "",
        clock: FakeClock | None = None,
    ) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "make the StandInRoom inside the event loop that runs the agent (in an async "
                "test or a coroutine given to asyncio.run): its events are delivered there"
            ) from None
        if not isinstance(name, str) or not name:
            raise ValueError("a StandInRoom needs a non-empty name (the avatar's token names it)")
        if not isinstance(agent_identity, str) or not agent_identity:
            raise ValueError("agent_identity must be a non-empty string")
        super().__init__(loop=loop)
        self._stand_in_loop = loop
        self._room_name = name
        self._room_sid = _sid("RM")
        self._room_metadata = metadata
        self._state: rtc.ConnectionState.ValueType = rtc.ConnectionState.CONN_CONNECTED
        self._remote: dict[str, rtc.RemoteParticipant] = {}
        self._records: dict[str, participant_pb2.ParticipantInfo] = {}
        self._remote_rpc_handlers: dict[tuple[str, str], RpcHandler] = {}
        #: The room's time for `avatars_from(join_after=...)`: a `FakeClock`, or None (real).
        self.clock = clock
        self._server = ServerSide(name, self.isconnected, self._seen_removed)
        self._agent = StandInLocalParticipant(
            self,
            participant_pb2.ParticipantInfo(
                sid=_sid("PA"),
                identity=agent_identity,
                name=agent_name if agent_name is not None else agent_identity,
                kind=rtc.ParticipantKind.PARTICIPANT_KIND_AGENT,
                state=rtc.ParticipantState.PARTICIPANT_STATE_ACTIVE,
                joined_at=_now_ms(),
            ),
        )

    def __del__(self) -> None:
        # livekit's Room.__del__ releases its native client subscription; there is none here
        # (and a room whose __init__ refused to run has none of livekit's attributes).
        return

    def __repr__(self) -> str:
        return (
            f"StandInRoom(name={self._room_name!r}, "
            f"agent={self._agent.identity!r}, connected={self.isconnected()!r}, "
            f"remote_participants={sorted(self._remote)!r})"
        )

    # -- rtc.Room's surface ----------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._room_name

    @property
    async def sid(self) -> str:
        return self._room_sid

    @property
    def metadata(self) -> str:
        return self._room_metadata

    @property
    def connection_state(self) -> rtc.ConnectionState.ValueType:
        return self._state

    def isconnected(self) -> bool:
        return self._state != rtc.ConnectionState.CONN_DISCONNECTED

    @property
    def local_participant(self) -> StandInLocalParticipant:
        return self._agent

    @property
    def remote_participants(self) -> Mapping[str, rtc.RemoteParticipant]:
        return self._remote

    @property
    def num_participants(self) -> int:
        return 1 + len(self._remote) if self.isconnected() else 0

    @property
    def num_publishers(self) -> int:
        return sum(1 for p in self._remote.values() if p.track_publications)

    @property
    def e2ee_manager(self) -> NoReturn:
        raise AttributeError(f"e2ee_manager: end-to-end encryption is not implemented: {_WHY}")

    async def connect(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Not implemented: a `StandInRoom` is connected when it is made."""
        raise NotImplementedError(
            f"connect is not implemented: a StandInRoom is connected when it is made; {_WHY}"
        )

    async def disconnect(
        self, *, reason: rtc.DisconnectReason.ValueType = rtc.DisconnectReason.CLIENT_INITIATED
    ) -> None:
        """Leave the room: ``connection_state_changed`` (disconnected), then ``disconnected``.

        As livekit's: nothing happens when it is not connected; the remote participants stay
        in `remote_participants` (the agent no longer hears about them).
        """
        if not self.isconnected():
            return
        self._agent._record.disconnect_reason = reason
        self._state = rtc.ConnectionState.CONN_DISCONNECTED
        self.emit("connection_state_changed", self._state)
        self.emit("disconnected", reason)

    async def get_rtc_stats(self) -> NoReturn:
        """Not implemented: no media flows, so there are no statistics."""
        raise NotImplementedError(f"get_rtc_stats is not implemented: {_WHY}")

    async def simulate_scenario(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Not implemented: there is no connection to break."""
        raise NotImplementedError(f"simulate_scenario is not implemented: {_WHY}")

    # -- test controls: the other participants -------------------------------------------------

    def _on_loop(self, what: str) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not self._stand_in_loop:
            raise RuntimeError(
                f"call StandInRoom.{what} on the room's event loop (from another thread: "
                "loop.call_soon_threadsafe)"
            )

    def add_participant(
        self,
        identity: str,
        *,
        name: str | None = None,
        kind: rtc.ParticipantKind.ValueType = rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD,
        attributes: Mapping[str, str] | None = None,
        metadata: str = "",
        tracks: Iterable[rtc.TrackKind.ValueType] = (),
    ) -> rtc.RemoteParticipant:
        """A participant joins: ``participant_connected``, ``participant_active``, then
        ``track_published`` for each of `tracks` (see `publish_track`). Returns livekit's
        `rtc.RemoteParticipant` for it."""
        self._on_loop("add_participant")
        if not self.isconnected():
            raise RuntimeError("the room is disconnected: the agent sees no one join")
        if not isinstance(identity, str) or not identity:
            raise ValueError("a participant needs a non-empty identity")
        if identity in self._remote or identity == self._agent.identity:
            raise ValueError(f"a participant {identity!r} is already in the room")
        owned = participant_pb2.OwnedParticipant(
            handle=handle_pb2.FfiOwnedHandle(id=_NO_HANDLE),
            info=participant_pb2.ParticipantInfo(
                sid=_sid("PA"),
                identity=identity,
                name=name if name is not None else identity,
                kind=kind,
                state=rtc.ParticipantState.PARTICIPANT_STATE_JOINED,
                attributes=dict(attributes or {}),
                metadata=metadata,
                joined_at=_now_ms(),
            ),
        )
        participant = rtc.RemoteParticipant(owned)
        self._records[identity] = owned.info
        self._remote[identity] = participant
        self._server.participants.add(identity)
        self.emit("participant_connected", participant)
        self._records[identity].state = rtc.ParticipantState.PARTICIPANT_STATE_ACTIVE
        self.emit("participant_active", participant)
        for track in tracks:
            self.publish_track(identity, track)
        return participant

    def publish_track(
        self,
        identity: str,
        kind: rtc.TrackKind.ValueType,
        *,
        source: rtc.TrackSource.ValueType | None = None,
        name: str = "",
        width: int = 0,
        height: int = 0,
    ) -> rtc.RemoteTrackPublication:
        """The participant `identity` publishes a track of `kind`: ``track_published``.

        The publication is livekit's `rtc.RemoteTrackPublication`, never subscribed (no media
        flows here). `source` defaults to the camera for video, the microphone for audio.
        """
        self._on_loop("publish_track")
        participant = self._participant(identity)
        if source is None:
            source = (
                rtc.TrackSource.SOURCE_CAMERA
                if kind == rtc.TrackKind.KIND_VIDEO
                else rtc.TrackSource.SOURCE_MICROPHONE
            )
        publication = rtc.RemoteTrackPublication(
            track_pb2.OwnedTrackPublication(
                handle=handle_pb2.FfiOwnedHandle(id=_NO_HANDLE),
                info=track_pb2.TrackPublicationInfo(
                    sid=_sid("TR"),
                    name=name,
                    kind=kind,
                    source=source,
                    width=width,
                    height=height,
                    remote=True,
                ),
            )
        )
        # livekit keeps a participant's publications in this dict (Room._on_room_event does
        # the same on a track_published event); `track_publications` is a view of it.
        participant.track_publications[publication.sid] = publication  # type: ignore[index]
        self.emit("track_published", publication, participant)
        return publication

    def remove_participant(
        self,
        identity: str,
        *,
        reason: rtc.DisconnectReason.ValueType = rtc.DisconnectReason.CLIENT_INITIATED,
    ) -> rtc.RemoteParticipant:
        """The participant leaves: ``track_unpublished`` per track, then
        ``participant_disconnected`` (its `disconnect_reason` set to `reason`)."""
        self._on_loop("remove_participant")
        participant = self._participant(identity)
        publications: dict[str, rtc.RemoteTrackPublication] = participant.track_publications  # type: ignore[assignment]
        for sid in list(publications):
            publication = publications.pop(sid)
            self.emit("track_unpublished", publication, participant)
        del self._remote[identity]
        self._server.participants.discard(identity)
        record = self._records.pop(identity)
        record.state = rtc.ParticipantState.PARTICIPANT_STATE_DISCONNECTED
        record.disconnect_reason = reason
        for key in [k for k in self._remote_rpc_handlers if k[0] == identity]:
            del self._remote_rpc_handlers[key]
        self.emit("participant_disconnected", participant)
        return participant

    def set_rpc_handler(self, identity: str, method: str, handler: RpcHandler | None) -> None:
        """How the remote participant `identity` answers the agent's `perform_rpc` of `method`
        (a function of livekit's `RpcInvocationData`, plain or async; None: no handler)."""
        self._participant(identity)
        if handler is None:
            self._remote_rpc_handlers.pop((identity, method), None)
        else:
            self._remote_rpc_handlers[(identity, method)] = handler

    async def rpc_from(
        self, caller_identity: str, method: str, payload: str = "", *, timeout: float = 15.0
    ) -> str:
        """The remote participant `caller_identity` calls the agent's RPC `method`.

        Runs the handler the agent registered with `register_rpc_method` (as LiveKit runs it:
        an `rtc.RpcError` reaches the caller as it is, another exception as
        ``APPLICATION_ERROR``, no handler as ``UNSUPPORTED_METHOD``) and returns its answer.
        """
        self._on_loop("rpc_from")
        self._participant(caller_identity)
        data = rtc.RpcInvocationData(
            request_id=str(uuid.uuid4()),
            caller_identity=caller_identity,
            payload=payload,
            response_timeout=timeout,
            method=method,
        )
        handler = self._agent._rpc_handlers.get(method)
        return await asyncio.wait_for(_answer(handler, data), timeout)

    def _participant(self, identity: str) -> rtc.RemoteParticipant:
        participant = self._remote.get(identity)
        if participant is None:
            raise KeyError(
                f"no participant {identity!r} in the room (in it: {sorted(self._remote)})"
            )
        return participant

    # -- the fake Avatario's avatars -----------------------------------------------------------

    def avatars_from(
        self,
        fake: SessionSource,
        *,
        join: bool = True,
        join_after: float = 0.0,
        tracks: Iterable[rtc.TrackKind.ValueType] = AVATAR_TRACKS,
    ) -> AvatarLink:
        """Make the avatar of each session `fake` starts for this room join it.

        `fake` is a `FakeAvatario` or a `FakeServer`. Each NEW session the fake starts whose
        token names this room (``video.room``) adds, on this room's event loop, a participant
        with the token's identity (``sub``) and name, of kind ``agent``, with the attribute
        ``lk.publish_on_behalf`` = the request's ``agent_id``, publishing `tracks` (video and
        audio: the base avatar session waits for the video). The avatar answers the agent's
        ``lk.clear_buffer`` RPC with ``"ok"``, as an avatar worker does. A second avatar
        with the same identity replaces the first (it leaves with reason
        ``DUPLICATE_IDENTITY``), as LiveKit does.

        ``join_after=N`` plays a slow avatar: it joins N seconds after its session started,
        on the room's `clock` when it has one (virtual time: it joins when the code under test
        sleeps past that time), else on the event loop's. ``join=False`` (or setting
        `AvatarLink.join` later) plays an avatar that never arrives: the session is still
        recorded. Returns the `AvatarLink`; close it (or use it as a context manager) to stop
        listening.
        """
        self._on_loop("avatars_from")
        return AvatarLink(self, fake, join=join, join_after=join_after, tracks=tuple(tracks))

    # -- LiveKit's side of the room ------------------------------------------------------------

    @property
    def participants_on_server(self) -> frozenset[str]:
        """The identities LiveKit has in the room besides the agent, whether or not the agent
        still hears of them: after `disconnect()`, an avatar in it is one nobody removed (and
        that Avatario may still bill)."""
        return frozenset(self._server.participants)

    @property
    def removals(self) -> list[ParticipantRemoval]:
        """Every ``RoomService.RemoveParticipant`` request the job's server API received (see
        `job_context`), in order, found or not."""
        return list(self._server.removals)

    @property
    def removal_fault(self) -> RemovalFault:
        """What the job's server API does with RemoveParticipant requests from now on: None
        (serve them), an exception to raise (recorded first), or ``"hang"`` (never answer)."""
        return self._server.removal_fault

    @removal_fault.setter
    def removal_fault(self, fault: RemovalFault) -> None:
        if fault is not None and fault != "hang" and not isinstance(fault, BaseException):
            raise TypeError('removal_fault is None, an exception, or "hang"')
        self._server.removal_fault = fault

    def _joins_unseen(self, identity: str) -> None:
        """A participant joins on LiveKit's side after the agent left: no event reaches it."""
        self._server.participants.add(identity)

    def _seen_removed(self, identity: str) -> None:
        if identity in self._remote:
            self.remove_participant(identity, reason=rtc.DisconnectReason.PARTICIPANT_REMOVED)

    # -- a job -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def job_context(self, *, job_id: str = "test-job") -> Iterator[JobContext]:
        """Run code as in a job for this room: livekit-agents' own ``fake_job_context``.

        Inside, ``get_job_context()`` is a real `JobContext` whose room is this one, whose
        token names the agent (so ``ctx.local_participant_identity`` works as in a worker),
        and whose LiveKit server API (``ctx.api``) is a stand-in implementing
        ``room.remove_participant`` on this room, by room name, as LiveKit does: whether or
        not the agent is still connected, the participant leaves the room on LiveKit's side
        (`participants_on_server`), and while the agent is connected it sees it go (reason
        ``PARTICIPANT_REMOVED``). Every request is recorded in `removals`; `removal_fault`
        makes them fail. `end_job()` shuts the job down.
        """
        with job_context(self, self._server, job_id) as ctx:
            yield ctx

    async def end_job(self, reason: str = "room deleted") -> None:
        """Shut the job down in livekit-agents 1.8.9's order: close the AgentSession started
        in the job (if one was; bounded by 60 s), disconnect the room, then run the job's
        shutdown callbacks together, each given `reason` (what one raises is logged, as
        livekit-agents does). Call it inside `job_context()`."""
        self._on_loop("end_job")
        await end_job(self, reason)
