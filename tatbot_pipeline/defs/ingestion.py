"""Recordings as partitions: the sensor that finds them, `stroke_recording`, `recording_validation` and its checks."""


import time
from pathlib import Path

import dagster as dg
import numpy as np

from tatbot_pipeline.defs import OWNERS, partitioned_checks
from tatbot_pipeline.defs.metadata import headline_first, number, sig
from tatbot_pipeline.defs.resources import PipelineResource
from tatbot_pipeline.defs.splits import build_splits_job
from tatbot_pipeline.plots import badge_markdown, joint_ranges, png_markdown
from tatbot_pipeline.recordings.validation_report import Status, ValidationReport
from tatbot_pipeline.recordings.intake import load_seen, save_seen
from tatbot_pipeline.recordings.scan import (
    PER_TICK,
    IngestionPlan,
    RecordingsRootError,
    RecordingState,
    plan_ingestion,
    scan_root,
)
from tatbot_pipeline.recordings.summary import describe_recording
from tatbot_pipeline.recordings.validate import validate_recording

recordings_partitions = dg.DynamicPartitionsDefinition(name="recordings")


@dg.asset(
    partitions_def=recordings_partitions,
    group_name="recordings",
    kinds={"lerobot", "parquet"},
    owners=OWNERS,
    description="One stroke recording written by tatbot's stroke_tool (a LeRobot dataset plus scene, strokes and "
    "logs), read in place under `TATBOT_RECORDINGS_DIR`. The pipeline never writes there.",
)
def stroke_recording(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    path = pipeline.settings.recordings_dir / context.partition_key
    info = describe_recording(path)
    context.log.info(f"{path}: {info['episodes']} episodes, {info['frames']} frames, fingerprint {info['fingerprint']}")
    return dg.MaterializeResult(metadata=recording_metadata(path, info), data_version=dg.DataVersion(info["fingerprint"]))


def recording_metadata(path: Path, info: dict) -> dict:
    features = info.pop("features")
    size_mb = info.pop("size_bytes") / 1e6
    cams = info.get("cameras") or []
    summary = (f"{info.get('episodes')} episodes, {info.get('frames')} frames at {info.get('fps')} fps, "
               f"{len(cams)} camera(s), LeRobot {info.get('codebase_version')}, {sig(size_mb)} MB")
    entries = {
        "episodes": number(info.pop("episodes")),
        "frames": number(info.pop("frames")),
        "stroke_length_frames": number(info.pop("stroke_length")),
        "duration_s": number(info.pop("duration_s")),
        "size_mb": number(size_mb),
        "path": dg.MetadataValue.path(str(path)),
        **{k: _plain(v) for k, v in info.items()},
    }
    last = {"features": dg.MetadataValue.json({k: {"dtype": v.get("dtype"), "shape": v.get("shape")}
                                               for k, v in features.items()})}
    return headline_first(summary, entries, last)


# Checks on each recording, evaluated per partition (so the UI's check history names the recording). Each verdict
# looks different: PASS passes both, WARN fails all_episodes_usable with severity WARN (yellow), FAIL and INCOMPLETE
# fail both with severity ERROR (red). The UI colours a failed evaluation by its severity (check history, partition
# detail, run log) and a check as a whole, and the graph node, by its newest evaluation's: recording_usable is
# always ERROR, so the node is red while any recording is unusable, yellow while some only lost episodes.
# (Dagster 1.13 paints every failed partition red in a check's *Partitions* bar, whatever the severity.)
USABLE, ALL_EPISODES = "recording_usable", "all_episodes_usable"
with partitioned_checks():
    VALIDATION_CHECKS = [
        dg.AssetCheckSpec(USABLE, asset="recording_validation", partitions_def=recordings_partitions,
                          description="Fails (error) when the recording is unusable (FAIL) or still being written "
                          "(INCOMPLETE); the split leaves it out. An EMPTY session (no meta/: the robot never "
                          "connected) passes: nothing was recorded, nothing is wrong."),
        dg.AssetCheckSpec(ALL_EPISODES, asset="recording_validation", partitions_def=recordings_partitions,
                          description="Warns when episodes were excluded or anomalies were logged (WARN); the split "
                          "takes the usable episodes. Fails as an error when none is usable (FAIL, INCOMPLETE)."),
    ]


@dg.asset(
    partitions_def=recordings_partitions,
    deps=[stroke_recording],
    group_name="recordings",
    kinds={"python"},
    owners=OWNERS,
    description="Validation report of one recording: PASS, WARN (some episodes excluded), FAIL (unusable) or "
    "INCOMPLETE (still being written), every finding, and which episodes are usable. Materialized for every verdict "
    "(the report is the asset); the verdict is the summary and the two checks. Excluded episodes are never deleted; "
    "the split leaves them out.",
    check_specs=VALIDATION_CHECKS,
)
def recording_validation(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    settings = pipeline.settings
    report = validate_recording(settings.recordings_dir / context.partition_key, settle_seconds=settings.settle_seconds,
                                converted_dir=settings.converted_dir)
    report_path = report.save(settings.report_path(report.recording))
    # An unusable recording is an expected outcome with a verdict, not a crash: a warning line, no stack trace.
    (context.log.warning if report.failed else context.log.info)(f"{report.recording}: {report.headline()}")
    # On the run too (the Runs list's tag chips, the run's page): each ingestion says its recording's verdict.
    context.instance.add_run_tags(context.run.run_id, {"tatbot/verdict": verdict_tag(report)})
    return dg.MaterializeResult(metadata=report_metadata(report, report_path), check_results=validation_checks(report),
                                tags={"tatbot/verdict": report.status.value})


# The colour of each verdict, as the checks show it: red where the ERROR check fails, yellow where only the WARN one
# does, green where both pass; an empty session passes both but holds nothing (gray).
VERDICT_COLOURS = {Status.PASS: "green", Status.WARN: "yellow", Status.FAIL: "red", Status.INCOMPLETE: "red",
                   Status.EMPTY: "gray"}


def verdict_tag(report: ValidationReport) -> str:
    """'WARN 4/6': the verdict and the usable episodes, short enough for a tag chip."""
    verdict = report.status.value.upper()
    return verdict if report.status is Status.EMPTY else \
        f"{verdict} {len(report.episodes_usable)}/{report.episodes_total}"


def verdict_markdown(report: ValidationReport) -> str:
    """The verdict as a coloured badge and what it means for training: the partition's metadata shows it inline, so
    a recording's page says PASS, WARN or FAIL in the checks' colours without opening the Checks tab."""
    meaning = {Status.PASS: "every episode goes to the split", Status.EMPTY: "nothing was recorded",
               Status.INCOMPLETE: "still being written: checked again when it settles",
               Status.FAIL: "unusable: the split leaves it out"}.get(
        report.status, f"the split takes {len(report.episodes_usable)} of {report.episodes_total} episodes")
    return f"{badge_markdown(report.status.value.upper(), VERDICT_COLOURS[report.status])} {meaning}"


def validation_checks(report: ValidationReport) -> list[dg.AssetCheckResult]:
    excluded = report.episodes_excluded
    return [
        dg.AssetCheckResult(
            check_name=USABLE, passed=not report.failed, severity=dg.AssetCheckSeverity.ERROR,
            description=f"{report.status.value.upper()}: {report.recording}" + (
                "" if report.usable else f" — {report.first_reason[:300]}"),
            metadata={"status": report.status.value},
        ),
        dg.AssetCheckResult(
            check_name=ALL_EPISODES, passed=report.status in (Status.PASS, Status.EMPTY),
            severity=dg.AssetCheckSeverity.ERROR if report.failed else dg.AssetCheckSeverity.WARN,
            description=f"{report.headline()} ({report.recording})",
            metadata={"episodes_excluded": number(len(excluded))},
        ),
    ]


def report_metadata(report: ValidationReport, report_path: Path) -> dict:
    excluded = report.episodes_excluded
    entries = {
        "verdict": dg.MetadataValue.md(verdict_markdown(report)),
        "status": report.status.value,
        "episodes": number(report.episodes_total),
        "episodes_usable": number(len(report.episodes_usable)),
        "episodes_excluded": number(len(excluded)),
        "report": dg.MetadataValue.path(str(report_path)),
    }
    if "converted_from" in report.summary:  # a v2.1 recording: lineage names the original and the copy the split reads
        entries["original"] = dg.MetadataValue.path(report.summary["converted_from"]["path"])
        entries["converted_copy"] = dg.MetadataValue.path(report.path)
    last = {
        "findings": dg.MetadataValue.md(report.findings_markdown()),
        "excluded_episodes": dg.MetadataValue.json({str(k): v for k, v in excluded.items()}),
        "fingerprint": report.fingerprint,
    }
    fig = joint_ranges_figure(report)
    if fig is not None:
        last["joint_ranges"] = dg.MetadataValue.md(png_markdown(fig, "joint ranges vs URDF limits"))
    return headline_first(report.headline(), entries, last)


def joint_ranges_figure(report: ValidationReport):
    """The report's joint-range plot, each excluded episode named as the headline names it ('dead arm'); None when
    the report recorded no action ranges."""
    ranges = report.summary.get("action_ranges") or {}
    if not ranges:
        return None
    parsed = {int(ep): (np.array(lo), np.array(hi)) for ep, (lo, hi) in ranges.items()}  # JSON keys are strings
    return joint_ranges(parsed, {ep: " + ".join(names) for ep, names in report.excluded_names().items()})


def _plain(value):
    if isinstance(value, (list, dict)):
        return dg.MetadataValue.json(value)
    return dg.MetadataValue.text("—") if value is None else value


# The sensor asks for ingestion of these; a removal asks for a split rebuild (no partition is left to update).
INGESTION = [dg.AssetKey("stroke_recording"), dg.AssetKey("recording_validation")]
SPLITS = dg.AssetKey("training_splits")
ingest_job = dg.define_asset_job(
    "ingest_recordings", selection=INGESTION,
    description="Describe and validate one recording (a recordings partition); the recordings sensor launches it.")


@dg.sensor(
    name="recordings_sensor",
    description=f"Adds a recordings partition for every settled stroke-* dir under the recordings root and requests "
    f"ingestion of new or changed ones ({PER_TICK} per tick, a backlog takes a few ticks). Half-written recordings "
    "wait until they settle; a removed recording's partition is deleted and the split rebuilt without it. A missing, "
    "unreadable or suddenly empty root skips the tick with one line saying so (RECORDINGS ROOT UNUSABLE): it is "
    "never read as \"every recording was removed\".",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    jobs=[ingest_job, build_splits_job],
)
def recordings_sensor(context: dg.SensorEvaluationContext,
                      pipeline: PipelineResource) -> dg.SensorResult | dg.SkipReason:
    settings = pipeline.settings
    previous = load_seen(settings.intake_dir, context.cursor)
    try:
        states = scan_root(settings.recordings_dir)
    except RecordingsRootError as e:
        return unusable_root(context, str(e))
    if not states and previous.seen:
        return unusable_root(context, f"{settings.recordings_dir}: empty, but {len(previous.seen)} recordings were "
                             "ingested from it — is the mount missing? Nothing is treated as removed. If every "
                             "recording really was removed, reset this sensor's cursor.")
    plan = plan_ingestion(states, previous.seen, settings.settle_seconds, time.time(), limit=PER_TICK)
    if plan.settling:
        context.log.info(f"waiting for {len(plan.settling)} recording(s) to settle: {', '.join(plan.settling[:5])}")
    if plan.waiting:
        context.log.info(f"{plan.waiting} more settled recording(s) go in the next ticks ({PER_TICK} per tick)")
    if not plan.changed and not previous.unsaved:
        return dg.SkipReason(f"{len(states)} known, 0 new, {len(plan.settling)} settling under "
                             f"{settings.recordings_dir}")
    saved = save_seen(settings.intake_dir, previous, plan.seen)
    return dg.SensorResult(
        run_requests=ingestion_requests(plan.ready) + removal_requests(plan, saved.cursor),
        dynamic_partitions_requests=partition_requests(context.instance, plan),
        cursor=saved.cursor,
    )


def unusable_root(context: dg.SensorEvaluationContext, why: str) -> dg.SkipReason:
    """The tick's one line says what to fix (a stack trace would bury it); the cursor stays, nothing is removed."""
    context.log.error(why)
    return dg.SkipReason(f"RECORDINGS ROOT UNUSABLE: {why}")


def ingestion_requests(ready: list[RecordingState]) -> list[dg.RunRequest]:
    """One run per recording; the run key (name + file signature) makes a repeated request a no-op."""
    return [dg.RunRequest(run_key=f"{s.name}:{s.signature}", partition_key=s.name, job_name=ingest_job.name)
            for s in ready]


def removal_requests(plan: IngestionPlan, cursor: str) -> list[dg.RunRequest]:
    """A split rebuild when recordings disappeared and nothing new came in (new recordings trigger one anyway)."""
    if not plan.removed or plan.ready:
        return []
    return [dg.RunRequest(run_key=f"removed:{cursor}", job_name=build_splits_job.name,
                          tags={"tatbot/removed": ",".join(plan.removed[:20])[:250]})]


def partition_requests(instance: dg.DagsterInstance, plan: IngestionPlan) -> list:
    """Add this tick's new partitions and delete removed ones, each in one request."""
    known = set(instance.get_dynamic_partitions(recordings_partitions.name))
    new = [s.name for s in plan.ready if s.name not in known]
    gone = [name for name in plan.removed if name in known]
    return ([recordings_partitions.build_add_request(new)] if new else []) + (
        [recordings_partitions.build_delete_request(gone)] if gone else [])


defs = dg.Definitions(assets=[stroke_recording, recording_validation], sensors=[recordings_sensor], jobs=[ingest_job])
