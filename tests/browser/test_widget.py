"""The chat widget (``/widget/``) in headless Chromium against ``chatpush serve``: a customer
starts a chat with the keyboard, reads the agent's messages live (CometD, or polling ``refresh``
over REST), answers, sees the agent typing, reloads the page, ends the chat. The agent's side is
the chat-server API, as a real agent desktop would use it.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import Agent, Service, Tab, stored_chat


def messages(page: Page) -> list[str]:
    """The transcript's messages as the customer sees them: "who text"."""
    items = page.locator("#cp-transcript li[data-type=Message]")
    return [
        f"{item.locator('.cp-who').inner_text()} {item.locator('.cp-text').inner_text()}"
        for item in items.all()
    ]


def start_chat(page: Page, url: str, nickname: str = "Ann") -> str:
    """Open the widget and start a chat with the keyboard only; the chat's id."""
    page.goto(url)
    name = page.get_by_label("Your name")
    expect(name).to_be_focused()
    page.keyboard.type(nickname)
    page.keyboard.press("Tab")
    expect(page.get_by_label("Subject")).to_be_focused()
    page.keyboard.type("My order")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Email (optional)")).to_be_focused()
    page.keyboard.type("ann@example.com")
    page.keyboard.press("Enter")  # submits the form
    expect(page.get_by_role("log", name="Transcript")).to_contain_text(f"{nickname} joined")
    expect(page.get_by_label("Message")).to_be_focused()
    stored = stored_chat(page)
    assert stored is not None
    return str(stored["chatId"])


@pytest.mark.parametrize("transport", ["cometd", "rest"])
def test_a_chat_from_the_widget(transport: str, service: Service, agent: Agent, tab: Tab) -> None:
    page = tab.page
    chat_id = start_chat(page, f"{service.base}/widget/?transport={transport}")
    stored = stored_chat(page)
    assert stored is not None and stored["transport"] == transport
    assert stored["secureKey"] and stored["alias"] == "1"
    summary = agent.chat(chat_id)["chat"]
    assert (summary["subject"], summary["emailAddress"]) == ("My order", "ann@example.com")
    tab.shoot("started")

    bob = agent.joins(chat_id)
    agent.says(chat_id, bob, "How can I help?")
    # Markup in a message is shown as its text, never run.
    agent.says(chat_id, bob, '<img src=x onerror="window.pwned = 1">')
    log = page.get_by_role("log", name="Transcript")
    expect(log).to_contain_text("Bob joined the chat")
    expect(log.locator("li[data-type=Message]")).to_have_count(2)
    assert messages(page) == [
        "Bob How can I help?",
        'Bob <img src=x onerror="window.pwned = 1">',
    ]
    assert page.evaluate("() => window.pwned") is None
    tab.shoot("agent-wrote")

    page.keyboard.type("My order is late")
    page.keyboard.press("Enter")
    assert agent.sees(chat_id, "Message", "My order is late")["from"]["type"] == "Client"
    expect(log.locator("li[data-type=Message]")).to_have_count(3)
    assert messages(page)[-1] == "You My order is late"
    expect(page.get_by_label("Message")).to_have_value("")
    # The customer's own typing reached the agent too, before the message.
    agent.sees(chat_id, "TypingStarted")
    tab.shoot("answered")


def test_a_link_cannot_point_the_page_at_another_server(
    service: Service, agent: Agent, tab: Tab
) -> None:
    """Only the page's own attribute says where chatpush is; a serviceUrl in the address bar is
    ignored, so a link cannot make a company's page talk to someone else's server."""
    page = tab.page
    chat_id = start_chat(page, f"{service.base}/widget/?serviceUrl=http://127.0.0.1:9")
    assert agent.chat(chat_id)["chat"]["status"] == "active"


def test_the_agent_typing_shows_and_goes(service: Service, agent: Agent, tab: Tab) -> None:
    page = tab.page
    chat_id = start_chat(page, f"{service.base}/widget/")
    bob = agent.joins(chat_id)
    typing = page.locator("#cp-typing")
    expect(typing).to_have_text("")
    agent.event(chat_id, bob, "TypingStarted")
    expect(typing).to_have_text("Bob is typing…")
    expect(typing).to_be_visible()
    tab.shoot("agent-typing")
    agent.says(chat_id, bob, "Here is your answer")
    expect(typing).to_have_text("")
    expect(page.get_by_role("log")).to_contain_text("Here is your answer")
    agent.event(chat_id, bob, "TypingStarted")
    expect(typing).to_have_text("Bob is typing…")
    agent.event(chat_id, bob, "TypingStopped")
    expect(typing).to_have_text("")
    tab.shoot("agent-stopped")


@pytest.mark.parametrize("transport", ["cometd", "rest"])
def test_a_reload_keeps_the_chat(transport: str, service: Service, agent: Agent, tab: Tab) -> None:
    page = tab.page
    chat_id = start_chat(page, f"{service.base}/widget/?transport={transport}")
    bob = agent.joins(chat_id)
    agent.says(chat_id, bob, "first")
    expect(page.get_by_role("log")).to_contain_text("first")
    page.keyboard.type("second")
    page.keyboard.press("Enter")
    agent.sees(chat_id, "Message", "second")
    expect(page.locator("#cp-transcript li[data-type=Message]")).to_have_count(2)
    before = stored_chat(page)
    assert before is not None
    tab.shoot("before-reload")

    page.reload()
    log = page.get_by_role("log", name="Transcript")
    expect(log.locator("li[data-type=Message]")).to_have_count(2)
    assert messages(page) == ["Bob first", "You second"]
    expect(log.locator("li")).to_have_count(4)  # Ann joined, Bob joined, first, second
    after = stored_chat(page)
    assert after is not None
    assert {k: after[k] for k in ("chatId", "secureKey", "userId", "alias", "transport")} == {
        k: before[k] for k in ("chatId", "secureKey", "userId", "alias", "transport")
    }
    assert after["position"] == before["position"]
    tab.shoot("after-reload")

    # Still live after the reload, both ways.
    agent.says(chat_id, bob, "third")
    expect(log.locator("li[data-type=Message]")).to_have_count(3)
    page.get_by_label("Message").fill("fourth")
    page.get_by_role("button", name="Send").click()
    agent.sees(chat_id, "Message", "fourth")
    expect(log.locator("li[data-type=Message]")).to_have_count(4)
    assert messages(page) == ["Bob first", "You second", "Bob third", "You fourth"]


def test_the_chat_goes_on_after_chatpush_restarts(service: Service, agent: Agent, tab: Tab) -> None:
    """Over CometD the page's session is gone with the old process: the client handshakes again
    and the page follows the chat anew from where it was, missing nothing said meanwhile."""
    page = tab.page
    chat_id = start_chat(page, f"{service.base}/widget/?transport=cometd")
    bob = agent.joins(chat_id)
    agent.says(chat_id, bob, "before the restart")
    log = page.get_by_role("log", name="Transcript")
    expect(log).to_contain_text("before the restart")
    service.restart()
    agent.says(chat_id, bob, "after the restart")
    expect(log.locator("li[data-type=Message]")).to_have_count(2)
    assert messages(page) == ["Bob before the restart", "Bob after the restart"]
    page.keyboard.type("still here")
    page.keyboard.press("Enter")
    agent.sees(chat_id, "Message", "still here")
    tab.shoot("after-restart")


def test_ending_the_chat(service: Service, agent: Agent, tab: Tab) -> None:
    page = tab.page
    chat_id = start_chat(page, f"{service.base}/widget/")
    page.get_by_role("button", name="End chat").click()
    expect(page.get_by_text("The chat has ended.")).to_be_visible()
    expect(page.get_by_role("button", name="Start a new chat")).to_be_focused()
    expect(page.get_by_label("Message")).to_be_hidden()
    assert agent.chat(chat_id)["chat"]["status"] == "ended"
    assert stored_chat(page) is None  # a reload now offers a new chat
    tab.shoot("customer-ended")

    # A new chat in the same tab, which the agent side ends this time.
    page.keyboard.press("Enter")  # the focused "Start a new chat"
    second = start_chat(page, page.url, nickname="Ann again")
    assert second != chat_id
    agent.ends(second)
    expect(page.get_by_text("The chat has ended.")).to_be_visible()
    assert stored_chat(page) is None
    page.reload()
    expect(page.get_by_label("Your name")).to_be_visible()
    tab.shoot("agent-ended")


@pytest.mark.parametrize("transport", ["cometd", "rest"])
def test_the_widget_on_another_origin(
    transport: str, service: Service, agent: Agent, tab: Tab
) -> None:
    """A company's page (another origin, serving the same files) points the widget at chatpush."""
    page = tab.page
    url = f"{service.other_origin}/index.html?transport={transport}"
    chat_id = start_chat(page, url)
    stored = stored_chat(page)
    assert stored is not None and stored["transport"] == transport
    bob = agent.joins(chat_id)
    agent.says(chat_id, bob, "Hello from the agent")
    expect(page.get_by_role("log")).to_contain_text("Hello from the agent")
    page.keyboard.type("Hello from another site")
    page.keyboard.press("Enter")
    agent.sees(chat_id, "Message", "Hello from another site")
    tab.shoot("cross-origin")
