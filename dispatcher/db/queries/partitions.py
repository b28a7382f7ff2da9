"""The history's daily partitions (dispatcher/partitions.py): made on demand and ahead."""

# $1 parent table, $2 day -> true when this call created (and attached) the day's partition,
# false when it already existed; several processes may call it for one day at once (migration
# 011). It takes advisory lock 7302 for the transaction before it creates anything.
ENSURE_PARTITION = "SELECT dispatcher_ensure_partition($1, $2)"

# -> whether this session holds that lock 7302. A transaction that does not hold it created no
# partition, so every partition it sees was committed by another one.
HOLDS_PARTITION_LOCK = """
SELECT EXISTS (SELECT 1 FROM pg_locks
               WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
                 AND classid = 0 AND objid = 7302 AND objsubid = 1)
"""
