"""One exception root, so callers (the API middleware, the CLI) map errors in one place."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class DispatcherError(Exception):
    """Root of every error this package raises on purpose."""

    status = 500
    type = "internal_error"

    def headers(self) -> dict[str, str]:
        """Response headers the error carries (``WWW-Authenticate``, ``Retry-After``)."""
        return {}


class ConfigError(DispatcherError):
    """A setting or the environment cannot run the service."""

    type = "config_error"


class DatabaseNotMigrated(DispatcherError):
    """The schema is older than the code; `dispatcher migrate` fixes it."""

    status = 503
    type = "not_migrated"


class MigrationError(DispatcherError):
    """A migration file is missing, edited after it was applied, or failed."""

    type = "migration_error"


class NotFound(DispatcherError):
    status = 404
    type = "not_found"


class Conflict(DispatcherError):
    status = 409
    type = "conflict"


class Forbidden(DispatcherError):
    status = 403
    type = "forbidden"


class Unauthorized(DispatcherError):
    status = 401
    type = "unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class TooManyRequests(DispatcherError):
    """A limit was reached; the caller may retry after ``retry_after`` seconds."""

    status = 429
    type = "rate_limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str


class ValidationFailed(DispatcherError):
    """Input refused; carries every problem, not just the first."""

    status = 422
    type = "validation_error"

    def __init__(self, errors: Sequence[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))
        self.errors = list(errors)
