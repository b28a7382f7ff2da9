"""A PostgreSQL of a test's own, to stop and start under a running dispatcher.

The session's server is shared by every test, so it is never restarted; this one lives in
the test's temporary directory. It is started by pgserver (which knows how to run it as
the `pgserver` user when the tests run as root), then stopped and started again with the
`pg_ctl` shipped inside the pgserver package, on the same Unix socket.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR
    import pgserver
    from pgserver import _commands


class OwnPostgres:
    def __init__(self, root: Path) -> None:
        self.pgdata = root / "pgdata"
        self.pgdata.mkdir(parents=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server: Any = pgserver.get_server(self.pgdata, cleanup_mode=None)
        info = server.get_postmaster_info()
        self.url: str = server.get_uri()
        self._user: str | None = server.system_user
        self._socket_dir = str(info.socket_dir)
        self.restarts = 0

    def _pg_ctl(self, *args: str) -> None:
        _commands.pg_ctl(list(args), pgdata=self.pgdata, user=self._user, timeout=60)

    def stop(self, mode: str = "fast") -> None:
        """Fast: every client is disconnected at once, as in a restart or a failover."""
        self._pg_ctl("-w", "-m", mode, "stop")

    def start(self) -> None:
        self._pg_ctl(
            "-w",
            "-o",
            '-h ""',
            "-o",
            f"-k {self._socket_dir}",
            "-l",
            str(self.pgdata / "log"),
            "start",
        )
        self.restarts += 1

    def close(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self.stop("immediate")


@contextlib.contextmanager
def own_postgres() -> Iterator[OwnPostgres]:
    """Outside pytest's temp tree: pytest keeps that tree private to root (0700), and the
    server runs as the `pgserver` user when the tests run as root."""
    root = Path(tempfile.mkdtemp(prefix="dispatcher-own-pg-"))
    try:
        server = OwnPostgres(root)
        try:
            yield server
        finally:
            server.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
