"""A webhook receiver verifying X-Signature, the e-invoice sorted-key scheme (stdlib only).

    WEBHOOK_SECRET=whsec_... PORT=9000 python3 python_x_signature.py

X-Signature is `sha256=` + the hex HMAC-SHA256, keyed with the secret, of the event parsed
and re-serialized with `json.dumps(event, sort_keys=True)`. It is computed with the newest
secret only and carries no timestamp: a receiver still on the old secret refuses deliveries
during a rotation (they are retried), and nothing protects against a replayed request; prefer
X-Bjet24-Signature (python_stdlib.py) when you can. Answers 200, 400 (header missing or
malformed) or 401 (no match).
"""

import hashlib
import hmac
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = os.environ["WEBHOOK_SECRET"].encode("utf-8")
processed: set[str] = set()


def check_signature(header: str | None, body: bytes) -> int | None:
    """None when the request is authentic, else the status code to answer."""
    if not header or not header.startswith("sha256="):
        return 400
    try:
        event = json.loads(body)
    except ValueError:
        return 400
    canonical = json.dumps(event, sort_keys=True).encode("utf-8")
    expected = "sha256=" + hmac.new(SECRET, canonical, hashlib.sha256).hexdigest()
    return None if hmac.compare_digest(expected, header) else 401


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        refused = check_signature(self.headers.get("X-Signature"), body)
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
