"""A throw-away PostgreSQL server (Debian's package) for the production instance profiles."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
import itertools
from dataclasses import dataclass, replace
from pathlib import Path

import psycopg2
import pytest

from tatbot_pipeline.inference.local_node import free_port

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str
    password: str
    db: str

    def create_database(self, name: str) -> Postgres:
        """A fresh, empty database on this server (one per test: Dagster's tables start empty)."""
        with contextlib.closing(psycopg2.connect(host=self.host, port=self.port, user=self.user,
                                                 password=self.password, dbname="postgres")) as conn:
            conn.autocommit = True
            conn.cursor().execute(f"CREATE DATABASE {name}")
        return replace(self, db=name)

    def env(self) -> dict[str, str]:
        return {"DAGSTER_PG_HOST": self.host, "DAGSTER_PG_PORT": str(self.port), "DAGSTER_PG_USER": self.user,
                "DAGSTER_PG_PASSWORD": self.password, "DAGSTER_PG_DB": self.db}


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    if shutil.which("initdb"):
        return Path(shutil.which("initdb")).parent
    raise RuntimeError("no PostgreSQL server binaries (initdb) found: install them with "
                       "`scripts/setup.sh --with-test-deps` (Debian package `postgresql`)")


@contextlib.contextmanager
def running_postgres() -> Iterator[Postgres]:
    """initdb a cluster in a temp dir and serve it on a free loopback port; stop and delete it afterwards.

    initdb refuses to run as root, so as root the cluster belongs to the `postgres` user Debian's package creates.
    """
    pg_bin = _pg_bin()
    as_user: list[str] = []
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            raise RuntimeError("running as root but there is no `postgres` user; install Debian's `postgresql`") from None
        as_user = ["runuser", "-u", "postgres", "--"]
    base = Path(tempfile.mkdtemp(prefix="tatbot-pg-"))
    if as_user:
        os.chown(base, pw.pw_uid, pw.pw_gid)
    data, pwfile, log = base / "data", base / "pw", base / "server.log"
    pg = Postgres(host="127.0.0.1", port=free_port(), user="tatbot", password="s3cret-for-test", db="postgres")
    pwfile.write_text(pg.password)
    if as_user:
        os.chown(pwfile, pw.pw_uid, pw.pw_gid)

    def run(*cmd: str) -> None:
        proc = subprocess.run([*as_user, *cmd], capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            server_log = log.read_text() if log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}{server_log}")

    try:
        run(str(pg_bin / "initdb"), "-D", str(data), "-U", pg.user, f"--pwfile={pwfile}", "-A", "scram-sha-256",
            "--no-sync", "-E", "UTF8")
        opts = f"-p {pg.port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
        run(str(pg_bin / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", opts, "-w", "-t", "30", "start")
        try:
            yield pg
        finally:
            run(str(pg_bin / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    with running_postgres() as pg:
        yield pg


_databases = itertools.count()


@pytest.fixture
def pg_database(postgres: Postgres) -> Postgres:
    return postgres.create_database(f"dagster_{next(_databases)}")


@pytest.fixture
def production_home(tmp_path: Path, pg_database: Postgres, monkeypatch) -> Callable[[str], Path]:
    """Factory: a DAGSTER_HOME set up as the README says, a deploy/ profile as its dagster.yaml, DAGSTER_PG_* set."""
    for key, value in pg_database.env().items():
        monkeypatch.setenv(key, value)

    def make(profile: str) -> Path:
        home = tmp_path / "dagster_home"
        home.mkdir()
        shutil.copy(REPO / "deploy" / profile, home / "dagster.yaml")
        return home

    return make
