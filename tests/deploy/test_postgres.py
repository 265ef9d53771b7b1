"""The production instance profile against a real PostgreSQL server (Debian's package, throw-away cluster).

Switching to it must need configuration only: copy deploy/dagster.postgres.yaml to $DAGSTER_HOME/dagster.yaml and
set DAGSTER_PG_*. The recording -> validation path then runs and its results are read back by a second instance,
the way the webserver reads what a run worker on another node wrote.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import psycopg2
import pytest
import yaml
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from tatbot_pipeline.defs.ingestion import recording_validation, stroke_recording
from tatbot_pipeline.defs.resources import PipelineResource

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "deploy" / "dagster.postgres.yaml"


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str
    password: str
    db: str

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    pg = Postgres(host="127.0.0.1", port=_free_port(), user="tatbot", password="s3cret-for-test", db="dagster")
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
            with contextlib.closing(psycopg2.connect(host=pg.host, port=pg.port, user=pg.user, password=pg.password,
                                                     dbname="postgres")) as conn:
                conn.autocommit = True
                conn.cursor().execute(f"CREATE DATABASE {pg.db}")
            yield pg
        finally:
            run(str(pg_bin / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    with running_postgres() as pg:
        yield pg


@pytest.fixture
def production_home(tmp_path: Path, postgres: Postgres, monkeypatch) -> Path:
    """A DAGSTER_HOME set up as the README says: the profile as its dagster.yaml, DAGSTER_PG_* in the env."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROFILE, home / "dagster.yaml")
    for key, value in postgres.env().items():
        monkeypatch.setenv(key, value)
    return home


def test_profile_keeps_the_run_queue_and_limits_of_the_default_instance():
    default = yaml.safe_load((REPO / "dagster.yaml").read_text())
    production = yaml.safe_load(PROFILE.read_text())
    assert production["concurrency"] == default["concurrency"]
    assert {k: v for k, v in production.items() if k != "storage"} == default
    assert production["storage"]["postgres"]["postgres_db"] == {
        "hostname": {"env": "DAGSTER_PG_HOST"}, "port": {"env": "DAGSTER_PG_PORT"},
        "username": {"env": "DAGSTER_PG_USER"}, "password": {"env": "DAGSTER_PG_PASSWORD"},
        "db_name": {"env": "DAGSTER_PG_DB"}, "scheme": "postgresql+psycopg2",
    }, "the connection must come from the environment only"


def test_recording_validation_round_trip_through_postgres(production_home: Path, postgres: Postgres,
                                                         recording_copy, recordings_root: Path, tmp_path: Path):
    rec = recording_copy()
    resources = {"pipeline": PipelineResource(recordings_dir=str(recordings_root), home=str(tmp_path / "home"),
                                              settle_seconds=0.0)}

    with dg.DagsterInstance.from_config(str(production_home)) as writer:
        assert isinstance(writer.run_storage, PostgresRunStorage)
        assert isinstance(writer.event_log_storage, PostgresEventLogStorage)
        assert isinstance(writer.schedule_storage, PostgresScheduleStorage)
        assert isinstance(writer.run_coordinator, QueuedRunCoordinator)
        queue = writer.get_concurrency_config().run_queue_config  # what the daemon's queue reads
        assert queue.max_concurrent_runs == 4
        assert {"key": "robot", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in queue.tag_concurrency_limits
        assert {"key": "tatbot/training", "limit": 1} in queue.tag_concurrency_limits

        writer.add_dynamic_partitions("recordings", [rec.name])
        result = dg.materialize([stroke_recording, recording_validation], partition_key=rec.name,
                                resources=resources, instance=writer)
        assert result.success
        run_id = result.run_id

    # Another process (the webserver, the daemon) opening the same profile sees everything.
    with dg.DagsterInstance.from_config(str(production_home)) as reader:
        assert reader.get_run_by_id(run_id).status == dg.DagsterRunStatus.SUCCESS
        assert reader.get_dynamic_partitions("recordings") == [rec.name]
        [record] = reader.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("recording_validation"), asset_partitions=[rec.name]), limit=5,
        ).records
        meta = record.asset_materialization.metadata
        assert meta["status"].value == "pass" and meta["episodes_usable"].value == 4
        rec_meta = reader.get_latest_materialization_event(dg.AssetKey("stroke_recording")).asset_materialization.metadata
        assert rec_meta["episodes"].value == 4
        check = reader.get_latest_asset_check_evaluation_record(
            dg.AssetCheckKey(dg.AssetKey("recording_validation"), "recording_usable"))
        assert check.run_id == run_id
        assert check.event.asset_check_evaluation.passed

    # The records really are in PostgreSQL, not in a SQLite file next to the profile.
    with contextlib.closing(psycopg2.connect(host=postgres.host, port=postgres.port, user=postgres.user,
                                             password=postgres.password, dbname=postgres.db)) as conn:
        cur = conn.cursor()
        cur.execute("SELECT status FROM runs WHERE run_id = %s", (run_id,))
        assert cur.fetchone() == ("SUCCESS",)
    assert not list(production_home.rglob("*.db")), "no SQLite storage may be created under DAGSTER_HOME"
