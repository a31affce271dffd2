"""What a flood of idle TLS connections leaves in the telemetry server's memory, with and without the trim.

The operator's telemetry server (fakes behind it, no apiserver) in its own process; a client holds
`--connections` idle TLS connections to it (handshake done, nothing sent) for a few seconds, then closes
them. Three RSS figures per run: before, at the flood's peak, and 5 s after the last close. Two runs:
the server as it is (it hands freed pages back once a flood drains: telemetry.gc_tuning) and with that
step disabled, so the difference is the trim's. The cap and the first-request deadline are lifted, so
every connection is held.

    python benchmarks/connection_flood.py [--connections 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import asyncio.sslproto
import datetime as dt
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, free_port, machine, rss_mb


def serve(port: int, certs: str, trim: bool) -> None:
    sys.path.insert(0, str(ROOT))  # tests.cases: the fakes behind the server
    from tests.cases.telemetry_fakes import FakeAuth, FakeRegistry

    from carbontrack.telemetry import gc_tuning
    from carbontrack.telemetry.server import TelemetryServer

    if not trim:
        gc_tuning.release_free_memory_soon = lambda: None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(f"{certs}/tls.crt", f"{certs}/tls.key")

    async def main() -> None:
        server = TelemetryServer(FakeRegistry(), FakeAuth(), 1 << 20, 10.0, 600.0, first_request_s=600.0)  # type: ignore[arg-type]
        await server.start("127.0.0.1", port, context)
        gc_tuning.settle()
        await asyncio.Event().wait()

    asyncio.run(main())


async def hold(port: int, connections: int, seconds: float) -> int:
    asyncio.sslproto.SSLProtocol.max_size = 4 * 1024  # thousands of connections in this process too
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    writers: list[asyncio.StreamWriter] = []
    for start in range(0, connections, 200):  # 200 handshakes at a time
        opened = await asyncio.gather(
            *(
                asyncio.open_connection("127.0.0.1", port, ssl=context)
                for _ in range(min(200, connections - start))
            )
        )
        writers += [writer for _, writer in opened]
    await asyncio.sleep(seconds)
    for writer in writers:
        writer.close()
    return len(writers)


def run(certs: str, connections: int, trim: bool) -> tuple[float, float, float]:
    """(RSS before, at the peak, 5 s after the last close), in MB."""
    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", "--port", str(port), "--certs", certs,
                               *([] if trim else ["--no-trim"])])  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        time.sleep(1)
        before = rss_mb(server.pid)
        assert asyncio.run(hold(port, connections, 2.0)) == connections
        peak = rss_mb(server.pid)
        time.sleep(5)
        return before, peak, rss_mb(server.pid)
    finally:
        server.kill()
        server.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-trim", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--certs", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.port, args.certs, trim=not args.no_trim)
        return 0
    from carbontrack.telemetry import tls

    certs = tempfile.mkdtemp(prefix="connection-flood-")
    material = tls.renew(None, ["localhost"], dt.datetime.now(dt.UTC))
    Path(certs, "tls.crt").write_bytes(material.cert_pem)
    Path(certs, "tls.key").write_bytes(material.key_pem)
    print(f"{args.connections} idle TLS connections, held 2 s ({machine()})\n\n"
          "| server | RSS before (MB) | at the peak | 5 s after they closed |\n"
          "| --- | ---: | ---: | ---: |")  # fmt: skip
    for trim in (True, False):
        before, peak, after = run(certs, args.connections, trim)
        name = "as it is (trim once a flood drains)" if trim else "without the trim"
        print(f"| {name} | {before:.0f} | {peak:.0f} | {after:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
