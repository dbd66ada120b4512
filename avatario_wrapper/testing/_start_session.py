"""The start-session operation (operationId ``startSession``): the fake's sessions.

A request that passed the spec's checks starts a session and gets ``{"session_id",
"status": "starting", "avatario_face_id", "agent_id"}``. ``Idempotency-Key`` is honoured or
ignored (see `avatario_wrapper.testing.app`); the avatar's LiveKit token is verified when the
fake has a LiveKit key and secret. Each NEW session is announced to the listeners with a
`SessionStarted` record, in the thread that serves the request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from .._text import REDACTED
from ._handlers import OperationRequest, OperationResponse
from ._livekit_token import TokenProblem, verify_avatar_token

OPERATION_ID = "startSession"

logger = logging.getLogger("avatario_wrapper.testing")


@attrs.frozen
class SessionStarted:
    """A session the fake started, as its listeners see it.

    The avatar's identity, name and room come from the LiveKit token's claims (``sub``,
    ``name``, ``video.room``): verified when the fake verifies tokens, else read without
    checking the signature. Each is None when the token does not say (or is not a JWT).
    """

    session_id: str
    payload: Mapping[str, Any]  # the request body, with livekit.token redacted
    avatar_identity: str | None
    avatar_name: str | None
    room: str | None


#: A function called with each new session; its return value is ignored.
SessionListener = Callable[[SessionStarted], object]


@attrs.define
class _Session:
    session_id: str
    body_digest: str
    payload: dict[str, Any]


def unverified_claims(token: str) -> dict[str, Any]:
    """A JWT's claims, read without checking its signature; {} when it is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        raw = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(raw)
    except (binascii.Error, ValueError, RecursionError):
        return {}
    return claims if isinstance(claims, dict) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


class StartSessionHandler:
    """Starts sessions; thread-safe (tests read `sessions` while the server thread serves)."""

    def __init__(
        self,
        *,
        body_schema: Mapping[str, Any],
        honour_idempotency_key: bool,
        livekit_api_key: str | None,
        livekit_api_secret: str | None,
    ) -> None:
        properties = body_schema.get("properties", {})
        self._defaults = {
            name: p["default"]
            for name, p in properties.items()
            if isinstance(p, Mapping) and "default" in p
        }
        self.honour_idempotency_key = honour_idempotency_key
        self._livekit_api_key = livekit_api_key
        self._livekit_api_secret = livekit_api_secret
        self._lock = threading.Lock()
        self._sessions: dict[str, _Session] = {}  # by session id
        self._by_key: dict[str, _Session] = {}
        self._ids = itertools.count(1)
        self._listeners: list[SessionListener] = []
        self._listener_errors: list[BaseException] = []

    def __repr__(self) -> str:
        return f"StartSessionHandler(honour_idempotency_key={self.honour_idempotency_key!r})"

    @property
    def sessions(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {"session_id": s.session_id, "payload": s.payload} for s in self._sessions.values()
            ]

    @property
    def listener_errors(self) -> list[BaseException]:
        with self._lock:
            return list(self._listener_errors)

    def add_listener(self, listener: SessionListener) -> Callable[[], None]:
        with self._lock:
            self._listeners.append(listener)

        def remove() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return remove

    def reset(self) -> None:
        with self._lock:
            self._sessions.clear()
            self._by_key.clear()
            self._listener_errors.clear()

    def new_id(self) -> str:
        return f"sess_{next(self._ids):06d}_{uuid.uuid4().hex[:8]}"

    def __call__(self, request: OperationRequest) -> OperationResponse:
        payload: dict[str, Any] = request.json
        claims, problem = self._claims(payload)
        if problem is not None:
            return request.error(422, "validation_error", problem)
        key = request.headers.get("idempotency-key") if self.honour_idempotency_key else None
        digest = hashlib.sha256(
            json.dumps(self._canonical(payload), sort_keys=True).encode()
        ).hexdigest()
        started: _Session | None = None
        with self._lock:
            session = self._by_key.get(key) if key is not None else None
            if session is not None and session.body_digest != digest:
                return request.error(
                    409, "conflict", "This Idempotency-Key was used with a different request."
                )
            if session is None:
                session = started = _Session(self.new_id(), digest, _redacted(payload))
                self._sessions[session.session_id] = session
                if key is not None:
                    self._by_key[key] = session
            listeners = list(self._listeners)
        if started is not None:
            self._announce(listeners, started, claims)
        return OperationResponse(
            200,
            {
                "session_id": session.session_id,
                "status": "starting",
                "avatario_face_id": payload.get("avatario_face_id"),
                "agent_id": payload.get("agent_id"),
            },
        )

    def _claims(self, payload: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
        """The token's claims, and what is wrong with the token when the fake verifies it."""
        livekit = payload.get("livekit")
        token = livekit.get("token") if isinstance(livekit, Mapping) else None
        if not isinstance(token, str):
            return {}, None
        if self._livekit_api_key is None or self._livekit_api_secret is None:
            return unverified_claims(token), None
        try:
            claims = verify_avatar_token(
                token,
                api_key=self._livekit_api_key,
                api_secret=self._livekit_api_secret,
                agent_id=str(payload.get("agent_id")),
                now=time.time(),
            )
        except TokenProblem as problem:
            return {}, f"livekit/token: the LiveKit token is not valid for the avatar: {problem}"
        return claims, None

    def _announce(
        self, listeners: list[SessionListener], session: _Session, claims: Mapping[str, Any]
    ) -> None:
        grants = claims.get("video")
        event = SessionStarted(
            session_id=session.session_id,
            payload=session.payload,
            avatar_identity=_text(claims.get("sub")),
            avatar_name=_text(claims.get("name")),
            room=_text(grants.get("room")) if isinstance(grants, Mapping) else None,
        )
        for listener in listeners:
            try:
                listener(event)
            except Exception as error:  # a listener's bug must not break the response
                logger.warning(
                    "a session-started listener raised %s (session %s); the response is sent",
                    type(error).__name__,
                    session.session_id,
                    exc_info=True,
                )
                with self._lock:
                    self._listener_errors.append(error)

    def _canonical(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The payload with the spec's defaults filled in, so equal requests compare equal."""
        canonical = {**self._defaults, **payload}
        if canonical.get("custom_background_url") is None:
            canonical.pop("custom_background_url", None)
        return canonical


def _redacted(payload: dict[str, Any]) -> dict[str, Any]:
    livekit = payload.get("livekit")
    if not isinstance(livekit, Mapping):
        return dict(payload)
    return {**payload, "livekit": {**livekit, "token": REDACTED}}
