"""CPU time per delivery, by process: where a dispatch run's work goes on the shared cores.

Read from /proc (Linux): each process's user + system ticks, and PostgreSQL's as the sum over
the bench server's backends (children of its postmaster). A snapshot is taken before the
workers start and another once everything is received, before they stop, so a worker's
backends are still there to be read. The figures are robust to other load on the machine in
a way rates are not: they count work, not waiting.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

HZ = os.sysconf("SC_CLK_TCK")


def ticks(pid: int) -> int:
    """User + system ticks of one process (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def _children(parent: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            found.append(int(entry))
    return found


def postmaster(data_dir: Path) -> int | None:
    """The pid of the PostgreSQL server whose data directory is under `data_dir`."""
    for pid_file in data_dir.rglob("postmaster.pid"):
        return int(pid_file.read_text().split()[0])
    return None


def snapshot(processes: dict[str, list[int]], server: int | None) -> Counter[tuple[str, int]]:
    """Ticks per (class, pid), PostgreSQL backends as class "postgres"."""
    snap: Counter[tuple[str, int]] = Counter()
    for name, pids in processes.items():
        for pid in pids:
            snap[(name, pid)] = ticks(pid)
    if server is not None:
        for pid in _children(server):
            snap[("postgres", pid)] = ticks(pid)
    return snap


def per_item_us(
    before: Counter[tuple[str, int]], after: Counter[tuple[str, int]], items: int
) -> dict[str, float]:
    """Microseconds of CPU per item, by class (a process that started between the two
    snapshots counts whole)."""
    spent: Counter[str] = Counter()
    for key, value in after.items():
        spent[key[0]] += value - before.get(key, 0)
    return {name: spent[name] * 1_000_000 / HZ / items for name in sorted(spent)}
