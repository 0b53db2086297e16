"""The bounce corpus (tests/mail/bounces/*.eml, written for these tests in the shapes Postfix, Exim,
qmail, Gmail, Outlook/Exchange and feedback loops send) filled in for one subscriber of a store.

A file's name says what a person reading it would call it: '<kind>--<what>.eml', the kind one of
digest.mail.bounces.KINDS. Placeholders: {{verp}} the envelope sender our message had, {{rcpt}}
the subscriber's address, {{token}} their unsubscribe token, {{unsub_url}} the one-click URL,
{{list_id}} our List-Id, {{mid}} a Message-ID, {{forged_verp}} a bounce address whose token was
tampered with. Used by tests/mail/test_bounces*.py and bench/bounces.py.
"""

from __future__ import annotations

from pathlib import Path

from digest.mail.message import BOUNCE_LOCAL, MailSettings, bounce_token
from digest.subscribers.store import sign_token

CORPUS = Path(__file__).resolve().parent / "mail" / "bounces"
WEEK = "2016-W28"


def corpus() -> list[tuple[str, str, bytes]]:
    """(file name, expected kind, template bytes), by name."""
    return [(p.name, p.name.split("--", 1)[0], p.read_bytes()) for p in sorted(CORPUS.glob("*.eml"))]


def values_for(keyring, subscriber, settings: MailSettings, issue: str = WEEK) -> dict[str, str]:
    token = bounce_token(keyring.current, issue, subscriber.id)
    head, _, mac = token.rpartition(".")
    forged = f"{head}.{('B' if mac[0] == 'A' else 'A')}{mac[1:]}"
    unsubscribe = sign_token(keyring.current, "unsubscribe", subscriber.id)
    return {"verp": f"{BOUNCE_LOCAL}+{token}@{settings.bounce_domain}",
            "forged_verp": f"{BOUNCE_LOCAL}+{forged}@{settings.bounce_domain}",
            "rcpt": subscriber.address, "token": unsubscribe,
            "unsub_url": f"{settings.service_url}unsubscribe/{unsubscribe}",
            "list_id": f"{settings.list_name} <{settings.list_address}>",
            "mid": f"<{issue}.{subscriber.id:08x}@{settings.domain}>"}


def fill(template: bytes, values: dict[str, str]) -> bytes:
    for name, value in values.items():
        template = template.replace(b"{{" + name.encode() + b"}}", value.encode())
    return template.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
