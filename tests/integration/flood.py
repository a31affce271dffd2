"""A bounded flood of idle TLS connections to 127.0.0.1, as a client without credentials makes it.

    python -m tests.integration.flood --port PORT [--connections 1500] [--in-flight 1500] [--hold 20]

Opens `--connections` TLS connections to 127.0.0.1:PORT, at most `--in-flight` at a time, completes each
handshake, sends nothing, and keeps each until the server closes it or `--hold` seconds pass; then it
prints what happened as one JSON object and exits. It stops by itself: every connection has a deadline,
and the whole run is bounded by them. Only loopback is reachable from it: there is no host to give.
"""

from __future__ import annotations

import argparse
import asyncio
import asyncio.sslproto
import json
import ssl
import time
from dataclasses import asdict, dataclass, field

HANDSHAKE_TIMEOUT_S = 15.0


@dataclass
class FloodResult:
    attempted: int = 0
    handshakes: int = 0
    """TLS completed: idle connections the server accepted."""
    refused: int = 0
    """Closed or reset before TLS completed: the cap, or the first-request deadline during the handshake."""
    still_open: int = 0
    """Handshaken and not closed by the server within `hold` seconds."""
    held_s: list[float] = field(default_factory=list)
    """How long each handshaken connection lived from its handshake until the server closed it."""
    seconds: float = 0.0


async def flood(port: int, connections: int, in_flight: int, hold_s: float) -> FloodResult:
    asyncio.sslproto.SSLProtocol.max_size = 4 * 1024  # this process holds thousands of connections too
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # an attacker verifies nothing
    result = FloodResult()
    slots = asyncio.Semaphore(in_flight)
    started = time.monotonic()

    async def one() -> None:
        async with slots:
            result.attempted += 1
            try:
                opening = asyncio.open_connection("127.0.0.1", port, ssl=context)
                reader, writer = await asyncio.wait_for(opening, HANDSHAKE_TIMEOUT_S)
            except (OSError, TimeoutError):
                result.refused += 1
                return
            result.handshakes += 1
            opened = time.monotonic()
            try:
                await asyncio.wait_for(reader.read(1), hold_s)
            except TimeoutError:
                result.still_open += 1
            except OSError:
                pass
            result.held_s.append(round(time.monotonic() - opened, 2))
            writer.close()

    await asyncio.gather(*(one() for _ in range(connections)))
    result.seconds = round(time.monotonic() - started, 1)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=1500)
    parser.add_argument("--in-flight", type=int, default=1500)
    parser.add_argument("--hold", type=float, default=20.0)
    args = parser.parse_args()
    result = asyncio.run(flood(args.port, args.connections, args.in_flight, args.hold))
    print(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
