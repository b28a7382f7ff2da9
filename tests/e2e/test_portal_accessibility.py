"""Accessibility basics in Chromium: every input labelled, every action reachable with Tab
and activated with Enter, a visible focus ring on whatever has keyboard focus."""

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
    open_portal,
    portal_link,
    portal_pool,
    refresh_until,
)

AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"

UNLABELLED = """() => [...document.querySelectorAll("input, select, textarea")]
    .filter((e) => e.offsetParent !== null)
    .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute("aria-label"))
    .map((e) => e.outerHTML)"""

NAMELESS_BUTTONS = """() => [...document.querySelectorAll("button")]
    .filter((e) => e.offsetParent !== null && !e.textContent.trim()
        && !e.getAttribute("aria-label"))
    .map((e) => e.outerHTML)"""

# every visible control a mouse could use, as "tag:name"
CONTROLS = """() => [...document.querySelectorAll("button, a[href], input, select, textarea")]
    .filter((e) => e.offsetParent !== null && !e.disabled && !e.closest("dialog"))
    .map((e) => e.tagName + ":" + (e.textContent.trim() || e.name || e.id))"""

FOCUSED = """() => {
    const e = document.activeElement;
    const style = getComputedStyle(e);
    return {
        key: e.tagName + ":" + (e.textContent.trim() || e.name || e.id),
        outline: style.outlineStyle,
        width: parseFloat(style.outlineWidth),
    };
}"""


async def tab_through(watched: Watched, presses: int, wanted: set[str] | None = None) -> set[str]:
    """Tab through the page (until `wanted` is reached); every stop shows a focus ring."""
    reached: set[str] = set()
    for _ in range(presses):
        if wanted is not None and wanted <= reached:
            break
        await watched.page.keyboard.press("Tab")
        focused = await watched.page.evaluate(FOCUSED)
        if focused["key"].startswith("BODY"):
            continue
        assert focused["outline"] != "none" and focused["width"] >= 2, focused
        reached.add(focused["key"])
    return reached


@pytest.mark.timeout(90)
async def test_labels_keyboard_and_visible_focus(
    portal: Watched, portal_server: Server, pool: asyncpg.Pool, receiver: Any
) -> None:
    page = portal.page
    tenant_id = await new_tenant(pool, "ACME")
    await open_portal(portal, (await portal_link(portal_server, tenant_id))["url"])

    # -- create an endpoint with the keyboard alone: Tab to the action, Enter, type, Enter
    reached = await tab_through(portal, 6)
    assert "BUTTON:Add endpoint" in reached
    while (await page.evaluate(FOCUSED))["key"] != "BUTTON:Add endpoint":
        await page.keyboard.press("Shift+Tab")
    await page.keyboard.press("Enter")
    await page.get_by_role("heading", name="Add an endpoint").wait_for()
    assert await page.evaluate(UNLABELLED) == []
    await page.keyboard.type(receiver.url("/kbd"))  # the URL field has focus
    await page.keyboard.press("Enter")
    await page.get_by_role("heading", name="Endpoint created").wait_for()
    await page.keyboard.press("Tab")  # from "Copy secret" to the dialog's close button
    assert (await page.evaluate(FOCUSED))["key"] == "BUTTON:I have stored it"
    await page.keyboard.press("Enter")
    await page.get_by_role("heading", name="Delivery log").wait_for()

    # -- the endpoint page: every control labelled and named, every one reachable by Tab
    endpoint_url = receiver.url("/kbd2")
    await new_endpoint(pool, tenant_id, endpoint_url, description="Keyboard")
    event_id = await emit(portal_server, tenant_id, "ml_kbd", "created")
    await open_endpoint(portal, (await portal_link(portal_server, tenant_id))["url"], endpoint_url)
    await refresh_until(page, event_id, "succeeded")
    assert await page.evaluate(UNLABELLED) == []
    assert await page.evaluate(NAMELESS_BUTTONS) == []
    controls = set(await page.evaluate(CONTROLS))
    await page.locator("body").click(position={"x": 1, "y": 1})
    reached = await tab_through(portal, 200, controls)  # a date field has several stops
    assert controls <= reached, sorted(controls - reached)

    # Enter on a focused action activates it: open the attempts of the delivery
    toggle = page.get_by_role("button", name="Show attempts")
    await toggle.focus()
    await page.keyboard.press("Enter")
    await page.get_by_role("button", name="Hide attempts").wait_for()
    await page.locator("tr.attempt-row").get_by_text("Attempt 1").wait_for()

    # -- the catalog
    await page.get_by_role("button", name="Event catalog").focus()
    await page.keyboard.press("Enter")
    await page.get_by_role("heading", name="Event catalog").wait_for()
    assert await page.evaluate(UNLABELLED) == []
    portal.assert_clean()


async def axe_violations(watched: Watched) -> list[str]:
    """axe-core's WCAG 2.1 A/AA rules on the page as it is now; one line per violation."""
    found: list[str] = await watched.page.evaluate(
        """async () => {
            const result = await axe.run(document, {
                runOnly: {type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]},
            });
            const found = result.violations.map((v) => `${v.id} (${v.impact}): ${v.help} at `
                + v.nodes.slice(0, 3).map((n) => n.target.join(" ")).join(", "));
            // rules that checked something and passed: proof that axe looked at the page
            return [String(result.passes.length), ...found];
        }"""
    )
    passed, *violations = found
    assert int(passed) >= 10, f"axe checked almost nothing: {passed} rules passed"
    return violations


@pytest.mark.timeout(90)
async def test_axe_finds_no_wcag_violation_on_any_view(
    portal: Watched, portal_server: Server, pool: asyncpg.Pool, receiver: Any
) -> None:
    """The axe script is injected by the browser driver, outside the page's CSP."""
    page = portal.page
    await portal.context.add_init_script(path=str(AXE))
    tenant_id = await new_tenant(pool, "ACME")
    endpoint_url = receiver.url("/axe")
    receiver.script("/axe", 500, body=b"try later")
    await new_endpoint(pool, tenant_id, endpoint_url, description="Axe")
    event_id = await emit(portal_server, tenant_id, "ml_axe", "created")
    await receiver.wait_for(1, "/axe")
    await open_portal(portal, (await portal_link(portal_server, tenant_id))["url"])
    views = {"endpoints": await axe_violations(portal)}
    await page.get_by_role("button", name=endpoint_url).click()
    await page.get_by_role("heading", name="Delivery log").wait_for()
    await refresh_until(page, event_id, "HTTP 500")
    await page.get_by_role("button", name="Show attempts").click()
    views["endpoint, attempts open"] = await axe_violations(portal)
    await page.get_by_role("button", name="Rotate secret").click()
    views["confirmation dialog"] = await axe_violations(portal)
    await page.get_by_role("button", name="Cancel").click()
    await page.get_by_role("button", name="Edit").click()
    await page.get_by_role("heading", name="Edit endpoint").wait_for()
    views["edit form"] = await axe_violations(portal)
    await page.get_by_role("button", name="Events", exact=True).click()
    await page.get_by_label("Mailing id or event id").fill("ml_axe")
    await page.get_by_role("button", name="Find events").click()
    await page.locator("article.event").wait_for()
    views["events"] = await axe_violations(portal)
    await page.get_by_role("button", name="Event catalog").click()
    await page.get_by_role("heading", name="Event catalog").wait_for()
    views["catalog"] = await axe_violations(portal)
    assert {view: found for view, found in views.items() if found} == {}
    # the control: an unlabelled field added by the test is caught
    await page.evaluate("document.querySelector('main').append(document.createElement('input'))")
    assert any(v.startswith("label ") for v in await axe_violations(portal))
    portal.assert_clean()
