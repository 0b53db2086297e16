"""`digest serve` as a real process on 127.0.0.1, over real HTTP, on SQLite and on PostgreSQL:
double opt-in with the mail at a real SMTP server, one-click unsubscribe, preferences, and the
abuse the issue lists (forged, expired, reused and tampered tokens; enumeration; CSRF; limits;
CRLF, overlong, confusable and SQL-injection input in every field)."""

from __future__ import annotations

import itertools
import os
import re
import statistics
import time
from urllib.parse import quote

import httpx
import psycopg
import pytest
import servekit
from mailkit import write_content
from servekit import SITE_ORIGIN, confirm_link, csrf_of, mails_to, settled, start_server

from digest.subscribers.store import keyed_hash, open_store, sign_expiring, sign_token

recording_smtp = servekit.recording_smtp
_addresses = itertools.count(1)
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def fresh(prefix: str = "reader") -> str:
    return f"{prefix}{next(_addresses)}-{os.getpid()}@example.org"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(request, tmp_path_factory, recording_smtp):
    """One server per backend for this module: (server, store, recorder)."""
    folder = tmp_path_factory.mktemp(f"serve-{request.param}")
    content = write_content(folder)
    if request.param == "sqlite":
        location = str(folder / "var" / "subscribers.sqlite3")
    else:
        base = request.getfixturevalue("postgres_server")
        with psycopg.connect(base, autocommit=True) as con:
            con.execute("CREATE DATABASE digest_serve_tests")
        location = base.rsplit("/", 1)[0] + "/digest_serve_tests"
    recorder, smtp_port = recording_smtp
    server = start_server(folder, content, location, smtp_port, DIGEST_SERVE_CONFIRM_RETRY="0.2")  # retry soon
    store = open_store(location)
    yield server, store, recorder
    store.close()
    server.stop()
    if request.param == "postgresql":
        with psycopg.connect(base, autocommit=True) as con:
            con.execute("DROP DATABASE digest_serve_tests WITH (FORCE)")


def subscribe(client: httpx.Client, address: str, topics=(), **headers) -> httpx.Response:
    form = client.get("subscribe")
    fields = {"email": address, "topic": list(topics), "csrf": csrf_of(form.text)}
    return client.post("subscribe", data=fields, headers=headers)


def post_form(client: httpx.Client, url: str, fields: dict | None = None) -> httpx.Response:
    page = client.get(url)
    return client.post(url, data={**(fields or {}), "csrf": csrf_of(page.text)})


def snapshot(store) -> list:
    return [(s.id, s.address, s.status, s.topics) for s in store.subscribers()]


# --- the pages ---

def test_pages_are_korean_without_script_and_carry_the_security_headers(served):
    server, _, _ = served
    with server.client() as client:
        for path, status in (("subscribe", 200), ("health", 200), ("nowhere", 404), ("confirm/x.y.z", 400),
                             ("unsubscribe/garbage", 400), ("static/serve.css", 200)):
            response = client.get(path)
            assert response.status_code == status, path
            headers = response.headers
            csp = headers["content-security-policy"]
            assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
            assert headers["x-content-type-options"] == "nosniff" and headers["referrer-policy"] == "same-origin"
            assert "server" not in headers
            if headers["content-type"].startswith("text/html"):
                assert "<script" not in response.text and " style=" not in response.text
                assert '<html lang="ko">' in response.text
        assert "페이지를 찾을 수 없습니다" in client.get("nowhere").text
        assert client.get("").headers["location"] == "/subscribe"
        assert client.put("subscribe").status_code == 405


def test_double_opt_in_from_form_to_confirmed_with_topics(served):
    server, store, recorder = served
    address = fresh()
    with server.client() as client:
        response = subscribe(client, address, ("backprop", "tools"))
        assert response.status_code == 200 and "메일을 확인해 주세요" in response.text
        link = confirm_link(recorder, address)
        assert store.find(address).status == "pending"
        page = client.get(link)  # opening the link shows a button and changes nothing
        assert page.status_code == 200 and "구독 확인" in page.text and store.find(address).status == "pending"
        done = client.post(link, data={"csrf": csrf_of(page.text)})
        assert done.status_code == 200 and "구독되었습니다" in done.text and "역전파, 도구 &amp; 팁" in done.text
    subscriber = store.find(address)
    assert subscriber.status == "confirmed" and subscriber.topics == ("backprop", "tools")
    message = mails_to(recorder, address)[0]
    assert message["Subject"] == "[ML 읽기 노트] 구독을 확인해 주세요" and message["To"] == address
    assert link in message.get_body(("html",)).get_content()


def test_a_confirmation_link_is_single_use_and_forgeries_are_refused(served):
    server, store, recorder = served
    address = fresh()
    with server.client() as client:
        subscribe(client, address)
        link = confirm_link(recorder, address)
        page = client.get(link)
        assert post_form(client, link).status_code == 200
        again = client.get(link)  # the link once more: it worked, and the page says so
        assert again.status_code == 200 and "이미 확인된 구독입니다" in again.text and "<form" not in again.text
        twice = client.post(link, data={"csrf": csrf_of(page.text)})  # a double submit of the first page
        assert twice.status_code == 200 and "이미 확인된 구독입니다" in twice.text
        store.set_status(store.find(address).id, "unsubscribed")  # used, then left: the link starts nothing
        reused = client.get(link)
        assert reused.status_code == 409 and "이미 사용한 확인 링크" in reused.text
        assert store.find(address).status == "unsubscribed"
        token = link.rsplit("/", 1)[1]
        ident, expires, mac = token.split(".")
        forged = {
            "tampered id": f"{int(ident, 16) + 1:x}.{expires}.{mac}",
            "tampered expiry": f"{ident}.{int(expires, 16) + 86400:x}.{mac}",
            "other key": sign_expiring(b"k" * 32, "confirm", int(ident, 16), int(expires, 16)),
            "other purpose": sign_expiring(store.secret(), "unsubscribe", int(ident, 16), int(expires, 16)),
            "garbage": "'%20OR%201=1--",
        }
        for why, bad in forged.items():
            response = client.get(f"confirm/{bad}")
            assert response.status_code == 400 and "링크가 올바르지 않습니다" in response.text, why
        expired = sign_expiring(store.secret(), "confirm", int(ident, 16), int(time.time()) - 1)
        response = client.get(f"confirm/{expired}")
        assert response.status_code == 410 and "만료" in response.text


def test_a_subscriber_asking_for_other_topics_confirms_a_change_not_a_subscription(served):
    server, store, recorder = served
    address = fresh()
    store.add(address, ("backprop",))
    with server.client() as client:
        subscribe(client, address, ("tools",))
        message = mails_to(recorder, address)[-1]
        assert message["Subject"] == "[ML 읽기 노트] 주제 변경을 확인해 주세요"
        assert "주제 변경 확인하기" in message.get_body(("html",)).get_content()
        page = client.get(confirm_link(recorder, address))
        assert "<h1>주제 변경 확인</h1>" in page.text and "구독이 확정되고" not in page.text
        assert store.find(address).topics == ("backprop",)  # opening the page changes nothing


def test_an_expired_confirmation_is_refused_by_the_store_too(served):
    server, store, _ = served
    address = fresh()
    _, confirmation = store.request_confirmation(address, (), 0, 0)  # already past its lifetime
    token = sign_expiring(store.secret(), "confirm", confirmation.id, int(time.time()) + 3600)
    with server.client() as client:
        response = post_form(client, f"confirm/{token}")
    assert response.status_code == 410 and store.find(address).status == "pending"


def test_repeated_requests_send_one_confirmation_per_window_then_are_limited(served):
    server, store, recorder = served
    address = fresh()
    with server.client() as client:
        answers = [subscribe(client, address) for _ in range(5)]
        assert {a.status_code for a in answers} == {200} and len({a.content for a in answers}) == 1
        limited = subscribe(client, address)
    assert limited.status_code == 429 and "이 주소로 들어온 요청이 너무 많습니다" in limited.text
    assert int(limited.headers["retry-after"]) > 0
    mails_to(recorder, address)
    time.sleep(0.3)
    assert len(recorder.to(address)) == 1 and store.count() >= 1


def test_a_confirmation_the_mail_server_did_not_take_is_tried_again_until_it_goes_out_once(served):
    server, store, recorder = served
    address = fresh()
    recorder.rules[address] = ["drop", "451"]  # the connection drops, then a temporary refusal
    with server.client() as client:
        assert subscribe(client, address).status_code == 200
        assert len(mails_to(recorder, address, timeout=15)) == 1  # the third try, without asking again
        subscribe(client, address)  # within the window: the mail went out, so no second one
    time.sleep(0.5)
    assert len(recorder.to(address)) == 1 and store.find(address).status == "pending"
    who = f"confirmation for {keyed_hash(store.secret(), address)}:"
    assert [server.log_text().count(f"{who} {kind}") for kind in ("lost", "temporary", "sent")] == [1, 1, 1]


def test_a_confirmation_the_mail_server_refused_can_be_asked_for_again_at_once(served):
    server, store, recorder = served
    address = fresh()
    withdrawn = f"confirmation for {keyed_hash(store.secret(), address)} withdrawn"
    recorder.rules[address] = ["550"]  # no such user, today
    with server.client() as client:
        assert subscribe(client, address).status_code == 200
        deadline = time.monotonic() + 10
        while withdrawn not in server.log_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert withdrawn in server.log_text() and recorder.to(address) == []
        subscribe(client, address)  # well within the window: the refused mail does not count
    assert len(mails_to(recorder, address)) == 1


def test_responses_do_not_tell_new_pending_and_subscribed_addresses_apart(served):
    server, store, recorder = served
    known = [fresh("known") for _ in range(12)]
    pending = [fresh("pending") for _ in range(12)]
    for address in known:
        store.add(address)
    for address in pending:
        store.request_confirmation(address, (), 600, 3600)
    unknown = [fresh("unknown") for _ in range(12)]
    with server.client(headers={"Origin": SITE_ORIGIN}) as client:  # the site's embedded form: no cookie
        def ask(address):
            start = time.perf_counter()
            response = client.post("subscribe", data={"email": address, "topic": "backprop"})
            elapsed = time.perf_counter() - start
            headers = sorted((k, v) for k, v in response.headers.items() if k != "date")
            return (response.status_code, headers, response.content), elapsed

        for address in known[:2] + unknown[:2]:  # warm up both paths
            ask(address)
        results = {"known": [], "pending": [], "unknown": []}
        for trio in zip(known[2:], pending[2:], unknown[2:], strict=True):  # interleaved: same background load
            for kind, address in zip(results, trio, strict=True):
                results[kind].append(ask(address))
    answers = {kind: {r[0][0] for r in rs} | {repr(r[0][1:]) for r in rs} for kind, rs in results.items()}
    assert answers["known"] == answers["unknown"] == answers["pending"]  # byte for byte
    medians = {kind: statistics.median(r[1] for r in rs) for kind, rs in results.items()}
    spread = max(medians.values()) - min(medians.values())
    assert spread < max(0.01, 0.5 * min(medians.values())), medians  # within noise (2 busy cores)
    assert store.find(known[5]).status == "confirmed"  # and a stranger's request changed nothing
    assert mails_to(recorder, known[5])[0]["Subject"] == "[ML 읽기 노트] 주제 변경을 확인해 주세요"


def test_one_click_unsubscribe_works_without_a_page_and_get_never_unsubscribes(served):
    server, store, _ = served
    subscriber, _ = store.add(fresh())
    url = f"unsubscribe/{sign_token(store.secret(), 'unsubscribe', subscriber.id)}"
    with server.client() as client:
        for _ in range(3):
            page = client.get(url)
            assert page.status_code == 200 and page.text.count("<button") == 1
        client.head(url)
        assert store.get(subscriber.id).status == "confirmed"
        response = client.post(url, content=b"List-Unsubscribe=One-Click", headers=FORM)
        assert response.status_code == 200 and store.get(subscriber.id).status == "unsubscribed"
        assert client.post(url, content=b"List-Unsubscribe=One-Click", headers=FORM).status_code == 200
        multipart = client.post(url, files={"List-Unsubscribe": (None, "One-Click")})
        assert multipart.status_code == 200


def test_the_unsubscribe_page_button_unsubscribes_with_its_csrf_token(served):
    server, store, _ = served
    subscriber, _ = store.add(fresh())
    url = f"unsubscribe/{sign_token(store.secret(), 'unsubscribe', subscriber.id)}"
    with server.client() as client:
        assert client.post(url, data={"go": "1"}).status_code == 403  # no token: a forged form
        assert store.get(subscriber.id).status == "confirmed"
        done = post_form(client, url)
    assert done.status_code == 200 and "수신 거부되었습니다" in done.text
    assert store.get(subscriber.id).status == "unsubscribed"


def test_preferences_change_topics_through_the_signed_link(served):
    server, store, _ = served
    subscriber, _ = store.add(fresh(), ("backprop",))
    url = f"preferences/{sign_token(store.secret(), 'preferences', subscriber.id)}"
    with server.client() as client:
        page = client.get(url)
        assert page.status_code == 200 and 'value="backprop" checked' in page.text
        saved = client.post(url, data={"topic": ["tools", "reinforcement-learning"], "csrf": csrf_of(page.text)})
        assert saved.status_code == 200 and "주제를 저장했습니다" in saved.text
        assert store.get(subscriber.id).topics == ("reinforcement-learning", "tools")
        assert client.get(f"preferences/{sign_token(store.secret(), 'unsubscribe', subscriber.id)}").status_code == 400
        store.unsubscribe(subscriber.id)
        gone = client.get(url)
        assert gone.status_code == 404 and "구독 중인 주소가 아닙니다" in gone.text


def test_cross_site_posts_and_missing_tokens_are_refused(served):
    server, store, _ = served
    before = store.count()
    with server.client() as client:
        no_token = client.post("subscribe", data={"email": fresh()})
        assert no_token.status_code == 403 and "새로 고친 뒤" in no_token.text
        evil = client.post("subscribe", data={"email": fresh()}, headers={"Origin": "https://evil.example"})
        assert evil.status_code == 403 and "다른 사이트" in evil.text
        cross = client.post("subscribe", data={"email": fresh()}, headers={"Sec-Fetch-Site": "cross-site"})
        assert cross.status_code == 403
        wrong = client.post("subscribe", data={"email": fresh(), "csrf": "A" * 24})
        assert wrong.status_code == 403
        site = client.post("subscribe", data={"email": fresh()}, headers={"Origin": SITE_ORIGIN})
        assert site.status_code == 200  # the form embedded on the site
    assert store.count() == before + 1


def test_oversized_and_non_form_bodies_are_refused(served):
    server, store, _ = served
    before = snapshot(store)
    with server.client() as client:
        big = client.post("subscribe", content=b"email=" + b"a" * 20_000, headers=FORM)
        assert big.status_code == 413 and "너무 큽니다" in big.text

        def chunks():
            for _ in range(20):
                yield b"a" * 1000

        streamed = client.post("subscribe", content=chunks(), headers=FORM)  # chunked: no Content-Length
        assert streamed.status_code == 413
        as_json = client.post("subscribe", json={"email": fresh()}, headers={"Origin": SITE_ORIGIN})
        assert as_json.status_code == 415
        bad_utf8 = client.post("subscribe", content=b"email=%ff%fe", headers={**FORM, "Origin": SITE_ORIGIN})
        assert bad_utf8.status_code == 400
    assert snapshot(store) == before


BAD_VALUES = {
    "crlf": "a@example.org\r\nBcc: victim@example.org",
    "lf": "a@example.org\nX: y",
    "overlong": "a" * 400 + "@example.org",
    "confusable": "reader@exаmple.org",  # Cyrillic а
    "fullwidth": "ｒｅａｄｅｒ@example.org",
    "invisible": "rea\u200bder@example.org",
    "sql": "x'); DROP TABLE subscribers;--@example.org",
    "sql-or": "' OR '1'='1",
    "display-name": "Victim <victim@example.org>",
    "nul": "a\x00@example.org",
}


def test_bad_input_in_every_field_is_a_clear_4xx_and_changes_nothing(served):
    server, store, recorder = served
    mails = settled(recorder)
    subscriber, _ = store.add(fresh())
    preferences = f"preferences/{sign_token(store.secret(), 'preferences', subscriber.id)}"
    before = snapshot(store)
    with server.client() as client:
        csrf = csrf_of(client.get("subscribe").text)
        page_csrf = csrf_of(client.get(preferences).text)
        for kind, value in BAD_VALUES.items():
            for field, fields in (("email", {"email": value, "csrf": csrf}),
                                  ("topic", {"email": fresh(), "topic": value, "csrf": csrf}),
                                  ("csrf", {"email": fresh(), "csrf": value})):
                response = client.post("subscribe", data=fields)
                assert 400 <= response.status_code < 500, (kind, field, response.status_code)
                assert re.search(r"[가-힣]{2,}", response.text), (kind, field)
            response = client.post(preferences, data={"topic": value, "csrf": page_csrf})
            assert 400 <= response.status_code < 500, kind
            for route in ("confirm", "unsubscribe", "preferences"):
                response = client.get(f"{route}/{quote(value, safe='')}")
                assert 400 <= response.status_code < 500, (kind, route)
            response = client.post(f"unsubscribe/{quote(value, safe='')}", content=b"List-Unsubscribe=One-Click",
                                   headers=FORM)
            assert 400 <= response.status_code < 500, kind
    assert snapshot(store) == before and settled(recorder, quiet=0.2) == mails


def test_the_per_ip_limit_answers_in_korean_with_retry_after(served, tmp_path):
    server, _, _ = served
    limited = start_server(tmp_path, write_content(tmp_path), server.store, DIGEST_SERVE_IP_LIMIT="3/60")
    try:
        with limited.client(headers={"Origin": SITE_ORIGIN}) as client:
            codes = [client.post("subscribe", data={"email": fresh()}).status_code for _ in range(4)]
            assert codes == [200, 200, 200, 429]
            response = client.post("subscribe", data={"email": fresh()})
            assert "요청이 너무 많습니다" in response.text and 0 < int(response.headers["retry-after"]) <= 61
        other = httpx.Client(base_url=limited.url, transport=httpx.HTTPTransport(local_address="127.0.0.2"))
        with other:  # another client address has its own allowance
            assert other.post("subscribe", data={"email": fresh()}, headers={"Origin": SITE_ORIGIN}).status_code == 200
        assert limited.client().get("health").status_code == 200  # pages and health are not limited
    finally:
        limited.stop()


def test_logs_carry_keyed_hashes_never_addresses(served):
    server, store, recorder = served
    address = fresh("private")
    with server.client() as client:
        subscribe(client, address)
        mails_to(recorder, address)
    time.sleep(0.2)
    log = server.log_text()
    assert "private" not in log and "@example.org" not in log
    from digest.subscribers.store import keyed_hash

    assert keyed_hash(store.secret(), address) in log


def test_the_service_says_at_start_which_site_may_post_its_form(served):
    server, _, _ = served
    line = next(x for x in server.log_text().splitlines() if "the subscribe form may be posted from" in x)
    assert SITE_ORIGIN in line and "http://127.0.0.1:8000" in line and "(the site, DIGEST_SITE_URL;" in line


def test_the_public_url_falls_back_to_the_one_emails_carry_and_must_be_a_web_address():
    from digest.errors import MailSettingsError
    from digest.service.app import serve_settings

    env = {"DIGEST_SECRET": "k" * 64, "DIGEST_SERVICE_URL": "https://subscribe.example.org"}
    assert serve_settings(env, {}, host="0.0.0.0").base_url == "https://subscribe.example.org/"
    env["DIGEST_BASE_URL"] = "https://digest.example.org/s/"  # the service's own setting wins
    assert serve_settings(env, {}).base_url == "https://digest.example.org/s/"
    with pytest.raises(MailSettingsError, match=r"DIGEST_BASE_URL .*'subscribe.example.org' uses 'no' scheme"):
        serve_settings({**env, "DIGEST_BASE_URL": "subscribe.example.org"}, {})


def test_a_service_on_loopback_takes_the_form_of_a_local_mkdocs_serve_preview(served):
    server, _, recorder = served
    address = fresh()
    with server.client(headers={"Origin": "http://127.0.0.1:8000"}) as client:  # no cookie, no CSRF field
        assert client.post("subscribe", data={"email": address}).status_code == 200
    assert len(mails_to(recorder, address)) == 1
    from digest.service.app import serve_settings

    public = serve_settings({"DIGEST_SECRET": "k" * 64}, {}, host="0.0.0.0")
    assert public.allowed_origins == ()  # a service others reach takes the form from its site only
