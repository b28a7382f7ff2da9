"""Bodies of the portal-session routes (platform side: open a tenant's portal, revoke it)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.common import TenantIdField
from dispatcher.models import Environment
from dispatcher.store.portal_sessions import DEFAULT_LIFETIME_SECONDS, MAX_LIFETIME_SECONDS


class PortalSessionCreate(BaseModel):
    """POST /internal/v1/portal-sessions."""

    model_config = ConfigDict(extra="forbid")

    tenant_id: TenantIdField
    environment: Environment = Field(strict=False)
    expires_in_seconds: int = Field(
        default=DEFAULT_LIFETIME_SECONDS,
        ge=1,
        le=MAX_LIFETIME_SECONDS,
        strict=True,
        description="How long the link and the session it opens live (at most 24 h).",
    )


class PortalSessionOut(BaseModel):
    id: str = Field(examples=["ps_01JTV7ZB4W7M0Q9D3Y8K5N2C6R"], description="To revoke it.")
    object: str = "portal_session"
    url: str = Field(
        description="Absolute link to the portal; the token is in the fragment, so it never "
        "reaches a server log. It can be opened once: the page trades it for a cookie.",
        examples=["https://hooks.example.com/portal/#token=pst_..."],
    )
    tenant_id: str
    environment: Environment
    expires_at: datetime
