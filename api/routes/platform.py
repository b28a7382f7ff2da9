"""Platform routes (SPEC section 4): mailing status transitions become events.

Only the platform token opens them. Both routes take the one ingest path
(`dispatcher.events.ingest`; a single transition is a batch of one) inside the
Idempotency-Key scope (``"platform"``), so a stored answer exists exactly when its events do,
and answer with the state machine's verdicts as they come.

Decisions:

- One transition: 202 accepted, 200 repeated (the mailing's original event), 409
  ``invalid_transition`` with ``current_status`` (null for an unknown mailing). A 409 is an
  answer, not a failure: it is stored under the Idempotency-Key like the others.
- A batch answers 200 whatever its items' outcomes, with one result per item in request
  order; refused items emit nothing and do not stop the others. It is all-or-nothing only
  for the *request*: a malformed item, an unknown tenant or more than ``MAX_BATCH``
  items is a 422 for the whole batch, and nothing is applied.
- An unknown ``tenant_id`` is a 422 on that field (``transitions.<i>.tenant_id`` in a
  batch), never a 404, which would read as "no such mailing". The write checks again that
  the tenant is live, in the same statement, so the check cannot race into a foreign-key
  error.
- Without an Idempotency-Key, transitions of one mailing take no transaction (one read, one
  write statement); a batch of several mailings is one transaction.
- A single transition without an Idempotency-Key goes through the process's group-commit
  batcher (`dispatcher.ingest_batcher`): the ones that arrive while a batch is being written
  are written together next, each answered with its own verdict, exactly as it would be
  alone. With a key it keeps its own transaction, which also stores the answer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import asyncpg
from aiohttp import web
from pydantic import BaseModel, ValidationError

from api import auth
from api.context import POOL, clock
from api.idempotency import has_key, idempotency_scope
from api.openapi import operation
from api.responses import field_errors, json_response, read_json
from api.schemas.common import mailing_id_problem
from api.schemas.platform import (
    MAX_BATCH,
    BatchIn,
    BatchOut,
    InvalidTransition,
    TransitionIn,
    TransitionOut,
)
from dispatcher.errors import FieldError, ValidationFailed
from dispatcher.events import Recorded, Transition, UnknownTenants, ingest
from dispatcher.ingest_batcher import IngestBatcher
from dispatcher.transitions import Accept, Refuse

routes = web.RouteTableDef()
BATCHER = web.AppKey("ingest_batcher", IngestBatcher)

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


def _one_mailing(items: Sequence[Transition]) -> bool:
    """Without an Idempotency-Key, one mailing's write is one statement: no transaction."""
    return len({(t.tenant_id, t.environment, t.mailing_id) for t in items}) == 1


def setup(app: web.Application) -> None:
    """The app's batcher, on the app's pool; its last batches are written before the pool
    closes (cleanup runs after the requests were answered)."""
    app[BATCHER] = IngestBatcher(app[POOL])

    async def close(app: web.Application) -> None:
        await app[BATCHER].close()

    app.on_cleanup.append(close)


def _unknown(exc: UnknownTenants, field: Callable[[int], str]) -> ValidationFailed:
    return ValidationFailed([FieldError(field(i), "no such tenant") for i in exc.positions])


async def _ingest(
    conn: asyncpg.Connection, items: list[Transition], now: datetime, field: Callable[[int], str]
) -> list[Recorded]:
    try:
        return await ingest(conn, items, now)
    except UnknownTenants as exc:
        raise _unknown(exc, field) from None


def _refusal(done: Recorded) -> dict[str, Any]:
    assert isinstance(done.verdict, Refuse)
    current = done.current_status
    return {
        "type": "invalid_transition",
        "message": done.verdict.reason,
        "current_status": current.value if current is not None else None,
    }


def _answer(done: Recorded) -> web.Response:
    """202 for a new event, 200 for a repeat (its original event), 409 for a refusal."""
    if isinstance(done.verdict, Refuse):
        return json_response({"error": _refusal(done)}, status=409)
    body = {"event_id": done.event_id, "event_type": done.event_type, "status": done.verdict.word}
    return json_response(body, status=202 if isinstance(done.verdict, Accept) else 200)


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
    items = [_transition(spec, mailing_id)]
    if not has_key(request):
        try:
            done = await request.app[BATCHER].ingest(items[0], now)
        except UnknownTenants as exc:
            raise _unknown(exc, lambda _: "tenant_id") from None
        return _answer(done)
    async with idempotency_scope(request, SCOPE, transaction=False) as scope:
        if scope.replay is not None:
            return scope.replay
        (done,) = await _ingest(scope.conn, items, now, lambda _: "tenant_id")
        return await scope.answer(_answer(done))


def _item(index: int, mailing_id: str, done: Recorded) -> dict[str, Any]:
    item: dict[str, Any] = {"index": index, "mailing_id": mailing_id, "status": done.verdict.word}
    if isinstance(done.verdict, Refuse):
        item["error"] = _refusal(done)
    else:
        item["event_id"] = done.event_id
        item["event_type"] = done.event_type
    return item


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
    alone = _one_mailing(items)
    async with idempotency_scope(request, SCOPE, transaction=not alone) as scope:
        if scope.replay is not None:
            return scope.replay
        done = await _ingest(scope.conn, items, now, lambda i: f"transitions.{i}.tenant_id")
        results = [
            _item(i, t.mailing_id, d) for i, (t, d) in enumerate(zip(items, done, strict=True))
        ]
        return await scope.answer(json_response({"results": results}))
