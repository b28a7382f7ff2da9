"""The version a user sees is one version, and the changelog says what this one changes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from dispatcher import __version__
from dispatcher.sender import USER_AGENT

ROOT = Path(__file__).resolve().parents[1]


def test_dispatcher_version_prints_the_package_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "run.cli", "--version"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert done.stdout.strip() == f"dispatcher {__version__}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)
    assert USER_AGENT.endswith("/" + __version__)


def test_pyproject_reads_the_version_from_the_package() -> None:
    text = (ROOT / "pyproject.toml").read_text("utf-8")
    assert 'dynamic = ["version"]' in text
    assert re.search(r"^version\s*=", text, re.MULTILINE) is None, "a second version string"


def test_changelog_has_an_unreleased_section_and_the_current_version() -> None:
    text = (ROOT / "CHANGELOG.md").read_text("utf-8")
    headings = re.findall(r"^## (.+)$", text, re.MULTILINE)
    assert headings[0] == "Unreleased"
    released = [h.split(" ")[0] for h in headings[1:]]
    assert __version__ in released, f"CHANGELOG.md has no section for {__version__}"
    unreleased = re.split(r"^## ", text, flags=re.MULTILINE)[1]
    assert re.search(r"^- ", unreleased, re.MULTILINE), "Unreleased lists no change"
