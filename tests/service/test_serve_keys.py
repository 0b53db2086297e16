"""Rotating the link-signing key under a running `digest serve` (#23 defect 8), on SQLite and on
PostgreSQL, through real processes: `digest subscribers rotate-key` reaches the server within its
key refresh; links mailed before keep working (one-click unsubscribe, preferences, an open
confirmation) for the kept days; new links are signed with the new key only; keyed hashes in the
log keep their key; `--keep-days 0` refuses every link signed before, at once."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import servekit
from mailkit import write_content
from servekit import confirm_link, csrf_of, start_server

from digest.subscribers.store import keyed_hash, open_store, verify_expiring, verify_token

recording_smtp = servekit.recording_smtp
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
REFRESH = 0.2  # DIGEST_SERVE_KEY_REFRESH for these servers: a rotation reaches them this soon


def rotate(server, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "digest", "subscribers", "rotate-key", *args],
                          cwd=server.cwd, env=server.env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    time.sleep(REFRESH * 3)
    return done.stdout


def subscribe(client, address: str):
    fields = {"email": address, "csrf": csrf_of(client.get("subscribe").text)}
    return client.post("subscribe", data=fields)


def post_form(client, url: str):
    return client.post(url, data={"csrf": csrf_of(client.get(url).text)})


def test_a_rotation_keeps_old_links_for_the_kept_days_and_signs_new_ones_with_the_new_key(
        store_location, recording_smtp, tmp_path):
    recorder, smtp_port = recording_smtp
    tag = f"{os.getpid()}-{tmp_path.name[-8:].lower()}"
    server = start_server(tmp_path, write_content(tmp_path), store_location, smtp_port,
                          DIGEST_SERVE_KEY_REFRESH=str(REFRESH))
    store = open_store(store_location)
    try:
        old = store.keyring()
        leaving, _ = store.add(f"leaving-{tag}@example.org")
        staying, _ = store.add(f"staying-{tag}@example.org", ("backprop",))
        pending, fresh = f"pending-{tag}@example.org", f"fresh-{tag}@example.org"
        old_unsubscribe = f"unsubscribe/{old.sign('unsubscribe', leaving.id)}"  # in mail already sent
        old_preferences = f"preferences/{old.sign('preferences', staying.id)}"
        with server.client() as client:
            subscribe(client, pending)
            old_confirm = confirm_link(recorder, pending)  # mailed before the rotation, still open

            out = rotate(server)
            assert "keep working until" in out and "keyed hashes in logs are unchanged" in out
            new = store.keyring()
            assert new.current != old.current and new.retired == (old.current,)

            one_click = client.post(old_unsubscribe, content=b"List-Unsubscribe=One-Click", headers=FORM)
            assert one_click.status_code == 200 and store.get(leaving.id).status == "unsubscribed"
            page = client.get(old_preferences)
            assert page.status_code == 200 and 'value="backprop" checked' in page.text
            link = re.search(r'href="[^"]*/unsubscribe/([^"]+)"', page.text)[1]  # a link the server signs now
            assert verify_token(new.current, "unsubscribe", link) == staying.id
            assert verify_token(old.current, "unsubscribe", link) is None
            confirmed = post_form(client, old_confirm)
            assert confirmed.status_code == 200 and store.find(pending).status == "confirmed"

            subscribe(client, fresh)
            token = confirm_link(recorder, fresh).rsplit("/", 1)[1]
            assert verify_expiring(new.current, "confirm", token)[1] == ""
            assert verify_expiring(old.current, "confirm", token) == (None, "forged")
            assert keyed_hash(store.secret(), fresh) in server.log_text()  # the log key did not move
            new_preferences = f"preferences/{new.sign('preferences', staying.id)}"

            out = rotate(server, "--keep-days", "0")
            assert "revoked" in out
            assert client.get(old_preferences).status_code == 400  # every link signed before: refused
            assert client.get(new_preferences).status_code == 400
            refused = client.post(f"unsubscribe/{new.sign('unsubscribe', staying.id)}",
                                  content=b"List-Unsubscribe=One-Click", headers=FORM)
            assert refused.status_code == 400 and store.get(staying.id).status == "confirmed"
            assert client.get(f"preferences/{store.keyring().sign('preferences', staying.id)}").status_code == 200
        assert fresh not in server.log_text() and pending not in server.log_text()
    finally:
        store.close()
        server.stop()


def test_digest_send_after_a_rotation_mails_links_signed_with_the_new_key(store_location, tmp_path):
    import email
    import email.policy

    server = start_server(tmp_path, content := write_content(tmp_path), store_location,
                          DIGEST_SERVE_KEY_REFRESH=str(REFRESH))
    store = open_store(store_location)
    try:
        reader, _ = store.add(f"reader-{os.getpid()}@example.org")
        old = store.keyring()
        rotate(server)
        new = store.keyring()
        sent = subprocess.run([sys.executable, "-m", "digest", "send", "--week", "2016-W28", "--to", "outbox",
                               "--content", str(content)], cwd=server.cwd, capture_output=True, text=True,
                              env={**server.env, "DIGEST_SERVICE_URL": server.url}, timeout=120)
        assert sent.returncode == 0, sent.stderr
        (eml,) = (tmp_path / "outbox" / "2016-W28" / "mail").glob("*.eml")
        message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
        url = re.search(r"<(http://[^>]+/unsubscribe/[^>]+)>", str(message["List-Unsubscribe"]))[1]
        token = url.rsplit("/", 1)[1]
        assert verify_token(new.current, "unsubscribe", token) == reader.id
        assert verify_token(old.current, "unsubscribe", token) is None
        assert keyed_hash(store.secret(), reader.address) in eml.name  # file names keep the log key
        with server.client() as client:
            response = client.post(url, content=b"List-Unsubscribe=One-Click", headers=FORM)
        assert response.status_code == 200 and store.get(reader.id).status == "unsubscribed"
    finally:
        store.close()
        server.stop()
