"""Bodies of the event log route (GET /v1/events), as pydantic models."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from api.pagination import ListPage, PageQuery
from dispatcher.ids import format_delivery_id
from dispatcher.models import DeliveryStatus
from dispatcher.store.deliveries import Delivery
from dispatcher.store.events import StoredEvent


class EventListQuery(PageQuery):
    """GET /v1/events: the events of one mailing, newest first."""

    mailing_id: str = Field(min_length=1, max_length=255, description="Required.")


class EventDelivery(BaseModel):
    """Where one event stands at one endpoint."""

    endpoint_id: str
    delivery_id: str = Field(examples=["dlv_42"])
    status: DeliveryStatus
    attempt_count: int
    last_status_code: int | None
    last_outcome: str | None
    next_attempt_at: datetime | None
    completed_at: datetime | None


class EventObject(BaseModel):
    event_id: str = Field(examples=["evt_01JTV7ZB4W7M0Q9D3Y8K5N2C6R"])
    object: Literal["event"] = "event"
    event_type: str
    occurred_at: datetime
    created_at: datetime = Field(description="When the dispatcher accepted it.")
    mailing_id: str | None
    data: dict[str, Any] = Field(description="The event's data, as sent to endpoints.")
    deliveries: list[EventDelivery] = Field(description="One per endpoint it was fanned out to.")


class EventList(ListPage[EventObject]):
    """A page of one mailing's events, newest first."""


def event_object(event: StoredEvent, deliveries: list[Delivery]) -> EventObject:
    return EventObject(
        event_id=event.id,
        event_type=event.event_type,
        occurred_at=event.occurred_at,
        created_at=event.created_at,
        mailing_id=event.mailing_id,
        data=event.data(),
        deliveries=[
            EventDelivery(
                endpoint_id=d.endpoint_id,
                delivery_id=format_delivery_id(d.id),
                status=d.status,
                attempt_count=d.attempts,
                last_status_code=d.last_status_code,
                last_outcome=d.last_outcome,
                next_attempt_at=d.next_attempt_at if d.status == DeliveryStatus.PENDING else None,
                completed_at=d.completed_at,
            )
            for d in deliveries
        ],
    )
