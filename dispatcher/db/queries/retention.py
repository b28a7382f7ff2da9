"""Retention: history partitions, table sizes, trimming mailings and idempotency keys."""

# ---- retention ----------------------------------------------------------------------------

# $1 range start, $2 range end -> whether a live delivery's event lies in [start, end): an
# events partition must not be dropped while a queue row still needs its event
QUEUE_NEEDS_EVENTS = """
SELECT EXISTS (SELECT 1 FROM delivery_queue
               WHERE event_created_at >= $1 AND event_created_at < $2)
"""

# ---- retention ------------------------------------------------------------------------------


def _lock_key(name: str) -> str:
    """An advisory lock's key, named once: 'retention' (one process applies retention at a
    time) and 'requeue' (see below)."""
    return f"hashtextextended('dispatcher.{name}', 0)"


# -> true when this transaction now holds the retention lock; false while another process
# applies retention (it is released at commit, so a crashed run never blocks the next one)
TRY_RETENTION_LOCK = f"SELECT pg_try_advisory_xact_lock({_lock_key('retention')})"

# Taken shared (for the transaction) by whatever puts an existing event back in the queue
# (replay, retry): retention holds it exclusively while it checks that nothing pending needs a
# partition, detaches and drops it, so a replay never re-queues a delivery whose event is being
# removed.
LOCK_REQUEUE_SHARED = f"SELECT pg_advisory_xact_lock_shared({_lock_key('requeue')})"

# The same two locks held by a session, across the statements that cannot run in a
# transaction block (DETACH PARTITION ... CONCURRENTLY): released explicitly, and at the
# latest when the session ends
TRY_RETENTION_SESSION_LOCK = f"SELECT pg_try_advisory_lock({_lock_key('retention')})"
UNLOCK_RETENTION_SESSION = f"SELECT pg_advisory_unlock({_lock_key('retention')})"
LOCK_REQUEUE_SESSION = f"SELECT pg_advisory_lock({_lock_key('requeue')})"
UNLOCK_REQUEUE_SESSION = f"SELECT pg_advisory_unlock({_lock_key('requeue')})"

# $1 names of range-partitioned parents (resolved on the search_path; unknown names are
# skipped) -> each one's partitions: bound as PostgreSQL prints it, planner row estimate (-1
# before the first ANALYZE), size on disk with indexes and TOAST, and whether a concurrent
# detach of it was interrupted (it must be finished with DETACH ... FINALIZE)
HISTORY_PARTITIONS = """
SELECT t.name AS parent, c.oid::regclass::text AS partition,
       pg_get_expr(c.relpartbound, c.oid) AS bound,
       c.reltuples::bigint AS estimated_rows, pg_total_relation_size(c.oid) AS bytes,
       i.inhdetachpending AS detaching
FROM unnest($1::text[]) AS t (name)
JOIN pg_partitioned_table pt ON pt.partrelid = to_regclass(t.name)
JOIN pg_inherits i ON i.inhparent = pt.partrelid
JOIN pg_class c ON c.oid = i.inhrelid
WHERE pt.partstrat = 'r' AND pt.partnatts = 1
ORDER BY t.name, c.relname
"""

# $1 table name -> its size in pages (batched trims walk it page range by page range)
TABLE_PAGES = """
SELECT (pg_relation_size(to_regclass($1)) / current_setting('block_size')::int)::bigint
"""

# $1 table name -> bytes on disk with indexes and TOAST (0 when absent)
TABLE_BYTES = "SELECT COALESCE(pg_total_relation_size(to_regclass($1)), 0)"

# $1 first page, $2 page after the last, $3 cutoff -> mailings in those pages whose last
# change is older than the cutoff, deleted (a TID range scan: bounded work, no index needed)
TRIM_MAILINGS = """
DELETE FROM mailings
WHERE ctid >= format('(%s,0)', $1::bigint)::tid AND ctid < format('(%s,0)', $2::bigint)::tid
  AND updated_at < $3
"""

# $1 cutoff -> how many mailings TRIM_MAILINGS would delete (dry run)
COUNT_EXPIRED_MAILINGS = "SELECT count(*) FROM mailings WHERE updated_at < $1"

# $1 first page, $2 page after the last, $3 cutoff -> expired Idempotency-Key records deleted
TRIM_IDEMPOTENCY_KEYS = """
DELETE FROM idempotency_keys
WHERE ctid >= format('(%s,0)', $1::bigint)::tid AND ctid < format('(%s,0)', $2::bigint)::tid
  AND created_at < $3
"""

# $1 cutoff -> how many TRIM_IDEMPOTENCY_KEYS would delete (dry run)
COUNT_EXPIRED_IDEMPOTENCY_KEYS = "SELECT count(*) FROM idempotency_keys WHERE created_at < $1"
