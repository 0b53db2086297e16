"""`digest send --status` that cannot be misread (#27 item 11) and the complaint brake (#27 item 6).

Every channel the week went out on is shown; exit 4 while ambiguous recipients remain; each
ambiguous recipient says whether its sender stopped before or after the message's final '.', and
``--resend-ambiguous before-end|after-end`` takes one kind. Rates per issue from the feedback the
store records (``record_feedback``); `digest send` refuses a new issue at a 0.3 % complaint rate of
the previous one and warns at 0.1 %. The SMTP server is a real aiosmtpd on 127.0.0.1.
"""

from __future__ import annotations

import re

import mailkit
import pytest
from mailkit import INTRO, WEEK, mail_env, write_content

from digest import cli
from digest.mail.compose import IsoWeek, compose, render
from digest.mail.deliver import (
    AMBIGUOUS_EXIT,
    SendSettings,
    SmtpSettings,
    SmtpTransport,
    complaint_check,
    send,
    status_report,
)
from digest.mail.message import mail_settings
from digest.pipeline.check import load_content
from digest.subscribers.store import AMBIGUOUS_AFTER, AMBIGUOUS_BEFORE, DOT_WRITTEN, open_store

smtp_server = mailkit.smtp_server
FAST = SendSettings(backoff=0.01, progress_every=0)
PREVIOUS = "2016-W26"


@pytest.fixture
def content(tmp_path):
    return write_content(tmp_path, intro=INTRO)


@pytest.fixture
def store(tmp_path):
    opened = open_store(tmp_path / "var" / "subscribers.sqlite3")
    yield opened
    opened.close()


@pytest.fixture
def env(monkeypatch, store):
    def set_to(port=None, **extra):
        values = mail_env(DIGEST_STORE=str(store.path), DIGEST_SEND_PROGRESS_EVERY="0", DIGEST_SEND_BACKOFF="0.01",
                          **extra)
        if port is not None:
            values.update(DIGEST_SMTP_HOST="127.0.0.1", DIGEST_SMTP_PORT=str(port), DIGEST_SMTP_SECURITY="none")
        for name, value in values.items():
            monkeypatch.setenv(name, value)
    return set_to


def template_for(store, content, week=WEEK):
    loaded, _ = load_content(content)
    settings = mail_settings(mail_env(), {})
    return render(compose(loaded, IsoWeek.parse(week), settings.site_url), loaded, settings, store.secret())


def run(content, capsys, *args) -> tuple[int, str, str]:
    code = cli.main(["send", "--week", WEEK, "--content", str(content), *args])
    out, err = capsys.readouterr()
    return code, out, err


# --- item 11: every channel, an exit code, when the sender stopped ---

def test_status_without_to_shows_the_smtp_send_not_an_empty_outbox(store, content, env, smtp_server, capsys,
                                                                  tmp_path):
    recorder, port = smtp_server
    for i in range(3):
        store.add(f"reader{i}@example.org")
    env(port)
    assert run(content, capsys, "--to", "smtp")[0] == 0
    code, out, _ = run(content, capsys, "--status")
    assert code == 0
    assert f"{WEEK} → smtp: 3 recipient(s)" in out and "→ outbox" not in out, out  # was "→ outbox: 0 recipient(s)"
    assert re.search(r"sent\s+3", out)
    assert run(content, capsys, "--outbox", str(tmp_path / "outbox"))[0] == 0  # the same week to the outbox too
    code, out, _ = run(content, capsys, "--status")
    assert f"{WEEK} → outbox: 3 recipient(s)" in out and f"{WEEK} → smtp: 3 recipient(s)" in out
    code, out, _ = run(content, capsys, "--status", "--to", "smtp")
    assert "→ outbox" not in out  # --to still picks one


class BreaksOnTheDot(SmtpTransport):
    """A connection that breaks while the final '.' of the first message to ``victim`` is written."""

    victim = ""

    def _connect(self):
        smtp = super()._connect()
        plain_send = smtp.send

        def send(data):
            if data == b".\r\n" and BreaksOnTheDot.victim:
                BreaksOnTheDot.victim = ""
                raise ConnectionResetError(104, "Connection reset by peer")
            return plain_send(data)

        smtp.send = send
        return smtp


def test_ambiguous_recipients_say_when_the_sender_stopped_and_each_kind_resends_alone(store, content,
                                                                                    smtp_server):
    recorder, port = smtp_server
    emails = [f"reader{i}@example.org" for i in range(6)]
    for address in emails:
        store.add(address)
    recorder.rules[emails[1]] = ["accept-drop"]  # accepted, the reply lost: after the '.'
    smtp = SmtpSettings("127.0.0.1", port, security="none", timeout=5)
    victims = iter([emails[3]])

    class Transport(BreaksOnTheDot):
        def deliver(self, sender, recipient, message, commit, ended=None):
            if recipient.address == emails[3]:
                BreaksOnTheDot.victim = next(victims, "")
            return super().deliver(sender, recipient, message, commit, ended)

    template = template_for(store, content)
    counts = send(store, template, "smtp", lambda: Transport(smtp), FAST, "b@example.org", log=lambda line: None)
    assert (counts["sent"], counts["ambiguous"]) == (4, 2)
    replies = {d.address: d.reply for d in store.deliveries(WEEK, "smtp", "ambiguous")}
    assert replies[emails[3]].startswith(AMBIGUOUS_BEFORE) and "cannot have accepted" in replies[emails[3]]
    assert replies[emails[1]].startswith(AMBIGUOUS_AFTER) and "may have accepted" in replies[emails[1]]
    assert (len(recorder.to(emails[3])), len(recorder.to(emails[1]))) == (0, 1)  # what each reason claims
    lines, code = status_report(store, WEEK)
    report = "\n".join(lines)
    assert code == AMBIGUOUS_EXIT == 4
    assert re.search(r"1\s+before the final '\.': never accepted.*duplicates nobody; `--resend-ambiguous before-end`",
                     report), report
    assert re.search(r"1\s+after the final '\.': maybe accepted.*second copy; `--resend-ambiguous after-end`", report)
    counts = send(store, template, "smtp", lambda: SmtpTransport(smtp), FAST, "b@example.org",
                  resend_ambiguous="before-end", log=lambda line: None)
    assert (counts["sent"], counts["ambiguous"]) == (5, 1)
    assert len(recorder.to(emails[3])) == 1 and len(recorder.to(emails[1])) == 1  # nobody duplicated
    assert status_report(store, WEEK)[1] == 4  # the after-end one still waits for a decision
    counts = send(store, template, "smtp", lambda: SmtpTransport(smtp), FAST, "b@example.org",
                  resend_ambiguous="after-end", log=lambda line: None)
    assert counts["sent"] == 6 and status_report(store, WEEK)[1] == 0
    assert len(recorder.to(emails[1])) == 2  # the stated risk: it had been accepted the first time


def test_a_killed_runs_rows_are_settled_by_whether_the_dot_was_recorded_written(store, content, env, smtp_server,
                                                                                capsys):
    recorder, port = smtp_server
    for i in range(4):
        store.add(f"reader{i}@example.org")
    store.queue(WEEK, "smtp")
    # what a SIGKILL leaves: one stopped after begin_send (reply ''), one after the '.' (DOT_WRITTEN)
    assert store.begin_send(WEEK, "smtp", 1) and store.begin_send(WEEK, "smtp", 2)
    store.finish(WEEK, "smtp", 2, "sending", DOT_WRITTEN)
    env(port)
    code, out, err = run(content, capsys, "--to", "smtp")
    assert code == 0 and "sent 2 · ambiguous 2" in out and "--resend-ambiguous before-end" in out, out
    code, out, _ = run(content, capsys, "--status")
    assert code == 4
    assert re.search(r"1\s+before the final '\.'", out) and re.search(r"1\s+after the final '\.'", out), out
    code, out, _ = run(content, capsys, "--to", "smtp", "--resend-ambiguous", "before-end")
    assert code == 0 and "sent 3 · ambiguous 1" in out
    assert [len(recorder.to(f"reader{i}@example.org")) for i in range(4)] == [1, 0, 1, 1]
    assert run(content, capsys, "--status")[0] == 4
    code, out, _ = run(content, capsys, "--to", "smtp", "--resend-ambiguous")  # all
    assert code == 0 and run(content, capsys, "--status")[0] == 0


# --- item 6: rates and the brake ---

def previous_issue_sent_to(store, n: int) -> list[int]:
    """``n`` readers, every one sent PREVIOUS on smtp (as a finished send leaves the ledger)."""
    store.add_many([(f"old{i:04d}@example.org", (), "confirmed") for i in range(n)], source="test")
    store.queue(PREVIOUS, "smtp")
    store.db.execute("UPDATE deliveries SET state='sent' WHERE issue=?", (PREVIOUS,))
    return [s.id for s in store.subscribers()]


def keep_only_confirmed(store, ids):
    """Leave a handful confirmed, so that the new issue's send is quick (the rates are the ledger's)."""
    store.db.execute(f"UPDATE subscribers SET status='unsubscribed' WHERE id NOT IN ({','.join(map(str, ids))})")


def test_record_feedback_counts_once_suppresses_and_attributes_to_the_latest_issue(store):
    ids = previous_issue_sent_to(store, 10)
    assert store.record_feedback(ids[0], PREVIOUS, "complaint", "test")
    assert not store.record_feedback(ids[0], PREVIOUS, "complaint", "test")  # a replay counts once
    assert store.record_feedback(ids[1], None, "hard_bounce")  # None: the latest issue they were sent
    assert store.record_feedback(ids[2], None, "soft_bounce")
    assert store.unsubscribe(ids[3])  # counted for the issue they left from
    with pytest.raises(Exception, match="unknown feedback"):
        store.record_feedback(ids[4], PREVIOUS, "bogus")
    rates = store.issue_rates(PREVIOUS, "smtp")
    assert (rates.sent, rates.hard_bounced, rates.soft_bounced, rates.complained, rates.unsubscribed) == \
        (10, 1, 1, 1, 1)
    assert rates.complaint_rate == 0.1
    status = {s.id: s.status for s in store.subscribers()}
    assert status[ids[0]] == status[ids[1]] == "unsubscribed" and status[ids[2]] == "confirmed"
    assert store.suppression("old0000@example.org") == "complained"
    assert store.suppression("old0001@example.org") == "bounced"
    assert store.suppression("old0002@example.org") is None
    assert store.record_feedback(ids[0], None, "hard_bounce")  # a bounce after a complaint: still 'complained'
    assert store.suppression("old0000@example.org") == "complained"
    assert store.suppression_counts() == {"unsubscribed": 1, "bounced": 1, "complained": 1}


def test_three_complaints_in_a_thousand_refuse_the_next_issue_until_overridden(store, content, env, smtp_server,
                                                                              capsys):
    recorder, port = smtp_server
    ids = previous_issue_sent_to(store, 1000)
    for subscriber_id in ids[:3]:
        store.record_feedback(subscriber_id, PREVIOUS, "complaint", "test")  # 3 / 1000 = 0.30 %
    keep_only_confirmed(store, ids[10:15])
    env(port)
    code, out, err = run(content, capsys, "--to", "smtp")
    assert code == 5, err
    assert "3 complaint(s) for 1000 message(s) of 2016-W26, 0.30%, at or over 0.3%" in err
    assert "--ignore-complaints" in err and "nothing was sent" in err
    assert recorder.messages == [] and store.channels(WEEK) == []  # nothing queued, nothing sent
    code, out, _ = run(content, capsys, "--status", "--week", PREVIOUS)
    assert "feedback: sent 1000 · hard-bounced 0 · soft-bounced 0 · complained 3 · unsubscribed 0 · " \
           "complaint rate 0.30%" in out, out
    code, out, err = run(content, capsys, "--to", "smtp", "--ignore-complaints")
    assert code == 0 and "sent 5" in out and "starting anyway (--ignore-complaints)" in err, err
    assert len(recorder.messages) == 5


def test_two_in_a_thousand_warn_and_send_one_in_two_thousand_says_nothing(store, content, env, smtp_server, capsys):
    recorder, port = smtp_server
    ids = previous_issue_sent_to(store, 1000)
    for subscriber_id in ids[:2]:
        store.record_feedback(subscriber_id, PREVIOUS, "complaint")  # 0.20 %: over 0.1 %, under 0.3 %
    keep_only_confirmed(store, ids[10:13])
    env(port)
    code, out, err = run(content, capsys, "--to", "smtp")
    assert code == 0 and "sent 3" in out
    assert "warning: 2 complaint(s) for 1000 message(s) of 2016-W26, 0.20%, at or over 0.1%" in err, err


@pytest.mark.parametrize("sent, complained, level", [
    (1000, 3, "stop"), (999, 3, "stop"), (1001, 3, "warn"), (10_000, 30, "stop"), (10_000, 29, "warn"),
    (1000, 1, "warn"), (1001, 1, ""), (2000, 1, ""), (1000, 0, "")])
def test_the_brake_and_the_warning_at_their_exact_rates(store, sent, complained, level):
    ids = previous_issue_sent_to(store, sent)
    for subscriber_id in ids[:complained]:
        store.record_feedback(subscriber_id, PREVIOUS, "complaint")
    found, rates = complaint_check(store, WEEK, "smtp")
    assert (found, rates.sent, rates.complained) == (level, sent, complained)


def test_a_quiet_previous_issue_and_a_resumed_issue_are_not_braked(store, content, env, smtp_server, capsys):
    recorder, port = smtp_server
    ids = previous_issue_sent_to(store, 2000)
    store.record_feedback(ids[0], PREVIOUS, "complaint")  # 0.05 %: nothing to say
    keep_only_confirmed(store, ids[10:12])
    env(port)
    code, out, err = run(content, capsys, "--to", "smtp")
    assert code == 0 and "warning" not in err and "complaint" not in err
    for subscriber_id in ids[1:10]:  # complaints arriving after this issue started do not stop its resume
        store.record_feedback(subscriber_id, PREVIOUS, "complaint")
    store.add("late@example.org")
    code, out, err = run(content, capsys, "--to", "smtp")
    assert code == 0 and "sent 3" in out
