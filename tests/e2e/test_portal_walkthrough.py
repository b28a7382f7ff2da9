"""A tenant does every portal task in Chromium: open the link, create an endpoint, see a
delivery arrive, send a test event, rotate the secret, verify signatures with the page's own
code (Python and Node), read the catalog, edit, disable, enable and delete."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.e2e.portal_support import (  # noqa: F401 - portal_pool is the `pool` fixture
    Server,
    Watched,
    emit,
    new_tenant,
    open_portal,
    portal_link,
    portal_pool,
    refresh_until,
    screenshot_dir,
)
from tests.tooling import require_tool

FIRST_LOAD_BUDGET = 250 * 1024


async def verifies_with_python(
    code: str, secret: str, headers: dict[str, str], body: bytes
) -> bool:
    namespace: dict[str, Any] = {}
    exec(code.replace('os.environ["WEBHOOK_SECRET"]', repr(secret)), namespace)
    result: bool = namespace["verify"](headers, body)
    return result


async def verifies_with_node(
    code: str, secret: str, headers: dict[str, str], body: bytes, tmp_path: Path
) -> bool:
    node = require_tool("node")
    (tmp_path / "verify.js").write_text(code)
    (tmp_path / "body.bin").write_bytes(body)
    lowered = {k.lower(): v for k, v in headers.items()}  # as Node's req.headers
    (tmp_path / "headers.json").write_text(json.dumps(lowered))
    script = (
        "const {verify} = require('./verify.js');"
        "const fs = require('fs');"
        "const ok = verify(JSON.parse(fs.readFileSync('headers.json')),"
        " fs.readFileSync('body.bin'));"
        "process.stdout.write(String(ok));"
    )
    proc = await asyncio.create_subprocess_exec(
        node,
        "-e",
        script,
        cwd=tmp_path,
        env={"WEBHOOK_SECRET": secret, "PATH": "/usr/bin:/bin"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode() == "true"


@pytest.mark.timeout(120)
async def test_a_tenant_does_every_task_from_a_portal_link(
    portal: Watched, portal_server: Server, pool: asyncpg.Pool, receiver: Any, tmp_path: Path
) -> None:
    server = portal_server
    shots = screenshot_dir(tmp_path)
    page = portal.page
    tenant_id = await new_tenant(pool, "ACME Letters")
    link = await portal_link(server, tenant_id)
    token = link["url"].split("#token=", 1)[1]

    # -- open the link: the token leaves the address bar and never travels in a URL or header
    await open_portal(portal, link["url"])
    assert page.url == f"{server.base}/portal/"
    assert await page.evaluate("window.location.hash") == ""
    await page.get_by_text("No endpoints yet").wait_for()
    first_load = list(portal.requests)
    transferred = 0
    for request in first_load:
        assert request.url.startswith(server.base + "/"), f"left the origin: {request.url}"
        assert token not in request.url
        headers = await request.all_headers()
        assert not any(token in value for value in headers.values()), request.url
        sizes = await request.sizes()
        transferred += sizes["responseBodySize"] + sizes["responseHeadersSize"]
    assert transferred <= FIRST_LOAD_BUDGET, f"first load {transferred} bytes"
    await page.screenshot(path=str(shots / "empty.png"))

    # -- create an endpoint: the secret is shown once, with a copy button
    await page.get_by_role("button", name="Add endpoint").click()
    await page.get_by_label("Endpoint URL").fill(receiver.url("/orders"))
    await page.get_by_label("Description").fill("Order system")
    await page.get_by_role("button", name="Create endpoint").click()
    secret = await page.locator("#new-secret").text_content()
    assert secret is not None and secret.startswith("whsec_")
    await page.get_by_role("button", name="Copy secret").click()
    await page.get_by_text("Copied.").wait_for()
    assert await page.evaluate("navigator.clipboard.readText()") == secret
    await page.screenshot(path=str(shots / "secret.png"))
    await page.get_by_role("button", name="I have stored it").click()
    await page.get_by_role("heading", name="Order system").wait_for()

    # -- a real event arrives at the receiver and in the log
    event_id = await emit(server, tenant_id, "ml_1001", "created")
    await receiver.wait_for(1, "/orders")
    await refresh_until(page, event_id, "succeeded")
    row = page.locator("tbody.delivery", has_text=event_id)
    await row.get_by_role("button", name="Show attempts").click()
    await row.get_by_text("HTTP 200").first.wait_for()
    (delivered,) = receiver.at("/orders")

    # -- the page's verification code verifies the real delivery, in Python and in Node
    verify = page.get_by_role("region", name="Verify signatures")
    await verify.get_by_text("X-Bjet24-Signature: t=<unix seconds>").wait_for()
    python_code = await page.locator("#verify-code").text_content()
    assert python_code is not None and '"X-Bjet24-Signature"' in python_code
    assert await verifies_with_python(python_code, secret, delivered.headers, delivered.body)
    assert not await verifies_with_python(python_code, secret, delivered.headers, b"{}")
    assert not await verifies_with_python(
        python_code, "whsec_other", delivered.headers, delivered.body
    )
    await verify.get_by_role("tab", name="Node").click()
    node_code = await page.locator("#verify-code").text_content()
    assert node_code is not None and '"x-bjet24-signature"' in node_code
    assert await verifies_with_node(node_code, secret, delivered.headers, delivered.body, tmp_path)
    assert not await verifies_with_node(node_code, secret, delivered.headers, b"{}", tmp_path)
    await verify.get_by_role("button", name="Copy code").click()
    assert await page.evaluate("navigator.clipboard.readText()") == node_code
    await page.screenshot(path=str(shots / "endpoint.png"), full_page=True)

    # -- send a test event and see its outcome
    tester = page.get_by_role("region", name="Send a test event")
    await tester.get_by_label("Event type").select_option("mailing.delivered")
    await tester.get_by_role("button", name="Send test event").click()
    outcome = tester.locator(".test-outcome")
    await outcome.wait_for()
    assert "Delivered" in (await outcome.text_content() or "")
    assert "HTTP 200" in (await outcome.text_content() or "")
    assert receiver.at("/orders")[-1].headers["X-Event-Type"] == "mailing.delivered"

    # -- rotate the secret: the new one is shown once and signs alongside the old one
    await page.get_by_role("button", name="Rotate secret").click()
    await page.get_by_role("button", name="Rotate", exact=True).click()
    await page.get_by_role("heading", name="New signing secret").wait_for()
    rotated = await page.locator("#new-secret").text_content()
    assert rotated is not None and rotated.startswith("whsec_") and rotated != secret
    await page.get_by_role("button", name="I have stored it").click()
    sent = len(receiver.at("/orders"))
    await tester.get_by_role("button", name="Send test event").click()
    await receiver.wait_for(sent + 1, "/orders")
    await tester.locator(".test-outcome").wait_for()
    latest = receiver.at("/orders")[-1]
    assert latest.headers["X-Bjet24-Signature"].count("v1=") == 2
    await verify.get_by_role("tab", name="Python").click()
    assert await verifies_with_python(python_code, rotated, latest.headers, latest.body)
    assert await verifies_with_python(python_code, secret, latest.headers, latest.body)

    # -- the mailing's events, with where each stands at each endpoint
    await page.get_by_role("button", name="Events", exact=True).click()
    await page.get_by_label("Mailing id or event id").fill("ml_1001")
    await page.get_by_role("button", name="Find events").click()
    found = page.locator("article.event", has_text=event_id)
    await found.get_by_text("succeeded").wait_for()
    await page.get_by_label("Mailing id or event id").fill("evt_nothing")
    await page.get_by_role("button", name="Find events").click()
    await page.get_by_text("No event found").wait_for()

    # -- the catalog, with an example body per type
    await page.get_by_role("button", name="Event catalog").click()
    await page.get_by_role("heading", name="Event catalog").wait_for()
    example = page.get_by_label("Example body of mailing.delivered")
    assert json.loads(await example.text_content() or "")["event_type"] == "mailing.delivered"
    await page.screenshot(path=str(shots / "catalog.png"))

    # -- edit, disable, enable, delete
    await page.get_by_role("button", name="Endpoints").click()
    await page.get_by_role("button", name=receiver.url("/orders")).click()
    await page.get_by_role("button", name="Edit").click()
    await page.get_by_label("Description").fill("Orders (v2)")
    await page.get_by_role("button", name="Save changes").click()
    await page.get_by_role("heading", name="Orders (v2)").wait_for()
    await page.get_by_text("Endpoint saved.").wait_for()
    await page.get_by_role("button", name="Disable").click()
    await page.get_by_text("Endpoint disabled").wait_for()
    before = len(receiver.requests)
    await emit(server, tenant_id, "ml_1002", "created")  # a disabled endpoint gets nothing
    await page.get_by_role("button", name="Enable").click()
    await page.get_by_text("Endpoint enabled.").wait_for()
    await page.get_by_role("button", name="Delete").click()
    await page.get_by_role("button", name="Delete endpoint").click()
    await page.get_by_text("Endpoint deleted.").wait_for()
    await page.get_by_text("No endpoints yet").wait_for()
    assert len(receiver.requests) == before
    portal.assert_clean(refused_requests=True)  # the unknown event's 404
    # neither the link's token nor the session cookie reached the server's log
    (cookie,) = [c["value"] for c in await portal.context.cookies() if "portal" in c["name"]]
    log = server.output()
    assert log and token not in log and cookie not in log


@pytest.mark.timeout(90)
async def test_an_ed25519_endpoint_shows_its_public_key_and_matching_code(
    portal: Watched, portal_server: Server, pool: asyncpg.Pool, receiver: Any, tmp_path: Path
) -> None:
    page = portal.page
    tenant_id = await new_tenant(pool, "ACME Keys")
    await open_portal(portal, (await portal_link(portal_server, tenant_id))["url"])
    await page.get_by_role("button", name="Add endpoint").click()
    await page.get_by_label("Endpoint URL").fill(receiver.url("/signed"))
    await page.get_by_label("Signing").select_option("ed25519")
    await page.get_by_role("button", name="Create endpoint").click()
    public_key = await page.locator("#public-key").text_content()
    assert public_key is not None and public_key.startswith("whpk_")
    await page.get_by_role("button", name="I have stored it").click()
    assert await page.locator("code.public-key").text_content() == public_key

    await emit(portal_server, tenant_id, "ml_ed", "created")
    await receiver.wait_for(1, "/signed")
    (delivered,) = receiver.at("/signed")
    assert delivered.headers["webhook-signature"].startswith("v1a,")
    python_code = await page.locator("#verify-code").text_content()
    assert python_code is not None and public_key in python_code
    assert await verifies_with_python(python_code, "", delivered.headers, delivered.body)
    assert not await verifies_with_python(python_code, "", delivered.headers, b"{}")
    await page.get_by_role("tab", name="Node").click()
    node_code = await page.locator("#verify-code").text_content()
    assert node_code is not None
    assert await verifies_with_node(node_code, "", delivered.headers, delivered.body, tmp_path)
    assert not await verifies_with_node(node_code, "", delivered.headers, b"{}", tmp_path)

    # rotation shows the new public key, and the page's code follows it
    await page.get_by_role("button", name="Rotate secret").click()
    await page.get_by_role("button", name="Rotate", exact=True).click()
    await page.get_by_role("heading", name="New public key").wait_for()
    rotated = await page.locator("#public-key").text_content()
    assert rotated is not None and rotated != public_key
    await page.get_by_role("button", name="I have stored it").click()
    await page.locator("code.public-key", has_text=rotated).wait_for()
    assert rotated in (await page.locator("#verify-code").text_content() or "")
    portal.assert_clean()
