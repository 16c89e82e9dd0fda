"""Reading Chat API v2 forms strictly: bounded size, UTF-8 only, first value of a repeated key."""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import parse_qsl

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from chatpush.errors import BadRequest, ChatpushError, Code

_USER_DATA_KEY = re.compile(r"^userData\[(.+)\]$", re.DOTALL)
MAX_POSITION = 2**31 - 1


class BodyTooLarge(ChatpushError):
    http_status = 413


class Form:
    """The parameters of one request. Unknown parameters are kept but nobody asks for them."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._values: dict[str, str] = {}
        self.user_data: dict[str, str] = {}
        for key, value in pairs:
            match = _USER_DATA_KEY.match(key)
            if match is not None:
                self.user_data.setdefault(match.group(1), value)
            else:
                self._values.setdefault(key, value)

    def get(self, name: str) -> str | None:
        return self._values.get(name)

    def position(self) -> int | None:
        """``transcriptPosition``: absent is None; otherwise an integer >= 0 or a 400."""
        raw = self._values.get("transcriptPosition")
        if raw is None or raw == "":
            return None
        # At most 10 digits once leading zeros are gone: int() of more than 4,300 digits is a
        # ValueError (Python's int_max_str_digits), not a number to compare.
        digits = raw.lstrip("0") or "0"
        if (
            not (raw.isascii() and raw.isdigit())
            or len(digits) > len(str(MAX_POSITION))
            or int(digits) > MAX_POSITION
        ):
            raise BadRequest(
                Code.INVALID_PARAMETER,
                f"transcriptPosition must be an integer from 0 to {MAX_POSITION}, got {raw[:40]!r}",
            )
        return int(digits)

    @property
    def values(self) -> Mapping[str, str]:
        return self._values


async def read_form(request: web.Request) -> Form:
    content_type = request.content_type
    try:
        if content_type == "multipart/form-data":
            try:
                posted = await request.post()
            except RuntimeError:
                # aiohttp's answer to a part in an unknown Content-Transfer-Encoding (an empty
                # one too).
                raise BadRequest(
                    Code.BAD_ENCODING, "a multipart/form-data part has an unknown encoding"
                ) from None
            pairs = [(key, value) for key, value in posted.items() if isinstance(value, str)]
            return _checked(pairs)
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        if content_type == "multipart/form-data" and (
            request.content.total_bytes <= request.client_max_size
        ):
            # aiohttp also refuses a multipart form of more than its client_max_fields (1,000)
            # fields, with the same exception: not a body too large, say what it is.
            raise BadRequest(
                Code.INVALID_PARAMETER, "multipart/form-data body has too many fields"
            ) from None
        raise BodyTooLarge(
            Code.BODY_TOO_LARGE, f"request body is larger than {request.client_max_size} bytes"
        ) from None
    # UnicodeDecodeError: a multipart value is not in its charset; LookupError: a multipart part
    # names an unknown charset. Their messages name a byte or a charset, so they are passed on.
    except (UnicodeDecodeError, LookupError) as exc:
        raise BadRequest(Code.BAD_ENCODING, f"malformed form body: {exc}") from None
    # RequestPayloadError: the body does not decode as its Content-Encoding says (not gzip, not
    # deflate); ValueError: multipart that does not parse (no or a wrong boundary, a part without
    # a name); HttpProcessingError: a part's headers do not parse (a control character in a
    # name). Their messages may quote the body, secure key included: not passed on.
    except web.RequestPayloadError:
        raise BadRequest(
            Code.BAD_ENCODING, "the body does not decode as its Content-Encoding says"
        ) from None
    except (ValueError, HttpProcessingError):
        raise BadRequest(Code.BAD_ENCODING, "malformed multipart/form-data body") from None
    # text/plain: old browser widgets post their forms through XDomainRequest, which cannot set
    # a content type; the body is still urlencoded.
    if content_type not in (
        "application/x-www-form-urlencoded",
        "application/octet-stream",
        "text/plain",
        "",
    ):
        raise BadRequest(
            Code.INVALID_PARAMETER,
            "body must be application/x-www-form-urlencoded or multipart/form-data",
        )
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise BadRequest(Code.BAD_ENCODING, "form body is not valid UTF-8") from None
    except ValueError as exc:
        raise BadRequest(Code.BAD_ENCODING, f"malformed form body: {exc}") from None
    return _checked(pairs)


def _checked(pairs: list[tuple[str, str]]) -> Form:
    for key, value in pairs:
        if "\x00" in key or "\x00" in value:
            raise BadRequest(Code.BAD_ENCODING, "form values must not contain NUL characters")
    return Form(pairs)
