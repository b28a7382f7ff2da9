"""The code stays lint- and type-clean and inside its boundaries: ruff, mypy strict and
import-linter's contracts (pyproject.toml) run as part of the suite."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


@pytest.mark.timeout(300)
def test_ruff_is_clean() -> None:
    result = _run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.timeout(300)
def test_mypy_strict_is_clean() -> None:
    result = _run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """import-linter puts its working directory first on sys.path: `root`'s tree is judged."""
    script = Path(sys.executable).parent / "lint-imports"
    command = [str(script)] if script.exists() else ["lint-imports"]
    return subprocess.run(
        [*command, "--no-cache"], cwd=root, capture_output=True, text=True, timeout=300
    )


@pytest.mark.timeout(300)
def test_import_contracts_hold() -> None:
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("module", "bad_import", "contract"),
    [
        ("dispatcher/queue.py", "import api.app", "the engine never imports"),
        ("api/routes/ops.py", "from dispatcher.db import queries", "only through dispatcher.store"),
        ("dispatcher/policy.py", "import asyncpg", "pure modules do no I/O"),
        ("dispatcher/models.py", "import dispatcher.store.tenants", "pure modules do no I/O"),
    ],
)
def test_import_contracts_catch_a_wrong_import(
    tmp_path: Path, module: str, bad_import: str, contract: str
) -> None:
    """The same check on a copy of the tree with one forbidden import added: it must fail."""
    for name in ("dispatcher", "api", "run"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    target = tmp_path / module
    target.write_text(target.read_text("utf-8") + f"\n{bad_import}  # noqa\n", "utf-8")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0, result.stdout
    broken = result.stdout.split("Broken contracts")[-1]
    assert contract in broken, result.stdout
