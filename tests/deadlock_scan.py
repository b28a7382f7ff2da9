"""Every process log of a run is searched for a deadlock: one found fails the run.

PostgreSQL resolves a deadlock by aborting one transaction, which the engine retries, so a
deadlock never loses data; but it means two code paths took locks in different orders, which
docs/architecture.md's lock order forbids. The suite and the benchmark look for the word in
every log (the workers log `DeadlockDetectedError` when a statement is aborted).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def find_deadlocks(paths: Iterable[Path]) -> list[str]:
    """`path:line: text` of every log line that mentions a deadlock."""
    found = []
    for path in paths:
        with path.open(errors="replace") as lines:
            for number, line in enumerate(lines, 1):
                if "deadlock" in line.lower():
                    found.append(f"{path}:{number}: {line.strip()[:300]}")
    return found
