"""Callback texts in the callback's language (docs/callbacks.md §7.6): pushes on the fake FCM and
the dialogs an app fetches, from ``[texts."<language>"]``, its primary subtag, ``[texts.default]``
and the built-in English, over real HTTP."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from chatpush.api.keys import DISPATCHER
from chatpush.config import Settings
from chatpush.testing import FakeClock
from chatpush.testing.fcm import FakeFcm
from tests.integration._push_support import api
from tests.integration.callback_support import create, event, gms

TEXTS = {
    "default": {"push.CALLBACK_ATTEMPT_FAILED.body": "We missed you; we will call again."},
    "fr": {
        "push.title": "Rappel",
        "push.CALLBACK_ATTEMPT_FAILED.body": "Nous n'avons pas pu vous joindre.",
        "dialog.connect-outbound.text": "Vous allez recevoir l'appel sous peu",
        "dialog.menu.label": "Un agent est disponible",
        "dialog.menu.snooze": "Non, réessayez dans {minutes} minutes",
        "dialog.cancel.text": "Votre rappel est annulé",
    },
    "fr-CA": {"dialog.menu.cancel": "Annuler, c'est réglé"},
}


async def test_french_pushes_and_dialogs_and_fallbacks(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings], clock: FakeClock
) -> None:
    from cryptography.fernet import Fernet

    fcm = await FakeFcm(clock).start()
    try:
        settings = make_settings(
            security={
                "api_keys": ["test-api-key"],
                "credentials_key": Fernet.generate_key().decode(),
            },
            mobile={"fcm_api_url": fcm.base_url, "allowed_hosts": [fcm.base_url]},
            groups={
                "g1": {
                    "default": True,
                    "nodes": ["n1"],
                    "pushEnabled": "fcm",
                    "fcm.title": "Acme callbacks",
                }
            },
            services={"samples_dev": {"_snooze_duration": 300}},
            texts=TEXTS,
        )
        client = await make_client(settings)
        await api(client, "PUT", "/groups/g1/credentials/fcm", json=fcm.credentials())
        # GMS style, fr-CA: fr-CA's table, then fr's, then default, then English.
        dialog = await create(
            client,
            _device_os="gcm",
            _device_notification_id="tok-fr",
            _push_notification_language="fr-CA",
        )
        assert dialog["_text"] == "Vous allez recevoir l'appel sous peu"
        assert dialog["_ok_title"] == "Ok"
        french = dialog["_id"]
        # GMSLibrary style, a language without a table: default, then English; the group title.
        german = (
            await create(
                client,
                push_notification_type="android",
                push_notification_deviceid="tok-de",
                push_notification_language="de-DE",
            )
        )["_id"]
        # GES style, primary subtag only.
        plain_fr = (
            await create(
                client,
                pushNotificationType="fcm",
                pushNotificationDeviceId="tok-fr2",
                pushNotificationLanguage="fr",
            )
        )["_id"]
        for callback_id in (french, german, plain_fr):
            await event(client, callback_id, 1, "dial_done", attempt=1)
        await client.app[DISPATCHER].settle()
        sent = {m["token"]: m for m in fcm.sent}
        assert sent["tok-fr"]["notification"] == {
            "title": "Rappel",
            "body": "Nous n'avons pas pu vous joindre.",
        }
        assert sent["tok-fr2"]["notification"]["body"] == "Nous n'avons pas pu vous joindre."
        assert sent["tok-de"]["notification"] == {
            "title": "Acme callbacks",
            "body": "We missed you; we will call again.",
        }
        payload = json.loads(sent["tok-fr"]["data"]["message"])
        assert (payload["event"], payload["_id"]) == ("CALLBACK_ATTEMPT_FAILED", french)

        path = f"/genesys/1/service/{french}/get-dialog-user-confirmation-provide_code-true"
        menu = await gms(client, "GET", path)
        assert menu["_label"] == "Un agent est disponible"
        group = menu["_content"][0]
        assert group["_group_name"] == "Are you ready?"  # no French given: built-in
        labels = [item["_label"] for item in group["_group_content"]]
        assert labels == [
            "Yes, I'm ready to talk",
            "Non, réessayez dans 5 minutes",
            "Annuler, c'est réglé",  # fr-CA's own, before fr's and the built-in
        ]
        english = await gms(client, "GET", path.replace(french, german))
        assert [i["_label"] for i in english["_content"][0]["_group_content"]][1:] == [
            "No, try again in 5 minutes",
            "Cancel, my problem has been solved",
        ]
        cancelled = await gms(client, "POST", f"/genesys/1/service/{french}/cancel")
        assert cancelled["_text"] == "Votre rappel est annulé"
        cancelled = await gms(client, "POST", f"/genesys/1/service/{german}/cancel")
        assert cancelled["_text"] == "Your callback has been cancelled"
    finally:
        await fcm.close()
