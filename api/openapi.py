"""The OpenAPI 3.1 document of the whole app, served at GET /openapi.json.

Paths and methods come from the aiohttp router itself; each handler carries its
description (``@operation(...)``) and bodies are the pydantic models that validate them,
so the document cannot name a wrong path or drift from the code. A route nobody
described is left out, and ``tests/integration/test_openapi.py`` fails on it.

Registering a route, in its own module::

    from api.openapi import operation

    @routes.post("/v1/deliveries/{id}/retry")
    @operation(summary="Retry one delivery now", tag="deliveries",
               responses={202: DeliveryObject}, errors=(409,))
    async def retry_delivery(request: web.Request) -> web.Response: ...

Standard errors are added by themselves: 401 unless ``security="public"``, 404 when the
path has a parameter, 400/413/422 with a body, 422 with query parameters. For a handler
you may not decorate, ``describe("GET", "/path", Operation(...))`` does the same.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from importlib import metadata
from typing import Any, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, Field
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from api.errors import ErrorStatus, by_status, documented_errors
from api.idempotency import HEADER as IDEMPOTENCY_HEADER
from api.idempotency import MAX_KEY_LENGTH, REPLAYED_HEADER
from api.responses import json_response
from api.schemas.common import MAILING_ID_PATTERN

OPENAPI_VERSION = "3.1.0"
_REF = "#/components/schemas/{model}"
_ATTR = "__openapi_operation__"

H = TypeVar("H", bound=Callable[..., Any])
Security = Literal["tenant", "platform", "public"]


@dataclass(frozen=True)
class Raw:
    """A response that is not one of our JSON models (metrics text, this document)."""

    media_type: str
    schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "string"})


@dataclass(frozen=True)
class Operation:
    """What the router cannot tell: meaning, bodies, auth. Use it as a decorator."""

    summary: str
    tag: str
    security: Security = "tenant"
    body: type[BaseModel] | None = None
    body_required: bool = True
    query: type[BaseModel] | None = None
    responses: Mapping[int, type[BaseModel] | Raw | None] = field(
        default_factory=lambda: {200: None}
    )
    errors: tuple[int, ...] = ()
    idempotent: bool = False
    description: str | None = None
    operation_id: str | None = None

    def __call__(self, handler: H) -> H:
        setattr(handler, _ATTR, self)
        return handler


operation = Operation
_DESCRIBED: dict[tuple[str, str], Operation] = {}


def describe(method: str, path: str, op: Operation) -> None:
    """Document a route whose handler you cannot decorate (it lives in another module)."""
    _DESCRIBED[(method.upper(), path)] = op


class ErrorField(BaseModel):
    field: str = Field(examples=["url"])
    message: str = Field(examples=["must use https for production endpoints"])


class ErrorDetail(BaseModel):
    type: str = Field(examples=["validation_error"])
    message: str
    errors: list[ErrorField] = Field(
        default_factory=list, description="Every invalid field; only on validation errors."
    )


class ErrorBody(BaseModel):
    """The shape of every error response."""

    error: ErrorDetail


_SECURITY: dict[Security, list[dict[str, list[str]]]] = {
    "tenant": [{"tenantKey": []}],
    "platform": [{"platformToken": []}],
    "public": [],
}


@dataclass(frozen=True)
class DocumentedRoute:
    method: str
    path: str
    handler_name: str
    operation: Operation | None


def documented_routes(app: web.Application) -> Iterator[DocumentedRoute]:
    """Every (method, path) of the router with its description, if any; HEAD is implied."""
    for route in app.router.routes():
        resource = route.resource
        if route.method == "HEAD" or resource is None:
            continue
        path = resource.canonical
        op = getattr(route.handler, _ATTR, None) or _DESCRIBED.get((route.method, path))
        name = getattr(route.handler, "__name__", "handler")
        yield DocumentedRoute(route.method, path, name, op)


def _models(routes: list[DocumentedRoute]) -> list[tuple[type[BaseModel], JsonSchemaMode]]:
    wanted: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {(ErrorBody, "validation"): None}
    for route in routes:
        op = route.operation
        assert op is not None
        for model in (op.body, op.query):
            if model is not None:
                wanted[(model, "validation")] = None
        for body in op.responses.values():
            if isinstance(body, type):
                wanted[(body, "serialization")] = None
    return list(wanted)


_TEXT: Mapping[str, Any] = {"type": "string"}
# Path parameters whose form the routes check before any lookup (422 rather than 404).
_PATH_SCHEMAS: dict[str, Mapping[str, Any]] = {
    "mailing_id": {"type": "string", "pattern": MAILING_ID_PATTERN},
}


def _parameters(
    path: str, op: Operation, schemas: dict[str, Any], refs: Mapping[Any, Any]
) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": _PATH_SCHEMAS.get(name, _TEXT)}
        for name in re.findall(r"{(\w+)}", path)
    ]
    if op.query is not None:
        ref = refs[(op.query, "validation")]["$ref"]
        model_schema = schemas[ref.rsplit("/", 1)[1]]
        required = set(model_schema.get("required", []))
        for name, prop in model_schema.get("properties", {}).items():
            prop = dict(prop)
            param = {"name": name, "in": "query", "required": name in required}
            if "description" in prop:
                param["description"] = prop.pop("description")
            params.append({**param, "schema": prop})
    if op.idempotent:
        params.append(
            {
                "name": IDEMPOTENCY_HEADER,
                "in": "header",
                "required": False,
                "description": "Retries with the same key replay the first answer.",
                "schema": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_KEY_LENGTH,
                    "pattern": "^[ -~]+$",  # printable ASCII
                },
            }
        )
    return params


def _error_headers(row: ErrorStatus) -> dict[str, Any]:
    if row.header is None:
        return {}
    header = {"description": row.header_description, "schema": {"type": "string"}}
    return {"headers": {row.header: header}}


def _responses(path: str, op: Operation, refs: Mapping[Any, Any]) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, body in op.responses.items():
        response: dict[str, Any] = {"description": HTTPStatus(status).phrase}
        if isinstance(body, Raw):
            response["content"] = {body.media_type: {"schema": dict(body.schema)}}
        elif body is not None:
            response["content"] = {"application/json": {"schema": refs[(body, "serialization")]}}
        if op.idempotent and status < 300:
            response["headers"] = {
                REPLAYED_HEADER: {
                    "description": "'true' when this is the stored answer of a retry.",
                    "schema": {"type": "string", "enum": ["true"]},
                }
            }
        responses[str(status)] = response
    errors = set(op.errors)
    if op.security != "public":
        errors.update((401, 429))
    if op.security == "tenant":
        errors.add(403)  # a suspended tenant; a portal-session write without its CSRF token
    if "{" in path:
        errors.add(404)
    if op.body is not None:
        errors.update((400, 413, 422))
    if op.query is not None or op.idempotent:
        errors.add(422)
    for status in sorted(errors - set(op.responses)):
        responses[str(status)] = {"$ref": f"#/components/responses/{by_status(status).name}"}
    return responses


def _operation_object(
    route: DocumentedRoute, schemas: dict[str, Any], refs: Mapping[Any, Any]
) -> dict[str, Any]:
    op = route.operation
    assert op is not None
    obj: dict[str, Any] = {
        "operationId": op.operation_id or route.handler_name,
        "summary": op.summary,
        "tags": [op.tag],
        "security": _SECURITY[op.security],
    }
    if op.description:
        obj["description"] = op.description
    params = _parameters(route.path, op, schemas, refs)
    if params:
        obj["parameters"] = params
    if op.body is not None:
        obj["requestBody"] = {
            "required": op.body_required,
            "content": {"application/json": {"schema": refs[(op.body, "validation")]}},
        }
    obj["responses"] = _responses(route.path, op, refs)
    return obj


def _version() -> str:
    try:
        return metadata.version("bjet24-dispatcher")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def build_document(app: web.Application) -> dict[str, Any]:
    """The document for this app's router, as it is now."""
    routes = [r for r in documented_routes(app) if r.operation is not None]
    refs, defs = models_json_schema(_models(routes), ref_template=_REF)
    schemas: dict[str, Any] = defs.get("$defs", {})
    paths: dict[str, dict[str, Any]] = {}
    seen_ids: set[str] = set()
    for route in sorted(routes, key=lambda r: (r.path, r.method)):
        obj = _operation_object(route, schemas, refs)
        if obj["operationId"] in seen_ids:
            obj["operationId"] += "_" + route.method.lower()
        seen_ids.add(obj["operationId"])
        paths.setdefault(route.path, {})[route.method.lower()] = obj
    error_ref = refs[(ErrorBody, "validation")]
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Bjet24 webhook dispatcher",
            "version": _version(),
            "description": "Tenants register webhook endpoints; the mailing platform "
            "reports status transitions; every event is delivered signed, at least once.",
        },
        "tags": [{"name": t} for t in sorted({r.operation.tag for r in routes if r.operation})],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": {
                row.name: {
                    "description": row.description,
                    "content": {"application/json": {"schema": error_ref}},
                    **_error_headers(row),
                }
                for row in documented_errors()
            },
            "securitySchemes": {
                "tenantKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A tenant API key (sk_sandbox_... or sk_production_...); "
                    "it also selects the environment.",
                },
                "platformToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The mailing platform's DISPATCHER_PLATFORM_TOKEN.",
                },
            },
        },
    }


routes = web.RouteTableDef()

_JSON_OBJECT = Raw("application/json", {"type": "object"})
_STATUS = Raw(
    "application/json",
    {"type": "object", "properties": {"status": {"type": "string"}}, "required": ["status"]},
)


@routes.get("/openapi.json")
@operation(
    summary="This OpenAPI document",
    tag="operations",
    security="public",
    responses={200: _JSON_OBJECT},
)
async def openapi_document(request: web.Request) -> web.Response:
    return json_response(build_document(request.app))


# The probes live in api/routes/ops.py, which predates this registry.
describe(
    "GET",
    "/healthz",
    Operation(
        summary="Liveness: the process answers",
        tag="operations",
        security="public",
        responses={200: _STATUS},
        operation_id="healthz",
    ),
)
describe(
    "GET",
    "/readyz",
    Operation(
        summary="Readiness: the database is reachable and migrated",
        tag="operations",
        security="public",
        responses={200: _STATUS},
        errors=(503,),
        operation_id="readyz",
    ),
)
describe(
    "GET",
    "/metrics",
    Operation(
        summary="Prometheus metrics",
        tag="operations",
        security="public",
        responses={200: Raw("text/plain; version=0.0.4")},
        operation_id="metrics",
    ),
)
