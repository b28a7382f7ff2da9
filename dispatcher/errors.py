"""One exception root, so callers (the API middleware, the CLI) map errors in one place.

Each error says what went wrong in its ``type``; none knows about HTTP. The API's table
(`api/errors.py`) turns types into statuses and headers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class DispatcherError(Exception):
    """Root of every error this package raises on purpose."""

    type = "internal_error"


class ConfigError(DispatcherError):
    """A setting or the environment cannot run the service."""

    type = "config_error"


class DatabaseNotMigrated(DispatcherError):
    """The schema is older than the code; `dispatcher migrate` fixes it."""

    type = "not_migrated"


class NotReady(DispatcherError):
    """This process cannot serve yet: the database is unreachable or not migrated."""

    type = "not_ready"


class MigrationError(DispatcherError):
    """A migration file is missing, edited after it was applied, or failed."""

    type = "migration_error"


class NotFound(DispatcherError):
    type = "not_found"


class Conflict(DispatcherError):
    type = "conflict"


class Forbidden(DispatcherError):
    type = "forbidden"


class Unauthorized(DispatcherError):
    type = "unauthorized"


class TooManyRequests(DispatcherError):
    """A limit was reached; the caller may retry after ``retry_after`` seconds."""

    type = "rate_limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str


class ValidationFailed(DispatcherError):
    """Input refused; carries every problem, not just the first."""

    type = "validation_error"

    def __init__(self, errors: Sequence[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))
        self.errors = list(errors)
