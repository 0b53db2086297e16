"""Shared parts of the `digest serve` tests: a real server process on 127.0.0.1, its SMTP sink,
and reading the confirmation mail it sends.

    Server / start_server    `python -m digest serve` in a subprocess with a clean environment,
                             waited for on /health; its stderr (the log) kept in a file
    recording_smtp           a module-wide aiosmtpd Recorder (tests/mailkit.py)
    confirm_link(...)        the confirmation link of the newest mail to an address
"""

from __future__ import annotations

import email
import email.policy
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from mailkit import ROOT, Recorder, free_port
from smtpkit import running_smtp

SITE_ORIGIN = "http://127.0.0.1:9"  # a site origin no test serves on unless it says so


@dataclass
class Server:
    process: subprocess.Popen
    url: str  # base URL, ending in '/'
    store: str
    log: Path
    env: dict = field(default_factory=dict)
    cwd: Path = None

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10, follow_redirects=False, **kwargs)

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def serve_env(store: str, port: int, smtp_port: int | None, site_url: str, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env.update({
        "DIGEST_STORE": store, "DIGEST_BASE_URL": f"http://127.0.0.1:{port}/", "DIGEST_SITE_URL": site_url,
        "DIGEST_FROM": "ML 읽기 노트 <digest@example.org>", "PYTHONPATH": str(ROOT),
        "DIGEST_SERVE_IP_LIMIT": "100000/60", "DIGEST_SERVE_ADDRESS_LIMIT": "5/3600",
    })
    if smtp_port is not None:
        env.update({"DIGEST_SERVE_MAIL": "smtp", "DIGEST_SMTP_HOST": "127.0.0.1", "DIGEST_SMTP_PORT": str(smtp_port),
                    "DIGEST_SMTP_SECURITY": "none", "DIGEST_SMTP_TIMEOUT": "10"})
    env.update(extra)
    return env


def start_server(cwd: Path, content: Path, store: str, smtp_port: int | None = None,
                 site_url: str = SITE_ORIGIN + "/ml-notes/", port: int | None = None,
                 arguments: list[str] | None = None, **extra) -> Server:
    """`digest serve` in a real process; returns once /health answers 200. ``arguments`` replace
    the command's own (everything after `digest`), as a systemd unit's ExecStart gives them."""
    port = port or free_port()
    env = serve_env(store, port, smtp_port, site_url, **extra)
    log = cwd / f"serve-{port}-{time.monotonic_ns()}.log"
    arguments = arguments or ["serve", "--content", str(content), "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "wb") as handle:
        process = subprocess.Popen([sys.executable, "-m", "digest", *arguments], cwd=cwd, env=env,
                                   stdout=handle, stderr=subprocess.STDOUT)
    server = Server(process, f"http://127.0.0.1:{port}/", store, log, env, cwd)
    wait_healthy(server)
    return server


def wait_healthy(server: Server, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"digest serve exited with {server.process.returncode}:\n{server.log_text()[-3000:]}")
        try:
            if httpx.get(server.url + "health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.stop()
    pytest.fail(f"digest serve did not become healthy in {timeout}s:\n{server.log_text()[-3000:]}")


@pytest.fixture(scope="module")
def recording_smtp():
    """A real SMTP server on 127.0.0.1 for a whole module: (recorder, port)."""
    with running_smtp(Recorder()) as server:
        yield server


def mails_to(recorder: Recorder, address: str, count: int = 1, timeout: float = 10) -> list:
    """The messages to ``address`` once at least ``count`` arrived (parsed), or a failure."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = recorder.to(address)
        if len(found) >= count:
            return [email.message_from_bytes(m.data, policy=email.policy.default) for m in found]
        time.sleep(0.05)
    pytest.fail(f"{count} message(s) to {address} expected, {len(recorder.to(address))} arrived")


def settled(recorder: Recorder, quiet: float = 0.4, timeout: float = 15) -> int:
    """How many messages arrived, once none arrived for ``quiet`` seconds (mail goes out after responses)."""
    deadline = time.monotonic() + timeout
    count = len(recorder.messages)
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = len(recorder.messages)
        if now == count:
            return count
        count = now
    return count


def confirm_link(recorder: Recorder, address: str, count: int = 1) -> str:
    message = mails_to(recorder, address, count)[-1]
    text = message.get_body(("plain",)).get_content()
    return re.search(r"(http://\S+/confirm/\S+)", text)[1]


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html)[1]
