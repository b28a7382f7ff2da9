"""A scan of every log the suite produced, for secrets that must never be logged.

What is scanned, once the session ends: every `*.log` file under pytest's base temp
directory. That holds the log files of the dispatcher processes that tests start
(`tests/e2e/conftest.py` writes them to `tmp_path`) and `captured-python.log`, where every
log record emitted inside the test process is written with the product's own JSON
formatter, as production would write it.

What is looked for: any signing secret (`whsec_...`), any API key (`sk_sandbox_...`,
`sk_production_...`), the platform token, and every value registered as secret:
module-level string constants of test modules whose names contain PASSWORD, SECRET or
TOKEN are registered automatically, and a test may call `register(value)` for a value it
makes up (a password it puts in a URL, say). A finding fails the session and is reported
with the file and line, the secret itself masked.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from urllib.parse import quote, unquote

from dispatcher.logs import JsonFormatter

PATTERNS = (
    re.compile(r"whsec_[A-Za-z0-9+/=]{8,}"),
    re.compile(r"whsk_[A-Za-z0-9+/=]{8,}"),  # ed25519 private keys
    re.compile(r"sk_(?:sandbox|production)_[A-Za-z0-9_-]{8,}"),
)
_NAMES = re.compile(r"PASSWORD|SECRET|TOKEN")
_MIN_LENGTH = 6
CAPTURE_FILE = "captured-python.log"

_registered: set[str] = set()


def register(*values: str) -> None:
    """Declare values that must never appear in a log (and their URL-encoded forms)."""
    for value in values:
        for form in (value, quote(value, safe=""), unquote(value)):
            if len(form) >= _MIN_LENGTH:
                _registered.add(form)


def harvest(module: ModuleType) -> None:
    """Register a test module's constants named like secrets (URL_PASSWORD, SECRET, ...)."""
    for name, value in vars(module).items():
        if name.isupper() and isinstance(value, str) and _NAMES.search(name):
            register(value)


def registered() -> frozenset[str]:
    return frozenset(_registered)


def mask(secret: str) -> str:
    return secret[:4] + "…" if len(secret) > 4 else "…"


@dataclass
class Finding:
    path: Path
    line: int
    secret: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {mask(self.secret)}"


@dataclass
class ScanReport:
    files: int = 0
    lines: int = 0
    findings: list[Finding] = field(default_factory=list)


def scan(paths: Iterable[Path], literals: Iterable[str]) -> ScanReport:
    report = ScanReport()
    wanted = sorted(set(literals), key=len, reverse=True)
    for path in paths:
        report.files += 1
        with path.open(errors="replace") as lines:
            for number, line in enumerate(lines, 1):
                report.lines += 1
                found = [m.group(0) for p in PATTERNS for m in p.finditer(line)]
                found += [s for s in wanted if s in line]
                report.findings += [Finding(path, number, s) for s in found]
    return report


def log_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.log") if p.is_file())


class CaptureHandler(logging.FileHandler):
    """Every record of the test process, formatted as the product formats it."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, encoding="utf-8", delay=False)
        self.setFormatter(JsonFormatter())
        self.setLevel(logging.INFO)


def attach(handler: logging.Handler) -> None:
    """(Re-)attach the handler: `setup_logging` replaces the root's handlers when it runs."""
    root = logging.getLogger()
    if handler not in root.handlers:
        root.addHandler(handler)
    if root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)
