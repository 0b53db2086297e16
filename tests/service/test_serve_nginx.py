"""The deployment in deploy/, run for real on loopback: Debian's nginx with deploy/nginx-digest.conf
(only its addresses changed; an unprivileged worker user, a temporary prefix) in front of two
`digest serve` processes started with the arguments of deploy/digest-serve@.service, on one
PostgreSQL, with mail at a real SMTP server. Through nginx: subscribe, the confirmation link,
preferences and one-click unsubscribe; the per-IP limit sees the real client (X-Forwarded-For is
believed from nginx only, and nginx replaces a client's own); a stopped process is routed around.
The backup timer's commands write an export and a dump; the units pass `systemd-analyze verify`."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import servekit
from mailkit import ROOT, free_port, write_content
from servekit import SITE_ORIGIN, confirm_link, csrf_of, start_server

from digest.subscribers.store import open_store

recording_smtp = servekit.recording_smtp
DEPLOY = ROOT / "deploy"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
SECRET = "nginx-test-" + "k" * 40
IP_LIMIT = 4  # form posts per client IP per minute, per process (the flow below makes 3 from one IP)

pytestmark = pytest.mark.skipif(not os.path.exists(NGINX), reason="Debian nginx is not installed "
                                "(make test installs it)")


def site_file(listen: int, upstreams: tuple[int, int]) -> str:
    """deploy/nginx-digest.conf with the test's addresses; each replaced line must be there once."""
    text = (DEPLOY / "nginx-digest.conf").read_text(encoding="utf-8")
    for old, new in (("listen 80;", f"listen 127.0.0.1:{listen};"), ("listen [::]:80;", ""),
                     ("server 127.0.0.1:8470 ", f"server 127.0.0.1:{upstreams[0]} "),
                     ("server 127.0.0.1:8471 ", f"server 127.0.0.1:{upstreams[1]} ")):
        assert text.count(old) == 1, f"deploy/nginx-digest.conf no longer has '{old}' once"
        text = text.replace(old, new)
    return text


@contextlib.contextmanager
def running_nginx(site: str):
    """nginx with ``site`` in its http block, on a temporary prefix; workers as `nobody` when we
    are root (the master needs root only to switch). Yields (folder, master pid)."""
    folder = Path(tempfile.mkdtemp(prefix="digest-nginx-"))
    folder.chmod(0o755)  # the workers (nobody) reach their temp folders through it
    (folder / "digest.conf").write_text(site, encoding="utf-8")
    user = "user nobody nogroup;" if os.geteuid() == 0 else ""
    temp = " ".join(f"{kind}_temp_path {folder}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi",
                                                                      "scgi"))
    (folder / "nginx.conf").write_text(f"""{user}
worker_processes 2;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 512; }}
http {{
    log_format upstream '$remote_addr $request_method $uri $status $upstream_addr';
    access_log {folder}/access.log upstream;
    {temp}
    include {folder}/digest.conf;
}}
""", encoding="utf-8")
    command = [NGINX, "-p", str(folder), "-c", str(folder / "nginx.conf"), "-e", str(folder / "error.log")]
    tested = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=30)
    assert tested.returncode == 0, tested.stderr
    with open(folder / "stderr.log", "wb") as stderr:
        process = subprocess.Popen([*command, "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        yield folder, process.pid
    finally:
        process.send_signal(signal.SIGQUIT)  # graceful: finish requests, then exit
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(folder, ignore_errors=True)


def wait_listening(port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    pytest.fail(f"nginx did not listen on 127.0.0.1:{port} within {timeout}s")


def worker_uids(master: int) -> set[int]:
    uids = set()
    for status in Path("/proc").glob("[0-9]*/status"):
        with contextlib.suppress(OSError):
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
            if int(fields["PPid"]) == master:
                uids.add(int(fields["Uid"].split()[0]))
    return uids


def unit_arguments(port: int) -> list[str]:
    """The arguments of the systemd unit's ExecStart after the `digest` program, for this port."""
    unit = (DEPLOY / "digest-serve@.service").read_text(encoding="utf-8")
    (line,) = re.findall(r"(?m)^ExecStart=(.+)$", unit)
    program, *arguments = shlex.split(line.replace("%i", str(port)))
    assert program.endswith("/.venv/bin/digest"), program
    return arguments


@pytest.fixture
def deployment(postgres_dsn, recording_smtp, tmp_path):
    """nginx in front of two servers on one PostgreSQL: (nginx URL, servers, nginx folder, nginx pid)."""
    _, smtp_port = recording_smtp
    content = write_content(tmp_path)  # the unit's WorkingDirectory holds content/: so does the test's
    listen, ports = free_port(), (free_port(), free_port())
    url = f"http://127.0.0.1:{listen}/"
    settings = {"DIGEST_BASE_URL": url, "DIGEST_SECRET": SECRET, "DIGEST_SERVE_FORWARDED_ALLOW_IPS": "127.0.0.1",
                "DIGEST_SERVE_IP_LIMIT": f"{IP_LIMIT}/60"}
    example = (DEPLOY / "serve.env.example").read_text(encoding="utf-8")
    assert all(f"\n{name}=" in example for name in settings), "deploy/serve.env.example names every setting"
    servers = [start_server(tmp_path, content, postgres_dsn, smtp_port, port=port, arguments=unit_arguments(port),
                            **settings) for port in ports]
    try:
        with running_nginx(site_file(listen, ports)) as (folder, master):
            wait_listening(listen)
            yield url, servers, folder, master
    finally:
        for server in servers:
            server.stop()


def test_subscribe_confirm_preferences_and_one_click_through_nginx(deployment, recording_smtp, postgres_dsn):
    url, servers, folder, master = deployment
    recorder, _ = recording_smtp
    if os.geteuid() == 0:
        assert worker_uids(master) == {65534}  # the workers run as nobody, not root
    address = f"nginx-{os.getpid()}@example.org"
    origin = {"Origin": url.rstrip("/")}  # what a browser sends from the service's own pages
    with httpx.Client(base_url=url, timeout=10, headers=origin) as client:
        form = client.get("subscribe")  # this GET and the POST below reach different processes
        assert form.status_code == 200 and "server" in form.headers and "/" not in form.headers["server"]
        sent = client.post("subscribe", data={"email": address, "topic": "backprop", "csrf": csrf_of(form.text)})
        assert sent.status_code == 200 and "메일을 확인해 주세요" in sent.text
        link = confirm_link(recorder, address)
        assert link.startswith(url + "confirm/")  # the public address, not a process's own
        page = client.get(link)
        done = client.post(link, data={"csrf": csrf_of(page.text)})
        assert done.status_code == 200 and "구독되었습니다" in done.text
        preferences = re.search(r'href="(http://[^"]+/preferences/[^"]+)"', done.text)[1]
        assert preferences.startswith(url)
        page = client.get(preferences)
        saved = client.post(preferences, data={"topic": ["backprop", "tools"], "csrf": csrf_of(page.text)})
        assert saved.status_code == 200 and "주제를 저장했습니다" in saved.text
        unsubscribe = re.search(r'href="(http://[^"]+/unsubscribe/[^"]+)"', saved.text)[1]
    # what a mail provider sends for RFC 8058: no cookie, no Origin, no page
    one_click = httpx.post(unsubscribe, content=b"List-Unsubscribe=One-Click", headers=FORM, timeout=10)
    assert one_click.status_code == 200 and "Unsubscribed" in one_click.text
    store = open_store(postgres_dsn)
    try:
        subscriber = store.find(address)
        assert subscriber.status == "unsubscribed" and subscriber.topics == ("backprop", "tools")
    finally:
        store.close()
    served_by = {line.split()[-1] for line in (folder / "access.log").read_text().splitlines()}
    assert served_by == {s.url[len("http://"):-1] for s in servers}  # both processes answered the reader
    assert not re.search(r"\[(crit|alert|emerg)\]", (folder / "error.log").read_text())
    assert address not in servers[0].log_text() + servers[1].log_text()


def post_until_limited(url: str, local: str, **headers) -> list[int]:
    """Subscribe posts (the site's embedded form) from ``local`` until three in a row are refused:
    then every process has counted this client out."""
    codes: list[int] = []
    transport = httpx.HTTPTransport(local_address=local)
    with httpx.Client(base_url=url, timeout=10, transport=transport, headers={"Origin": SITE_ORIGIN}) as client:
        while codes[-3:] != [429] * 3 and len(codes) < 6 * IP_LIMIT:
            email = f"limit-{local}-{len(codes)}-{os.getpid()}@example.org"
            codes.append(client.post("subscribe", data={"email": email}, headers=headers).status_code)
    return codes


def one_post(url: str, local: str, **headers) -> int:
    transport = httpx.HTTPTransport(local_address=local)
    with httpx.Client(base_url=url, timeout=10, transport=transport, headers={"Origin": SITE_ORIGIN}) as client:
        return client.post("subscribe", data={"email": f"one-{local}-{time.monotonic_ns()}@example.org"},
                           headers=headers).status_code


def test_the_per_ip_limit_sees_the_real_client_through_nginx_and_ignores_forged_headers(deployment):
    url, servers, _, _ = deployment
    codes = post_until_limited(url, "127.0.0.2")
    assert codes[-3:] == [429] * 3 and IP_LIMIT <= codes.count(200) <= 2 * IP_LIMIT, codes
    # nginx replaces the client's own X-Forwarded-For: a forged one does not buy a new allowance
    assert [one_post(url, "127.0.0.2", **{"X-Forwarded-For": f"10.0.0.{i}"}) for i in range(4)] == [429] * 4
    assert one_post(url, "127.0.0.3") == 200  # another client, seen as itself, has its own
    # straight to a process from an address that is not the proxy: X-Forwarded-For is not believed
    direct = servers[0].url
    codes = post_until_limited(direct, "127.0.0.4", **{"X-Forwarded-For": "10.9.9.9"})
    assert codes.count(200) == IP_LIMIT and codes[IP_LIMIT:] == [429] * 3, codes
    assert one_post(direct, "127.0.0.4", **{"X-Forwarded-For": "10.9.9.10"}) == 429


def test_nginx_routes_around_a_stopped_process(deployment):
    url, servers, _, _ = deployment
    servers[0].stop()  # as `systemctl restart digest-serve@PORT` does, one process at a time
    with httpx.Client(base_url=url, timeout=10) as client:
        assert [client.get("health").status_code for _ in range(6)] == [200] * 6
    assert one_post(url, "127.0.0.5") == 200  # a POST that could not reach it went to the other


def test_the_backup_timer_writes_an_export_and_a_dump(postgres_dsn, tmp_path):
    store = open_store(postgres_dsn)
    store.add("kept@example.org", ("backprop",))
    store.close()
    backups = tmp_path / "backups"
    backups.mkdir()
    unit = (DEPLOY / "digest-backup.service").read_text(encoding="utf-8")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}, "DIGEST_STORE": postgres_dsn,
           "PYTHONPATH": str(ROOT)}
    for line in re.findall(r"(?m)^ExecStart=(.+)$", unit):
        line = line.replace("$$", "$").replace("%%", "%").replace("/var/backups/digest", str(backups))
        line = line.replace(".venv/bin/digest", f"{sys.executable} -m digest")
        done = subprocess.run(shlex.split(line), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (line, done.stderr)
    (export,) = backups.glob("subscribers-*.csv")
    (dump,) = backups.glob("store-*.dump")
    assert "kept@example.org,backprop,confirmed" in export.read_text() and export.stat().st_mode & 0o077 == 0
    listed = subprocess.run(["pg_restore", "--list", str(dump)], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and "signing_keys" in listed.stdout and "suppressions" in listed.stdout


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_the_systemd_units_verify():
    units = [str(DEPLOY / name) for name in ("digest-serve@.service", "digest-backup.service", "digest-backup.timer")]
    done = subprocess.run(["systemd-analyze", "verify", *units], capture_output=True, text=True, timeout=60)
    problems = [line for line in (done.stdout + done.stderr).splitlines()
                if line.strip() and "/srv/digest/current/.venv/bin/digest is not executable" not in line]
    assert problems == []  # the only complaint allowed: the checkout is not installed on this machine


def test_the_settings_example_reads_in_sh_and_check_names_what_to_replace(tmp_path):
    """deploy/serve.env.example, sourced as the README's --check line does: every setting parses;
    the placeholders are failures (the secret, the socket's store here, the relay's host)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")} | {"PYTHONPATH": str(ROOT)}
    script = f'set -a; . "{DEPLOY / "serve.env.example"}"; exec "{sys.executable}" -m digest serve --check'
    done = subprocess.run(["sh", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stderr == "", done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("ok    settings  public URL https://subscribe.example.org/") for line in lines)
    failed = {line.split()[1] for line in lines if line.startswith("FAIL")}
    assert failed >= {"secret", "mail"} and "example's placeholder" in done.stdout  # the relay: smtp.example.org
    assert "replace-with-the-relay-password" not in done.stdout
