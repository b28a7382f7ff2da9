"""Request and response bodies of the webhook-endpoint routes, as pydantic models.

The same models validate input and feed the OpenAPI document, so the two cannot drift.
Requests are strict (``"enabled": "yes"`` is refused, not guessed) and forbid unknown
fields, so a typo is a 422 instead of a silently ignored setting.

Secrets a tenant brings must be either ``whsec_`` + standard base64 of 24 to 64 bytes (what
we generate, and what Standard Webhooks libraries decode), or 24 to 128 printable ASCII
characters without spaces (used as the HMAC key as is). A malformed ``whsec_`` value is
refused rather than used raw: it is almost certainly a copy-paste error.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from api.pagination import ListPage
from api.schemas.common import MAX_JSON_OBJECT_BYTES, REQUEST, bounded_json_object
from api.urls import MAX_URL_LENGTH, redact_url
from dispatcher.models import Circuit, Endpoint, EndpointState, Ordering
from dispatcher.ratelimit import MAX_RATE_PER_SECOND
from dispatcher.signing import SECRET_PREFIX
from dispatcher.transitions import EVENT_TYPES, WILDCARD_PATTERNS, valid_event_pattern

MAX_METADATA_BYTES = MAX_JSON_OBJECT_BYTES
MAX_DESCRIPTION_CHARS = 500
MAX_OVERLAP_SECONDS = 7 * 24 * 3600
Signing = Literal["hmac", "ed25519"]


def _check_pattern(pattern: str) -> str:
    if not valid_event_pattern(pattern):
        raise ValueError(
            f"unknown event type '{pattern[:100]}'; use '*', 'mailing.*' or a type "
            "listed by GET /v1/event-types"
        )
    return pattern


def _dedupe(patterns: list[str]) -> list[str]:
    return list(dict.fromkeys(patterns))


_NO_NUL = "must not contain NUL (\\u0000) characters"


def _check_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    encoded = bounded_json_object(metadata, MAX_METADATA_BYTES)
    if b"\\u0000" in encoded:  # orjson's only spelling of NUL; jsonb cannot store it
        raise ValueError(_NO_NUL)
    return metadata


def _check_no_nul(text: str) -> str:
    """PostgreSQL text cannot hold NUL: refuse it here, as a 422 on the field."""
    if "\x00" in text:
        raise ValueError(_NO_NUL)
    return text


def _check_secret(secret: str) -> str:
    if secret.startswith(SECRET_PREFIX):
        encoded = secret[len(SECRET_PREFIX) :]
        try:
            raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"a '{SECRET_PREFIX}' secret must continue in base64") from None
        if not 24 <= len(raw) <= 64:
            raise ValueError(f"a '{SECRET_PREFIX}' secret must encode 24 to 64 bytes")
        return secret
    if not 24 <= len(secret) <= 128 or any(not "!" <= c <= "~" for c in secret):
        raise ValueError(
            f"must be '{SECRET_PREFIX}' + base64 of 24 to 64 bytes, "
            "or 24 to 128 printable ASCII characters without spaces"
        )
    return secret


EventPattern = Annotated[
    str,
    Field(json_schema_extra={"enum": [*WILDCARD_PATTERNS, *EVENT_TYPES]}),
    AfterValidator(_check_pattern),
]
EventList = Annotated[
    list[EventPattern],
    Field(
        min_length=1,
        max_length=64,
        description="Event types to receive: '*' for all, 'mailing.*', or exact types. "
        "Duplicates are removed, order kept.",
        examples=[["mailing.delivered", "mailing.failed"]],
    ),
    AfterValidator(_dedupe),
]
Url = Annotated[
    str,
    Field(
        description="Absolute http(s) URL; https for production endpoints. "
        "'user:password@' is sent as HTTP Basic auth and redacted when shown.",
        json_schema_extra={"format": "uri", "maxLength": MAX_URL_LENGTH},
        examples=["https://example.com/webhooks"],
    ),
]
Description = Annotated[str, Field(max_length=MAX_DESCRIPTION_CHARS), AfterValidator(_check_no_nul)]
Metadata = Annotated[
    dict[str, Any],
    Field(description=f"Free JSON object, at most {MAX_METADATA_BYTES} bytes."),
    AfterValidator(_check_metadata),
]
Secret = Annotated[
    str,
    Field(
        min_length=24,
        max_length=128,
        description=f"'{SECRET_PREFIX}' + base64 of 24-64 bytes, or 24-128 printable ASCII "
        "characters; generated when omitted.",
    ),
    AfterValidator(_check_secret),
]

RateLimit = Annotated[
    int,
    Field(
        ge=1,
        le=MAX_RATE_PER_SECOND,
        description="At most this many requests start in any 1-second window, across all "
        "workers; deliveries beyond it wait their turn (they never fail because of it). "
        f"A whole number from 1 to {MAX_RATE_PER_SECOND}; null: no limit.",
        examples=[50],
    ),
]
OrderingField = Annotated[
    Ordering,
    Field(
        strict=False,  # the JSON string names the value; nothing else is accepted
        description="'mailing': the events of one mailing reach this endpoint strictly in "
        "event order (a later one waits while an earlier one is pending or retrying, until "
        "it succeeds or is dead; other mailings are not held up). 'none': unordered, fastest.",
    ),
]


class EndpointCreate(BaseModel):
    """Body of POST /v1/webhooks."""

    model_config = REQUEST

    url: Url
    events: EventList
    description: Description | None = None
    enabled: bool = True
    secret: Secret | None = None
    metadata: Metadata = Field(default_factory=dict)
    standard_webhooks: bool = Field(
        default=False, description="Also send the Standard Webhooks signature headers."
    )
    signing: Signing = Field(
        default="hmac",
        description="'hmac': shared secrets sign X-Bjet24-Signature, X-Signature (and the "
        "Standard Webhooks v1 signature when standard_webhooks is true). 'ed25519': a key "
        "pair signs the Standard Webhooks headers with a v1a signature, which receivers "
        "verify with the endpoint's public_key; there is no shared secret. Fixed at creation.",
    )
    rate_limit_per_second: RateLimit | None = None
    ordering: OrderingField = Ordering.NONE


_NOT_NULLABLE = ("url", "events", "enabled", "metadata", "standard_webhooks", "ordering")


def _document_not_nullable(schema: dict[str, Any]) -> None:
    """The types say `| None` only to tell 'absent' from 'given'; null is refused, say so."""
    for name in _NOT_NULLABLE:
        prop = schema["properties"][name]
        variants = [v for v in prop.pop("anyOf", []) if v.get("type") != "null"]
        prop.pop("default", None)
        if variants:
            prop.update(variants[0])


class EndpointUpdate(BaseModel):
    """Body of PATCH and PUT /v1/webhooks/{id}: only the fields given change.

    ``description: null`` clears the description; null for any other field is refused.
    """

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra=_document_not_nullable)

    url: Url | None = None
    events: EventList | None = None
    description: Description | None = None
    enabled: bool | None = None
    metadata: Metadata | None = None
    standard_webhooks: bool | None = None
    signing: Any = Field(
        default=None,
        description="Not changeable: an endpoint signs as chosen at creation. Create a new "
        "endpoint to switch, and delete the old one once receivers verify the new one.",
    )

    @field_validator("signing", mode="before")
    @classmethod
    def _fixed_signing(cls, value: Any) -> Any:
        raise ValueError(
            "signing is fixed at creation; create a new endpoint to change how it signs"
        )

    rate_limit_per_second: RateLimit | None = None
    ordering: OrderingField | None = None

    @field_validator(*_NOT_NULLABLE, mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("must not be null; omit the field to keep its value")
        return value

    def clears_description(self) -> bool:
        return "description" in self.model_fields_set and self.description is None

    def sets_rate_limit(self) -> bool:
        """Given, as a number or as null (which removes the limit)."""
        return "rate_limit_per_second" in self.model_fields_set


class RotateSecret(BaseModel):
    """Body of POST /v1/webhooks/{id}/rotate-secret; an empty body takes the defaults."""

    model_config = REQUEST

    overlap_seconds: int | None = Field(
        default=None,
        ge=0,
        le=MAX_OVERLAP_SECONDS,
        description="How long the previous secrets keep signing alongside the new one "
        "(default: the server's DISPATCHER_SECRET_OVERLAP_SECONDS, 86400).",
    )
    secret: Secret | None = None


class EndpointObject(BaseModel):
    """A webhook endpoint as shown to its tenant: no secret, URL credentials masked."""

    id: str = Field(examples=["ep_01JTV7ZB4W7M0Q9D3Y8K5N2C6R"])
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    url: str = Field(description="The URL with any 'user:password@' replaced by '***:***@'.")
    events: list[str]
    description: str | None
    enabled: bool
    disabled_reason: str | None = Field(
        description="Why the endpoint is disabled: by the tenant, or by a 410 Gone reply."
    )
    metadata: dict[str, Any]
    standard_webhooks: bool
    signing: Signing = Field(description="'hmac' or 'ed25519'; see POST /v1/webhooks.")
    public_key: str | None = Field(
        description="ed25519 endpoints: the newest public key ('whpk_' + base64 of the 32-byte "
        "key), to verify the v1a signatures with. Not a secret. Null for hmac endpoints."
    )
    rate_limit_per_second: int | None = Field(
        description="Most requests started in any 1-second window; null: no limit."
    )
    ordering: Ordering = Field(description="'mailing': each mailing's events in event order.")
    created_at: datetime
    updated_at: datetime


class DeliveryStateObject(BaseModel):
    """The endpoint's live delivery state, shared by every worker process."""

    circuit: Circuit = Field(
        description="'closed': normal; 'open': it kept failing, so it is backed off as a "
        "whole until circuit_open_until; 'half_open': the back-off is over and one attempt "
        "at a time probes it until one succeeds."
    )
    circuit_open_until: datetime | None = Field(
        description="When an open circuit lets the next probe through; null unless open."
    )
    concurrency_limit: int = Field(
        description="How many requests may be in flight to this endpoint at once right now."
    )
    in_flight: int = Field(description="Requests being sent to it right now.")
    pending: int = Field(
        description="Deliveries waiting: due now, or scheduled for a retry (in flight excluded)."
    )


class EndpointDetail(EndpointObject):
    """One endpoint, as GET /v1/webhooks/{id} shows it: with its live delivery state."""

    delivery_state: DeliveryStateObject


class EndpointWithSecret(EndpointObject):
    """Returned by create and rotate-secret: the only times the secret is ever shown."""

    secret: str | None = Field(
        default=None,
        description="The signing secret; store it now, it is not shown again. Null for an "
        "ed25519 endpoint: it has no shared secret (verify with public_key). Absent from the "
        "replay of an Idempotency-Key retry: a stored answer never keeps a secret.",
    )


class EndpointList(ListPage[EndpointObject]):
    """A page of endpoints, newest first."""


class EventType(BaseModel):
    name: str = Field(examples=["mailing.delivered"])
    description: str
    example: dict[str, Any] = Field(
        description="A body of this type as endpoints receive it (illustrative values)."
    )


class EventTypeList(ListPage[EventType]):
    """The whole catalog, in one page."""


def endpoint_object(endpoint: Endpoint) -> EndpointObject:
    return EndpointObject(
        id=endpoint.id,
        url=redact_url(endpoint.url),
        events=endpoint.event_types,
        description=endpoint.description,
        enabled=endpoint.enabled,
        disabled_reason=endpoint.disabled_reason,
        metadata=endpoint.metadata,
        standard_webhooks=endpoint.standard_webhooks,
        signing=endpoint.signing,
        public_key=endpoint.public_key,
        rate_limit_per_second=endpoint.rate_limit_per_second,
        ordering=endpoint.ordering,
        created_at=endpoint.created_at,
        updated_at=endpoint.updated_at,
    )


def endpoint_with_secret(endpoint: Endpoint) -> EndpointWithSecret:
    """Create and rotate answers: the new HMAC secret, or the new public key (ed25519)."""
    if endpoint.secret is None and endpoint.signing == "hmac":
        raise ValueError("endpoint_with_secret needs an endpoint that carries its new secret")
    shown = endpoint_object(endpoint)
    return EndpointWithSecret(**shown.model_dump(), secret=endpoint.secret)


def endpoint_detail(endpoint: Endpoint, state: EndpointState) -> EndpointDetail:
    return EndpointDetail(
        **endpoint_object(endpoint).model_dump(),
        delivery_state=DeliveryStateObject(
            circuit=state.circuit,
            circuit_open_until=state.circuit_open_until,
            concurrency_limit=state.concurrency_limit,
            in_flight=state.in_flight,
            pending=state.pending,
        ),
    )
