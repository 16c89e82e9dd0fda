"""One exception tree for everything a client can get wrong or a dependency can break.

    ChatpushError                 (carries an HTTP status, a Chat API statusCode and error entries)
    ├── BadRequest                400, statusCode 2: missing or malformed parameters
    ├── Forbidden                 403, statusCode 2: wrong or missing secureKey / API key
    ├── NotFound                  404, statusCode 2: unknown chat, party or service
    ├── ChatAlreadyEnded          409, statusCode 2, chatEnded true: a change to an ended chat
    ├── Conflict                  409, statusCode 2: the request contradicts the chat's state
    │   └── TranscriptFull        409, statusCode 2: the chat holds its most events
    ├── RateLimited               429, statusCode 1: too many requests from one client; retry later
    └── StorageUnavailable        503, statusCode 1: the database cannot be reached; retry

Foreign exceptions (SQLAlchemy, aiohttp) are mapped to these at one boundary, the API edge.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ErrorEntry:
    code: int
    advice: str


# Error codes of the `errors` entries. The numbers are ours; GMS documents none publicly.
class Code:
    MISSING_PARAMETER = 100
    INVALID_PARAMETER = 101
    INVALID_SECURE_KEY = 102
    UNKNOWN_CHAT = 103
    UNKNOWN_SERVICE = 104
    CHAT_ENDED = 105
    BODY_TOO_LARGE = 106
    BAD_ENCODING = 107
    INVALID_PUSH_KEY = 108
    UNKNOWN_PARTY = 109
    INVALID_API_KEY = 110
    CONFLICT = 111
    UNKNOWN_GROUP = 112
    MISSING_SCOPE = 113
    RATE_LIMITED = 114
    TRANSCRIPT_FULL = 115
    BODY_TIMEOUT = 116
    COMMANDS_BY_WEBHOOK = 117
    STORAGE_UNAVAILABLE = 200
    NOT_CONFIGURED = 201


class ChatpushError(Exception):
    http_status = 500
    status_code = 2
    chat_ended = False

    def __init__(self, code: int, advice: str) -> None:
        super().__init__(advice)
        self.errors = [ErrorEntry(code, advice)]


class BadRequest(ChatpushError):
    http_status = 400


class Forbidden(ChatpushError):
    http_status = 403


class NotFound(ChatpushError):
    http_status = 404


class ChatAlreadyEnded(ChatpushError):
    http_status = 409
    chat_ended = True

    def __init__(self, advice: str = "chat has ended") -> None:
        super().__init__(Code.CHAT_ENDED, advice)


class Conflict(ChatpushError):
    http_status = 409


class TranscriptFull(Conflict):
    """The chat holds ``chat.max_events_per_chat`` events: nothing more is added to it."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            Code.TRANSCRIPT_FULL,
            f"this chat holds its most events ({limit}); end it and start a new chat",
        )


class RateLimited(ChatpushError):
    """Too many requests of one kind from one client address; ``retry_after_s`` says when to
    retry (the ``Retry-After`` header over REST)."""

    http_status = 429
    status_code = 1

    def __init__(self, advice: str, retry_after_s: int) -> None:
        super().__init__(Code.RATE_LIMITED, f"{advice}; retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class NotConfigured(ChatpushError):
    """The service lacks a setting this call needs (e.g. ``security.credentials_key``)."""

    http_status = 503
    status_code = 1

    def __init__(self, advice: str) -> None:
        super().__init__(Code.NOT_CONFIGURED, advice)


class StorageUnavailable(ChatpushError):
    http_status = 503
    status_code = 1

    def __init__(self, advice: str = "storage is unavailable, retry later") -> None:
        super().__init__(Code.STORAGE_UNAVAILABLE, advice)
