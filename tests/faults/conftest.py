"""Fault tests: real `dispatcher` processes, real receivers, a real (sometimes restarted)
PostgreSQL. Every loop here is bounded in count and in time; sizes grow with `--long`."""

from __future__ import annotations

import os
import random
from typing import Any

import orjson
import pytest

from tests.e2e.conftest import start_process  # noqa: F401 - shared with the e2e tests
from tests.figures import FIGURES
from tests.suite_plugin import long_faults

LONG_SCALE = 5  # --long: bigger streams, so five times the patience


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The big variants get proportionally longer hang guards (pytest-timeout)."""
    if not long_faults(config):
        return
    for item in items:
        if item.nodeid.startswith("tests/faults/"):
            marker = item.get_closest_marker("timeout")
            base = marker.args[0] if marker is not None and marker.args else 60
            item.add_marker(pytest.mark.timeout(base * LONG_SCALE), append=False)


@pytest.fixture
def patience(long_run: bool) -> float:
    """Multiplies every wait limit of a fault test: 1, or LONG_SCALE with --long."""
    return LONG_SCALE if long_run else 1


# Reproducible chaos: the moments of the kills, the order of the faults. Override to explore.
SEED_ENV = "DISPATCHER_FAULT_SEED"
DEFAULT_SEED = 20260511


@pytest.fixture
def seed() -> int:
    value = int(os.environ.get(SEED_ENV, DEFAULT_SEED))
    FIGURES.run["seed"] = value
    return value


@pytest.fixture
def rng(seed: int) -> random.Random:
    return random.Random(seed)


def error_shape_problem(status: int, content_type: str, body: bytes) -> str | None:
    """Why an error answer does not have the documented `{"error": {...}}` shape, or None."""
    if content_type != "application/json":
        return f"{status}: content type {content_type!r}, not JSON: {body[:200]!r}"
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return f"{status}: body is not JSON: {body[:200]!r}"
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return f"{status}: no 'error' object: {body[:200]!r}"
    if not isinstance(error.get("type"), str) or not isinstance(error.get("message"), str):
        return f"{status}: 'error' lacks a type or message: {body[:200]!r}"
    fields = error.get("errors", [])
    if not isinstance(fields, list) or not all(
        isinstance(f, dict)
        and isinstance(f.get("field"), str)
        and isinstance(f.get("message"), str)
        for f in fields
    ):
        return f"{status}: malformed 'errors' list: {body[:200]!r}"
    return None


def vm_rss_mb(pid: int) -> float | None:
    """Resident set size of a live process, from /proc (Linux); None once it has exited."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return None  # gone, or a zombie
