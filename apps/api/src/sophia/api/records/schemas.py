"""What crosses HTTP for records: request bodies and their validation rules."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from sophia.core.documents import describe, document_problem, text_problem
from sophia.core.records import EXTERNAL_ID_MAX_LENGTH, EXTERNAL_ID_PATTERN, IDENTIFIER_PATTERN


def _representable(value: datetime | None) -> datetime | None:
    """A timestamp that still exists in UTC (0001-01-01T00:00+14:00 does not)."""
    if value is not None:
        try:
            value.astimezone(UTC)
        except OverflowError:
            raise ValueError("the timestamp is out of range in UTC") from None
    return value


def _storable_text(value: str) -> str:
    if (problem := text_problem(value)) is not None:
        raise ValueError(problem)
    return value


PlainText = Annotated[str, AfterValidator(_storable_text)]
"""Text a query compares in PostgreSQL: no NUL, no lone surrogate (refused there, naming no field)."""
Moment = Annotated[AwareDatetime | None, AfterValidator(_representable)]
"""A timestamp with its UTC offset (RFC 3339), one that exists in UTC: what every route takes (a
time without an offset would be read in the server's own time zone)."""
CreatedAt = Moment


def check_storable(value: Any) -> None:
    """Raise ValueError, saying where, for what a document may not hold (`sophia.core.documents`):
    NaN/Infinity, NUL or a lone surrogate in text, nesting past `MAX_DEPTH`."""
    found = document_problem(value)
    if found is not None:
        where, problem = found
        raise ValueError(f"{describe(where)}: {problem}" if where else problem)


def _storable_data(data: dict[str, Any]) -> dict[str, Any]:
    check_storable(data)
    return data


class RecordWrite(BaseModel):
    """The body of `PUT /api/v1/records/{source_system}/{kind}/{external_id}`."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "data": {
                        "dealname": "Acme renewal",
                        "amount": "12000",
                        "dealstage": "qualified",
                    },
                    "created_at": "2026-03-01T09:30:00Z",
                }
            ]
        },
    )

    data: dict[str, Any] = Field(description="The record's fields, as the source system has them.")
    created_at: CreatedAt = Field(
        None, description="When the source created it (default: now). Kept on later updates."
    )

    _storable = field_validator("data")(classmethod(lambda cls, data: _storable_data(data)))


class RecordLine(BaseModel):
    """One line of `POST /api/v1/records:bulk` (NDJSON)."""

    model_config = ConfigDict(extra="forbid")

    source_system: str = Field(pattern=IDENTIFIER_PATTERN)
    kind: str = Field(pattern=IDENTIFIER_PATTERN)
    external_id: str = Field(min_length=1, max_length=EXTERNAL_ID_MAX_LENGTH, pattern=EXTERNAL_ID_PATTERN)
    data: dict[str, Any]
    created_at: CreatedAt = None
    # No storable-data validator here: walking every line's data costs the bulk path ~10 % of its
    # throughput; `parse_line` checks the raw line instead (strict JSON; the walk only for a line
    # that holds an escaped NUL or enough brackets to nest too deep).


EXAMPLE_RECORD: dict[str, Any] = {
    "id": "019ab3c2-5f10-7c1e-9b2a-4c8d2e6f7a10",
    "source_system": "hubspot",
    "kind": "deal",
    "external_id": "deal-1001",
    "data": {"dealname": "Acme renewal", "amount": "12000", "dealstage": "contractsent"},
    "version": 2,
    "created_at": "2026-03-01T09:30:00+00:00",
    "updated_at": "2026-11-25T08:02:30.123456+00:00",
    "deleted_at": None,
}


class BulkResult(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"received": 1000, "created": 990, "updated": 10}]}
    )

    received: int = Field(description="Lines holding a record.")
    created: int
    updated: int


class RecordOut(BaseModel):
    """A record as returned (documentation of the JSON the database builds)."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_RECORD]})

    id: str
    source_system: str
    kind: str
    external_id: str
    data: dict[str, Any]
    version: int
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None


class RecordPage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"items": [EXAMPLE_RECORD], "next_cursor": "MS4wMTlhYjNjMjVmMTA"}]}
    )

    items: list[RecordOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null at the end.")
