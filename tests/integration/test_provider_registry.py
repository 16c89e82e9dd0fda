"""A provider is one module and one registration line (docs/providers.md).

The ``Pager`` provider below is the whole of a new device type: a subclass of the shipped
``RecordingProvider`` with a device type, an alias and settings of its own, registered by the
``@register`` line. With nothing else changed, the configuration accepts it in ``pushEnabled``,
its ``[provider_options.pager]`` and its per-group ``"pager.<key>"`` keys; Request Chat accepts
it (and its alias) as ``GCTI_GMS_PushDeviceType``; the app makes it, starts it, and the
dispatcher pushes a chat's triggers to it, resent and acknowledged like any other.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from importlib import resources
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pydantic import BaseModel, ConfigDict

from chatpush import device_types
from chatpush.api.keys import DISPATCHER
from chatpush.config import ConfigError, Settings
from chatpush.providers import registry
from chatpush.providers.base import Provider, ProviderContext, SendResult
from chatpush.testing import FakeClock, RecordingProvider
from tests.conftest import ChatDriver
from tests.integration._push_support import api, push_form, settle, trail

Client = TestClient[web.Request, web.Application]
MakeSettings = Callable[..., Settings]
MakeClient = Callable[[Settings], Any]


class PagerOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    prefix: str = "page"


class Pager(RecordingProvider):
    """A new device type, ``pager`` (alias ``beeper``), with options of its own."""

    device_type = "pager"
    aliases = ("beeper",)
    settings_model = PagerOptions  # type: ignore[assignment]

    @classmethod
    def create(cls, context: ProviderContext) -> Pager:
        pager = cls()
        pager.prefix = cls.options(context.settings).prefix  # type: ignore[union-attr]
        return pager


@pytest.fixture
def pager() -> Iterator[type[Pager]]:
    registry.register(Pager)  # the one registration line
    yield Pager
    registry.unregister(Pager)


def pager_settings(make_settings: MakeSettings, **overrides: Any) -> Settings:
    overrides.setdefault("provider_options", {"pager": {"prefix": "PAGE"}})
    return make_settings(
        groups={
            "g1": {
                "default": True,
                "nodes": ["n1"],
                "pushEnabled": "customhttp,beeper",
                "pager.channel": "ops",
                "providers": {"night": {"pager.channel": "night-shift"}},
            }
        },
        services={"default": {"flex-push-resend-delay": 15, "flex-push-resend-attempts": 2}},
        **overrides,
    )


async def test_a_registered_provider_gets_a_chat_end_to_end(
    pager: type[Pager], make_settings: MakeSettings, make_client: MakeClient, clock: FakeClock
) -> None:
    settings = pager_settings(make_settings)
    assert settings.groups["g1"].push_enabled == ("customhttp", "pager")
    client: Client = await make_client(settings)
    made = client.app[DISPATCHER].providers["pager"]
    assert isinstance(made, Pager) and made.started and made.prefix == "PAGE"

    chat = ChatDriver(client)
    await chat.request_chat(**push_form("pager-7", PushDeviceType="Beeper", PushResend="true"))
    await chat.agent_joins()
    await settle(client)
    [first] = made.sent
    sent = first.notification
    assert (sent.source, sent.key, sent.kind) == ("chat", chat.chat_id, "trigger")
    assert (sent.position, sent.attempt) == (2, 0)
    assert first.body["deviceId"] == "pager-7"
    assert first.target.options == {"pager.channel": "ops"}
    user_data = first.body["message"]["messages"][0]["userData"]
    assert (user_data["notify-position"], user_data["notify-attempt"]) == ("2", "0")

    # Resent on the timetable, then acknowledged by a refresh, like any device type.
    clock.advance(15)
    await settle(client)
    assert len(made.sent) == 2
    resent = made.sent[1].notification
    assert (resent.kind, resent.position, resent.attempt) == ("trigger", 2, 1)
    assert resent.message_id != sent.message_id
    await chat.op("refresh", transcriptPosition="2")
    clock.advance(600)
    await settle(client)
    assert len(made.sent) == 2
    rows = await trail(client, chat.chat_id)
    assert [(row["deviceType"], row["outcome"]) for row in rows] == [("pager", "sent")] * 2
    sub = await api(client, "GET", f"/chats/{chat.chat_id}/subscription")
    assert (sub["deviceType"], sub["status"]) == ("pager", "active")

    # A named provider's keys override the group's for that provider's subscriptions.
    night = ChatDriver(client)
    await night.request_chat(**push_form("pager-8", PushDeviceType="pager", PushProvider="night"))
    await night.agent_joins()
    await settle(client)
    assert made.sent[-1].target.options == {"pager.channel": "night-shift"}


async def test_a_registered_providers_outcomes_are_honoured(
    pager: type[Pager], make_settings: MakeSettings, make_client: MakeClient
) -> None:
    client: Client = await make_client(pager_settings(make_settings))
    made = client.app[DISPATCHER].providers["pager"]
    assert isinstance(made, Pager)
    made.answers.append(SendResult("failed", 3, error="pager network refused", temporary=False))
    chat = ChatDriver(client)
    await chat.request_chat(**push_form("pager-9", PushDeviceType="pager", PushResend="true"))
    await chat.agent_joins()
    await settle(client)
    [row] = await trail(client, chat.chat_id)
    assert (row["outcome"], row["failure"], row["error"]) == (
        "failed",
        "permanent",
        "pager network refused",
    )
    assert (await api(client, "GET", f"/chats/{chat.chat_id}/subscription"))["status"] == "failed"


def test_without_its_registration_the_device_type_is_unknown(make_settings: MakeSettings) -> None:
    with pytest.raises(ConfigError, match="unknown device type 'beeper'"):
        pager_settings(make_settings)
    assert device_types.canonical("pager") is None


def test_its_settings_are_checked_by_its_own_model(
    pager: type[Pager], make_settings: MakeSettings
) -> None:
    settings = pager_settings(make_settings, provider_options={"pager": {"prefx": "typo"}})
    context = ProviderContext(settings, FakeClock(), None, None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"provider_options\.pager\.prefx: unknown key"):
        registry.create_all(context)
    with pytest.raises(ConfigError, match="provider_options: unknown device type 'pagr'"):
        make_settings(provider_options={"pagr": {}})


def test_names_are_checked_at_registration(pager: type[Pager]) -> None:
    class Impostor(RecordingProvider):
        device_type = "impostor"
        aliases = ("beeper",)

    with pytest.raises(ValueError, match="'beeper' is taken by 'pager'"):
        registry.register(Impostor)
    assert device_types.canonical("impostor") is None

    class Shouting(RecordingProvider):
        device_type = "Pager2"

    with pytest.raises(ValueError, match="lower case"):
        registry.register(Shouting)

    class Keeper(RecordingProvider):
        device_type = "keeper"
        credentials_kind = "keeper"

    with pytest.raises(
        ValueError,
        match="lacks read_credentials, test_credentials, credential_fields",
    ):
        registry.register(Keeper)
    assert device_types.canonical("keeper") is None


def test_the_built_in_device_types_come_from_the_registry() -> None:
    classes = registry.provider_classes()
    assert list(classes) == ["comet", "customhttp", "fcm", "httpcb", "ios"]
    assert all(issubclass(cls, Provider) for cls in classes.values())
    assert device_types.aliases() == {"android": "fcm", "gcm": "fcm", "apple": "ios"}
    assert device_types.describe() == "comet, customhttp, fcm (android, gcm), httpcb, ios (apple)"
    assert list(registry.credentials_classes()) == ["fcm", "apns"]


def test_the_openapi_documents_enums_are_the_registrys() -> None:
    document = json.loads(
        resources.files("chatpush.api").joinpath("openapi.json").read_text(encoding="utf-8")
    )
    enums: list[list[str]] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("enum"), list):
                enums.append(node["enum"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    device_type_enums = [enum for enum in enums if "customhttp" in enum]
    kind_enums = [enum for enum in enums if "apns" in enum]
    assert device_type_enums and kind_enums
    assert all(set(enum) == set(device_types.known()) for enum in device_type_enums)
    assert all(set(enum) == set(registry.credentials_classes()) for enum in kind_enums)
