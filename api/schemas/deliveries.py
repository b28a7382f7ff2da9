"""Bodies of the delivery routes (the delivery log, replay, retry), as pydantic models.

The same models validate input and feed the OpenAPI document. Times are RFC 3339 with an
offset (`2026-05-11T08:42:13Z`): a time without a zone is ambiguous and refused.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from api.pagination import ListPage, PageQuery
from api.schemas.common import Rfc3339, until_after_since
from dispatcher.ids import format_delivery_id
from dispatcher.models import DeliveryStatus
from dispatcher.store.deliveries import Attempt, Delivery, ReplayScope

# ---- the delivery log -------------------------------------------------------------------


class DeliveryListQuery(PageQuery):
    """GET /v1/webhooks/{id}/deliveries: newest first, filtered by status, type and time."""

    status: DeliveryStatus | None = Field(
        default=None, description="Only deliveries in this status."
    )
    event_type: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="Only deliveries of this event type.",
        examples=["mailing.delivered"],
    )
    since: Rfc3339 | None = Field(
        default=None, description="Only deliveries created at or after this time."
    )
    until: Rfc3339 | None = Field(
        default=None, description="Only deliveries created before this time."
    )

    @field_validator("until")
    @classmethod
    def _after_since(cls, until: datetime | None, info: ValidationInfo) -> datetime | None:
        return until_after_since(until, info)


class AttemptObject(BaseModel):
    """One POST to the endpoint, as recorded when it ended."""

    attempt: int = Field(description="1 for the first attempt; the X-Delivery-Attempt sent.")
    started_at: datetime
    duration_ms: float
    status_code: int | None = Field(description="The HTTP status; null when none came back.")
    outcome: str = Field(
        description="success, redirect, http_4xx, http_5xx, timeout, connection_error, "
        "tls_error or blocked_address.",
        examples=["http_5xx"],
    )
    error_class: str | None = Field(
        description="The outcome of a failed attempt (null on success).", examples=["timeout"]
    )
    error: str | None = Field(description="A short reason; never the URL or its credentials.")
    response_body: str | None = Field(
        description="The first 1 KiB of the response body, decoded leniently as UTF-8."
    )


class DeliveryObject(BaseModel):
    """One event sent to one endpoint, with its attempts (the newest 50 at most)."""

    id: str = Field(examples=["dlv_42"])
    object: Literal["delivery"] = "delivery"
    event_id: str
    event_type: str
    endpoint_id: str
    status: DeliveryStatus
    attempt_count: int = Field(description="Attempts made so far, replays included.")
    next_attempt_at: datetime | None = Field(description="When the next attempt is due (pending).")
    created_at: datetime
    completed_at: datetime | None = Field(description="When it succeeded, died or was cancelled.")
    replayed_at: datetime | None = Field(
        description="The last replay or retry; its retry window counts from here."
    )
    last_status_code: int | None
    last_outcome: str | None
    attempts: list[AttemptObject] = Field(description="Oldest first.")


class DeliveryList(ListPage[DeliveryObject]):
    """A page of an endpoint's deliveries, newest first."""


class ReplayRequest(BaseModel):
    """Body of POST /v1/webhooks/{id}/replay; an empty body replays every dead letter."""

    model_config = ConfigDict(extra="forbid")

    since: Rfc3339 | None = Field(
        default=None, description="Deliveries created at or after this time (default: all)."
    )
    until: Rfc3339 | None = Field(
        default=None, description="Deliveries created before this time (default: now)."
    )
    status: ReplayScope = Field(
        default=ReplayScope.DEAD,
        description="'dead': dead letters only. 'failed': also cancelled deliveries and "
        "pending ones that have failed at least once (they are sent now instead of after "
        "their backoff).",
    )
    dry_run: bool = Field(
        default=False,
        strict=True,
        description="Only count what would be re-queued (200 with `matching`); change nothing.",
    )

    @field_validator("until")
    @classmethod
    def _after_since(cls, until: datetime | None, info: ValidationInfo) -> datetime | None:
        return until_after_since(until, info)


class ReplayResult(BaseModel):
    replayed: int = Field(description="Deliveries re-queued, due now.")


class ReplayPreview(BaseModel):
    """The answer to a dry run: what the same replay would take now."""

    matching: int = Field(description="Deliveries the replay would re-queue.")


def attempt_object(attempt: Attempt) -> AttemptObject:
    return AttemptObject(
        attempt=attempt.attempt,
        started_at=attempt.started_at,
        duration_ms=round(attempt.duration_ms, 3),
        status_code=attempt.status_code,
        outcome=attempt.outcome,
        error_class=None if attempt.outcome == "success" else attempt.outcome,
        error=attempt.error,
        response_body=attempt.response_body,
    )


def delivery_object(delivery: Delivery, attempts: list[Attempt]) -> DeliveryObject:
    pending = delivery.status == DeliveryStatus.PENDING
    return DeliveryObject(
        id=format_delivery_id(delivery.id),
        event_id=delivery.event_id,
        event_type=delivery.event_type,
        endpoint_id=delivery.endpoint_id,
        status=delivery.status,
        attempt_count=delivery.attempts,
        next_attempt_at=delivery.next_attempt_at if pending else None,
        created_at=delivery.created_at,
        completed_at=delivery.completed_at,
        replayed_at=delivery.replayed_at,
        last_status_code=delivery.last_status_code,
        last_outcome=delivery.last_outcome,
        attempts=[attempt_object(a) for a in attempts],
    )
