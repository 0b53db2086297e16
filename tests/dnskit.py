"""A real DNS server on 127.0.0.1 for tests: Debian's dnsmasq (package dnsmasq-base) on a free high
port, serving only the records it is given, as an unprivileged user (`nobody`) when we are root.

    running_dns(records)    yields "127.0.0.1:<port>" (a str; .pid is dnsmasq's) while dnsmasq answers ``records``:
                            ("TXT", name, value) with value one string or a tuple of strings
                            (each at most 255 bytes), ("A"/"AAAA", name, address),
                            ("MX", name, (preference, target)), ("CNAME", name, target)

Names under ``zones`` (default: test) that have no record answer NXDOMAIN, as a real authoritative
server would (`local=/test/`): no upstream, no /etc/hosts, nothing leaves the machine.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


class DnsUnavailable(Exception):
    """dnsmasq cannot run here (not installed)."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _quoted(value: str) -> str:
    if '"' in value or "\\" in value or len(value.encode()) > 255:
        raise ValueError(f"a TXT string for dnsmasq must be at most 255 bytes without quotes: {value[:40]}...")
    return f'"{value}"'


def config_lines(records, zones=("test",)) -> list[str]:
    lines = [f"local=/{zone}/" for zone in zones]
    for kind, name, value in records:
        if kind == "TXT":
            strings = (value,) if isinstance(value, str) else tuple(value)
            lines.append(f"txt-record={name}," + ",".join(_quoted(s) for s in strings))
        elif kind in ("A", "AAAA"):
            lines.append(f"host-record={name},{value}")
        elif kind == "MX":
            preference, target = value
            lines.append(f"mx-host={name},{target},{preference}")
        elif kind == "CNAME":
            lines.append(f"cname={name},{value}")
        else:
            raise ValueError(f"record type {kind} is not served by dnskit")
    return lines


def _answers(port: int) -> bool:
    query = bytes.fromhex("abcd0100000100000000000004746573740000100001")  # test. IN TXT
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        try:
            s.sendto(query, ("127.0.0.1", port))
            return s.recv(512)[:2] == b"\xab\xcd"
        except OSError:
            return False


class Address(str):
    pid: int


@contextlib.contextmanager
def running_dns(records, zones=("test",)):
    binary = shutil.which("dnsmasq") or ("/usr/sbin/dnsmasq" if os.path.exists("/usr/sbin/dnsmasq") else None)
    if binary is None:
        raise DnsUnavailable("dnsmasq is not installed (Debian package dnsmasq-base; `make test` installs it)")
    folder = Path(tempfile.mkdtemp(prefix="digest-dns-"))
    port = _free_port()
    conf = folder / "dnsmasq.conf"
    conf.write_text("\n".join([f"port={port}", "listen-address=127.0.0.1", "bind-interfaces", "no-resolv",
                               "no-hosts", "no-negcache", *config_lines(records, zones)]) + "\n", encoding="utf-8")
    folder.chmod(0o755)
    conf.chmod(0o644)
    command = [binary, "--keep-in-foreground", f"--conf-file={conf}", "--pid-file=", "--log-facility=-"]
    if os.geteuid() == 0:  # never root: run it as nobody from the start (dnsmasq's own --user drops later)
        command = ["runuser", "-u", "nobody", "--", *command, "--user=nobody"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while not _answers(port):
            if server.poll() is not None or time.monotonic() > deadline:
                output = server.stdout.read().decode(errors="replace") if server.poll() is not None else ""
                raise RuntimeError(f"dnsmasq did not start on 127.0.0.1:{port}: {output[-2000:]}")
            time.sleep(0.05)
        where = Address(f"127.0.0.1:{port}")
        where.pid = server.pid
        yield where
    finally:
        server.terminate()
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        server.stdout.close()
        shutil.rmtree(folder, ignore_errors=True)
