"""The project's plots, as PNG data-URIs for Dagster's markdown metadata (Dagster has no image metadata type).

Shared by every layer; matplotlib runs headless (Agg). Every plot fits the UI's markdown modal (at most
`MAX_WIDTH_PX` wide), labels its axes with units, and has a legend for every colour it uses.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tatbot_pipeline.robot.spec import JOINT_LOWER, JOINT_NAMES, JOINT_UPPER  # noqa: E402


MAX_WIDTH_PX = 1180  # Dagster's markdown modal is ~1240 px wide: wider images get their right edge cut
DPI = 90


def png_markdown(fig, alt: str = "plot") -> str:
    """Render a matplotlib figure into a markdown image with an inline PNG, and close it."""
    buf = io.BytesIO()
    # A tight bounding box may add a few pixels for labels past the figure edge: keep a margin under the cap.
    dpi = min(DPI, 0.97 * MAX_WIDTH_PX / fig.get_figwidth())
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return f"![{alt}](data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()})"


# Dagster's own accent colours (light theme), so a badge reads like the UI's check icons next to it.
BADGE_COLOURS = {"green": ("#2ECC81", "#0B3D26"), "yellow": ("#FEA319", "#3D2705"), "red": ("#C72A1C", "#FFFFFF"),
                 "gray": ("#67748A", "#FFFFFF")}


def badge_markdown(label: str, colour: str) -> str:
    """A small coloured label ('WARN' on yellow) as a markdown image: the one way to put colour in Dagster's
    metadata (its markdown keeps data: images, drops styles). SVG, so it stays sharp and a few hundred bytes."""
    fill, ink = BADGE_COLOURS[colour]
    width = 14 + 8 * len(label)
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="20" role="img" aria-label="{label}">'
           f'<rect width="{width}" height="20" rx="4" fill="{fill}"/><text x="{width / 2}" y="14.5" fill="{ink}" '
           f'font-family="DejaVu Sans,Verdana,sans-serif" font-size="12" font-weight="bold" '
           f'text-anchor="middle">{label}</text></svg>')
    return f"![{label}](data:image/svg+xml;base64,{base64.b64encode(svg.encode()).decode()})"


EXCLUDED_COLOURS = ["tab:red", "tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"]


def clip(text: str, width: int) -> str:
    """`text` cut at a word with an ellipsis when longer than `width`: a legend entry never ends mid-word."""
    return text if len(text) <= width else text[: width - 1].rsplit(" ", 1)[0] + " …"


def joint_ranges(ranges: dict[int, tuple[np.ndarray, np.ndarray]], excluded: set[int] | dict[int, str]):
    """Per-joint recorded range of each episode, normalised to the URDF limits (0 = lower, 1 = upper limit).

    Included episodes share one muted colour; each excluded episode has its own colour and legend entry (with the
    reason when `excluded` maps episodes to reasons: a few words, e.g. "dead arm"), so a user sees at once which
    strokes left the envelope. The legend sits under the axes, one entry per line, inside the image's width.
    """
    reasons = excluded if isinstance(excluded, dict) else {ep: "" for ep in excluded}
    span = np.where(JOINT_UPPER > JOINT_LOWER, JOINT_UPPER - JOINT_LOWER, 1.0)
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(JOINT_NAMES) + 1.2))
    ax.axvspan(0, 1, color="0.92", zorder=0, label="within URDF limits")
    included_labelled = False
    for ep, (lo, hi) in sorted(ranges.items()):
        lo_n, hi_n = (lo - JOINT_LOWER) / span, (hi - JOINT_LOWER) / span
        y = np.arange(len(JOINT_NAMES)) + (ep % 5 - 2) * 0.12
        if ep in reasons:
            colour = EXCLUDED_COLOURS[sorted(reasons).index(ep) % len(EXCLUDED_COLOURS)]
            why = reasons[ep]
            label = f"episode {ep} excluded" + (f": {clip(why, 60)}" if why else "")
            ax.hlines(y, lo_n, hi_n, colors=colour, lw=2.2, alpha=0.95, label=label)
        else:
            ax.hlines(y, lo_n, hi_n, colors="tab:blue", lw=1, alpha=0.45,
                      label=None if included_labelled else "included episodes")
            included_labelled = True
    ax.set_yticks(np.arange(len(JOINT_NAMES)), JOINT_NAMES, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(-0.1, 1.1)
    ax.set_xlabel("recorded action range per episode (0 = lower URDF limit, 1 = upper)")
    ax.set_ylabel("joint")
    # Below the axes, inside the image's width: a legend to the right widened it past what the UI shows.
    ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.12), fontsize=7, ncol=2, frameon=False)
    return fig


def loss_curve(steps, loss, grad_norm=None, val_loss: dict[int, float] | None = None):
    """Training loss over steps, the validation loss at saved checkpoints when there is a val split, and the gradient
    norm on a second axis when given (NaN points leave gaps)."""
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.plot(list(steps), list(loss), color="tab:blue", lw=1.2, label="training loss (per logged batch)")
    if val_loss:
        val_steps = sorted(val_loss)
        ax.plot(val_steps, [val_loss[s] for s in val_steps], color="tab:green", lw=1.5, marker="o", ms=4,
                label="validation loss (val split, at saved checkpoints)")
    ax.set_xlabel("training step")
    ax.set_ylabel("loss (the policy's training objective)")
    ax.set_title("training loss", fontsize=10)
    ax.grid(alpha=0.3)
    if grad_norm is not None and len(grad_norm):
        twin = ax.twinx()
        twin.plot(list(steps), list(grad_norm), color="tab:orange", lw=1.0, alpha=0.6, label="gradient norm (L2)")
        twin.set_ylabel("gradient norm (L2)")
    # Under the plot, never over the data, the title or the right axis.
    fig.legend(loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, fontsize="small", frameon=False)
    fig.tight_layout()
    return fig


def trajectories(recorded: np.ndarray, predicted: np.ndarray, title: str, commanded_label: str = "predicted"):
    """Recorded vs predicted (or observed vs commanded) joint trajectories, one panel per joint, both arms.

    Revolute joints are in radians, the gripper slides in metres; the x axis counts control steps (frames)."""
    fig, axes = plt.subplots(2, 7, figsize=(13, 4.8), sharex=True)
    t = np.arange(len(recorded))
    first = "recorded" if commanded_label == "predicted" else "observed"
    for j, ax in enumerate(axes.flat):
        ax.plot(t, recorded[:, j], color="tab:blue", lw=1.5, label=first)
        ax.plot(t, predicted[:, j], color="tab:orange", lw=1.2, ls="--", label=commanded_label)
        ax.set_title(JOINT_NAMES[j].removesuffix(".pos"), fontsize=7)
        ax.tick_params(labelsize=6)
        if j % 7 == 0:
            ax.set_ylabel("position (rad)", fontsize=7)
        elif j % 7 == 6:
            ax.set_ylabel("opening (m)", fontsize=7)
        if j >= 7:
            ax.set_xlabel("control step", fontsize=7)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.suptitle(title, fontsize=9, x=0.02, ha="left")
    fig.tight_layout()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), fontsize=7, ncol=2, frameon=False)
    return fig


def error_summary(abs_errors: np.ndarray, mae_per_chunk_step: list[float]):
    """Histogram of absolute action errors, per-joint MAE, and MAE vs position inside the action chunk."""
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(13, 3.6))
    ax1.hist(abs_errors.ravel(), bins=40, color="tab:blue")
    ax1.set_xlabel("|predicted - recorded| (rad)")
    ax1.set_ylabel("count")
    ax1.set_title("error histogram", fontsize=9)
    mae = abs_errors.mean(axis=0)
    half = len(JOINT_NAMES) // 2
    ax2.barh(np.arange(half), mae[:half], color="tab:blue", label="left arm")
    ax2.barh(np.arange(half, len(JOINT_NAMES)), mae[half:], color="tab:green", label="right arm")
    ax2.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.24), ncol=2, frameon=False)
    ax2.set_yticks(np.arange(len(JOINT_NAMES)), [n.removesuffix(".pos") for n in JOINT_NAMES], fontsize=7)
    ax2.invert_yaxis()
    ax2.set_xlabel("MAE (rad; grippers in m)")
    ax2.set_title("per-joint error", fontsize=9)
    ax3.plot(np.arange(len(mae_per_chunk_step)), mae_per_chunk_step, marker="o", color="tab:blue", label="all joints")
    ax3.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.24), frameon=False)
    ax3.set_xlabel("step inside action chunk")
    ax3.set_ylabel("MAE (rad)")
    ax3.set_title("error vs chunk step", fontsize=9)
    fig.tight_layout()
    return fig


def commanded_vs_observed(eval_dir: Path):
    """A rollout's commanded vs observed joints from its eval dataset; None when the dataset is not readable from
    here (a remote robot node's disk)."""
    import pyarrow.parquet as pq

    from tatbot_pipeline.lerobot_tables import numpy_column

    files = sorted(Path(eval_dir).glob("data/chunk-*/file-*.parquet"))
    if not files:
        return None
    table = pq.read_table(files[0], columns=["action", "observation.state"])
    commanded = numpy_column(table.column("action"))
    observed = numpy_column(table.column("observation.state"))
    return trajectories(observed, commanded, f"{Path(eval_dir).name}: commanded vs observed", commanded_label="commanded")
