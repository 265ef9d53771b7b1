"""Settings do what the shell says: the demo's saved settings (`.tatbot.env`) are read only for what the environment
does not set, unlike a `.env`, which every `dagster` command loads over the environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dotenv import dotenv_values

from tatbot_pipeline.config import DEFAULT_RETRAIN_CRON, SETTINGS_FILE, PipelineSettings, saved_settings
from tatbot_pipeline.demo import save_settings
from tests.dagster_dev import fresh_instance, project_dir


def recordings(root: Path, scenes: list[str]) -> Path:
    """Just written (so still settling): the sensor's skip reason then names the root it watched."""
    for scene in scenes:
        rec = root / f"stroke-{scene}-2025y-08m-09d-17h-02m-10s"
        rec.mkdir(parents=True)
        (rec / "scene.yaml").write_text("name: x\n")
    return root


@pytest.fixture
def no_tatbot_env(monkeypatch) -> None:
    for key in [k for k in os.environ if k.startswith("TATBOT_")]:
        monkeypatch.delenv(key)


def preview(project: Path, dagster_home: Path, **exported: str) -> str:
    """`dagster sensor preview recordings_sensor` as a user types it in `project`, with only `exported` TATBOT_*."""
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_MODULE_NAME" and not k.startswith("TATBOT_")}
    env.update(DAGSTER_HOME=str(dagster_home), **exported)
    out = subprocess.run([str(Path(sys.executable).parent / "dagster"), "sensor", "preview", "recordings_sensor"],
                         cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def test_after_the_demo_an_exported_recordings_dir_wins(tmp_path, no_tatbot_env):
    project = project_dir(tmp_path / "project")
    # What an earlier demo left: its settings in `.env`, beside a line of the user's own.
    (project / ".env").write_text(f"TATBOT_RECORDINGS_DIR='{tmp_path}/old'\nOTHER_SETTING=1\n")
    home = tmp_path / "home"
    demo_recordings = recordings(home / "demo" / "recordings", ["demo", "demo2"])
    other = recordings(tmp_path / "nfs", ["lab", "lab2", "lab3"])

    saved, notes = save_settings(PipelineSettings(recordings_dir=demo_recordings, home=home), project)

    assert saved == project / SETTINGS_FILE
    assert dotenv_values(saved) == {"TATBOT_RECORDINGS_DIR": str(demo_recordings), "TATBOT_PIPELINE_HOME": str(home)}
    assert dotenv_values(project / ".env") == {"OTHER_SETTING": "1"}  # the user's line stays
    [moved] = notes
    assert moved.startswith(f"moved TATBOT_RECORDINGS_DIR from {project / '.env'}") and str(saved) in moved
    dagster_home = fresh_instance(tmp_path / "dagster_home")
    assert f"3 known, 0 new, 3 settling under {other}" in preview(project, dagster_home,
                                                                 TATBOT_RECORDINGS_DIR=str(other))
    assert f"2 known, 0 new, 2 settling under {demo_recordings}" in preview(project, dagster_home)


def test_the_saved_settings_sit_below_the_environment(tmp_path, monkeypatch, no_tatbot_env):
    (tmp_path / SETTINGS_FILE).write_text(f"TATBOT_PIPELINE_HOME='{tmp_path}/saved'\nTATBOT_RETRAIN_CRON='* * * * *'\n"
                                          "HF_HUB_OFFLINE=0\n")
    assert saved_settings(tmp_path) == {"TATBOT_PIPELINE_HOME": f"{tmp_path}/saved",
                                        "TATBOT_RETRAIN_CRON": "* * * * *"}  # nothing but TATBOT_*
    monkeypatch.chdir(tmp_path)
    settings = PipelineSettings.from_env()
    assert settings.home == tmp_path / "saved" and settings.retrain_cron == "* * * * *"
    assert settings.home_note() == (f"pipeline home: {tmp_path / 'saved'} (TATBOT_PIPELINE_HOME is not exported: "
                                    f"from {tmp_path / SETTINGS_FILE})")
    monkeypatch.setenv("TATBOT_PIPELINE_HOME", str(tmp_path / "exported"))
    monkeypatch.setenv("TATBOT_RETRAIN_CRON", "0 3 * * *")
    settings = PipelineSettings.from_env()
    assert settings.home == tmp_path / "exported" and settings.retrain_cron == "0 3 * * *"
    assert settings.home_origin == "TATBOT_PIPELINE_HOME"
    # Read from the working directory only: elsewhere, the defaults.
    monkeypatch.delenv("TATBOT_RETRAIN_CRON")
    monkeypatch.chdir(project_dir(tmp_path / "elsewhere"))
    assert PipelineSettings.from_env().retrain_cron == DEFAULT_RETRAIN_CRON


def test_a_temporary_path_is_never_saved_and_the_demo_says_so(tmp_path, monkeypatch, no_tatbot_env):
    scratch, project = tmp_path / "scratch", project_dir(tmp_path / "project")
    (project / SETTINGS_FILE).write_text("TATBOT_PIPELINE_HOME='/srv/tatbot'\n")  # an earlier demo's lasting home
    monkeypatch.setenv("TATBOT_PIPELINE_HOME", str(scratch / "home"))
    monkeypatch.setenv("TATBOT_SPLIT_CRON", "*/5 * * * *")
    monkeypatch.setenv("TATBOT_MCP_TOKEN", "secret")
    settings = PipelineSettings.from_env(recordings_dir=scratch / "home" / "demo" / "recordings")

    saved, [note] = save_settings(settings, project, temp_dir=scratch)

    # The lasting file keeps its earlier home, gets the exported cron, and never the token.
    assert dotenv_values(saved) == {"TATBOT_PIPELINE_HOME": "/srv/tatbot", "TATBOT_SPLIT_CRON": "*/5 * * * *"}
    assert note.startswith(f"not saved to {saved} (under {scratch.resolve()}, which the system may empty): "
                           f"TATBOT_PIPELINE_HOME={scratch / 'home'}, TATBOT_RECORDINGS_DIR=")
    assert "it keeps its earlier TATBOT_PIPELINE_HOME=/srv/tatbot" in note
    # A throwaway project under the temp dir may name its own temporary dirs.
    throwaway = project_dir(scratch / "project")
    saved, notes = save_settings(settings, throwaway, temp_dir=scratch)
    assert notes == [] and dotenv_values(saved)["TATBOT_PIPELINE_HOME"] == str(scratch / "home")
