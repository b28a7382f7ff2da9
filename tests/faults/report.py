"""Run the suite and write docs/RELIABILITY.md from the figures of that very run.

    python -m tests.faults.report                 # the whole default suite (as CI runs it)
    python -m tests.faults.report --faults-only   # tests/faults and the security matrix
    python -m tests.faults.report --long          # the big fault variants

Extra arguments go to pytest. The figures come from the suite itself (the `figures`
fixture, see tests/figures.py), never from this script; it only renders them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.faults.conftest import DEFAULT_SEED, SEED_ENV
from tests.figures import TOTALS
from tests.suite_plugin import LONG_ENV

ROOT = Path(__file__).resolve().parents[2]
TARGET = ROOT / "docs" / "RELIABILITY.md"
FAULTS_ONLY = ["tests/faults", "tests/integration/test_security_matrix.py"]
MUST_BE_ZERO = ("deliveries_lost", "responses_5xx", "boundary_crossings")


def run_suite(pytest_args: list[str]) -> tuple[int, dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="reliability-") as tmp:
        figures = Path(tmp) / "figures.json"
        command = [sys.executable, "-m", "pytest", "-q", f"--figures-json={figures}", *pytest_args]
        print("running:", " ".join(command), flush=True)
        code = subprocess.run(command, cwd=ROOT, check=False).returncode
        if not figures.exists():
            raise SystemExit(f"pytest wrote no figures (exit {code})")
        data: dict[str, Any] = json.loads(figures.read_text())
    return code, data


def _n(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def render(data: dict[str, Any], command: str) -> str:
    run, totals = data["run"], data["totals"]
    passed = run.get("exit_status") == 0 and all(totals.get(k, 0) == 0 for k in MUST_BE_ZERO)
    lines = [
        "# Reliability report",
        "",
        "What the dispatcher survived in its own test suite, with the figures of the last run.",
        "This file is written by `python -m tests.faults.report` from the JSON the suite "
        "itself records; do not edit the figures by hand.",
        "",
        "## Last run",
        "",
        f"- finished: {run.get('finished_at', '?')}, in {_n(run.get('seconds', 0))} s, "
        f"on {run.get('cpus', '?')} CPUs, Python {run.get('python', '?')}",
        f"- command: `{command}`",
        f"- result: **{'passed' if passed else 'FAILED'}** "
        f"({run.get('tests_collected', '?')} tests, {run.get('tests_failed', '?')} failed)",
        f"- variant: {'long' if run.get('long') else 'default (CI)'}; "
        f"chaos seed {run.get('seed', DEFAULT_SEED)}",
        f"- logs scanned for secrets: {run.get('logs_scanned', {}).get('files', 0)} files, "
        f"{_n(run.get('logs_scanned', {}).get('lines', 0))} lines; secrets found: "
        f"**{run.get('secrets_in_logs', '?')}**",
        "",
        "| figure | value | meaning |",
        "|---|---:|---|",
    ]
    for name, meaning in TOTALS.items():
        if name in totals:
            value = _n(totals[name])
            if name in MUST_BE_ZERO:
                value = f"**{value}**"
            lines.append(f"| {name} | {value} | {meaning} |")
    lines += [
        "",
        "## Per test",
        "",
        "| test | figures |",
        "|---|---|",
    ]
    for test, figures in sorted(data["tests"].items()):
        shown = ", ".join(f"{k} {_n(v)}" for k, v in figures.items())
        lines.append(f"| `{test.split('::')[-1]}` ({test.split('::')[0]}) | {shown} |")
    lines += ["", _METHOD]
    return "\n".join(lines) + "\n"


_METHOD = f"""## What is tested, and how

All traffic stays on 127.0.0.1; every test is bounded in events and in time.

- **Worker crashes** (`tests/faults/test_worker_kills.py`): a `dispatcher api` process takes
  a stream of transitions in platform batches, for three receivers with different
  subscriptions (`*`, `mailing.*`, `mailing.printed`), while two `dispatcher worker`
  processes deliver. At seeded random milestones of the stream a random worker is killed
  with SIGKILL and replaced. Every accepted event must reach every subscriber at least
  once, nothing may reach a non-subscriber, and every duplicate must carry the same event
  id and byte-identical body.
- **PostgreSQL restart** (`tests/faults/test_database_restart.py`): a PostgreSQL of the
  test's own is stopped (fast shutdown: every client disconnected; and immediate, a crash:
  what the workers committed without waiting for the disk is lost and sent again) and
  started again under a running `dispatcher serve`, mid-stream. While it is down every
  database-backed route answers 503 in the error shape and `/readyz` fails while `/healthz`
  answers. After the
  restart the pool and the LISTEN connection reconnect on their own (the fallback poll is
  ten minutes away), and every event accepted before and after is delivered.
- **Hostile receivers** (`tests/faults/test_hostile_receivers.py`): next to a healthy
  endpoint, receivers that flap (500 / stall past the timeout / 200), accept and never
  answer, answer 500 with a 50 MB streamed body, close mid-response, or answer binary bytes
  with NUL. The healthy endpoint must get every event while the others are still failing;
  the worker's VmRSS, sampled every 50 ms, must stay under 300 MB.
- **SIGTERM under load** (`tests/faults/test_sigterm_under_load.py`): exit 0 within the
  shutdown grace with attempts outlasting it, every lease handed back, and everything
  delivered by the next worker.
- **Bad input** (`tests/faults/test_bad_input.py`, `tests/faults/test_schema_fuzz.py`):
  hand-written hostile requests (oversized, invalid UTF-8, 10,000-deep JSON, duplicate
  keys, huge metadata, impossible dates, NUL and control characters in URLs, ids and
  strings, wrong content types, a gzip bomb), and schemathesis against `/openapi.json` for
  every route, positive and negative, with real credentials and half of the requests on
  real ids: never a 5xx, every answer as documented, every refusal in the error shape.
- **Security matrix** (`tests/integration/test_security_matrix.py`): every tenant route
  (from the router) with another tenant's keys and the other environment's key (404, and
  nothing changed), with revoked and malformed keys and the platform token (401); every
  platform route with tenant keys (401); the SSRF matrix through the API at registration
  and at delivery; constant-time comparisons; and the log scanner itself.
- **Secrets in logs** (`tests/secret_scan.py`): after every run, every log line the suite
  produced (the test process's records, formatted as in production, and every dispatcher
  process's log file) is searched for signing secrets, API keys, the platform token and
  every password the tests put in URLs.

## What this suite found (all fixed)

- A receiver answering with a NUL byte made the attempt's record unstorable; the settle
  batch holding it was retried forever, so the worker stopped recording every outcome,
  kept its endpoint slots and starved healthy endpoints (`dispatcher/attempt.py`).
- A PostgreSQL restart was noticed by the LISTEN connection only at its next ping (15 s),
  and every NOTIFY in between was lost (`dispatcher/listener.py`).
- After a restart asyncpg can raise `InternalClientError` on a pooled connection; it
  escaped the worker's retry and ended the process (`dispatcher/db/pool.py` `DB_ERRORS`,
  used by the worker, the listener and the gauges).
- 500s instead of 503 for an admin shutdown of PostgreSQL; instead of 422 for NUL in an
  endpoint's description or metadata, or metadata nested past the jsonb codec; instead of
  404/422 for NUL in a path id or query value; instead of 400 for a body that does not
  match its Content-Encoding (`api/errors.py`, `api/schemas/webhooks.py`, `api/pagination.py`).
- The OpenAPI document did not say which event types, Idempotency-Key characters and
  mailing ids are accepted (`api/openapi.py`, `api/schemas/webhooks.py`,
  `api/schemas/test_send.py`).

## Reproduce

    python -m tests.faults.report                 # the whole suite, then this file
    python -m tests.faults.report --faults-only   # the fault, bad-input and security tests
    python -m pytest -q tests/faults --long       # the big variants ({LONG_ENV}=1 also works)
    {SEED_ENV}=7 python -m pytest -q tests/faults # another chaos seed

Each run also leaves its figures in `<pytest basetemp>/reliability-figures.json`.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faults-only", action="store_true", help="only " + " ".join(FAULTS_ONLY))
    parser.add_argument("--long", action="store_true", help="the big fault variants")
    parser.add_argument("--output", type=Path, default=TARGET, help="where to write the report")
    args, pytest_args = parser.parse_known_args(argv)
    if args.faults_only:
        pytest_args = [*FAULTS_ONLY, *pytest_args]
    if args.long:
        pytest_args.append("--long")
    code, data = run_suite(pytest_args)
    shown = "python -m tests.faults.report " + " ".join(argv if argv is not None else sys.argv[1:])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render(data, shown.strip()))
    print(f"wrote {args.output}")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
