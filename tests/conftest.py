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
import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _as_server_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


@contextlib.contextmanager
def running_postgres(max_connections: int = 200):
    """Debian's PostgreSQL on a temporary folder and a loopback port: yields (DSN of its `postgres`
    database, its log file)."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (Debian package postgresql; `make test` installs it)")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: PostgreSQL refuses to run as root")
    folder = Path(tempfile.mkdtemp(prefix="digest-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    data, port, log = folder / "data", _free_port(), folder / "server.log"
    subprocess.run(_as_server_user([str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                                    "-E", "UTF8", "--no-sync"]), check=True, capture_output=True, timeout=120)
    options = (f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off "
               f"-c max_connections={max_connections}")
    started = subprocess.run(_as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options,
                                              "-l", str(log), "-w", "-t", "60", "start"]),
                             capture_output=True, text=True, timeout=90)
    if started.returncode != 0:
        text = log.read_text(errors="replace") if log.exists() else ""
        pytest.fail(f"PostgreSQL did not start: {started.stdout}{started.stderr}{text[-2000:]}")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres", log
    finally:
        subprocess.run(_as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


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
