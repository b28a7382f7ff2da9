"""`dispatcher receive`: a local webhook receiver that verifies signatures, for trying things out.

With ``--secret`` it checks the ``t=,v1=`` header exactly as Stripe's
``WebhookSignature.verify_header`` does (HMAC-SHA256 over ``<t>.<body>``, any ``v1``,
5-minute tolerance); with ``--public-key`` (an ed25519 endpoint's ``whpk_`` key) it checks
the Standard Webhooks ``v1a`` signature. It prints one line per request and answers as
docs/receiving.md tells receivers to: 200, 400 (missing, malformed or stale), 401 (no match).
"""

from __future__ import annotations

import sys
import time

import orjson
from aiohttp import web

from dispatcher.signing import DEFAULT_SIGNATURE_HEADER
from dispatcher.verification import Verdict, check_v1, check_v1a, public_key


def receiver_app(
    secret: str | None = None,
    header: str = DEFAULT_SIGNATURE_HEADER,
    *,
    public_key_text: str | None = None,
) -> web.Application:
    """One of ``secret`` (HMAC endpoints) or ``public_key_text`` (ed25519 endpoints)."""
    if (secret is None) == (public_key_text is None):
        raise ValueError("give either a secret or a public key")
    key = public_key(public_key_text) if public_key_text is not None else None

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        now = time.time()
        if key is not None:
            lowered = {k.lower(): v for k, v in request.headers.items()}
            verdict = check_v1a(lowered, [key], body, now)
        else:
            verdict = check_v1(request.headers.get(header, ""), [secret or ""], body, now)
        event_id = request.headers.get("X-Event-Id", "?")
        event_type = request.headers.get("X-Event-Type", "?")
        attempt = request.headers.get("X-Delivery-Attempt", "?")
        state = "verified" if verdict is Verdict.OK else f"REFUSED ({verdict.value})"
        print(f"{state}  {event_type}  {event_id}  attempt {attempt}", flush=True)
        if verdict is Verdict.OK:
            try:
                data = orjson.loads(body).get("data", {})
            except orjson.JSONDecodeError:
                data = {}
            print(f"    {orjson.dumps(data).decode()}", flush=True)
        return web.Response(status=verdict.status, text=state)

    app = web.Application()
    app.router.add_post("/{tail:.*}", receive)
    return app


def run_receiver(
    host: str, port: int, secret: str | None, header: str, public_key_text: str | None = None
) -> int:
    app = receiver_app(secret, header, public_key_text=public_key_text)
    print(f"listening on http://{host}:{port}/ (any path); Ctrl-C stops", file=sys.stderr)
    web.run_app(app, host=host, port=port, print=None)
    return 0
