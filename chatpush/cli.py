"""The command line: ``chatpush [--version] serve | migrate | check | nodes | credentials``."""

from __future__ import annotations

import argparse
import asyncio
import errno
import gc
import logging
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from chatpush import __version__
from chatpush.config import ConfigError, Settings, load_settings
from chatpush.errors import StorageUnavailable
from chatpush.logs import configure_logging

if TYPE_CHECKING:
    from aiohttp import web

    from chatpush.push.credentials import CredentialVault, StoredCredentials

log = logging.getLogger("chatpush")


EXIT_OK = 0
EXIT_NO = 1
"""The command ran and the answer is no: a check found a problem, an unknown node, a failed test."""
EXIT_USAGE = 2
"""Usage or configuration: a bad option, an invalid setting, a node another live instance hosts."""
EXIT_UNAVAILABLE = 69
"""sysexits EX_UNAVAILABLE: the database is missing, not migrated or cannot be reached."""
EXIT_TEMPFAIL = 75
"""sysexits EX_TEMPFAIL: try again later: the SQLite file is locked or served by another
``chatpush serve``, the port is in use."""
EXIT_NOPERM = 77
"""sysexits EX_NOPERM: the port may not be bound by this user (below 1024 without the right)."""


def storage_errors() -> tuple[type[BaseException], ...]:
    """What a command reports in one line (``_storage_failure``); anything else is a bug and keeps
    its traceback. A function, so that commands which never open a database (``--version``,
    ``credentials new-key``) do not pay for importing SQLAlchemy."""
    from sqlalchemy.exc import SQLAlchemyError

    return (
        StorageUnavailable,
        sqlite3.Error,  # the SQLite writer's own connection: "database is locked"
        SQLAlchemyError,
        OSError,  # asyncpg's refused or timed-out connections
    )


class _CredentialsKinds:
    """The credentials kinds of the registered providers (``fcm``, ``apns``), as argparse
    ``choices`` read only when a ``credentials`` command is parsed or its help printed: finding
    them imports every provider, which ``--version`` or ``check`` should not pay for."""

    def _kinds(self) -> list[str]:
        from chatpush.providers import registry

        return list(registry.credentials_classes())

    def __contains__(self, kind: object) -> bool:
        return kind in self._kinds()

    def __iter__(self) -> Iterator[str]:
        return iter(self._kinds())


def _config_option(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    """``--config`` on the top parser and on every subcommand, so it may come before or after
    the subcommand; a subcommand's copy leaves the attribute alone when not given."""
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=None if top else argparse.SUPPRESS,
        help="TOML settings file (default: $CHATPUSH_CONFIG, or none: defaults and "
        "CHATPUSH_* variables)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatpush",
        description=__doc__,
        epilog="Exit codes: 0 done; 1 the answer is no (a failed check, an unknown node); "
        "2 usage or configuration; 69 database missing or unreachable; 75 temporary (database "
        "locked, another serve on the SQLite file, port in use); 77 port not permitted. "
        "docs/operations.md has the details.",
    )
    _config_option(parser, top=True)
    parser.add_argument(
        "--version", action="version", version=f"chatpush {__version__}", help="print the version"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        parent: argparse._SubParsersAction[argparse.ArgumentParser], name: str, text: str
    ) -> argparse.ArgumentParser:
        sub = parent.add_parser(name, help=text, description=text)
        _config_option(sub)
        return sub

    serve = command(
        commands,
        "serve",
        "run the service (on SQLite it creates and migrates the database file itself)",
    )
    serve.add_argument("--host", help="override server.host (the address to listen on)")
    serve.add_argument("--port", type=int, help="override server.port (the TCP port)")
    migrate = command(commands, "migrate", "upgrade the database schema (never downgrades)")
    migrate.add_argument(
        "--revision", default="head", help="target revision, e.g. 0004 (default: head)"
    )
    command(
        commands,
        "check",
        "check the settings, the database and its schema, and summarize groups, nodes, "
        "services and keys; exit 1 on a problem",
    )
    nodes = command(
        commands,
        "nodes",
        "list delivery nodes, or drain / undrain one (serving instances follow "
        "within one heartbeat interval)",
    )
    nodes.add_argument(
        "action",
        choices=["list", "drain", "undrain"],
        nargs="?",
        default="list",
        help="list (the default), drain or undrain",
    )
    nodes.add_argument("node", nargs="?", help="the node to drain or undrain")
    credentials = command(
        commands,
        "credentials",
        "FCM and APNs credentials of node groups, stored encrypted (docs/mobile.md)",
    )
    actions = credentials.add_subparsers(dest="action", required=True, metavar="ACTION")
    command(actions, "new-key", "print a new key for security.credentials_key")
    command(actions, "list", "every stored set, masked; exit 1 if one cannot be decrypted")
    for name, text in (
        ("set", "store (replace) a group's credentials from a JSON file"),
        ("show", "show a group's credentials, masked; exit 1 if they cannot be decrypted"),
        ("delete", "delete a group's credentials"),
        ("test", "send one test notification to a device token"),
    ):
        action = command(actions, name, text)
        action.add_argument("group", help="the node group")
        action.add_argument("kind", choices=_CredentialsKinds(), metavar="kind", help="fcm or apns")
        action.add_argument("--provider", help="a named provider of the group")
        if name == "set":
            action.add_argument(
                "file",
                help="JSON: a Firebase service-account file for fcm; key_id, team_id, "
                "private_key (.p8) and topic for apns; - reads stdin",
            )
        if name == "test":
            action.add_argument("device_token", help="the FCM registration or APNs device token")
            action.add_argument("--sandbox", action="store_true", help="APNs sandbox")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "credentials" and args.action == "new-key":  # needs no settings
        from chatpush.push.credentials import new_key

        print(new_key())
        return EXIT_OK
    try:
        overrides = {}
        if args.command == "serve" and (args.host or args.port is not None):
            server: dict[str, object] = {}
            if args.host:
                server["host"] = args.host
            if args.port is not None:
                server["port"] = args.port
            overrides["server"] = server
        settings = load_settings(args.config, **overrides)
    except ConfigError as exc:
        print(f"chatpush: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(settings.logging.level, settings.logging.format)
    if args.command == "serve":
        return serve(settings)
    if args.command == "migrate":
        return migrate(settings, args.revision)
    if args.command == "check":
        config_path = args.config or os.environ.get("CHATPUSH_CONFIG")
        return asyncio.run(check(settings, Path(config_path).absolute() if config_path else None))
    if args.command == "nodes" and args.action != "list" and not args.node:
        print(f"chatpush: nodes {args.action} needs a node name", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "credentials" and args.action == "set":
        try:
            args.text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
        except OSError as exc:
            print(f"chatpush: {exc}", file=sys.stderr)
            return EXIT_USAGE
    # The other commands read or change an existing database, never make one.
    problem = asyncio.run(_schema_problem(settings))
    if problem is not None:
        print(f"chatpush: {problem.message}", file=sys.stderr)
        return problem.exit_code
    try:
        if args.command == "nodes":
            return asyncio.run(nodes(settings, args.action, args.node))
        return asyncio.run(credentials(settings, args))
    except storage_errors() as exc:
        message, code = _storage_failure(exc, settings)
        print(f"chatpush: {message}", file=sys.stderr)
        return code


def _event_loop(choice: str) -> tuple[asyncio.AbstractEventLoop, str]:
    """The loop ``serve`` runs on (``server.event_loop``) and its name; ImportError when
    uvloop is asked for and missing."""
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise
        else:
            return uvloop.new_event_loop(), "uvloop"
    return asyncio.new_event_loop(), "asyncio"


GC_FIRST_THRESHOLD = 50_000
"""The cyclic garbage collector's first threshold while serving (Python's default is 700).

A serving process keeps tens of thousands of long-lived objects (CometD sessions, held connects,
connections), and every collection of the older generations walks them all. A young generation
of 50,000 allocations instead of 700 makes those collections about seventy times rarer; the
process makes no cyclic garbage of note (docs/PERFORMANCE.md §6.2 measured 0 unreachable objects
after 2,000 CometD round trips), so memory does not grow for it. Measured on the CometD benchmark:
about 10% less CPU per message (1-23%); docs/operations.md, "The garbage collector"."""


def tune_collector() -> None:
    """The collector's settings of a serving process (``GC_FIRST_THRESHOLD``); the CometD
    benchmark's server calls this too, so that it measures what ``serve`` runs."""
    gc.set_threshold(GC_FIRST_THRESHOLD, *gc.get_threshold()[1:])


def freeze_startup_objects() -> None:
    """Once started: the objects of the start-up (modules, classes, the app, SQLAlchemy's
    metadata, compiled templates: about 144,000) leave the collector's sight for good
    (``gc.freeze``), after one last collection of the start-up's garbage. Every full collection
    walked them all, the event loop standing still meanwhile: about 300 ms each on the shared
    2-core machine, a stall of every request and send in flight (docs/PERFORMANCE.md §10); after
    the freeze, it walks only what was made since."""
    gc.collect()
    gc.freeze()


def serve(settings: Settings) -> int:
    from chatpush.store import migrate as migrations

    lock: SqliteLock | None = None
    if settings.database.is_sqlite:
        path = sqlite_path(settings.database.url)
        if path is not None:
            try:
                lock = SqliteLock.acquire(path)
            except LockHeld as exc:
                print(f"chatpush: {exc}", file=sys.stderr)
                return EXIT_TEMPFAIL
            except OSError as exc:
                print(
                    f"chatpush: cannot open the lock file {path}.lock beside the database: "
                    f"{exc.strerror or exc}",
                    file=sys.stderr,
                )
                return EXIT_USAGE
    try:
        if settings.database.is_sqlite:
            # The embedded default keeps itself at head, so a newcomer needs no extra step.
            try:
                if not migrations.sqlite_at_head(settings.database):
                    migrations.upgrade(settings.database)
            except Exception as exc:  # as in `chatpush migrate`: a plain message, no traceback
                message, code = _storage_failure(exc, settings)
                print(f"chatpush: migration failed: {message}", file=sys.stderr)
                return code
        else:
            problem = asyncio.run(_schema_problem(settings))
            if problem:
                print(f"chatpush: {problem.message}", file=sys.stderr)
                return problem.exit_code
        if not settings.security.api_keys and not settings.security.keys:
            log.warning(
                "no API keys configured (security.keys): the chat-server side API refuses "
                "every call",
                extra={"action": "no_api_keys"},
            )
        elif settings.security.api_keys:
            log.warning(
                "security.api_keys grant every scope (chat-server, admin, bridge, metrics) to "
                "each key; prefer [[security.keys]] with only the scopes each caller needs",
                extra={"action": "broad_api_keys"},
            )
        try:
            loop, loop_name = _event_loop(settings.server.event_loop)
        except ImportError:
            print(
                "chatpush: server.event_loop is uvloop, but uvloop is not installed "
                '(pip install uvloop, or set event_loop = "auto")',
                file=sys.stderr,
            )
            return EXIT_USAGE
        asyncio.set_event_loop(loop)
        tune_collector()
        try:
            return loop.run_until_complete(_serve(settings, loop_name))
        finally:
            # As aiohttp's run_app ends: what is left of the tasks is cancelled and awaited.
            left = asyncio.all_tasks(loop)
            for task in left:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            asyncio.set_event_loop(None)
    finally:
        if lock is not None:
            lock.release()


async def _serve(settings: Settings, loop_name: str) -> int:
    """Start-up (node checks), bind, serve until SIGTERM or SIGINT, shut down: "serving on" is
    logged only once requests can be answered, and every failure is one line and an exit code."""
    from aiohttp import web

    from chatpush.app import create_app
    from chatpush.cometd import FrontRunner

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[str] = []

    def on_signal(name: str) -> None:
        received.append(name)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signal.Signals(signum).name)
    runner = FrontRunner(  # an AppRunner, with the lean CometD front if the app has one
        create_app(settings),
        handle_signals=False,
        access_log=None,
        shutdown_timeout=settings.server.shutdown_timeout_s,
    )
    try:
        try:
            await runner.setup()  # the start-up: leases, node registration and checks
        except ConfigError as exc:  # e.g. a node another live instance hosts
            print(f"chatpush: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except storage_errors() as exc:
            message, code = _storage_failure(exc, settings)
            print(f"chatpush: {message}", file=sys.stderr)
            return code
        freeze_startup_objects()
        site = web.TCPSite(runner, settings.server.host, settings.server.port)
        try:
            await site.start()
        except OSError as exc:
            message, code = _bind_failure(exc, settings)
            print(f"chatpush: {message}", file=sys.stderr)
            return code
        log.info(
            "chatpush %s serving on %s",
            __version__,
            ", ".join(_listening(runner)) or site.name,
            extra={
                "action": "serve_started",
                "version": __version__,
                "database": _redacted(settings.database.url),
                "event_loop": loop_name,
            },
        )
        await stop.wait()
        log.info(
            "chatpush stopping (%s): finishing requests and deliveries in flight",
            received[0] if received else "stop",
            extra={"action": "serve_stopping", "signal": received[0] if received else None},
        )
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await runner.cleanup()
    log.info("chatpush stopped", extra={"action": "serve_stopped"})
    return EXIT_OK


def _listening(runner: web.AppRunner) -> list[str]:
    """The addresses actually bound (port 0 becomes the port the system chose)."""
    found = []
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            host = f"[{address[0]}]" if ":" in str(address[0]) else address[0]
            found.append(f"http://{host}:{address[1]}")
    return found


def _bind_failure(exc: OSError, settings: Settings) -> tuple[str, int]:
    where = f"{settings.server.host}:{settings.server.port}"
    if exc.errno == errno.EADDRINUSE:
        return (
            f"cannot listen on {where}: the address is in use (another process serves on this "
            "port; stop it, or choose another with --port or server.port)",
            EXIT_TEMPFAIL,
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (
            f"cannot listen on {where}: permission denied (ports below 1024 need a privilege, "
            "e.g. CAP_NET_BIND_SERVICE; or choose a port above 1023)",
            EXIT_NOPERM,
        )
    return f"cannot listen on {where}: {exc.strerror or exc}", EXIT_USAGE


def migrate(settings: Settings, revision: str) -> int:
    from alembic.util import CommandError

    from chatpush.store import migrate as migrations

    where = _redacted(settings.database.url)
    try:
        before = asyncio.run(_current_revision(settings))
        migrations.upgrade(settings.database, revision)
        after = asyncio.run(_current_revision(settings))
    except CommandError as exc:  # e.g. no such revision: the command line's fault
        print(f"chatpush: migration failed: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # Alembic and the drivers raise many kinds; report any plainly.
        message, code = _storage_failure(exc, settings)
        print(f"chatpush: migration failed: {message}", file=sys.stderr)
        return code
    head = migrations.HEAD_REVISION
    at = f"head ({after})" if after == head else f"{after} (head is {head})"
    if before == after:
        print(f"database at revision {at}, nothing to do: {where}")
        if revision not in ("head", after):
            print(f"  {after} is newer than {revision}: chatpush migrate never downgrades")
    else:
        print(f"database at revision {at}, upgraded from {before or 'nothing'}: {where}")
    return EXIT_OK


async def _current_revision(settings: Settings) -> str | None:
    from chatpush.store import migrate as migrations
    from chatpush.store.database import make_engine

    if _missing_sqlite_file(settings.database.url) is not None:
        return None
    engine = make_engine(settings.database)
    try:
        return await migrations.current_revision(engine)
    finally:
        await engine.dispose()


async def check(settings: Settings, config_path: Path | None) -> int:
    """What ``serve`` would run with, then whether the database is ready for it."""
    if config_path is not None:
        print(f"config: ok ({config_path})")
    else:
        print("config: ok (no file: defaults and CHATPUSH_* variables)")
    for line in summary(settings):
        print(line)
    database = _redacted(settings.database.url)
    path = sqlite_path(settings.database.url)
    if path is not None:
        database += f" (file {path})"
    print(f"database: {database}")
    problem = await _schema_problem(settings)
    if problem:
        print(problem.message)
        return EXIT_NO
    print("database: reachable, schema at head")
    return EXIT_OK


def summary(settings: Settings) -> list[str]:
    """The settings an operator wants to see confirmed, one line each."""
    lines = []
    groups = settings.groups
    if groups:
        default = settings.default_group
        described = [
            f"{name} ({len(group.nodes)} nodes; {','.join(group.push_enabled)}"
            f"{'; default' if name == default else ''})"
            for name, group in groups.items()
        ]
        lines.append(f"groups: {len(groups)}: {', '.join(described)}")
    else:
        lines.append("groups: none (push notifications have nowhere to go)")
    hosted = settings.hosted_nodes
    lines.append(
        f"nodes hosted by this instance: {', '.join(hosted) if hosted else 'none'}"
        + ("" if settings.server.nodes is None else " (server.nodes)")
    )
    services = [name for name in settings.services if name != "default"]
    restricted = "only these are served" if settings.chat.restrict_services else "any name served"
    lines.append(
        f"services: {len(services)} configured"
        + (f": {', '.join(services)}" if services else "")
        + f" ({restricted}; [services.default] "
        + ("set" if "default" in settings.services else "not set")
        + ")"
    )
    security = settings.security
    keys = [f"{key.name} ({','.join(key.scopes)})" for key in security.keys]
    lines.append(
        f"keys: {len(security.keys)} scoped"
        + (f": {', '.join(keys)}" if keys else "")
        + f"; {len(security.api_keys)} with every scope (security.api_keys)"
        + f"; credentials_key {'set' if security.credentials_key is not None else 'not set'}"
    )
    lines.append(_cc_commands(settings))
    return lines


def _cc_commands(settings: Settings) -> str:
    """How the contact-centre side gets its callback commands (docs/callbacks.md §4.2)."""
    import urllib.parse

    callback = settings.callback
    if callback.cc_webhook_url is None:
        return "callback commands: pulled (GET /api/v1/callbacks/commands)"
    where = urllib.parse.urlsplit(callback.cc_webhook_url)
    host = where.hostname or ""
    shown = f"{where.scheme}://{host}{'' if where.port is None else f':{where.port}'}{where.path}"
    delays = ",".join(str(delay) for delay in callback.cc_webhook_retry_delays_s)
    return (
        f"callback commands: POSTed to {shown} ("
        + ("signed" if callback.cc_webhook_signing_secret is not None else "NOT signed")
        + ("; Authorization set" if callback.cc_webhook_authorization is not None else "")
        + f"; retried after {delays} s for {callback.command_retention_s} s"
        + ("" if settings.groups else "; no node group to send them through: none can go")
        + ")"
    )


async def nodes(settings: Settings, action: str, node: str | None) -> int:
    """Nodes as the database knows them (heartbeats are written by serving instances)."""
    from chatpush.clock import SystemClock
    from chatpush.store import nodes, subscriptions
    from chatpush.store.database import Database

    db = Database.from_settings(settings.database)
    try:
        if action != "list":
            assert node is not None
            found = await db.write(nodes.set_drained, node, action == "drain")
            if not found:
                print(f"chatpush: unknown node {node!r}", file=sys.stderr)
                return EXIT_NO
            print(f"node {node} {action}ed")
            return EXIT_OK
        records = await db.read(nodes.list_nodes)
        pinned = await db.read(subscriptions.pinned_chats)
    finally:
        await db.close()
    now_ms = SystemClock().now_ms()
    timeout_ms = int(settings.delivery.node_timeout_s * 1000)
    print(
        f"{'node':<20} {'group':<16} {'instance':<24} {'state':<12} "
        f"{'heartbeat (UTC)':<20} {'age':>8} pinned chats"
    )
    for record in records:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(record.heartbeat_at_ms / 1000))
        age_s = max(0, now_ms - record.heartbeat_at_ms) // 1000
        if record.drained:
            state = "drained"
        elif record.available_at(now_ms, timeout_ms):
            state = "available"
        else:
            state = "unavailable"  # no heartbeat for node_timeout_s: its instance is gone
        chats = pinned.get(record.name, [])
        print(
            f"{record.name:<20} {record.group_name:<16} {record.instance_id:<24} {state:<12} "
            f"{when:<20} {age_s:>7}s {len(chats)}"
        )
    return EXIT_OK


def _dumps(value: object) -> str:
    """JSON for a person: the masks' ellipsis and any name as written, not ``\\u2026``."""
    import json

    return json.dumps(value, indent=2, ensure_ascii=False)


async def credentials(settings: Settings, args: argparse.Namespace) -> int:
    """The admin API's credentials calls, straight on the database (docs/mobile.md)."""
    import json

    from chatpush.clock import SystemClock
    from chatpush.errors import ChatpushError
    from chatpush.push.credentials import CredentialVault, credential_fields
    from chatpush.store.database import Database

    group: str = getattr(args, "group", "")
    if args.action != "list" and group not in settings.groups:
        print(f"chatpush: unknown node group {group!r}", file=sys.stderr)
        return EXIT_USAGE
    db = Database.from_settings(settings.database)
    vault = CredentialVault(db, SystemClock(), settings.security.credentials_key)
    try:
        if args.action == "list":
            stored = await vault.show_all()
            print(_dumps({"credentials": [item.to_wire() for item in stored]}))
            return _unreadable(stored, settings)
        if args.action == "set":
            try:
                fields = credential_fields(args.kind, json.loads(args.text), settings.mobile)
            except ValueError as exc:  # json.JSONDecodeError is one too
                print(f"chatpush: {args.kind} credentials: {exc}", file=sys.stderr)
                return EXIT_USAGE
            put = await vault.put(args.kind, group, args.provider, fields)
            print(_dumps(put.to_wire()))
            return EXIT_OK
        if args.action == "show":
            found = await vault.show(args.kind, group, args.provider)
            if found is None:
                print(f"chatpush: no {args.kind} credentials for {group}", file=sys.stderr)
                return EXIT_NO
            print(_dumps(found.to_wire()))
            return _unreadable([found], settings)
        if args.action == "delete":
            if not await vault.remove(args.kind, group, args.provider):
                print(f"chatpush: no {args.kind} credentials for {group}", file=sys.stderr)
                return EXIT_NO
            print(f"{args.kind} credentials of {group} deleted")
            return EXIT_OK
        verdict = await _test_credentials(settings, vault, args)
        print(_dumps(verdict))
        return EXIT_OK if verdict["ok"] else EXIT_NO
    except ChatpushError as exc:
        if isinstance(exc, StorageUnavailable):
            raise
        print(f"chatpush: {exc}", file=sys.stderr)
        return EXIT_NO
    finally:
        await db.close()


def _unreadable(stored: Sequence[StoredCredentials], settings: Settings) -> int:
    """EXIT_NO, with a line naming each set the key cannot decrypt; EXIT_OK when there is none."""
    bad = [item for item in stored if not item.readable]
    for item in bad:
        named = f" (provider {item.provider})" if item.provider else ""
        reason = (
            "security.credentials_key is not set"
            if settings.security.credentials_key is None
            else "security.credentials_key does not decrypt them (was the key changed?)"
        )
        print(
            f"chatpush: {item.kind} credentials of {item.group}{named} cannot be read: {reason}",
            file=sys.stderr,
        )
    return EXIT_NO if bad else EXIT_OK


async def _test_credentials(
    settings: Settings, vault: CredentialVault, args: argparse.Namespace
) -> dict[str, object]:
    from chatpush.clock import SystemClock
    from chatpush.providers import registry
    from chatpush.providers.base import ProviderContext
    from chatpush.providers.http import HttpClient

    fields = await vault.lookup(args.kind, args.group, args.provider)
    if fields is None:
        return {"ok": False, "error": f"no readable {args.kind} credentials for {args.group}"}
    http = HttpClient()
    context = ProviderContext(settings, SystemClock(), vault, http)
    provider = registry.credentials_classes()[args.kind].create(context)
    await http.start()
    await provider.start()
    try:
        result = await provider.test_credentials(fields, args.device_token, sandbox=args.sandbox)
    finally:
        await provider.close()
        await http.close()
    return {"ok": result.outcome == "sent", "outcome": result.outcome, "error": result.error}


@dataclass(frozen=True)
class Problem:
    message: str
    exit_code: int


async def _schema_problem(settings: Settings) -> Problem | None:
    """Why the database cannot be used as it is, or None; never creates a SQLite file."""
    from chatpush.store import migrate as migrations
    from chatpush.store.database import make_engine

    head = migrations.HEAD_REVISION
    missing = _missing_sqlite_file(settings.database.url)
    if missing is not None:
        # Connecting would create an empty file: a check must not leave one behind.
        return Problem(
            f"database: schema at nothing: {missing} does not exist (head is {head}): "
            "run `chatpush migrate` (or `chatpush serve`) with the same settings first",
            EXIT_UNAVAILABLE,
        )
    engine = make_engine(settings.database)
    try:
        current = await migrations.current_revision(engine)
    except Exception as exc:  # unreachable server, bad credentials, unreadable file
        message, code = _storage_failure(exc, settings)
        return Problem(f"database: {message}", code)
    finally:
        await engine.dispose()
    if current != head:
        return Problem(
            f"database: schema at {current or 'nothing'}, head is {head}: run `chatpush migrate`",
            EXIT_UNAVAILABLE,
        )
    return None


def _storage_failure(exc: BaseException, settings: Settings) -> tuple[str, int]:
    """One line for a storage failure and its exit code: 75 when the SQLite file is locked
    (another process holds its write lock: try again), 69 otherwise."""
    where = _redacted(settings.database.url)
    cause: BaseException | None = exc
    seen: list[BaseException] = []
    while cause is not None and len(seen) < 10:
        seen.append(cause)
        cause = cause.__cause__ or cause.__context__
    texts = [str(getattr(item, "orig", None) or item) for item in seen]
    if any("database is locked" in text for text in texts):
        return (
            f"{where} is locked by another process (a migration or a long write); try again",
            EXIT_TEMPFAIL,
        )
    root = seen[-1]
    detail = (str(root) or type(root).__name__).splitlines()[0]
    if isinstance(exc, StorageUnavailable) or any(isinstance(item, OSError) for item in seen):
        return f"{where} cannot be reached: {detail}", EXIT_UNAVAILABLE
    first = (str(exc) or type(exc).__name__).splitlines()[0]
    return f"{where}: {first}", EXIT_UNAVAILABLE


def sqlite_path(url: str) -> Path | None:
    """The absolute path of a SQLite database file, else None (PostgreSQL, memory, URIs)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    path = parsed.database
    if parsed.get_backend_name() != "sqlite" or not path or path == ":memory:":
        return None
    if "uri" in parsed.query or path.startswith("file:"):
        return None
    return Path(path).absolute()


def _missing_sqlite_file(url: str) -> str | None:
    """The path of a SQLite database file that does not exist yet, else None."""
    path = sqlite_path(url)
    return None if path is None or path.exists() else str(path)


class LockHeld(Exception):
    """Another ``chatpush serve`` holds the SQLite file's lock."""


class SqliteLock:
    """``<database>.lock`` beside the SQLite file, locked (``fcntl.flock``) for the life of one
    ``chatpush serve``: one SQLite file has one writer, so a second serve is refused. The system
    releases the lock when the process ends, however it ends; the file itself stays."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    @classmethod
    def acquire(cls, database: Path) -> SqliteLock:
        import fcntl

        lock_path = database.with_name(database.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip()
            os.close(fd)
            by = f" (process {holder})" if holder.isdigit() else ""
            raise LockHeld(
                f"another chatpush serve{by} is running on {database} (it holds {lock_path}); "
                "one SQLite file serves one instance: stop that one first, or use PostgreSQL "
                "for several"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return cls(fd)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing drops the lock
            self._fd = -1


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


if __name__ == "__main__":
    sys.exit(main())
