"""How fast `digest serve` answers (issue 8's figures): subscribe and one-click unsubscribe with
SQLite, 50 concurrent clients on loopback, requests/s with p50/p99 latency.

    goal: one-click unsubscribe ≥ 1,000 req/s with p99 < 50 ms on 2 cores

The server is `digest serve` in its own process, as deployed (one uvicorn worker); the clients are
raw asyncio HTTP/1.1 keep-alive connections with pre-built requests, so that the load generator
takes as little of the two cores as it can. Run: `python bench/serve.py [--requests N]`.
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

from digest.subscribers.store import open_store, sign_token  # noqa: E402

CLIENTS = 50
SITE = "http://127.0.0.1:9"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(folder: Path, store: str, port: int) -> subprocess.Popen:
    import httpx

    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env.update({"DIGEST_STORE": store, "DIGEST_SITE_URL": SITE + "/", "DIGEST_SERVE_IP_LIMIT": "1000000000/60",
                "DIGEST_SERVE_ADDRESS_LIMIT": "1000/60", "PYTHONPATH": str(ROOT)})
    process = subprocess.Popen([sys.executable, "-m", "digest", "serve", "--content", str(ROOT / "content"),
                                "--port", str(port), "--outbox", str(folder / "outbox")], cwd=folder, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit("digest serve did not start")


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000, help="requests per measurement (default 5000)")
    n = parser.parse_args().requests
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        folder = Path(tmp)
        location = str(folder / "var" / "subscribers.sqlite3")
        store = open_store(location)
        store.add_many([(f"reader{i}@example.org", (), "confirmed") for i in range(n)], source="bench")
        secret = store.secret()
        ids = [s.id for s in store.subscribers()]
        store.close()
        port = free_port()
        server = start(folder, location, port)
        try:
            run(port, [request("GET", "/health")] * 500)  # warm up
            subscribe = [request("POST", "/subscribe", f"email=new{i}%40example.org&topic=backprop".encode(),
                                 f"Origin: {SITE}\r\n") for i in range(n)]
            unsubscribe = [request("POST", f"/unsubscribe/{sign_token(secret, 'unsubscribe', i)}",
                                   b"List-Unsubscribe=One-Click") for i in ids]
            # Unsubscribe first: subscribing queues a confirmation email per request, composed and
            # written on the server's mail threads after the responses, which would load the next phase.
            results = {"one-click unsubscribe": run(port, unsubscribe), "subscribe": run(port, subscribe)}
        finally:
            server.terminate()
            server.wait()
        check = open_store(location)
        print(f"digest serve, SQLite, {CLIENTS} concurrent keep-alive clients on loopback, {os.cpu_count()} cores:")
        for name, r in results.items():
            print(f"  {name:<22} {r['rps']:7.0f} req/s   p50 {r['p50']:6.1f} ms   p99 {r['p99']:6.1f} ms   "
                  f"({r['ok']}/{r['requests']} answered 200)")
        print(f"  store after: {check.count('unsubscribed')} unsubscribed, {check.count('pending')} pending")
        check.close()


if __name__ == "__main__":
    main()
