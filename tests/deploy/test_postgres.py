"""The production instance profile against a real PostgreSQL server (Debian's package, throw-away cluster).

Switching to it must need configuration only: copy deploy/dagster.postgres.yaml to $DAGSTER_HOME/dagster.yaml and
set DAGSTER_PG_*. The recording -> validation path then runs and its results are read back by a second instance,
the way the webserver reads what a run worker on another node wrote.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import dagster as dg
import psycopg2
import yaml
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from tatbot_pipeline.defs.ingestion import recording_validation, stroke_recording
from tatbot_pipeline.defs.resources import PipelineResource

from tests.deploy.conftest import REPO, Postgres

PROFILE = REPO / "deploy" / "dagster.postgres.yaml"


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


def test_recording_validation_round_trip_through_postgres(production_home, pg_database: Postgres,
                                                         recording_copy, recordings_root: Path, tmp_path: Path):
    home = production_home("dagster.postgres.yaml")
    rec = recording_copy()
    resources = {"pipeline": PipelineResource(recordings_dir=str(recordings_root), home=str(tmp_path / "home"),
                                              settle_seconds=0.0)}

    with dg.DagsterInstance.from_config(str(home)) as writer:
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
    with dg.DagsterInstance.from_config(str(home)) as reader:
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
    with contextlib.closing(psycopg2.connect(host=pg_database.host, port=pg_database.port, user=pg_database.user,
                                             password=pg_database.password, dbname=pg_database.db)) as conn:
        cur = conn.cursor()
        cur.execute("SELECT status FROM runs WHERE run_id = %s", (run_id,))
        assert cur.fetchone() == ("SUCCESS",)
    assert not list(home.rglob("*.db")), "no SQLite storage may be created under DAGSTER_HOME"
