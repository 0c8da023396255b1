"""Phantom generation speed, and the documentation mosaics.

    python benchmarks/phantoms.py [--size 256 256 128] [--seed 0] [--shapes DIR|none] [--images docs/images]

Prints the wall time of one CT phantom (kidneys, tumour, cyst) at the given
size, of one MR and one US phantom, and writes ``phantom_ct.png``,
``phantom_mr.png`` and ``phantom_us.png`` (axial and coronal slices through the
kidneys with and without the label overlay) to ``--images``.
Real shapes are taken from ``--shapes`` (default: ../shared/data if present).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np

from kidneyseg.data.phantoms import ct_phantom, find_shapes_root, mr_phantom, us_phantom

COLORS = {1: (0.18, 0.63, 0.26), 2: (0.86, 0.2, 0.18), 3: (0.15, 0.55, 0.82), 4: (0.42, 0.44, 0.77)}


def _overlay(gray: np.ndarray, lab: np.ndarray, lo: float, hi: float, colors=COLORS) -> np.ndarray:  # type: ignore[no-untyped-def]
    g = np.clip((gray - lo) / (hi - lo), 0, 1)
    rgb = np.stack([g, g, g], -1)
    for v, c in colors.items():
        m = lab == v
        rgb[m] = 0.55 * rgb[m] + 0.45 * np.asarray(c)
    return rgb


def mosaic_3d(ph, path: Path, lo: float, hi: float, title: str, colors=COLORS) -> None:  # type: ignore[no-untyped-def]
    """Axial (at the slice with most kidney) and coronal (through the kidney centres) views, radiological display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img, lab = ph.image.astype(np.float32), ph.label
    kid = np.isin(lab, [1, 2, 3]) if ph.task == "kits23" else np.isin(lab, [2, 3])
    k = int(np.argmax(kid.sum(axis=(0, 1))))
    j = int(np.argmax(kid.sum(axis=(0, 2))))
    sx, sy, sz = ph.spacing
    ax_img, ax_lab = img[:, ::-1, k].T, lab[:, ::-1, k].T  # rows anterior->posterior, cols patient R->L
    co_img, co_lab = img[:, j, ::-1].T, lab[:, j, ::-1].T  # rows superior->inferior
    fig, axes = plt.subplots(2, 2, figsize=(10, 10 * (1 + sz * img.shape[2] / (sy * img.shape[1])) / 2 + 0.6))
    for row, (im, lb, asp, name) in enumerate(((ax_img, ax_lab, sy / sx, f"axial z={k}"),
                                               (co_img, co_lab, sz / sx, f"coronal y={j}"))):
        axes[row, 0].imshow(im, cmap="gray", vmin=lo, vmax=hi, aspect=asp)
        axes[row, 1].imshow(_overlay(im, lb, lo, hi, colors), aspect=asp)
        axes[row, 0].set_title(name)
        axes[row, 1].set_title(name + " + labels")
        for a in axes[row]:
            a.set_xticks([])
            a.set_yticks([])
            a.text(2, im.shape[0] / 2, "R", color="yellow", fontsize=12, va="center")
            a.text(im.shape[1] - 12, im.shape[0] / 2, "L", color="yellow", fontsize=12, va="center")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def mosaic_us(ph, path: Path, title: str) -> None:  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    axes[0].imshow(ph.image, cmap="gray", vmin=0, vmax=255)
    axes[0].set_title("B-mode")
    axes[1].imshow(_overlay(ph.image.astype(np.float32), ph.label, 0, 255))
    axes[1].set_title("capsule label")
    reg_colors = {1: (0.8, 0.3, 0.09), 2: (0.42, 0.44, 0.77), 3: (0.18, 0.63, 0.26)}
    axes[2].imshow(_overlay(ph.image.astype(np.float32), ph.regions, 0, 255, reg_colors))
    axes[2].set_title("regions: central echo complex / medulla / cortex")
    for a in axes:
        a.set_xticks([])
        a.set_yticks([])
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, nargs=3, default=(256, 256, 128))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shapes", default=None, help="folder with kits23_masks/ and kidneyus_masks/, or 'none'")
    ap.add_argument("--images", type=Path, default=None, help="write the mosaics here (e.g. docs/images)")
    args = ap.parse_args()
    shapes = None if args.shapes == "none" else (Path(args.shapes) if args.shapes else find_shapes_root())
    ct_phantom((32, 32, 16), 0, None)  # warm imports
    rows = []
    t = time.perf_counter()
    ct = ct_phantom(tuple(args.size), args.seed, shapes)
    rows.append(("ct", "x".join(map(str, args.size)), time.perf_counter() - t, ct.info["kidney_shapes"],
                 sorted(int(v) for v in np.unique(ct.label))))
    t = time.perf_counter()
    mr = mr_phantom((256, 256, 32), args.seed, shapes)
    rows.append(("mr", "256x256x32", time.perf_counter() - t, mr.info["kidney_shapes"],
                 sorted(int(v) for v in np.unique(mr.label))))
    t = time.perf_counter()
    us = us_phantom((480, 640), args.seed, shapes)
    rows.append(("us", "480x640", time.perf_counter() - t, us.info["kidney_shape"],
                 sorted(int(v) for v in np.unique(us.label))))
    print(f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, cpu count {os.cpu_count()}")
    print(f"{'modality':8} {'size':12} {'seconds':>8}  shapes / labels")
    for m, size, sec, src, labs in rows:
        print(f"{m:8} {size:12} {sec:8.2f}  {src} / {labs}")
    if args.images:
        args.images.mkdir(parents=True, exist_ok=True)
        mosaic_3d(ct, args.images / "phantom_ct.png", -160, 240,
                  f"CT phantom (seed {args.seed}, {ct.info['kidney_shapes']}), W400/L40 HU; green kidney, red tumour, blue cyst")
        mosaic_3d(mr, args.images / "phantom_mr.png", 0, float(np.percentile(mr.image, 99.5)),
                  f"T2 MR phantom (seed {args.seed}); green 1 liver, red 2 right kidney, blue 3 left kidney", )
        mosaic_us(us, args.images / "phantom_us.png", f"US phantom (seed {args.seed}, {us.info['kidney_shape']})")
        print("wrote", ", ".join(str(args.images / f) for f in ("phantom_ct.png", "phantom_mr.png", "phantom_us.png")))


if __name__ == "__main__":
    main()
