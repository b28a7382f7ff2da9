"""POST /v1/webhooks/{id}/test: one signed event sent now, and how the endpoint answered.

Decisions:
- The request goes through the same attempt pipeline as a real delivery's (`run_attempt`:
  canonical body, every active secret, the configured signature header, Standard Webhooks when the
  endpoint opted in, `X-Delivery-Attempt: 1`), and sent with the same attempt timeout and
  SSRF rules, so a passing test means real deliveries will pass too.
- The event gets a fresh `evt_` id and occurred_at = now. It is not stored: no event, no
  delivery, no retry, no metrics; GET /v1/events/{id} does not find it.
- A disabled endpoint can be tested: checking the receiver before re-enabling is the point.
- The answer is 200 whenever the attempt was made, even if the endpoint failed:
  `success` says how the endpoint did.
- Test sends have a connection pool of their own (``TEST_SEND_CONNECTIONS``), apart from the
  workers', and a tenant may run ``TEST_SEND_CONCURRENCY`` at once per API process; one
  more is a 429 with ``Retry-After``, so a tenant testing a hanging receiver in a loop
  delays neither real deliveries nor other tenants' tests.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web

from api import auth
from api.context import SERVICES, SETTINGS, clock, pool, settings
from api.limits import ConcurrencyCap
from api.openapi import operation
from api.responses import json_response, parse_optional
from api.schemas.test_send import SendTestRequest, SendTestResult
from dispatcher import ids
from dispatcher.attempt import AttemptRequest, run_attempt
from dispatcher.errors import Conflict, NotFound
from dispatcher.events import event_body
from dispatcher.models import Endpoint, Principal
from dispatcher.policy import Outcome
from dispatcher.sender import delivery_session
from dispatcher.store import endpoints as endpoint_store
from dispatcher.transitions import EVENT_PREFIX, TEST_EVENT_TYPE

routes = web.RouteTableDef()

log = logging.getLogger(__name__)


def sample_data(event_type: str, endpoint: Endpoint) -> dict[str, Any]:
    """Data shaped like the real thing, so the receiver's parser is exercised too."""
    if event_type.startswith(EVENT_PREFIX):
        return {"mailing_id": "ml_test", "status": event_type.removeprefix(EVENT_PREFIX)}
    if event_type == TEST_EVENT_TYPE:
        return {"endpoint_id": endpoint.id, "message": "test event sent on request"}
    return {}


TEST_SESSION = "test_session"
CAP = web.AppKey("test_send_cap", ConcurrencyCap)


async def test_send_client(app: web.Application) -> AsyncIterator[None]:
    """The app's own client for test sends, unless whoever built the app gave one."""
    config = app[SETTINGS]
    if app[SERVICES].get(TEST_SESSION) is not None:
        yield
        return
    async with delivery_session(
        allow_private=config.allow_private_targets,
        max_connections=config.test_send_connections,
    ) as session:
        app[SERVICES][TEST_SESSION] = session
        yield
        del app[SERVICES][TEST_SESSION]


@routes.post("/v1/webhooks/{id}/test")
@operation(
    summary="Send a signed test event now",
    tag="webhooks",
    body=SendTestRequest,
    body_required=False,
    responses={200: SendTestResult},
    description="Signed and sent like a real delivery, once, synchronously; 200 with the "
    "attempt's outcome even when the endpoint failed. Not stored and not retried. A disabled "
    "endpoint can be tested.",
)
async def send_test_event(request: web.Request) -> web.Response:
    owner = await auth.tenant(request)
    with request.app[CAP].slot(owner.tenant_id, "test sends"):
        return await _send_test(request, owner)


async def _send_test(request: web.Request, owner: Principal) -> web.Response:
    spec = await parse_optional(request, SendTestRequest)
    config = settings(request)
    now = clock(request).now()
    async with pool(request).acquire() as conn:  # released before the HTTP call
        endpoint = await endpoint_store.get_endpoint(conn, owner, request.match_info["id"])
        if endpoint is None:
            raise NotFound("no such webhook endpoint")
        found = await endpoint_store.active_secrets(conn, [endpoint.id], now)
        secrets = found.get(endpoint.id)
    if not secrets:
        raise Conflict("the endpoint has no active signing secret; rotate it to get one")
    event_id = ids.event_id()
    data = spec.data if spec.data is not None else sample_data(spec.event_type, endpoint)
    body = event_body(event_id, spec.event_type, now, data)
    attempt = AttemptRequest(
        event_id,
        spec.event_type,
        1,
        body,
        endpoint.url,
        secrets,
        endpoint.standard_webhooks,
        endpoint.signing,
    )
    session: aiohttp.ClientSession = request.app[SERVICES][TEST_SESSION]
    result = await run_attempt(
        session,
        attempt,
        started_at=now,
        timeout_seconds=config.attempt_timeout_seconds,
        allow_private=config.allow_private_targets,
        signature_header=config.signature_header,
    )
    log.info(
        "test event sent",
        extra={
            "event_id": event_id,
            "endpoint_id": endpoint.id,
            "outcome": result.outcome.value,
            "status_code": result.status_code,
        },
    )
    answer = SendTestResult(
        success=result.outcome == Outcome.SUCCESS,
        event_id=event_id,
        event_type=spec.event_type,
        status_code=result.status_code,
        duration_ms=round(result.duration_ms, 3),
        outcome=result.outcome.value,
        error=result.error,
        response_body=result.response_body,
    )
    return json_response(answer.model_dump(mode="json"))
