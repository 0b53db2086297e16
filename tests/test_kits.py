"""The test kits themselves: the recording SMTP server, the sample content, the server helper
that the mail, subscriber and service tests build on, and the DNS server of `digest doctor`'s tests."""

from __future__ import annotations

import httpx
from mailkit import INTRO, WEEK, smtp_server, write_content  # noqa: F401 - smtp_server is a fixture
from servekit import start_server


def test_recorder_records_and_refuses_as_scripted(smtp_server):  # noqa: F811 - the fixture imported above
    import smtplib

    recorder, port = smtp_server
    recorder.rules["b@example.org"] = ["550"]
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        refused = smtp.sendmail("x@example.org", ["a@example.org", "b@example.org"], b"Subject: hi\r\n\r\nhello\r\n")
    assert list(refused) == ["b@example.org"] and refused["b@example.org"][0] == 550
    assert [m.rcpt_tos for m in recorder.messages] == [["a@example.org"]]
    assert recorder.messages[0].data.endswith(b"hello\r\n")


def test_sample_content_is_valid(tmp_path):
    from digest.pipeline.check import load_content

    content, _ = load_content(write_content(tmp_path, intro=INTRO))
    assert len(content.published) == 4 and WEEK in content.intros


def test_the_server_helper_starts_and_stops_a_real_process(tmp_path):
    content = write_content(tmp_path)
    server = start_server(tmp_path, content, str(tmp_path / "s.sqlite3"))
    try:
        assert httpx.get(server.url + "health").json() == {"status": "ok"}
    finally:
        server.stop()
    assert server.process.returncode is not None
    secret = tmp_path / "var" / "serve-secret"  # generated on first start, for the owner only
    assert secret.stat().st_mode & 0o777 == 0o600 and len(secret.read_text().strip()) == 64


def test_the_dns_kit_serves_only_its_records_as_an_unprivileged_user():
    import os
    import pwd

    import dns.resolver
    import dnskit
    import pytest

    try:
        server = dnskit.running_dns([("TXT", "kit.example", ("v=spf1 ", "-all")), ("A", "kit.example", "192.0.2.1")],
                                    zones=("example",))
        where = server.__enter__()
    except dnskit.DnsUnavailable as exc:
        pytest.skip(str(exc))
    try:
        res = dns.resolver.Resolver(configure=False)
        res.nameservers, res.port = ["127.0.0.1"], int(where.rpartition(":")[2])
        assert [r.strings for r in res.resolve("kit.example", "TXT")] == [(b"v=spf1 ", b"-all")]
        assert [r.address for r in res.resolve("kit.example", "A")] == ["192.0.2.1"]
        with pytest.raises(dns.resolver.NXDOMAIN):
            res.resolve("other.example", "TXT")
        children = open(f"/proc/{where.pid}/task/{where.pid}/children").read().split()  # runuser forks
        pids = [where.pid, *map(int, children)]
        names = {pid: open(f"/proc/{pid}/comm").read().strip() for pid in pids}
        (dnsmasq,) = [pid for pid, name in names.items() if name == "dnsmasq"]
        expected = pwd.getpwnam("nobody").pw_uid if os.geteuid() == 0 else os.geteuid()
        assert os.stat(f"/proc/{dnsmasq}").st_uid == expected != 0
    finally:
        server.__exit__(None, None, None)
