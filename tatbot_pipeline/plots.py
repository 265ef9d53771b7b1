"""The project's plots, as PNG data-URIs for Dagster's markdown metadata (Dagster has no image metadata type).

Shared by every layer; matplotlib runs headless (Agg).
"""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tatbot_pipeline.robot.spec import JOINT_LOWER, JOINT_NAMES, JOINT_UPPER  # noqa: E402


def png_markdown(fig, alt: str = "plot") -> str:
    """Render a matplotlib figure into a markdown image with an inline PNG, and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f"![{alt}](data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()})"


def joint_ranges(ranges: dict[int, tuple[np.ndarray, np.ndarray]], excluded: set[int]):
    """Per-joint recorded range of each episode, normalised to the URDF limits (0 = lower, 1 = upper limit).

    Excluded episodes are drawn in red so a user sees at once which strokes left the envelope.
    """
    span = np.where(JOINT_UPPER > JOINT_LOWER, JOINT_UPPER - JOINT_LOWER, 1.0)
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(JOINT_NAMES) + 1))
    ax.axvspan(0, 1, color="0.92", zorder=0, label="URDF limits")
    for ep, (lo, hi) in sorted(ranges.items()):
        lo_n, hi_n = (lo - JOINT_LOWER) / span, (hi - JOINT_LOWER) / span
        y = np.arange(len(JOINT_NAMES)) + (ep % 5 - 2) * 0.12
        bad = ep in excluded
        ax.hlines(y, lo_n, hi_n, colors="tab:red" if bad else "tab:blue", lw=2 if bad else 1, alpha=0.9 if bad else 0.5,
                  label=f"episode {ep} (excluded)" if bad else None)
    ax.set_yticks(np.arange(len(JOINT_NAMES)), JOINT_NAMES, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(-0.1, 1.1)
    ax.set_xlabel("recorded action range, normalised to URDF limits")
    ax.legend(loc="lower right", fontsize=7)
    return fig


def loss_curve(steps, loss, grad_norm=None):
    """Training loss over steps, with the gradient norm on a second axis when given (NaN points leave gaps)."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(list(steps), list(loss), color="tab:blue", lw=1.2, label="loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("training loss")
    ax.grid(alpha=0.3)
    if grad_norm is not None and len(grad_norm):
        twin = ax.twinx()
        twin.plot(list(steps), list(grad_norm), color="tab:orange", lw=1.0, alpha=0.6, label="grad norm")
        twin.set_ylabel("grad norm")
    fig.legend(loc="upper right", fontsize="small")
    return fig


def trajectories(recorded: np.ndarray, predicted: np.ndarray, title: str, commanded_label: str = "predicted"):
    """Recorded vs predicted (or commanded vs observed) joint trajectories, one panel per joint, both arms."""
    fig, axes = plt.subplots(2, 7, figsize=(16, 4.5), sharex=True)
    t = np.arange(len(recorded))
    for j, ax in enumerate(axes.flat):
        ax.plot(t, recorded[:, j], color="tab:blue", lw=1.5, label="recorded" if commanded_label == "predicted" else "observed")
        ax.plot(t, predicted[:, j], color="tab:orange", lw=1.2, ls="--", label=commanded_label)
        ax.set_title(JOINT_NAMES[j].removesuffix(".pos"), fontsize=7)
        ax.tick_params(labelsize=6)
    axes.flat[0].legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def error_summary(abs_errors: np.ndarray, mae_per_chunk_step: list[float]):
    """Histogram of absolute action errors, per-joint MAE, and MAE vs position inside the action chunk."""
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(14, 3.4))
    ax1.hist(abs_errors.ravel(), bins=40, color="tab:blue")
    ax1.set_xlabel("|predicted - recorded| (rad)")
    ax1.set_ylabel("count")
    ax1.set_title("error histogram", fontsize=9)
    mae = abs_errors.mean(axis=0)
    ax2.barh(np.arange(len(JOINT_NAMES)), mae, color=["tab:blue"] * 7 + ["tab:green"] * 7)
    ax2.set_yticks(np.arange(len(JOINT_NAMES)), [n.removesuffix(".pos") for n in JOINT_NAMES], fontsize=7)
    ax2.invert_yaxis()
    ax2.set_xlabel("MAE (rad)")
    ax2.set_title("per-joint error", fontsize=9)
    ax3.plot(np.arange(len(mae_per_chunk_step)), mae_per_chunk_step, marker="o")
    ax3.set_xlabel("step inside action chunk")
    ax3.set_ylabel("MAE (rad)")
    ax3.set_title("error vs chunk step", fontsize=9)
    fig.tight_layout()
    return fig
