"""Stopping a child process we started (a training, a simulated controller) without leaving it behind."""

from __future__ import annotations

import subprocess


def stop_process(proc: subprocess.Popen, timeout_s: float) -> bool:
    """SIGTERM, then SIGKILL if it has not exited within `timeout_s`; reaps it either way. True when it had to be
    killed (it ignored SIGTERM, or was busy for longer), so the caller can say so."""
    if proc.poll() is not None:
        return False
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
        return False
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return True
