"""Bodies of the test-send route (POST /v1/webhooks/{id}/test), as pydantic models."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field

from api.schemas.common import MAX_JSON_OBJECT_BYTES, REQUEST, bounded_json_object
from dispatcher.transitions import EVENT_TYPES, TEST_EVENT_TYPE

MAX_TEST_DATA_BYTES = MAX_JSON_OBJECT_BYTES


def _known_event_type(value: str) -> str:
    if value not in EVENT_TYPES:
        raise ValueError(
            f"unknown event type '{value[:100]}'; use one listed by GET /v1/event-types"
        )
    return value


def _small_json_object(value: dict[str, Any]) -> dict[str, Any]:
    bounded_json_object(value, MAX_TEST_DATA_BYTES)
    return value


class SendTestRequest(BaseModel):
    """Body of POST /v1/webhooks/{id}/test; an empty body sends a `webhook.test` event."""

    model_config = REQUEST

    event_type: Annotated[str, AfterValidator(_known_event_type)] = Field(
        default=TEST_EVENT_TYPE,
        examples=["mailing.delivered"],
        json_schema_extra={"enum": list(EVENT_TYPES)},
    )
    data: Annotated[dict[str, Any], AfterValidator(_small_json_object)] | None = Field(
        default=None,
        description="The event's `data` (default: a sample for the event type), "
        f"at most {MAX_TEST_DATA_BYTES} bytes.",
    )


class SendTestResult(BaseModel):
    """How the one attempt went; the call itself succeeded even when the endpoint failed."""

    success: bool = Field(description="True when the endpoint answered 2xx in time.")
    event_id: str = Field(description="The test event's id; test events are not stored.")
    event_type: str
    status_code: int | None
    duration_ms: float
    outcome: str = Field(examples=["success", "http_5xx", "blocked_address"])
    error: str | None
    response_body: str | None = Field(description="The first 1 KiB of the response body.")
