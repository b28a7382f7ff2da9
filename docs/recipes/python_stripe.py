"""A webhook receiver verifying X-Bjet24-Signature with Stripe's library (`pip install stripe`).

    WEBHOOK_SECRET=whsec_... PORT=9000 python3 python_stripe.py

The header follows Stripe's scheme, so `stripe.WebhookSignature.verify_header` checks it as
is: every v1= (several during a rotation), the 5-minute tolerance, constant-time comparison.
Answers 200, 400 (header missing or unreadable, timestamp outside the tolerance) or 401.
"""

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import stripe

SECRET = os.environ["WEBHOOK_SECRET"]
HEADER = os.environ.get("SIGNATURE_HEADER", "X-Bjet24-Signature")
processed: set[str] = set()


def check_signature(header: str | None, body: bytes) -> int | None:
    """None when the request is authentic, else the status code to answer."""
    if not header:
        return 400
    try:
        stripe.WebhookSignature.verify_header(body.decode("utf-8"), header, SECRET, 300)
    except stripe.SignatureVerificationError as exc:
        # Stripe's messages tell the cases apart: a bad or stale header is the sender's
        # request being unusable (400); a well-formed header that does not match is 401.
        return 401 if "No signatures found matching" in str(exc) else 400
    return None


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        refused = check_signature(self.headers.get(HEADER), body)
        if refused is not None:
            return self.answer(refused, "signature refused")
        event = json.loads(body)
        if event["event_id"] in processed:
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
