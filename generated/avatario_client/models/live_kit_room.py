from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from attrs import define as _attrs_define

T = TypeVar("T", bound="LiveKitRoom")


@_attrs_define
class LiveKitRoom:
    """Where the avatar joins, and the credential it joins with.

    Attributes:
        url (str): The LiveKit server URL (ws, wss, http or https).
        token (str): A LiveKit access token minted by the caller for the avatar's own participant
            identity (by convention `avatario-avatar-agent`). A secret: never logged.
    """

    url: str
    token: str

    def to_dict(self) -> dict[str, Any]:
        url = self.url

        token = self.token

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "url": url,
                "token": token,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        url = d.pop("url")

        token = d.pop("token")

        live_kit_room = cls(
            url=url,
            token=token,
        )

        return live_kit_room
