"""How fast `digest serve` answers: subscribe and one-click unsubscribe on SQLite and on PostgreSQL,
against the ceiling of a bare Starlette app on the same uvicorn settings; 50 concurrent keep-alive
clients on loopback, requests/s with p50/p99 latency.

    goals: one-click p99 < 50 ms and >= 0.25 of the ceiling on SQLite; PostgreSQL within 2x of SQLite

The server is `digest serve` in its own process, as deployed (one uvicorn worker); the clients are
raw asyncio HTTP/1.1 keep-alive connections with pre-built requests, so that the load generator
takes as little of the two cores as it can. PostgreSQL is Debian's, started on a temporary folder
(tests/pgkit.py). Run: `python bench/serve.py [--requests N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "tests"))

from pgkit import running_postgres  # noqa: E402

from digest.subscribers.store import open_store  # noqa: E402

# The ceiling: the same uvicorn settings as `digest serve` (httptools, uvloop, no access log), an
# app that answers a form POST without reading a store or rendering a page.
CEILING_APP = """
import sys, uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

async def answer(request):
    await request.body()
    return PlainTextResponse("ok")

app = Starlette(routes=[Route("/health", answer), Route("/unsubscribe/{token}", answer, methods=["POST"])])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=False, server_header=False,
            log_level="warning", timeout_keep_alive=5)
"""

CLIENTS = 50
SITE = "http://127.0.0.1:9"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(folder: Path, store: str | None, port: int) -> subprocess.Popen:
    """`digest serve` on ``store`` (None: the ceiling app), once /health answers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_") or k == "DIGEST_STORE_POOL"}
    env.update({"DIGEST_STORE": store or "", "DIGEST_SITE_URL": SITE + "/", "PYTHONPATH": str(ROOT),
                "DIGEST_SERVE_IP_LIMIT": "1000000000/60", "DIGEST_SERVE_ADDRESS_LIMIT": "1000/60"})
    command = ([sys.executable, "-c", CEILING_APP, str(port)] if store is None else
               [sys.executable, "-m", "digest", "serve", "--content", str(ROOT / "content"), "--port", str(port),
                "--outbox", str(folder / "outbox")])
    process = subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_healthy(port)
    return process


def wait_healthy(port: int) -> None:
    import httpx

    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit("the server did not start")


def request(method: str, path: str, body: bytes = b"", headers: str = "") -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}"
            f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


async def client(port: int, requests: list[bytes], latencies: list[float], statuses: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for raw in requests:
            start = time.perf_counter()
            writer.write(raw)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            statuses.append(int(head[9:12]))
    finally:
        writer.close()


def run(port: int, requests: list[bytes]) -> dict:
    latencies: list[float] = []
    statuses: list[int] = []
    shares = [requests[i::CLIENTS] for i in range(CLIENTS)]

    async def all_clients():
        await asyncio.gather(*(client(port, share, latencies, statuses) for share in shares))

    start = time.perf_counter()
    asyncio.run(all_clients())
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {"requests": len(requests), "rps": len(requests) / elapsed, "p50": statistics.median(latencies) * 1000,
            "p99": latencies[int(len(latencies) * 0.99) - 1] * 1000, "ok": statuses.count(200)}


def measure_service(folder: Path, location: str, n: int) -> dict:
    """One-click unsubscribe of n confirmed readers, then n subscribe requests, on one store."""
    store = open_store(location)
    store.add_many([(f"reader{i}@example.org", (), "confirmed") for i in range(n)], source="bench")
    keys = store.keyring()
    ids = [s.id for s in store.subscribers()]
    store.close()
    port = free_port()
    server = start(folder, location, port)
    try:
        run(port, [request("GET", "/health")] * 500)  # warm up
        subscribe = [request("POST", "/subscribe", f"email=new{i}%40example.org&topic=backprop".encode(),
                             f"Origin: {SITE}\r\n") for i in range(n)]
        unsubscribe = [request("POST", f"/unsubscribe/{keys.sign('unsubscribe', i)}",
                               b"List-Unsubscribe=One-Click") for i in ids]
        # Unsubscribe first: each subscribe request queues a confirmation email, which the server's
        # sender writes after the responses and which would load the next phase.
        results = {"one-click": run(port, unsubscribe), "subscribe": run(port, subscribe)}
    finally:
        server.terminate()
        server.wait()
    check = open_store(location)
    results["store"] = f"{check.count('unsubscribed')} unsubscribed, {check.count('pending')} pending"
    check.close()
    return results


def measure_ceiling(folder: Path, n: int) -> dict:
    port = free_port()
    server = start(folder, None, port)
    try:
        run(port, [request("GET", "/health")] * 500)
        return run(port, [request("POST", f"/unsubscribe/t{i}", b"List-Unsubscribe=One-Click") for i in range(n)])
    finally:
        server.terminate()
        server.wait()


def line(name: str, r: dict, ceiling: dict) -> str:
    return (f"  {name:<26} {r['rps']:7.0f} req/s ({r['rps'] / ceiling['rps']:4.2f} of the ceiling)   "
            f"p50 {r['p50']:6.1f} ms   p99 {r['p99']:6.1f} ms   ({r['ok']}/{r['requests']} answered 200)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000, help="requests per measurement (default 5000)")
    n = parser.parse_args().requests
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        folder = Path(tmp)
        ceiling = measure_ceiling(folder, n)
        (folder / "sqlite").mkdir()
        (folder / "postgresql").mkdir()
        sqlite = measure_service(folder / "sqlite", str(folder / "sqlite" / "var" / "subscribers.sqlite3"), n)
        with running_postgres() as (dsn, _):
            postgres = measure_service(folder / "postgresql", dsn, n)
    print(f"digest serve, {CLIENTS} concurrent keep-alive clients on loopback, {os.cpu_count()} cores, "
          f"{n} requests each:")
    print(line("ceiling (bare Starlette)", ceiling, ceiling))
    for backend, results in (("SQLite", sqlite), ("PostgreSQL", postgres)):
        for name in ("one-click", "subscribe"):
            print(line(f"{name}, {backend}", results[name], ceiling))
        print(f"  store after ({backend}): {results['store']}")
    for name in ("one-click", "subscribe"):
        print(f"  PostgreSQL / SQLite, {name}: {sqlite[name]['rps'] / postgres[name]['rps']:.2f}x slower")


if __name__ == "__main__":
    main()
