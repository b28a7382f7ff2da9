"""A webhook receiver with Python's standard library only: verifies X-Bjet24-Signature.

    WEBHOOK_SECRET=whsec_... PORT=9000 python3 python_stdlib.py

Answers 200 (processed, or a duplicate already processed), 400 (signature header missing or
malformed, or a timestamp more than 5 minutes away) or 401 (no signature matches). Prints one
line per event it accepts. Keep processed event ids in your database, not in memory.
"""

import hashlib
import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = os.environ["WEBHOOK_SECRET"].encode("utf-8")  # the whole string, whsec_ included
HEADER = os.environ.get("SIGNATURE_HEADER", "X-Bjet24-Signature")
TOLERANCE_SECONDS = 300
processed: set[str] = set()


def check_signature(header: str | None, body: bytes) -> int | None:
    """None when the request is authentic, else the status code to answer."""
    if not header:
        return 400
    timestamp, signatures = None, []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value)  # several during a secret rotation: any may match
    if timestamp is None or not signatures:
        return 400
    if abs(time.time() - timestamp) > TOLERANCE_SECONDS:
        return 400
    expected = hmac.new(SECRET, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(expected, s) for s in signatures):
        return 401
    return None


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))  # the raw bytes
        refused = check_signature(self.headers.get(HEADER), body)
        if refused is not None:
            return self.answer(refused, "signature refused")
        event = json.loads(body)
        if event["event_id"] in processed:  # at least once: the same event may come again
            print("duplicate", event["event_id"], flush=True)
            return self.answer(200, "duplicate")
        processed.add(event["event_id"])
        print("processed", event["event_id"], event["event_type"], flush=True)
        self.answer(200, "ok")  # answer fast; do slow work after, from your own queue

    def answer(self, status: int, text: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(text.encode())

    def log_message(self, *args: object) -> None:
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("PORT", "9000"))), Handler)
    print("listening", server.server_address[1], flush=True, file=sys.stderr)
    server.serve_forever()
