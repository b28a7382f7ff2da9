"""Failed deliveries in the portal: the receiver's answer shown, retry, dead-letter replay,
and a hostile receiver and tenant whose strings are shown as text and never run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.e2e.portal_support import (  # noqa: F401 - portal_pool is the `pool` fixture
    Server,
    Watched,
    emit,
    new_endpoint,
    new_tenant,
    open_endpoint,
    portal_link,
    portal_pool,
    refresh_until,
    screenshot_dir,
)

XSS_BODY = (
    b"<img src=x onerror=alert(1)></script><script>alert(2)</script>"
    b'<svg onload="alert(3)"><iframe src="javascript:alert(4)">'
)
XSS_DESCRIPTION = "<img src=x onerror=alert('description')>"


@pytest.mark.timeout(120)
async def test_failed_attempt_retry_and_dead_letter_replay(
    portal: Watched, portal_server: Server, pool: asyncpg.Pool, receiver: Any, tmp_path: Path
) -> None:
    server, page = portal_server, portal.page
    tenant_id = await new_tenant(pool, "ACME Letters")
    url = receiver.url("/flaky")
    await new_endpoint(pool, tenant_id, url, description="Billing")
    receiver.script("/flaky", 500, body=b"maintenance until 10:00")
    event_id = await emit(portal_server, tenant_id, "ml_1", "created")
    await open_endpoint(portal, (await portal_link(server, tenant_id))["url"], url)

    # -- the failed attempts and the receiver's answer; dead after the (shortened) max age
    await refresh_until(page, event_id, "dead")
    row = page.locator("tbody.delivery", has_text=event_id)
    await row.get_by_role("button", name="Show attempts").click()
    first = row.locator(".attempts li").first
    assert "HTTP 500" in (await first.text_content() or "")
    assert await first.locator(".badge").text_content() == "http 5xx"
    assert await first.locator("pre.response").text_content() == "maintenance until 10:00"
    await page.screenshot(path=str(screenshot_dir(tmp_path) / "failures.png"), full_page=True)

    # -- filters: the dead one is found by status and type, not by another type
    log = page.get_by_role("region", name="Delivery log")
    await log.get_by_label("Status").select_option("dead")
    await log.get_by_label("Event type").select_option("mailing.paid")
    await log.get_by_role("button", name="Apply filters").click()
    await log.get_by_text("No delivery matches these filters").wait_for()
    await log.get_by_label("Event type").select_option("mailing.created")
    await log.get_by_role("button", name="Apply filters").click()
    await log.locator("tbody.delivery", has_text=event_id).wait_for()

    # -- retry it once the receiver is back
    receiver.script("/flaky", 200)
    before = len(receiver.at("/flaky"))
    await (
        log.locator("tbody.delivery", has_text=event_id).get_by_role("button", name="Retry").click()
    )
    await page.get_by_text("queued again").wait_for()
    await receiver.wait_for(before + 1, "/flaky")
    await refresh_until(page, event_id, "succeeded")

    # -- replay dead letters in a time range: counted first, then replayed
    receiver.script("/flaky", 503, body=b"busy")
    dead = [await emit(server, tenant_id, f"ml_{n}", "created") for n in (2, 3)]
    for found in dead:
        await refresh_until(page, found, "dead")
    receiver.script("/flaky", 200)
    sent = len(receiver.at("/flaky"))
    replay = page.get_by_role("region", name="Replay failed deliveries")
    await replay.get_by_label("From").fill("2099-01-01T00:00")
    await replay.get_by_role("button", name="Count deliveries").click()
    await replay.get_by_text("Nothing to replay in this range.").wait_for()
    await replay.get_by_label("From").fill("")
    await replay.get_by_role("button", name="Count deliveries").click()
    await replay.get_by_text("2 deliveries would be sent again.").wait_for()
    assert len(receiver.at("/flaky")) == sent  # counting re-sends nothing
    await replay.get_by_role("button", name="Replay 2").click()
    await replay.get_by_text("Replayed 2 deliveries").wait_for()
    await receiver.wait_for(sent + 2, "/flaky")
    replayed = {r.headers["X-Event-Id"] for r in receiver.at("/flaky")[sent:]}
    assert replayed == set(dead)
    for found in dead:
        await refresh_until(page, found, "succeeded")
    portal.assert_clean()


@pytest.mark.timeout(120)
async def test_a_hostile_receiver_and_tenant_strings_run_nothing(
    portal: Watched, portal_server: Server, pool: asyncpg.Pool, receiver: Any
) -> None:
    page = portal.page
    tenant_id = await new_tenant(pool, "<script>alert('tenant')</script>")
    url = receiver.url("/xss")
    receiver.script(
        "/xss", 500, body=XSS_BODY, headers={"Content-Type": "text/html", "X-Evil": "<b>x</b>"}
    )
    await new_endpoint(
        pool,
        tenant_id,
        url,
        description=XSS_DESCRIPTION,
        metadata={"note": "</script><script>alert('metadata')</script>"},
    )
    hostile = {"note": "<img src=x onerror=alert('event')>"}
    event_id = await emit(portal_server, tenant_id, "ml_xss", "created", metadata=hostile)
    await receiver.wait_for(1, "/xss")
    link = (await portal_link(portal_server, tenant_id))["url"]
    await open_endpoint(portal, link, url)

    await page.get_by_role("heading", name=XSS_DESCRIPTION).wait_for()
    metadata = await page.locator("code.metadata").text_content()
    assert metadata == '{"note":"</script><script>alert(\'metadata\')</script>"}'
    await refresh_until(page, event_id, "HTTP 500")
    row = page.locator("tbody.delivery", has_text=event_id)
    await row.get_by_role("button", name="Show attempts").click()
    shown = row.locator("pre.response").first
    assert await shown.text_content() == XSS_BODY.decode()

    tester = page.get_by_role("region", name="Send a test event")
    await tester.get_by_role("button", name="Send test event").click()
    outcome = tester.locator(".test-outcome")
    await outcome.wait_for()
    assert await outcome.locator("pre.response").text_content() == XSS_BODY.decode()

    await page.get_by_role("button", name="Events", exact=True).click()
    await page.get_by_label("Mailing id or event id").fill("ml_xss")
    await page.get_by_role("button", name="Find events").click()
    data = page.get_by_label(f"Data of {event_id}")
    assert "<img src=x onerror=alert('event')>" in (await data.text_content() or "")

    # nothing was parsed into elements, nothing ran, nothing was even attempted
    injected = await page.evaluate(
        "document.querySelectorAll('img, svg, iframe, main script, #view script').length"
    )
    assert injected == 0
    assert await page.evaluate("document.scripts.length") == 1  # portal.js alone
    assert not [r.url for r in portal.requests if not r.url.startswith(portal_server.base)]
    portal.assert_clean()
