"""`digest serve --check` as a real process: a good setup (PostgreSQL, a real SMTP relay) exits 0
and sends nothing; each kind of problem (a setting, the secret, the store, the mail relay) is named
in English and Korean with a non-zero exit; no secret or password is ever printed, and nothing is
created or migrated."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest
import servekit
from mailkit import free_port, write_content
from servekit import serve_env

from digest.subscribers.store import MIGRATIONS, SIGNING_KEYS_MIGRATION, migration_statements, open_store

recording_smtp = servekit.recording_smtp
SECRET = "s3cret-" + "x" * 40
DB_PASSWORD, SMTP_PASSWORD = "hunter2-db-password", "hunter2-smtp-password"


def check(tmp_path, env: dict) -> subprocess.CompletedProcess:
    if not (tmp_path / "content").exists():
        write_content(tmp_path)  # where `digest serve` reads the form's topics (--content content)
    done = subprocess.run([sys.executable, "-m", "digest", "serve", "--check"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    for secret in (SECRET, DB_PASSWORD, SMTP_PASSWORD):
        assert secret not in done.stdout + done.stderr
    return done


def with_password(dsn: str) -> str:
    """The same DSN with a password (the test server trusts loopback, so it is never asked for)."""
    return dsn.replace("postgres@", f"postgres:{DB_PASSWORD}@")


@pytest.fixture
def good_env(postgres_dsn, recording_smtp):
    _, smtp_port = recording_smtp
    open_store(postgres_dsn).close()  # created and migrated, as a first `digest serve` leaves it
    return serve_env(with_password(postgres_dsn), 8470, smtp_port, "https://you.github.io/ml-notes/",
                     DIGEST_SECRET=SECRET)


def test_a_good_setup_is_ready_and_the_relay_gets_no_mail(good_env, recording_smtp, tmp_path):
    recorder, _ = recording_smtp
    before = len(recorder.messages)
    done = check(tmp_path, good_env)
    assert done.returncode == 0, done.stdout
    for topic in ("settings", "content", "secret", "store", "mail"):
        assert any(line.startswith(f"ok    {topic}") for line in done.stdout.splitlines()), topic
    assert "FAIL" not in done.stdout and "ready to serve · 시작할 준비가 되었습니다" in done.stdout
    assert "postgres:***@127.0.0.1" in done.stdout and "schema" in done.stdout and "저장소" in done.stdout
    assert "answered EHLO" in done.stdout and len(recorder.messages) == before  # greeted, nothing sent
    assert not (tmp_path / "var").exists()  # no secret file, no store made


def test_content_the_form_cannot_read_is_named(good_env, tmp_path):
    (tmp_path / "content").mkdir()  # no tags.yml, no people.yml
    text = failed(check(tmp_path, good_env), "content")
    assert "콘텐츠를 읽을 수 없습니다" in text and "topics" in text


def failed(done: subprocess.CompletedProcess, topic: str) -> str:
    """The English and Korean lines of the first failure about ``topic``."""
    assert done.returncode == 1, done.stdout
    lines = done.stdout.splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith(f"FAIL  {topic}"))
    assert "problem(s) to fix before serving" in lines[-1] and "고칠 문제" in lines[-1]
    return lines[index] + "\n" + lines[index + 1]


def test_a_bad_setting_is_named(good_env, tmp_path):
    text = failed(check(tmp_path, {**good_env, "DIGEST_SERVE_IP_LIMIT": "lots"}), "settings")
    assert "DIGEST_SERVE_IP_LIMIT" in text and "COUNT/SECONDS" in text and "설정이 잘못되었습니다" in text


def test_a_public_listener_without_a_public_url_is_refused(good_env, tmp_path):
    env = {k: v for k, v in good_env.items() if k != "DIGEST_BASE_URL"}
    write_content(tmp_path)
    done = subprocess.run([sys.executable, "-m", "digest", "serve", "--check", "--host", "0.0.0.0"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=60)
    text = failed(done, "settings")
    assert "DIGEST_BASE_URL is not set" in text and "http://0.0.0.0:8470/" in text and "공개 https://" in text


def test_a_short_secret_is_refused_without_being_shown(good_env, tmp_path):
    text = failed(check(tmp_path, {**good_env, "DIGEST_SECRET": "short-" + SMTP_PASSWORD[:10]}), "secret")
    assert "fewer than 32" in text and "openssl rand -hex 32" in text and "32자보다" in text


def test_a_secret_file_others_can_read_is_refused(good_env, tmp_path):
    secret_file = tmp_path / "var" / "serve-secret"
    secret_file.parent.mkdir()
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o644)
    env = {k: v for k, v in good_env.items() if k != "DIGEST_SECRET"}
    text = failed(check(tmp_path, env), "secret")
    assert "readable by others (mode 644)" in text and "chmod 600" in text and "다른 사용자도" in text


def test_an_unreachable_store_is_named_with_its_password_starred(good_env, tmp_path):
    dsn = f"postgresql://digest:{DB_PASSWORD}@127.0.0.1:{free_port()}/digest"
    text = failed(check(tmp_path, {**good_env, "DIGEST_STORE": dsn}), "store")
    assert "cannot reach the PostgreSQL store at postgresql://digest:***@127.0.0.1" in text
    assert "저장소를 읽을 수 없습니다" in text


def test_a_store_from_a_newer_digest_is_refused_and_an_older_one_is_left_for_serve_to_upgrade(good_env, tmp_path):
    newer = tmp_path / "newer.sqlite3"
    sqlite3.connect(newer).execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}").connection.close()
    text = failed(check(tmp_path, {**good_env, "DIGEST_STORE": str(newer)}), "store")
    assert "written by a newer digest" in text and "digest를 올려" in text

    older = tmp_path / "older.sqlite3"
    con = sqlite3.connect(older)
    statements = [s for n in range(SIGNING_KEYS_MIGRATION - 1) for s in migration_statements(n, "sqlite")]
    con.executescript(";".join(statements) + f";PRAGMA user_version={SIGNING_KEYS_MIGRATION - 1};")
    con.close()
    done = check(tmp_path, {**good_env, "DIGEST_STORE": str(older)})
    assert done.returncode == 0 and f"schema {SIGNING_KEYS_MIGRATION - 1} of {len(MIGRATIONS)}" in done.stdout
    assert "WARN  store" in done.stdout and "백업" in done.stdout
    version = sqlite3.connect(older).execute("PRAGMA user_version").fetchone()[0]
    assert version == SIGNING_KEYS_MIGRATION - 1  # the check migrated nothing


def test_an_unreachable_mail_relay_is_named(good_env, tmp_path):
    env = {**good_env, "DIGEST_SMTP_PORT": str(free_port()), "DIGEST_SMTP_USERNAME": "digest",
           "DIGEST_SMTP_PASSWORD": SMTP_PASSWORD}
    text = failed(check(tmp_path, env), "mail")
    assert "did not answer" in text and "ConnectionRefusedError" in text and "메일 서버" in text


def test_a_relay_without_starttls_is_refused_when_starttls_is_asked_for(good_env, tmp_path):
    text = failed(check(tmp_path, {**good_env, "DIGEST_SMTP_SECURITY": "starttls"}), "mail")
    assert "offers no STARTTLS" in text and "암호화 없이" in text


def test_several_problems_are_all_reported_in_one_run(good_env, tmp_path):
    env = {**good_env, "DIGEST_SECRET": "short", "DIGEST_STORE": f"postgresql://u:{DB_PASSWORD}@127.0.0.1:"
           f"{free_port()}/x", "DIGEST_SMTP_PORT": str(free_port())}
    done = check(tmp_path, env)
    assert done.returncode == 1
    assert {line.split()[1] for line in done.stdout.splitlines() if line.startswith("FAIL")} == {
        "secret", "store", "mail"}
    assert "3 problem(s) to fix before serving" in done.stdout
