"""Bad input to Chat API v2: a clear 4xx with an `errors` body, never a 500, and nothing written.

"Nothing written" is checked from outside: the chat-server side API shows the whole chat (summary
with lastIndex, clientPosition and lastClientRequestAt, parties, transcript) unchanged, and a failed
Request Chat leaves the chat list empty. The fake clock moves before each bad request, so even a
"touch" of the chat would show.

Many cases run inside one test (a fresh app and database per test is the slow part); `Cases`
reports every failing case by name, not just the first.
"""

from __future__ import annotations

import gzip
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from chatpush.config import Settings
from chatpush.testing import FakeClock
from tests.conftest import API_KEY, ChatDriver

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[Settings], Any]

FORM = "application/x-www-form-urlencoded"
KEY = b"@KEY@"  # replaced by the chat's real secure key
LONG = 16385  # one more than the default chat.max_message_chars
OPERATIONS = [
    "refresh",
    "send",
    "startTyping",
    "stopTyping",
    "disconnect",
    "pushUrl",
    "updateNickname",
    "customNotice",
    "updateData",
]
CHANGING_OPERATIONS = [op for op in OPERATIONS if op not in ("refresh", "disconnect")]
# Parameters that would succeed, so that only the part under test is wrong.
GOOD_PARAMS = {
    "refresh": {},
    "send": {"message": "hi"},
    "startTyping": {"message": "hi"},
    "stopTyping": {},
    "disconnect": {},
    "pushUrl": {"pushUrl": "https://example.com/"},
    "updateNickname": {"nickname": "Annie"},
    "customNotice": {"message": "notice"},
    "updateData": {"userData[k]": "v"},
}
BAD_POSITIONS = [
    "abc",
    "-1",
    "1.5",
    "1e3",
    " 1",
    "1 ",
    "+1",
    "0x10",
    "1,2",
    "NaN",
    "\uff11",  # a full-width digit one
    "\u00b2",  # superscript two: str.isdigit() says yes
    "2147483648",
    "99999999999999999999999999999999",
]


class Cases:
    """Many cases in one test: every failing case is reported by name at the end."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    @contextmanager
    def case(self, name: str) -> Iterator[None]:
        try:
            yield
        except AssertionError as exc:
            self.failures.append(f"[{name}] " + " | ".join(str(exc).splitlines()[:3]))

    def check(self) -> None:
        assert not self.failures, f"{len(self.failures)} failing cases:\n" + "\n".join(
            self.failures
        )


async def assert_rejected(
    response: aiohttp.ClientResponse,
    status: int,
    *,
    chat_ended: bool = False,
    secret: str | None = None,
) -> dict[str, Any]:
    """A clear 4xx: JSON with statusCode 2 and `errors` [{code: int, advice: str}], no events."""
    text = await response.text()
    assert response.status == status, f"{response.status}: {text[:300]}"
    assert response.content_type == "application/json", text[:300]
    body: dict[str, Any] = await response.json()
    assert body["statusCode"] == 2, body
    assert body["chatEnded"] is chat_ended, body
    assert body.get("messages", []) == [], body
    errors = body["errors"]
    assert isinstance(errors, list) and errors, body
    for entry in errors:
        assert type(entry["code"]) is int, entry
        assert isinstance(entry["advice"], str) and entry["advice"].strip(), entry
    if secret is not None:
        assert secret not in text, "an error answer must not reveal the chat's secure key"
    return body


async def snapshot(chat: ChatDriver) -> dict[str, Any]:
    return await chat.api("GET", f"/chats/{chat.chat_id}")


async def listed_chats(client: Client) -> list[str]:
    response = await client.get("/api/v1/chats", headers={"X-API-Key": API_KEY})
    assert response.status == 200
    return [chat["chatId"] for chat in (await response.json())["chats"]]


def raw_multipart(*parts: bytes, boundary: bytes = b"xx") -> tuple[str, bytes]:
    body = b"".join(b"--" + boundary + b"\r\n" + part + b"\r\n" for part in parts)
    return f"multipart/form-data; boundary={boundary.decode()}", body + b"--" + boundary + b"--\r\n"


def field(name: str, value: bytes, *, headers: bytes = b"") -> bytes:
    disposition = f'Content-Disposition: form-data; name="{name}"\r\n'.encode()
    return disposition + headers + b"\r\n" + value


def mp_case(name: str, *parts: bytes, status: int = 400) -> tuple[str, str, bytes, int]:
    content_type, body = raw_multipart(*parts)
    return (name, content_type, body, status)


async def post_raw(
    client: Client, path: str, body: bytes, content_type: str | None = FORM, **headers: str
) -> aiohttp.ClientResponse:
    if content_type is not None:
        headers["Content-Type"] = content_type
    return await client.post(path, data=body, headers=headers)


def op_path(chat: ChatDriver, operation: str) -> str:
    return f"/genesys/2/chat/{chat.service}/{chat.chat_id}/{operation}"


@pytest.fixture
async def ready(chat: ChatDriver, clock: FakeClock) -> ChatDriver:
    """A chat with some history, whose clock moves on so that any write would show."""
    await chat.request_chat(nickname="Ann", **{"userData[a]": "1"})
    agent = await chat.agent_joins()
    await chat.agent_says(agent, "Hello Ann")
    await chat.op("send", message="Hi")
    clock.advance(60)
    return chat


# -- Request Chat ---------------------------------------------------------------------------------

Case = tuple[str, str | None, bytes, int]  # name, Content-Type, body, expected status
REQUEST_CHAT_CASES: dict[str, list[Case]] = {
    "missing parameters": [
        ("empty body", FORM, b"", 400),
        ("no content type, empty body", None, b"", 400),
        ("nickname missing", FORM, b"subject=Help&emailAddress=a%40b.c", 400),
        ("nickname empty", FORM, b"nickname=", 400),
        ("nickname as a bare key", FORM, b"nickname", 400),
        ("all names empty", FORM, b"nickname=&firstName=&lastName=", 400),
        ("firstName alone", FORM, b"firstName=Ann", 400),
        ("lastName alone", FORM, b"lastName=Lee&nickname=", 400),
        ("only separators", FORM, b"&&==&%%%&", 400),
        ("nickname in userData only", FORM, b"userData[nickname]=Ann", 400),
    ],
    "values too long": [
        ("nickname", FORM, b"nickname=" + b"n" * 129, 400),
        ("first and last name", FORM, b"firstName=" + b"f" * 64 + b"&lastName=" + b"l" * 64, 400),
        ("subject", FORM, b"nickname=Ann&subject=" + b"s" * LONG, 400),
        (
            "too many userData keys",
            FORM,
            b"nickname=Ann&" + b"&".join(b"userData[k%d]=v" % n for n in range(101)),
            400,
        ),
        ("userData value", FORM, b"nickname=Ann&userData[k]=" + b"v" * 4097, 400),
        ("userData key", FORM, b"nickname=Ann&userData[" + b"k" * 257 + b"]=v", 400),
    ],
    "encoding": [
        ("raw non-UTF-8 byte", FORM, b"nickname=Ann\xff", 400),
        ("raw Latin-1 text", FORM, b"nickname=Zo\xeb", 400),
        ("percent-encoded %FF", FORM, b"nickname=Ann%FF", 400),
        ("percent-encoded %FF in a key", FORM, b"nickname=Ann&%FF=1", 400),
        ("percent-encoded surrogate", FORM, b"nickname=%ED%A0%80", 400),
        ("overlong UTF-8", FORM, b"nickname=%C0%AE", 400),
        ("raw NUL", FORM, b"nickname=A\x00nn", 400),
        ("percent-encoded NUL", FORM, b"nickname=A%00nn", 400),
        ("NUL in a key", FORM, b"nick%00name=Ann&nickname=Ann", 400),
        ("NUL in userData", FORM, b"nickname=Ann&userData[k]=v%00", 400),
        ("NUL in subject", FORM, b"nickname=Ann&subject=%00", 400),
    ],
    "content type": [
        ("JSON", "application/json", b'{"nickname": "Ann"}', 400),
        ("XML", "application/xml", b"<nickname>Ann</nickname>", 400),
    ],
    "multipart": [
        ("without boundary", "multipart/form-data", b"nickname=Ann", 400),
        ("garbage", "multipart/form-data; boundary=xx", b"garbage\r\n--xx\r\n", 400),
        (
            "truncated",
            "multipart/form-data; boundary=xx",
            b'--xx\r\nContent-Disposition: form-data; name="nickname"\r\n\r\nAnn',
            400,
        ),
        mp_case("nickname missing", field("subject", b"Help")),
        mp_case("field without a name", b"Content-Disposition: form-data\r\n\r\nAnn"),
        mp_case("non-UTF-8", field("nickname", b"\xff\xfeAnn")),
        mp_case("NUL", field("nickname", b"A\x00nn")),
        mp_case("NUL in userData", field("nickname", b"Ann"), field("userData[k]", b"v\x00")),
        mp_case(
            "unknown charset",
            field("nickname", b"Ann", headers=b"Content-Type: text/plain; charset=no-such\r\n"),
        ),
        mp_case("nickname too long", field("nickname", b"n" * 129)),
    ],
    "size": [
        ("body over max_body_bytes", FORM, b"nickname=Ann&pad=" + b"p" * 70_000, 413),
        mp_case(
            "multipart over max_body_bytes",
            field("nickname", b"Ann"),
            field("p", b"p" * 70_000),
            status=413,
        ),
    ],
}


@pytest.mark.parametrize("group", list(REQUEST_CHAT_CASES))
async def test_a_bad_request_chat_is_refused_and_creates_no_chat(
    client: Client, group: str
) -> None:
    cases = Cases()
    for name, content_type, body, status in REQUEST_CHAT_CASES[group]:
        with cases.case(name):
            response = await post_raw(client, "/genesys/2/chat/support", body, content_type)
            await assert_rejected(response, status)
            assert await listed_chats(client) == [], "a chat was created"
    cases.check()


async def test_a_body_that_does_not_decode_is_refused(client: Client) -> None:
    cases = Cases()
    for name, encoding, body, status in [
        ("says gzip, is not", "gzip", b"nickname=Ann", 400),
        ("says deflate, is not", "deflate", b"nickname=Ann", 400),
        (
            "inflates past the limit",
            "gzip",
            gzip.compress(b"nickname=Ann&p=" + b"p" * 200_000),
            413,
        ),
    ]:
        with cases.case(name):
            response = await post_raw(
                client, "/genesys/2/chat/support", body, FORM, **{"Content-Encoding": encoding}
            )
            await assert_rejected(response, status)
            # The next request (possibly on a new connection) works and sees no chat.
            assert await listed_chats(client) == []
    cases.check()

    valid = await post_raw(
        client,
        "/genesys/2/chat/support",
        gzip.compress(b"nickname=Ann"),
        FORM,
        **{"Content-Encoding": "gzip"},
    )
    assert valid.status == 200
    assert (await valid.json())["messages"][0]["from"]["nickname"] == "Ann"


async def test_multipart_request_chat_refuses_a_nul_character(client: Client) -> None:
    with aiohttp.MultipartWriter("form-data") as writer:
        for name, value in [("nickname", "Ann"), ("subject", "a\x00b")]:
            writer.append(value).set_content_disposition("form-data", name=name)

    response = await client.post("/genesys/2/chat/support", data=writer)

    await assert_rejected(response, 400)
    assert await listed_chats(client) == []


async def test_another_method_than_post_is_a_405_that_writes_nothing(
    client: Client, ready: ChatDriver, clock: FakeClock
) -> None:
    cases = Cases()
    paths = ["/genesys/2/chat/support"] + [
        op_path(ready, operation) for operation in ("send", "refresh", "disconnect", "updateData")
    ]
    for path in paths:
        for method in ("GET", "PUT", "DELETE", "PATCH"):
            with cases.case(f"{method} {path}"):
                clock.advance(1)
                before = await snapshot(ready)
                response = await client.request(
                    method,
                    path,
                    params={"secureKey": ready.secure_key, "message": "hi", "nickname": "Eve"},
                    data={"secureKey": ready.secure_key, "message": "hi", "nickname": "Eve"},
                )
                await assert_rejected(response, 405, secret=ready.secure_key)
                assert "POST" in response.headers.get("Allow", ""), "405 without Allow: POST"
                assert await snapshot(ready) == before
                assert await listed_chats(client) == [ready.chat_id]
    cases.check()


async def test_max_body_bytes_is_the_exact_limit(
    make_client: MakeClient, make_settings: Callable[..., Settings]
) -> None:
    client: Client = await make_client(make_settings(server={"max_body_bytes": 1024}))
    prefix = b"nickname=Ann&pad="

    too_big = await post_raw(
        client, "/genesys/2/chat/support", prefix + b"p" * (1025 - len(prefix))
    )
    body = await assert_rejected(too_big, 413)
    assert "1024" in body["errors"][0]["advice"]
    assert await listed_chats(client) == []

    fits = await post_raw(client, "/genesys/2/chat/support", prefix + b"p" * (1024 - len(prefix)))
    assert fits.status == 200
    assert len(await listed_chats(client)) == 1


# -- Operations on a chat: bad parameters ---------------------------------------------------------

OpCase = tuple[str, str | None, bytes, int]  # name, Content-Type, body with @KEY@, status
_KEY = b"secureKey=" + KEY
OP_CASES: dict[str, list[OpCase]] = {
    "send": [
        ("message missing", FORM, _KEY, 400),
        ("message missing, others given", FORM, _KEY + b"&messageType=text&msg=hi", 400),
        ("message too long", FORM, _KEY + b"&message=" + b"m" * LONG, 400),
        ("messageType too long", FORM, _KEY + b"&message=hi&messageType=" + b"t" * 129, 400),
        ("raw non-UTF-8", FORM, _KEY + b"&message=hi\xff", 400),
        ("percent-encoded %FF", FORM, _KEY + b"&message=hi%FF", 400),
        ("raw NUL", FORM, _KEY + b"&message=h\x00i", 400),
        ("percent-encoded NUL", FORM, _KEY + b"&message=h%00i", 400),
        ("NUL in messageType", FORM, _KEY + b"&message=hi&messageType=%00", 400),
        ("JSON body", "application/json", b'{"secureKey": "@KEY@", "message": "hi"}', 400),
        ("body too large", FORM, _KEY + b"&message=hi&pad=" + b"p" * 70_000, 413),
        (
            "NUL in multipart",
            *raw_multipart(field("secureKey", KEY), field("message", b"h\x00i")),
            400,
        ),
    ],
    "startTyping": [("preview too long", FORM, _KEY + b"&message=" + b"m" * LONG, 400)],
    "stopTyping": [("text too long", FORM, _KEY + b"&message=" + b"m" * LONG, 400)],
    "pushUrl": [
        ("pushUrl missing", FORM, _KEY, 400),
        ("pushUrl empty", FORM, _KEY + b"&pushUrl=", 400),
        ("pushUrl too long", FORM, _KEY + b"&pushUrl=" + b"u" * LONG, 400),
        ("pushUrl with NUL", FORM, _KEY + b"&pushUrl=https://x/%00", 400),
    ],
    "updateNickname": [
        ("nickname missing", FORM, _KEY, 400),
        ("nickname empty", FORM, _KEY + b"&nickname=", 400),
        ("nickname too long", FORM, _KEY + b"&nickname=" + b"n" * 129, 400),
        ("nickname non-UTF-8", FORM, _KEY + b"&nickname=%FF", 400),
    ],
    "customNotice": [
        ("message missing", FORM, _KEY, 400),
        ("message too long", FORM, _KEY + b"&message=" + b"m" * LONG, 400),
    ],
    "updateData": [
        ("no userData", FORM, _KEY, 400),
        ("userData without a key", FORM, _KEY + b"&userData[]=v&userData=v", 400),
        ("value too long", FORM, _KEY + b"&userData[k]=" + b"v" * 4097, 400),
        ("key too long", FORM, _KEY + b"&userData[" + b"k" * 257 + b"]=v", 400),
        (
            "merged past max keys",  # the chat has one key already: 1 + 100 > 100
            FORM,
            _KEY + b"&" + b"&".join(b"userData[k%d]=v" % n for n in range(100)),
            400,
        ),
        ("NUL in a value", FORM, _KEY + b"&userData[k]=%00", 400),
    ],
    "refresh": [],
}
for _position in BAD_POSITIONS:
    for _operation in ("refresh", "send"):
        OP_CASES[_operation].append(
            (
                f"transcriptPosition {_position!r}",
                FORM,
                _KEY + b"&message=hi&transcriptPosition=" + quote(_position, safe="").encode(),
                400,
            )
        )


@pytest.mark.parametrize("operation", list(OP_CASES))
async def test_bad_parameters_are_refused_and_write_nothing(
    client: Client, ready: ChatDriver, clock: FakeClock, operation: str
) -> None:
    cases = Cases()
    for name, content_type, body, status in OP_CASES[operation]:
        with cases.case(name):
            clock.advance(1)
            before = await snapshot(ready)
            response = await post_raw(
                client,
                op_path(ready, operation),
                body.replace(KEY, ready.secure_key.encode()),
                content_type,
            )
            await assert_rejected(response, status)
            assert await snapshot(ready) == before, "the chat changed"
    cases.check()


async def test_max_message_chars_counts_characters_not_bytes(
    make_client: MakeClient, make_settings: Callable[..., Settings], clock: FakeClock
) -> None:
    client: Client = await make_client(make_settings(chat={"max_message_chars": 10}))
    chat = ChatDriver(client)
    await chat.request_chat()

    await chat.op("send", message="é" * 10)
    clock.advance(1)
    before = await snapshot(chat)
    response = await client.post(
        op_path(chat, "send"), data={"secureKey": chat.secure_key, "message": "é" * 11}
    )

    await assert_rejected(response, 400)
    assert await snapshot(chat) == before
    assert before["transcript"][-1]["text"] == "é" * 10


async def test_transcript_position_edges_that_are_valid(ready: ChatDriver) -> None:
    top = await ready.op("refresh", transcriptPosition="2147483647")
    assert top["messages"] == []
    zero = await ready.op("refresh", transcriptPosition="00")
    assert zero["messages"] == []
    empty = await ready.op("refresh", transcriptPosition="")  # as if absent: everything
    assert [m["index"] for m in empty["messages"]] == [1, 2, 3, 4]


# -- Identity: secureKey, chat, operation, path ---------------------------------------------------


async def test_a_missing_or_wrong_secure_key_is_a_403_and_writes_nothing(
    client: Client, ready: ChatDriver, clock: FakeClock
) -> None:
    other = ChatDriver(client)
    await other.request_chat(nickname="Eve")
    real = ready.secure_key
    wrong_keys: dict[str, str | None] = {
        "missing": None,
        "empty": "",
        "random": secrets.token_hex(16),
        "upper case": real.upper(),
        "one short": real[:-1],
        "one more": real + "0",
        "leading space": " " + real,
        "half": real[:16],
        "non-ASCII": "é" * 32,
        "another chat's": other.secure_key,
    }
    cases = Cases()
    for operation in OPERATIONS:
        for label, wrong in wrong_keys.items():
            with cases.case(f"{operation}, {label} key"):
                clock.advance(1)
                before = await snapshot(ready)
                form = dict(GOOD_PARAMS[operation])
                if wrong is not None:
                    form["secureKey"] = wrong
                response = await client.post(op_path(ready, operation), data=form)
                await assert_rejected(response, 403, secret=real)
                assert await snapshot(ready) == before, "the chat changed"
    cases.check()


async def test_an_unknown_chat_is_a_404(client: Client, ready: ChatDriver) -> None:
    before = await snapshot(ready)
    unknown = [
        "0000000000000000",
        ready.chat_id.lower(),
        ready.chat_id + "0",
        ready.chat_id[:-1],
        "%FF",
        "%00",
        "x" * 300,
        "%C3%BC",
    ]
    cases = Cases()
    for operation in OPERATIONS:
        for chat_id in unknown:
            with cases.case(f"{operation} {chat_id[:20]}"):
                response = await client.post(
                    f"/genesys/2/chat/support/{chat_id}/{operation}",
                    data={"secureKey": ready.secure_key, **GOOD_PARAMS[operation]},
                )
                await assert_rejected(response, 404, secret=ready.secure_key)
    cases.check()
    assert await snapshot(ready) == before
    assert await listed_chats(client) == [ready.chat_id]


async def test_an_unknown_operation_is_a_404(client: Client, ready: ChatDriver) -> None:
    before = await snapshot(ready)
    cases = Cases()
    for operation in [
        "sendMessage",
        "Send",
        "REFRESH",
        "requestChat",
        "delete",
        "refresh.json",
        "send%00",
        "%FF",
        "%20send",
    ]:
        with cases.case(operation):
            response = await client.post(
                op_path(ready, operation), data={"secureKey": ready.secure_key, "message": "hi"}
            )
            await assert_rejected(response, 404, secret=ready.secure_key)
    cases.check()
    assert await snapshot(ready) == before


async def test_a_path_outside_the_api_is_a_404(client: Client, ready: ChatDriver) -> None:
    before = await snapshot(ready)
    cases = Cases()
    for path in [
        "/genesys/2/chat/support/{id}",
        "/genesys/2/chat/support/{id}/send/extra",
        "/genesys/2/chat/support//send",
        "/genesys/2/chat//{id}/send",
        "/genesys/2/chats/support/{id}/send",
        "/genesys/1/chat/support/{id}/send",
    ]:
        with cases.case(path):
            response = await client.post(
                path.format(id=ready.chat_id),
                data={"secureKey": ready.secure_key, "message": "hi"},
            )
            assert response.status == 404
            body = await response.json()
            assert [type(entry["code"]) for entry in body["errors"]] == [int]
    cases.check()
    assert await snapshot(ready) == before


# -- Ended chats ----------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["disconnect", "agent side end"])
async def test_changes_to_an_ended_chat_are_409_and_write_nothing(
    client: Client, ready: ChatDriver, clock: FakeClock, how: str
) -> None:
    if how == "disconnect":
        await ready.op("disconnect")
    else:
        await ready.api("POST", f"/chats/{ready.chat_id}/end")
    cases = Cases()
    for operation in CHANGING_OPERATIONS:
        with cases.case(operation):
            clock.advance(1)
            before = await snapshot(ready)
            response = await client.post(
                op_path(ready, operation),
                data={"secureKey": ready.secure_key, **GOOD_PARAMS[operation]},
            )
            body = await assert_rejected(response, 409, chat_ended=True)
            assert body["errors"][0]["code"] == 105, body
            assert await snapshot(ready) == before, "the chat changed"
    cases.check()


async def test_bad_input_to_an_ended_chat_is_still_refused_without_writing(
    client: Client, ready: ChatDriver, clock: FakeClock
) -> None:
    await ready.op("disconnect")
    clock.advance(60)
    before = await snapshot(ready)

    for position in ("abc", "-1"):
        response = await client.post(
            op_path(ready, "refresh"),
            data={"secureKey": ready.secure_key, "transcriptPosition": position},
        )
        await assert_rejected(response, 400)
    response = await client.post(op_path(ready, "disconnect"), data={"secureKey": "wrong"})
    await assert_rejected(response, 403, secret=ready.secure_key)

    assert await snapshot(ready) == before


async def test_odd_service_names_emails_and_blank_nicknames_are_refused(
    client: TestClient[web.Request, web.Application],
) -> None:
    cases = [
        ("/genesys/2/chat/%00", {"nickname": "Ann"}, 404),
        ("/genesys/2/chat/" + "s" * 201, {"nickname": "Ann"}, 404),
        ("/genesys/2/chat/support", {"nickname": "Ann", "emailAddress": "a" * 321}, 400),
        ("/genesys/2/chat/support", {"nickname": "   "}, 400),
    ]
    for path, form, status in cases:
        response = await client.post(path, data=form)
        body = await response.json()
        assert response.status == status, (path, body)
        assert body["statusCode"] == 2 and body["errors"], body
    listed = await client.get("/api/v1/chats", headers={"X-API-Key": API_KEY})
    assert (await listed.json())["chats"] == []
