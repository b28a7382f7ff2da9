"""An embedded PostgreSQL for a zero-setup start: pgserver first, the machine's binaries second."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import shutil
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dispatcher.errors import ConfigError

log = logging.getLogger(__name__)

_INSTALL_HINT = (
    "no PostgreSQL available: install the 'pgserver' package (pip install pgserver), "
    "or PostgreSQL's server binaries (initdb, pg_ctl), "
    "or set DISPATCHER_DATABASE_URL to an existing server"
)


@contextlib.contextmanager
def embedded_postgres(data_dir: Path) -> Iterator[str]:
    """Start (or join) a server keeping its data in `data_dir`; yield its URL; stop it on exit.

    Several processes may share one data directory: pgserver counts its users and the last
    one out stops the server.
    """
    pgdata = data_dir / "pgdata"
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR
            pgserver: Any = importlib.import_module("pgserver")
    except ImportError:
        pgserver = None
    if pgserver is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = pgserver.get_server(pgdata, cleanup_mode="stop")
        try:
            yield str(server.get_uri())
        finally:
            server.cleanup()
        return
    with _system_postgres(pgdata) as url:
        yield url


def _find_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    return None


@contextlib.contextmanager
def _system_postgres(pgdata: Path) -> Iterator[str]:
    initdb, pg_ctl = _find_binary("initdb"), _find_binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise ConfigError(_INSTALL_HINT)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        raise ConfigError(
            "PostgreSQL refuses to run as root: install 'pgserver' (it handles this), "
            "or set DISPATCHER_DATABASE_URL"
        )
    if not (pgdata / "PG_VERSION").exists():
        subprocess.run(
            [initdb, "-D", str(pgdata), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
            check=True,
            capture_output=True,
        )
    socket_dir = pgdata
    subprocess.run(
        [
            pg_ctl,
            "-D",
            str(pgdata),
            "-w",
            "-l",
            str(pgdata / "server.log"),
            "-o",
            f"-k {socket_dir} -c listen_addresses=''",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://postgres@/postgres?host={socket_dir}"
    finally:
        subprocess.run([pg_ctl, "-D", str(pgdata), "-m", "fast", "stop"], capture_output=True)
