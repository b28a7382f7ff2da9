"""Group commit of single transitions (dispatcher.ingest_batcher), on a real database.

What a platform would notice: coalesced requests get exactly the answers they would get one
after the other (status, headers, body), in arrival order for one mailing, whatever tenants
share the batch; a poisoned transition fails only itself; every event is counted once.
Coalescing is forced with the batcher's ``on_batch`` hook and ``until_waiting``, never by
timing: the first batch is held in flight while the others queue behind it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY

from api.app import create_app
from api.routes.platform import BATCHER
from dispatcher.clock import FakeClock
from dispatcher.events import Recorded, Transition, UnknownTenants, ingest, record_transitions
from dispatcher.ingest_batcher import MAX_BATCH, IngestBatcher
from dispatcher.partitions import ensure_day
from dispatcher.transitions import FORWARD_ORDER, Accept, MailingStatus, MailType, decide
from tests.conftest import PLATFORM_TOKEN, make_settings

Client = TestClient[Any, Any]
AUTH = {"Authorization": f"Bearer {PLATFORM_TOKEN}"}
MISSING_TENANT = "ten_01JTX3Y8Q6ZK4M1V9B5N7C2D3E"
EVENT_ID = re.compile(r"evt_[0-9A-Za-z]+")
STATUSES = list(MailingStatus)


def _ingested() -> float:
    return REGISTRY.get_sample_value("webhook_events_ingested_total") or 0.0


@dataclass
class Gate:
    """``on_batch`` hook: records every batch and holds the first one until opened."""

    batches: list[list[Transition]] = field(default_factory=list)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    opened: asyncio.Event = field(default_factory=asyncio.Event)
    hold_first: bool = True

    async def __call__(self, batch: Sequence[Transition]) -> None:
        self.batches.append(list(batch))
        self.started.set()
        if self.hold_first and len(self.batches) == 1:
            await self.opened.wait()

    def sizes(self) -> list[int]:
        return [len(b) for b in self.batches]


class Labels:
    """Event ids differ between two runs; their order of first appearance does not."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}

    def __call__(self, event_id: str | None) -> str | None:
        if event_id is None:
            return None
        return self.seen.setdefault(event_id, f"event#{len(self.seen)}")

    def text(self, body: str) -> str:
        return EVENT_ID.sub(lambda m: self(m.group(0)) or "", body)


def _shape(outcome: Recorded | BaseException, label: Labels) -> tuple[Any, ...]:
    if isinstance(outcome, BaseException):
        return (type(outcome).__name__,)
    return (outcome.verdict, label(outcome.event_id), outcome.event_type, outcome.current_status)


# ---- the batcher on its own -------------------------------------------------------------


async def test_a_coalesced_batch_decides_as_if_one_after_another(
    pool: asyncpg.Pool, make_tenant: Any, clock: FakeClock
) -> None:
    """120 transitions over two tenants, two environments, four mailings and an unknown
    tenant, in one batch, against the same 120 applied one at a time to twin tenants."""
    together = [(await make_tenant("a1")).tenant_id, (await make_tenant("a2")).tenant_id]
    alone = [(await make_tenant("b1")).tenant_id, (await make_tenant("b2")).tenant_id]
    rng = random.Random(14)
    plan = [
        (
            rng.choice([0, 0, 1, 1, 1, 1, 1, 1, 1, None]),  # None: an unknown tenant
            rng.choice(["sandbox", "production"]),
            f"ml_{rng.randrange(4)}",
            rng.choice(STATUSES),
            rng.choice(list(MailType)),
        )
        for _ in range(120)
    ]

    def transition(tenants: list[str], step: tuple[Any, ...]) -> Transition:
        who, environment, mailing, status, mail_type = step
        tenant = MISSING_TENANT if who is None else tenants[who]
        return Transition(tenant, environment, mailing, status, mail_type=mail_type)

    gate = Gate(hold_first=False)
    batcher = IngestBatcher(pool, on_batch=gate)
    answers = [batcher.submit(transition(together, s), clock.now()) for s in plan]
    got = await asyncio.gather(*answers, return_exceptions=True)
    assert gate.sizes() == [len(plan)], "submitted at once: one batch"

    expected: list[Recorded | BaseException] = []
    for step in plan:
        async with pool.acquire() as conn:
            try:
                (done,) = await ingest(conn, [transition(alone, step)], clock.now())
                expected.append(done)
            except UnknownTenants as exc:
                expected.append(exc)
    label_together, label_alone = Labels(), Labels()
    assert [_shape(o, label_together) for o in got] == [_shape(o, label_alone) for o in expected]
    assert {type(o) for o in got} == {Recorded, UnknownTenants}

    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT tenant_id, environment, mailing_id, status, mail_type FROM mailings"
        )
    twin = dict(zip(together, alone, strict=True))
    stored = {(twin.get(r[0], r[0]), *r[1:]) for r in rows if r[0] in together}
    assert stored == {tuple(r) for r in rows if r[0] in alone}
    assert len(stored) > 4, "both tenants and both environments were written"


async def test_one_mailing_in_one_batch_is_decided_in_arrival_order(
    pool: asyncpg.Pool, make_tenant: Any, clock: FakeClock
) -> None:
    tenant = (await make_tenant()).tenant_id
    gate = Gate(hold_first=False)
    batcher = IngestBatcher(pool, on_batch=gate)
    statuses = ["created", "printed", "created", "printed", "delivered", "failed"]
    answers = [
        batcher.submit(Transition(tenant, "sandbox", "ml_1", MailingStatus(s)), clock.now())
        for s in statuses
    ]
    created, printed, back, again, delivered, failed = await asyncio.gather(*answers)
    assert gate.sizes() == [6]
    assert [d.verdict.word for d in (created, printed, back, again, delivered, failed)] == [
        "accepted",
        "accepted",
        "refused",
        "repeated",
        "accepted",
        "refused",
    ]
    assert back.current_status == MailingStatus.PRINTED
    assert again.event_id == printed.event_id
    assert failed.current_status == MailingStatus.DELIVERED
    async with pool.acquire() as conn:
        events = dict(await conn.fetch("SELECT id, event_type FROM events"))
        mailing = await conn.fetchrow("SELECT status, last_event_id FROM mailings")
    assert events == {
        created.event_id: "mailing.created",
        printed.event_id: "mailing.printed",
        delivered.event_id: "mailing.delivered",
    }
    assert tuple(mailing) == ("delivered", delivered.event_id)


async def test_batches_are_at_most_max_batch_and_queue_behind_the_one_in_flight(
    pool: asyncpg.Pool, make_tenant: Any, clock: FakeClock
) -> None:
    tenant = (await make_tenant()).tenant_id
    gate = Gate()
    batcher = IngestBatcher(pool, max_batch=50, on_batch=gate)
    first = batcher.submit(
        Transition(tenant, "sandbox", "ml_first", MailingStatus.CREATED), clock.now()
    )
    await gate.started.wait()  # in flight, held: whatever comes now waits for the next batch
    rest = [
        batcher.submit(Transition(tenant, "sandbox", f"ml_{i}", MailingStatus.CREATED), clock.now())
        for i in range(120)
    ]
    assert batcher.waiting == 120
    gate.opened.set()
    done = await asyncio.gather(first, *rest)
    assert gate.sizes() == [1, 50, 50, 20]
    assert {d.verdict.word for d in done} == {"accepted"}
    assert batcher.waiting == 0


async def test_the_default_batch_is_at_most_1000_like_the_batch_api(
    pool: asyncpg.Pool, make_tenant: Any, clock: FakeClock
) -> None:
    tenant = (await make_tenant()).tenant_id
    gate = Gate(hold_first=False)
    batcher = IngestBatcher(pool, on_batch=gate)
    answers = [
        batcher.submit(Transition(tenant, "sandbox", f"ml_{i}", MailingStatus.CREATED), clock.now())
        for i in range(1001)
    ]
    done = await asyncio.gather(*answers)
    assert gate.sizes() == [1000, 1] and MAX_BATCH == 1000
    assert {d.verdict.word for d in done} == {"accepted"}


async def test_a_busy_mailing_holds_up_no_other_and_is_judged_alone_when_free(
    pool: asyncpg.Pool, make_tenant: Any, clock: FakeClock
) -> None:
    """Another writer (the outbox, in its open transaction) holds ml_x: the batch writes
    ml_y and answers it at once; ml_x's two transitions wait for the lock alone, in order,
    and are judged against what the other writer committed (here: refused)."""
    tenant = (await make_tenant()).tenant_id
    gate = Gate(hold_first=False)
    batcher = IngestBatcher(pool, on_batch=gate)
    start = _ingested()
    async with pool.acquire() as other:
        await ensure_day(other, clock.now())  # not inside the transaction the others wait for
        tx = other.transaction()
        await tx.start()
        printed = Transition(tenant, "sandbox", "ml_x", MailingStatus.PRINTED)
        await record_transitions(other, [printed], clock.now())  # holds ml_x's lock
        x_created, y_created, x_paid = [
            batcher.submit(Transition(tenant, "sandbox", m, MailingStatus(s)), clock.now())
            for m, s in [("ml_x", "created"), ("ml_y", "created"), ("ml_x", "paid")]
        ]
        async with asyncio.timeout(10):
            assert (await y_created).verdict.word == "accepted", "not held up by ml_x"
        assert not x_created.done() and not x_paid.done(), "ml_x waits for its lock"
        await tx.commit()
        await asyncio.gather(x_created, x_paid)
    assert gate.sizes() == [3], "ml_x went on alone, not in another batch"
    assert x_created.result().verdict.word == x_paid.result().verdict.word == "refused"
    assert x_created.result().current_status == MailingStatus.PRINTED
    assert x_paid.result().current_status == MailingStatus.PRINTED
    async with pool.acquire() as conn:
        events = sorted(await conn.fetch("SELECT mailing_id, event_type FROM events"))
    assert [tuple(e) for e in events] == [("ml_x", "mailing.printed"), ("ml_y", "mailing.created")]
    assert _ingested() - start == 2


async def test_arrivals_for_a_mailing_ingested_alone_join_its_line(
    pool: asyncpg.Pool, make_tenant: Any, clock: FakeClock
) -> None:
    """While ml_x is held, later reports of ml_x never overtake the earlier ones in a batch:
    they join its line and are judged after them, in arrival order."""
    tenant = (await make_tenant()).tenant_id
    gate = Gate(hold_first=False)
    batcher = IngestBatcher(pool, on_batch=gate)
    async with pool.acquire() as other:
        await ensure_day(other, clock.now())  # not inside the transaction the others wait for
        tx = other.transaction()
        await tx.start()
        await record_transitions(
            other, [Transition(tenant, "sandbox", "ml_x", MailingStatus.CREATED)], clock.now()
        )

        def report(mailing: str, status: str) -> asyncio.Future[Recorded]:
            return batcher.submit(
                Transition(tenant, "sandbox", mailing, MailingStatus(status)), clock.now()
            )

        first = report("ml_x", "paid")
        await report("ml_y", "created")  # the first batch is done: ml_x is alone now
        later = [report("ml_x", "printed"), report("ml_z", "created"), report("ml_x", "paid")]
        await later[1]
        assert not first.done() and not later[0].done() and not later[2].done()
        await tx.commit()
        await asyncio.gather(first, *later)
    assert gate.sizes() == [2, 1], "ml_x's later reports went to its line, not to a batch"
    words = [first.result().verdict.word, later[0].result().verdict.word]
    assert words == ["accepted", "accepted"], "paid, then printed: in arrival order"
    assert later[2].result().verdict.word == "refused"
    assert later[2].result().current_status == MailingStatus.PRINTED


async def test_a_request_that_goes_away_does_not_stop_the_others(
    pool: asyncpg.Pool, make_tenant: Any, clock: FakeClock
) -> None:
    """Its transition is still written (as it would be had its own write begun); the
    others are answered; close() returns once nothing is in flight."""
    tenant = (await make_tenant()).tenant_id
    gate = Gate()
    batcher = IngestBatcher(pool, on_batch=gate)
    held = batcher.submit(Transition(tenant, "sandbox", "ml_0", MailingStatus.CREATED), clock.now())
    await gate.started.wait()
    gone = batcher.submit(Transition(tenant, "sandbox", "ml_1", MailingStatus.CREATED), clock.now())
    kept = batcher.submit(Transition(tenant, "sandbox", "ml_2", MailingStatus.CREATED), clock.now())
    gone.cancel()
    gate.opened.set()
    await batcher.close()
    assert held.result().verdict.word == kept.result().verdict.word == "accepted"
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM events") == 3


# ---- through the API --------------------------------------------------------------------


@pytest.fixture
async def gated(pool: asyncpg.Pool, clock: FakeClock) -> AsyncIterator[tuple[Client, Gate]]:
    """The app with a batcher whose first batch is held until the test opens the gate."""
    gate = Gate()
    app = create_app(make_settings(), pool, clock=clock)
    app[BATCHER] = IngestBatcher(pool, on_batch=gate)
    async with TestClient(TestServer(app)) as client:
        yield client, gate


@dataclass(frozen=True)
class Answer:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: str


async def _post(client: Client, mailing: str, body: dict[str, Any]) -> Answer:
    resp = await client.post(
        f"/internal/v1/mailings/{mailing}/transitions", json=body, headers=AUTH
    )
    text = await resp.text()
    headers = tuple(sorted((k, v) for k, v in resp.headers.items() if k != "Date"))
    return Answer(resp.status, headers, text)


def _relabel(answer: Answer, labels: Labels) -> Answer:
    return Answer(answer.status, answer.headers, labels.text(answer.body))


async def _coalesced(
    client: Client,
    gate: Gate,
    requests: list[tuple[str, dict[str, Any]]],
    malformed: tuple[str, dict[str, Any]] | None = None,
) -> tuple[list[Answer], Answer | None]:
    """The first request alone in a held batch, then all the others in one batch (and a
    malformed one among them, answered without the batcher)."""
    batcher = client.app[BATCHER]
    first = asyncio.create_task(_post(client, *requests[0]))
    await gate.started.wait()
    rest = [asyncio.create_task(_post(client, *r)) for r in requests[1:]]
    bad = asyncio.create_task(_post(client, *malformed)) if malformed else None
    await batcher.until_waiting(len(rest))
    gate.opened.set()
    return [await first, *await asyncio.gather(*rest)], (await bad if bad else None)


def _numbered(batches: list[list[Transition]]) -> list[int]:
    """The requests' numbers (their metadata ``n``) in the order the batcher got them."""
    return [int(t.metadata["n"]) for b in batches for t in b if t.metadata is not None]


async def test_coalesced_requests_answer_byte_for_byte_as_alone(
    gated: tuple[Client, Gate], pool: asyncpg.Pool, make_tenant: Any
) -> None:
    """40 clients at once (two tenants, an unknown one, four mailings, repeats, refusals,
    and a malformed body among them): each answer equals the one the same request gets
    when every request is sent alone, one after the other, in the order the batcher got
    them."""
    client, gate = gated
    together = [(await make_tenant("a1")).tenant_id, (await make_tenant("a2")).tenant_id]
    alone = [(await make_tenant("b1")).tenant_id, (await make_tenant("b2")).tenant_id]
    rng = random.Random(1414)
    plan = [
        (rng.choice([0, 1, 1, 1, None]), f"ml_{rng.randrange(4)}", rng.choice(STATUSES).value)
        for _ in range(40)
    ]

    def request(n: int, tenants: list[str]) -> tuple[str, dict[str, Any]]:
        who, mailing, status = plan[n]
        tenant = MISSING_TENANT if who is None else tenants[who]
        # metadata tells the requests apart; it has no bearing on the verdict
        body = {"tenant_id": tenant, "environment": "sandbox", "status": status}
        return mailing, {**body, "metadata": {"n": n}}

    malformed = ("ml_x", {"tenant_id": together[0], "environment": "sandbox", "status": "lost"})
    start = _ingested()
    got, bad = await _coalesced(
        client, gate, [request(n, together) for n in range(len(plan))], malformed
    )
    assert gate.sizes() == [1, len(plan) - 1], "all but the first waited for one batch"
    order = _numbered(gate.batches)
    accepted = sum(1 for a in got if a.status == 202)
    assert _ingested() - start == accepted, "each event counted once"
    async with pool.acquire() as conn:
        events = await conn.fetchval(
            "SELECT count(*) FROM events WHERE tenant_id = ANY($1::text[])", together
        )
    assert events == accepted

    gate.batches.clear()
    reference = {n: await _post(client, *request(n, alone)) for n in order}
    reference_bad = await _post(client, *malformed)
    assert gate.sizes() == [1] * len(plan), "the reference requests went alone"
    label_together, label_alone = Labels(), Labels()
    assert [_relabel(got[n], label_together) for n in order] == [
        _relabel(reference[n], label_alone) for n in order
    ]
    assert bad == reference_bad
    assert bad is not None and bad.status == 422
    assert {a.status for a in got} == {200, 202, 409, 422}, "every kind of answer coalesced"


def _expected_codes(steps: list[tuple[str, str]], order: list[int]) -> dict[int, int]:
    """What the state machine answers each step when they come in `order` (all standard
    mail): 202 accepted, 200 repeated, 409 refused."""
    current: dict[str, MailingStatus] = {}
    codes = {}
    for n in order:
        mailing, status = steps[n]
        verdict = decide(current.get(mailing), MailingStatus(status), MailType.STANDARD)
        codes[n] = {"accepted": 202, "repeated": 200, "refused": 409}[verdict.word]
        if isinstance(verdict, Accept):
            current[mailing] = MailingStatus(status)
    return codes


async def test_a_database_error_fails_only_its_own_transition(
    gated: tuple[Client, Gate], pool: asyncpg.Pool, make_tenant: Any, caplog: Any
) -> None:
    """A deferred constraint refuses one mailing at COMMIT: the whole batch rolls back,
    each transition is ingested again alone, in arrival order, and only the poisoned one
    fails (a 500, as it would alone); every event is counted once."""
    client, gate = gated
    tenant = (await make_tenant()).tenant_id
    async with pool.acquire() as conn:
        await conn.execute(
            """
            CREATE FUNCTION test_poison() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.mailing_id = 'ml_poison' THEN RAISE EXCEPTION 'poisoned mailing'; END IF;
                RETURN NULL;
            END $$;
            CREATE CONSTRAINT TRIGGER test_poison AFTER INSERT OR UPDATE ON mailings
                DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_poison();
            """
        )
    try:
        steps = [
            ("ml_0", "created"),
            ("ml_1", "created"),
            ("ml_poison", "created"),
            ("ml_1", "printed"),
            ("ml_2", "created"),
            ("ml_1", "created"),
        ]
        body = {"tenant_id": tenant, "environment": "sandbox"}
        requests = [
            (m, {**body, "status": s, "metadata": {"n": n}}) for n, (m, s) in enumerate(steps)
        ]
        start = _ingested()
        with caplog.at_level(logging.WARNING, logger="dispatcher.ingest_batcher"):
            got, _ = await _coalesced(client, gate, requests)
        assert gate.sizes() == [1, 5]
        assert "a batch of transitions failed" in caplog.text
        codes = {n: a.status for n, a in enumerate(got)}
        assert codes[2] == 500, "the poisoned transition fails, alone"
        expected = _expected_codes(steps, [n for n in _numbered(gate.batches) if n != 2])
        assert {n: c for n, c in codes.items() if n != 2} == expected
        async with pool.acquire() as conn:
            events = await conn.fetch("SELECT mailing_id FROM events")
        accepted = sum(1 for a in got if a.status == 202)
        assert len(events) == accepted == _ingested() - start, "each event counted once"
        assert "ml_poison" not in {e["mailing_id"] for e in events}
    finally:
        async with pool.acquire() as conn:
            await conn.execute("DROP TRIGGER test_poison ON mailings; DROP FUNCTION test_poison()")


async def test_coalesced_and_keyed_reports_of_one_mailing_lose_no_update(
    client: Client, pool: asyncpg.Pool, make_tenant: Any, clock: FakeClock
) -> None:
    """Reports without a key (coalesced, no transaction) race reports with an
    Idempotency-Key (their own transaction, mailing locked before the read) on one
    mailing: every 202 has its event, no event lacks one, and the accepted events form a
    chain the state machine allows, ending at the mailing's stored status."""
    tenant = (await make_tenant()).tenant_id
    async with pool.acquire() as conn:
        await ensure_day(conn, clock.now())  # the day's partitions, before the race
    statuses = [s for s in MailingStatus if s is not MailingStatus.RETURN_RECEIPT] * 3
    body = {"tenant_id": tenant, "environment": "sandbox"}

    async def send(n: int, status: MailingStatus) -> tuple[int, dict[str, Any]]:
        headers = {**AUTH, **({"Idempotency-Key": f"k{n}"} if n % 2 else {})}
        resp = await client.post(
            "/internal/v1/mailings/ml_1/transitions",
            json={**body, "status": status.value},
            headers=headers,
        )
        return resp.status, await resp.json()

    answers = await asyncio.gather(*(send(n, s) for n, s in enumerate(statuses)))
    assert {code for code, _ in answers} <= {200, 202, 409}
    accepted = {b["event_id"]: b["event_type"] for code, b in answers if code == 202}
    async with pool.acquire() as conn:
        events = dict(await conn.fetch("SELECT id, event_type FROM events"))
        mailing = await conn.fetchrow("SELECT status, last_event_id FROM mailings")
    assert events == accepted
    chain = sorted(
        (MailingStatus(t.removeprefix("mailing.")) for t in events.values()),
        key=lambda s: len(FORWARD_ORDER) if s is MailingStatus.FAILED else FORWARD_ORDER.index(s),
    )
    previous: MailingStatus | None = None
    for status in chain:
        assert decide(previous, status, MailType.STANDARD) == Accept(), (previous, status)
        previous = status
    assert previous == mailing["status"]
    assert events[mailing["last_event_id"]] == f"mailing.{mailing['status']}"
