"""The Kubernetes profile: Dagster's own K8sRunLauncher, built from deploy/dagster.k8s.yaml, launches real runs
against a loopback stand-in for the Kubernetes API that records the Job manifests it receives.

What is checked is what the cluster would get: training on a GPU node with its GPU limit, everything else on the
Dagster host, both with the shared mounts, the Postgres password from its Secret and the code location's image.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.launcher import LaunchRunContext
from dagster._core.test_utils import create_run_for_test
from dagster_k8s import K8sRunLauncher
from kubernetes.config import kube_config

from tatbot_pipeline.defs.placement import GPU_RESOURCE, NODE_ROLE_LABEL, gpu_run_tags
from tatbot_pipeline.config import PipelineSettings
from tatbot_pipeline.definitions import build_definitions
from tests.deploy.conftest import REPO

# What the code location loads (definitions.defs), from this process's settings.
defs = build_definitions(PipelineSettings.from_env())

IMAGE = "registry.lab:5000/tatbot-pipeline:test"
NAMESPACE = "tatbot"


class _KubeApi(BaseHTTPRequestHandler):
    """Accepts `POST .../jobs` like the API server does (201, the object echoed back) and keeps the bodies."""

    received: list[tuple[str, dict]] = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((self.path, json.loads(body)))
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def kube_api(tmp_path: Path, monkeypatch) -> Iterator[list[tuple[str, dict]]]:
    _KubeApi.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _KubeApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "lab",
        "clusters": [{"name": "lab", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}],
        "users": [{"name": "dagster", "user": {"token": "test"}}],
        "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "dagster"}}],
    }))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    # The kubernetes client reads $KUBECONFIG once, at import; a daemon started with it set sees this value.
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
    monkeypatch.setenv("TATBOT_K8S_NAMESPACE", NAMESPACE)
    monkeypatch.setenv("TATBOT_IMAGE", IMAGE)
    try:
        yield _KubeApi.received
    finally:
        server.shutdown()
        server.server_close()


def _launch(instance: dg.DagsterInstance, job_name: str, received: list) -> tuple[str, dict]:
    """Create a run of `job_name` with the job's own tags, as the daemon would, and let the instance launch it."""
    job = defs.resolve_job_def(job_name)
    origin = (ReconstructableRepository.for_module("tatbot_pipeline.definitions", "defs", working_directory=str(REPO))
              .get_reconstructable_job(job_name).get_python_origin())
    run = create_run_for_test(instance, job_name=job_name, tags=dict(job.tags), job_code_origin=origin)
    before = len(received)
    instance.run_launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
    assert len(received) == before + 1, "the launcher must create exactly one Kubernetes Job per run"
    return received[-1]


def _pod(manifest: dict) -> tuple[dict, dict]:
    pod = manifest["spec"]["template"]["spec"]
    return pod, pod["containers"][0]


def test_profile_is_the_postgres_profile_plus_a_k8s_launcher():
    k8s = yaml.safe_load((REPO / "deploy" / "dagster.k8s.yaml").read_text())
    postgres = yaml.safe_load((REPO / "deploy" / "dagster.postgres.yaml").read_text())
    assert {k: v for k, v in k8s.items() if k != "run_launcher"} == postgres
    assert k8s["run_launcher"]["class"] == "K8sRunLauncher"


def test_training_runs_on_a_gpu_node_and_ingestion_on_the_dagster_host(production_home, kube_api):
    home = production_home("dagster.k8s.yaml")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.run_launcher, K8sRunLauncher)  # the profile passed the launcher's config schema

        path, train = _launch(instance, "train_policy_job", kube_api)
        assert path == f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"
        pod, container = _pod(train)
        assert pod["nodeSelector"] == {NODE_ROLE_LABEL: "gpu"}
        assert container["resources"]["limits"] == {GPU_RESOURCE: "1"}
        assert {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        assert {"name": "dshm", "emptyDir": {"medium": "Memory"}} in pod["volumes"]
        assert container["image"] == IMAGE
        assert container["args"][:3] == ["dagster", "api", "execute_run"]
        assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
        assert {"name": "TATBOT_TRAIN_GPUS", "value": "1"} in container["env"]

        _, ingest = _launch(instance, "__ASSET_JOB", kube_api)
        ingest_pod, ingest_container = _pod(ingest)
        assert ingest_pod["nodeSelector"] == {NODE_ROLE_LABEL: "dagster-host"}
        assert GPU_RESOURCE not in (ingest_container.get("resources") or {}).get("limits", {})

        for manifest in (train, ingest):
            pod, container = _pod(manifest)
            mounts = {m["name"]: m for m in container["volumeMounts"]}
            assert mounts["recordings"]["mountPath"] == "/srv/tatbot/recordings" and mounts["recordings"]["readOnly"]
            assert mounts["pipeline-home"]["mountPath"] == "/srv/tatbot/home"
            env = {e["name"]: e for e in container["env"]}
            assert env["DAGSTER_PG_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
                "name": "dagster-postgresql-secret", "key": "postgresql-password"}
            assert env["DAGSTER_PG_HOST"]["value"] == "127.0.0.1"  # passed on from the launching host's env
            assert env["TATBOT_PIPELINE_HOME"]["value"] == "/srv/tatbot/home"


def test_gpu_count_follows_tatbot_train_gpus(monkeypatch):
    monkeypatch.setenv("TATBOT_TRAIN_GPUS", "2")
    config = json.loads(gpu_run_tags(PipelineSettings.from_env().train_gpus)["dagster-k8s/config"])
    assert config["container_config"]["resources"]["limits"] == {GPU_RESOURCE: "2"}
    monkeypatch.setenv("TATBOT_TRAIN_GPUS", "0")
    with pytest.raises(ValueError, match="at least one GPU"):
        PipelineSettings.from_env()
    monkeypatch.setenv("TATBOT_TRAIN_GPUS", "two")
    with pytest.raises(ValueError, match="TATBOT_TRAIN_GPUS='two'"):
        PipelineSettings.from_env()


def test_training_config_trains_on_as_many_gpus_as_the_pod_has(monkeypatch):
    from tatbot_pipeline.defs.training import TrainingRunConfig

    monkeypatch.setenv("TATBOT_TRAIN_GPUS", "2")  # what the GPU tag sets in the pod
    assert TrainingRunConfig(preset="smolvla").to_options(PipelineSettings.from_env()).num_gpus == 2
    assert TrainingRunConfig(preset="smolvla", num_gpus=4).to_options(PipelineSettings.from_env()).num_gpus == 4
    monkeypatch.delenv("TATBOT_TRAIN_GPUS")
    assert TrainingRunConfig(preset="smolvla").to_options(PipelineSettings.from_env()).num_gpus == 1
