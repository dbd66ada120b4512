from http import HTTPStatus
from typing import Any

import httpx

from ... import errors
from ...client import AuthenticatedClient, Client
from ...models.error import Error
from ...models.start_session_request import StartSessionRequest
from ...models.start_session_response import StartSessionResponse
from ...types import UNSET, Response, Unset


def _get_kwargs(
    *,
    body: StartSessionRequest,
    idempotency_key: str | Unset = UNSET,
) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    if not isinstance(idempotency_key, Unset):
        headers["Idempotency-Key"] = idempotency_key

    _kwargs: dict[str, Any] = {
        "method": "post",
        "url": "/start-session",
    }

    _kwargs["json"] = body.to_dict()

    headers["Content-Type"] = "application/json"

    _kwargs["headers"] = headers
    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> Error | StartSessionResponse | None:
    if response.status_code == 200:
        response_200 = StartSessionResponse.from_dict(response.json())

        return response_200

    if response.status_code == 400:
        response_400 = Error.from_dict(response.json())

        return response_400

    if response.status_code == 401:
        response_401 = Error.from_dict(response.json())

        return response_401

    if response.status_code == 403:
        response_403 = Error.from_dict(response.json())

        return response_403

    if response.status_code == 404:
        response_404 = Error.from_dict(response.json())

        return response_404

    if response.status_code == 409:
        response_409 = Error.from_dict(response.json())

        return response_409

    if response.status_code == 415:
        response_415 = Error.from_dict(response.json())

        return response_415

    if response.status_code == 422:
        response_422 = Error.from_dict(response.json())

        return response_422

    if response.status_code == 429:
        response_429 = Error.from_dict(response.json())

        return response_429

    if response.status_code == 503:
        response_503 = Error.from_dict(response.json())

        return response_503

    if 500 <= response.status_code <= 599:
        response_5xx = Error.from_dict(response.json())

        return response_5xx

    if client.raise_on_unexpected_status:
        raise errors.UnexpectedStatus(response.status_code, response.content)
    else:
        return None


def _build_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> Response[Error | StartSessionResponse]:
    return Response(
        status_code=HTTPStatus(response.status_code),
        content=response.content,
        headers=response.headers,
        parsed=_parse_response(client=client, response=response),
    )


def sync_detailed(
    *,
    client: AuthenticatedClient,
    body: StartSessionRequest,
    idempotency_key: str | Unset = UNSET,
) -> Response[Error | StartSessionResponse]:
    """Send an avatar into a LiveKit room

     Asks Avatario to render the avatar `avatario_face_id` and to join the LiveKit room at
    `livekit.url` with `livekit.token`, speaking for the agent whose participant identity is
    `agent_id`. Each accepted request starts one avatar session. Avatario's public material
    does not say whether it honours `Idempotency-Key`; clients send one on every attempt of
    one logical call for deployments that do, and must not assume that a resent request is
    deduplicated.

    Args:
        idempotency_key (str | Unset):
        body (StartSessionRequest): A request to send an avatar into a LiveKit room.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[Error | StartSessionResponse]
    """

    kwargs = _get_kwargs(
        body=body,
        idempotency_key=idempotency_key,
    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)


def sync(
    *,
    client: AuthenticatedClient,
    body: StartSessionRequest,
    idempotency_key: str | Unset = UNSET,
) -> Error | StartSessionResponse | None:
    """Send an avatar into a LiveKit room

     Asks Avatario to render the avatar `avatario_face_id` and to join the LiveKit room at
    `livekit.url` with `livekit.token`, speaking for the agent whose participant identity is
    `agent_id`. Each accepted request starts one avatar session. Avatario's public material
    does not say whether it honours `Idempotency-Key`; clients send one on every attempt of
    one logical call for deployments that do, and must not assume that a resent request is
    deduplicated.

    Args:
        idempotency_key (str | Unset):
        body (StartSessionRequest): A request to send an avatar into a LiveKit room.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Error | StartSessionResponse
    """

    return sync_detailed(
        client=client,
        body=body,
        idempotency_key=idempotency_key,
    ).parsed


async def asyncio_detailed(
    *,
    client: AuthenticatedClient,
    body: StartSessionRequest,
    idempotency_key: str | Unset = UNSET,
) -> Response[Error | StartSessionResponse]:
    """Send an avatar into a LiveKit room

     Asks Avatario to render the avatar `avatario_face_id` and to join the LiveKit room at
    `livekit.url` with `livekit.token`, speaking for the agent whose participant identity is
    `agent_id`. Each accepted request starts one avatar session. Avatario's public material
    does not say whether it honours `Idempotency-Key`; clients send one on every attempt of
    one logical call for deployments that do, and must not assume that a resent request is
    deduplicated.

    Args:
        idempotency_key (str | Unset):
        body (StartSessionRequest): A request to send an avatar into a LiveKit room.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[Error | StartSessionResponse]
    """

    kwargs = _get_kwargs(
        body=body,
        idempotency_key=idempotency_key,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    *,
    client: AuthenticatedClient,
    body: StartSessionRequest,
    idempotency_key: str | Unset = UNSET,
) -> Error | StartSessionResponse | None:
    """Send an avatar into a LiveKit room

     Asks Avatario to render the avatar `avatario_face_id` and to join the LiveKit room at
    `livekit.url` with `livekit.token`, speaking for the agent whose participant identity is
    `agent_id`. Each accepted request starts one avatar session. Avatario's public material
    does not say whether it honours `Idempotency-Key`; clients send one on every attempt of
    one logical call for deployments that do, and must not assume that a resent request is
    deduplicated.

    Args:
        idempotency_key (str | Unset):
        body (StartSessionRequest): A request to send an avatar into a LiveKit room.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Error | StartSessionResponse
    """

    return (
        await asyncio_detailed(
            client=client,
            body=body,
            idempotency_key=idempotency_key,
        )
    ).parsed
