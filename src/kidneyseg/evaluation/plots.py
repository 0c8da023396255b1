"""Figures of an evaluation: one box plot per metric, the summed confusion matrix (PNG, Agg)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kidneyseg.evaluation.case import METRICS

__all__ = ["plot_boxplots", "plot_confusion_matrix", "write_plots"]


def _pyplot():
    from kidneyseg._optional import require

    mpl = require("matplotlib", "evaluation plots")
    mpl.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_boxplots(rows: list[dict], folder: str | os.PathLike[str], metrics: Sequence[str] = METRICS) -> list[Path]:
    """One PNG per metric (``<folder>/<metric>.png``), one box per region; NaN values left out."""
    plt = _pyplot()
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    regions = list(dict.fromkeys(str(r["region"]) for r in rows))
    written = []
    for m in metrics:
        data = [[float(r[m]) for r in rows if str(r["region"]) == g and math.isfinite(float(r[m]))] for g in regions]
        fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(regions), 4))
        ax.boxplot([d if d else [np.nan] for d in data], showmeans=True)
        ax.set_xticks(range(1, len(regions) + 1), regions, rotation=20)
        ax.set_ylabel(m.replace("_mm", " (mm)"))
        ax.set_title(f"{m} per case (n = {max((len(d) for d in data), default=0)})")
        fig.tight_layout()
        path = out / f"{m}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def plot_confusion_matrix(
    matrix: np.ndarray, names: Sequence[str], path: str | os.PathLike[str]
) -> Path:
    """Confusion matrix (rows: reference, columns: prediction), row-normalised colours, counts in cells."""
    plt = _pyplot()
    m = np.asarray(matrix, dtype=np.float64)
    norm = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.5 + 1.2 * len(names), 1.2 + 1.1 * len(names)))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("prediction")
    ax.set_ylabel("reference")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, f"{int(m[i, j])}\n{norm[i, j]:.3f}", ha="center", va="center",
                    color="white" if norm[i, j] > 0.5 else "black", fontsize=7)
    fig.colorbar(im, ax=ax, label="fraction of reference row")
    ax.set_title("voxel confusion matrix, summed over cases")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def write_plots(rows: list[dict], summary: dict, folder: str | os.PathLike[str]) -> list[Path]:
    """Box plots of every metric and ``confusion_matrix.png`` into ``folder``."""
    written = plot_boxplots(rows, folder)
    cm = summary.get("confusion_matrix")
    if cm is not None:
        names = cm.get("names") or [str(v) for v in cm["labels"]]
        written.append(plot_confusion_matrix(np.asarray(cm["matrix"]), names, Path(folder) / "confusion_matrix.png"))
    return written
