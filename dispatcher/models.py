"""Typed domain objects; asyncpg rows become models only here (`from_row`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from dispatcher.ids import ApiKeyId, EndpointId, TenantId


class Environment(StrEnum):
    SANDBOX = "sandbox"
    PRODUCTION = "production"


class Ordering(StrEnum):
    """Whether an endpoint gets each mailing's events strictly in event order."""

    NONE = "none"
    MAILING = "mailing"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    SUCCEEDED = "succeeded"
    DEAD = "dead"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Tenant:
    id: TenantId
    name: str
    created_at: datetime
    uid: str | None = None  # the platform's own customer id
    suspended_at: datetime | None = None

    @classmethod
    def from_row(cls, row: Any) -> Tenant:
        return cls(
            TenantId(row["id"]), row["name"], row["created_at"], row["uid"], row["suspended_at"]
        )


@dataclass(frozen=True)
class ApiKeyInfo:
    """A key as listed: never the key itself, only its recognisable prefix."""

    id: ApiKeyId
    tenant_id: TenantId
    environment: Environment
    key_prefix: str
    created_at: datetime
    revoked_at: datetime | None
    name: str | None = None
    last_used_at: datetime | None = None  # to the minute: written at most once a minute

    @classmethod
    def from_row(cls, row: Any) -> ApiKeyInfo:
        return cls(
            ApiKeyId(row["id"]),
            TenantId(row["tenant_id"]),
            Environment(row["environment"]),
            row["key_prefix"],
            row["created_at"],
            row["revoked_at"],
            row["name"],
            row["last_used_at"],
        )


@dataclass(frozen=True)
class Principal:
    """Who is calling the tenant API: one tenant in one environment."""

    tenant_id: TenantId
    environment: Environment
    key_id: ApiKeyId  # the API key's id, or the portal session's
    via: Literal["api_key", "portal"] = "api_key"


@dataclass(frozen=True)
class Endpoint:
    id: EndpointId
    tenant_id: TenantId
    environment: Environment
    url: str
    description: str | None
    event_types: list[str]
    enabled: bool
    disabled_reason: str | None
    metadata: dict[str, Any]
    standard_webhooks: bool
    created_at: datetime
    updated_at: datetime
    signing: str = "hmac"  # "hmac" or "ed25519", fixed at creation
    public_key: str | None = None  # the newest whpk_ key of an ed25519 endpoint
    rate_limit_per_second: int | None = None
    ordering: Ordering = field(default_factory=lambda: Ordering.NONE)
    secret: str | None = field(default=None, repr=False)

    @classmethod
    def from_row(cls, row: Any) -> Endpoint:
        return cls(
            EndpointId(row["id"]),
            TenantId(row["tenant_id"]),
            Environment(row["environment"]),
            row["url"],
            row["description"],
            list(row["event_types"]),
            row["enabled"],
            row["disabled_reason"],
            row["metadata"],
            row["standard_webhooks"],
            row["created_at"],
            row["updated_at"],
            row["signing"],
            row["public_key"],
            row["rate_limit_per_second"],
            Ordering(row["ordering"]),
        )


class Circuit(StrEnum):
    """An endpoint's circuit breaker: open backs it off as a whole; half-open sends one probe."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class EndpointState:
    """What an endpoint's delivery looks like right now, across all worker processes."""

    circuit: Circuit
    circuit_open_until: datetime | None
    concurrency_limit: int
    in_flight: int
    pending: int

    @classmethod
    def from_row(
        cls, row: Any, now: datetime, *, adaptive_limit: int, breaker_threshold: int
    ) -> EndpointState:
        """Same rule as the claim: past the failure threshold, one attempt at a time."""
        failing = row["consecutive_failures"] >= breaker_threshold
        until = row["circuit_open_until"]
        if until is not None and until > now:
            circuit = Circuit.OPEN
        elif failing:
            circuit = Circuit.HALF_OPEN
        else:
            circuit = Circuit.CLOSED
        return cls(
            circuit,
            until if circuit == Circuit.OPEN else None,
            1 if failing else adaptive_limit,
            row["in_flight"],
            row["pending"],
        )
