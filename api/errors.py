"""Every failure becomes the `{"error": ...}` shape here, and nowhere else.

The engine's errors say what went wrong (their ``type``), never how HTTP spells it: ``ERRORS``
is the one table from error types to statuses, and the OpenAPI document's error responses
are built from it too, so an answer and its documentation cannot disagree.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final

import asyncpg
from aiohttp import web
from aiohttp.typedefs import Handler

from api.responses import error_response
from dispatcher.errors import DispatcherError, TooManyRequests, ValidationFailed

log = logging.getLogger("api")


@dataclass(frozen=True)
class ErrorStatus:
    """One HTTP status of the error shape: the error types it answers, how it is documented."""

    status: int
    name: str  # the OpenAPI component, #/components/responses/<name>
    description: str
    types: tuple[str, ...]  # the first is also the type of aiohttp's own error of this status
    header: str | None = None  # a response header this status always carries
    header_description: str = ""
    documented: bool = True  # False: only aiohttp answers it, no route declares it


ERRORS: Final[tuple[ErrorStatus, ...]] = (
    ErrorStatus(400, "BadRequest", "The body is empty or not JSON.", ("bad_request",)),
    ErrorStatus(
        401,
        "Unauthorized",
        "Missing, malformed, unknown or revoked credentials.",
        ("unauthorized",),
        header="WWW-Authenticate",
        header_description="Bearer",
    ),
    ErrorStatus(
        403,
        "Forbidden",
        "The credentials are valid but may not do this: a suspended tenant's key or portal "
        "session, or a write by a portal session without its X-CSRF-Token header.",
        ("forbidden", "csrf_failed"),
    ),
    ErrorStatus(404, "NotFound", "No such object for this tenant and environment.", ("not_found",)),
    ErrorStatus(
        405,
        "MethodNotAllowed",
        "The path does not take this method.",
        ("method_not_allowed",),
        documented=False,
    ),
    ErrorStatus(
        409,
        "Conflict",
        "The request conflicts with the object's current state.",
        ("conflict",),
    ),
    ErrorStatus(
        413,
        "PayloadTooLarge",
        "The body is larger than DISPATCHER_MAX_BODY_BYTES.",
        ("payload_too_large",),
    ),
    ErrorStatus(
        415,
        "UnsupportedMediaType",
        "The body's media type is not accepted.",
        ("unsupported_media_type",),
        documented=False,
    ),
    ErrorStatus(
        422,
        "ValidationError",
        "The request is invalid; every problem is listed by field.",
        ("validation_error", "idempotency_key_reused"),
    ),
    ErrorStatus(
        429,
        "TooManyRequests",
        "Too many failed authentications from this client address, or too many test sends "
        "of this tenant at once; retry after Retry-After seconds.",
        ("rate_limited",),
        header="Retry-After",
        header_description="Seconds to wait before retrying.",
    ),
    ErrorStatus(
        503,
        "Unavailable",
        "The database is unreachable or not migrated.",
        ("unavailable", "not_migrated", "not_ready"),
    ),
)
_BY_STATUS: Final = {e.status: e for e in ERRORS}
_BY_TYPE: Final = {t: e for e in ERRORS for t in e.types}


def by_status(status: int) -> ErrorStatus:
    return _BY_STATUS[status]


def documented_errors() -> tuple[ErrorStatus, ...]:
    return tuple(e for e in ERRORS if e.documented)


def _answer(exc: DispatcherError) -> web.Response:
    """Any type the table does not name is ours to fix: a 500 (config, migration errors)."""
    row = _BY_TYPE.get(exc.type)
    if row is None:
        return error_response(500, exc.type, str(exc) or exc.type)
    if isinstance(exc, ValidationFailed):
        return error_response(row.status, exc.type, "request is invalid", exc.errors)
    response = error_response(row.status, exc.type, str(exc) or exc.type)
    if isinstance(exc, TooManyRequests):
        response.headers["Retry-After"] = str(exc.retry_after)
    elif row.header is not None:
        response.headers[row.header] = row.header_description
    return response


def _http_error(exc: web.HTTPException) -> web.Response:
    message = exc.reason
    if exc.status == 413:
        message = "request body is too large"
    row = _BY_STATUS.get(exc.status)
    response = error_response(exc.status, row.types[0] if row else "http_error", message)
    for name in ("Allow", "WWW-Authenticate"):
        if name in exc.headers:
            response.headers[name] = exc.headers[name]
    return response


# The server went away or is going away (restart, failover, admin shutdown): retry later.
_UNAVAILABLE = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,  # admin/crash shutdown, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.exceptions.InternalClientError,  # a pooled connection the server dropped mid-call
)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if any("\x00" in value for value in request.match_info.values()):
        # No id of ours holds a NUL, and PostgreSQL text cannot: do not ask it.
        return error_response(404, "not_found", "no such object")
    try:
        return await handler(request)
    except DispatcherError as exc:
        return _answer(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_error(exc)
    except web.RequestPayloadError:
        # e.g. a Content-Encoding the body does not match: the client's fault, not ours.
        # The rest of the body cannot be read either, so the connection cannot be reused.
        response = error_response(400, "bad_request", "the request body cannot be read")
        response.force_close()
        return response
    except _UNAVAILABLE as exc:
        log.warning("database unavailable", extra={"error_class": type(exc).__name__})
        return error_response(503, "unavailable", "the database is unavailable; retry later")
    except asyncpg.DataError as exc:
        # A value PostgreSQL refuses (SQLSTATE class 22) that no validator caught: still the
        # client's value, so a 422 rather than a 500; the validators name fields, this cannot.
        log.warning("value refused by the database", extra={"error_class": type(exc).__name__})
        return error_response(
            422, "validation_error", "the request holds a value that cannot be stored", []
        )
    except Exception:
        log.exception("unhandled error", extra={"path": request.path})
        return error_response(500, "internal_error", "internal error")
