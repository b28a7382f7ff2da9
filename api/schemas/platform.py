"""Request and response bodies of the platform API (SPEC section 4), as pydantic models.

Decisions, so the platform knows what it will be refused before it sends it:

- ``mailing_id`` and ``tenant_id``: see `api.schemas.common`.
- ``occurred_at``: an RFC 3339 string with seconds and an offset (``Z`` or ``+hh:mm``);
  a naive time is refused rather than guessed as UTC. It may be at most one day after the
  server's clock (a clock skew or a bug beyond that would sort events nonsensically) and
  not before 2000-01-01. Default: the time the dispatcher accepts it.
- ``recipient`` and ``metadata``: JSON objects of at most 16 KiB each as JSON; they are
  echoed verbatim (canonical key order) in the event body.
- Requests are strict and forbid unknown fields: a typo is a 422, not ignored.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    ValidationInfo,
    field_validator,
)

from api.schemas.common import (
    MAX_JSON_OBJECT_BYTES,
    REQUEST,
    MailingId,
    Rfc3339,
    TenantIdField,
    bounded_json_object,
)
from dispatcher.models import Environment
from dispatcher.transitions import MailingStatus, MailType

MAX_TRACKING_NUMBER_CHARS = 100
MAX_OBJECT_BYTES = MAX_JSON_OBJECT_BYTES
MAX_BATCH = 1000
MAX_FUTURE = timedelta(days=1)
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)


def _check_object(value: dict[str, Any]) -> dict[str, Any]:
    """The event body is serialized with these bytes, so what cannot be must fail here."""
    bounded_json_object(value, MAX_OBJECT_BYTES)
    return value


JsonObject = Annotated[
    dict[str, Any],
    Field(description=f"Free JSON object, at most {MAX_OBJECT_BYTES} bytes; echoed verbatim."),
    AfterValidator(_check_object),
]
OccurredAt = Annotated[
    Rfc3339,
    Field(
        description="RFC 3339 with an offset; at most one day ahead of the server's clock. "
        "Defaults to the time of acceptance. Sent in UTC ('...Z').",
        examples=["2026-05-11T08:42:13Z"],
    ),
]


class TransitionIn(BaseModel):
    """Body of POST /internal/v1/mailings/{mailing_id}/transitions."""

    model_config = REQUEST

    tenant_id: TenantIdField
    environment: Environment = Field(strict=False)
    status: MailingStatus = Field(strict=False, description="The mailing's new status.")
    occurred_at: OccurredAt | None = None
    mail_type: MailType | None = Field(
        default=None,
        strict=False,
        description="Defaults to the mailing's known type, else 'standard'. "
        "'return_receipt' exists only for 'registered' mail.",
    )
    tracking_number: str | None = Field(
        default=None, min_length=1, max_length=MAX_TRACKING_NUMBER_CHARS
    )
    recipient: JsonObject | None = None
    metadata: JsonObject | None = None

    @field_validator("occurred_at")
    @classmethod
    def plausible_time(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        """Judged against the dispatcher's clock, passed as ``context={"now": ...}``."""
        if value is None:
            return None
        context = info.context if isinstance(info.context, dict) else {}
        now = context.get("now")
        if not isinstance(now, datetime):
            now = datetime.now(UTC)
        if value > now + MAX_FUTURE:
            raise ValueError("is more than one day in the future")
        if value < EARLIEST:
            raise ValueError(f"must not be before {EARLIEST:%Y-%m-%d}")
        return value


class BatchTransitionIn(TransitionIn):
    """One transition of a batch: the same fields plus the mailing it is about."""

    mailing_id: MailingId


class BatchIn(BaseModel):
    """Body of POST /internal/v1/transitions."""

    model_config = REQUEST

    transitions: list[BatchTransitionIn] = Field(
        min_length=1,
        max_length=MAX_BATCH,
        description=f"1 to {MAX_BATCH} transitions, applied in order in one transaction.",
    )


class TransitionOut(BaseModel):
    """202 for a new event; 200 with the mailing's original event when the status repeats."""

    event_id: str = Field(examples=["evt_01JTX3Y8Q6ZK4M1V9B5N7C2D3E"])
    event_type: str = Field(examples=["mailing.delivered"])
    status: Literal["accepted", "repeated"]


class InvalidTransitionDetail(BaseModel):
    type: Literal["invalid_transition"] = "invalid_transition"
    message: str = Field(examples=["mailing is 'delivered'; cannot go back to 'printed'"])
    current_status: MailingStatus | None = Field(
        description="The mailing's status, which did not change; null for an unknown mailing."
    )


class InvalidTransition(BaseModel):
    """409: backward or impossible; nothing was emitted."""

    error: InvalidTransitionDetail


class ItemResult(BaseModel):
    """The outcome of one batch item, at its index."""

    index: int
    mailing_id: str
    status: Literal["accepted", "repeated", "refused"]
    event_id: str | None = Field(
        default=None, description="The new event, or the original one when repeated."
    )
    event_type: str | None = None
    error: InvalidTransitionDetail | None = Field(default=None, description="Only when refused.")


class BatchOut(BaseModel):
    """200 whatever the items' outcomes: one result per transition, in request order."""

    results: list[ItemResult]
