"""The layout stays readable: small modules, short functions, and a README map that names them.

Limits from issue 14: no module of dispatcher/, api/ or run/ over 400 lines, no function over
60 (counted from its `def` to its last line, docstring included). The module map in README
must name every module, so a new one is placed (and explained) where readers look for it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("dispatcher", "api", "run")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules() -> list[Path]:
    found = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    assert len(found) > 50, found  # the walk found the code, not an empty folder
    return found


def _long_functions(path: Path, root: Path = ROOT) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                found.append(f"{path.relative_to(root)}:{node.lineno} {node.name}() is {length}")
    return found


def test_no_module_is_over_400_lines() -> None:
    sizes = {p: len(p.read_text().splitlines()) for p in _modules()}
    over = [f"{p.relative_to(ROOT)} is {n}" for p, n in sizes.items() if n > MAX_MODULE_LINES]
    assert not over, f"modules over {MAX_MODULE_LINES} lines (split them): {over}"


def test_no_function_is_over_60_lines() -> None:
    over = [line for p in _modules() for line in _long_functions(p)]
    assert not over, f"functions over {MAX_FUNCTION_LINES} lines (split them): {over}"


def test_the_checks_name_the_offender(tmp_path: Path) -> None:
    """The function check reports a long function by file, line and name."""
    body = "\n".join(f"    x{n} = {n}" for n in range(MAX_FUNCTION_LINES))
    sample = tmp_path / "sample.py"
    sample.write_text(f"def short() -> None:\n    pass\n\n\ndef too_long() -> None:\n{body}\n")
    found = _long_functions(sample, tmp_path)
    assert found == [f"sample.py:5 too_long() is {MAX_FUNCTION_LINES + 1}"]


def test_the_readme_module_map_names_every_module() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Module map", 1)[1].split("```", 2)[1]
    named = set(re.findall(r"[A-Za-z_][A-Za-z_0-9]*", block))
    missing = []
    for path in _modules():
        name = path.parent.name if path.name == "__init__.py" else path.stem
        if name not in named:
            missing.append(str(path.relative_to(ROOT)))
    assert not missing, f"modules missing from README's module map: {missing}"
