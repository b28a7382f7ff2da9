"""Session-wide hooks of the suite: the `--long` fault variants, the reliability figures
and the secret scan of every log. Loaded by `tests/conftest.py`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests import secret_scan
from tests.deadlock_scan import find_deadlocks
from tests.figures import FIGURES, Recorder

LONG_ENV = "DISPATCHER_LONG_FAULTS"
FIGURES_FILE = "reliability-figures.json"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dispatcher")
    group.addoption(
        "--long",
        action="store_true",
        default=False,
        help=f"run the big variants of tests/faults (also: {LONG_ENV}=1)",
    )
    group.addoption(
        "--figures-json",
        default=None,
        help="also write the reliability figures of this run to this JSON file",
    )


def long_faults(config: pytest.Config) -> bool:
    return bool(config.getoption("--long")) or os.environ.get(LONG_ENV, "") not in ("", "0")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "faults: a fault-injection test (tests/faults)")
    if not hasattr(config, "workerinput"):
        config.pluginmanager.register(SuitePlugin(config), "dispatcher-suite")


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Recorder:
    """Where a test records its figures (see tests/figures.py)."""
    return Recorder(request.node.nodeid)


@pytest.fixture(scope="session")
def long_run(pytestconfig: pytest.Config) -> bool:
    """True for the big variants: `--long` or DISPATCHER_LONG_FAULTS=1."""
    return long_faults(pytestconfig)


class SuitePlugin:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.handler: secret_scan.CaptureHandler | None = None
        self.report: secret_scan.ScanReport | None = None
        self.basetemp: Path | None = None
        self.deadlocks: list[str] = []

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        factory: Any = getattr(self.config, "_tmp_path_factory", None)
        if factory is None:
            return
        self.basetemp = Path(factory.getbasetemp())
        self.handler = secret_scan.CaptureHandler(self.basetemp / secret_scan.CAPTURE_FILE)
        secret_scan.attach(self.handler)
        FIGURES.run["long"] = long_faults(self.config)

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for module in {id(i.module): i.module for i in items if hasattr(i, "module")}.values():
            if module is not None:
                secret_scan.harvest(module)

    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        if self.handler is not None:
            secret_scan.attach(self.handler)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.handler is None or self.basetemp is None:
            return
        self.handler.close()
        from tests.conftest import PLATFORM_TOKEN

        self.report = secret_scan.scan(
            secret_scan.log_files(self.basetemp), {PLATFORM_TOKEN, *secret_scan.registered()}
        )
        FIGURES.run["logs_scanned"] = {"files": self.report.files, "lines": self.report.lines}
        FIGURES.run["secrets_in_logs"] = len(self.report.findings)
        self.deadlocks = find_deadlocks(secret_scan.log_files(self.basetemp))
        FIGURES.run["deadlocks_in_logs"] = len(self.deadlocks)
        if (self.report.findings or self.deadlocks) and session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        FIGURES.run["tests_collected"] = session.testscollected
        FIGURES.run["tests_failed"] = session.testsfailed
        FIGURES.run["exit_status"] = int(session.exitstatus)
        FIGURES.write(self.basetemp / FIGURES_FILE)
        extra = self.config.getoption("--figures-json")
        if extra:
            FIGURES.write(Path(extra))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.report is None:
            return
        tr = terminalreporter
        if FIGURES.tests:
            tr.section("reliability figures")
            for line in FIGURES.summary_lines():
                tr.line(line)
            assert self.basetemp is not None
            tr.line(f"written to {self.basetemp / FIGURES_FILE}")
        scanned = f"{self.report.files} log files, {self.report.lines} lines"
        if self.report.findings:
            tr.section("secret scan FAILED", red=True)
            tr.line(f"secrets found in logs ({scanned}):", red=True)
            for finding in self.report.findings[:50]:
                tr.line(f"  {finding}", red=True)
        else:
            tr.line(f"secret scan: no secret in {scanned}")
        if self.deadlocks:
            tr.section("deadlock scan FAILED", red=True)
            for line in self.deadlocks[:50]:
                tr.line(f"  {line}", red=True)
        else:
            tr.line(f"deadlock scan: no deadlock in {scanned}")
