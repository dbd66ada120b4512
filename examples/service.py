"""A web service that sends Avatario avatars into LiveKit rooms (FastAPI).

    pip install . fastapi uvicorn   # in a checkout of avatario-wrapper (not on a package index yet)
    export AVATARIO_API_KEY=...
    uvicorn examples.service:app

    curl -X POST localhost:8000/avatars -H 'content-type: application/json' \\
        -d '{"avatar_id": "face_1", "agent_identity": "agent-7",
             "livekit_url": "wss://rooms.example.com", "livekit_token": "..."}'

The pattern (docs/service.md):

- one `AsyncAvatarioClient` per process, made in the lifespan (its connection pool is shared by
  every request and belongs to the server's event loop) and closed when the service stops;
- its `warm_up()` runs in the background, bounded, so the service starts (and answers its
  health check) even when Avatario is down: a failed warm-up is one warning in the log;
- every Avatario error becomes the HTTP answer a caller can act on (`answer_for`): their own
  input is a 422, our misconfiguration a 500 that tells them nothing of it, "try later" a 503
  with ``Retry-After``, and "the avatar may have started" a 502/504 that hands back the
  ``idempotency_key``, to send again with the same request so Avatario can recognise it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from avatario_wrapper import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AsyncAvatarioClient,
    AuthenticationError,
    AvatarioConfigError,
    AvatarioError,
    ConflictError,
    PermissionDeniedError,
)

logger = logging.getLogger("avatar_service")

#: How long the background warm-up may take before it is given up (the service is up anyway).
WARM_UP_SECONDS = 5.0
#: The Retry-After we send when Avatario gave none (it could not be reached, or said nothing).
DEFAULT_RETRY_AFTER = 5
#: Avatario statuses that mean "not now": it did not act, and the same call may work later.
_TRY_LATER = frozenset({408, 429, 503})


class StartAvatar(BaseModel):
    """What a caller sends to start an avatar. FastAPI answers 422 when it is not this shape."""

    avatar_id: str = Field(min_length=1)
    agent_identity: str = Field(min_length=1)
    livekit_url: str
    livekit_token: str = Field(repr=False)
    #: None for a new call; the key a 502/504 answer gave, to send the same call again.
    idempotency_key: str | None = None


class AvatarStarted(BaseModel):
    session_id: str | None  # None only if Avatario sent no id (its spec does not require one)
    idempotency_key: str | None
    attempts: int


def _seconds(value: float | None) -> str:
    return str(max(1, math.ceil(value)) if value is not None else DEFAULT_RETRY_AFTER)


def _may_have_started(status: int, error: APIError, what: str) -> JSONResponse:
    return JSONResponse(
        status_code=status,
        content={
            "detail": f"{what}; the avatar may have started. Send the same request again "
            "with this idempotency_key so that Avatario can recognise it.",
            "idempotency_key": error.idempotency_key,
        },
    )


def answer_for(error: AvatarioError) -> JSONResponse:
    """The HTTP answer to a failed start-session, as a service owner wants it."""
    # The caller's input failed the client's checks before anything was sent (a blank
    # identity, a livekit_url that is not a ws(s) or http(s) URL, a malformed idempotency_key):
    # their 422.
    if isinstance(error, AvatarioConfigError):
        return JSONResponse(status_code=422, content={"detail": str(error), "field": error.field})
    # Avatario answered 2xx with a body that is not a session: it acted, we cannot tell on
    # what. 502 (a bad answer from upstream), with the key to send again.
    if isinstance(error, APIResponseValidationError):
        logger.error("Avatario sent an unexpected success body: %s", error)
        return _may_have_started(502, error, "Avatario's answer could not be read")
    # The request went out and no answer says what happened (a timeout, a reset, a 500, 502
    # or 504): the avatar may be on its way. 504 when Avatario took too long, else 502;
    # either way with the idempotency key, never a silent resend from here.
    if isinstance(error, APIError) and error.may_have_started:
        logger.warning("Avatario's outcome is unknown: %s", error)
        if isinstance(error, APITimeoutError):
            return _may_have_started(504, error, "Avatario did not answer in time")
        return _may_have_started(502, error, "Avatario's answer was lost")
    # Avatario refused our key (401) or this account (403): our misconfiguration, not the
    # caller's. 500, saying nothing about keys; the log has what the owner needs.
    if isinstance(error, (AuthenticationError, PermissionDeniedError)):
        logger.error("Avatario refused this service's credentials: %s", error)
        return JSONResponse(status_code=500, content={"detail": "internal error"})
    # Nothing reached Avatario (it is down or unreachable), or it said "not now" (429, 503,
    # 408) and the client's retries ran out: nothing started, the same call may work later.
    # 503 with Retry-After (Avatario's own wait when it gave one).
    if isinstance(error, APIConnectionError) or (
        isinstance(error, APIStatusError) and error.status_code in _TRY_LATER
    ):
        wait = error.retry_after if isinstance(error, APIStatusError) else None
        logger.warning("Avatario is not available now: %s", error)
        return JSONResponse(
            status_code=503,
            content={"detail": "the avatar service is busy; try again later"},
            headers={"Retry-After": _seconds(wait)},
        )
    # The idempotency key was already used for a different request: the caller's 409.
    if isinstance(error, ConflictError):
        return JSONResponse(status_code=409, content={"detail": error.message})
    # Avatario refused what the caller asked for (400, 404: no such avatar, 422: a bad LiveKit
    # token): their 422, with Avatario's reason (one printable line, no secrets).
    if isinstance(error, APIStatusError) and error.status_code in (400, 404, 422):
        return JSONResponse(status_code=422, content={"detail": error.message})
    # Anything else Avatario answered (another 4xx, a 5xx it did not act on): a bad gateway.
    logger.error("Avatario failed: %s", error)
    return JSONResponse(status_code=502, content={"detail": "the avatar service failed"})


async def _warm_up(client: AsyncAvatarioClient) -> None:
    """Open a connection to Avatario ahead of the first call; never fails the service."""
    try:
        await asyncio.wait_for(client.warm_up(), WARM_UP_SECONDS)
    except (AvatarioError, asyncio.TimeoutError) as error:
        logger.warning("Avatario warm-up failed (the service runs; calls will retry): %r", error)


def create_app(client_factory: Callable[[], AsyncAvatarioClient] | None = None) -> FastAPI:
    """The service. `client_factory` makes its one client (default: from AVATARIO_API_KEY and
    AVATARIO_BASE_URL, so a missing key stops the service at start-up, where it is seen)."""
    make_client = client_factory or AsyncAvatarioClient
    clients: list[AsyncAvatarioClient] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = make_client()
        clients.append(client)
        warming = asyncio.create_task(_warm_up(client))
        try:
            yield
        finally:
            warming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await warming
            await client.aclose()
            clients.remove(client)

    app = FastAPI(title="avatar service", lifespan=lifespan)

    @app.get("/healthz")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/avatars", status_code=201, response_model=AvatarStarted)
    async def start_avatar(body: StartAvatar) -> AvatarStarted | JSONResponse:
        [client] = clients  # made by the lifespan
        try:
            result = await client.start_session(
                avatar_id=body.avatar_id,
                agent_identity=body.agent_identity,
                livekit_url=body.livekit_url,
                livekit_token=body.livekit_token,
                idempotency_key=body.idempotency_key,
            )
        except AvatarioError as error:
            return answer_for(error)
        return AvatarStarted(
            session_id=result.session_id,
            idempotency_key=result.idempotency_key,
            attempts=result.attempts,
        )

    return app


app = create_app()
