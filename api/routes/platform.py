"""Platform routes (SPEC section 4): mailing status transitions become events.

Only the platform token opens them. Every write goes through ``record_transitions`` inside
the Idempotency-Key transaction (scope ``"platform"``), so a stored answer exists exactly
when its events do.

Decisions:

- One transition: 202 accepted, 200 repeated (the mailing's original event), 409
  ``invalid_transition`` with ``current_status`` (null for an unknown mailing). A 409 is an
  answer, not a failure: it is stored under the Idempotency-Key like the others.
- A batch answers 200 whatever its items' outcomes, with one result per item in request
  order; refused items emit nothing and do not stop the others. It is all-or-nothing only
  for the *request*: a malformed item, an unknown tenant or more than ``MAX_BATCH``
  items is a 422 for the whole batch, and nothing is applied.
- An unknown ``tenant_id`` is a 422 on that field (``transitions.<i>.tenant_id`` in a
  batch), never a 404, which would read as "no such mailing". The tenants are locked
  against deletion (``FOR KEY SHARE``) until commit, so the check cannot race into a
  foreign-key error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import asyncpg
from aiohttp import web
from pydantic import BaseModel, ValidationError

from api import auth
from api.context import clock
from api.idempotency import idempotent
from api.openapi import operation
from api.platform_schemas import (
    MAX_BATCH,
    BatchIn,
    BatchOut,
    InvalidTransition,
    InvalidTransitionDetail,
    ItemResult,
    TransitionIn,
    TransitionOut,
    mailing_id_problem,
)
from api.responses import field_errors, json_response, read_json
from dispatcher.errors import FieldError, ValidationFailed
from dispatcher.events import Result, Transition, TransitionResult, record_transitions
from dispatcher.metrics import EVENTS_INGESTED
from dispatcher.store import tenants
from dispatcher.transitions import MailingStatus

routes = web.RouteTableDef()

M = TypeVar("M", bound=BaseModel)
TAG = "platform"
SCOPE = "platform"


async def _parse(
    request: web.Request, model: type[M], now: datetime, found: Sequence[FieldError] = ()
) -> M:
    """Every problem of the path and body in one 422; times are judged by the app's clock."""
    data = await read_json(request)
    errors = list(found)
    if not isinstance(data, dict):
        raise ValidationFailed([*errors, FieldError("body", "a JSON object is expected")])
    items = data.get("transitions")
    if isinstance(items, list) and len(items) > MAX_BATCH:
        # Before validation, so an oversized batch costs no per-item work or error list.
        raise ValidationFailed(
            [FieldError("transitions", f"at most {MAX_BATCH} per request, got {len(items)}")]
        )
    try:
        parsed = model.model_validate(data, context={"now": now})
    except ValidationError as exc:
        raise ValidationFailed([*errors, *field_errors(exc)]) from None
    if errors:
        raise ValidationFailed(errors)
    return parsed


def _transition(spec: TransitionIn, mailing_id: str) -> Transition:
    return Transition(
        tenant_id=spec.tenant_id,
        environment=spec.environment.value,
        mailing_id=mailing_id,
        status=spec.status,
        occurred_at=spec.occurred_at,
        mail_type=spec.mail_type,
        tracking_number=spec.tracking_number,
        recipient=spec.recipient,
        metadata=spec.metadata,
    )


async def _require_tenants(
    conn: asyncpg.Connection, items: Sequence[Transition], field: Callable[[int], str]
) -> None:
    """422 naming every unknown tenant; the known ones stay locked until commit."""
    known = await tenants.lock_tenants(conn, [t.tenant_id for t in items])
    errors = [
        FieldError(field(i), "no such tenant")
        for i, t in enumerate(items)
        if t.tenant_id not in known
    ]
    if errors:
        raise ValidationFailed(errors)


def _refusal(result: TransitionResult) -> InvalidTransitionDetail:
    current = result.current_status
    return InvalidTransitionDetail(
        message=result.message or "transition refused",
        current_status=MailingStatus(current) if current is not None else None,
    )


def _accepted(results: Sequence[TransitionResult]) -> int:
    return sum(r.result is Result.ACCEPTED for r in results)


@routes.post("/internal/v1/mailings/{mailing_id}/transitions")
@operation(
    summary="Report a mailing status transition",
    tag=TAG,
    security="platform",
    body=TransitionIn,
    responses={202: TransitionOut, 200: TransitionOut, 409: InvalidTransition},
    idempotent=True,
    description="202 with the new event; 200 with the original event when the status "
    "repeats (nothing new is emitted); 409 naming the current status for a backward or "
    "impossible transition (nothing is emitted). An unknown tenant_id is a 422.",
)
async def post_transition(request: web.Request) -> web.Response:
    auth.platform(request)
    mailing_id = request.match_info["mailing_id"]
    problem = mailing_id_problem(mailing_id)
    now = clock(request).now()
    spec = await _parse(
        request, TransitionIn, now, [FieldError("mailing_id", problem)] if problem else ()
    )
    item = _transition(spec, mailing_id)
    accepted = 0

    async def write(conn: asyncpg.Connection) -> web.Response:
        nonlocal accepted
        await _require_tenants(conn, [item], lambda _: "tenant_id")
        results = await record_transitions(conn, [item], now)
        accepted = _accepted(results)
        (result,) = results
        if result.result is Result.REFUSED:
            body = InvalidTransition(error=_refusal(result))
            return json_response(body.model_dump(mode="json"), status=409)
        assert result.event_id is not None and result.event_type is not None
        out = TransitionOut(
            event_id=result.event_id, event_type=result.event_type, status=result.result.value
        )
        status = 202 if result.result is Result.ACCEPTED else 200
        return json_response(out.model_dump(mode="json"), status=status)

    response = await idempotent(request, SCOPE, write)
    EVENTS_INGESTED.inc(accepted)  # after commit; a replay runs no handler and counts 0
    return response


def _item(index: int, mailing_id: str, result: TransitionResult) -> dict[str, Any]:
    out = ItemResult(
        index=index,
        mailing_id=mailing_id,
        status=result.result.value,
        event_id=result.event_id,
        event_type=result.event_type if result.result is not Result.REFUSED else None,
    ).model_dump(mode="json", exclude_none=True)
    if result.result is Result.REFUSED:
        out["error"] = _refusal(result).model_dump(mode="json")
    return out


@routes.post("/internal/v1/transitions")
@operation(
    summary="Report up to 1000 transitions in one transaction",
    tag=TAG,
    security="platform",
    body=BatchIn,
    responses={200: BatchOut},
    idempotent=True,
    description="Applied in order, all in one transaction, one result per item in request "
    "order. Refused items emit nothing and do not stop the others. A malformed item, an "
    "unknown tenant or more than 1000 items is a 422 for the whole batch, nothing applied.",
)
async def post_transitions(request: web.Request) -> web.Response:
    auth.platform(request)
    now = clock(request).now()
    spec = await _parse(request, BatchIn, now)
    items = [_transition(t, t.mailing_id) for t in spec.transitions]
    accepted = 0

    async def write(conn: asyncpg.Connection) -> web.Response:
        nonlocal accepted
        await _require_tenants(conn, items, lambda i: f"transitions.{i}.tenant_id")
        results = await record_transitions(conn, items, now)
        accepted = _accepted(results)
        body = {
            "results": [
                _item(i, t.mailing_id, r)
                for i, (t, r) in enumerate(zip(items, results, strict=True))
            ]
        }
        return json_response(body)

    response = await idempotent(request, SCOPE, write)
    EVENTS_INGESTED.inc(accepted)
    return response
