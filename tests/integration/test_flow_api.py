"""The flow-control fields of an endpoint through the API: rate_limit_per_second, ordering."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import TenantKeys
from tests.integration.test_webhooks_api import (
    VALID,
    Client,
    assert_error,
    create,
    error_fields,
    without_state,
)


async def test_defaults_are_unlimited_and_unordered(client: Client, make_tenant: Any) -> None:
    acme: TenantKeys = await make_tenant()
    created = await create(client, acme)
    assert (created["rate_limit_per_second"], created["ordering"]) == (None, "none")


async def test_set_shown_changed_and_removed(client: Client, make_tenant: Any) -> None:
    acme: TenantKeys = await make_tenant()
    created = await create(client, acme, rate_limit_per_second=50, ordering="mailing")
    assert (created["rate_limit_per_second"], created["ordering"]) == (50, "mailing")
    path = f"/v1/webhooks/{created['id']}"
    shown = await (await client.get(path, headers=acme.headers())).json()
    assert (shown["rate_limit_per_second"], shown["ordering"]) == (50, "mailing")
    listed = await (await client.get("/v1/webhooks", headers=acme.headers())).json()
    assert listed["data"][0]["rate_limit_per_second"] == 50

    for method, body, expected in [
        ("PATCH", {"rate_limit_per_second": 7}, (7, "mailing")),
        ("PUT", {"ordering": "none"}, (7, "none")),  # the other field is kept
        ("PATCH", {"description": "x"}, (7, "none")),
        ("PATCH", {"rate_limit_per_second": None}, (None, "none")),  # null removes the limit
    ]:
        response = await client.request(method, path, json=body, headers=acme.headers())
        assert response.status == 200, await response.text()
        got = await response.json()
        assert (got["rate_limit_per_second"], got["ordering"]) == expected, body


BAD_RATES = [0, -1, -50, 10_001, 10**30, "50", "fast", 1.5, 50.0, True, [50], {"n": 50}]


@pytest.mark.parametrize("rate", BAD_RATES)
async def test_bad_rate_limit_is_a_422_naming_the_field_and_nothing_is_created(
    client: Client, make_tenant: Any, rate: Any
) -> None:
    acme: TenantKeys = await make_tenant()
    response = await client.post(
        "/v1/webhooks", json={**VALID, "rate_limit_per_second": rate}, headers=acme.headers()
    )
    body = await assert_error(response, 422, "validation_error")
    assert error_fields(body) == ["rate_limit_per_second"]
    listed = await (await client.get("/v1/webhooks", headers=acme.headers())).json()
    assert listed["data"] == []


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"rate_limit_per_second": 0}, ["rate_limit_per_second"]),
        ({"rate_limit_per_second": "10/s"}, ["rate_limit_per_second"]),
        ({"ordering": "fifo"}, ["ordering"]),
        ({"ordering": None}, ["ordering"]),
        ({"ordering": "MAILING"}, ["ordering"]),
        ({"ordering": "mailing", "rate_limit_per_second": -3}, ["rate_limit_per_second"]),
        ({"ordering": 1, "rate_limit_per_second": 99_999}, ["ordering", "rate_limit_per_second"]),
    ],
)
async def test_bad_update_changes_nothing(
    client: Client, make_tenant: Any, body: dict[str, Any], fields: list[str]
) -> None:
    acme: TenantKeys = await make_tenant()
    created = await create(client, acme, rate_limit_per_second=20)
    path = f"/v1/webhooks/{created['id']}"
    for method in ("PATCH", "PUT"):
        response = await client.request(method, path, json=body, headers=acme.headers())
        error = await assert_error(response, 422, "validation_error")
        assert sorted(error_fields(error)) == fields
    unchanged = await (await client.get(path, headers=acme.headers())).json()
    assert without_state(unchanged) == {k: v for k, v in created.items() if k != "secret"}


async def test_unknown_ordering_on_create(client: Client, make_tenant: Any) -> None:
    acme: TenantKeys = await make_tenant()
    response = await client.post(
        "/v1/webhooks", json={**VALID, "ordering": "strict"}, headers=acme.headers()
    )
    body = await assert_error(response, 422, "validation_error")
    (problem,) = body["error"]["errors"]
    assert problem["field"] == "ordering" and "mailing" in problem["message"]


async def test_the_openapi_document_describes_both_fields(client: Client) -> None:
    doc = await (await client.get("/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    for name in ("EndpointCreate", "EndpointUpdate", "EndpointObject"):
        props = schemas[name]["properties"]
        assert "rate_limit_per_second" in props and "ordering" in props, name
    rate = schemas["EndpointCreate"]["properties"]["rate_limit_per_second"]
    limits = [v for v in rate.get("anyOf", [rate]) if v.get("type") == "integer"]
    assert limits and limits[0]["minimum"] == 1 and limits[0]["maximum"] == 10_000
    assert "1-second window" in limits[0]["description"]
