"""samples/cc_simulator.py plays whole callback lives against the real app: a callback with a
failed dial, and a Click-To-Call-In one that waits for the app's connect."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from chatpush.config import Settings
from tests.conftest import API_KEY
from tests.integration.callback_support import cc, create, gms, pull, record

SIMULATOR = Path(__file__).resolve().parents[2] / "samples" / "cc_simulator.py"


def load_simulator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cc_simulator", SIMULATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


async def test_the_simulator_plays_callback_lives(
    make_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    client = await make_client(
        make_settings(services={"cti": {"_call_direction": "USERORIGINATED"}})
    )
    simulator = load_simulator()
    url = str(client.make_url("")).rstrip("/")
    argv = ["--chatpush", url, "--api-key", API_KEY, "--once", "--pause", "0"]
    plain = (await create(client))["_id"]
    ctci = (await create(client, "cti"))["_id"]
    assert await simulator.main(argv) == 0

    found = await record(client, plain)
    assert (found["_callback_state"], found["_callback_reason"]) == ("COMPLETED", "AGENT_CONNECTED")
    state = await cc(client, "GET", f"/callbacks/{plain}")
    # session_started, dial_init, dial_done (failed), dial_init, dial_done, customer_queued,
    # route_to_agent, exit.
    assert state["lastSeq"] == 8
    assert state["attributes"] == {"c_agent_id": "agent-1"}
    assert (state["ewt"], state["position"]) == (30, 1)

    # The Click-To-Call-In callback waits, with its access number, for the app's connect.
    assert (await record(client, ctci))["_callback_state"] == "QUEUED"
    dialog = await gms(client, "POST", f"/genesys/1/service/{ctci}/connect")
    assert (dialog["_tel_url"], dialog["_access_code"]) == ("tel:+18005550100", "4711")
    assert await simulator.main(argv) == 0
    found = await record(client, ctci)
    assert (found["_callback_state"], found["_callback_reason"]) == ("COMPLETED", "AGENT_CONNECTED")
    assert await pull(client) == []  # everything acknowledged
