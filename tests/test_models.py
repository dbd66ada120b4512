"""A 2xx body is read into its generated model and checked against the model's annotations.

The models here are written the way openapi-python-client writes them (attrs classes with a
`from_dict`, `Unset` for optional fields, `Literal` enums with a check function), so the
checks are tested on every construct the generator uses without generating code.
"""

from __future__ import annotations

import datetime
from typing import Any, Literal

import attrs
import pytest

from avatario_wrapper._generated.types import UNSET, Unset
from avatario_wrapper._models import InvalidReply, read_model

Status = Literal["starting", "live", "ended"]


def _check_status(value: str) -> Status:
    if value in ("starting", "live", "ended"):
        return value  # type: ignore[return-value]
    raise TypeError(f"Unexpected value {value!r}")


@attrs.define
class Room:
    url: str
    size: int | Unset = UNSET

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Room:
        d = dict(data)
        return cls(url=d.pop("url"), size=d.pop("size", UNSET))


@attrs.define
class Session:
    session_id: str
    status: Status
    room: Room | Unset = UNSET
    tags: list[str] | Unset = UNSET
    ratio: float | Unset = UNSET
    active: bool | Unset = UNSET
    started_at: datetime.datetime | Unset = UNSET
    ended_reason: None | str | Unset = UNSET  # noqa: RUF036 - as the generator writes it
    additional_properties: dict[str, Any] = attrs.field(init=False, factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Session:
        d = dict(data)
        room = d.pop("room", UNSET)
        started = d.pop("started_at", UNSET)
        made = cls(
            session_id=d.pop("session_id"),
            status=_check_status(d.pop("status")),
            room=UNSET if isinstance(room, Unset) else Room.from_dict(room),
            tags=d.pop("tags", UNSET),
            ratio=d.pop("ratio", UNSET),
            active=d.pop("active", UNSET),
            started_at=UNSET
            if isinstance(started, Unset)
            else datetime.datetime.fromisoformat(started),
            ended_reason=d.pop("ended_reason", UNSET),
        )
        made.additional_properties = d
        return made


GOOD: dict[str, Any] = {
    "session_id": "s-1",
    "status": "live",
    "room": {"url": "wss://x", "size": 2},
    "tags": ["a", "b"],
    "ratio": 1,  # an integer is a number
    "active": True,
    "started_at": "2026-11-29T10:00:00+00:00",
    "ended_reason": None,
    "extra": {"kept": True},
}


def test_a_body_that_fits_is_read_whole() -> None:
    session = read_model(Session, GOOD)
    assert session.status == "live"
    assert isinstance(session.room, Room)
    assert session.room.size == 2
    assert session.additional_properties == {"extra": {"kept": True}}
    assert read_model(Session, {"session_id": "s", "status": "ended"}).room is UNSET


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"session_id": 7}, "its session_id is an integer, not a string"),
        ({"status": "paused"}, "does not fit Session: Unexpected value 'paused'"),
        ({"status": None}, "does not fit Session"),
        ({"room": {"url": 3}}, "its room.url is an integer, not a string"),
        ({"room": {"url": "wss://x", "size": "2"}}, "its room.size is a string, not an integer"),
        ({"room": {"url": "wss://x", "size": True}}, "its room.size is a boolean, not an integer"),
        ({"tags": ["a", 1]}, "its tags is a list"),
        ({"tags": "ab"}, "its tags is a string"),
        ({"ratio": "1.5"}, "its ratio is a string, not a number"),
        ({"ratio": False}, "its ratio is a boolean, not a number"),
        ({"active": 1}, "its active is an integer, not a boolean"),
        ({"started_at": "yesterday"}, "does not fit Session"),
        ({"ended_reason": 5}, "its ended_reason is an integer, not null or a string"),
        ({"room": "wss://x"}, "does not fit Session"),
    ],
)
def test_a_body_that_breaks_its_model_names_the_field(change: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidReply, match=problem.replace("(", r"\(").replace(")", r"\)")):
        read_model(Session, {**GOOD, **change})


def test_a_missing_required_field_is_named() -> None:
    body = {k: v for k, v in GOOD.items() if k != "status"}
    with pytest.raises(InvalidReply, match="its body has no status field"):
        read_model(Session, body)
