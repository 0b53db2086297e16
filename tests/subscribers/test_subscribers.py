"""`digest subscribers count|list|add|remove|export|import` on both backends: addresses are
printed only on request, CSV moves a list out and back in unchanged."""

from __future__ import annotations

import csv
import io

import pytest
from mailkit import write_content

from digest import cli
from digest.subscribers.store import keyed_hash, open_store


@pytest.fixture
def run(store_location, tmp_path, capsys):
    content = write_content(tmp_path)

    def run(*args: str) -> tuple[int, str, str]:
        code = cli.main(["subscribers", *args, "--store", store_location, "--content", str(content)])
        out, err = capsys.readouterr()
        return code, out, err
    return run


def test_add_list_count_remove_without_printing_addresses(run, store_location):
    assert run("add", "one@example.org", "--topic", "backprop")[0] == 0
    assert run("add", "two@한국.kr", "--pending")[0] == 0
    code, out, err = run("list")
    assert code == 0 and "@" not in out + err and len(out.splitlines()) == 2
    store = open_store(store_location)
    assert keyed_hash(store.secret(), "one@example.org") in out and "backprop" in out and "(all topics)" in out
    code, out, _ = run("list", "--addresses", "--status", "pending")
    assert out.split()[:2] == ["#2", "pending"] and "two@xn--3e0b707e.kr" in out and "one@" not in out
    code, out, _ = run("count")
    assert out.split() == ["confirmed", "1", "pending", "1", "unsubscribed", "0", "suppressed", "0",
                           "(unsubscribed", "0,", "bounced", "0,", "complained", "0)"]
    code, out, err = run("remove", "ONE@example.org")
    assert code == 0 and "removed subscriber #1" in out and "@" not in out
    assert run("remove", "one@example.org")[0] == 1
    assert run("remove", "--id", "2")[0] == 0 and store.count() == 0
    code, _, err = run("remove", "Victim <v@example.org>")
    assert code == 2 and "victim" not in err.lower()
    store.close()


def test_export_then_import_moves_a_list_unchanged(run, store_location, tmp_path):
    for address, topics in (("a@example.org", ["backprop", "tools"]), ("b@example.org", []),
                            ("c@münchen.de", ["tools"])):
        run("add", address, *[x for t in topics for x in ("--topic", t)])
    store = open_store(store_location)
    store.unsubscribe(store.find("b@example.org").id)
    exported = tmp_path / "list.csv"
    code, out, err = run("export", str(exported))
    assert code == 0 and out == "" and "exported 3 subscriber(s)" in err
    assert exported.stat().st_mode & 0o777 == 0o600  # the file holds addresses: owner only
    rows = list(csv.DictReader(io.StringIO(exported.read_text(encoding="utf-8"))))
    assert [(r["email"], r["topics"], r["status"]) for r in rows] == [
        ("a@example.org", "backprop tools", "confirmed"), ("b@example.org", "", "unsubscribed"),
        ("c@xn--mnchen-3ya.de", "tools", "confirmed")]
    before = [(s.address, s.topics, s.status) for s in store.subscribers()]
    for s in store.subscribers():
        store.remove(s.id)
    code, out, err = run("import", str(exported))
    assert code == 0 and "3 new" in out
    assert [(s.address, s.topics, s.status) for s in store.subscribers()] == before
    code, out, err = run("export", "-", "--status", "confirmed")
    assert out.splitlines()[0] == "email,topics,status,created"
    assert len(out.splitlines()) == 3 and "b@example.org" not in out  # '-': the addresses, as asked
    store.close()


def test_purge_erases_unconfirmed_web_sign_ups_and_says_how_many(run, store_location):
    store = open_store(store_location)
    _, link = store.request_confirmation("typed@example.org", (), 0, 3600)
    assert run("purge")[1].startswith("erased 0 sign-up(s)")  # its link is still good
    code, out, _ = run("purge", "--days", "-1")  # as if the link had expired over a day ago
    assert code == 0 and out.startswith("erased 1 sign-up(s)") and "@" not in out
    assert store.find("typed@example.org") is None
    store.close()


def test_the_subscribers_help_lists_the_actions(capsys):
    with pytest.raises(SystemExit):
        cli.main(["subscribers", "--help"])
    out = capsys.readouterr().out
    for action in ("count", "list", "add", "remove", "export", "import", "purge"):
        assert action in out


def test_add_and_import_leave_a_reader_who_unsubscribed_unsubscribed(run, store_location, tmp_path):
    run("add", "gone@example.org", "--topic", "backprop")
    run("add", "kept@example.org")
    store = open_store(store_location)
    gone = store.find("gone@example.org")
    store.unsubscribe(gone.id)  # the reader's own one-click unsubscribe
    code, out, err = run("add", "gone@example.org")
    assert code == 1 and "suppressed (unsubscribed)" in err and "only its reader" in err and "@" not in err
    listing = tmp_path / "old-list.csv"
    listing.write_text("email\ngone@example.org\nkept@example.org\nnew@example.org\n", encoding="utf-8")
    code, out, err = run("import", str(listing))
    assert code == 0 and "1 new, 1 updated" in out and "skipped 1 suppressed address(es) (1 unsubscribed)" in err
    gone = store.find("gone@example.org")
    assert (gone.status, gone.topics) == ("unsubscribed", ("backprop",))
    assert store.find("new@example.org").status == "confirmed"
    # a list that marks the reader unsubscribed still applies (export → import keeps statuses)
    listing.write_text("email,status\nkept@example.org,unsubscribed\n", encoding="utf-8")
    assert run("import", str(listing))[0] == 0 and store.find("kept@example.org").status == "unsubscribed"
    store.close()
