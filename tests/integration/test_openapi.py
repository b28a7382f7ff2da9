"""GET /openapi.json: a valid document that names every route and matches real answers."""

from __future__ import annotations

from typing import Any

import asyncpg
import jsonschema
from aiohttp import web
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate

from api.app import create_app
from api.openapi import build_document, documented_routes, operation
from tests.conftest import TenantKeys, make_settings

Client = TestClient[Any, Any]


async def fetch_document(client: Client) -> dict[str, Any]:
    response = await client.get("/openapi.json")  # public: no key needed
    assert response.status == 200
    assert response.content_type == "application/json"
    document: dict[str, Any] = await response.json()
    return document


async def test_document_is_valid_openapi(client: Client) -> None:
    document = await fetch_document(client)
    validate(document)
    assert document["openapi"].startswith("3.1")
    schemes = document["components"]["securitySchemes"]
    assert schemes["tenantKey"]["scheme"] == schemes["platformToken"]["scheme"] == "bearer"


async def test_every_route_of_the_app_is_documented(client: Client) -> None:
    """A route added without `@operation` fails here, so the document never lags."""
    document = await fetch_document(client)
    registered = {
        (route.method.lower(), route.resource.canonical)
        for route in client.app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    documented = {(method, path) for path, item in document["paths"].items() for method in item}
    assert registered - documented == set()
    assert documented - registered == set()
    ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


async def test_an_undescribed_route_is_reported(pool: asyncpg.Pool) -> None:
    app = create_app(make_settings(), pool)

    async def forgotten(request: web.Request) -> web.Response:
        return web.Response()

    @operation(summary="Described", tag="test", security="public")
    async def described(request: web.Request) -> web.Response:
        return web.Response()

    app.router.add_post("/v1/forgotten", forgotten)
    app.router.add_post("/v1/described", described)
    missing = {(r.method, r.path) for r in documented_routes(app) if r.operation is None}
    assert missing == {("POST", "/v1/forgotten")}
    assert "/v1/described" in build_document(app)["paths"]


async def test_standard_errors_and_security_are_declared(client: Client) -> None:
    paths = (await fetch_document(client))["paths"]
    create = paths["/v1/webhooks"]["post"]
    assert create["security"] == [{"tenantKey": []}]
    assert {"201", "400", "401", "413", "422"} <= set(create["responses"])
    assert any(p["name"] == "Idempotency-Key" for p in create["parameters"])
    assert "204" in paths["/v1/webhooks/{id}"]["delete"]["responses"]
    assert "404" in paths["/v1/webhooks/{id}"]["get"]["responses"]
    listing = paths["/v1/webhooks"]["get"]
    assert {p["name"] for p in listing["parameters"]} == {"limit", "starting_after"}
    assert paths["/healthz"]["get"]["security"] == []


def schema_validator(document: dict[str, Any], name: str) -> jsonschema.Draft202012Validator:
    root = {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
    return jsonschema.Draft202012Validator(root)


async def test_real_answers_match_the_documented_schemas(client: Client, make_tenant: Any) -> None:
    keys: TenantKeys = await make_tenant()
    document = await fetch_document(client)
    created = await client.post(
        "/v1/webhooks",
        json={"url": "https://u:p@example.com/", "events": ["*"], "metadata": {"a": [1]}},
        headers=keys.headers(),
    )
    answers = [
        ("EndpointWithSecret", await created.json()),
        ("EndpointList", await (await client.get("/v1/webhooks", headers=keys.headers())).json()),
        (
            "EventTypeList",
            await (await client.get("/v1/event-types", headers=keys.headers())).json(),
        ),
        ("ErrorBody", await (await client.get("/v1/webhooks")).json()),
        (
            "ErrorBody",
            await (
                await client.post("/v1/webhooks", json={"url": 1}, headers=keys.headers())
            ).json(),
        ),
    ]
    for name, body in answers:
        schema_validator(document, name).validate(body)
    # A documented request body is what the API accepts, and nothing else.
    create_schema = schema_validator(document, "EndpointCreate")
    create_schema.validate({"url": "https://example.com/", "events": ["*"]})
    assert not create_schema.is_valid({"url": "https://example.com/", "events": ["*"], "x": 1})
