"""`dispatcher` command line: run the roles, migrate, manage tenants and keys."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from dispatcher import __version__, retention, sealing
from dispatcher.db.migrate import migrate
from dispatcher.db.pool import create_pool, database_url
from dispatcher.errors import DispatcherError
from dispatcher.logs import setup_logging
from dispatcher.models import Environment
from dispatcher.settings import Settings, load_settings
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


async def _cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    async with _connection(settings) as conn:
        applied = await migrate(conn)
    print(f"applied: {', '.join(applied)}" if applied else "database is up to date")
    return 0


async def _cmd_tenants_create(settings: Settings, args: argparse.Namespace) -> int:
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


async def _cmd_tenants_list(settings: Settings, args: argparse.Namespace) -> int:
    async with _connection(settings) as conn:
        found = await tenants.list_tenants(conn)
    if args.json:
        _print_json([{"id": t.id, "name": t.name, "created_at": t.created_at} for t in found])
    else:
        for t in found:
            print(f"{t.id}  {t.created_at:%Y-%m-%d %H:%M}  {t.name}")
    return 0


async def _cmd_keys_create(settings: Settings, args: argparse.Namespace) -> int:
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


async def _cmd_keys_list(settings: Settings, args: argparse.Namespace) -> int:
    async with _connection(settings) as conn:
        found = await tenants.list_keys(conn, args.tenant)
    if args.json:
        _print_json([k.__dict__ for k in found])
    else:
        for k in found:
            state = f"revoked {k.revoked_at:%Y-%m-%d}" if k.revoked_at else "active"
            print(f"{k.id}  {k.tenant_id}  {k.environment.value:<10}  {k.key_prefix}…  {state}")
    return 0


async def _cmd_keys_revoke(settings: Settings, args: argparse.Namespace) -> int:
    async with _connection(settings) as conn:
        done = await tenants.revoke_key(conn, args.key_id, _now())
    if not done:
        print(f"no active key {args.key_id}", file=sys.stderr)
        return 1
    print(f"revoked {args.key_id}")
    return 0


def _moment(text: str) -> datetime:
    """--since/--until: ISO 8601 (RFC 3339); a time without a zone is UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _positive(text: str) -> int:
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


async def _cmd_dead_letters_list(settings: Settings, args: argparse.Namespace) -> int:
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


async def _cmd_dead_letters_replay(settings: Settings, args: argparse.Namespace) -> int:
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


async def _cmd_retention_run(settings: Settings, args: argparse.Namespace) -> int:
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


async def _cmd_secrets_rekey(settings: Settings, args: argparse.Namespace) -> int:
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


def _cmd_secrets_generate_key(args: argparse.Namespace) -> int:
    print(sealing.generate_key())
    return 0


def _role(api: bool, worker: bool) -> Callable[[Settings, argparse.Namespace], Awaitable[int]]:
    async def run(settings: Settings, args: argparse.Namespace) -> int:
        from run.service import serve

        await serve(settings, api=api, worker=worker, migrate_first=args.migrate)
        return 0

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dispatcher", description="Outbound webhook dispatcher")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    for name, api, worker, text in (
        ("serve", True, True, "REST API, workers and /metrics in one process"),
        ("api", True, False, "the REST API alone"),
        ("worker", False, True, "delivery workers alone"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--migrate", action="store_true", help="apply migrations first")
        p.add_argument("--host", help="listen address (DISPATCHER_HOST)")
        p.add_argument("--port", type=int, help="listen port (DISPATCHER_PORT)")
        p.set_defaults(func=_role(api, worker))

    sub.add_parser("migrate", help="apply pending migrations").set_defaults(func=_cmd_migrate)

    rc = sub.add_parser("receive", help="a local receiver that verifies signatures (for trying)")
    held = rc.add_mutually_exclusive_group(required=True)
    held.add_argument("--secret", help="the endpoint's signing secret (hmac endpoints)")
    held.add_argument("--public-key", help="the endpoint's whpk_ public key (ed25519 endpoints)")
    rc.add_argument("--host", default="127.0.0.1")
    rc.add_argument("--port", type=int, default=9000)
    rc.add_argument("--header", default="X-Bjet24-Signature", help="signature header name")
    rc.set_defaults(func=None, sync=_cmd_receive)

    t = sub.add_parser("tenants", help="manage tenants").add_subparsers(
        dest="action", required=True
    )
    tc = t.add_parser("create", help="create a tenant with a sandbox and a production key")
    tc.add_argument("name")
    tc.add_argument("--json", action="store_true")
    tc.set_defaults(func=_cmd_tenants_create)
    tl = t.add_parser("list", help="list tenants")
    tl.add_argument("--json", action="store_true")
    tl.set_defaults(func=_cmd_tenants_list)

    k = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="action", required=True)
    kc = k.add_parser("create", help="create an API key")
    kc.add_argument("--tenant", required=True)
    kc.add_argument("--env", required=True, choices=[e.value for e in Environment])
    kc.add_argument("--json", action="store_true")
    kc.set_defaults(func=_cmd_keys_create)
    kl = k.add_parser("list", help="list API keys (never the keys themselves)")
    kl.add_argument("--tenant")
    kl.add_argument("--json", action="store_true")
    kl.set_defaults(func=_cmd_keys_list)
    kr = k.add_parser("revoke", help="revoke an API key; effective on the next request")
    kr.add_argument("key_id")
    kr.set_defaults(func=_cmd_keys_revoke)

    s = sub.add_parser("secrets", help="encryption of secrets at rest").add_subparsers(
        dest="action", required=True
    )
    sr = s.add_parser(
        "rekey",
        help="re-encrypt every secret under DISPATCHER_ENCRYPTION_KEY (the service may run; "
        "it must read the old key from DISPATCHER_ENCRYPTION_OLD_KEYS until this is done)",
    )
    sr.set_defaults(func=_cmd_secrets_rekey)
    s.add_parser("generate-key", help="print a new key for DISPATCHER_ENCRYPTION_KEY").set_defaults(
        func=None, sync=_cmd_secrets_generate_key
    )

    d = sub.add_parser("dead-letters", help="list and replay dead deliveries").add_subparsers(
        dest="action", required=True
    )
    dl = d.add_parser("list", help="list dead deliveries, newest first")
    dr = d.add_parser("replay", help="re-queue dead deliveries now, with a fresh retry window")
    for p in (dl, dr):
        p.add_argument("--tenant", help="only this tenant's")
        p.add_argument("--endpoint", help="only this endpoint's")
        p.add_argument("--since", type=_moment, help="created at or after (ISO 8601)")
        p.add_argument("--until", type=_moment, help="created before (ISO 8601)")
    dl.add_argument("--limit", type=_positive, default=1000, help="at most this many (1000)")
    dl.add_argument("--json", action="store_true")
    dl.set_defaults(func=_cmd_dead_letters_list)
    dr.add_argument("--chunk-size", type=_positive, default=1000, help="rows per UPDATE (1000)")
    dr.set_defaults(func=_cmd_dead_letters_replay)

    r = sub.add_parser("retention", help="remove expired history").add_subparsers(
        dest="action", required=True
    )
    rr = r.add_parser(
        "run", help="remove history older than DISPATCHER_RETENTION_DAYS now, and say what went"
    )
    rr.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    rr.add_argument("--json", action="store_true")
    rr.set_defaults(func=_cmd_retention_run)
    return parser


def _cmd_receive(args: argparse.Namespace) -> int:
    from dispatcher.devreceiver import run_receiver

    try:
        return run_receiver(args.host, args.port, args.secret, args.header, args.public_key)
    except ValueError as exc:
        print(f"dispatcher receive: {exc}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "sync", None) is not None:
        code: int = args.sync(args)
        return code
    overrides = {k: v for k in ("host", "port") if (v := getattr(args, k, None)) is not None}
    try:
        settings = load_settings(**overrides)
        setup_logging(settings.log_format, settings.log_level)
        try:
            import uvloop

            runner: Any = uvloop.run
        except ImportError:
            runner = asyncio.run
        result: int = runner(args.func(settings, args))
        return result
    except DispatcherError as exc:
        print(f"dispatcher: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
