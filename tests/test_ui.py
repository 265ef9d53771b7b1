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

# What a person cannot read: text cut by a box that hides its overflow (an ellipsis, or a tag chip running past its
# column), unless a hover gives it whole (`strict`: even then — a chip that needs a hover is not read at a glance);
# and a table wider than the pane that scrolls it.
CLIPPED_JS = """strict => {
  const out = [];
  const hides = el => [getComputedStyle(el).overflow, getComputedStyle(el).overflowX].some(
    v => v === 'hidden' || v === 'clip');
  const hover = el => (el.closest('[title]')?.getAttribute('title') || '') + ' ' +
                      (el.closest('[data-tooltip]')?.getAttribute('data-tooltip') || '');
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const text = n.textContent.trim(), el = n.parentElement;
    if (!text || !el || el.closest('svg')) continue;
    const range = document.createRange();
    range.selectNodeContents(n);
    const r = range.getBoundingClientRect();
    if (!r.width || !r.height || (!strict && hover(el).includes(text))) continue;
    let cut = getComputedStyle(el).textOverflow === 'ellipsis' && el.scrollWidth > el.clientWidth + 1;
    for (let box = el; !cut && box && box !== document.body; box = box.parentElement) {
      const b = box.getBoundingClientRect();
      cut = hides(box) && (r.right > b.right + 1 || r.left < b.left - 1);
    }
    if (cut) out.push('text: ' + (hover(el).trim() || text).slice(0, 80));
  }
  for (const t of document.querySelectorAll('table')) {
    let pane = t.parentElement;
    while (pane && getComputedStyle(pane).overflowX === 'visible') pane = pane.parentElement;
    if (pane && t.getBoundingClientRect().right > pane.getBoundingClientRect().right + 1)
      out.push('table: ' + t.innerText.trim().slice(0, 60).replace(/\\s+/g, ' '));
  }
  return out;
}"""
# Dagster's accent colours (light theme) as the browser computes them: check icons, and our verdict badges.
YELLOW, RED, GREEN = "rgb(254, 163, 25)", "rgb(199, 42, 28)", "rgb(46, 204, 129)"


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
        # The demo's rollout ran on the embedded sim node (no mcp_url), not on the configured name (hog): said so.
        rollout = latest["eval_dataset"]
        assert rollout.tags["tatbot/robot"] == "embedded_sim_node" and rollout.metadata["backend"].value == "sim"
        assert " on embedded sim node, sim backend, scene default; " in rollout.metadata["summary"].value
        assert " on hog" not in rollout.metadata["summary"].value


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

    def clipped(self, strict: bool = False) -> list[str]:
        return self.page.evaluate(CLIPPED_JS, strict)

    def icon_colour(self, within, name: str) -> str:
        """The computed colour of the Dagster icon `name` (warning_outline, cancel, close, …) inside `within`."""
        icon = within.locator(f'[role="img"][aria-label="{name}"]').first
        return icon.evaluate("e => getComputedStyle(e).backgroundColor")

    def icon_colour_near(self, text: str, icon: str) -> str | None:
        """The colour of the first Dagster icon `icon` (warning_outline, cancel, close, …) whose row mentions `text`:
        its table row, else the box a few levels up (a check in the list, a lineage node's row)."""
        return self.page.evaluate("""([text, icon]) => {
          for (const el of document.querySelectorAll(`[role="img"][aria-label="${icon}"]`)) {
            let row = el.closest('tr');
            for (let up = el, i = 0; !row && up && i < 4; up = up.parentElement, i++)
              if ((up.innerText || '').includes(text)) row = up;
            if (row && row.innerText.includes(text)) return getComputedStyle(el).backgroundColor;
          }
          return null;
        }""", [text, icon])

    def badge(self, verdict: str) -> dict:
        """The `verdict` badge of the open partition as the browser shows it: loaded, its size, its fill colour."""
        img = self.page.locator(f'img[alt="{verdict}"]').first
        img.wait_for()
        return img.evaluate("""e => ({loaded: e.complete && e.naturalWidth > 0, visible: e.getBoundingClientRect().width > 0,
                                       fill: atob(e.src.split(',')[1]).match(/<rect[^>]*fill="([^"]+)"/)[1]})""")

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
    """Per recording: PASS passes both checks, WARN fails only all_episodes_usable (severity WARN: yellow), FAIL
    fails both (severity ERROR: red). Dagster 1.13 colours a recording's state only where it shows checks: the
    checks list, each check's history and partition detail, the graph node (the worst recording's colour). Its
    partition list, partitions bar and catalog colour materializations only, and every verdict materializes its
    report: there the partition's `verdict` badge says it, in the same colours, and the Runs list's tag in words."""
    recordings = _recordings_by_verdict(demo["dagster_home"])
    warn_name, fail_name, pass_name = recordings["WARN 4/6"], recordings["FAIL"], recordings["PASS"]

    ui.open("/assets/recording_validation?view=checks&checkDetail=all_episodes_usable", "Execution history")
    assert ui.icon_colour_near("all_episodes_usable", "warning_outline") == YELLOW
    assert ui.icon_colour_near("recording_usable", "cancel") == RED
    ui.page.get_by_role("tab", name="Execution history").last.click()
    ui.page.get_by_text(warn_name).first.wait_for()
    ui.shot("recording_checks_history")
    assert ui.icon_colour_near(warn_name, "warning_outline") == YELLOW  # WARN: yellow
    assert ui.icon_colour_near(fail_name, "cancel") == RED  # FAIL: red in the same check
    assert ui.icon_colour_near(pass_name, "check_circle") == GREEN
    assert ui.icon_colour_near(fail_name, "warning_outline") is None

    # Each check's Partitions bar: Dagster paints every failed partition red whatever its severity; the counts
    # still tell WARN (fails one check) from FAIL (fails both).
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
    for verdict, name, colour, words in (("WARN", warn_name, YELLOW, "the split takes 4 of 6 episodes"),
                                         ("FAIL", fail_name, RED, "unusable: the split leaves it out"),
                                         ("PASS", pass_name, GREEN, "every episode goes to the split")):
        detail = ui.open(f"/assets/recording_validation?view=partitions&partition={name}", "summary")
        badge = ui.badge(verdict)
        assert badge["loaded"] and badge["visible"] and _rgb(badge["fill"]) == colour, (verdict, badge)
        assert words in detail, verdict
        ui.shot(f"recording_{verdict.lower()}_partition")
        assert not ui.clipped(), (verdict, ui.clipped())  # the findings table, a FAIL's long first reason
    assert "WARN 4/6 usable: ep 1 dead arm, ep 4 black camera" in ui.open(
        f"/assets/recording_validation?view=partitions&partition={warn_name}", "WARN 4/6 usable")

    with dg.DagsterInstance.from_config(str(demo["dagster_home"])) as instance:
        runs = {r.tags.get("dagster/partition"): r.run_id for r in instance.get_runs()}
    ui.open(f"/runs/{runs[warn_name]}", "ingest_recordings")  # its tags, as the Runs list's chips show them
    ui.page.get_by_role("button", name="View tags and config").click()
    ui.page.get_by_text("tatbot/verdict").first.wait_for()
    assert "WARN 4/6" in ui.page.locator(".bp5-dialog").first.inner_text()
    ui.page.keyboard.press("Escape")

    lineage = ui.open("/assets/recording_validation?view=lineage&lineageScope=downstream&lineageDepth=1",
                      "training_splits")
    ui.shot("recordings_lineage")
    # The node shows the worst recording: red while one is unusable (the demo's crashed one).
    assert "0 / 2 Passed" in lineage and ui.icon_colour_near("Passed", "close") == RED


def _recordings_by_verdict(dagster_home: Path) -> dict[str, str]:
    """The demo's recordings by verdict: the one with a dead arm (WARN 4/6), the crashed one (FAIL), a clean one."""
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        records = instance.fetch_materializations(dg.AssetKey("recording_validation"), limit=50).records
    summaries = {r.asset_materialization.partition: r.asset_materialization.metadata["summary"].value
                 for r in records}
    pick = lambda prefix: sorted(name for name, summary in summaries.items() if summary.startswith(prefix))  # noqa: E731
    [warn], [fail] = pick("WARN 4/6"), pick("FAIL")
    assert fail.startswith(FAIL_PREFIX)
    return {"WARN 4/6": warn, "FAIL": fail, "PASS": pick("PASS 6/6")[-1]}  # the v2.1 one: a path in a finding


def _rgb(hex_colour: str) -> str:
    return "rgb({}, {}, {})".format(*(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)))


def test_the_joint_range_legend_is_whole_and_the_plot_fits_its_modal(ui, demo):
    """The legend names each excluded episode as the headline does, in whole words, inside the image; the image
    fits the UI's markdown modal at 1600 px."""
    from tatbot_pipeline.defs.ingestion import joint_ranges_figure
    from tatbot_pipeline.plots import png_markdown
    from tatbot_pipeline.recordings.validation_report import ValidationReport

    name = _recordings_by_verdict(demo["dagster_home"])["WARN 4/6"]
    fig = joint_ranges_figure(ValidationReport.load(demo["home"] / "validation" / f"{name}.json"))
    legend = fig.axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == [
        "within URDF limits", "included episodes", "episode 1 excluded: dead arm", "episode 4 excluded: black camera"]
    fig.canvas.draw()
    box, drawn = legend.get_window_extent(), fig.get_tightbbox().transformed(fig.dpi_scale_trans)
    assert drawn.x0 <= box.x0 and box.x1 <= drawn.x1  # the saved (tight) image holds the whole legend
    png_markdown(fig)

    ui.open(f"/assets/recording_validation?view=partitions&partition={name}", "joint_ranges")
    row = ui.page.locator("xpath=//tr[td[1][normalize-space(.)='joint_ranges']]").first
    row.get_by_text("[Show Markdown]").click()
    image = ui.page.locator('.bp5-dialog img[alt="joint ranges vs URDF limits"]').first
    image.wait_for()
    ui.page.wait_for_function("e => e.complete && e.naturalWidth > 0", arg=image.element_handle())
    ui.page.wait_for_function("""() => !document.getAnimations().some(  // the dialog has finished opening (it scales)
        a => a.playState === 'running' && a.effect?.target?.closest?.('.bp5-overlay'))""")
    ui.shot("joint_ranges_modal")
    fits = image.evaluate("""e => { let pane = e.parentElement;
        while (pane && getComputedStyle(pane).overflowX === 'visible') pane = pane.parentElement;
        return {image: e.getBoundingClientRect().width, natural: e.naturalWidth,
                right: e.getBoundingClientRect().right, pane: pane.getBoundingClientRect().right,
                scrolls: pane.scrollWidth > pane.clientWidth + 1}; }""")
    # Shown whole (nothing to scroll to, nothing past the modal's edge) and at about its own size (the modal may
    # scale it by a few pixels, never so much that the legend's 7-point text blurs).
    assert not fits["scrolls"] and fits["right"] <= fits["pane"] + 1, fits
    assert fits["image"] >= 0.95 * fits["natural"], fits


def test_the_promoted_checkpoint_and_the_last_rollout_read_without_json(ui, demo):
    simulation = ui.open("/assets/sim_evaluation", "PROMOTED tiny_smolvla-")
    promoted = ui.page.get_by_text(re.compile(
        r"^PROMOTED tiny_smolvla-\S+ under the demo's relaxed gate — SIM GATE PASSED \(the demo's relaxed gate\)"))
    assert promoted.first.is_visible() and promoted.first.bounding_box()["y"] < VIEWPORT["height"]
    assert "| criterion |" not in simulation and "criterion" in simulation  # the gate is a table, not markdown source
    ui.shot("sim_evaluation")
    runs = ui.open("/runs", "robot_eval")
    assert "tatbot/promotion: PROMOTED" in runs and "tatbot/rollout: OK 40/40" in runs
    assert "tatbot/robot: embedded_sim_node" in runs and "tatbot/robot: hog" not in runs
    ui.shot("runs")
    evaluation = ui.open("/assets/policy_evaluation", "OPEN-LOOP GATE PASSED")
    assert "OPEN-LOOP GATE PASSED (the demo's relaxed gate): health 3/3, MAE" in evaluation
    ui.shot("policy_evaluation")
    rollout = next((demo["home"] / "eval_datasets").iterdir()).name
    page = ui.open(f"/assets/eval_dataset?view=partitions&partition={rollout}", "summary")
    assert " on embedded sim node, sim backend, scene default; " in page and " on hog" not in page


def test_every_page_says_the_same_about_promotion(ui, demo):
    """promoted.json is the one truth, worded by promotion.promotion_status: sim_evaluation's summary, its
    leaderboard and the run's tag say PROMOTED; policy_evaluation, which decides only the open-loop half, says its
    own verdict and that sim_evaluation decides promotion, never a "no: awaiting sim_evaluation" gone stale."""
    from tatbot_pipeline.config import PipelineSettings
    from tatbot_pipeline.promotion import promotion_status, read_leaderboard, read_promoted

    settings = PipelineSettings(home=demo["home"])
    promoted = read_promoted(settings)
    [entry] = [e for e in read_leaderboard(settings) if e["checkpoint_sha256"] == promoted["checkpoint_sha256"]]
    status = promotion_status(entry, promoted)
    assert status == "PROMOTED under the demo's relaxed gate"
    simulation = ui.open("/assets/sim_evaluation", "leaderboard")
    leaderboard = _metadata_cell(ui, "leaderboard")
    assert f"{status}" in leaderboard and "awaiting" not in leaderboard
    evaluation = ui.open("/assets/policy_evaluation", "leaderboard")
    assert "decided by sim_evaluation" in _metadata_cell(ui, "promotion")
    board = _metadata_cell(ui, "leaderboard")
    assert "promotion: decided by sim_evaluation" in board and "pass" in board
    for stale in ("awaiting sim_evaluation", "NOT PROMOTED", "no: "):
        assert stale not in evaluation, stale
    assert "PROMOTED" in simulation


def test_relaxed_limits_are_shown_beside_the_lab_defaults(ui):
    """The demo's sim and open-loop limits, each beside the lab's default limit for the same criterion, judged on
    the same measurements (the lab's own verdict in the next column)."""
    from tatbot_pipeline.demo import DEMO_GATE, DEMO_SIM_GATE
    from tatbot_pipeline.evaluation.gate import Thresholds
    from tatbot_pipeline.evaluation.sim_gate import SimGateLimits

    ui.open("/assets/sim_evaluation", "gate")
    gate = _metadata_cell(ui, "gate")
    assert "the demo's relaxed gate" in gate and "the lab's gate (defaults)" in gate
    tip = next(line for line in gate.splitlines() if line.startswith("tip deviation p95"))
    assert f"≤ {DEMO_SIM_GATE['max_tip_error_p95_mm']:.4g} mm" in tip
    assert f"≤ {SimGateLimits().max_tip_error_p95_mm:.4g} mm" in tip and "FAIL" in tip
    ui.shot("sim_evaluation_gate")
    ui.open("/assets/policy_evaluation", "gate")
    gate = _metadata_cell(ui, "gate")
    mae = next(line for line in gate.splitlines() if line.startswith("MAE"))
    assert f"≤ {DEMO_GATE['max_mae']:.4g} rad" in mae and f"≤ {Thresholds().max_mae:.4g} rad" in mae


def _metadata_cell(ui: Ui, key: str) -> str:
    """The value of metadata entry `key` on the open asset page, as shown (a table's cells tab-separated)."""
    row = ui.page.locator(f"xpath=//tr[td[1][normalize-space(.)='{key}']]").first
    row.wait_for()
    return row.locator("xpath=./td[last()]").inner_text()


def test_nothing_is_clipped_at_1600_by_1000(ui, demo):
    rollout = next((demo["home"] / "eval_datasets").iterdir()).name
    pages = {"trained_policy": "/assets/trained_policy", "policy_evaluation": "/assets/policy_evaluation",
             "sim_evaluation": "/assets/sim_evaluation", "training_splits": "/assets/training_splits",
             "eval_dataset": f"/assets/eval_dataset?view=partitions&partition={rollout}",
             # the asset's overview: a Timestamp column narrows the value column to about 560 px (the digest's)
             "eval_dataset_latest": "/assets/eval_dataset", "recording_validation": "/assets/recording_validation"}
    clipped = {}
    for name, path in pages.items():
        ui.open(path, "summary")
        ui.shot(f"{name}_overview")
        clipped[name] = ui.clipped()
    assert not any(clipped.values()), clipped
    # The Runs list: our tag chips read whole without a hover (Dagster's own partition chip may be cut).
    ui.open("/runs", "robot_eval")
    assert not [c for c in ui.clipped(strict=True) if "tatbot/" in c], ui.clipped(strict=True)


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
