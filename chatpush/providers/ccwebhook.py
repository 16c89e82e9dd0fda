"""``ccwebhook`` (docs/callbacks.md §4.2): a callback's commands to the contact-centre side,
POSTed to ``[callback] cc_webhook_url``.

It is custom HTTP's send (``providers/customhttp.py``) with the ``[callback]`` settings as its
target: the command's JSON as it is, Standard Webhooks headers (``webhook-id`` = the command's
notification id, the same on every try; ``webhook-signature`` with
``cc_webhook_signing_secret``), ``Authorization`` = ``cc_webhook_authorization``; custom HTTP's
bounded answer, ``Retry-After`` and backoff. One outcome differs: any 2xx acknowledges, and
anything else is temporary (a 401 of a contact-centre side whose key is being changed, a
redirect, a 404 while it is redeployed): the command is tried again until
``command_retention_s``, never dropped at the first refusal.

It sends nothing else: a notification that is not a command of source ``cc_command`` (a chat or
a callback naming this device type) fails permanently, untried. The URL is the operator's, read
from the configuration at each send, never from the row.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Final

from chatpush.clock import Clock
from chatpush.config import CallbackSettings, DeliverySettings
from chatpush.providers.base import Notification, ProviderContext, SendResult, Target
from chatpush.providers.customhttp import CustomHttpProvider
from chatpush.providers.http import HttpClient
from chatpush.providers.registry import register

SOURCE: Final = "cc_command"
"""The delivery platform's source of the commands (key: the callback id)."""
KIND: Final = "command"


@register
class CcWebhookProvider(CustomHttpProvider):
    device_type = "ccwebhook"
    internal = True

    def __init__(
        self,
        settings: DeliverySettings,
        callback: CallbackSettings,
        clock: Clock | None = None,
        http: HttpClient | None = None,
    ) -> None:
        super().__init__(settings, clock, http)
        secret = callback.cc_webhook_signing_secret
        authorization = callback.cc_webhook_authorization
        self._target = (
            None
            if callback.cc_webhook_url is None
            else Target(
                url=callback.cc_webhook_url,
                message=None,
                signing_secret=None if secret is None else secret.get_secret_value(),
                authorization=None if authorization is None else authorization.get_secret_value(),
            )
        )

    @classmethod
    def create(cls, context: ProviderContext) -> CcWebhookProvider:
        settings = context.settings
        return cls(settings.delivery, settings.callback, context.clock, context.http)

    async def send(
        self,
        target: Target,
        notification: Notification,
        *,
        now_s: int,
        node_slot: asyncio.Semaphore | None = None,
    ) -> SendResult:
        """``target`` (the group's) is not used: the ``[callback]`` settings are the target."""
        if notification.source != SOURCE or notification.kind != KIND:
            error = "ccwebhook: only a callback's commands to the contact-centre side"
            return SendResult("failed", 0, error=error, temporary=False)
        if self._target is None:
            # Queued while a webhook was configured; at start they go back to the pull queue
            # (CallbackService.hand_over_commands), so only a race can get here: try later.
            error = "ccwebhook: [callback] cc_webhook_url is not set"
            return SendResult("failed", 0, error=error)
        result = await super().send(self._target, notification, now_s=now_s, node_slot=node_slot)
        if result.outcome == "failed" and not result.temporary:
            return dataclasses.replace(result, temporary=True)  # retried until the retention
        return result
