"""One JSON object per log line; credentials scrubbed from whatever reaches the formatter."""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

# Fields the dispatcher attaches with `extra=`; anything else in `extra` is ignored.
CONTEXT_FIELDS = (
    "event_id",
    "delivery_id",
    "endpoint_id",
    "tenant_id",
    "outcome",
    "status_code",
    "duration_ms",
    "attempt",
    "error_class",
    "path",
    "method",
    "status",
    "worker",
    "host",  # a target's host name, and the address the SSRF guard refused
    "address",
    "stage",
    "client",  # the client address of a refused API request, and the key prefix it tried
    "key_prefix",
    "signal",  # the limiter's trace: what cut an endpoint's concurrency limit, and what it saw
    "limit_before",
    "limit_after",
    "latency_ms",
    "recent_ms",
    "baseline_ms",
)

_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s:@]*(:[^/\s@]*)?@")
_SECRETS = re.compile(
    r"((?:whsec|whsk)_[A-Za-z0-9+/=]{4,}|sk_(?:sandbox|production)_[A-Za-z0-9_-]{4,})"
)
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"']+")


_MARKERS = ("@", "whsec_", "whsk_", "sk_", "earer")


def scrub(text: str) -> str:
    """Remove URL passwords, signing secrets, API keys and bearer tokens from free text."""
    if not any(marker in text for marker in _MARKERS):
        return text  # the common case, checked without a regex
    text = _URL_CREDENTIALS.sub(r"\1***@", text)
    text = _SECRETS.sub("[redacted]", text)
    return _BEARER.sub(r"\1[redacted]", text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": scrub(record.getMessage()),
        }
        for name in CONTEXT_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                entry[name] = scrub(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exception"] = scrub(self.formatException(record.exc_info))
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """For a developer's terminal; scrubbed the same way."""

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{name}={record.__dict__[name]}"
            for name in CONTEXT_FIELDS
            if record.__dict__.get(name) is not None
        )
        line = (
            f"{self.formatTime(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        )
        if extras:
            line += f" [{extras}]"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return scrub(line)


def setup_logging(fmt: str = "json", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("pgserver").setLevel(logging.WARNING)
