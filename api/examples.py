"""Example event bodies for the catalog (GET /v1/event-types), built by the real serializer."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from typing import Any

import orjson

from dispatcher.events import event_body
from dispatcher.transitions import EVENT_PREFIX, TEST_EVENT_TYPE

EXAMPLE_EVENT_ID = "evt_01JTV7ZB4W7M0Q9D3Y8K5N2C6R"
EXAMPLE_TIME = datetime(2026, 5, 11, 8, 42, 13, tzinfo=UTC)


def _data(event_type: str) -> dict[str, Any]:
    if event_type == TEST_EVENT_TYPE:
        return {"endpoint_id": "ep_01JTV80D2N3X4Y5Z6A7B8C9D0E", "message": "test event"}
    status = event_type.removeprefix(EVENT_PREFIX)
    return {
        "mailing_id": "ml_2026_000123",
        "status": status,
        "mail_type": "registered" if status == "return_receipt" else "standard",
        "tracking_number": "1A01234567890",
        "recipient": {"name": "Jeanne Martin", "postal_code": "69002", "country": "FR"},
        "metadata": {"order_ref": "A-1042"},
    }


@cache
def _example(event_type: str) -> bytes:
    return event_body(EXAMPLE_EVENT_ID, event_type, EXAMPLE_TIME, _data(event_type))


def example_event(event_type: str) -> dict[str, Any]:
    """A fresh copy each call: the caller may change it."""
    found: dict[str, Any] = orjson.loads(_example(event_type))
    return found
