"""The admin console in headless Chromium against a real ``chatpush serve``: log in (and fail),
drain and undrain a node, follow a chat's delivery trail while its receiver fails and recovers,
save FCM credentials, see them masked and test them against the fake FCM, find a callback in the
list, open it and cancel it; see an agent's devices (token hashes only) and remove one."""

from __future__ import annotations

import hashlib
import re
import time

from playwright.sync_api import expect

from tests.browser.admin_browser import (
    ADMIN_KEY,
    Console,
    Screen,
    console_service,
    log_in,
    screen,
)

__all__ = ["console_service", "screen"]  # the fixtures this file uses


def test_log_in_fails_with_a_wrong_key_then_succeeds(
    screen: Screen, console_service: Console
) -> None:
    page, base = screen.page, console_service.base
    log_in(screen, base, key="not-the-key")
    expect(page.get_by_role("alert")).to_have_text("That key is not an API key of this service.")
    expect(page.get_by_label("Admin API key")).to_have_attribute("aria-invalid", "true")
    screen.shoot("login-refused")
    page.get_by_label("Admin API key").fill(ADMIN_KEY)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{base}/admin/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Overview")
    expect(page.get_by_role("heading", name="Deliveries per minute")).to_be_visible()
    screen.shoot("overview")
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(f"{base}/admin/login")
    page.goto(f"{base}/admin/nodes")
    expect(page).to_have_url(f"{base}/admin/login")


def test_see_a_node_drain_and_undrain_it(screen: Screen, console_service: Console) -> None:
    page, base = screen.page, console_service.base
    log_in(screen, base)
    page.get_by_role("link", name="Nodes").click()
    row = page.locator("#node-n1")
    expect(row.locator(".state")).to_have_text("available")
    expect(row).to_contain_text(re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(\d+ s ago\)"))
    screen.shoot("nodes")
    row.get_by_role("button", name="Drain n1").click()
    expect(page.get_by_role("status")).to_contain_text("Node n1 drained.")
    expect(row.locator(".state")).to_have_text("drained")
    assert console_service.node("n1")["drained"] is True
    screen.shoot("drained")
    row.get_by_role("button", name="Undrain n1").click()
    expect(row.locator(".state")).to_have_text("available")
    assert console_service.node("n1")["drained"] is False


def test_follow_a_chats_trail_while_its_receiver_fails_and_recovers(
    screen: Screen, console_service: Console
) -> None:
    page, base, receiver = screen.page, console_service.base, console_service.receiver
    receiver.status = 500
    chat_id = console_service.new_push_chat("browser-device-1")
    log_in(screen, base)
    page.get_by_role("link", name="Chats").click()
    page.get_by_label("Search").fill("browser-device-1")
    page.get_by_label("By").select_option("device")
    page.get_by_role("button", name="Search").click()
    screen.shoot("chat-search")
    page.get_by_role("link", name=chat_id).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Chat {chat_id}")
    page.get_by_label("Follow (refresh every 2 s)").check()
    trail = page.locator("#trail")
    expect(trail.locator("tr.outcome-failed").first).to_contain_text("500")
    screen.shoot("trail-failing")
    receiver.status = 200  # the receiver recovers: the next resend gets through
    expect(trail.locator("tr.outcome-sent").first).to_contain_text("200")
    screen.shoot("trail-recovered")
    page.get_by_role("link", name="Overview").click()
    expect(page.locator("#last-errors")).to_contain_text(chat_id)
    screen.shoot("overview-errors")


def test_save_fcm_credentials_see_them_masked_and_test_them(
    screen: Screen, console_service: Console
) -> None:
    page, base, fcm = screen.page, console_service.base, console_service.fcm
    log_in(screen, base)
    page.get_by_role("link", name="Credentials").click()
    expect(page.get_by_role("heading", name="Update FCM credentials")).to_be_visible()
    page.get_by_label("Project ID").fill(fcm.project_id)
    page.get_by_label("Client email").fill(fcm.client_email)
    page.get_by_label("Private key (PEM)").fill(fcm.private_key)
    page.get_by_label("Token URI (optional; Google's by default)").fill(fcm.token_uri)
    screen.shoot("credentials-form")
    page.get_by_role("button", name="Update").click()
    expect(page.locator(".flashes")).to_contain_text("FCM credentials saved.")
    masked = page.locator("#masked")
    expect(masked).to_contain_text(f"push… ({len(fcm.client_email)} characters)")
    # The key as typed (a browser sends the textarea's lines with CRLF; it is stored with LF).
    expect(masked).to_contain_text(f"----… ({len(fcm.private_key)} characters)")
    content = page.content()
    assert fcm.private_key.splitlines()[1] not in content and fcm.client_email not in content
    expect(page.get_by_label("Private key (PEM)")).to_have_value("")
    screen.shoot("credentials-masked")

    page.get_by_label("Device token").fill("browser-phone-1")
    page.get_by_role("button", name="Send a test notification").click()
    expect(page.locator("#verdict")).to_contain_text("Sent: the provider accepted")
    expect(page.locator("#verdict-status")).to_have_text("200")
    assert fcm.sent[-1]["token"] == "browser-phone-1"
    screen.shoot("credentials-test-sent")

    fcm.fail("browser-gone", 404, "UNREGISTERED", "Requested entity was not found.")
    page.get_by_label("Device token").fill("browser-gone")
    page.get_by_role("button", name="Send a test notification").click()
    expect(page.locator("#verdict-status")).to_have_text("404")
    expect(page.locator("#verdict-error")).to_have_text(
        "FCM 404 UNREGISTERED: Requested entity was not found."
    )
    screen.shoot("credentials-test-refused")


def test_find_a_callback_open_it_and_cancel_it(screen: Screen, console_service: Console) -> None:
    page, base = screen.page, console_service.base
    older = console_service.new_callback("browser_cb", "5550100")
    time.sleep(0.01)  # created a later millisecond: the list's newest-first order is by time
    callback_id = console_service.new_callback("browser_cb", "5550101")
    log_in(screen, base)
    expect(page.locator("#callbacks-open")).not_to_have_text("0")
    page.get_by_role("link", name="Callbacks", exact=True).click()
    page.get_by_label("Service").fill("browser_cb")
    page.get_by_label("State").select_option("QUEUED")
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("#results tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.first).to_contain_text(callback_id)  # newest first
    expect(rows.nth(1)).to_contain_text(older)
    screen.shoot("callbacks-list")
    page.get_by_role("link", name=callback_id).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Callback {callback_id}")
    expect(page.locator("#callback-state")).to_have_text("QUEUED")
    expect(page.locator("#record")).to_contain_text("5550101")
    expect(page.locator("#commands")).to_contain_text("callback.created")
    screen.shoot("callback-page")
    page.get_by_label("Note for the contact-centre side (optional)").fill("asked by phone")
    page.get_by_role("button", name="Cancel this callback").click()
    expect(page.get_by_role("status")).to_contain_text("Callback cancelled (CANCELLED_BY_ADMIN).")
    expect(page.locator("#callback-state")).to_have_text("COMPLETED")
    expect(page.locator("#callback-reason")).to_have_text("CANCELLED_BY_ADMIN")
    expect(page.get_by_role("button", name="Cancel this callback")).to_have_count(0)
    record = console_service.callback(callback_id)
    assert record["_callback_state"] == "COMPLETED"
    assert record["_callback_reason"] == "CANCELLED_BY_ADMIN"
    assert console_service.callback(older)["_callback_state"] == "QUEUED"
    screen.shoot("callback-cancelled")


def test_see_an_agents_devices_and_remove_one(screen: Screen, console_service: Console) -> None:
    page, base = screen.page, console_service.base
    token = "browser-fcm-token-" + "z" * 40
    phone = console_service.register_device("browser-agent", "android", token)
    desk = console_service.register_device("browser-agent", "customhttp", "browser-desk-1")
    log_in(screen, base)
    page.get_by_role("link", name="Agents").click()
    page.get_by_label("Agent id (or its beginning)").fill("browser-agent")
    page.get_by_role("button", name="Search").click()
    devices = page.locator("#devices")
    expect(devices).to_contain_text(phone)
    expect(devices).to_contain_text(hashlib.sha256(token.encode()).hexdigest()[:12])
    assert token not in page.content() and "browser-desk-1" not in page.content()
    screen.shoot("agents")
    page.get_by_role("button", name=f"Remove device {desk} of browser-agent").click()
    expect(page.get_by_role("status")).to_contain_text(f"Device {desk} of agent browser-agent")
    expect(devices).not_to_contain_text(desk)
    assert console_service.devices("browser-agent") == [phone]
    screen.shoot("agents-removed")
