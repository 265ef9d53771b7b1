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
