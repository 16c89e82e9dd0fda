"""``chatpush credentials`` as an operator runs it: a key, then set / show / list / test / delete
on a SQLite file, the secrets never printed back. The test call goes to a fake FCM on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from chatpush.testing import FakeClock
from chatpush.testing.fcm import FakeFcm


async def chatpush(workdir: Path, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "chatpush.cli",
        "--config",
        str(workdir / "chatpush.toml"),
        *args,
        cwd=workdir,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_an_operator_stores_shows_tests_and_deletes_fcm_credentials(
    tmp_path: Path, clock: FakeClock
) -> None:
    clock.set(int(time.time() * 1000))  # the CLI signs its assertion with the real time
    fcm = await FakeFcm(clock).start()
    try:
        code, key, _ = await chatpush(tmp_path, "credentials", "new-key")
        assert code == 0
        (tmp_path / "chatpush.toml").write_text(
            f'[security]\ncredentials_key = "{key.strip()}"\n'
            f'[mobile]\nfcm_api_url = "{fcm.base_url}"\nallowed_hosts = ["{fcm.base_url}"]\n'
            '[groups.main]\nnodes = ["n1"]\npushEnabled = "fcm"\n'
        )
        assert (await chatpush(tmp_path, "migrate"))[0] == 0
        account = tmp_path / "service-account.json"
        account.write_text(json.dumps(fcm.credentials()))

        code, out, _ = await chatpush(tmp_path, "credentials", "set", "main", "fcm", str(account))
        assert code == 0
        stored: dict[str, Any] = json.loads(out)
        assert stored["fields"]["client_email"].startswith("push… (")
        for secret in (fcm.private_key[30:70], fcm.client_email):
            assert secret not in out
        code, out, _ = await chatpush(tmp_path, "credentials", "show", "main", "fcm")
        assert code == 0 and json.loads(out)["fields"] == stored["fields"]
        assert fcm.private_key[30:70] not in out

        code, out, _ = await chatpush(tmp_path, "credentials", "test", "main", "fcm", "phone-1")
        assert (code, json.loads(out)["ok"]) == (0, True)
        assert fcm.sent[-1]["token"] == "phone-1"

        code, _, err = await chatpush(tmp_path, "credentials", "set", "main", "apns", str(account))
        assert code == 2 and "apns credentials: missing key_id, team_id, topic" in err
        foreign = tmp_path / "foreign.json"
        foreign.write_text(json.dumps(fcm.credentials(token_uri="http://169.254.169.254/")))
        code, _, err = await chatpush(tmp_path, "credentials", "set", "main", "fcm", str(foreign))
        refusal = "token_uri: http://169.254.169.254:80 is not in mobile.allowed_hosts"
        assert code == 2 and f"fcm credentials: {refusal}" in err
        code, out, _ = await chatpush(tmp_path, "credentials", "show", "main", "fcm")
        assert code == 0 and json.loads(out)["fields"] == stored["fields"]  # unchanged
        code, _, err = await chatpush(tmp_path, "credentials", "set", "elsewhere", "fcm", "-")
        assert code == 2 and "unknown node group 'elsewhere'" in err

        assert (await chatpush(tmp_path, "credentials", "delete", "main", "fcm"))[0] == 0
        code, out, _ = await chatpush(tmp_path, "credentials", "list")
        assert (code, json.loads(out)) == (0, {"credentials": []})
    finally:
        await fcm.close()
