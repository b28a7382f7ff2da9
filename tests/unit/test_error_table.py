"""Engine errors name what went wrong; the API's one table says how HTTP answers each, and
the OpenAPI document's error responses are that same table."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

import api
import dispatcher
from api.errors import ERRORS, documented_errors, error_middleware
from api.openapi import build_document
from dispatcher.errors import (
    DispatcherError,
    FieldError,
    NotFound,
    NotReady,
    TooManyRequests,
    Unauthorized,
    ValidationFailed,
)

# Errors that are ours to fix, never the client's: they stay 500 on purpose.
SERVER_SIDE = {"internal_error", "config_error", "migration_error"}


def _every_error_class() -> list[type[DispatcherError]]:
    for package in (dispatcher, api):
        for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            importlib.import_module(module.name)
    found: list[type[DispatcherError]] = []
    todo = [DispatcherError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_no_error_carries_an_http_status() -> None:
    for cls in _every_error_class():
        assert not hasattr(cls, "status"), f"{cls.__qualname__} names an HTTP status"
        assert not hasattr(cls, "headers"), f"{cls.__qualname__} names HTTP headers"


def test_every_client_error_type_has_one_row() -> None:
    types = [t for row in ERRORS for t in row.types]
    assert len(types) == len(set(types)), "a type answered with two statuses"
    statuses = [row.status for row in ERRORS]
    assert statuses == sorted(set(statuses)), "one row per status, in order"
    for cls in _every_error_class():
        if cls.type not in SERVER_SIDE:
            assert cls.type in types, f"{cls.__qualname__} ({cls.type}) has no status"


def test_the_document_lists_the_tables_documented_rows() -> None:
    document = build_document(web.Application())
    responses = document["components"]["responses"]
    assert list(responses) == [row.name for row in documented_errors()]
    for row in documented_errors():
        assert responses[row.name]["description"] == row.description
        assert (row.header in responses[row.name].get("headers", {})) == (row.header is not None)


@pytest.mark.parametrize(
    ("error", "status", "headers"),
    [
        (NotFound("no such webhook endpoint"), 404, {}),
        (Unauthorized("invalid API key"), 401, {"WWW-Authenticate": "Bearer"}),
        (TooManyRequests("slow down", retry_after=7), 429, {"Retry-After": "7"}),
        (NotReady("database unreachable"), 503, {}),
        (ValidationFailed([FieldError("url", "must use https")]), 422, {}),
        (DispatcherError("boom"), 500, {}),
    ],
)
async def test_the_middleware_answers_from_the_table(
    error: DispatcherError, status: int, headers: dict[str, str]
) -> None:
    async def handler(request: web.Request) -> web.Response:
        raise error

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/", handler)
    client: TestClient[Any, Any]
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/")
        body = await response.json()
    assert response.status == status
    assert body["error"]["type"] == error.type
    for name, value in headers.items():
        assert response.headers[name] == value
    if isinstance(error, ValidationFailed):
        assert body["error"]["errors"] == [{"field": "url", "message": "must use https"}]
    else:
        assert body["error"]["message"] == str(error)
