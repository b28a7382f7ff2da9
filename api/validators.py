"""Field checks shared by the request schemas."""

from __future__ import annotations

from typing import Any

import orjson

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
