"""SES bounces and complaints through SNS at POST webhooks/ses (#27 item 3, the webhook part).

Real SNS is not reachable here: the signing certificate is generated for the test (cryptography),
and the fetch of its URL is served from a local mapping the test hands `create_app`, which also
records every URL asked for (so a certificate URL on another host is shown never to be fetched).
The payloads have the shape of SNS's HTTP POSTs and of SES's notifications.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from mailkit import INTRO, WEEK, mail_env, write_content

from digest.mail.compose import IsoWeek, compose, render
from digest.mail.message import mail_settings
from digest.pipeline.check import load_content
from digest.service.app import ServeSettings, create_app
from digest.service.sns import canonical
from digest.subscribers.store import open_store

TOPIC = "arn:aws:sns:us-east-1:123456789012:digest-ses-feedback"
CERT_URL = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0000000000000000000000.pem"
PREVIOUS = "2016-W26"


def certificate(key, days=(-1, 30)) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now + dt.timedelta(days=days[0]))
            .not_valid_after(now + dt.timedelta(days=days[1])).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def keys():
    return {name: rsa.generate_private_key(public_exponent=65537, key_size=2048) for name in ("sns", "other")}


@pytest.fixture
def fetched():
    return []


@pytest.fixture
def world(tmp_path, keys, fetched):
    """The store (readers sent W28 and, later, W26), the app, and the certificates it can fetch."""
    store = open_store(tmp_path / "var" / "subscribers.sqlite3")
    readers = [store.add(f"reader{i}@example.org")[0] for i in range(4)]
    for issue in (WEEK, PREVIOUS):  # W26 sent last: the "latest issue" unless the Message-ID says W28
        store.queue(issue, "smtp")
        store.db.execute("UPDATE deliveries SET state='sent', updated=? WHERE issue=?",
                         ("2016-07-20T00:00:00+00:00" if issue == WEEK else "2016-07-21T00:00:00+00:00", issue))
    certs = {CERT_URL: certificate(keys["sns"]),
             CERT_URL.replace("0000.pem", "1111.pem"): certificate(keys["sns"], days=(-30, -1))}  # expired

    def fetch(url: str) -> bytes:
        fetched.append(url)
        if url in certs:
            return certs[url]
        if ".pem" in url:
            raise LookupError(url)
        return b"<ConfirmSubscriptionResponse/>"

    settings = ServeSettings(base_url="http://127.0.0.1:8470/", secret=b"s" * 32, outbox=tmp_path / "outbox",
                             ses_topics=(TOPIC,))
    app = create_app(settings, store, mail_settings(mail_env(), {}), {}, sns_fetch=fetch)
    content, _ = load_content(write_content(tmp_path, intro=INTRO))
    mail = mail_settings(mail_env(), {})
    template = render(compose(content, IsoWeek.parse(WEEK), mail.site_url), content, mail, store.secret())
    yield {"store": store, "app": app, "readers": readers, "template": template}
    store.close()


def post(app, body: bytes | str, path: str = "/webhooks/ses") -> httpx.Response:
    async def go():
        transport = httpx.ASGITransport(app=app, client=("54.240.197.1", 443))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8470") as client:
            return await client.post(path, content=body, headers={"content-type": "text/plain; charset=UTF-8"})
    return asyncio.run(go())


def now_iso(offset: float = 0) -> str:
    moment = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=offset)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


_ids = iter(range(1, 10_000))


def sns(kind: str, message: str, key, version: str = "1", cert_url: str = CERT_URL, topic: str = TOPIC,
        age: float = 0, **extra) -> dict:
    body = {"Type": kind, "MessageId": f"22b80b92-fdea-4c2c-8f9d-bdfb0c7b{next(_ids):04d}", "TopicArn": topic,
            "Message": message, "Timestamp": now_iso(-age), "SignatureVersion": version,
            "SigningCertURL": cert_url, **extra}
    if kind == "Notification":
        body.setdefault("Subject", "Amazon SES Email Event Notification")
        body["UnsubscribeURL"] = "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=x"
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    body["Signature"] = base64.b64encode(key.sign(canonical(body), padding.PKCS1v15(), algorithm)).decode()
    return body


def bounce(address: str, kind: str = "Permanent", message_id: str = "") -> str:
    mail = {"timestamp": now_iso(), "source": "digest@example.org", "messageId": "0100018c-ses-internal",
            "destination": [address], "headersTruncated": False,
            "headers": [{"name": "Message-ID", "value": message_id}] if message_id else [],
            "commonHeaders": {"messageId": message_id} if message_id else {}}
    return json.dumps({"notificationType": "Bounce", "mail": mail, "bounce": {
        "bounceType": kind, "bounceSubType": "General" if kind == "Permanent" else "MailboxFull",
        "bouncedRecipients": [{"emailAddress": address, "action": "failed", "status": "5.1.1",
                               "diagnosticCode": "smtp; 550 5.1.1 user unknown"}],
        "timestamp": now_iso(), "feedbackId": "0100018c-feedback"}})


def complaint(address: str, message_id: str = "", feedback: str = "abuse") -> str:
    mail = {"timestamp": now_iso(), "messageId": "0100018c-ses-internal", "destination": [address],
            "commonHeaders": {"messageId": message_id} if message_id else {}}
    return json.dumps({"eventType": "Complaint", "mail": mail, "complaint": {
        "complainedRecipients": [{"emailAddress": address}], "complaintFeedbackType": feedback,
        "timestamp": now_iso(), "feedbackId": "0100018c-feedback", "userAgent": "Yahoo!-Mail-Feedback/2.0"}})


def rates(store, issue):
    r = store.issue_rates(issue, "smtp")
    return r.hard_bounced, r.soft_bounced, r.complained


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_signed_hard_bounce_suppresses_the_reader_and_counts_for_the_issue_its_message_id_names(
        world, keys, version):
    store, reader = world["store"], world["readers"][1]
    message_id = world["template"].message_id(reader.id)
    answer = post(world["app"], json.dumps(sns("Notification", bounce(reader.address, message_id=message_id),
                                               keys["sns"], version)))
    assert answer.status_code == 200 and answer.text == "ok: 1\n", answer.text
    assert store.get(reader.id).status == "unsubscribed" and store.suppression(reader.address) == "bounced"
    assert rates(store, WEEK) == (1, 0, 0) and rates(store, PREVIOUS) == (0, 0, 0)  # by the Message-ID


def test_a_complaint_suppresses_and_counts_a_soft_bounce_only_counts(world, keys):
    store, readers = world["store"], world["readers"]
    assert post(world["app"], json.dumps(sns("Notification", complaint(readers[0].address), keys["sns"],
                                             "2"))).status_code == 200
    assert post(world["app"], json.dumps(sns("Notification", bounce(readers[2].address, "Transient"),
                                             keys["sns"]))).status_code == 200
    not_spam = complaint(readers[3].address, feedback="not-spam")
    assert post(world["app"], json.dumps(sns("Notification", not_spam, keys["sns"]))).text == "ok: 0\n"
    assert store.suppression(readers[0].address) == "complained" and store.get(readers[0].id).status == "unsubscribed"
    assert store.get(readers[2].id).status == "confirmed" and store.suppression(readers[2].address) is None
    assert store.get(readers[3].id).status == "confirmed"
    # no Message-ID of ours: the latest issue each was sent (W26)
    assert rates(store, PREVIOUS) == (0, 1, 1) and store.issue_rates(PREVIOUS, "smtp").complaint_rate == 0.25


def test_a_forged_message_id_is_not_believed(world, keys):
    store, reader = world["store"], world["readers"][1]
    forged = world["template"].message_id(reader.id + 1)  # W28's id, but another reader's
    post(world["app"], json.dumps(sns("Notification", complaint(reader.address, forged), keys["sns"])))
    assert rates(store, WEEK) == (0, 0, 0) and rates(store, PREVIOUS) == (0, 0, 1)


def refused(world, body: dict | bytes) -> httpx.Response:
    answer = post(world["app"], body if isinstance(body, bytes) else json.dumps(body))
    store = world["store"]
    assert all(store.get(r.id).status == "confirmed" for r in world["readers"]), "a refused message changed a reader"
    assert store.suppression_counts() == {"unsubscribed": 0, "bounced": 0, "complained": 0}
    return answer


def test_a_bad_signature_is_refused(world, keys):
    address = world["readers"][0].address
    assert refused(world, sns("Notification", bounce(address), keys["other"])).status_code == 403
    tampered = sns("Notification", bounce(world["readers"][1].address), keys["sns"])
    tampered["Message"] = bounce(address)  # signed for reader1, changed to reader0
    answer = refused(world, tampered)
    assert answer.status_code == 403 and "bad signature" in answer.text
    garbled = sns("Notification", bounce(address), keys["sns"])
    garbled["Signature"] = "not base64!"
    assert refused(world, garbled).status_code == 403


@pytest.mark.parametrize("url", [
    "https://sns.us-east-1.amazonaws.com.evil.example/SimpleNotificationService-0.pem",
    "https://evil.example/sns.us-east-1.amazonaws.com/SimpleNotificationService-0.pem",
    "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-0.pem",
    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0.txt",
    "https://sns.us-east-1.amazonaws.com:8443/SimpleNotificationService-0.pem",
    "https://user@sns.us-east-1.amazonaws.com/SimpleNotificationService-0.pem",
    "https://sns.amazonaws.com/SimpleNotificationService-0.pem",
])
def test_a_certificate_from_a_host_that_is_not_snss_is_never_fetched(world, keys, fetched, url):
    answer = refused(world, sns("Notification", bounce(world["readers"][0].address), keys["sns"], cert_url=url))
    assert answer.status_code == 403 and "not SNS's" in answer.text
    assert fetched == []


def test_a_replayed_message_is_refused_and_counted_once(world, keys):
    body = json.dumps(sns("Notification", complaint(world["readers"][0].address), keys["sns"]))
    assert post(world["app"], body).status_code == 200
    again = post(world["app"], body)
    assert again.status_code == 409 and "already taken" in again.text
    assert rates(world["store"], PREVIOUS) == (0, 0, 1)


def test_a_stale_message_is_refused(world, keys):
    old = sns("Notification", bounce(world["readers"][0].address), keys["sns"], age=2 * 3600)
    answer = refused(world, old)
    assert answer.status_code == 403 and "stale" in answer.text
    future = sns("Notification", bounce(world["readers"][0].address), keys["sns"], age=-3600)
    assert refused(world, future).status_code == 403


def test_other_topics_versions_expired_certificates_and_junk_are_refused(world, keys):
    address = world["readers"][0].address
    assert refused(world, sns("Notification", bounce(address), keys["sns"],
                              topic="arn:aws:sns:us-east-1:999999999999:someone-else")).status_code == 403
    assert refused(world, sns("Notification", bounce(address), keys["sns"], version="3")).status_code == 400
    expired = sns("Notification", bounce(address), keys["sns"], cert_url=CERT_URL.replace("0000.pem", "1111.pem"))
    assert refused(world, expired).status_code == 400
    missing = sns("Notification", bounce(address), keys["sns"], cert_url=CERT_URL.replace("0000.pem", "2222.pem"))
    assert refused(world, missing).status_code == 503  # cannot check now: SNS tries again later
    for junk in (b"", b"[]", b"{\"Type\": \"Notification\"}", b"\xff\xfe", b"{" * 5000, b"[" * 200_000):
        assert refused(world, junk).status_code == 400


def test_a_subscription_confirmation_opens_its_subscribe_url_only_on_snss_host(world, keys, fetched):
    good = "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=x&Token=2336412f37"
    answer = post(world["app"], json.dumps(sns("SubscriptionConfirmation", "You have chosen to subscribe...",
                                               keys["sns"], SubscribeURL=good, Token="2336412f37")))
    assert answer.status_code == 200 and fetched == [CERT_URL, good]
    evil = "https://evil.example/?Action=ConfirmSubscription"
    answer = post(world["app"], json.dumps(sns("SubscriptionConfirmation", "...", keys["sns"], SubscribeURL=evil,
                                               Token="2336412f37")))
    assert answer.status_code == 403 and evil not in fetched


def test_a_large_notification_fits_but_the_forms_keep_their_limit(world, keys):
    reader = world["readers"][0]
    message = json.loads(bounce(reader.address))
    message["mail"]["headers"] = [{"name": f"X-Padding-{i}", "value": "x" * 900} for i in range(100)]  # ~100 KB
    body = json.dumps(sns("Notification", json.dumps(message), keys["sns"]))
    assert len(body) > 90_000 and post(world["app"], body).status_code == 200
    assert post(world["app"], "email=" + "x" * 90_000, path="/subscribe").status_code == 413


def test_without_topics_there_is_no_webhook(tmp_path):
    store = open_store(tmp_path / "s.sqlite3")
    app = create_app(ServeSettings(base_url="http://127.0.0.1:8470/", secret=b"s" * 32), store,
                     mail_settings(mail_env(), {}), {})
    assert post(app, b"{}").status_code == 404
    store.close()


def test_digest_serve_takes_ses_feedback_with_certificates_from_local_files(tmp_path, keys):
    from servekit import start_server

    store_path = tmp_path / "var" / "subscribers.sqlite3"
    store = open_store(store_path)
    reader = store.add("reader@example.org")[0]
    store.queue(WEEK, "smtp")
    store.db.execute("UPDATE deliveries SET state='sent'")
    pem = tmp_path / "sns.pem"
    pem.write_bytes(certificate(keys["sns"]))
    mapping = tmp_path / "sns-certs.json"
    mapping.write_text(json.dumps({CERT_URL: str(pem)}), encoding="utf-8")
    server = start_server(tmp_path, write_content(tmp_path), str(store_path), DIGEST_SERVE_SES_TOPICS=TOPIC,
                          DIGEST_SERVE_SNS_CERT_FILES=str(mapping))
    try:
        with server.client() as client:
            confirm = sns("SubscriptionConfirmation", "...", keys["sns"], Token="t",
                          SubscribeURL="https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&Token=t")
            assert client.post("webhooks/ses", content=json.dumps(confirm)).status_code == 200
            body = json.dumps(sns("Notification", complaint(reader.address), keys["sns"], "2"))
            answer = client.post("webhooks/ses", content=body, headers={"content-type": "text/plain; charset=UTF-8"})
            assert answer.status_code == 200 and answer.text == "ok: 1\n"
            assert client.post("webhooks/ses", content=body).status_code == 409
            other = sns("Notification", complaint(reader.address), keys["other"])
            assert client.post("webhooks/ses", content=json.dumps(other)).status_code == 403
    finally:
        server.stop()
    assert store.suppression(reader.address) == "complained" and store.issue_rates(WEEK, "smtp").complained == 1
    log = server.log_text()
    assert "reader@example.org" not in log and "open https://sns.us-east-1.amazonaws.com/" in log
    store.close()
