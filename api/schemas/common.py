"""Types and checks shared by the route schemas: one RFC 3339 type, one JSON object bound,
the ids every API names (tenant, mailing), and how requests are read.

Decisions:

- Requests are strict and forbid unknown fields (`REQUEST`): a typo is a 422, not ignored.
- ``mailing_id``: 1 to 128 characters from RFC 3986's unreserved set plus ``:``
  (``A-Z a-z 0-9 - . _ ~ :``), and not ``.`` or ``..``. Such an id reads the same in the
  URL path and in a batch body, never needs percent-encoding and can never be a ``/``.
- ``tenant_id``: 1 to 128 printable ASCII characters without spaces (ours are ``ten_<ULID>``).
  Whether the tenant exists is checked by the route, in the transaction.
- Times are RFC 3339 strings with an offset (``Z`` or ``+hh:mm``), read as UTC; a naive time
  is refused rather than guessed.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, ValidationInfo

from dispatcher.signing import canonical_json

REQUEST = ConfigDict(extra="forbid", strict=True)
MAX_JSON_OBJECT_BYTES = 16 * 1024
MAX_MAILING_ID_CHARS = 128
MAX_TENANT_ID_CHARS = 128


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


def until_after_since(until: datetime | None, info: ValidationInfo) -> datetime | None:
    """A time range's end, refused unless it is after its start (``since``)."""
    since = info.data.get("since")
    if until is not None and since is not None and until <= since:
        raise ValueError("must be after since")
    return until


_MAILING_ID = re.compile(rf"[A-Za-z0-9._~:-]{{1,{MAX_MAILING_ID_CHARS}}}")
MAILING_ID_PATTERN = f"^{_MAILING_ID.pattern}$"
_TENANT_ID = re.compile(rf"[!-~]{{1,{MAX_TENANT_ID_CHARS}}}")


def mailing_id_problem(value: str) -> str | None:
    """Why `value` is not a mailing id, or None; shared by the path and the batch body."""
    if not _MAILING_ID.fullmatch(value) or value in (".", ".."):
        return (
            f"must be 1 to {MAX_MAILING_ID_CHARS} characters from A-Z a-z 0-9 - . _ ~ : "
            "(and not '.' or '..')"
        )
    return None


def _check_mailing_id(value: str) -> str:
    problem = mailing_id_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _check_tenant_id(value: str) -> str:
    if not _TENANT_ID.fullmatch(value):
        raise ValueError(
            f"must be 1 to {MAX_TENANT_ID_CHARS} printable ASCII characters without spaces"
        )
    return value


MailingId = Annotated[
    str,
    Field(
        description="The platform's mailing id: A-Z a-z 0-9 - . _ ~ : only.",
        examples=["ml_01JTX3Y8Q6"],
        json_schema_extra={"pattern": f"^{_MAILING_ID.pattern}$"},
    ),
    AfterValidator(_check_mailing_id),
]
TenantIdField = Annotated[
    str,
    Field(
        json_schema_extra={"pattern": f"^{_TENANT_ID.pattern}$"},
        description="An existing tenant's id; an unknown one is a 422 on this field.",
        examples=["ten_01JTX3Y8Q6ZK4M1V9B5N7C2D3E"],
    ),
    AfterValidator(_check_tenant_id),
]
