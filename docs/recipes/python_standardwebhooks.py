"""A webhook receiver for the Standard Webhooks headers (`pip install standardwebhooks`, and
`cryptography` for ed25519 endpoints).

    WEBHOOK_SECRET=whsec_... PORT=9000 python3 python_standardwebhooks.py        # v1 (HMAC)
    WEBHOOK_PUBLIC_KEY=whpk_... PORT=9000 python3 python_standardwebhooks.py     # v1a (ed25519)

An HMAC endpoint sends these headers when created with "standard_webhooks": true, and the
library's `Webhook(secret).verify` checks them. An endpoint created with "signing": "ed25519"
always sends them, signed `v1a`, which the library does not verify yet: `verify_v1a` below
does it with `cryptography`, following the same rules. Answers 200, 400 (headers missing,
timestamp more than 5 minutes away) or 401 (no signature matches).
"""

import base64
import json
import os
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from standardwebhooks import Webhook, WebhookVerificationError

SECRET = os.environ.get("WEBHOOK_SECRET")
PUBLIC_KEY = os.environ.get("WEBHOOK_PUBLIC_KEY")  # whpk_ + base64 of the raw 32-byte key
TOLERANCE_SECONDS = 300
processed: set[str] = set()


def verify_v1a(headers: dict[str, str], body: bytes, public_key: str) -> int | None:
    """None when one v1a signature verifies with the public key, else the status to answer."""
    msg_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp", "")
    signatures = headers.get("webhook-signature", "")
    if not msg_id or not timestamp.isdigit() or not signatures:
        return 400
    if abs(time.time() - int(timestamp)) > TOLERANCE_SECONDS:
        return 400
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key.removeprefix("whpk_")))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    for entry in signatures.split(" "):  # one per active key during a rotation
        version, _, signature = entry.partition(",")
        if version != "v1a":
            continue
        try:
            key.verify(base64.b64decode(signature), signed)
            return None
        except (InvalidSignature, ValueError):
            continue
    return 401


def check_signature(headers: dict[str, str], body: bytes) -> int | None:
    if PUBLIC_KEY:
        return verify_v1a(headers, body, PUBLIC_KEY)
    if not all(headers.get(h) for h in ("webhook-id", "webhook-timestamp", "webhook-signature")):
        return 400
    try:
        Webhook(SECRET or "").verify(body, headers)
    except WebhookVerificationError as exc:
        # A well-formed, fresh request whose signatures all differ is 401; the rest
        # (unreadable headers, a timestamp too old or too new) is 400.
        return 401 if "No matching signature" in str(exc) else 400
    return None


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        headers = {k.lower(): v for k, v in self.headers.items()}
        refused = check_signature(headers, body)
        if refused is not None:
            return self.answer(refused, "signature refused")
        event = json.loads(body)
        if event["event_id"] in processed:  # webhook-id is the event id as well
            print("duplicate", event["event_id"], flush=True)
            return self.answer(200, "duplicate")
        processed.add(event["event_id"])
        print("processed", event["event_id"], event["event_type"], flush=True)
        self.answer(200, "ok")

    def answer(self, status: int, text: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(text.encode())

    def log_message(self, *args: object) -> None:
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("PORT", "9000"))), Handler).serve_forever()
