"""`dagster dev` as a user starts it (repo root, workspace.yaml) on a given instance, for the tests that need the
real webserver and daemon: the UI test and the closed-loop daemon test."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tatbot_pipeline.inference.local_node import free_port

REPO = Path(__file__).resolve().parents[1]


def fresh_instance(dagster_home: Path) -> Path:
    """An instance dir with the repo's dagster.yaml (its run queue and limits)."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    (dagster_home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    return dagster_home


def project_dir(directory: Path) -> Path:
    """A directory laid out like the repo root for `dagster dev` (its workspace.yaml), without the repo's `.env` or
    `.tatbot.env`: a developer's `make demo` settings must not leak into a test's server."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "workspace.yaml", directory / "workspace.yaml")
    return directory


@contextmanager
def dagster_dev(dagster_home: Path, env: dict[str, str], log: Path, cwd: Path | None = None,
                niceness: int = 0) -> Iterator[str]:
    """Serve `dagster dev` on a free loopback port, run in `cwd` (a project dir: its `.env` and `.tatbot.env` are
    read, as a user's are); yields its URL. `env` replaces every TATBOT_* variable."""
    full = {k: v for k, v in os.environ.items() if k != "DAGSTER_MODULE_NAME" and not k.startswith("TATBOT_")}
    full.update(DAGSTER_HOME=str(dagster_home), HF_HUB_OFFLINE="1", **env)
    port = free_port()
    cwd = cwd or project_dir(log.parent / f"{log.stem}-project")
    with open(log, "w") as out:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "dagster"), "dev", "-h", "127.0.0.1", "-p",
                                 str(port)], cwd=cwd, env=full, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True,
                                preexec_fn=lambda: (_ctrl_c_as_in_a_terminal(), os.nice(niceness)))
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for_server(f"{url}/server_info", proc, log)
        yield url
    finally:  # Ctrl-C, as a user stops it: the whole group gets SIGINT, and dagster dev shuts its services down
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=CTRL_C_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            pytest.fail(f"dagster dev ignored Ctrl-C for {CTRL_C_S} s: {log.read_text()[-2000:]}")


# dagster dev stops its webserver and daemon within seconds of Ctrl-C; a minute is the bound of "it stopped".
CTRL_C_S = 60


def _ctrl_c_as_in_a_terminal() -> None:
    """SIGINT back to its default in the server. A test run started in the background (a CI runner, nohup, `&` in
    a script) hands SIGINT down ignored; Python then installs no KeyboardInterrupt handler, and dagster dev maps
    SIGTERM onto that ignored handler too, so neither stops it (seen here: a `dagster dev` started from a background
    job ran on after both; the old teardown hid it with a SIGKILL after 15 s)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for_server(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 300
    while True:
        try:
            if urllib.request.urlopen(url, timeout=5).status == 200:
                return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"dagster dev did not come up: {log.read_text()[-2000:]}")
        time.sleep(1)
