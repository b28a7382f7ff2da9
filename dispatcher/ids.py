"""Public identifiers: a type prefix and a ULID, so ids sort by creation time."""

from __future__ import annotations

import os
import time
from typing import NewType

TenantId = NewType("TenantId", str)
EndpointId = NewType("EndpointId", str)
EventId = NewType("EventId", str)
ApiKeyId = NewType("ApiKeyId", str)
DeliveryId = NewType("DeliveryId", int)

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid(now_ms: int | None = None, rand: bytes | None = None) -> str:
    """26-character Crockford ULID: 48 bits of milliseconds, 80 random bits."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (ms << 80) | int.from_bytes(rand if rand is not None else os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    return f"{prefix}_{ulid()}"


def tenant_id() -> TenantId:
    return TenantId(new_id("ten"))


def endpoint_id() -> EndpointId:
    return EndpointId(new_id("ep"))


def event_id() -> EventId:
    return EventId(new_id("evt"))


def api_key_id() -> ApiKeyId:
    return ApiKeyId(new_id("key"))


def format_delivery_id(value: int) -> str:
    return f"dlv_{value}"


def parse_delivery_id(text: str) -> DeliveryId | None:
    """None for anything that is not one of ours, so the caller answers 404."""
    if not text.startswith("dlv_") or not text[4:].isascii() or not text[4:].isdigit():
        return None
    value = int(text[4:]) if len(text) <= 24 else 0
    return DeliveryId(value) if 0 < value < 2**63 else None  # a bigint, or not ours
