"""The README's callback walk-through, run as written: `chatpush serve` with
samples/callbacks.toml, samples/httpcb_receiver.py, and then every command of the section in
one shell (curl and the simulator). Only the ports and the interpreter are swapped for the
test's."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECTION = "## A callback from both sides, with curl"
STARTUP_TIMEOUT_S = 30.0
COMMANDS_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def commands() -> list[str]:
    """The section's indented code blocks, in order (a continued line joined to its block)."""
    text = (ROOT / "README.md").read_text()
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    blocks: list[str] = []
    current: list[str] = []
    for line in section.splitlines():
        if line.startswith("    "):
            current.append(line[4:])
        elif current:
            blocks.append("\n".join(current))
            current = []
    if current:
        blocks.append("\n".join(current))
    return blocks


def localised(command: str, chatpush_port: int, receiver_port: int) -> str:
    """The README's command with the test's ports and this interpreter."""
    command = command.replace("127.0.0.1:8080", f"127.0.0.1:{chatpush_port}")
    command = command.replace("127.0.0.1:8090", f"127.0.0.1:{receiver_port}")
    command = command.replace("--port 8090", f"--port {receiver_port}")
    command = command.replace(".venv/bin/python ", f"{sys.executable} ")
    return command.replace("samples/", f"{ROOT}/samples/")


def wait_for(predicate_output: Path, needle: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        output = predicate_output.read_text(errors="replace")
        if needle in output:
            return
        if process.poll() is not None:
            pytest.fail(f"exited with {process.returncode}:\n{output}")
        time.sleep(0.1)
    pytest.fail(f"{needle!r} never came:\n{predicate_output.read_text(errors='replace')}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        stop(process)


def test_the_readme_callback_walk_through_works_as_written(
    tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    serve, receive, *client = commands()
    assert serve == ".venv/bin/chatpush --config samples/callbacks.toml serve"
    assert receive.startswith(".venv/bin/python samples/httpcb_receiver.py --port 8090 ")
    assert len(client) == 4, client
    chatpush_port, receiver_port = free_port(), free_port()
    # The sample's ports are the test's; everything else of it as it is.
    config = (ROOT / "samples" / "callbacks.toml").read_text()
    assert config.count("127.0.0.1:8090") == 2 and "port = 8080" in config
    config = config.replace("127.0.0.1:8090", f"127.0.0.1:{receiver_port}")
    config = config.replace("port = 8080", f"port = {chatpush_port}")
    (tmp_path / "callbacks.toml").write_text(config)
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CHATPUSH_")}
    env["PYTHONUNBUFFERED"] = "1"

    serve_log, receiver_log = tmp_path / "serve.log", tmp_path / "receiver.log"
    with serve_log.open("wb") as out:
        started.append(
            subprocess.Popen(
                [sys.executable, "-m", "chatpush.cli", "--config", "callbacks.toml", "serve"],
                cwd=tmp_path,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        )
    with receiver_log.open("wb") as out:
        started.append(
            subprocess.Popen(
                localised(receive, chatpush_port, receiver_port),
                shell=True,
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        )
    wait_for(receiver_log, "receiver listening", started[1])
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        try:
            with socket.create_connection(("127.0.0.1", chatpush_port), timeout=1):
                break
        except OSError:
            if started[0].poll() is not None or time.monotonic() > deadline:
                pytest.fail(serve_log.read_text(errors="replace"))
            time.sleep(0.1)

    script = "set -eu\n" + "\n".join(
        localised(command, chatpush_port, receiver_port) for command in client
    )
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMANDS_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    callback_id = re.search(r"^callback ([0-9A-F]{32})$", out, re.MULTILINE)
    assert callback_id is not None, out
    cb = callback_id.group(1)
    assert f"{cb} command callback.created seq 1" in out
    assert f"{cb} call_in -> QUEUED" in out
    assert '"_action":"DisplayMenu"' in out.replace(" ", "")
    assert '"_tel_url":"tel:+18005550100"' in out.replace(" ", "")
    assert f"{cb} command callback.user_action seq 2" in out
    assert f"{cb} exit -> COMPLETED AGENT_CONNECTED" in out
    assert '"_callback_state":"COMPLETED"' in out.replace(" ", "")

    # The receiver got the status events and the device pushes, signed (it refuses others).
    wait_for(receiver_log, "_cbe_on_service_exit", started[1])
    printed = receiver_log.read_text()
    lines = [line for line in printed.splitlines() if cb in line]
    kinds = [line.split()[1] if line.startswith("push ") else line.split()[0] for line in lines]
    assert kinds[0] == "_cbe_on_service_create", printed
    assert kinds.count("CALLBACK_READY") == 2, printed
    assert kinds[-2:] == ["_cbe_on_route_to_agent", "_cbe_on_service_exit"], printed
    assert '"_action":"get-dialog-user-confirmation-provide_code-false"' in printed
    assert '"_action":"connect-inbound"' in printed
    assert "refused" not in printed
