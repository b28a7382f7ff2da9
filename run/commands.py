"""What the `dispatcher` subcommands do; `run/cli.py` parses the command line and calls them."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from dispatcher import retention, sealing
from dispatcher.db.migrate import migrate
from dispatcher.db.pool import create_pool, database_url
from dispatcher.models import Environment
from dispatcher.settings import Settings
from dispatcher.store import deliveries as delivery_store
from dispatcher.store import secrets as secret_store
from dispatcher.store import tenants


def _now() -> datetime:
    return datetime.now(UTC)


@contextlib.asynccontextmanager
async def _connection(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    with database_url(settings) as url:
        pool = await create_pool(url, min_size=1, max_size=2)
        try:
            async with pool.acquire() as conn:
                yield conn
        finally:
            await pool.close()


def _print_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2, default=str).decode() + "\n")


async def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    async with _connection(settings) as conn:
        applied = await migrate(conn)
    print(f"applied: {', '.join(applied)}" if applied else "database is up to date")
    return 0


async def cmd_tenants_create(settings: Settings, args: argparse.Namespace) -> int:
    async with _connection(settings) as conn:
        tenant, keys = await tenants.create_tenant(conn, args.name, _now())
    if args.json:
        _print_json(
            {
                "tenant_id": tenant.id,
                "name": tenant.name,
                "keys": {env.value: k.key for env, k in keys.items()},
            }
        )
    else:
        print(f"tenant_id:       {tenant.id}")
        for env, key in keys.items():
            print(f"{env.value + ' key:':<16} {key.key}")
        print("Keys are shown once; store them now.")
    return 0


async def cmd_tenants_list(settings: Settings, args: argparse.Namespace) -> int:
    async with _connection(settings) as conn:
        found = await tenants.list_tenants(conn)
    if args.json:
        _print_json([{"id": t.id, "name": t.name, "created_at": t.created_at} for t in found])
    else:
        for t in found:
            print(f"{t.id}  {t.created_at:%Y-%m-%d %H:%M}  {t.name}")
    return 0


async def cmd_keys_create(settings: Settings, args: argparse.Namespace) -> int:
    async with _connection(settings) as conn:
        if await tenants.get_tenant(conn, args.tenant) is None:
            print(f"no tenant {args.tenant}", file=sys.stderr)
            return 1
        key = await tenants.create_key(conn, args.tenant, Environment(args.env), _now())
    if args.json:
        _print_json({"id": key.id, "environment": key.environment.value, "key": key.key})
    else:
        print(f"key_id: {key.id}\nkey:    {key.key}\nThe key is shown once; store it now.")
    return 0


async def cmd_keys_list(settings: Settings, args: argparse.Namespace) -> int:
    async with _connection(settings) as conn:
        found = await tenants.list_keys(conn, args.tenant)
    if args.json:
        _print_json([k.__dict__ for k in found])
    else:
        for k in found:
            state = f"revoked {k.revoked_at:%Y-%m-%d}" if k.revoked_at else "active"
            print(f"{k.id}  {k.tenant_id}  {k.environment.value:<10}  {k.key_prefix}…  {state}")
    return 0


async def cmd_keys_revoke(settings: Settings, args: argparse.Namespace) -> int:
    async with _connection(settings) as conn:
        done = await tenants.revoke_key(conn, args.key_id, _now())
    if not done:
        print(f"no active key {args.key_id}", file=sys.stderr)
        return 1
    print(f"revoked {args.key_id}")
    return 0


def moment(text: str) -> datetime:
    """--since/--until: ISO 8601 (RFC 3339); a time without a zone is UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer: {text!r}")
    return value


def _dead_letter_filter(args: argparse.Namespace) -> delivery_store.DeadLetterFilter:
    return delivery_store.DeadLetterFilter(args.tenant, args.endpoint, args.since, args.until)


def progress_bar(done: int, total: int, width: int = 30) -> str:
    """One redrawable stderr line, `\r[#####     ] 500/1000`: no dependency for a bar."""
    filled = width * done // total if total else width
    return f"\r[{'#' * filled}{' ' * (width - filled)}] {done}/{total}"


async def cmd_dead_letters_list(settings: Settings, args: argparse.Namespace) -> int:
    async with _connection(settings) as conn:
        found = await delivery_store.list_dead_letters(
            conn, _dead_letter_filter(args), args.limit + 1
        )
    shown = found[: args.limit]
    if args.json:
        _print_json(
            [
                {
                    "id": f"dlv_{d.id}",
                    "tenant_id": d.tenant_id,
                    "environment": d.environment,
                    "endpoint_id": d.endpoint_id,
                    "event_id": d.event_id,
                    "event_type": d.event_type,
                    "attempts": d.attempts,
                    "last_status_code": d.last_status_code,
                    "last_outcome": d.last_outcome,
                    "created_at": d.created_at.isoformat(),
                    "died_at": d.died_at.isoformat() if d.died_at else None,
                    "endpoint_live": d.endpoint_live,
                }
                for d in shown
            ]
        )
    else:
        for d in shown:
            last = d.last_status_code or d.last_outcome or "-"
            died = f"{d.died_at:%Y-%m-%d %H:%M}" if d.died_at else "-"
            note = "" if d.endpoint_live else "  (endpoint disabled or deleted)"
            print(
                f"dlv_{d.id}  {d.tenant_id}  {d.environment:<10}  {d.endpoint_id}  {d.event_id}"
                f"  {d.event_type}  attempts={d.attempts}  last={last}  died={died}{note}"
            )
    if len(found) > args.limit:
        print(f"showing the newest {args.limit}; raise --limit for more", file=sys.stderr)
    return 0


async def cmd_dead_letters_replay(settings: Settings, args: argparse.Namespace) -> int:
    where = _dead_letter_filter(args)
    async with _connection(settings) as conn:
        total, skipped = await delivery_store.count_dead_letters(conn, where)
        if skipped:
            print(f"skipping {skipped} of disabled or deleted endpoints", file=sys.stderr)

        def show(done: int) -> None:
            sys.stderr.write(progress_bar(done, max(total, done)))
            sys.stderr.flush()

        show(0)
        done = await delivery_store.replay_dead_letters(
            conn, where, _now(), chunk_size=args.chunk_size, progress=show
        )
    sys.stderr.write("\n")
    print(f"re-queued {done} dead deliveries")
    return 0


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB"):
        if value < 1024:
            return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def _removal_json(r: retention.Removal) -> dict[str, Any]:
    return {
        "table": r.table,
        "partition": r.partition,
        "from": r.start.isoformat() if r.start else None,
        "to": r.end.isoformat() if r.end else None,
        "rows": r.rows,
        "bytes": r.bytes,
    }


async def cmd_retention_run(settings: Settings, args: argparse.Namespace) -> int:
    async with _connection(settings) as conn:
        report = await retention.apply_retention(
            conn, _now(), settings.retention_days, dry_run=args.dry_run
        )
    if args.json:
        _print_json(
            {
                "cutoff": report.cutoff.isoformat(),
                "dry_run": report.dry_run,
                "removed": [_removal_json(r) for r in report.removed],
                "kept": [k.__dict__ for k in report.kept],
                "busy": report.busy,
            }
        )
    else:
        verb = "would remove" if args.dry_run else "removed"
        print(
            f"history older than {report.cutoff:%Y-%m-%d %H:%M} UTC"
            f" (DISPATCHER_RETENTION_DAYS={settings.retention_days})"
        )
        for r in report.removed:
            if r.partition is None:
                print(f"{verb}  {r.table}: {r.rows:,} rows")
                continue
            span = f"[{r.start:%Y-%m-%d %H:%M}, {r.end:%Y-%m-%d %H:%M})" if r.start else ""
            size = _size(r.bytes or 0)
            print(f"{verb}  {r.table}: partition {r.partition} {span}, {r.rows:,} rows, {size}")
        for k in report.kept:
            print(f"kept  {k.table}: partition {k.partition} ({k.reason})")
        if not report.removed and not report.kept:
            print("nothing to remove")
    if report.busy:
        print("another process is applying retention now; run again later", file=sys.stderr)
        return 1
    return 0


async def cmd_secrets_rekey(settings: Settings, args: argparse.Namespace) -> int:
    """Re-seal every secret value under DISPATCHER_ENCRYPTION_KEY, while the service runs."""
    async with _connection(settings) as conn:
        keyring = await secret_store.load_keyring(conn, settings)

        def show(report: secret_store.ResealReport) -> None:
            sys.stderr.write(
                f"\rre-encrypted {report.secrets} secrets, {report.credentials} URL credentials"
            )
            sys.stderr.flush()

        report = await secret_store.reseal(conn, keyring, progress=show)
    sys.stderr.write("\n")
    if report.unreadable:
        print(
            f"{report.unreadable} values could not be opened with the configured keys; "
            "they were left as they are",
            file=sys.stderr,
        )
        return 1
    print(
        f"every secret is encrypted under key {keyring.current_id}; "
        "DISPATCHER_ENCRYPTION_OLD_KEYS can now be removed"
    )
    return 0


def cmd_secrets_generate_key(args: argparse.Namespace) -> int:
    print(sealing.generate_key())
    return 0
