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
    503: "unavailable",
}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ValidationFailed as exc:
        return error_response(exc.status, exc.type, "request is invalid", exc.errors)
    except DispatcherError as exc:
        return error_response(exc.status, exc.type, str(exc) or exc.type)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.reason
        if exc.status == 413:
            message = "request body is too large"
        response = error_response(exc.status, _HTTP_TYPES.get(exc.status, "http_error"), message)
        for name in ("Allow", "WWW-Authenticate"):
            if name in exc.headers:
                response.headers[name] = exc.headers[name]
        return response
    except (
        OSError,
        asyncpg.PostgresConnectionError,
        asyncpg.InterfaceError,
        asyncpg.CannotConnectNowError,
    ) as exc:
        log.warning("database unavailable", extra={"error_class": type(exc).__name__})
        return error_response(503, "unavailable", "the database is unavailable; retry later")
    except Exception:
        log.exception("unhandled error", extra={"path": request.path})
        return error_response(500, "internal_error", "internal error")
