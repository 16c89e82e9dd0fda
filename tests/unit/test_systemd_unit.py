"""samples/systemd/chatpush.service is a unit systemd accepts without a warning, hardened, and
using the CLI's exit codes; checked with systemd's own `systemd-analyze` where it is installed."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from chatpush import cli

UNIT = Path(__file__).parents[2] / "samples" / "systemd" / "chatpush.service"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is not installed (Debian: apt-get install systemd)"
)


def installed_copy(tmp_path: Path, text: str | None = None) -> Path:
    """The unit with ExecStart pointing at this checkout's chatpush (verify checks that the
    program exists); every other line as shipped."""
    chatpush = Path(sys.executable).with_name("chatpush")
    assert chatpush.is_file(), "the tests run from an install with the chatpush script"
    unit = tmp_path / "chatpush.service"
    text = UNIT.read_text() if text is None else text
    unit.write_text(text.replace("/opt/chatpush/bin/chatpush", str(chatpush)))
    return unit


def verify(unit: Path) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run(
        [ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )


@needs_analyze
def test_systemd_analyze_verify_accepts_the_unit_without_a_word(tmp_path: Path) -> None:
    done = verify(installed_copy(tmp_path))
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    # The check can fail: a misspelt key is reported (verify still exits 0, so silence counts).
    broken = UNIT.read_text().replace("NoNewPrivileges=yes", "NoNewPrivilege=yes")
    assert "Unknown key 'NoNewPrivilege'" in verify(installed_copy(tmp_path, broken)).stderr


@needs_analyze
def test_the_unit_is_hardened_by_systemds_own_measure(tmp_path: Path) -> None:
    # Exposure 0-10 (0 best); --threshold takes it times ten and fails above it.
    done = subprocess.run(
        [ANALYZE, "security", "--offline=true", "--threshold=20", str(installed_copy(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    assert "Overall exposure level for chatpush.service: 1." in done.stdout


def test_the_unit_runs_unprivileged_and_restarts_by_exit_code() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    service = parser["Service"]
    assert service["DynamicUser"] == "yes" and "User" not in service
    for key, value in {
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "StateDirectory": "chatpush",
        "Restart": "on-failure",
    }.items():
        assert service[key] == value, key
    # Configuration (2) and permission (77) problems do not mend by restarting; 69 and 75 may.
    assert service["RestartPreventExitStatus"].split() == [
        str(cli.EXIT_USAGE),
        str(cli.EXIT_NOPERM),
    ]
    assert service["ExecStart"].endswith("--config /etc/chatpush/chatpush.toml serve")
