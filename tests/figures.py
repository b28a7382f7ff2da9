"""The figures of a reliability run, collected by the tests that produce them.

Fault, bad-input and security tests record what they did (events sent, deliveries lost,
duplicates, faults injected, malformed inputs tried, 5xx seen) through the `figures`
fixture. At the end of the session the figures are written as JSON to
`<pytest basetemp>/reliability-figures.json` (and to `--figures-json PATH` when given) and
printed in the terminal summary; `python -m tests.faults.report` turns them into
docs/RELIABILITY.md.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Figures that are a peak, not a count: the session keeps the largest value, not the sum.
PEAKS = ("worker_rss_peak_mb",)

# The order (and the meaning) of the totals in the report.
TOTALS: dict[str, str] = {
    "events_sent": "events accepted by the dispatcher during fault tests",
    "deliveries_expected": "(event, subscribed endpoint) pairs that had to arrive",
    "deliveries_delivered": "pairs that arrived at their receiver at least once",
    "deliveries_lost": "pairs that never arrived (must be 0)",
    "duplicates": "extra arrivals of a pair, same event id and byte-identical body",
    "worker_sigkills": "dispatcher worker processes killed with SIGKILL",
    "worker_sigterms": "dispatcher processes stopped with SIGTERM under load",
    "postgres_restarts": "PostgreSQL stopped and started under a running dispatcher",
    "hostile_receivers": "receivers that flap, stall, flood, close early or answer binary",
    "hostile_attempts": "attempts made against those receivers",
    "unavailable_503": "503 answers while the database was down (expected)",
    "malformed_inputs": "malformed or generated requests sent to the API",
    "responses_5xx": "5xx answers to those requests (must be 0)",
    "security_checks": "requests across tenant, environment and credential boundaries",
    "boundary_crossings": "of those, answers that crossed a boundary (must be 0)",
    "worker_rss_peak_mb": "largest worker RSS seen under hostile receivers (MB)",
}


@dataclass
class Figures:
    tests: dict[str, dict[str, float]] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def add(self, test: str, **counts: float) -> None:
        entry = self.tests.setdefault(test, {})
        for name, value in counts.items():
            if name in PEAKS:
                entry[name] = max(entry.get(name, 0), value)
            else:
                entry[name] = entry.get(name, 0) + value

    def totals(self) -> dict[str, float]:
        found: dict[str, float] = {}
        for entry in self.tests.values():
            for name, value in entry.items():
                if name in PEAKS:
                    found[name] = max(found.get(name, 0), value)
                else:
                    found[name] = found.get(name, 0) + value
        ordered = {name: found[name] for name in TOTALS if name in found}
        ordered.update({k: v for k, v in sorted(found.items()) if k not in ordered})
        return ordered

    def as_json(self) -> dict[str, Any]:
        return {
            "run": {
                **self.run,
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "seconds": round(time.monotonic() - self.started, 1),
                "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            },
            "totals": self.totals(),
            "tests": self.tests,
        }

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_json(), indent=2, sort_keys=False) + "\n")

    def summary_lines(self) -> list[str]:
        return [f"{name:>24}: {value:g}" for name, value in self.totals().items()]


FIGURES = Figures()


@dataclass(frozen=True)
class Recorder:
    """What one test hands to the `figures` fixture."""

    test: str

    def add(self, **counts: float) -> None:
        FIGURES.add(self.test, **counts)
