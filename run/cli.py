"""`dispatcher` command line: the parser and the entry point; `run/commands.py` does the work."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

from dispatcher import __version__
from dispatcher.errors import DispatcherError
from dispatcher.logs import setup_logging
from dispatcher.models import Environment
from dispatcher.settings import Settings, load_settings
from run import commands


def _role(api: bool, worker: bool) -> Callable[[Settings, argparse.Namespace], Awaitable[int]]:
    async def run(settings: Settings, args: argparse.Namespace) -> int:
        from run.service import serve

        await serve(settings, api=api, worker=worker, migrate_first=args.migrate)
        return 0

    return run


Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dispatcher", description="Outbound webhook dispatcher")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_roles, _receive, _tenants, _keys, _secrets, _dead_letters, _retention):
        add(sub)
    return parser


def _roles(sub: Subcommands) -> None:
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

    sub.add_parser("migrate", help="apply pending migrations").set_defaults(
        func=commands.cmd_migrate
    )


def _receive(sub: Subcommands) -> None:
    rc = sub.add_parser("receive", help="a local receiver that verifies signatures (for trying)")
    held = rc.add_mutually_exclusive_group(required=True)
    held.add_argument("--secret", help="the endpoint's signing secret (hmac endpoints)")
    held.add_argument("--public-key", help="the endpoint's whpk_ public key (ed25519 endpoints)")
    rc.add_argument("--host", default="127.0.0.1")
    rc.add_argument("--port", type=int, default=9000)
    rc.add_argument("--header", default="X-Bjet24-Signature", help="signature header name")
    rc.set_defaults(func=None, sync=_cmd_receive)


def _tenants(sub: Subcommands) -> None:
    t = sub.add_parser("tenants", help="manage tenants").add_subparsers(
        dest="action", required=True
    )
    tc = t.add_parser("create", help="create a tenant with a sandbox and a production key")
    tc.add_argument("name")
    tc.add_argument("--json", action="store_true")
    tc.set_defaults(func=commands.cmd_tenants_create)
    tl = t.add_parser("list", help="list tenants")
    tl.add_argument("--json", action="store_true")
    tl.set_defaults(func=commands.cmd_tenants_list)


def _keys(sub: Subcommands) -> None:
    k = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="action", required=True)
    kc = k.add_parser("create", help="create an API key")
    kc.add_argument("--tenant", required=True)
    kc.add_argument("--env", required=True, choices=[e.value for e in Environment])
    kc.add_argument("--json", action="store_true")
    kc.set_defaults(func=commands.cmd_keys_create)
    kl = k.add_parser("list", help="list API keys (never the keys themselves)")
    kl.add_argument("--tenant")
    kl.add_argument("--json", action="store_true")
    kl.set_defaults(func=commands.cmd_keys_list)
    kr = k.add_parser("revoke", help="revoke an API key; effective on the next request")
    kr.add_argument("key_id")
    kr.set_defaults(func=commands.cmd_keys_revoke)


def _secrets(sub: Subcommands) -> None:
    s = sub.add_parser("secrets", help="encryption of secrets at rest").add_subparsers(
        dest="action", required=True
    )
    sr = s.add_parser(
        "rekey",
        help="re-encrypt every secret under DISPATCHER_ENCRYPTION_KEY (the service may run; "
        "it must read the old key from DISPATCHER_ENCRYPTION_OLD_KEYS until this is done)",
    )
    sr.set_defaults(func=commands.cmd_secrets_rekey)
    s.add_parser("generate-key", help="print a new key for DISPATCHER_ENCRYPTION_KEY").set_defaults(
        func=None, sync=commands.cmd_secrets_generate_key
    )


def _dead_letters(sub: Subcommands) -> None:
    d = sub.add_parser("dead-letters", help="list and replay dead deliveries").add_subparsers(
        dest="action", required=True
    )
    dl = d.add_parser("list", help="list dead deliveries, newest first")
    dr = d.add_parser("replay", help="re-queue dead deliveries now, with a fresh retry window")
    for p in (dl, dr):
        p.add_argument("--tenant", help="only this tenant's")
        p.add_argument("--endpoint", help="only this endpoint's")
        p.add_argument("--since", type=commands.moment, help="created at or after (ISO 8601)")
        p.add_argument("--until", type=commands.moment, help="created before (ISO 8601)")
    dl.add_argument(
        "--limit", type=commands.positive, default=1000, help="at most this many (1000)"
    )
    dl.add_argument("--json", action="store_true")
    dl.set_defaults(func=commands.cmd_dead_letters_list)
    dr.add_argument(
        "--chunk-size", type=commands.positive, default=1000, help="rows per UPDATE (1000)"
    )
    dr.set_defaults(func=commands.cmd_dead_letters_replay)


def _retention(sub: Subcommands) -> None:
    r = sub.add_parser("retention", help="remove expired history").add_subparsers(
        dest="action", required=True
    )
    rr = r.add_parser(
        "run", help="remove history older than DISPATCHER_RETENTION_DAYS now, and say what went"
    )
    rr.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    rr.add_argument("--json", action="store_true")
    rr.set_defaults(func=commands.cmd_retention_run)


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
