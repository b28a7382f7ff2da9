"""Checks and types shared by the request schemas: one RFC 3339 type, one JSON object bound."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from pydantic import BeforeValidator, Field

from dispatcher.signing import canonical_json

MAX_JSON_OBJECT_BYTES = 16 * 1024


def bounded_json_object(value: dict[str, Any], limit: int = MAX_JSON_OBJECT_BYTES) -> bytes:
    """Serialize as an event body will be, refusing what cannot be or is too large.

    Returns the bytes so a caller can look further (jsonb, for one, cannot store NUL).
    """
    try:
        encoded = canonical_json(value)
    except orjson.JSONEncodeError:
        raise ValueError(
            "cannot be serialized as JSON (nested too deeply, or an integer beyond 64 bits)"
        ) from None
    if len(encoded) > limit:
        raise ValueError(f"must be at most {limit} bytes as JSON (is {len(encoded)})")
    return encoded


_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})?")
NAIVE = "must carry a timezone offset ('Z' or '+hh:mm'); naive times are refused"


def parse_rfc3339(value: Any) -> Any:
    """Only RFC 3339 strings: pydantic's lax parsing would take Unix numbers and bare dates."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str) and (match := _RFC3339.fullmatch(value)):
        if match.group(2) is None:
            raise ValueError(NAIVE)
        try:
            parsed = datetime.fromisoformat(value.upper())
        except ValueError:
            raise ValueError("is not a valid date and time") from None
    else:
        raise ValueError("must be an RFC 3339 date-time such as '2026-05-11T08:42:13Z'")
    if parsed.tzinfo is None:
        raise ValueError(NAIVE)
    return parsed.astimezone(UTC)


# Every time a request carries: an RFC 3339 string with an offset, read as UTC.
Rfc3339 = Annotated[
    datetime, BeforeValidator(parse_rfc3339), Field(examples=["2026-05-11T08:42:13Z"])
]
