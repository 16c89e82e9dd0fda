"""The command line as an operator meets it (issue 19): every test runs ``python -m chatpush.cli``
as a subprocess, in a directory of its own, with no CHATPUSH_* variable of the developer's shell.

Exit codes (docs/operations.md): 0 done, 1 the answer is no, 2 usage or configuration,
69 database missing or unreachable, 75 temporary (locked, another serve, port in use),
77 port not permitted.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatpush import __version__
from chatpush.cli import _parser, main
from chatpush.store.migrate import HEAD_REVISION as HEAD
from chatpush.testing import FakeClock
from chatpush.testing.fcm import FakeFcm
from tests.e2e.test_serve import chatpush_command, clean_environment, free_port, run_chatpush

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and fcntl")

STARTUP_TIMEOUT_S = 30.0
GROUPS = '[groups.main]\nnodes = ["n1"]\n'


def no_traceback(output: str) -> None:
    assert "Traceback" not in output, output


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("chatpush: ")]
    assert len(lines) == 1, stderr
    no_traceback(stderr)
    return lines[0]


def migrated(workdir: Path, config: str = GROUPS) -> Path:
    workdir.mkdir(exist_ok=True)
    (workdir / "chatpush.toml").write_text(config)
    done = run_chatpush(workdir, "migrate", "--config", "chatpush.toml")
    assert done.returncode == 0, done.stderr
    return workdir / "chatpush.db"


class Serving:
    def __init__(self, workdir: Path, port: int, *args: str, **env: str) -> None:
        self.workdir, self.port = workdir, port
        self.log = workdir / f"serve-{port}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                chatpush_command("serve", "--port", str(port), *args),
                cwd=workdir,
                env=clean_environment(CHATPUSH_LOGGING__FORMAT="json", **env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def records(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.output().splitlines() if line.startswith("{")]

    def wait_for(self, action: str) -> dict[str, object]:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            found = [r for r in self.records() if r.get("action") == action]
            if found:
                return found[0]
            if self.process.poll() is not None:
                pytest.fail(f"serve exited {self.process.returncode}:\n{self.output()}")
            time.sleep(0.05)
        pytest.fail(f"no {action} in {STARTUP_TIMEOUT_S} s:\n{self.output()}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        return self.process.returncode


@pytest.fixture
def servers() -> Iterator[list[Serving]]:
    started: list[Serving] = []
    try:
        yield started
    finally:
        for each in started:
            each.stop()


def test_config_is_accepted_before_or_after_the_subcommand(tmp_path: Path) -> None:
    migrated(tmp_path)
    for args in (
        ("--config", "chatpush.toml", "check"),
        ("check", "--config", "chatpush.toml"),
    ):
        done = run_chatpush(tmp_path, *args)
        assert done.returncode == 0, done.stderr
        assert f"config: ok ({tmp_path / 'chatpush.toml'})" in done.stdout
        assert "groups: 1: main (1 nodes; customhttp; default)" in done.stdout
    done = run_chatpush(tmp_path, "nodes", "list", "--config", "chatpush.toml")
    assert done.returncode == 0, done.stderr
    done = run_chatpush(tmp_path, "credentials", "list", "--config", "chatpush.toml")
    assert (done.returncode, json.loads(done.stdout)) == (0, {"credentials": []})


def test_read_only_commands_never_create_a_database(tmp_path: Path) -> None:
    database = tmp_path / "chatpush.db"
    for args, code in (
        (("nodes",), 69),
        (("nodes", "drain", "n1"), 69),
        (("credentials", "list"), 69),
        (("credentials", "show", "main", "fcm"), 69),
    ):
        (tmp_path / "chatpush.toml").write_text(GROUPS)
        done = run_chatpush(tmp_path, *args, "--config", "chatpush.toml")
        line = one_line(done.stderr)
        assert done.returncode == code, (args, done.stderr)
        assert f"{database} does not exist" in line and "chatpush migrate" in line
        assert not database.exists(), args
    done = run_chatpush(tmp_path, "check")
    assert done.returncode == 1
    assert f"{database} does not exist" in done.stdout
    assert f"database: sqlite+aiosqlite:///chatpush.db (file {database})" in done.stdout
    assert not database.exists()


def test_check_names_what_it_checked_and_summarizes(tmp_path: Path) -> None:
    config = (
        GROUPS + 'pushEnabled = "customhttp,comet"\n'
        "[groups.other]\nnodes = []\n"
        '[services.default]\nflex-push-resend-attempts = 2\n[services."customer-support"]\n'
        "[security]\napi_keys = []\n"
        '[[security.keys]]\nname = "agents"\nkey = "a-long-random-agent-key"\n'
        'scopes = ["chat-server"]\n'
    )
    migrated(tmp_path, config.replace("[groups.main]", "[groups.main]\ndefault = true"))
    done = run_chatpush(tmp_path, "check", "--config", "chatpush.toml")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"config: ok ({tmp_path / 'chatpush.toml'})",
        "groups: 2: main (1 nodes; customhttp,comet; default), other (0 nodes; customhttp)",
        "nodes hosted by this instance: n1",
        "services: 1 configured: customer-support (any name served; [services.default] set)",
        "keys: 1 scoped: agents (chat-server); 0 with every scope (security.api_keys); "
        "credentials_key not set",
        "callback commands: pulled (GET /api/v1/callbacks/commands)",
        f"database: sqlite+aiosqlite:///chatpush.db (file {tmp_path / 'chatpush.db'})",
        "database: reachable, schema at head",
    ]
    webhook = (
        '[callback]\ncc_webhook_url = "https://user:pw@cc.example.com:8443/commands?token=x"\n'
        'cc_webhook_signing_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"\n'
        'cc_webhook_retry_delay = "5,60"\n'
    )
    (tmp_path / "chatpush.toml").write_text(config + webhook)
    done = run_chatpush(tmp_path, "check", "--config", "chatpush.toml")
    assert done.returncode == 0, done.stderr
    assert (
        "callback commands: POSTed to https://cc.example.com:8443/commands (signed; retried "
        "after 5,60 s for 604800 s)"
    ) in done.stdout.splitlines()
    assert "pw" not in done.stdout and "token" not in done.stdout
    (tmp_path / "chatpush.toml").write_text(webhook.replace("5,60", "5,0"))
    done = run_chatpush(tmp_path, "check", "--config", "chatpush.toml")
    assert done.returncode != 0
    assert "callback.cc_webhook_retry_delay: 0 is outside 1-86400 seconds" in done.stderr


def test_migrate_says_what_it_did(tmp_path: Path) -> None:
    done = run_chatpush(tmp_path, "migrate", "--revision", "0003")
    assert f"database at revision 0003 (head is {HEAD}), upgraded from nothing" in done.stdout
    done = run_chatpush(tmp_path, "migrate")
    assert f"database at revision head ({HEAD}), upgraded from 0003" in done.stdout
    done = run_chatpush(tmp_path, "migrate", "--revision", "0003")
    assert done.returncode == 0
    assert f"database at revision head ({HEAD}), nothing to do" in done.stdout
    assert f"{HEAD} is newer than 0003: chatpush migrate never downgrades" in done.stdout
    assert "at revision 0003" not in done.stdout
    done = run_chatpush(tmp_path, "migrate", "--revision", "9999")
    assert done.returncode == 2
    assert "Can't locate revision identified by '9999'" in one_line(done.stderr)


def test_an_unreachable_postgresql_is_one_line_and_69(tmp_path: Path) -> None:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/chatpush"
    for args in (("nodes",), ("credentials", "list"), ("serve",), ("migrate",)):
        done = run_chatpush(tmp_path, *args, CHATPUSH_DATABASE__URL=url)
        line = one_line(done.stderr)
        assert done.returncode == 69, (args, done.stderr)
        assert "cannot be reached" in line and "Connect call failed" in line, line
    done = run_chatpush(tmp_path, "check", CHATPUSH_DATABASE__URL=url)
    assert done.returncode == 1 and "cannot be reached" in done.stdout


def test_a_locked_sqlite_file_is_one_line_and_75(tmp_path: Path) -> None:
    database = migrated(tmp_path)
    holder = sqlite3.connect(database, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process in the middle of a long write
        done = run_chatpush(tmp_path, "nodes", "drain", "n1", "--config", "chatpush.toml")
    finally:
        holder.close()
    line = one_line(done.stderr)
    assert done.returncode == 75
    assert "is locked by another process" in line and "try again" in line


def test_serve_logs_serving_after_the_bind_and_stops_with_a_line(
    tmp_path: Path, servers: list[Serving]
) -> None:
    migrated(tmp_path, GROUPS + '[server]\ninstance_id = "inst-a"\n')
    served = Serving(tmp_path, free_port(), "--config", "chatpush.toml")
    servers.append(served)
    started = served.wait_for("serve_started")
    # Logged after the bind: the port answers at once, and /healthz carries the version.
    with urllib.request.urlopen(f"http://127.0.0.1:{served.port}/healthz", timeout=5) as answer:
        assert json.load(answer) == {"status": "ok", "version": __version__}
    assert started["message"] == f"chatpush {__version__} serving on http://127.0.0.1:{served.port}"
    assert started["version"] == __version__
    # Times with milliseconds and the time zone.
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d", str(started["time"]))

    # `nodes` shows the node's state and hosting instance as the admin API does.
    done = run_chatpush(tmp_path, "nodes", "--config", "chatpush.toml")
    row = next(line.split() for line in done.stdout.splitlines() if line.startswith("n1 "))
    assert row[:4] == ["n1", "main", "inst-a", "available"], done.stdout

    assert served.stop() == 0
    actions = [r.get("action") for r in served.records()]
    assert actions[-2:] == ["serve_stopping", "serve_stopped"], served.output()
    stopping = next(r for r in served.records() if r.get("action") == "serve_stopping")
    assert stopping["signal"] == "SIGTERM"


def test_nodes_shows_unavailable_and_drained_nodes(tmp_path: Path) -> None:
    database = migrated(tmp_path, '[groups.main]\nnodes = ["fresh", "stale", "off"]\n')
    now_ms = int(time.time() * 1000)
    with sqlite3.connect(database) as conn:
        conn.executemany(
            "INSERT INTO nodes (name, group_name, instance_id, heartbeat_at_ms, drained) "
            "VALUES (?, 'main', ?, ?, ?)",
            [
                ("fresh", "web-1:8080", now_ms, False),
                ("stale", "web-2:8080", now_ms - 60_000, False),  # node_timeout_s is 15
                ("off", "web-1:8080", now_ms, True),
            ],
        )
    done = run_chatpush(tmp_path, "nodes", "--config", "chatpush.toml")
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines()[1:]}
    assert rows["fresh"][2:4] == ["web-1:8080", "available"]
    assert rows["stale"][2:4] == ["web-2:8080", "unavailable"]
    assert rows["off"][2:4] == ["web-1:8080", "drained"]
    assert done.stdout.splitlines()[0].split()[:4] == ["node", "group", "instance", "state"]


def test_a_second_serve_on_one_sqlite_file_is_refused(
    tmp_path: Path, servers: list[Serving]
) -> None:
    first = Serving(tmp_path, free_port())
    servers.append(first)
    first.wait_for("serve_started")
    done = run_chatpush(tmp_path, "serve", "--port", str(free_port()))
    line = one_line(done.stderr)
    assert done.returncode == 75
    assert f"another chatpush serve (process {first.process.pid}) is running on" in line
    assert str(tmp_path / "chatpush.db") in line and "chatpush.db.lock" in line
    assert "serving on" not in done.stderr
    # The first one is unharmed; once it stops, the file is free again.
    assert first.stop() == 0
    again = Serving(tmp_path, free_port())
    servers.append(again)
    again.wait_for("serve_started")


def test_a_port_in_use_is_one_line_and_75_without_serving(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_chatpush(tmp_path, "serve", "--port", str(port))
    line = one_line(done.stderr)
    assert done.returncode == 75
    assert f"cannot listen on 127.0.0.1:{port}: the address is in use" in line
    assert "serving on" not in done.stderr


def test_a_node_hosted_by_a_live_instance_stops_serve_before_serving(tmp_path: Path) -> None:
    database = migrated(tmp_path)
    with sqlite3.connect(database) as conn:
        conn.execute(
            "INSERT INTO nodes (name, group_name, instance_id, heartbeat_at_ms, drained) "
            "VALUES ('n1', 'main', 'elsewhere:8080', ?, 0)",
            (int(time.time() * 1000),),
        )
    done = run_chatpush(tmp_path, "serve", "--port", str(free_port()), "--config", "chatpush.toml")
    line = one_line(done.stderr)
    assert done.returncode == 2
    assert "node 'n1' is hosted by instance 'elsewhere:8080'" in line
    assert "serving on" not in done.stderr


def test_a_port_without_permission_is_one_line_and_77(tmp_path: Path) -> None:
    command = chatpush_command("serve", "--port", "81")
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("root without setpriv: cannot take away the right to bind port 81")
        command = [setpriv, "--bounding-set=-net_bind_service", *command]
    done = subprocess.run(
        command,
        cwd=tmp_path,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    line = one_line(done.stderr)
    assert done.returncode == 77
    assert "cannot listen on 127.0.0.1:81: permission denied" in line


def test_version_and_help_for_every_subcommand_and_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    done = run_chatpush(tmp_path, "--version")
    assert (done.returncode, done.stdout.strip()) == (0, f"chatpush {__version__}")
    for args in (
        (),
        ("serve",),
        ("migrate",),
        ("check",),
        ("nodes",),
        ("credentials",),
        ("credentials", "set"),
        ("credentials", "test"),
    ):
        with pytest.raises(SystemExit) as exited:
            main([*args, "--help"])
        assert exited.value.code == 0 and "--config" in capsys.readouterr().out, args
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "Exit codes: 0 done" in capsys.readouterr().out

    missing = []

    def walk(parser: object, path: str) -> None:
        for action in parser._actions:  # type: ignore[attr-defined]
            if action.help is None and action.dest != "help":
                if action.choices and isinstance(action.choices, dict):
                    pass  # the sub-parsers' container: each choice has its own help below
                else:
                    missing.append(f"{path} {action.dest}")
            if isinstance(action.choices, dict):
                for name, sub in action.choices.items():
                    if not any(c.dest == name for c in action._choices_actions):
                        missing.append(f"{path} {name} (no help)")
                    walk(sub, f"{path} {name}")

    walk(_parser(), "chatpush")
    assert missing == []


def test_credentials_print_real_characters_and_fail_when_unreadable(tmp_path: Path) -> None:
    key_a = run_chatpush(tmp_path, "credentials", "new-key").stdout.strip()
    key_b = run_chatpush(tmp_path, "credentials", "new-key").stdout.strip()
    migrated(tmp_path, f'[security]\ncredentials_key = "{key_a}"\n' + GROUPS)
    account = tmp_path / "account.json"
    fcm = FakeFcm(FakeClock())
    account.write_text(json.dumps(fcm.credentials(token_uri="https://oauth2.googleapis.com/token")))
    done = run_chatpush(
        tmp_path, "credentials", "set", "main", "fcm", str(account), "--config", "chatpush.toml"
    )
    assert done.returncode == 0, done.stderr
    assert "…" in done.stdout and "\\u2026" not in done.stdout
    done = run_chatpush(tmp_path, "credentials", "list", "--config", "chatpush.toml")
    assert done.returncode == 0 and "…" in done.stdout and "\\u2026" not in done.stdout

    (tmp_path / "chatpush.toml").write_text(f'[security]\ncredentials_key = "{key_b}"\n' + GROUPS)
    for args in (("list",), ("show", "main", "fcm")):
        done = run_chatpush(tmp_path, "credentials", *args, "--config", "chatpush.toml")
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert '"readable": false' in done.stdout
        assert (
            "chatpush: fcm credentials of main cannot be read: security.credentials_key does "
            "not decrypt them (was the key changed?)" in done.stderr
        )
    done = run_chatpush(
        tmp_path, "credentials", "test", "main", "fcm", "t", "--config", "chatpush.toml"
    )
    assert done.returncode == 1 and "no readable fcm credentials" in done.stdout


def test_an_unknown_environment_variable_stops_the_command(tmp_path: Path) -> None:
    done = run_chatpush(tmp_path, "serve", CHATPUSH_SEVER__PORT="9000")
    assert done.returncode == 2
    one_line(done.stderr)
    assert (
        "CHATPUSH_SEVER__PORT: sever.port: unknown key; did you mean CHATPUSH_SERVER__PORT?"
        in done.stderr
    )
    assert not (tmp_path / "chatpush.db").exists()


def test_check_reads_the_status_event_lists(tmp_path: Path) -> None:
    """A .cfg event list is read by `chatpush check`: a bad line is named, exit 2 (as for any
    invalid configuration)."""
    config = GROUPS + '[event_lists.GMS_Events]\ncfg_file = "GMS_Events.cfg"\n'
    (tmp_path).mkdir(exist_ok=True)
    (tmp_path / "GMS_Events.cfg").write_text("[_cbe_on_dial_done]\nnotify_params=_service_id\n")
    migrated(tmp_path, config)
    done = run_chatpush(tmp_path, "check", "--config", "chatpush.toml")
    assert done.returncode == 0, done.stderr + done.stdout
    (tmp_path / "GMS_Events.cfg").write_text("[_cbe_on_dial_done]\nnotify params _service_id\n")
    done = run_chatpush(tmp_path, "check", "--config", "chatpush.toml")
    assert done.returncode == 2, done.stdout
    output = done.stdout + done.stderr
    no_traceback(output)
    assert "event_lists.GMS_Events (GMS_Events.cfg) line 2" in output, output
