"""Fixtures shared by several test modules.

    project            a content folder with the project's registries and no notes; cwd is its parent
    reply(...)         how the tests' local HTTP servers answer one request
    postgres_server    Debian's PostgreSQL (initdb + pg_ctl) on a temporary data folder and a
                       loopback port, once per session; as the `postgres` user when we are root
                       (PostgreSQL refuses to run as root). Skipped, with the reason, where it is
                       not installed.
    postgres_dsn       a fresh, empty database on that server for one test
    store_location     parametrized: a SQLite file and a PostgreSQL database, for tests that
                       must pass on both backends
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
from pathlib import Path

import pgkit
import pytest

ROOT = Path(__file__).resolve().parent.parent
_databases = itertools.count(1)


@pytest.fixture
def project(tmp_path, monkeypatch):
    content = tmp_path / "content"
    (content / "notes").mkdir(parents=True)
    for name in ("tags.yml", "people.yml"):
        shutil.copy(ROOT / "content" / name, content / name)
    monkeypatch.chdir(tmp_path)
    return content


@contextlib.contextmanager
def running_postgres(max_connections: int = 200):
    """pgkit.running_postgres, skipping the test where PostgreSQL cannot run here."""
    try:
        with pgkit.running_postgres(max_connections) as server:
            yield server
    except pgkit.PostgresUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def postgres_server():
    """A running PostgreSQL on 127.0.0.1: yields the DSN of its `postgres` database."""
    with running_postgres() as (dsn, _):
        yield dsn


@pytest.fixture
def postgres_dsn(postgres_server):
    """A new empty database for one test."""
    import psycopg

    name = f"digest_test_{os.getpid()}_{next(_databases)}"
    with psycopg.connect(postgres_server, autocommit=True) as con:
        con.execute(f"CREATE DATABASE {name}")
    yield postgres_server.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(postgres_server, autocommit=True) as con:
        con.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_location(request, tmp_path) -> str:
    """Where a store lives, once per backend: a SQLite file path, or a PostgreSQL DSN."""
    if request.param == "sqlite":
        return str(tmp_path / "var" / "subscribers.sqlite3")
    return request.getfixturevalue("postgres_dsn")
