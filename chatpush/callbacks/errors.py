"""The callback errors: each has a GMS name (``BAD_PARAMETER``...) for the ``/genesys/`` paths'
body (``{"exception", "message", "error", "phrase"}``) and a code for the ``/api/v1`` one."""

from __future__ import annotations

from typing import Any

from chatpush.errors import ChatpushError, Code

UNKNOWN_CALLBACK = 113
"""The contract's code for an unknown callback on ``/api/v1`` (404; 113 is also the 403
``MISSING_SCOPE`` code of the key check: the status tells them apart)."""


class CallbackError(ChatpushError):
    gms_error = "BAD_PARAMETER"
    http_status = 400

    def __init__(self, advice: str, code: int = Code.INVALID_PARAMETER, **extra: Any) -> None:
        super().__init__(code, advice)
        self.extra = extra


class BadParameter(CallbackError):
    pass


class InvalidPushKey(CallbackError):
    gms_error = "INVALID_PUSH_KEY"

    def __init__(self, advice: str) -> None:
        super().__init__(advice, Code.INVALID_PUSH_KEY)


class ApiKeyRequired(CallbackError):
    gms_error = "API_KEY_REQUIRED"
    http_status = 403

    def __init__(self, advice: str = "this call needs an X-API-Key") -> None:
        super().__init__(advice, Code.INVALID_API_KEY)


class ServiceNotFound(CallbackError):
    gms_error = "SERVICE_NOT_FOUND"
    http_status = 404

    def __init__(self, name: str) -> None:
        super().__init__(f"no callback service {name[:200]!r}", Code.UNKNOWN_SERVICE)


class CallbackNotFound(CallbackError):
    gms_error = "CALLBACK_NOT_FOUND"
    http_status = 404

    def __init__(self, callback_id: str) -> None:
        super().__init__(f"no callback {callback_id[:64]!r}", UNKNOWN_CALLBACK)


class UnknownAction(CallbackError):
    gms_error = "UNKNOWN_ACTION"
    http_status = 404

    def __init__(self, action: str) -> None:
        super().__init__(f"unknown action {action[:100]!r}")


class IllegalState(CallbackError):
    gms_error = "ILLEGAL_STATE"
    http_status = 409

    def __init__(self, state: str, advice: str) -> None:
        super().__init__(
            f"{advice} (the callback is {state})", Code.CONFLICT, _callback_state=state
        )
        self.state = state


class SlotNotAvailable(CallbackError):
    gms_error = "SLOT_NOT_AVAILABLE"
    http_status = 409

    def __init__(self, advice: str, availability: dict[str, int]) -> None:
        super().__init__(advice, Code.CONFLICT, availability=availability)


class NotImplementedHere(CallbackError):
    gms_error = "NOT_IMPLEMENTED"
    http_status = 501

    def __init__(self, advice: str) -> None:
        super().__init__(advice, Code.NOT_CONFIGURED)


class CommandsByWebhook(CallbackError):
    gms_error = "ILLEGAL_STATE"
    http_status = 409

    def __init__(self) -> None:
        super().__init__(
            "commands go to the contact-centre side's webhook ([callback] cc_webhook_url): "
            "they are not pulled or acknowledged here",
            Code.COMMANDS_BY_WEBHOOK,
        )


class TooManyCallbacks(CallbackError):
    gms_error = "STORAGE_UNAVAILABLE"
    http_status = 503

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"this service holds its most open callbacks ({limit}); retry later",
            Code.STORAGE_UNAVAILABLE,
        )


class SubscriptionNotFound(CallbackError):
    gms_error = "SUBSCRIPTION_NOT_FOUND"
    http_status = 404

    def __init__(self, subscription_id: str) -> None:
        super().__init__(f"no subscription {subscription_id[:64]!r}", UNKNOWN_CALLBACK)


class TooManySubscriptions(CallbackError):
    """A ``[notification]`` limit on subscriptions is reached (docs/callbacks.md §6)."""

    gms_error = "TOO_MANY_SUBSCRIPTIONS"
    http_status = 429

    def __init__(self, advice: str) -> None:
        super().__init__(advice, Code.RATE_LIMITED)


GMS_NAMES_BY_STATUS = {
    400: "BAD_PARAMETER",
    403: "API_KEY_REQUIRED",
    404: "CALLBACK_NOT_FOUND",
    405: "BAD_PARAMETER",
    408: "BAD_PARAMETER",
    409: "ILLEGAL_STATE",
    413: "BODY_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "BAD_PARAMETER",
    501: "NOT_IMPLEMENTED",
    503: "STORAGE_UNAVAILABLE",
}


def gms_body(exc: ChatpushError) -> dict[str, Any]:
    """The §3.7 body of any chatpush error raised on a ``/genesys/1`` callback path."""
    if isinstance(exc, CallbackError):
        name, extra = exc.gms_error, exc.extra
    else:
        name, extra = GMS_NAMES_BY_STATUS.get(exc.http_status, "STORAGE_UNAVAILABLE"), {}
        if exc.errors and exc.errors[0].code == Code.BODY_TOO_LARGE:
            name = "BODY_TOO_LARGE"
    message = exc.errors[0].advice if exc.errors else name
    return {
        "exception": f"chatpush.callback.{name}",
        "message": message,
        "error": name,
        "phrase": name,
        **extra,
    }
