"""Training curves and confusion matrices drawn from a model folder (matplotlib, Agg).

A model folder (see ``docs/CONTRACTS.md``) holds, next to its ``model.json``,
the trainer's CSV log(s): one row per epoch (or step) with a column called
``epoch`` or ``step`` and numeric columns such as ``train_loss``,
``val_loss``, ``val_dice``.  Every numeric column is drawn against the first
of ``epoch``/``step``; columns whose name contains ``loss`` go on the left
panel, the others (metrics) on the right; ``lr``, ``seconds`` and time
columns are left out.  Copies under ``checkpoints/`` (kept by ``kidneyseg
train``) are ignored when the stage folders hold the same logs.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from kidneyseg.errors import InputError

X_COLUMNS = ("epoch", "step", "iteration")
SKIP_COLUMNS = ("seconds", "lr", "learning_rate")


def find_training_logs(model_dir: str | Path) -> list[Path]:
    """CSV files under ``model_dir`` (any depth) whose header has an epoch/step column."""
    root = Path(model_dir)
    if not root.is_dir():
        raise InputError("model folder not found", path=root, expected="a folder with model.json",
                         fix="pass the folder written by `kidneyseg train`")
    logs = []
    for p in sorted(root.rglob("*.csv")):
        try:
            with p.open(newline="") as f:
                header = next(csv.reader(f), [])
        except (OSError, UnicodeDecodeError):
            continue
        if any(h.strip().lower() in X_COLUMNS for h in header):
            logs.append(p)
    # `kidneyseg train` keeps a copy of each stage's log.csv under checkpoints/: show each log once
    kept = [p for p in logs if "checkpoints" not in p.relative_to(root).parts]
    return kept or logs


def read_log(path: str | Path) -> dict[str, np.ndarray]:
    """Numeric columns of a CSV log as float arrays (non-numeric cells become NaN)."""
    with Path(path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    cols: dict[str, np.ndarray] = {}
    if not rows:
        return cols
    for name in rows[0]:
        if name is None:
            continue
        vals = []
        for r in rows:
            try:
                vals.append(float(r.get(name) or "nan"))
            except ValueError:
                vals.append(float("nan"))
        arr = np.asarray(vals, dtype=float)
        if np.isfinite(arr).any():
            cols[name.strip()] = arr
    return cols


def curves_png(logs: list[Path], *, dpi: int = 90) -> bytes | None:
    """PNG bytes of the training curves in ``logs`` (losses left, metrics right), or ``None``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    series = []
    for p in logs:
        cols = read_log(p)
        xname = next((c for c in cols if c.lower() in X_COLUMNS), None)
        if xname is None:
            continue
        label_prefix = "" if len(logs) == 1 else f"{p.parent.name}/{p.stem}: "
        for name, y in cols.items():
            low = name.lower()
            if name == xname or low in X_COLUMNS or "time" in low or low in SKIP_COLUMNS:
                continue
            series.append((label_prefix + name, cols[xname], y, xname, "loss" in name.lower(),
                           name.lower() in ("lr", "learning_rate")))
    if not series:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), dpi=dpi)
    for name, x, y, xname, is_loss, _ in series:
        ax = axes[0] if is_loss else axes[1]
        ok = np.isfinite(y)
        ax.plot(x[ok], y[ok], marker="." if ok.sum() < 40 else None, label=name)
        ax.set_xlabel(xname)
    axes[0].set_title("losses", fontsize=10)
    axes[1].set_title("metrics", fontsize=10)
    for ax in axes:
        if ax.lines:
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def find_confusion(model_dir: str | Path) -> np.ndarray | None:
    """A summed confusion matrix saved in the model folder (``confusion*.json``/``.csv``/``.npy``), if any.

    JSON may be a list of rows or ``{"matrix": [[...]]}`` / ``{"confusion": [[...]]}``.
    """
    root = Path(model_dir)
    for p in sorted(root.rglob("confusion*")):
        try:
            if p.suffix == ".npy":
                return np.load(p, allow_pickle=False)
            if p.suffix == ".json":
                data = json.loads(p.read_text())
                if isinstance(data, dict):
                    data = data.get("matrix", data.get("confusion"))
                if data is not None:
                    return np.asarray(data, dtype=float)
            if p.suffix == ".csv":
                return np.loadtxt(p, delimiter=",", ndmin=2)
        except (OSError, ValueError):
            continue
    return None


def confusion_png(matrix: np.ndarray, names: list[str], *, title: str = "confusion matrix", dpi: int = 90) -> bytes:
    """PNG of a confusion matrix (rows reference, columns prediction) with counts and row percentages."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    m = np.asarray(matrix, dtype=float)
    n = m.shape[0]
    names = (list(names) + [f"label {i}" for i in range(len(names), n)])[:n]
    row = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.3 * n + 2.5, 1.1 * n + 1.8), dpi=dpi)
    ax.imshow(row, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{int(m[i, j]):,}\n{100 * row[i, j]:.1f}%", ha="center", va="center", fontsize=7,
                    color="white" if row[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), names, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_xlabel("prediction")
    ax.set_ylabel("reference")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
