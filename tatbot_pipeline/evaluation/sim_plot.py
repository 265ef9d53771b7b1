"""The sim evaluation's one plot per stroke: the path the needle was meant to draw and the one it drew in MuJoCo.

Top-down (x, y of each arm's base frame, mm), one panel per arm, the planned path (the recording) and the drawn path
(the simulated arm) and, when given, the expert's replay in the same simulation, a marker where each starts. Same conventions as plots.py: at most `MAX_WIDTH_PX` wide, units on
the axes, the legend outside the data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tatbot_pipeline.plots import DPI, MAX_WIDTH_PX, plt
from tatbot_pipeline.robot.spec import ARMS


def tip_paths(planned: dict[str, np.ndarray], drawn: dict[str, np.ndarray], title: str,
              deviation_p95_mm: dict[str, float] | None = None, expert: dict[str, np.ndarray] | None = None):
    """Planned vs drawn needle-tip paths (T, 3) in mm per arm, seen from above; with `expert`, the path the recorded
    actions drew in the same simulation (what the drawn one is judged against)."""
    fig, axes = plt.subplots(1, len(ARMS), figsize=(11, 4.6))
    for ax, side in zip(axes, ARMS):
        plan, draw = np.asarray(planned[side]), np.asarray(drawn[side])
        ax.plot(plan[:, 0], plan[:, 1], color="tab:blue", lw=2.0, marker=".", ms=4, label="planned (recorded stroke)")
        if expert is not None and len(expert[side]):
            ax.plot(expert[side][:, 0], expert[side][:, 1], color="tab:green", lw=1.4, marker=".", ms=3,
                    label="expert's replay in simulation")
        if len(draw):
            ax.plot(draw[:, 0], draw[:, 1], color="tab:orange", lw=1.4, ls="--", marker=".", ms=4,
                    label="drawn in simulation")
            ax.plot(draw[:1, 0], draw[:1, 1], color="tab:orange", marker="s", ms=6, ls="none", label="start (simulation)")
        ax.plot(plan[:1, 0], plan[:1, 1], color="tab:blue", marker="o", ms=7, ls="none", mfc="none",
                label="start (recorded)")
        note = f" — tip deviation p95 {deviation_p95_mm[side]:.2f} mm" if deviation_p95_mm else ""
        ax.set_title(f"{side} arm{note}", fontsize=9)
        ax.set_xlabel(f"x in the {side} arm's base frame (mm)")
        ax.set_ylabel("y (mm)")
        ax.set_aspect("equal", adjustable="datalim")
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 0.95), fontsize=8)
    fig.suptitle(title, fontsize=10, x=0.02, ha="left")
    fig.tight_layout()
    return fig


def save_png(fig, path: Path) -> Path:
    """Write a figure as PNG no wider than MAX_WIDTH_PX (the legend outside adds to the width), and close it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.canvas.draw()
    extent = fig.get_tightbbox(fig.canvas.get_renderer())  # in inches
    dpi = min(DPI, 0.97 * MAX_WIDTH_PX / max(extent.width, 1e-6))
    fig.savefig(path, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path
