"""deploy/Dockerfile and deploy/workspace.yaml (no Docker daemon here): it installs from the committed lock with setup.sh's uv, copies what
its .dockerignore lets through, and starts a code server with flags Dagster's own CLI accepts for this location."""

from __future__ import annotations

import json
import re
import tomllib

import yaml
from dagster._cli.code_server import start_command
from dagster._core.workspace.config_schema import process_workspace_config

from tests.deploy.conftest import REPO

DOCKERFILE = (REPO / "deploy" / "Dockerfile").read_text()


def test_image_installs_the_locked_environment_with_setups_uv():
    setup_uv = re.search(r'^uv_version="([^"]+)"', (REPO / "scripts" / "setup.sh").read_text(), re.M).group(1)
    assert re.search(r"^ARG UV_VERSION=(\S+)$", DOCKERFILE, re.M).group(1) == setup_uv
    syncs = re.findall(r"uv sync ([^&\n]+)", DOCKERFILE)
    assert syncs and all("--frozen" in s for s in syncs), "the image must install exactly uv.lock"


def test_build_context_keeps_every_copied_path():
    ignore = (REPO / "deploy" / "Dockerfile.dockerignore").read_text().split()
    copied = [src for line in re.findall(r"^COPY (.+)$", DOCKERFILE, re.M) for src in line.split()[:-1]]
    assert copied and all((REPO / src).exists() for src in copied)
    assert all(f"!{src}" in ignore or f"!{src}/" in ignore for src in copied)


def test_code_server_command_matches_the_project_and_dagsters_cli():
    cmd = json.loads(re.search(r"^CMD (\[.*?\])$", DOCKERFILE, re.M | re.S).group(1).replace("\\\n", ""))
    assert cmd[:3] == ["dagster", "code-server", "start"]
    params = start_command.make_context("start", cmd[3:]).params  # Dagster's click parser; raises on a bad flag
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["dagster"]
    assert params["module_name"] == project["module_name"]
    assert params["location_name"] == project["code_location_name"]
    assert (params["host"], params["port"]) == ("0.0.0.0", 4000)


def test_production_workspace_points_at_the_images_code_server(monkeypatch):
    monkeypatch.setenv("TATBOT_CODE_SERVER_HOST", "dagster-host")
    result = process_workspace_config(yaml.safe_load((REPO / "deploy" / "workspace.yaml").read_text()))
    assert result.success, result.errors
    [entry] = result.value["load_from"]
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["dagster"]
    assert entry["grpc_server"] == {"host": "dagster-host", "port": 4000, "location_name": project["code_location_name"]}


def test_image_python_is_the_one_the_project_requires():
    """lerobot 0.6 needs Python 3.12: an image on another minor version fails at `uv sync`, on a machine with Docker."""
    from packaging.specifiers import SpecifierSet

    image = re.search(r"^FROM python:(\d+\.\d+)", DOCKERFILE, re.M).group(1)
    required = SpecifierSet(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"])
    assert f"{image}.0" in required, f"deploy/Dockerfile uses Python {image}, pyproject requires {required}"
