"""Group commit: concurrent single transitions share one batch ingest.

A transition reported alone costs its own statements and commit; most of a request's time
is then spent waiting on PostgreSQL. The batcher lets the transitions that arrive while a
batch is being written wait for the next one, so that a busy API process writes many per
round trip, each request still getting its own verdict.

Decisions:

- No timer. While a batch is in flight, arriving transitions queue; when it is done,
  everything queued (at most ``MAX_BATCH``, in arrival order) is the next batch. An idle
  process writes a lone transition at once, so coalescing adds no latency at low load.
- Arrival order is batch order, and a batch is judged in order, each transition against its
  mailing as the earlier ones left it: two reports of one mailing in one batch get the
  verdicts they would have got one after the other.
- No transaction: a batch is one read and one write (`dispatcher.events.ingest_round`, the
  same two statements as a transition alone), each mailing written on its own, and a busy
  mailing never holds up the others: its lock is tried, not waited for.
- A mailing the batch could not write (another writer holds its lock, or changed it since
  the read: nothing of it was written) leaves the batches: its transitions, and any of it
  that arrive meanwhile, are ingested alone, one after the other in arrival order, waiting
  for the lock as a transition alone does; other mailings go on in batches meanwhile.
- Tenants and environments mix in a batch: the read covers every tenant and mailing named
  and each row is written under its own. A transition of an unknown tenant gets
  `UnknownTenants` (its own 422); the others are written without it.
- A database error fails no neighbour: when a batch fails, its transitions are ingested
  alone the same way (per mailing in arrival order), each getting its own answer or its
  own error, so one poisoned transition cannot fail the others. The failed statement wrote
  and counted nothing; a retry never duplicates an event (had the statement committed after
  all, its answer lost with the connection, the retry is answered Repeat and the original
  event).
- Requests with an ``Idempotency-Key`` never come here: their stored answer shares their
  own transaction.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import asyncpg

from dispatcher.events import MailingKey, Recorded, Transition, ingest, ingest_round

MAX_BATCH = 1000

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Waiting:
    transition: Transition
    now: datetime
    answer: asyncio.Future[Recorded]

    @property
    def mailing(self) -> MailingKey:
        t = self.transition
        return (t.tenant_id, t.environment, t.mailing_id)


def _settle(waiting: _Waiting, outcome: Recorded | BaseException) -> None:
    """Hand one request its answer (unless it went away meanwhile)."""
    if waiting.answer.done():
        return
    if isinstance(outcome, asyncio.CancelledError):
        waiting.answer.cancel()
    elif isinstance(outcome, BaseException):
        waiting.answer.set_exception(outcome)
    else:
        waiting.answer.set_result(outcome)


class IngestBatcher:
    """One per API process; `ingest` is what a route awaits for one transition."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        max_batch: int = MAX_BATCH,
        on_batch: Callable[[Sequence[Transition]], Awaitable[None]] | None = None,
    ) -> None:
        self._pool = pool
        self._max_batch = max_batch
        self._on_batch = on_batch  # awaited with each batch, in order, before it is written
        self._queue: list[_Waiting] = []
        self._task: asyncio.Task[None] | None = None
        # mailings taken out of the batches: their transitions, ingested alone in order
        self._alone: dict[MailingKey, list[_Waiting]] = {}
        self._alone_tasks: set[asyncio.Task[None]] = set()
        self._watchers: list[tuple[int, asyncio.Future[None]]] = []

    @property
    def waiting(self) -> int:
        """Transitions queued for the next batch."""
        return len(self._queue)

    async def ingest(self, transition: Transition, now: datetime) -> Recorded:
        """The transition's verdict, as `dispatcher.events.ingest` would give it alone.

        Raises UnknownTenants for an unknown tenant, and the database's error when the
        transition failed alone too. ``now`` is the request's: a transition without an
        ``occurred_at`` occurred then.
        """
        return await self.submit(transition, now)

    def submit(self, transition: Transition, now: datetime) -> asyncio.Future[Recorded]:
        """Queue the transition; its answer is the future's result."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Recorded] = loop.create_future()
        stamped = replace(transition, occurred_at=transition.occurred_at or now)
        self._queue.append(_Waiting(stamped, now, answer))
        if self._watchers:
            self._wake_watchers()
        if self._task is None:
            self._task = loop.create_task(self._drain(), name="ingest-batcher")
        return answer

    async def until_waiting(self, count: int) -> None:
        """Returns once at least `count` transitions wait for the next batch (tests use it
        to know that requests were coalesced, without sleeping)."""
        if len(self._queue) >= count:
            return
        reached: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._watchers.append((count, reached))
        await reached

    def _wake_watchers(self) -> None:
        still = []
        for count, reached in self._watchers:
            if len(self._queue) >= count:
                if not reached.done():
                    reached.set_result(None)
            else:
                still.append((count, reached))
        self._watchers = still

    async def close(self) -> None:
        """Wait for what is in flight and queued (the app's shutdown, after its requests
        were answered or are being answered)."""
        while self._task is not None or self._alone_tasks:
            pending = [t for t in (self._task, *self._alone_tasks) if t is not None]
            await asyncio.wait(pending)

    async def _drain(self) -> None:
        batch: list[_Waiting] = []
        try:
            while self._queue:
                batch = self._take()
                if batch:
                    await self._run(batch)
                batch = []
        except BaseException as exc:  # cancelled: nobody may wait for ever
            for waiting in [*batch, *self._queue]:
                _settle(waiting, exc)
            self._queue.clear()
            raise
        finally:
            self._task = None

    def _take(self) -> list[_Waiting]:
        """The next batch; what belongs to a mailing ingested alone joins it instead."""
        batch: list[_Waiting] = []
        taken = 0
        for waiting in self._queue:
            if len(batch) == self._max_batch:
                break
            taken += 1
            if waiting.mailing in self._alone:
                self._detach(waiting)
            else:
                batch.append(waiting)
        del self._queue[:taken]
        return batch

    async def _run(self, batch: list[_Waiting]) -> None:
        if self._on_batch is not None:
            await self._on_batch([w.transition for w in batch])
        try:
            async with self._pool.acquire() as conn:
                outcomes = await ingest_round(
                    conn, [w.transition for w in batch], max(w.now for w in batch)
                )
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0], exc)
                return
            log.warning(
                "a batch of transitions failed; each is ingested alone",
                extra={"transitions": len(batch), "error_class": type(exc).__name__},
            )
            for waiting in batch:
                self._detach(waiting)
            return
        for waiting, outcome in zip(batch, outcomes, strict=True):
            if outcome is None:
                self._detach(waiting)
            else:
                _settle(waiting, outcome)

    def _detach(self, waiting: _Waiting) -> None:
        """Ingest it alone, after what its mailing already has to ingest alone."""
        line = self._alone.get(waiting.mailing)
        if line is not None:
            line.append(waiting)
            return
        self._alone[waiting.mailing] = [waiting]
        task = asyncio.get_running_loop().create_task(self._alone_line(waiting.mailing))
        self._alone_tasks.add(task)
        task.add_done_callback(self._alone_tasks.discard)

    async def _alone_line(self, mailing: MailingKey) -> None:
        line = self._alone[mailing]
        try:
            while line:
                await self._ingest_alone(line[0])
                line.pop(0)
        except BaseException as exc:  # cancelled: nobody may wait for ever
            for waiting in line:
                _settle(waiting, exc)
            raise
        finally:
            del self._alone[mailing]

    async def _ingest_alone(self, waiting: _Waiting) -> None:
        try:
            async with self._pool.acquire() as conn:
                (outcome,) = await ingest(conn, [waiting.transition], waiting.now)
        except Exception as exc:
            _settle(waiting, exc)
            return
        _settle(waiting, outcome)
