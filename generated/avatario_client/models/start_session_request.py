from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

from attrs import define as _attrs_define

from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.live_kit_room import LiveKitRoom


T = TypeVar("T", bound="StartSessionRequest")


@_attrs_define
class StartSessionRequest:
    """A request to send an avatar into a LiveKit room.

    Attributes:
        avatario_face_id (str): The id of the avatar (its face) to render, as shown in the Avatario console.
        agent_id (str): The LiveKit participant identity of the agent the avatar speaks for; the avatar
            follows that participant's audio in the room.
        livekit (LiveKitRoom): Where the avatar joins, and the credential it joins with.
        video_height (int | Unset): Height of the rendered video, in pixels. Default: 720.
        video_width (int | Unset): Width of the rendered video, in pixels. Default: 1280.
        custom_background_url (None | str | Unset): An http(s) URL of an image drawn behind the avatar; null for the
            default.
    """

    avatario_face_id: str
    agent_id: str
    livekit: LiveKitRoom
    video_height: int | Unset = 720
    video_width: int | Unset = 1280
    custom_background_url: None | str | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        avatario_face_id = self.avatario_face_id

        agent_id = self.agent_id

        livekit = self.livekit.to_dict()

        video_height = self.video_height

        video_width = self.video_width

        custom_background_url: None | str | Unset
        if isinstance(self.custom_background_url, Unset):
            custom_background_url = UNSET
        else:
            custom_background_url = self.custom_background_url

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "avatario_face_id": avatario_face_id,
                "agent_id": agent_id,
                "livekit": livekit,
            }
        )
        if video_height is not UNSET:
            field_dict["video_height"] = video_height
        if video_width is not UNSET:
            field_dict["video_width"] = video_width
        if custom_background_url is not UNSET:
            field_dict["custom_background_url"] = custom_background_url

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        from ..models.live_kit_room import LiveKitRoom  # noqa: PLC0415

        d = dict(src_dict)
        avatario_face_id = d.pop("avatario_face_id")

        agent_id = d.pop("agent_id")

        livekit = LiveKitRoom.from_dict(d.pop("livekit"))

        video_height = d.pop("video_height", UNSET)

        video_width = d.pop("video_width", UNSET)

        def _parse_custom_background_url(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        custom_background_url = _parse_custom_background_url(d.pop("custom_background_url", UNSET))

        start_session_request = cls(
            avatario_face_id=avatario_face_id,
            agent_id=agent_id,
            livekit=livekit,
            video_height=video_height,
            video_width=video_width,
            custom_background_url=custom_background_url,
        )

        return start_session_request
