"""Only the reader undoes an unsubscribe: neither a stranger's form post nor the operator's add,
import or purge can sign an address up again; the link mailed to it can. Both backends."""

from __future__ import annotations

import pytest
from mailkit import write_content

from digest import cli
from digest.subscribers.store import open_store

WINDOW, LIFETIME = 600, 3600


@pytest.fixture
def store(store_location):
    store = open_store(store_location)
    yield store
    store.close()


def _unsubscribed_reader(store, address="reader@example.org"):
    reader, _ = store.add(address, ("backprop",))
    assert store.unsubscribe(reader.id)  # their own one-click unsubscribe
    return reader


def test_a_strangers_form_post_sends_a_confirmation_at_most_and_changes_nothing(store):
    reader = _unsubscribed_reader(store)
    after_post, confirmation = store.request_confirmation("reader@example.org", ("tools",), WINDOW, LIFETIME)
    assert confirmation is not None  # the reader may be the one asking: the link goes to their inbox
    assert (after_post.status, after_post.topics) == ("unsubscribed", ("backprop",))
    again, second = store.request_confirmation("reader@example.org", (), WINDOW, LIFETIME)
    assert second is None and again.status == "unsubscribed"  # within the window: not even a second mail
    # the operator's commands, run after the post, still find an address nobody confirmed
    assert store.add("reader@example.org")[0].status == "unsubscribed"
    outcome = store.add_many([("reader@example.org", (), "confirmed")], source="import:list.csv")
    assert (outcome.created, outcome.updated, outcome.skipped) == (0, 0, {"unsubscribed": 1})
    assert store.get(reader.id).status == "unsubscribed" and store.count("confirmed") == 0


def test_the_readers_own_confirmation_undoes_the_unsubscribe(store):
    reader = _unsubscribed_reader(store)
    _, confirmation = store.request_confirmation("reader@example.org", ("tools",), WINDOW, LIFETIME)
    outcome, confirmed = store.confirm(confirmation.id)  # the link opened from the reader's inbox
    assert outcome == "confirmed" and (confirmed.id, confirmed.status, confirmed.topics) == (
        reader.id, "confirmed", ("tools",))
    assert store.suppression("reader@example.org") is None
    assert store.unsubscribe(reader.id) and store.suppression("reader@example.org") == "unsubscribed"


def test_erasing_the_row_keeps_the_suppression_so_a_later_import_does_not_re_add_it(store):
    reader = _unsubscribed_reader(store)
    assert store.remove(reader.id)  # the operator erases the row (or a purge does)
    assert store.find("reader@example.org") is None
    outcome = store.add_many([("reader@example.org", (), "confirmed"), ("new@example.org", (), "confirmed")],
                             source="import:old-list.csv")
    assert (outcome.created, outcome.skipped) == (1, {"unsubscribed": 1})
    assert store.find("reader@example.org") is None and store.add("reader@example.org") == (None, False)
    assert store.suppression_counts() == {"unsubscribed": 1, "bounced": 0, "complained": 0}


def test_purge_erases_a_strangers_sign_up_for_a_suppressed_address_and_keeps_the_suppression(store):
    reader = _unsubscribed_reader(store)
    store.remove(reader.id)
    typed, confirmation = store.request_confirmation("reader@example.org", (), WINDOW, LIFETIME)
    assert typed.status == "pending" and confirmation is not None  # gets the confirmation mail, nothing else
    assert store.add_many([("reader@example.org", (), "confirmed")], source="import").skipped == {"unsubscribed": 1}
    assert store.purge_unconfirmed(days=-1) == 1  # as if its link had expired a day ago
    assert store.find("reader@example.org") is None and store.suppression("reader@example.org") == "unsubscribed"
    assert store.add("reader@example.org") == (None, False)


def test_an_operator_cannot_confirm_a_suppressed_subscriber_by_status(store):
    reader = _unsubscribed_reader(store)
    assert not store.set_status(reader.id, "confirmed") and store.get(reader.id).status == "unsubscribed"


def test_the_cli_reports_how_many_it_skipped_and_why_without_addresses(store_location, tmp_path, capsys):
    content = write_content(tmp_path)

    def run(*args):
        code = cli.main(["subscribers", *args, "--store", store_location, "--content", str(content)])
        return (code, *capsys.readouterr())

    store = open_store(store_location)
    for address in ("a@example.org", "b@example.org"):
        store.unsubscribe(store.add(address)[0].id)
        store.remove(store.find(address).id)
    listing = tmp_path / "list.csv"
    listing.write_text("email\na@example.org\nb@example.org\nc@example.org\n", encoding="utf-8")
    code, out, err = run("import", str(listing))
    assert code == 0 and "1 new" in out and "skipped 2 suppressed address(es) (2 unsubscribed)" in err
    assert "@" not in out + err
    code, out, _ = run("count")
    assert "suppressed    2 (unsubscribed 2, bounced 0, complained 0)" in out and "@" not in out
    code, out, _ = run("suppressed")
    assert code == 0 and out.split()[:6] == ["unsubscribed", "2", "bounced", "0", "complained", "0"]
    assert "@" not in out
    store.close()
