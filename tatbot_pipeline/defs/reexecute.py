"""Re-execute a failed run from failure, from the command line, the way the UI's "Re-execute from failure" does.

Dagster's CLI has no re-execute command. This creates the re-execution through the code location (so the new run
has an origin: the daemon launches it, the UI can re-execute it again, and it keeps the root run id, which is what
makes a training resume its run dir) and submits it to the run queue. A run started with `dagster job execute` has
no origin; its job is looked up by name in the workspace instead.

Dagster exposes no public API for this: the calls below are the ones its GraphQL mutation and its retry daemon
make (dagster 1.13).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dagster as dg


class RerunRefused(ValueError):
    """The run cannot be re-executed: unknown, still running, or its job is not in the workspace."""


@dataclass(frozen=True)
class Rerun:
    run_id: str
    parent_run_id: str
    root_run_id: str
    job_name: str


def rerun_from_failure(run_id: str, workspace_file: Path, instance: dg.DagsterInstance) -> Rerun:
    """Queue a re-execution of `run_id` from failure (its failed and unfinished steps) with the parent's tags."""
    from dagster._core.definitions.selector import JobSubsetSelector
    from dagster._core.execution.plan.resume_retry import ReexecutionStrategy
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget

    parent = instance.get_run_by_id(run_id)
    if parent is None:
        raise RerunRefused(f"no run {run_id} in the instance at {instance.root_directory}")
    if parent.status not in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
        raise RerunRefused(f"run {run_id} is {parent.status.value.lower()}: only a failed or cancelled run is "
                           "re-executed from failure")
    with WorkspaceProcessContext(instance, WorkspaceFileTarget([str(workspace_file)])) as workspace:
        request = workspace.create_request_context()
        origin = parent.remote_job_origin
        locations = [e.code_location for e in request.get_code_location_entries().values() if e.code_location]
        location = next((loc for loc in locations if origin is None
                         or loc.name == origin.repository_origin.code_location_origin.location_name), None)
        if location is None:
            raise RerunRefused(f"{workspace_file}: no code location to re-execute {parent.job_name} in")
        repo = next((r for r in location.get_repositories().values()
                     if r.has_job(parent.job_name)
                     and (origin is None or r.name == origin.repository_origin.repository_name)), None)
        if repo is None:
            raise RerunRefused(f"job {parent.job_name} is not in the code location {location.name}")
        remote_job = location.get_job(JobSubsetSelector(
            location_name=location.name, repository_name=repo.name, job_name=parent.job_name,
            op_selection=parent.op_selection,
            asset_selection=None if parent.asset_selection is None else list(parent.asset_selection),
            asset_check_selection=None if parent.asset_check_selection is None
            else list(parent.asset_check_selection)))
        run = instance.create_reexecuted_run(
            request_context=request, parent_run=parent, code_location=location, remote_job=remote_job,
            strategy=ReexecutionStrategy.FROM_FAILURE, use_parent_run_tags=True)
        instance.submit_run(run.run_id, request)
    return Rerun(run.run_id, parent.run_id, run.root_run_id or parent.run_id, parent.job_name)
