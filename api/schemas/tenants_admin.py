"""Bodies of the platform's administration routes (tenants, their keys, their usage).

Decisions:

- ``name``: 1 to 200 characters, not blank, no control characters.
- ``uid``: the platform's own customer id, 1 to 128 printable ASCII characters without
  spaces; unique among live tenants (a deleted tenant's uid may be used again).
- Requests are strict and forbid unknown fields: a typo is a 422, not ignored.
- Usage ranges are whole UTC days, ``from`` and ``to`` both included, at most 366 days;
  the default is the 30 days up to today. Days without activity are left out.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from api.pagination import ListPage, PageQuery
from api.schemas.common import REQUEST
from dispatcher.models import ApiKeyInfo, Environment, Tenant

MAX_NAME_CHARS = 200
MAX_UID_CHARS = 128
MAX_KEY_NAME_CHARS = 100
MAX_USAGE_DAYS = 366

_UID = re.compile(rf"[!-~]{{1,{MAX_UID_CHARS}}}")
UID_PATTERN = f"^{_UID.pattern}$"


def _check_name(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in value):
        raise ValueError("must not contain control characters")
    return value


def _check_uid(value: str) -> str:
    if not _UID.fullmatch(value):
        raise ValueError(f"must be 1 to {MAX_UID_CHARS} printable ASCII characters without spaces")
    return value


Name = Annotated[
    str,
    Field(min_length=1, max_length=MAX_NAME_CHARS, examples=["ACME Logistics"]),
    AfterValidator(_check_name),
]
Uid = Annotated[
    str,
    Field(
        description="The platform's own customer id; unique among live tenants.",
        examples=["cust_4711"],
        json_schema_extra={"pattern": UID_PATTERN},
    ),
    AfterValidator(_check_uid),
]
KeyName = Annotated[
    str,
    Field(min_length=1, max_length=MAX_KEY_NAME_CHARS, examples=["billing backend"]),
    AfterValidator(_check_name),
]


class TenantIn(BaseModel):
    """Body of POST /internal/v1/tenants."""

    model_config = REQUEST

    name: Name
    uid: Uid | None = Field(
        default=None,
        description="Retrying with the same uid answers 200 with the tenant created first; "
        "the same uid with another name is a 409.",
    )


class TenantPatch(BaseModel):
    """Body of PATCH /internal/v1/tenants/{id}: only the fields given change."""

    model_config = REQUEST

    name: Name | None = None
    suspended: bool | None = Field(
        default=None,
        description="true: its keys are refused with 403 and its deliveries wait (their "
        "max age keeps counting); false: resumed, what waited is sent at once.",
    )


class TenantObject(BaseModel):
    id: str = Field(examples=["ten_01JTX3Y8Q6ZK4M1V9B5N7C2D3E"])
    object: Literal["tenant"] = "tenant"
    uid: str | None
    name: str
    suspended: bool
    suspended_at: datetime | None
    created_at: datetime


class TenantList(ListPage[TenantObject]):
    """A page of tenants, newest first."""


class TenantListQuery(PageQuery):
    uid: str | None = Field(
        default=None, min_length=1, max_length=MAX_UID_CHARS, description="Only this uid's."
    )


class TenantDeletion(BaseModel):
    """202: the tenant is gone for every reader; its rows are still being removed."""

    id: str
    object: Literal["tenant_deletion"] = "tenant_deletion"
    status: Literal["in_progress"] = "in_progress"


class ApiKeyIn(BaseModel):
    """Body of POST /internal/v1/tenants/{id}/keys."""

    model_config = REQUEST

    environment: Environment = Field(strict=False, description="'sandbox' or 'production'.")
    name: KeyName | None = None


class ApiKeyObject(BaseModel):
    """A key as listed: never the key itself."""

    id: str = Field(examples=["key_01JTX3Y8Q6ZK4M1V9B5N7C2D3E"])
    object: Literal["api_key"] = "api_key"
    name: str | None
    environment: Environment
    prefix: str = Field(description="The key's first characters, to recognise it.")
    created_at: datetime
    last_used_at: datetime | None = Field(
        description="When it last authenticated a request, to the minute."
    )


class ApiKeyWithKey(ApiKeyObject):
    key: str = Field(description="The API key; store it now, it is not shown again.")


class ApiKeyList(ListPage[ApiKeyObject]):
    """Every live key of the tenant, newest first, in one page."""


class UsageQuery(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    from_: date | None = Field(
        default=None,
        alias="from",
        description="First UTC day (YYYY-MM-DD); default 29 days before `to`.",
    )
    to: date | None = Field(default=None, description="Last UTC day, included; default today.")


class UsageDay(BaseModel):
    day: date
    environment: Environment
    events_accepted: int
    deliveries_succeeded: int
    failed_attempts: int
    dead_letters: int


class UsageReport(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    object: Literal["usage"] = "usage"
    tenant_id: str
    from_: date = Field(alias="from")
    to: date
    data: list[UsageDay] = Field(description="Per day and environment; idle days left out.")


def tenant_object(tenant: Tenant) -> TenantObject:
    return TenantObject(
        id=tenant.id,
        uid=tenant.uid,
        name=tenant.name,
        suspended=tenant.suspended_at is not None,
        suspended_at=tenant.suspended_at,
        created_at=tenant.created_at,
    )


def api_key_object(key: ApiKeyInfo) -> ApiKeyObject:
    return ApiKeyObject(
        id=key.id,
        name=key.name,
        environment=key.environment,
        prefix=key.key_prefix,
        created_at=key.created_at,
        last_used_at=key.last_used_at,
    )
