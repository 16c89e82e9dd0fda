"""Hypothesis-generated forms against Request Chat and every /{chatId}/{operation} of Chat API v2.

Each example posts one request built from:

- parameters: the operation's own (with values at and around every limit), ``userData[...]``
  variants (push keys included), junk keys, and repeated keys (the first value wins);
- values: any Unicode (control characters too), empty, huge;
- an encoding: urlencoded (``+`` or ``%20``), raw (unescaped), Latin-1, broken percent-escapes,
  arbitrary bytes, gzip, multipart (proper, base64 parts, file parts, charsets, no or a wrong
  boundary, truncated), JSON and other content types, or none;
- a body size around ``server.max_body_bytes`` some of the time;
- for operations: a chat (the example's active chat, an ended one, an unknown id, another service)
  and a ``secureKey`` (right, another chat's, wrong, missing, repeated).

Properties, for every answer:

- never a 5xx, and the body never holds a Python traceback;
- the body is JSON; an error has the §3 envelope (statusCode 2, alias, chatEnded, messages [],
  errors [{code: int, advice: str}], chatId when the path names one) and never a secure key;
- the status is the one the model below predicts whenever the form the server will read is known
  (every urlencoded body, and well-formed multipart): 413 above the size limit, 400 for bytes
  that are not UTF-8 or a NUL, then the operation's own checks (CONTRACT §2-4, decisions.md);
- a refused request changes nothing: the target chat (summary, parties, transcript) and every
  active chat read the same before and after, although the fake clock moved in between;
- an accepted request changes only what it should: the events it appends, the fields it sets.

One app (and SQLite file) per test function; examples share it. ``CHATPUSH_FUZZ_EXAMPLES`` sets
the examples per test (default in CI: see tests/fuzz/common.py).
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import re
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, unquote_plus, unquote_to_bytes, urlencode

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from chatpush.app import create_app
from chatpush.config import Settings, load_settings
from chatpush.testing import FakeClock
from tests.fuzz.common import EXAMPLES, record_count, record_note, traceback_in
from tests.receivers import Receiver

# aiohttp warns of the odd Content-Disposition headers the fuzzer writes; they are the point.
pytestmark = pytest.mark.filterwarnings("ignore::aiohttp.BadContentDispositionHeader")

API_KEY = "fuzz-api-key"
SERVICE = "support"
BASE = "/genesys/2/chat"
Client = TestClient[web.Request, web.Application]

OPERATIONS = [
    "send",
    "refresh",
    "startTyping",
    "stopTyping",
    "disconnect",
    "pushUrl",
    "updateNickname",
    "customNotice",
    "updateData",
]
NEEDS_ACTIVE = {op for op in OPERATIONS if op not in ("refresh", "disconnect")}
EVENT_OF = {
    "send": "Message",
    "startTyping": "TypingStarted",
    "stopTyping": "TypingStopped",
    "pushUrl": "PushUrl",
    "customNotice": "CustomNotice",
    "updateNickname": "NicknameUpdated",
}
PUSH_KEYS = [
    "GCTI_Chat_PushSubscribe",
    "GCTI_GMS_PushDeviceId",
    "GCTI_GMS_PushDeviceType",
    "GCTI_GMS_PushResend",
    "GCTI_GMS_NotifyRequestor",
    "GCTI_GMS_NodeGroup",
    "GCTI_GMS_PushProvider",
    "GCTI_GMS_PushIncludePayload",
    "GCTI_GMS_ClientChannel",
    "GCTI_GMS_PushDebug",
]
FORM = "application/x-www-form-urlencoded"
_USER_DATA_KEY = re.compile(r"^userData\[(.+)\]$", re.DOTALL)


# -- values ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """A secureKey resolved when the example runs: the target's, another chat's, or a wrong one."""

    kind: str

    def resolve(self, run: Run) -> str:
        right = run.target_key
        return {
            "right": right,
            "other": run.harness.other.key,
            "upper": right.upper(),
            "half": right[: len(right) // 2],
            "longer": right + "0",
            "spaced": f" {right}",
            "random": "0123456789abcdef" * 2,
            "empty": "",
        }[self.kind]


Value = str | Key
Pair = tuple[str, Value]

LIMITS = {"nickname": 128, "message": 16384, "userData": 4096, "userDataKey": 256, "email": 320}
TEXT = st.text(st.characters(codec="utf-8"), max_size=24)
SPECIAL = st.sampled_from(
    [
        "",
        " ",
        "  \t ",
        "0",
        "true",
        "false",
        "%",
        "%25",
        "&",
        "=",
        "+",
        "a+b",
        "%00",
        "\x00",
        "\r\n",
        "\x7f",
        "é",
        "\u2028",
        "\ufeff",
        "\U0001f600",
        "]",
        "[",
        "<script>",
        "'; DROP TABLE chats; --",
        "null",
        "Traceback (most recent call last):",
    ]
)
SIZES = [1, 127, 128, 129, 255, 256, 257, 319, 320, 321, 4095, 4096, 4097, 16383, 16384, 16385]
LONG = st.builds(
    lambda char, n: char * n, st.sampled_from(["a", "é", "\U0001f600", " "]), st.sampled_from(SIZES)
)
VALUES = st.one_of(TEXT, SPECIAL, LONG)
POSITIONS = st.one_of(
    st.sampled_from(
        [
            "",
            "0",
            "1",
            "2",
            "3",
            "5",
            "00",
            "007",
            "2147483647",
            "2147483648",
            "-1",
            "+1",
            " 1",
            "1 ",
            "1.0",
            "1e3",
            "0x1",
            "\uff11",
            "\u00b2",
            "\u0661",
            "99999999999999999999",
            "9" * 5000,  # past Python's 4,300-digit limit on int(str)
            "0" * 20 + "1",
            "NaN",
        ]
    ),
    st.integers(min_value=0, max_value=40).map(str),
    TEXT,
)
KEYS = st.builds(
    Key, st.sampled_from(["right", "other", "upper", "half", "longer", "spaced", "random", "empty"])
)
USER_DATA_NAMES = st.one_of(
    st.sampled_from([*PUSH_KEYS, "k", "a", "nickname", "", "]", "[", "a]b", "x" * 256, "x" * 257]),
    TEXT,
)
PUSH_VALUES = st.sampled_from(
    [
        "true",
        "false",
        "TRUE",
        " yes ",
        "1",
        "0",
        "maybe",
        "",
        "customhttp",
        "comet",
        "fcm",
        "ios",
        "android",
        "g1",
        "nowhere",
        "device-1",
    ]
)


def user_data_pair(names: st.SearchStrategy[str] = USER_DATA_NAMES) -> st.SearchStrategy[Pair]:
    keys = st.one_of(
        names.map(lambda name: f"userData[{name}]"),
        st.sampled_from(
            [
                "userData",
                "userData[]",
                "userData[a",
                "UserData[a]",
                "userData[[a]]",
                "userData[a][b]",
            ]
        ),
    )
    return st.tuples(keys, st.one_of(VALUES, PUSH_VALUES))


PARAMS: dict[str, dict[str, st.SearchStrategy[Value]]] = {
    "request": {
        "nickname": VALUES,
        "firstName": VALUES,
        "lastName": VALUES,
        "subject": VALUES,
        "emailAddress": VALUES,
    },
    "send": {"message": VALUES, "messageType": VALUES, "transcriptPosition": POSITIONS},
    "refresh": {"transcriptPosition": POSITIONS},
    "startTyping": {"message": VALUES},
    "stopTyping": {"message": VALUES},
    "disconnect": {},
    "pushUrl": {"pushUrl": VALUES},
    "updateNickname": {"nickname": VALUES},
    "customNotice": {"message": VALUES},
    "updateData": {},
}
OTHER_NAMES = [
    "secureKey",
    "message",
    "nickname",
    "transcriptPosition",
    "alias",
    "chatId",
    "userId",
]


def pairs_for(operation: str) -> st.SearchStrategy[list[Pair]]:
    own = PARAMS[operation]
    options: list[st.SearchStrategy[Pair]] = [
        st.tuples(st.just(name), strategy) for name, strategy in own.items()
    ]
    options.append(user_data_pair())
    options.append(st.tuples(st.one_of(st.sampled_from(OTHER_NAMES), TEXT), VALUES))
    if operation != "request":
        options.append(st.tuples(st.just("secureKey"), st.one_of(KEYS, VALUES)))
    any_pair = st.one_of(*options)

    # Usually a sensible form: the key first (for operations), then the operation's parameters
    # with ordinary values; then anything.
    ordinary = st.text(
        st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=12
    )
    lead: list[st.SearchStrategy[list[Pair]]] = []
    if operation != "request":
        lead.append(st.sampled_from([[("secureKey", Key("right"))]] * 4 + [[]]))
    for name in own:
        if name in ("nickname", "message", "pushUrl"):
            present = st.tuples(st.just(name), ordinary).map(lambda pair: [pair])
            lead.append(st.one_of(present, present, present, st.just([])))
    if operation == "updateData":
        names = st.sampled_from(["k", "a", "b", "color", "seed"])
        lead.append(
            st.lists(
                st.tuples(names.map(lambda n: f"userData[{n}]"), ordinary), min_size=1, max_size=2
            )
        )
    head = st.tuples(*lead).map(lambda parts: [pair for part in parts for pair in part])
    return st.tuples(head, st.lists(any_pair, max_size=8)).map(lambda t: t[0] + t[1])


# -- wire encodings -------------------------------------------------------------------------------

URLENCODED_TYPES = [
    FORM,
    FORM,
    f"{FORM}; charset=UTF-8",
    "text/plain",
    "text/plain; charset=utf-8",
    None,
    "application/octet-stream",
]
OTHER_TYPES = [
    "application/json",
    "application/xml",
    "text/html",
    "multipart/mixed; boundary=xx",
    "image/png",
]
ODD_TYPES = [
    "Application/X-WWW-Form-Urlencoded",
    "TEXT/PLAIN",
    f"{FORM};;",
    "",
    "multipart/form-data; boundary=",
    "*/*",
]
BROKEN_ESCAPES = [
    b"%",
    b"%G",
    b"%zz",
    b"%F",
    b"%FF",
    b"%C3",
    b"%C3%28",
    b"%ED%A0%80",
    b"%00",
    b"%E2%82",
    b"%C0%AE",
    b"\xff",
    b"\xc3",
    b"%%",
]


@dataclass(frozen=True)
class Plan:
    """How the example's pairs go on the wire."""

    mode: str
    content_type: str | None = None
    spaces: str = "+"
    inserts: tuple[tuple[int, bytes], ...] = ()
    raw: bytes = b""
    boundary: str = "fuzzboundary"
    part_style: tuple[str, ...] = ()
    cut: int = 0
    pad: int | None = None  # the body's size minus max_body_bytes, when padded to around it


URLENCODED = st.builds(
    Plan,
    mode=st.just("urlencoded"),
    content_type=st.sampled_from(URLENCODED_TYPES),
    spaces=st.sampled_from(["+", "%20"]),
)
MULTIPART = st.builds(
    Plan,
    mode=st.just("multipart"),
    boundary=st.one_of(
        st.just("fuzzboundary"),
        st.text(string.ascii_letters + string.digits + "'()+_,-./:=?", min_size=1, max_size=70),
    ),
    part_style=st.lists(
        st.sampled_from(
            ["plain"] * 6
            + [
                "base64",
                "file",
                "latin-1",
                "no-such-charset",
                "quoted-printable",
                "unknown-transfer-encoding",
            ]
        ),
        max_size=12,
    ).map(tuple),
    content_type=st.sampled_from(["ok"] * 5 + ["no-boundary", "wrong-boundary", "truncated"]),
    cut=st.integers(0, 10_000),
)
PLANS = st.one_of(
    # Well-formed bodies half of the time, so that requests get past the parsing, deep into the
    # operations; then every way of getting the body wrong.
    URLENCODED,
    URLENCODED,
    URLENCODED,
    MULTIPART,
    st.builds(Plan, mode=st.just("gzip"), content_type=st.just(FORM)),
    st.builds(Plan, mode=st.just("raw"), content_type=st.sampled_from(URLENCODED_TYPES)),
    st.builds(
        Plan,
        mode=st.just("latin-1"),
        content_type=st.sampled_from(URLENCODED_TYPES),
        spaces=st.sampled_from(["+", "raw"]),
    ),
    st.builds(
        Plan,
        mode=st.just("broken"),
        content_type=st.sampled_from(URLENCODED_TYPES),
        inserts=st.lists(
            st.tuples(st.integers(0, 10_000), st.sampled_from(BROKEN_ESCAPES)),
            min_size=1,
            max_size=3,
        ).map(tuple),
    ),
    st.builds(
        Plan,
        mode=st.just("bytes"),
        content_type=st.sampled_from(URLENCODED_TYPES + OTHER_TYPES),
        raw=st.binary(max_size=200),
    ),
    st.builds(Plan, mode=st.just("other-type"), content_type=st.sampled_from(OTHER_TYPES)),
    st.builds(Plan, mode=st.just("odd-type"), content_type=st.sampled_from(ODD_TYPES)),
)
PADS = st.one_of(st.none(), st.none(), st.none(), st.sampled_from([-64, -2, -1, 0, 1, 2, 64, 5000]))


@dataclass
class Wire:
    """A request body, and what the server must read from it when that is known."""

    body: bytes
    headers: dict[str, str]
    pairs: list[tuple[str, str]] | None  # the form the server reads; None: unknown
    bad_encoding: bool = False  # certainly not UTF-8, or a NUL: 400 (107)
    size: int = 0  # what counts against max_body_bytes
    form_type: bool = True  # a content type the Chat API reads
    # Whether the size limit is certainly checked first: multipart that does not parse may be
    # refused (400) before its size is known.
    size_first: bool = True


class BadEncoding(Exception):
    pass


def read_urlencoded(body: bytes) -> list[tuple[str, str]]:
    """The model's own reading of an urlencoded body (strict UTF-8, NUL refused)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadEncoding from None
    pairs = []
    for piece in text.split("&"):
        if not piece:
            continue
        name, _, value = piece.partition("=")
        decoded = []
        for part in (name, value):
            raw = unquote_to_bytes(part.replace("+", " "))
            try:
                decoded.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise BadEncoding from None
        pairs.append((decoded[0], decoded[1]))
    if any("\x00" in key or "\x00" in value for key, value in pairs):
        raise BadEncoding
    return pairs


def urlencoded_wire(
    body: bytes,
    content_type: str | None,
    extra: dict[str, str] | None = None,
    size: int | None = None,
) -> Wire:
    headers = dict(extra or {})
    if content_type is not None:
        headers["Content-Type"] = content_type
    try:
        decoded = gzip.decompress(body) if headers.get("Content-Encoding") == "gzip" else body
        pairs: list[tuple[str, str]] | None = read_urlencoded(decoded)
        bad = False
    except BadEncoding:
        pairs, bad = None, True
    return Wire(body, headers, pairs, bad, len(body) if size is None else size)


def encode(plan: Plan, pairs: list[tuple[str, str]], max_body: int) -> Wire:
    if plan.pad is not None and plan.mode in ("urlencoded", "raw", "latin-1", "multipart"):
        # Pad with one more field so that the body is max_body + pad bytes long.
        probe = _encode(plan, [*pairs, ("pad", "")], max_body)
        missing = max_body + plan.pad - len(probe.body)
        if missing > 0:
            return _encode(plan, [*pairs, ("pad", "p" * missing)], max_body)
    return _encode(plan, pairs, max_body)


def _encode(plan: Plan, pairs: list[tuple[str, str]], max_body: int) -> Wire:
    if plan.mode == "urlencoded":
        quote_via = quote_plus if plan.spaces == "+" else quote
        body = urlencode(
            pairs,
            quote_via=lambda s, safe, enc, err: quote_via(s, safe="", encoding=enc, errors=err),
        ).encode()
        return urlencoded_wire(body, plan.content_type)
    if plan.mode == "raw":
        body = "&".join(f"{k}={v}" for k, v in pairs).encode("utf-8", "surrogatepass")
        return urlencoded_wire(body, plan.content_type)
    if plan.mode == "latin-1":

        def latin(text: str) -> str:
            raw = text.encode("latin-1", "replace")
            return quote_plus(raw, safe="") if plan.spaces == "+" else raw.decode("latin-1")

        text = "&".join(f"{latin(k)}={latin(v)}" for k, v in pairs)
        return urlencoded_wire(text.encode("latin-1"), plan.content_type)
    if plan.mode == "broken":
        body = urlencode(pairs).encode()
        for at, token in plan.inserts:
            at = at % (len(body) + 1)
            body = body[:at] + token + body[at:]
        return urlencoded_wire(body, plan.content_type)
    if plan.mode == "bytes":
        wire = urlencoded_wire(plan.raw, plan.content_type)
        wire.form_type = plan.content_type in URLENCODED_TYPES
        if not wire.form_type:
            wire.pairs, wire.bad_encoding = None, False
        return wire
    if plan.mode == "gzip":
        raw = urlencode(pairs).encode()
        return urlencoded_wire(
            gzip.compress(raw), FORM, {"Content-Encoding": "gzip"}, size=len(raw)
        )
    if plan.mode == "multipart":
        return multipart(plan, pairs)
    body = urlencode(pairs).encode()
    headers = {} if plan.content_type is None else {"Content-Type": plan.content_type}
    if plan.content_type == "application/json":
        body = json.dumps(dict(pairs)).encode()
    odd_multipart = (plan.content_type or "").lower().startswith("multipart/form-data")
    return Wire(
        body,
        headers,
        None,
        size=len(body),
        form_type=plan.mode != "other-type",
        size_first=not odd_multipart,
    )


_SIMPLE_NAME = re.compile(r"[A-Za-z0-9_\[\]. -]+")


def multipart(plan: Plan, pairs: list[tuple[str, str]]) -> Wire:
    boundary = plan.boundary
    parts: list[bytes] = []
    expected: list[tuple[str, str]] | None = []
    bad = False
    for number, (key, value) in enumerate(pairs):
        style = plan.part_style[number] if number < len(plan.part_style) else "plain"
        headers = f'Content-Disposition: form-data; name="{key}"'
        data = value.encode("utf-8")
        read: str | None = value
        if style == "base64":
            headers += "\r\nContent-Transfer-Encoding: base64"
            data = base64.b64encode(data)
        elif style == "quoted-printable":
            headers += "\r\nContent-Transfer-Encoding: quoted-printable"
            data = data.replace(b"=", b"=3D")
        elif style == "file":
            headers += '; filename="f.txt"\r\nContent-Type: text/plain'
            read = None  # a file is not a form value: the server ignores it
        elif style == "latin-1":
            headers += "\r\nContent-Type: text/plain; charset=latin-1"
            read = data.decode("latin-1")
        elif style == "unknown-transfer-encoding":
            headers += "\r\nContent-Transfer-Encoding: x-unknown"
            bad = True
        elif style == "no-such-charset":
            headers += "\r\nContent-Type: text/plain; charset=no-such"
            # Python decodes nothing without looking the codec up: an empty value is "" anyway.
            bad = bad or bool(data)
        parts.append(headers.encode("utf-8") + b"\r\n\r\n" + data)
        if (
            not _SIMPLE_NAME.fullmatch(key)
            or boundary.encode() in data
            or b"\r" in data
            or b"\n" in data
        ):
            expected = None
        if expected is not None and read is not None:
            expected.append((key, read))
            if "\x00" in key or "\x00" in read:
                bad = True
    delimiter = f"--{boundary}".encode()
    body = b"".join(delimiter + b"\r\n" + part + b"\r\n" for part in parts) + delimiter + b"--\r\n"
    content_type = f'multipart/form-data; boundary="{boundary}"'
    if plan.content_type == "no-boundary":
        content_type, expected = "multipart/form-data", None
    elif plan.content_type == "wrong-boundary":
        content_type, expected = "multipart/form-data; boundary=not-the-one", None
    elif plan.content_type == "truncated":
        body, expected = body[: plan.cut % (len(body) + 1)], None
    if expected is None:
        bad = False
    return Wire(
        body,
        {"Content-Type": content_type},
        expected,
        bad,
        len(body),
        size_first=expected is not None,
    )


# -- the model: which status a known form gets ---------------------------------------------------


class Form:
    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.values: dict[str, str] = {}
        self.user_data: dict[str, str] = {}
        for key, value in pairs:
            found = _USER_DATA_KEY.match(key)
            if found:
                self.user_data.setdefault(found.group(1), value)
            else:
                self.values.setdefault(key, value)

    def get(self, name: str) -> str | None:
        return self.values.get(name)


def too_long(value: str | None, limit: int) -> bool:
    return value is not None and len(value) > limit


def user_data_refused(user_data: dict[str, str]) -> bool:
    return len(user_data) > 100 or any(
        not key or len(key) > LIMITS["userDataKey"] or len(value) > LIMITS["userData"]
        for key, value in user_data.items()
    )


def bad_position(raw: str | None) -> bool:
    if raw is None or raw == "":
        return False
    return not (
        raw.isascii() and raw.isdigit() and len(raw.lstrip("0")) <= 10 and int(raw) <= 2**31 - 1
    )


def predict_request_chat(service: str, form: Form) -> set[int]:
    if not service_ok(service):
        return {404}
    nickname = (form.get("nickname") or "").strip()
    first, last = form.get("firstName") or None, form.get("lastName") or None
    if too_long(first, LIMITS["nickname"]) or too_long(last, LIMITS["nickname"]):
        return {400}
    if not nickname:
        if not (first and last):
            return {400}
        nickname = f"{first} {last}"
    if (
        too_long(nickname, LIMITS["nickname"])
        or too_long(form.get("subject") or None, LIMITS["message"])
        or too_long(form.get("emailAddress") or None, LIMITS["email"])
        or user_data_refused(form.user_data)
    ):
        return {400}
    subscribe = form.user_data.get("GCTI_Chat_PushSubscribe")
    if subscribe is not None and subscribe.strip().lower() not in ("", "false", "0", "no"):
        return {200, 400}  # the push keys decide (tests/integration/test_subscriptions.py)
    return {200}


def service_ok(service: str) -> bool:
    return re.fullmatch(r"[^\x00-\x1f\x7f/]{1,200}", service) is not None


def predict_operation(operation: str, form: Form, target: Target) -> set[int]:
    message, key = form.get("message"), form.get("secureKey")
    if operation in ("send", "refresh") and bad_position(form.get("transcriptPosition")):
        return {400}
    if operation in ("send", "customNotice") and message is None:
        return {400}
    if operation in ("send", "startTyping", "stopTyping", "customNotice") and too_long(
        message, LIMITS["message"]
    ):
        return {400}
    if operation == "send" and too_long(form.get("messageType") or None, 128):
        return {400}
    if operation == "pushUrl" and (
        not form.get("pushUrl") or too_long(form.get("pushUrl"), LIMITS["message"])
    ):
        return {400}
    if operation == "updateNickname":
        nickname = (form.get("nickname") or "").strip()
        if not nickname or too_long(nickname, LIMITS["nickname"]):
            return {400}
    if operation == "updateData" and not form.user_data:
        return {400}
    if not service_ok(target.service):
        return {404}
    if not key:
        return {403}
    if target.chat is None or target.service != target.chat.service:
        return {404}
    if key != target.chat.key:
        return {403}
    if target.chat.ended and operation in NEEDS_ACTIVE:
        return {409}
    if operation == "updateData" and user_data_refused({**target.chat.user_data, **form.user_data}):
        return {400}
    return {200}


# -- the running app ------------------------------------------------------------------------------


@dataclass
class Chat:
    id: str
    key: str
    service: str = SERVICE
    ended: bool = False
    user_data: dict[str, str] = field(default_factory=dict)


@dataclass
class Target:
    service: str
    chat_id: str
    chat: Chat | None  # None: no such chat


@dataclass
class Harness:
    runner: asyncio.Runner
    client: Client
    clock: FakeClock
    settings: Settings
    active: Chat | None = None
    other: Chat = field(default_factory=lambda: Chat("", ""))
    ended: Chat = field(default_factory=lambda: Chat("", ""))

    @property
    def max_body(self) -> int:
        return self.settings.server.max_body_bytes

    async def api(self, method: str, path: str, json_body: Any = None) -> Any:
        response = await self.client.request(
            method, f"/api/v1{path}", json=json_body, headers={"X-API-Key": API_KEY}
        )
        assert response.status < 300, await response.text()
        return await response.json()

    async def new_chat(self, service: str = SERVICE) -> Chat:
        response = await self.client.post(
            f"{BASE}/{service}", data={"nickname": "Ann", "userData[seed]": "1"}
        )
        body = await response.json()
        assert response.status == 200, body
        chat = Chat(body["chatId"], body["secureKey"], service, user_data={"seed": "1"})
        await self.api("POST", f"/chats/{chat.id}/parties", {"type": "Agent", "nickname": "Bob"})
        await self.api(
            "POST",
            f"/chats/{chat.id}/events",
            {"participantId": 2, "type": "Message", "text": "hello"},
        )
        return chat

    async def setup(self) -> None:
        self.other = await self.new_chat()
        self.ended = await self.new_chat()
        await self.api("POST", f"/chats/{self.ended.id}/end")
        self.ended.ended = True

    async def ensure_active(self) -> Chat:
        if self.active is None or self.active.ended:
            self.active = await self.new_chat()
        return self.active

    async def snapshot(self, chat_id: str | None) -> dict[str, Any]:
        listed = await self.api("GET", "/chats?status=active&limit=1000")
        state: dict[str, Any] = {"active": {c["chatId"]: c for c in listed["chats"]}}
        if chat_id is not None:
            state["chat"] = await self.api("GET", f"/chats/{quote(chat_id, safe='')}")
        return state


@pytest.fixture
def harness(tmp_path: Path, migrated_sqlite: Callable[[str], None]) -> Iterator[Harness]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'chatpush.db'}"
    migrated_sqlite(url)
    clock = FakeClock()
    with asyncio.Runner() as runner:

        async def start() -> tuple[Client, Receiver, Settings]:
            receiver = await Receiver().start()
            app_settings = load_settings(
                None,
                database={"url": url},
                security={"api_keys": [API_KEY]},
                groups={"g1": {"default": True, "nodes": ["n1"], "customhttp.url": receiver.url}},
            )
            app = create_app(app_settings, clock=clock, housekeeping=False)
            client: Client = TestClient(TestServer(app))
            await client.start_server()
            return client, receiver, app_settings

        client, receiver, app_settings = runner.run(start())
        harness = Harness(runner, client, clock, app_settings)
        try:
            runner.run(harness.setup())
            yield harness
        finally:
            runner.run(client.close())
            runner.run(receiver.close())


# -- one example ----------------------------------------------------------------------------------


@dataclass
class Run:
    harness: Harness
    target_key: str


async def post(harness: Harness, path: str, wire: Wire) -> tuple[int, str, bytes]:
    response = await harness.client.post(
        path, data=wire.body, headers=wire.headers, skip_auto_headers=["Content-Type"]
    )
    return response.status, response.content_type, await response.read()


def sent_text(wire: Wire, pairs: list[tuple[str, str]]) -> str:
    """Everything the request said, as text, for telling an echo from a traceback."""
    texts = [wire.body.decode("utf-8", "replace"), unquote_plus(wire.body.decode("latin-1"))]
    texts += [text for pair in pairs for text in pair]
    return "\n".join(texts)


def check_envelope(
    status: int,
    content_type: str,
    raw: bytes,
    *,
    chat_path: bool,
    secrets: list[str],
    sent: str,
) -> dict[str, Any]:
    assert status < 500, f"server error {status}: {raw[:300]!r}"
    assert content_type == "application/json", (content_type, raw[:200])
    body: dict[str, Any] = json.loads(raw)
    # An answer echoes what was sent (an advice may quote a value) and the transcript holds what
    # earlier examples sent, some of it traceback-like on purpose: look past those.
    shown = dict(
        body, messages=[{k: e.get(k) for k in ("index", "type")} for e in body.get("messages", [])]
    )
    found = traceback_in(json.dumps(shown).encode())
    assert found is None or found in sent, f"traceback text in the body: {found!r}"
    if status == 200:
        assert body["statusCode"] == 0 and isinstance(body["messages"], list), body
        assert isinstance(body["nextPosition"], int) and isinstance(body["chatEnded"], bool), body
        return body
    text = raw.decode("utf-8")
    for secret in secrets:
        assert secret not in text, "an error answer holds a secure key"
    assert body["statusCode"] == 2, body
    assert isinstance(body["chatEnded"], bool) and body["messages"] == [], body
    assert isinstance(body["alias"], str), body
    assert ("chatId" in body) == chat_path, body
    assert "secureKey" not in body, body
    errors = body["errors"]
    assert isinstance(errors, list) and errors, body
    for entry in errors:
        assert type(entry["code"]) is int, entry
        assert isinstance(entry["advice"], str) and entry["advice"].strip(), entry
    return body


def check_status(
    status: int, body: dict[str, Any], wire: Wire, max_body: int, predicted: set[int] | None
) -> str:
    """What the model knows: size first, then encoding and content type, then the form's checks.

    Returns what the model could tell, for the counts."""
    codes = [entry["code"] for entry in body.get("errors", [])]
    if wire.size > max_body:
        if wire.size_first:
            assert status == 413 and codes == [106], (status, body)
            return "size"
        assert status in (400, 413), (status, body)
        return "size (400 or 413)"
    assert status != 413, (status, body, wire.size)
    if not wire.form_type:
        assert status == 400, (status, body)
        return "content type"
    if wire.bad_encoding:
        assert status == 400 and codes == [107], (status, body)
        return "encoding"
    if predicted is not None:
        assert status in predicted, f"predicted {predicted}, got {status}: {body}"
        return "exact status" if len(predicted) == 1 else "status (push keys)"
    return "no 5xx only"


def resolve(pairs: list[Pair], run: Run) -> list[tuple[str, str]]:
    return [(key, value.resolve(run) if isinstance(value, Key) else value) for key, value in pairs]


# -- Request Chat ---------------------------------------------------------------------------------

SERVICES = st.sampled_from(
    [SERVICE] * 8 + ["Support", "s" * 200, "s" * 201, "%01", "%E3%82%B5", "a%2Fb"]
)


async def request_chat_example(
    harness: Harness, service: str, raw_pairs: list[Pair], plan: Plan
) -> int:
    harness.clock.advance(ms=1)
    pairs = resolve(raw_pairs, Run(harness, ""))
    wire = encode(plan, pairs, harness.max_body)
    note(f"service={service!r} wire={wire.headers} {wire.body[:500]!r} size={wire.size}")
    before = await harness.snapshot(None)
    status, content_type, raw = await post(harness, f"{BASE}/{service}", wire)
    body = check_envelope(
        status,
        content_type,
        raw,
        chat_path=False,
        secrets=[harness.other.key],
        sent=sent_text(wire, pairs),
    )
    form = None if wire.pairs is None else Form(wire.pairs)
    server_service = bytes(unquote_to_bytes(service)).decode("utf-8", "replace")
    predicted = None if form is None else predict_request_chat(server_service, form)
    known = check_status(status, body, wire, harness.max_body, predicted)
    record_note("forms: what the model checked", known)
    after = await harness.snapshot(None)
    if status != 200:
        assert after == before, "a refused Request Chat changed the chat list"
        return status
    created = set(after["active"]) - set(before["active"])
    assert created == {body["chatId"]}, "Request Chat must create exactly its own chat"
    assert {k: v for k, v in after["active"].items() if k in before["active"]} == before["active"]
    chat = await harness.api("GET", f"/chats/{body['chatId']}")
    assert [event["type"] for event in chat["transcript"]] == ["ParticipantJoined"]
    assert [party["participantId"] for party in chat["parties"]] == [1]
    assert chat["chat"]["lastIndex"] == 1 and chat["chat"]["status"] == "active"
    if form is not None:
        summary = chat["chat"]
        assert summary["serviceName"] == server_service
        assert summary["userData"] == form.user_data
        assert summary["subject"] == (form.get("subject") or None)
        assert summary["emailAddress"] == (form.get("emailAddress") or None)
        nickname = (
            form.get("nickname") or ""
        ).strip() or f"{form.get('firstName')} {form.get('lastName')}"
        assert chat["parties"][0]["nickname"] == nickname
    # Keep the active list short: what was created is checked; end it.
    await harness.api("POST", f"/chats/{body['chatId']}/end")
    return status


@settings(
    max_examples=EXAMPLES.forms,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(service=SERVICES, raw_pairs=pairs_for("request"), plan=PLANS, pad=PADS)
def test_request_chat_forms(
    harness: Harness, service: str, raw_pairs: list[Pair], plan: Plan, pad: int | None
) -> None:
    plan = replace(plan, pad=pad)
    status = harness.runner.run(request_chat_example(harness, service, raw_pairs, plan))
    record_count("forms Request Chat", status)


# -- the nine operations --------------------------------------------------------------------------

TARGETS = st.sampled_from(
    ["active"] * 8 + ["ended", "ended", "unknown", "lower", "longer", "other-service", "garbage"]
)


async def operation_example(
    harness: Harness,
    operation: str,
    target_kind: str,
    garbage: str,
    raw_pairs: list[Pair],
    plan: Plan,
) -> int:
    active = await harness.ensure_active()
    chat: Chat | None = {"active": active, "ended": harness.ended}.get(target_kind, active)
    service, chat_id = SERVICE, chat.id
    if target_kind == "unknown":
        chat_id, chat = "0123456789ABCDEF", None
    elif target_kind == "lower":
        # An id of digits only reads the same in lower case: then it is the chat itself.
        chat_id = active.id.lower()
        chat = active if chat_id == active.id else None
    elif target_kind == "longer":
        chat_id, chat = active.id + "0", None
    elif target_kind == "other-service":
        service = "sales"
    elif target_kind == "garbage":
        chat_id, chat = garbage, None
    target = Target(service, chat_id, chat)
    run = Run(harness, chat.key if chat is not None else active.key)
    pairs = resolve(raw_pairs, run)
    wire = encode(plan, pairs, harness.max_body)
    note(
        f"target={target_kind} {chat_id!r} wire={wire.headers} {wire.body[:500]!r} size={wire.size}"
    )

    watched = chat.id if chat is not None else active.id
    harness.clock.advance(ms=1)
    before = await harness.snapshot(watched)
    path = f"{BASE}/{service}/{quote(chat_id, safe='')}/{operation}"
    status, content_type, raw = await post(harness, path, wire)
    secrets = [c.key for c in (active, harness.other, harness.ended)]
    body = check_envelope(
        status, content_type, raw, chat_path=True, secrets=secrets, sent=sent_text(wire, pairs)
    )
    form = None if wire.pairs is None else Form(wire.pairs)
    predicted = None if form is None else predict_operation(operation, form, target)
    known = check_status(status, body, wire, harness.max_body, predicted)
    record_note("forms: what the model checked", known)
    after = await harness.snapshot(watched)
    if status != 200:
        assert after == before, "a refused request changed the chat"
        return status

    # Accepted: only with the chat's own key, on its own service, and only what it should change.
    assert chat is not None and target.service == chat.service, "accepted for no chat of ours"
    assert body["chatId"] == chat.id
    others = {k: v for k, v in before["active"].items() if k != chat.id}
    assert {k: v for k, v in after["active"].items() if k != chat.id} == others, (
        "another chat changed"
    )
    check_accepted(operation, form, chat, before["chat"], after["chat"], harness.clock.now_ms())
    if after["chat"]["chat"]["status"] == "ended":
        chat.ended = True
    chat.user_data = after["chat"]["chat"]["userData"]
    return status


def check_accepted(
    operation: str,
    form: Form | None,
    chat: Chat,
    before: dict[str, Any],
    after: dict[str, Any],
    now_ms: int,
) -> None:
    old, new = before["transcript"], after["transcript"]
    assert new[: len(old)] == old, "earlier events changed"
    added = new[len(old) :]
    summary_before, summary_after = before["chat"], after["chat"]
    assert summary_after["lastIndex"] == summary_before["lastIndex"] + len(added)
    for name in ("chatId", "serviceName", "createdAt", "subject", "emailAddress"):
        assert summary_after[name] == summary_before[name], name
    if operation not in ("send", "refresh"):
        assert summary_after["clientPosition"] == summary_before["clientPosition"]
    if operation != "updateData":
        assert summary_after["userData"] == summary_before["userData"]
    if operation == "disconnect" and chat.ended:
        assert after == before, "disconnecting an ended chat changes nothing"
        return
    assert summary_after["lastClientRequestAt"] == now_ms, "the request was not recorded"
    if operation == "disconnect":
        present = [p["participantId"] for p in before["parties"] if p["leftAt"] is None]
        assert [(e["type"], e["from"]["participantId"]) for e in added] == [
            ("ParticipantLeft", pid) for pid in present
        ]
        assert summary_after["status"] == "ended"
        assert all(p["leftAt"] == now_ms for p in after["parties"] if p["participantId"] in present)
        return
    assert summary_after["status"] == summary_before["status"]
    expected_types = [EVENT_OF[operation]] if operation in EVENT_OF else []
    assert [e["type"] for e in added] == expected_types
    assert all(e["from"]["participantId"] == 1 and e["utcTime"] == now_ms for e in added)
    parties_before = {p["participantId"]: p for p in before["parties"]}
    parties_after = {p["participantId"]: p for p in after["parties"]}
    if operation == "updateNickname":
        parties_before[1] = {**parties_before[1], "nickname": parties_after[1]["nickname"]}
    assert parties_after == parties_before
    if form is None:
        return
    if added:
        text = {
            "send": form.get("message"),
            "startTyping": form.get("message"),
            "stopTyping": form.get("message"),
            "pushUrl": form.get("pushUrl"),
            "customNotice": form.get("message"),
            "updateNickname": (form.get("nickname") or "").strip(),
        }[operation]
        assert added[0].get("text") == text
        if operation == "send":
            assert added[0].get("messageType") == (form.get("messageType") or None)
    if operation == "updateNickname":
        assert parties_after[1]["nickname"] == (form.get("nickname") or "").strip()
    if operation == "updateData":
        assert summary_after["userData"] == {**summary_before["userData"], **form.user_data}


GARBAGE_IDS = st.one_of(
    st.sampled_from(["%", "%00", "%FF", "x" * 300, "\u00e9"]),
    TEXT.filter(lambda text: text.strip(".") != ""),
)


@pytest.mark.parametrize("operation", OPERATIONS)
def test_operation_forms(harness: Harness, operation: str) -> None:
    @settings(
        max_examples=EXAMPLES.forms,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        target=TARGETS, garbage=GARBAGE_IDS, raw_pairs=pairs_for(operation), plan=PLANS, pad=PADS
    )
    def examples(
        target: str, garbage: str, raw_pairs: list[Pair], plan: Plan, pad: int | None
    ) -> None:
        plan = replace(plan, pad=pad)
        status = harness.runner.run(
            operation_example(harness, operation, target, garbage, raw_pairs, plan)
        )
        record_count(f"forms {operation}", status)

    examples()
