"""Every failure becomes the `{"error": ...}` shape here, and nowhere else."""

from __future__ import annotations

import logging

import asyncpg
from aiohttp import web
from aiohttp.typedefs import Handler

from api.responses import error_response
from dispatcher.errors import DispatcherError, ValidationFailed

log = logging.getLogger("api")

_HTTP_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    503: "unavailable",
}


def _http_error(exc: web.HTTPException) -> web.Response:
    message = exc.reason
    if exc.status == 413:
        message = "request body is too large"
    response = error_response(exc.status, _HTTP_TYPES.get(exc.status, "http_error"), message)
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
    except ValidationFailed as exc:
        return error_response(exc.status, exc.type, "request is invalid", exc.errors)
    except DispatcherError as exc:
        response = error_response(exc.status, exc.type, str(exc) or exc.type)
        response.headers.update(exc.headers())
        return response
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
