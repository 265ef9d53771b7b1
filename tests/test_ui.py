"""The demo as a user runs it, then the Dagster UI on its instance at 1600×1000, driven by headless Chromium.

One module, one demo run (the whole loop, ~1.5 min on 2 cores), run in a project dir laid out like the repo root:
the terminal output, the instance and `.tatbot.env` it leaves, then a plain `dagster dev` started there afterwards, as
the README says, and the pages a person opens. Each page check saves a screenshot in test-artifacts/ui/ (git-ignored),
so a person can look at what the test saw.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest
from dotenv import dotenv_values

from tests.dagster_dev import REPO, dagster_dev, fresh_instance, project_dir

ARTIFACTS = REPO / "test-artifacts" / "ui"
VIEWPORT = {"width": 1600, "height": 1000}
LINEAGE = ["stroke_recording", "recording_validation", "training_splits", "trained_policy", "policy_evaluation",
           "sim_evaluation", "eval_dataset"]
JOBS = ["ingest_recordings", "build_splits", "train_policy_job", "evaluate_policy", "simulate_policy", "robot_eval"]
# The demo's recordings with excluded episodes (WARN) and the one that is unusable (FAIL): demo.py's specs.
WARN_RECORDINGS, FAIL_PREFIX = 2, "stroke-crashed-"
# The flags the machine's Chromium needs here (no sandbox as root, no background traffic on a closed network).
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
                  "--no-first-run", "--disable-component-update", "--disable-sync"]

# What a person cannot read: a leaf whose text overflows a box that hides it (no hover text giving it whole), and a
# table wider than the pane that scrolls it.
CLIPPED_JS = """() => {
  const out = [];
  for (const el of document.querySelectorAll('body *')) {
    if (el.children.length || !el.textContent.trim() || el.scrollWidth <= el.clientWidth + 1) continue;
    const cs = getComputedStyle(el);
    const hides = cs.overflow === 'hidden' || cs.overflowX === 'hidden' || cs.textOverflow === 'ellipsis';
    const hover = el.closest('[title]')?.getAttribute('title') || '';
    if (hides && !hover.includes(el.textContent.trim())) out.push('text: ' + el.textContent.trim().slice(0, 80));
  }
  for (const t of document.querySelectorAll('table')) {
    let pane = t.parentElement;
    while (pane && getComputedStyle(pane).overflowX === 'visible') pane = pane.parentElement;
    if (pane && t.getBoundingClientRect().right > pane.getBoundingClientRect().right + 1)
      out.push('table: ' + t.innerText.trim().slice(0, 60).replace(/\\s+/g, ' '));
  }
  return out;
}"""


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict:
    """`tatbot-pipeline demo --no-ui` on a fresh instance and pipeline home, in a project dir (the repo root's
    workspace.yaml), as `make demo` runs it."""
    root = tmp_path_factory.mktemp("demo")
    project = project_dir(root / "project")
    dagster_home, home = fresh_instance(root / "dagster_home"), root / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TATBOT_")}
    env.update(DAGSTER_HOME=str(dagster_home), TATBOT_PIPELINE_HOME=str(home),
               TATBOT_ROBOT_STATE_DIR=str(root / "robot-state"))
    out = subprocess.run([str(Path(sys.executable).parent / "tatbot-pipeline"), "demo", "--no-ui"], cwd=project,
                         env=env, capture_output=True, text=True, timeout=1500)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return {"dagster_home": dagster_home, "home": home, "project": project, "stdout": out.stdout,
            "stderr": out.stderr}


def test_the_terminal_shows_the_steps_and_the_logs_hold_the_rest(demo):
    lines = (demo["stdout"] + demo["stderr"]).splitlines()
    assert len(lines) <= 150, len(lines)
    text = demo["stdout"] + demo["stderr"]
    steps = [line for line in demo["stdout"].splitlines() if line.startswith("==> ")]
    assert [s[:8] for s in steps] == [f"==> {i}/7 " for i in range(1, 8)]
    for noise in ("Svt[", "SVT [", "[mp4 @", "'batch_size'", "Warning:", "UserWarning", "DeprecationWarning"):
        assert noise not in text, noise
    assert "OPEN-LOOP GATE PASSED (the demo's relaxed gate): health 3/3, MAE" in text and "OK — 40/40 steps" in text
    assert "PROMOTED tiny_smolvla-" in text and "SIM GATE PASSED (the demo's relaxed gate): " in text
    # The promotion is labelled as made under the demo's limits, and the lab's own gate's verdict is shown beside it.
    assert "under the demo's relaxed gate" in text and "the lab's gate on the same strokes: SIM GATE" in text
    assert "WARN 4/6 usable: ep 1 dead arm, ep 4 black camera" in text
    [log] = re.findall(r"full logs:\s+(\S+\.log)", demo["stdout"])
    assert "Svt" not in Path(log).read_text() and "lerobot" in Path(log).read_text()  # the detail, minus encoder banners
    assert f"settings:           {demo['project'] / '.tatbot.env'}" in demo["stdout"]
    assert "Watch the loop:" in demo["stdout"].splitlines()[-1]


def test_the_demo_leaves_its_settings_where_dagster_dev_reads_them(demo):
    saved = dotenv_values(demo["project"] / ".tatbot.env")  # read below the shell, unlike a `.env`
    assert saved["TATBOT_RECORDINGS_DIR"] == str(demo["home"] / "demo" / "recordings")
    assert saved["TATBOT_PIPELINE_HOME"] == str(demo["home"]) and "TATBOT_RETRAIN_CRON" not in saved  # not exported


def test_the_instance_after_the_demo_tells_the_story(demo):
    with dg.DagsterInstance.from_config(str(demo["dagster_home"])) as instance:
        runs = instance.get_runs()
        assert not [r.job_name for r in runs if r.job_name == "__ephemeral_asset_job__"]
        # every run belongs to the code location `dagster dev` serves, as if launched from the UI
        assert {r.job_name for r in runs} == set(JOBS)
        assert all(r.remote_job_origin and r.remote_job_origin.location_name == "tatbot_pipeline" for r in runs)
        # an unusable recording is a verdict, not a failed run
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs), [(r.job_name, r.status) for r in runs]
        usable = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(dg.AssetKey("recording_validation"), "recording_usable"), limit=50)
        [failed] = [r for r in usable if r.status.value == "FAILED"]
        assert failed.partition.startswith(FAIL_PREFIX) and failed.evaluation.description.startswith(
            f"FAIL: {failed.partition} — ")
        latest = {key: instance.fetch_materializations(dg.AssetKey(key), limit=1).records[0].asset_materialization
                  for key in ("trained_policy", "policy_evaluation", "eval_dataset")}
        for key, mat in latest.items():
            assert list(mat.metadata)[0] == "summary", key
            for name, value in mat.metadata.items():
                if isinstance(value.value, float):
                    assert float(f"{value.value:.4g}") == value.value, (key, name, value.value)
        assert "| MAE | " in latest["policy_evaluation"].metadata["gate"].value
        assert isinstance(latest["eval_dataset"].metadata["actions_clamped"].value, int)
        assert latest["eval_dataset"].tags["tatbot/robot"] == "hog"


@pytest.fixture(scope="module")
def ui(demo, tmp_path_factory):
    """A plain `dagster dev` started in the demo's project dir afterwards (no TATBOT_* in its environment: it reads
    the demo's `.tatbot.env`), and a 1600×1000 Chromium page on it."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("Debian's chromium is missing: run ./scripts/setup.sh --with-test-deps (what `make test` does)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = tmp_path_factory.mktemp("ui") / "dagster_dev.log"
    with dagster_dev(demo["dagster_home"], {}, log, cwd=demo["project"]) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport=VIEWPORT)
        page.set_default_timeout(120_000)
        try:
            yield Ui(url, page, log)
        finally:
            browser.close()


class Ui:
    def __init__(self, url: str, page, log: Path) -> None:
        self.url, self.page, self.log = url, page, log

    def open(self, path: str, waiting_for: str) -> str:
        """The page at `path` once `waiting_for` shows; its text."""
        self.page.goto(self.url + path)
        try:
            self.page.wait_for_function("text => document.body && document.body.innerText.includes(text)",
                                        arg=waiting_for)
        except Exception:
            self.shot("timed_out")  # what the page showed instead
            raise
        self.page.wait_for_load_state("networkidle")
        return self.page.inner_text("body")

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"))

    def clipped(self) -> list[str]:
        return self.page.evaluate(CLIPPED_JS)

    def graphql(self, query: str) -> dict:
        request = urllib.request.Request(f"{self.url}/graphql", data=json.dumps({"query": query}).encode(),
                                         headers={"Content-Type": "application/json"})
        return json.load(urllib.request.urlopen(request, timeout=30))["data"]


def test_the_demos_runs_are_on_the_timeline_and_on_each_jobs_page(ui):
    timeline = ui.open("/overview/timeline", "robot_eval")
    assert "No runs" not in timeline and not [job for job in JOBS if job not in timeline]
    ui.shot("overview_timeline")
    for job in JOBS:
        runs = ui.open(f"/locations/tatbot_pipeline/jobs/{job}/runs", "Success")
        assert "No runs" not in runs, job
    ui.shot("robot_eval_runs")


def test_warn_recordings_look_different_from_passing_ones(ui, demo):
    """Per recording: PASS passes both checks, WARN fails only the WARN-severity one, FAIL the ERROR one; the
    checks' partition views and the catalog's lineage show it, and a WARN recording's summary names its findings."""
    ui.open("/assets/recording_validation?view=checks&checkDetail=all_episodes_usable", "Execution history")
    ui.page.get_by_role("tab", name="Partitions").last.click()
    warn = ui.page.get_by_text(re.compile(r"^Failed \(\d+\)$")).first
    warn.wait_for()
    ui.shot("recording_checks_warn_partitions")
    failed_either = int(re.search(r"\d+", warn.inner_text()).group())
    ui.open("/assets/recording_validation?view=checks&checkDetail=recording_usable", "Execution history")
    ui.page.get_by_role("tab", name="Partitions").last.click()
    unusable = ui.page.get_by_text(re.compile(r"^Failed \(\d+\)$")).first
    unusable.wait_for()
    assert failed_either - int(re.search(r"\d+", unusable.inner_text()).group()) == WARN_RECORDINGS
    ui.shot("recording_checks_fail_partitions")

    partitions = ui.open("/assets/recording_validation?view=partitions", "Materialized")
    assert "Failed (0)" in partitions, "a verdict is not a failed materialization"
    warn_name = _dead_arm_recording(demo["dagster_home"])
    detail = ui.open(f"/assets/recording_validation?view=partitions&partition={warn_name}", "WARN 4/6 usable")
    assert "WARN 4/6 usable: ep 1 dead arm, ep 4 black camera" in detail
    ui.shot("recording_warn_partition")
    assert not ui.clipped(), ui.clipped()

    lineage = ui.open("/assets/recording_validation?view=lineage&lineageScope=downstream&lineageDepth=1",
                      "training_splits")
    ui.shot("recordings_lineage")
    assert "Asset checks" in lineage


def _dead_arm_recording(dagster_home: Path) -> str:
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        records = instance.fetch_materializations(dg.AssetKey("recording_validation"), limit=50).records
    [name] = {r.asset_materialization.partition for r in records
              if r.asset_materialization.metadata["summary"].value.startswith("WARN 4/6")}
    return name


def test_the_promoted_checkpoint_and_the_last_rollout_read_without_json(ui):
    simulation = ui.open("/assets/sim_evaluation", "PROMOTED tiny_smolvla-")
    promoted = ui.page.get_by_text(re.compile(
        r"^PROMOTED tiny_smolvla-\S+ under the demo's relaxed gate — SIM GATE PASSED \(the demo's relaxed gate\)"))
    assert promoted.first.is_visible() and promoted.first.bounding_box()["y"] < VIEWPORT["height"]
    assert "| criterion |" not in simulation and "criterion" in simulation  # the gate is a table, not markdown source
    ui.shot("sim_evaluation")
    runs = ui.open("/runs", "robot_eval")
    assert "tatbot/promotion: PROMOTED" in runs and "tatbot/rollout: OK 40/40" in runs
    ui.shot("runs")
    evaluation = ui.open("/assets/policy_evaluation", "OPEN-LOOP GATE PASSED")
    assert "OPEN-LOOP GATE PASSED (the demo's relaxed gate): health 3/3, MAE" in evaluation
    ui.shot("policy_evaluation")


def test_nothing_is_clipped_at_1600_by_1000(ui, demo):
    rollout = next((demo["home"] / "eval_datasets").iterdir()).name
    pages = {"trained_policy": "/assets/trained_policy", "policy_evaluation": "/assets/policy_evaluation",
             "sim_evaluation": "/assets/sim_evaluation", "training_splits": "/assets/training_splits",
             "eval_dataset": f"/assets/eval_dataset?view=partitions&partition={rollout}"}
    clipped = {}
    for name, path in pages.items():
        ui.open(path, "summary")
        ui.shot(f"{name}_overview")
        clipped[name] = ui.clipped()
    assert not any(clipped.values()), clipped


def test_the_lineage_runs_from_recording_to_rollout(ui):
    # The graph renders only the nodes on screen: seven assets in a row need a wide window. The UI keeps graph
    # settings (collapsed groups) in local storage: start from a person's first visit.
    ui.page.evaluate("localStorage.clear()")
    ui.page.set_viewport_size({"width": 2400, "height": 1400})
    try:
        lineage = ui.open("/assets/eval_dataset?view=lineage&lineageScope=upstream&lineageDepth=7", "stroke_recording")
        ui.shot("eval_dataset_lineage")
    finally:
        ui.page.set_viewport_size(VIEWPORT)
    assert not [name for name in LINEAGE if name not in lineage]


def test_a_plain_dagster_dev_after_the_demo_ticks_the_recordings_sensor_cleanly(ui):
    """No TATBOT_RECORDINGS_DIR in the server's environment: only the demo's `.tatbot.env` points it at the
    recordings."""
    query = """{ sensorOrError(sensorSelector: {repositoryName: "__repository__", repositoryLocationName:
        "tatbot_pipeline", sensorName: "recordings_sensor"}) { ... on Sensor { sensorState { ticks(limit: 5) {
        status skipReason error { message } } } } } }"""
    deadline = time.monotonic() + 300
    while not (ticks := ui.graphql(query)["sensorOrError"]["sensorState"]["ticks"]):  # the daemon's first tick
        assert time.monotonic() < deadline, ui.log.read_text()[-3000:]
        time.sleep(2)
    assert all(t["status"] in ("SUCCESS", "SKIPPED") and not t["error"] for t in ticks), ticks
    assert not [t for t in ticks if "UNUSABLE" in (t["skipReason"] or "")], ticks
    ui.open("/locations/tatbot_pipeline/sensors/recordings_sensor", "recordings_sensor")
    ui.shot("recordings_sensor")


def test_an_unusable_recording_has_no_stack_trace_in_its_run(ui, demo):
    with dg.DagsterInstance.from_config(str(demo["dagster_home"])) as instance:
        [run] = [r for r in instance.get_runs() if r.tags.get("dagster/partition", "").startswith(FAIL_PREFIX)]
    log = ui.open(f"/runs/{run.run_id}", "FAIL 0/2 usable")
    ui.shot("unusable_recording_run")
    assert "Traceback" not in log and 'File "' not in log and "dagster._core" not in log
