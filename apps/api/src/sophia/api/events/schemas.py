"""What crosses HTTP for events: one incoming event, its payload rules per type, the answer."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from sophia.api.records.schemas import CreatedAt
from sophia.core.events import KEY_MAX_LENGTH, TRACE_ID_MAX_LENGTH, UUID7_PATTERN
from sophia.core.records import IDENTIFIER_PATTERN

SOURCE_MAX_LENGTH = 64


class UserEventPayload(BaseModel):
    """`user.event`: what a user did. Top-level fields besides these are kept."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1, examples=["deal.viewed"])
    user_id: str | None = Field(None, min_length=1, max_length=KEY_MAX_LENGTH)
    properties: dict[str, Any] = Field(default_factory=dict)


class SystemEventPayload(BaseModel):
    """`system.event`: what a system reports."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, examples=["sync.finished"])
    severity: Literal["debug", "info", "warning", "error"] | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)


class _EventIn(BaseModel):
    """One event of a `POST /api/v1/events` batch. `id` (a UUIDv7) makes resending safe: an id is
    stored once. Without one, the server assigns it."""

    model_config = ConfigDict(extra="forbid")
    key: str = Field(
        min_length=1, max_length=KEY_MAX_LENGTH, description="Orders events: one key, one order."
    )
    id: Annotated[str, Field(pattern=UUID7_PATTERN)] | None = None
    occurred_at: CreatedAt = None
    source: str = Field("api", pattern=IDENTIFIER_PATTERN, max_length=SOURCE_MAX_LENGTH)
    trace_id: str | None = Field(None, min_length=1, max_length=TRACE_ID_MAX_LENGTH)

    def payload_dict(self) -> dict[str, Any]:
        payload: BaseModel = self.payload  # type: ignore[attr-defined]
        return payload.model_dump(exclude_none=True)


class UserEventIn(_EventIn):
    type: Literal["user.event"]
    payload: UserEventPayload


class SystemEventIn(_EventIn):
    type: Literal["system.event"]
    payload: SystemEventPayload


EventIn = Annotated[UserEventIn | SystemEventIn, Field(discriminator="type")]
EVENT = TypeAdapter(EventIn)


class Accepted(BaseModel):
    """The answer to an accepted batch: every event is in JetStream."""

    accepted: int = Field(examples=[2])
    ids: list[str] = Field(description="Each event's id, in the order sent.")
