"""`dispatcher receive`: a local webhook receiver that verifies signatures, for trying things out.

It checks the `t=,v1=` header exactly as Stripe's `WebhookSignature.verify_header` does
(HMAC-SHA256 over `<t>.<body>`, 5-minute tolerance), prints one line per event, and
answers 200, or 400 when the signature does not verify.
"""

from __future__ import annotations

import sys
import time

import orjson
from aiohttp import web

from dispatcher.signing import DEFAULT_SIGNATURE_HEADER, verify_v1


def receiver_app(secret: str, header: str = DEFAULT_SIGNATURE_HEADER) -> web.Application:
    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        signature = request.headers.get(header, "")
        verified = verify_v1(signature, [secret], body, now=time.time())
        event_id = request.headers.get("X-Event-Id", "?")
        event_type = request.headers.get("X-Event-Type", "?")
        attempt = request.headers.get("X-Delivery-Attempt", "?")
        state = "verified" if verified else "BAD SIGNATURE"
        print(f"{state}  {event_type}  {event_id}  attempt {attempt}", flush=True)
        if verified:
            try:
                data = orjson.loads(body).get("data", {})
            except orjson.JSONDecodeError:
                data = {}
            print(f"    {orjson.dumps(data).decode()}", flush=True)
        return web.Response(status=200 if verified else 400, text=state)

    app = web.Application()
    app.router.add_post("/{tail:.*}", receive)
    return app


def run_receiver(host: str, port: int, secret: str, header: str) -> int:
    print(f"listening on http://{host}:{port}/ (any path); Ctrl-C stops", file=sys.stderr)
    web.run_app(receiver_app(secret, header), host=host, port=port, print=None)
    return 0
