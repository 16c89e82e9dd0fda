"""Input hardening: slow bodies, huge numbers, long names, control characters in logs, and the
SQLite file's permissions.

Each test runs the real app on 127.0.0.1 and talks to it as a client would (a raw socket for the
slow bodies). These checks do not depend on the store, so they run on the SQLite file only.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from chatpush.config import DatabaseSettings, Settings
from chatpush.errors import Code
from chatpush.logs import configure_logging, install_filters
from chatpush.store import migrate
from chatpush.store.database import Database
from tests.conftest import API_KEY, ChatDriver

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[Settings], Any]

BODY_TIMEOUT_S = 0.5
TRICKLE_EVERY_S = 0.1
HUGE = "9" * 5000  # past Python's 4,300-digit limit on int(str)
CHAT_CHANNEL = "/service/chatV2/support"
HANDSHAKE = {
    "channel": "/meta/handshake",
    "version": "1.0",
    "supportedConnectionTypes": ["long-polling"],
}


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'chatpush.db'}"


@pytest.fixture
async def slow_client(make_client: MakeClient, make_settings: Callable[..., Settings]) -> Client:
    client: Client = await make_client(
        make_settings(server={"body_read_timeout_s": BODY_TIMEOUT_S})
    )
    return client


@pytest.fixture(autouse=True)
def no_error_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Bad input is the client's mistake: nothing in these tests may log an error."""
    yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: Any, elapsed_s: float):
        self.status = status
        self.headers = headers
        self.body = body
        self.elapsed_s = elapsed_s


async def trickle(
    client: Client,
    path: str,
    body: bytes,
    headers: dict[str, str] | None = None,
    *,
    chunked: bool = False,
) -> Answer:
    """POST ``body`` one byte every TRICKLE_EVERY_S, never its end (a Content-Length, or chunks
    of one byte); return the server's answer, a test failure if none comes within 5 s. Status 0:
    the server closed the connection without an answer the client could read."""
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}"
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", framing]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    async def send() -> None:
        try:
            for index in range(len(body) - 1):
                byte = body[index : index + 1]
                writer.write(b"1\r\n" + byte + b"\r\n" if chunked else byte)
                await writer.drain()
                await asyncio.sleep(TRICKLE_EVERY_S)
        except ConnectionError:
            pass

    loop = asyncio.get_running_loop()
    started = loop.time()
    sender = asyncio.create_task(send())
    try:
        async with asyncio.timeout(5):
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (ConnectionError, asyncio.IncompleteReadError):
                return Answer(0, {}, None, loop.time() - started)
            status_line, *header_lines = head.decode("latin-1").split("\r\n")
            fields = dict(line.split(": ", 1) for line in header_lines if line)
            answer_headers = {name.lower(): value for name, value in fields.items()}
            raw = await reader.readexactly(int(answer_headers["content-length"]))
            return Answer(
                int(status_line.split(" ")[1]),
                answer_headers,
                json.loads(raw),
                loop.time() - started,
            )
    finally:
        sender.cancel()
        writer.close()


async def bayeux(client: Client, *messages: dict[str, Any]) -> list[dict[str, Any]]:
    """One long-polling exchange with the app's CometD endpoint."""
    response = await client.post("/genesys/cometd", json=list(messages))
    assert response.status == 200, await response.text()
    reply: list[dict[str, Any]] = await response.json()
    return reply


def assert_timed_out(answer: Answer) -> None:
    assert answer.status == 408, answer.body
    assert answer.headers["connection"] == "close"
    [error] = answer.body["errors"]
    assert error["code"] == Code.BODY_TIMEOUT
    assert "body" in error["advice"] and f"{BODY_TIMEOUT_S:g} s" in error["advice"], error
    assert answer.elapsed_s < BODY_TIMEOUT_S + 1.5


async def test_slow_chat_api_body_is_cut_off_and_changes_nothing(slow_client: Client) -> None:
    form = b"nickname=Slow+Loris&subject=" + b"x" * 200
    answer = await trickle(
        slow_client,
        "/genesys/2/chat/support",
        form,
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_timed_out(answer)
    assert answer.body["statusCode"] == 2 and answer.body["messages"] == []
    chats = await ChatDriver(slow_client).api("GET", "/chats")
    assert chats["chats"] == []


async def test_slow_server_api_body_is_cut_off_and_changes_nothing(slow_client: Client) -> None:
    chat = ChatDriver(slow_client)
    await chat.request_chat()
    agent = await chat.agent_joins()
    before = await chat.api("GET", f"/chats/{chat.chat_id}")
    event = {"participantId": agent, "type": "Message", "text": "x" * 200}
    answer = await trickle(
        slow_client,
        f"/api/v1/chats/{chat.chat_id}/events",
        json.dumps(event).encode(),
        {"Content-Type": "application/json", "X-API-Key": API_KEY},
    )
    assert_timed_out(answer)
    assert await chat.api("GET", f"/chats/{chat.chat_id}") == before


async def test_slow_cometd_long_polling_body_is_cut_off(slow_client: Client) -> None:
    [handshake] = await bayeux(slow_client, HANDSHAKE)
    publish = [
        {
            "channel": CHAT_CHANNEL,
            "clientId": handshake["clientId"],
            "data": {"operation": "requestChat", "nickname": "Slow Loris", "subject": "x" * 200},
        }
    ]
    answer = await trickle(
        slow_client,
        "/genesys/cometd",
        json.dumps(publish).encode(),
        {"Content-Type": "application/json"},
    )
    assert_timed_out(answer)
    chats = await ChatDriver(slow_client).api("GET", "/chats")
    assert chats["chats"] == []


async def test_slow_chunked_bodies_are_cut_off_too(slow_client: Client) -> None:
    """A chunked body (or a compressed or large one) is read by its handler as it comes: its read
    fails at the deadline. The server closes the connection at once: a client still sending may
    see that as a reset rather than the 408."""
    chat = ChatDriver(slow_client)
    await chat.request_chat()
    agent = await chat.agent_joins()
    before = await chat.api("GET", f"/chats/{chat.chat_id}")
    cases = [
        (
            "/genesys/2/chat/support",
            b"nickname=Slow+Loris&subject=" + b"x" * 200,
            {"Content-Type": "application/x-www-form-urlencoded"},
        ),
        (
            f"/genesys/2/chat/support/{chat.chat_id}/send",
            f"secureKey={chat.secure_key}&message=".encode() + b"x" * 200,
            {"Content-Type": "application/x-www-form-urlencoded"},
        ),
        (
            f"/api/v1/chats/{chat.chat_id}/events",
            json.dumps({"participantId": agent, "type": "Message", "text": "x" * 200}).encode(),
            {"Content-Type": "application/json", "X-API-Key": API_KEY},
        ),
        ("/genesys/cometd", b"[" + b" " * 200 + b"]", {"Content-Type": "application/json"}),
    ]
    for path, body, headers in cases:
        answer = await trickle(slow_client, path, body, headers, chunked=True)
        assert answer.status in (0, 408), (path, answer.body)
        if answer.status:
            assert_timed_out(answer)
        assert answer.elapsed_s < BODY_TIMEOUT_S + 1.5
    assert await chat.api("GET", f"/chats/{chat.chat_id}") == before
    assert [c["chatId"] for c in (await chat.api("GET", "/chats"))["chats"]] == [chat.chat_id]


async def test_a_body_within_the_deadline_and_a_long_handler_are_not_cut(
    slow_client: Client,
) -> None:
    """The deadline is on receiving the body: a slow but complete body is served, and so is a
    request whose handler runs longer than the deadline after the body arrived."""
    reader, writer = await asyncio.open_connection("127.0.0.1", slow_client.port)
    form = b"nickname=Quick"
    writer.write(
        b"POST /genesys/2/chat/support HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        + f"Content-Length: {len(form)}\r\n\r\n".encode()
        + form[:5]
    )
    await asyncio.sleep(BODY_TIMEOUT_S / 2)
    writer.write(form[5:])
    status_line = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    assert status_line.startswith(b"HTTP/1.1 200"), status_line

    # A held /meta/connect (its body long complete) outlives the deadline and is answered.
    [handshake] = await bayeux(slow_client, HANDSHAKE)
    client_id = handshake["clientId"]
    connect = {"channel": "/meta/connect", "clientId": client_id, "connectionType": "long-polling"}
    request_chat = {
        "channel": CHAT_CHANNEL,
        "clientId": client_id,
        "data": {"operation": "requestChat", "nickname": "Ann"},
    }
    replies = await bayeux(slow_client, request_chat, connect)
    [started] = [r["data"] for r in replies if r["channel"] == CHAT_CHANNEL and "data" in r]
    chat = ChatDriver(slow_client)
    chat.chat_id, chat.secure_key = started["chatId"], started["secureKey"]
    held = asyncio.create_task(bayeux(slow_client, connect))
    await asyncio.sleep(BODY_TIMEOUT_S * 2)
    assert not held.done()
    await chat.agent_joins()
    async with asyncio.timeout(5):
        replies = await held
    assert [reply["data"]["messages"][0]["type"] for reply in replies if "data" in reply] == [
        "ParticipantJoined"
    ]


# -- huge numbers ----------------------------------------------------------------------------------


async def test_huge_transcript_positions_are_400s(client: Client) -> None:
    chat = ChatDriver(client)
    await chat.request_chat()
    before = await chat.api("GET", f"/chats/{chat.chat_id}")
    for position in (HUGE, "1" + "0" * 4400, "1" + "0" * 10):
        for operation, form in (("refresh", {}), ("send", {"message": "hi"})):
            body = await chat.op(operation, 400, transcriptPosition=position, **form)
            [error] = body["errors"]
            assert error["code"] == 101 and "transcriptPosition" in error["advice"], error
            assert len(error["advice"]) < 200
    assert await chat.api("GET", f"/chats/{chat.chat_id}") == before


async def test_huge_integers_in_server_api_bodies_are_400s(client: Client) -> None:
    chat = ChatDriver(client)
    await chat.request_chat()
    before = await chat.api("GET", f"/chats/{chat.chat_id}")
    bodies = [
        f'{{"participantId": {HUGE}, "type": "Message", "text": "hi"}}',
        f'{{"participantId": -{HUGE}, "type": "Message", "text": "hi"}}',
        f'{{"type": "Agent", "nickname": "A", "extra": [{HUGE}]}}',
    ]
    for path, raw in zip(("events", "events", "parties"), bodies, strict=True):
        response = await client.post(
            f"/api/v1/chats/{chat.chat_id}/{path}",
            data=raw,
            headers={"X-API-Key": API_KEY, "Content-Type": "application/json"},
        )
        body = await response.json()
        assert response.status == 400, body
        [error] = body["errors"]
        assert error["code"] == 101 and "digits" in error["advice"], error
    assert await chat.api("GET", f"/chats/{chat.chat_id}") == before


async def test_huge_integers_in_server_api_queries_are_400s(client: Client) -> None:
    chat = ChatDriver(client)
    await chat.request_chat()
    for path in (
        f"/chats/{chat.chat_id}/deliveries?after={HUGE}",
        f"/chats/{chat.chat_id}?fromPosition={HUGE}",
        f"/chats?limit={HUGE}",
    ):
        body = await chat.api("GET", path, 400)
        assert body["errors"][0]["code"] == 101, body


async def test_huge_transcript_positions_over_cometd(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    chat = ChatDriver(client)
    await chat.request_chat()
    before = await chat.api("GET", f"/chats/{chat.chat_id}")
    [handshake] = await bayeux(client, HANDSHAKE)
    client_id = handshake["clientId"]
    channel = CHAT_CHANNEL
    data = {"chatId": chat.chat_id, "secureKey": chat.secure_key, "transcriptPosition": HUGE}
    await bayeux(
        client,
        {"channel": channel, "clientId": client_id, "data": {**data, "operation": "sendMessage"}},
        {
            "channel": channel,
            "clientId": client_id,
            "data": {**data, "operation": "requestNotifications"},
        },
    )
    replies = await bayeux(
        client,
        {"channel": "/meta/connect", "clientId": client_id, "connectionType": "long-polling"},
    )
    envelopes = [r["data"] for r in replies if r["channel"] == channel and "data" in r]
    assert len(envelopes) == 2, replies
    for envelope in envelopes:
        assert envelope["statusCode"] == 2, envelope
        assert envelope["errors"][0]["code"] == 101, envelope

    # Going to background with a huge position: the session still leaves cleanly.
    [left] = await bayeux(
        client,
        {
            "channel": "/meta/disconnect",
            "clientId": client_id,
            "ext": {"transcriptPosition": HUGE},
        },
    )
    assert left["successful"] is True, left
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert await chat.api("GET", f"/chats/{chat.chat_id}") == before


# -- text lengths ----------------------------------------------------------------------------------


async def test_every_customer_text_field_is_bounded(client: Client) -> None:
    long_name = "n" * 129  # chat.max_nickname_chars is 128
    for fields, named in (
        ({"nickname": "Ann", "firstName": long_name}, "firstName"),
        ({"nickname": "Ann", "lastName": long_name}, "lastName"),
        ({"firstName": long_name, "lastName": "B"}, "firstName"),
        ({"nickname": long_name}, "nickname"),
        ({"nickname": "Ann", "emailAddress": "e" * 321}, "emailAddress"),
        ({"nickname": "Ann", "subject": "s" * 16385}, "subject"),
        ({"nickname": "Ann", f"userData[{'k' * 257}]": "v"}, "userData"),
        ({"nickname": "Ann", "userData[k]": "v" * 4097}, "userData[k]"),
    ):
        response = await client.post("/genesys/2/chat/support", data=fields)
        body = await response.json()
        assert response.status == 400, (named, body)
        assert body["errors"][0]["advice"].startswith(named), (named, body)
    assert (await ChatDriver(client).api("GET", "/chats"))["chats"] == []

    chat = ChatDriver(client)
    await chat.request_chat(firstName="f" * 128, lastName="l" * 128)  # at the limit: accepted
    for operation, fields, named in (
        ("send", {"message": "m" * 16385}, "message"),
        ("send", {"message": "m", "messageType": "t" * 129}, "messageType"),
        ("startTyping", {"message": "m" * 16385}, "message"),
        ("stopTyping", {"message": "m" * 16385}, "message"),
        ("customNotice", {"message": "m" * 16385}, "message"),
        ("pushUrl", {"pushUrl": "https://example.com/" + "p" * 16385}, "pushUrl"),
        ("updateNickname", {"nickname": long_name}, "nickname"),
        ("updateData", {"userData[k]": "v" * 4097}, "userData[k]"),
    ):
        body = await chat.op(operation, 400, **fields)
        assert body["errors"][0]["advice"].startswith(named), (operation, body)


# -- logs ------------------------------------------------------------------------------------------


@pytest.fixture
def log_output(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], io.StringIO]]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level

    def configure(fmt: str) -> io.StringIO:
        stream = io.StringIO()
        monkeypatch.setattr("sys.stderr", stream)
        configure_logging("INFO", fmt)
        return stream

    yield configure
    root.handlers[:], level = saved
    root.setLevel(level)


FORGED = "x\n2026-01-01 00:00:00,000 ERROR chatpush.api forged\r\x1b[2J\u2028y"


def _log_everything() -> None:
    log = logging.getLogger("chatpush.api")
    log.warning("refused %s", FORGED, extra={"action": "test", "path": FORGED})
    try:
        raise ValueError(FORGED)
    except ValueError:
        log.exception("failed", extra={"action": "test_failed"})


def test_text_logs_escape_control_characters(log_output: Callable[[str], io.StringIO]) -> None:
    stream = log_output("text")
    _log_everything()
    lines = stream.getvalue().splitlines()
    # Every line is a record's first line or an indented line of its traceback: nothing a client
    # sends starts a line of its own.
    starts = [line for line in lines if not line.startswith(" ")]
    assert len(starts) == 2, lines
    assert "refused x\\n2026-01-01 00:00:00,000 ERROR chatpush.api forged\\r" in starts[0]
    text = stream.getvalue()
    for raw in ("\r", "\x1b", "\u2028"):
        assert raw not in text
    assert "\\x1b[2J" in starts[0] and "path=" in starts[0]


def test_json_logs_stay_one_line_per_record(log_output: Callable[[str], io.StringIO]) -> None:
    stream = log_output("json")
    _log_everything()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, lines
    records = [json.loads(line) for line in lines]
    assert records[0]["path"] == FORGED and FORGED in records[0]["message"]
    assert FORGED in records[1]["exception"]


# -- the SQLite file -------------------------------------------------------------------------------


@pytest.fixture
def loose_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("loose_umask")
async def test_new_sqlite_files_are_private(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    url = f"sqlite+aiosqlite:///{path}"
    await asyncio.to_thread(migrate.upgrade, url)  # `chatpush migrate` creates the file
    assert _mode(path) == 0o600

    served = tmp_path / "served.db"  # `chatpush serve` on a file that is not there yet
    db = Database(DatabaseSettings(url=f"sqlite+aiosqlite:///{served}"))
    try:
        await db.write(lambda conn: conn.exec_driver_sql("CREATE TABLE t (x TEXT)"))
        await db.write(lambda conn: conn.exec_driver_sql("INSERT INTO t VALUES ('secret')"))
        for each in (served, tmp_path / "served.db-wal", tmp_path / "served.db-shm"):
            assert each.exists() and _mode(each) == 0o600, each
    finally:
        await db.close()


@pytest.mark.usefixtures("loose_umask")
async def test_an_existing_readable_sqlite_file_is_kept_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "old.db"
    path.touch(mode=0o644)
    os.chmod(path, 0o644)
    db = Database(DatabaseSettings(url=f"sqlite+aiosqlite:///{path}"))
    await db.close()
    assert _mode(path) == 0o644
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert str(path) in warning.getMessage() and "0644" in warning.getMessage()

    caplog.clear()
    os.chmod(path, 0o600)
    db = Database(DatabaseSettings(url=f"sqlite+aiosqlite:///{path}"))
    await db.close()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_request_aiohttp_cannot_parse_is_one_info_line_not_an_error(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """A 10,000-character request line is the client's doing: answered 400, logged once at
    INFO without a traceback, so nobody can flood the log with ERRORs or set off alerts."""
    install_filters()
    host, port = client.server.host, client.server.port
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET /api/v1/chats?status={'x' * 10_000} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    assert b" 400 " in status_line
    server_records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert server_records, "aiohttp said nothing: the test no longer provokes its error"
    assert all(r.levelno == logging.INFO and r.exc_info is None for r in server_records)
    assert "malformed HTTP request" in server_records[0].getMessage()
    assert "LineTooLong" in server_records[0].getMessage()
