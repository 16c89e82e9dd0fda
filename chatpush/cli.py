"""The command line: ``chatpush serve | migrate | check | nodes | credentials``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from chatpush.config import ConfigError, Settings, load_settings
from chatpush.logs import configure_logging

if TYPE_CHECKING:
    from chatpush.push.credentials import CredentialVault

log = logging.getLogger("chatpush")


def _credentials_kinds() -> list[str]:
    """The credentials kinds of the registered providers (``fcm``, ``apns``)."""
    from chatpush.providers import registry

    return list(registry.credentials_classes())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chatpush", description=__doc__)
    parser.add_argument(
        "--config", metavar="PATH", help="TOML settings file (default: $CHATPUSH_CONFIG, or none)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the service")
    serve.add_argument("--host", help="override server.host")
    serve.add_argument("--port", type=int, help="override server.port")
    migrate = commands.add_parser("migrate", help="upgrade the database schema")
    migrate.add_argument("--revision", default="head", help="target revision (default: head)")
    commands.add_parser("check", help="check config, database and schema; exit 1 on a problem")
    nodes = commands.add_parser(
        "nodes",
        help="list delivery nodes, or drain / undrain one (serving instances follow "
        "within one heartbeat interval)",
    )
    nodes.add_argument("action", choices=["list", "drain", "undrain"], nargs="?", default="list")
    nodes.add_argument("node", nargs="?", help="the node to drain or undrain")
    credentials = commands.add_parser(
        "credentials",
        help="FCM and APNs credentials of node groups, stored encrypted (docs/mobile.md)",
    )
    actions = credentials.add_subparsers(dest="action", required=True)
    actions.add_parser("new-key", help="print a new key for security.credentials_key")
    actions.add_parser("list", help="every stored set, masked")
    for name, text in (
        ("set", "store (replace) a group's credentials from a JSON file"),
        ("show", "show a group's credentials, masked"),
        ("delete", "delete a group's credentials"),
        ("test", "send one test notification to a device token"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("group", help="the node group")
        action.add_argument("kind", choices=_credentials_kinds())
        action.add_argument("--provider", help="a named provider of the group")
        if name == "set":
            action.add_argument(
                "file",
                help="JSON: a Firebase service-account file for fcm; key_id, team_id, "
                "private_key (.p8) and topic for apns; - reads stdin",
            )
        if name == "test":
            action.add_argument("device_token")
            action.add_argument("--sandbox", action="store_true", help="APNs sandbox")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "credentials" and args.action == "new-key":  # needs no settings
        from chatpush.push.credentials import new_key

        print(new_key())
        return 0
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
        return 2
    configure_logging(settings.logging.level, settings.logging.format)
    if args.command == "serve":
        return serve(settings)
    if args.command == "migrate":
        return migrate(settings, args.revision)
    if args.command == "nodes":
        if args.action != "list" and not args.node:
            print(f"chatpush: nodes {args.action} needs a node name", file=sys.stderr)
            return 2
        return asyncio.run(nodes(settings, args.action, args.node))
    if args.command == "credentials":
        if args.action == "set":
            try:
                args.text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
            except OSError as exc:
                print(f"chatpush: {exc}", file=sys.stderr)
                return 2
        return asyncio.run(credentials(settings, args))
    return asyncio.run(check(settings))


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


def serve(settings: Settings) -> int:
    from chatpush.app import create_app
    from chatpush.store import migrate as migrations

    if settings.database.is_sqlite:
        # The embedded default keeps itself at head, so a newcomer needs no extra step.
        try:
            if not migrations.sqlite_at_head(settings.database):
                migrations.upgrade(settings.database)
        except Exception as exc:  # as in `chatpush migrate`: a plain message, not a traceback
            print(f"chatpush: migration failed: {exc}", file=sys.stderr)
            return 1
    else:
        problem = asyncio.run(_schema_problem(settings))
        if problem:
            print(f"chatpush: {problem}", file=sys.stderr)
            return 1
    if not settings.security.api_keys and not settings.security.keys:
        log.warning(
            "no API keys configured (security.keys): the chat-server side API refuses every call",
            extra={"action": "no_api_keys"},
        )
    elif settings.security.api_keys:
        log.warning(
            "security.api_keys grant every scope (chat-server, admin, bridge, metrics) to each "
            "key; prefer [[security.keys]] with only the scopes each caller needs",
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
        return 2
    log.info(
        "chatpush serving on http://%s:%d",
        settings.server.host,
        settings.server.port,
        extra={
            "action": "serve_started",
            "database": _redacted(settings.database.url),
            "event_loop": loop_name,
        },
    )
    try:
        web.run_app(
            create_app(settings),
            loop=loop,
            host=settings.server.host,
            port=settings.server.port,
            shutdown_timeout=settings.server.shutdown_timeout_s,
            print=None,
            access_log=None,
        )
    except ConfigError as exc:  # found at start-up, e.g. a node another live instance hosts
        print(f"chatpush: {exc}", file=sys.stderr)
        return 2
    return 0


def migrate(settings: Settings, revision: str) -> int:
    from chatpush.store import migrate as migrations

    try:
        migrations.upgrade(settings.database, revision)
    except Exception as exc:  # Alembic and the drivers raise many kinds; report any plainly.
        print(f"chatpush: migration failed: {exc}", file=sys.stderr)
        return 1
    print(f"database at revision {revision}: {_redacted(settings.database.url)}")
    return 0


async def check(settings: Settings) -> int:
    print("config: ok")
    problem = await _schema_problem(settings)
    if problem:
        print(problem)
        return 1
    print("database: reachable, schema at head")
    return 0


async def nodes(settings: Settings, action: str, node: str | None) -> int:
    """Nodes as the database knows them (heartbeats are written by serving instances)."""
    from chatpush.store import nodes, subscriptions
    from chatpush.store.database import Database

    db = Database.from_settings(settings.database)
    try:
        if action != "list":
            assert node is not None
            found = await db.write(nodes.set_drained, node, action == "drain")
            if not found:
                print(f"chatpush: unknown node {node!r}", file=sys.stderr)
                return 1
            print(f"node {node} {action}ed")
            return 0
        records = await db.read(nodes.list_nodes)
        pinned = await db.read(subscriptions.pinned_chats)
    finally:
        await db.close()
    print(f"{'node':<20} {'group':<20} {'state':<10} {'heartbeat (UTC)':<20} pinned chats")
    for record in records:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(record.heartbeat_at_ms / 1000))
        state = "drained" if record.drained else "active"
        chats = pinned.get(record.name, [])
        print(f"{record.name:<20} {record.group_name:<20} {state:<10} {when:<20} {len(chats)}")
    return 0


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
        return 2
    db = Database.from_settings(settings.database)
    vault = CredentialVault(db, SystemClock(), settings.security.credentials_key)
    try:
        if args.action == "list":
            shown = [item.to_wire() for item in await vault.show_all()]
            print(json.dumps({"credentials": shown}, indent=2))
            return 0
        if args.action == "set":
            try:
                fields = credential_fields(args.kind, json.loads(args.text), settings.mobile)
            except ValueError as exc:  # json.JSONDecodeError is one too
                print(f"chatpush: {args.kind} credentials: {exc}", file=sys.stderr)
                return 2
            stored = await vault.put(args.kind, group, args.provider, fields)
            print(json.dumps(stored.to_wire(), indent=2))
            return 0
        if args.action == "show":
            found = await vault.show(args.kind, group, args.provider)
            if found is None:
                print(f"chatpush: no {args.kind} credentials for {group}", file=sys.stderr)
                return 1
            print(json.dumps(found.to_wire(), indent=2))
            return 0
        if args.action == "delete":
            if not await vault.remove(args.kind, group, args.provider):
                print(f"chatpush: no {args.kind} credentials for {group}", file=sys.stderr)
                return 1
            print(f"{args.kind} credentials of {group} deleted")
            return 0
        verdict = await _test_credentials(settings, vault, args)
        print(json.dumps(verdict, indent=2))
        return 0 if verdict["ok"] else 1
    except ChatpushError as exc:
        print(f"chatpush: {exc}", file=sys.stderr)
        return 1
    finally:
        await db.close()


async def _test_credentials(
    settings: Settings, vault: CredentialVault, args: argparse.Namespace
) -> dict[str, object]:
    from chatpush.clock import SystemClock
    from chatpush.providers import registry
    from chatpush.providers.base import ProviderContext
    from chatpush.providers.http import HttpClient

    fields = await vault.lookup(args.kind, args.group, args.provider)
    if fields is None:
        return {"ok": False, "error": f"no {args.kind} credentials for {args.group}"}
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


async def _schema_problem(settings: Settings) -> str | None:
    from chatpush.store import migrate as migrations
    from chatpush.store.database import make_engine

    head = migrations.head_revision(settings.database)
    missing = _missing_sqlite_file(settings.database.url)
    if missing is not None:
        # Connecting would create an empty file: a check must not leave one behind.
        return (
            f"database: schema at nothing ({missing} does not exist), head is {head}:"
            " run `chatpush migrate`"
        )
    engine = make_engine(settings.database)
    try:
        current = await migrations.current_revision(engine)
    except Exception as exc:  # unreachable server, bad credentials, unreadable file
        return f"database: unreachable ({_redacted(settings.database.url)}): {exc}"
    finally:
        await engine.dispose()
    if current != head:
        return f"database: schema at {current or 'nothing'}, head is {head}: run `chatpush migrate`"
    return None


def _missing_sqlite_file(url: str) -> str | None:
    """The path of a SQLite database file that does not exist yet, else None."""
    from pathlib import Path

    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    path = parsed.database
    if parsed.get_backend_name() != "sqlite" or not path or path == ":memory:":
        return None
    if "uri" in parsed.query or path.startswith("file:"):
        return None
    return None if Path(path).exists() else path


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


if __name__ == "__main__":
    sys.exit(main())
