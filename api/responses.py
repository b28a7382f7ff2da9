"""JSON in and out: one body parser with clear errors, one serializer (orjson)."""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from dispatcher.errors import DispatcherError, FieldError, ValidationFailed

M = TypeVar("M", bound=BaseModel)


class BadRequest(DispatcherError):
    type = "bad_request"


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def error_body(type_: str, message: str, errors: list[FieldError] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"type": type_, "message": message}
    if errors is not None:
        body["errors"] = [{"field": e.field, "message": e.message} for e in errors]
    return {"error": body}


def error_response(
    status: int, type_: str, message: str, errors: list[FieldError] | None = None
) -> web.Response:
    return json_response(error_body(type_, message, errors), status=status)


async def read_json(request: web.Request) -> Any:
    """The parsed body; 400 for what is not JSON, 413 (via aiohttp) for what is too large,
    422 naming the field for an integer outside the signed 64-bit range."""
    raw = await request.read()
    if not raw.strip():
        raise BadRequest("request body is empty; a JSON object is expected")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if _LONG_DIGITS.search(raw):  # the rare body that may hold one: look closer
        problems = _big_integers(raw)
        if problems:
            raise ValidationFailed(problems)
    return data


# orjson reads integers beyond 64 bits as floats, silently changing them; 19 digits is the
# shortest run that can fall outside [-2**63, 2**63 - 1].
_LONG_DIGITS = re.compile(rb"[0-9]{19}")
_INT64 = range(-(2**63), 2**63)


class _BigInt:
    __slots__ = ()


def _big_integers(raw: bytes) -> list[FieldError]:
    """Every integer outside int64, by field path (``metadata.count``, ``transitions.0.x``)."""

    def parse_int(text: str) -> int | _BigInt:
        value = int(text)
        return value if value in _INT64 else _BigInt()

    try:
        data = json.loads(raw, parse_int=parse_int)
    except (ValueError, RecursionError):
        return []  # orjson accepted it; let validation speak for the rest
    found: list[FieldError] = []

    def walk(value: Any, path: list[str]) -> None:
        if isinstance(value, _BigInt):
            field = ".".join(path) or "body"
            found.append(FieldError(field, "an integer outside the 64-bit range cannot be kept"))
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, [*path, str(key)])
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, [*path, str(index)])

    try:
        walk(data, [])
    except RecursionError:
        return []
    return found


def field_errors(exc: ValidationError) -> list[FieldError]:
    found = []
    for err in exc.errors(include_url=False):
        field = ".".join(str(p) for p in err["loc"]) or "body"
        message = err["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        found.append(FieldError(field, message))
    return found


def validate(model: type[M], data: Any) -> M:
    """Every problem at once, by field, as a 422."""
    if not isinstance(data, dict):
        raise ValidationFailed([FieldError("body", "a JSON object is expected")])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed(field_errors(exc)) from None


async def parse(request: web.Request, model: type[M]) -> M:
    return validate(model, await read_json(request))


async def parse_optional(request: web.Request, model: type[M]) -> M:
    """For routes whose every field has a default: an empty body means `{}`."""
    raw = await request.read()
    return validate(model, await read_json(request) if raw.strip() else {})
