"""CPU per APNs send: the provider's own HTTP/2 client (chatpush/providers/http2.py) and httpx
(the send path before it), in the same run, against the fake APNs (chatpush/testing/apns.py:
HTTP/2 over TLS, every provider token verified) running in a process of its own.

Each round sends ``--sends`` notifications through ``ApnsProvider.send_message`` with
``--concurrency`` in flight, once with each client, the order alternating from round to round,
each after a warm-up (the connection open, the provider token made). Reported per client: this
process's CPU time per send (user + system, µs; the fake's is not in it), the wall time, and the
median over the rounds; the ratio of the medians is the figure (the machine is shared: a ratio
within one run, not an absolute). The httpx client is used as the provider used it: one
``AsyncClient`` (HTTP/2 only, no redirects, ``Accept-Encoding: identity``), a streamed answer
read raw, the URL checked against ``mobile.allowed_hosts`` on every send. Run from the
repository root:

    .venv/bin/python -m benchmarks.apns_send                       # 2,000 sends x 4 rounds
    .venv/bin/python -m benchmarks.apns_send --sends 500 --rounds 2 --concurrency 1
    .venv/bin/python -m benchmarks.apns_send --loop asyncio        # uvloop by default, as serve
    .venv/bin/python -m benchmarks.apns_send --smoke               # a few seconds, for CI
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import ssl
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import httpx

from benchmarks.rig import machine_line
from chatpush.clock import SystemClock
from chatpush.config import MobileSettings
from chatpush.providers.apns import ApnsCredentials, ApnsProvider
from chatpush.providers.base import CredentialKind
from chatpush.providers.http2 import Answer
from chatpush.providers.message import MobileMessage
from chatpush.providers.outbound import NO_COMPRESSION, disallowed
from chatpush.testing import FakeClock
from chatpush.testing.apns import FakeApns, ec_private_pem, self_signed


class NoCredentials:
    async def lookup(
        self, kind: CredentialKind, group: str, provider: str | None
    ) -> Mapping[str, str] | None:
        return None


class HttpxApns(ApnsProvider):
    """The provider with its HTTP/2 exchange made through httpx, as before http2.py."""

    _httpx: httpx.AsyncClient

    async def start(self) -> None:
        await super().start()
        settings = self._settings
        self._httpx = httpx.AsyncClient(
            http1=False,
            http2=True,
            verify=ssl.create_default_context(cafile=settings.apns_ca_file),
            follow_redirects=False,
            headers=NO_COMPRESSION,
            timeout=httpx.Timeout(settings.total_timeout_s, connect=settings.connect_timeout_s),
        )

    async def close(self) -> None:
        await self._httpx.aclose()
        await super().close()

    async def _post(
        self, host: str, path: str, payload: bytes, headers: list[tuple[str, str]]
    ) -> Answer:
        url = httpx.URL(f"https://{host}:{self._settings.apns_port}{path}")
        assert disallowed(url, self._settings.allowed_hosts) is None
        async with asyncio.timeout(self._settings.total_timeout_s):
            request = self._httpx.build_request("POST", url, content=payload, headers=headers)
            reply = await self._httpx.send(request, stream=True)
            try:
                body = bytearray()
                async for chunk in reply.aiter_raw():
                    body += chunk
            finally:
                await reply.aclose()
        return Answer(reply.status_code, dict(reply.headers), bytes(body))


CLIENTS: dict[str, type[ApnsProvider]] = {"httpx": HttpxApns, "h2": ApnsProvider}


# -- the fake, in a process of its own ---------------------------------------------------------


class LiveClock(FakeClock):
    """The fake's clock, the system's: the provider tokens' ``iat`` stays current however long
    the run."""

    def now_ms(self) -> int:
        return SystemClock().now_ms()


async def serve_fake(folder: Path) -> None:
    """Serve the fake APNs with the key and certificate in ``folder``; print its port; stop
    on SIGTERM or when stdin closes."""
    fake = FakeApns(LiveClock(), private_key=(folder / "key.p8").read_text())
    await fake.start(folder / "apns.crt", folder / "apns.key")
    print(fake.port, flush=True)
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, lambda: stop.done() or stop.set_result(None))
    loop.add_reader(sys.stdin.fileno(), lambda: stop.done() or stop.set_result(None))
    await stop
    await fake.close()


# -- the measurement ---------------------------------------------------------------------------


async def run_client(
    name: str, settings: MobileSettings, credentials: ApnsCredentials, sends: int, in_flight: int
) -> tuple[float, float, Counter[str]]:
    """(CPU µs per send, wall s, outcomes) of ``sends`` sends through one client."""
    provider = CLIENTS[name](settings, SystemClock(), NoCredentials())
    await provider.start()
    outcomes: Counter[str] = Counter()

    async def worker(first: int, count: int) -> None:
        for k in range(first, first + count):
            message = MobileMessage(
                f"token-{k:08d}", "bare", "chatpush", "A new conversation", {"n": str(k)}
            )
            result = await provider.send_message(credentials, message)
            outcomes[result.error or result.outcome] += 1

    try:
        await asyncio.gather(*(worker(-1000 - 50 * i, 50) for i in range(2)))  # warm-up
        outcomes.clear()
        per_worker = sends // in_flight
        cpu_s, wall_s = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker(i * per_worker, per_worker) for i in range(in_flight)))
        cpu_s, wall_s = time.process_time() - cpu_s, time.perf_counter() - wall_s
    finally:
        await provider.close()
    return cpu_s / (per_worker * in_flight) * 1e6, wall_s, outcomes


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="apns-send-") as name:
        folder = Path(name)
        cert_file, _ = self_signed(folder)
        private_key = ec_private_pem()
        (folder / "key.p8").write_text(private_key)
        fake = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "benchmarks.apns_send", "--serve-fake", str(folder)),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert fake.stdout is not None
            port = int(await fake.stdout.readline())
            template = FakeApns(FakeClock(), private_key=private_key)
            credentials = ApnsCredentials(
                template.key_id, template.team_id, private_key, template.topic
            )
            settings = MobileSettings(
                apns_host="127.0.0.1",
                apns_port=port,
                apns_ca_file=str(cert_file),
                allowed_hosts=(f"127.0.0.1:{port}",),
            )
            print(machine_line())
            print(
                f"{args.sends} sends x {args.rounds} rounds, {args.concurrency} in flight, "
                f"loop {args.loop}"
            )
            results: dict[str, list[float]] = {name: [] for name in CLIENTS}
            for round_ in range(args.rounds):
                order = list(CLIENTS) if round_ % 2 == 0 else list(reversed(CLIENTS))
                for client in order:
                    cpu_us, wall_s, outcomes = await run_client(
                        client, settings, credentials, args.sends, args.concurrency
                    )
                    results[client].append(cpu_us)
                    print(
                        f"  round {round_ + 1} {client:>5}: {cpu_us:7.1f} µs CPU per send, "
                        f"{wall_s:6.2f} s wall, {json.dumps(dict(outcomes))}"
                    )
            medians = {name: statistics.median(values) for name, values in results.items()}
            print(
                "median CPU per send: "
                + ", ".join(f"{name} {value:.1f} µs" for name, value in medians.items())
                + f"; h2 / httpx = {medians['h2'] / medians['httpx']:.2f}"
            )
            print(machine_line())
        finally:
            assert fake.stdin is not None
            fake.stdin.close()
            await asyncio.wait_for(fake.wait(), 10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sends", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--smoke", action="store_true", help="40 sends, one round (for CI)")
    parser.add_argument("--serve-fake", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.smoke:
        arguments.sends, arguments.rounds = 40, 1
    if arguments.serve_fake is not None:
        asyncio.run(serve_fake(arguments.serve_fake))
    elif arguments.loop == "uvloop":
        import uvloop

        uvloop.run(main(arguments))
    else:
        asyncio.run(main(arguments))
