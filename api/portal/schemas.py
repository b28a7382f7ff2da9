"""Bodies of the portal's own routes: the token exchange and who the portal is signed in as."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from dispatcher.models import Environment


class PortalExchange(BaseModel):
    """POST /portal/session: the page trades the link's token for a session cookie."""

    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=1, max_length=200)


class PortalSessionInfo(BaseModel):
    """Who the portal is signed in as, and the CSRF token its writes must carry."""

    tenant_id: str
    environment: Environment
    expires_at: datetime
    csrf_token: str = Field(description="Send it as X-CSRF-Token with every write.")
    signature_header: str = Field(
        description="The signature header deliveries carry (for the verification code).",
        examples=["X-Bjet24-Signature"],
    )
