-- Partitions made by several processes at once (the first rows of a new UTC day): the loser of
-- the race answers false instead of failing.
--
-- Migration 004's function looked twice with to_regclass, before and after advisory lock 7302.
-- to_regclass answers from this session's catalog cache, which keeps "no such relation" until
-- the session next processes catalog invalidations; waiting on an advisory lock does not, so
-- the second look still said "missing" after the winner committed, CREATE TABLE IF NOT EXISTS
-- skipped, and ATTACH failed with 42809 '"<name>" is already a partition'.
--
-- Now, after the lock: a query of pg_class, a new statement and so (READ COMMITTED) a new
-- snapshot that sees the winner's commit; and where even that is too old (a REPEATABLE READ or
-- SERIALIZABLE caller), the CREATE/ATTACH failure is caught and answered false once the
-- catalog, fresh by then, shows the table attached to `parent`. Same signature and result;
-- still created standalone then attached, so writers of the parent never wait.
CREATE OR REPLACE FUNCTION dispatcher_ensure_partition(parent text, day date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    name text := parent || '_p' || to_char(day, 'YYYYMMDD');
    low timestamptz := (day::timestamp AT TIME ZONE 'UTC');
BEGIN
    IF to_regclass(quote_ident(name)) IS NOT NULL THEN
        RETURN false;  -- the cheap look: a table this session already knows of
    END IF;
    PERFORM pg_advisory_xact_lock(7302);  -- one creator at a time; then look again
    IF EXISTS (SELECT 1 FROM pg_class c
               WHERE c.relname = name
                 AND c.relnamespace = (SELECT oid FROM pg_namespace
                                       WHERE nspname = current_schema())) THEN
        RETURN false;
    END IF;
    BEGIN
        EXECUTE format('CREATE TABLE IF NOT EXISTS %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                       name, parent);
        EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                       parent, name, low, low + interval '1 day');
    EXCEPTION WHEN wrong_object_type OR duplicate_table THEN
        -- 42809 "already a partition" (or 42P07 from a creator not taking the lock): someone
        -- else's partition, committed. Anything else, or a table not attached to `parent`,
        -- is a real error.
        IF to_regclass(quote_ident(name)) IS NOT NULL AND EXISTS (
               SELECT 1 FROM pg_partition_ancestors(to_regclass(quote_ident(name))) a
               WHERE a.relid = to_regclass(quote_ident(parent))) THEN
            RETURN false;
        END IF;
        RAISE;
    END;
    RETURN true;
END $$;
