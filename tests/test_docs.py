"""The documentation in the repository stays complete and true where a machine can tell.

A reader who clones the repository has README, CHANGELOG and docs/, nothing beside them:
every relative link must resolve inside the repository, no link may leave it except to a
public standard, every setting must be in README's configuration table, and docs/api.md must
be what ``python -m api.apidoc`` writes from the current routes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from api.apidoc import REGENERATE, current_document, render
from dispatcher.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[1]

# Links may leave the repository only for public standards.
STANDARDS = (
    "https://www.rfc-editor.org/",
    "https://datatracker.ietf.org/",
    "https://www.standardwebhooks.com/",
    "https://github.com/standard-webhooks/standard-webhooks",
    "https://spec.openapis.org/",
    "https://semver.org/",
    "https://keepachangelog.com/",
    "https://prometheus.io/docs/instrumenting/exposition_formats/",
)
# The reader's own running service, not a place outside.
LOOPBACK = {"localhost", "127.0.0.1", "::1"}
# Variables that only the test suite and its tools read (documented in tests/ and README's
# Development section), not settings of the service.
TEST_ONLY_VARIABLES = {
    "DISPATCHER_TEST_DATABASE_URL",
    "DISPATCHER_LONG_FAULTS",
    "DISPATCHER_FAULT_SEED",
}

_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|<(https?://[^>\s]+)>")
_IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^(```|~~~)")


def documents() -> list[Path]:
    """Every Markdown page a user reads: README, CHANGELOG, docs/ and deploy/."""
    pages = [ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "deploy" / "README.md"]
    pages += sorted((ROOT / "docs").rglob("*.md"))
    return [p for p in pages if p.is_file()]


def _prose(text: str) -> Iterator[str]:
    """Lines outside fenced code blocks and inline code: examples are not links."""
    fenced = False
    for line in text.splitlines():
        if _FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            yield re.sub(r"`[^`]*`", "", line)


def links(page: Path) -> list[str]:
    found: list[str] = []
    for line in _prose(page.read_text("utf-8")):
        for match in _LINK.finditer(line):
            found.append(match.group(1) or match.group(2))
        found += _IMAGE.findall(line)
    return found


def slugs(page: Path) -> set[str]:
    """The anchors GitHub gives a page's headings."""
    seen: dict[str, int] = {}
    result: set[str] = set()
    for line in _prose_with_code(page.read_text("utf-8")):
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not heading:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(1).replace("`", "").lower())
        slug = slug.replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        result.add(slug if n == 0 else f"{slug}-{n}")
    return result


def _prose_with_code(text: str) -> Iterator[str]:
    fenced = False
    for line in text.splitlines():
        if _FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            yield line


def _missing_anchor(page: Path, fragment: str) -> bool:
    if not fragment or page.suffix != ".md" or not page.is_file():
        return False
    return fragment not in slugs(page)


def test_the_documentation_pages_exist() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in documents()}
    assert {
        "README.md",
        "CHANGELOG.md",
        "docs/api.md",
    } <= names


@pytest.mark.parametrize("page", documents(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_link_resolves_inside_the_repository_or_to_a_standard(page: Path) -> None:
    problems: list[str] = []
    for target in links(page):
        parts = urlsplit(target)
        if parts.scheme in ("http", "https"):
            if parts.hostname not in LOOPBACK and not target.startswith(STANDARDS):
                problems.append(f"{target}: leaves the repository (not a public standard)")
            continue
        if parts.scheme:
            problems.append(f"{target}: unexpected scheme")
            continue
        path = unquote(parts.path)
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.is_relative_to(ROOT):
            problems.append(f"{target}: points outside the repository")
        elif not resolved.exists():
            problems.append(f"{target}: no such file")
        elif _missing_anchor(resolved, parts.fragment):
            problems.append(f"{target}: no heading #{parts.fragment} in {resolved.name}")
    assert problems == [], f"{page.relative_to(ROOT)}: " + "; ".join(problems)


@pytest.mark.parametrize("page", documents(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_nothing_sends_the_reader_outside_the_repository(page: Path) -> None:
    text = page.read_text("utf-8")
    assert "../shared" not in text
    assert "SPEC.md" not in text


def _settings_variables() -> set[str]:
    return {ENV_PREFIX + name.upper() for name in Settings.model_fields}


def _configuration_table() -> str:
    readme = (ROOT / "README.md").read_text("utf-8")
    section = re.split(r"^## Configuration\s*$", readme, flags=re.MULTILINE)
    assert len(section) == 2, "README has one '## Configuration' section"
    body = re.split(r"^## ", section[1], flags=re.MULTILINE)[0]
    return "\n".join(line for line in body.splitlines() if line.startswith("|"))


def test_every_setting_is_in_readmes_configuration_table() -> None:
    table = _configuration_table()
    named = set(re.findall(r"`(DISPATCHER_[A-Z0-9_]+)`", table))
    missing = sorted(_settings_variables() - named)
    assert missing == [], f"add to README's configuration table: {missing}"
    stale = sorted(named - _settings_variables())
    assert stale == [], f"README's configuration table names unknown settings: {stale}"


def test_every_variable_the_docs_name_exists() -> None:
    known = _settings_variables() | TEST_ONLY_VARIABLES
    unknown: dict[str, list[str]] = {}
    for page in documents():
        for name in set(re.findall(r"\bDISPATCHER_[A-Z0-9_]*[A-Z0-9]\b", page.read_text("utf-8"))):
            if name not in known:
                unknown.setdefault(name, []).append(page.relative_to(ROOT).as_posix())
    assert unknown == {}, "the docs name variables that no code reads"


def test_api_reference_is_current() -> None:
    """docs/api.md is generated; a route added or changed without regenerating fails here."""
    expected = render(current_document())
    path = ROOT / "docs" / "api.md"
    current = path.read_text("utf-8") if path.is_file() else ""
    assert current == expected, f"docs/api.md is stale: run `{REGENERATE}` and commit it"


def test_api_reference_names_every_route() -> None:
    text = (ROOT / "docs" / "api.md").read_text("utf-8")
    document = current_document()
    missing = [
        f"{method.upper()} {path}"
        for path, item in document["paths"].items()
        for method in item
        if f"`{method.upper()} {path}`" not in text
    ]
    assert missing == [], f"not in docs/api.md (run `{REGENERATE}`): {missing}"


def test_the_link_checker_catches_what_it_must(tmp_path: Path) -> None:
    """The checks above are only worth their failures: prove they see a bad link."""
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\nSee [x](missing.md), [y](https://example.com/), <https://example.org/a>,\n"
        "[z](#title), ![img](pic.png).\n\n```\n[not a link](nowhere.md)\n```\n",
        encoding="utf-8",
    )
    assert links(page) == ["missing.md", "https://example.com/", "https://example.org/a",
                           "#title", "pic.png"]  # fmt: skip
    assert slugs(page) == {"title"}
