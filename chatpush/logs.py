"""Logging as events: a stable ``action`` on every record, JSON when not on a terminal."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import datetime
from typing import Any

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def timestamp(record: logging.LogRecord) -> str:
    """ISO 8601 in local time with milliseconds and the offset: 2026-12-04T18:24:22.123+00:00."""
    return datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="milliseconds")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


# What a client sends can reach a log line (a path, a channel, a name): in the text format these
# characters are written escaped, so that no value can start a line of its own or drive the
# terminal. C0 and C1 controls, DEL, the Unicode line and paragraph separators, and the bidi
# overrides and isolates (which reorder what a terminal shows).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# An extra's value is quoted when it holds these (or is empty), so it cannot pass for more pairs.
_NEEDS_QUOTES = re.compile(r'[\s="]|^$')


def escape(text: str) -> str:
    """``text`` with every control character written as a Python escape (``\\n``, ``\\x1b``)."""
    return _UNSAFE.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _value(value: Any) -> str:
    text = str(value)
    if _NEEDS_QUOTES.search(text):
        return '"' + escape(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'
    return escape(text)


class TextFormatter(logging.Formatter):
    """One line per record, ``key=value`` extras after the message; a traceback follows on
    lines indented by two spaces. Control characters in the message, the extras and the
    traceback are escaped (``escape``), so a record never shows as more records."""

    def format(self, record: logging.LogRecord) -> str:
        record.message = escape(record.getMessage())
        record.asctime = timestamp(record)
        line = self.formatMessage(record)
        extras = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        if extras:
            line += " " + " ".join(
                f"{escape(key)}={_value(value)}" for key, value in extras.items()
            )
        details = []
        if record.exc_info:
            details.append(self.formatException(record.exc_info))
        elif record.exc_text:
            details.append(record.exc_text)
        if record.stack_info:
            details.append(self.formatStack(record.stack_info))
        for detail in details:
            line += "".join(f"\n  {escape(part)}" for part in detail.split("\n"))
        return line


class MalformedRequestFilter(logging.Filter):
    """aiohttp logs a request it cannot parse (a line too long, a bad header) at ERROR with a
    traceback, though it is the client's doing and answered 400: anyone could flood the log and
    set off error alerts. Such records become one INFO line without the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            return True
        # Imported here: the CLI's commands that serve nothing need not import aiohttp.
        from aiohttp.http_exceptions import HttpProcessingError

        if isinstance(exc, HttpProcessingError) and 400 <= (exc.code or 0) < 500:
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg = "malformed HTTP request from %s: %s"
            peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.args = (peer, f"{type(exc).__name__}: {exc.message}")
            record.exc_info = record.exc_text = None
            record.action = "malformed_request"
        return True


def install_filters() -> None:
    """Filters that hold whatever handlers are configured (idempotent)."""
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, MalformedRequestFilter) for f in server_log.filters):
        server_log.addFilter(MalformedRequestFilter())


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler.setFormatter(
        JsonFormatter()
        if use_json
        else TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    install_filters()
    for noisy in ("aiohttp.access", "alembic", "apscheduler"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
