"""The training loop for one stage: epochs, validation, checkpoints, resume, logs.

Samples are dicts of numpy arrays, channel first:

* segmentation: ``{"image": float32 (C_in, *spatial), "label": uint8 (1, *spatial)}`` with
  channel indices (not label values) in ``label``; optional ``"mask"`` (1, *spatial) is
  appended to the image as an extra channel after augmentation (lesion stage).
* detection: ``{"image": float32 (1, H, W), "boxes": float32 (n, 4)}``.

Determinism and resume
----------------------
At the start of epoch ``e`` the sample order and the augmentation are seeded from
``(seed, e)``; the torch, numpy and python RNG states, the model, the optimizer, the
best score and the log are written atomically to ``CKPT_DIR/last.pt`` after every
epoch.  ``resume=True`` loads it and continues with epoch ``e + 1``, so an
interrupted run (even ``kill -9``) ends with the same weights as an uninterrupted
run with the same seed and thread count.

Each sample of an epoch is augmented from its own seed (:func:`sample_seed`: seed, epoch and its
position in the epoch's order), so what a sample becomes does not depend on which batch or
process takes it.

Several processes (``torchrun``, :mod:`kidneyseg.training.distributed`)
-----------------------------------------------------------------------
With a :class:`~kidneyseg.training.distributed.DistContext` of ``W`` processes the trainer
wraps the network in ``DistributedDataParallel``; each global batch of ``batch_size`` samples
is shared, ``batch_size / W`` per process (positions cut by ``DistributedSampler``), so a
``W``-process epoch takes the same optimiser steps on the same samples as the one-process
epoch.  Validation samples are shared and their tp/fp/fn summed.  Only rank 0 writes
checkpoints and logs; every process reads ``last.pt`` on resume.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn as nn

from kidneyseg.errors import InputError, KidneysegError
from kidneyseg.io import atomic_path
from kidneyseg.preprocessing.plan import Plan
from kidneyseg.training.config import TrainConfig, lr_at
from kidneyseg.training.distributed import DistContext

log = logging.getLogger(__name__)

LAST = "last.pt"
BEST = "best.pt"
DONE = "done"


def _atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` atomically, flushed to disk (a checkpoint survives a crash whole or not at all)."""
    with atomic_path(path, fsync=True) as tmp:
        torch.save(obj, tmp)


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states in a form ``torch.load(weights_only=True)`` accepts."""
    state = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state(legacy=True))  # legacy: a tuple
    name, keys, pos, has_gauss, cached = state
    return {
        "python": random.getstate(),
        "numpy": [name, torch.as_tensor(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """Augmentation seed (``0 .. 2**32 - 1``) of the sample at ``position`` of epoch ``epoch``'s order."""
    return int(np.random.SeedSequence([int(seed) % 2**63, int(epoch), int(position)]).generate_state(1)[0])


class _TrainForward(nn.Module):
    """What a training step runs (through ``DistributedDataParallel`` when several processes train):
    the network, or an ensemble's phase (``phase="members"``: each member's logits; ``"fusion"``:
    the members frozen, their logits combined)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args: Any, phase: str | None = None) -> Any:
        ens: Any = self.module  # ensembles: member_logits / combine (kidneyseg.models.ensemble)
        if phase == "members":
            return list(ens.member_logits(args[0]))
        if phase == "fusion":
            with torch.no_grad():
                logits = ens.member_logits(args[0])
            return ens.combine(logits)
        return self.module(*args)


def dice_per_channel(pred: np.ndarray, target: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True positives, false positives, false negatives per channel ``1..n_classes-1`` (int arrays)."""
    tp = np.zeros(n_classes - 1, np.int64)
    fp = np.zeros_like(tp)
    fn = np.zeros_like(tp)
    for c in range(1, n_classes):
        p, t = pred == c, target == c
        tp[c - 1] = int(np.count_nonzero(p & t))
        fp[c - 1] = int(np.count_nonzero(p & ~t))
        fn[c - 1] = int(np.count_nonzero(~p & t))
    return tp, fp, fn


def stack_groups(groups: list[Any]) -> torch.Tensor | None:
    """The ``(N, G, C)`` partial-label group tensor of a batch from each sample's ``(G_n, C)`` matrix, padded with
    zero rows to the largest ``G``; ``None`` when no sample has groups.  A batch mixing samples with and
    without groups is an error (every data set of a partial-label run has groups)."""
    if all(g is None for g in groups):
        return None
    if any(g is None for g in groups):
        raise KidneysegError("a batch mixes samples with and without label groups", found=len(groups),
                             fix="give every data set of a partial-label run its groups")
    mats = [torch.as_tensor(np.asarray(g), dtype=torch.float32) for g in groups]
    n_g = max(m.shape[0] for m in mats)
    return torch.stack([torch.cat([m, m.new_zeros(n_g - m.shape[0], m.shape[1])]) for m in mats])


class StageTrainer:
    """Train one segmentation network on prepared samples.

    Parameters
    ----------
    module:
        Network from the registry (logits out).
    loss:
        Loss taking ``(logits, target)``.
    config:
        The run's :class:`TrainConfig`.
    ckpt_dir:
        Folder for ``last.pt``, ``best.pt``, ``log.csv`` and ``curves.png``.
    plan:
        The stage's :class:`~kidneyseg.preprocessing.plan.Plan`: its ``spatial_dims``,
        ``patch_size`` and ``modality`` drive patch sampling and augmentation, its
        ``intensity`` the contrast-phase simulation, its ``orientation`` ``mirror="left-right"``.
    channel_names:
        Name of each output channel (``[background, kidney, ...]``), for the log.
    sided_labels:
        Labels encode left/right: no flips in augmentation.
    name:
        Stage name, for the progress bar and log.
    dist:
        The processes training together (:func:`kidneyseg.training.distributed.from_environment`);
        default: this process alone.  The network is moved to its device.
    """

    def __init__(
        self,
        module: nn.Module,
        loss: nn.Module,
        config: TrainConfig,
        ckpt_dir: str | os.PathLike[str],
        plan: Plan,
        *,
        channel_names: list[str],
        sided_labels: bool = False,
        name: str = "main",
        dist: DistContext | None = None,
    ) -> None:
        self.dist = dist or DistContext()
        self.device = torch.device(self.dist.device)
        self.module = module.to(self.device)
        self.loss = loss.to(self.device) if isinstance(loss, nn.Module) else loss
        self.cfg = config
        self.dir = Path(ckpt_dir)
        self.plan = plan
        self.spatial_dims = plan.spatial_dims
        self.patch_size = list(plan.patch_size)
        self.modality = plan.modality
        self.channel_names = channel_names
        self.sided = sided_labels
        self.name = name
        self.optimizer = torch.optim.Adam([p for p in module.parameters()], lr=config.lr)
        self.rows: list[dict[str, Any]] = []
        self.best = -math.inf
        self.best_epoch = -1
        self.start_epoch = 0
        self.on_epoch_end: list[Callable[[int, dict[str, Any]], None]] = []
        self.score_key = "dice_mean"
        self.is_ensemble = hasattr(module, "member_logits")
        self.is_concat = hasattr(module, "fusion")
        # the step's forward, in DistributedDataParallel for several processes (wrapped per set of trained parameters)
        self.train_module: Any = _TrainForward(self.module)
        self._wrapped_for: tuple[bool, ...] | None = None

    # ------------------------------------------------------------------ phases
    def fusion_start(self) -> int:
        """First epoch of the fusion phase (concat ensembles trained members-then-fusion), else epochs."""
        if not (self.is_concat and self.cfg.ensemble_training == "members-then-fusion"):
            return self.cfg.epochs
        fusion = self.cfg.fusion_epochs if self.cfg.fusion_epochs is not None else max(1, self.cfg.epochs // 3)
        return max(0, self.cfg.epochs - fusion)

    def phase(self, epoch: int) -> str:
        if not self.is_ensemble:
            return "train"
        if self.is_concat and self.cfg.ensemble_training == "end-to-end":
            return "end-to-end"
        return "members" if epoch < self.fusion_start() else "fusion"

    def counts_for_best(self, phase: str) -> bool:
        """Whether an epoch of ``phase`` may become the shipped ``best`` checkpoint.

        A concat ensemble's members phase never may: its fusion convolution is still at its random
        initialisation then, so only fusion-phase epochs compete (issue 23).
        """
        return not (self.is_concat and phase == "members")

    def _set_phase(self, phase: str) -> None:
        self.module.train()
        if phase == "fusion":
            members: nn.Module = self.module.members  # type: ignore[assignment]  # concat ensembles only
            for p in members.parameters():
                p.requires_grad_(False)
            members.eval()
        else:
            for p in self.module.parameters():
                p.requires_grad_(True)
        trained = tuple(p.requires_grad for p in self.module.parameters())
        if trained != self._wrapped_for:  # DDP synchronises the parameters that require gradients when wrapped
            self.train_module = self.dist.wrap(_TrainForward(self.module), find_unused=self.is_ensemble)
            self._wrapped_for = trained

    def _loss(self, x: torch.Tensor, y: torch.Tensor, phase: str, groups: torch.Tensor | None = None) -> torch.Tensor:
        kw = {} if groups is None else {"groups": groups}  # partial labels: the marginal loss
        if phase == "members":
            logits = self.train_module(x, phase="members")
            return torch.stack([self.loss(z, y, **kw) for z in logits]).sum()
        if phase == "fusion":
            return self.loss(self.train_module(x, phase="fusion"), y, **kw)
        return self.loss(self.train_module(x), y, **kw)

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint(self, epoch: int) -> dict[str, Any]:
        return {
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": epoch,
            "rng": rng_state(),
            "best": self.best,
            "best_epoch": self.best_epoch,
            "rows": self.rows,
        }

    def load_checkpoint(self) -> bool:
        """Load ``last.pt`` if present; returns whether it was."""
        path = self.dir / LAST
        if not path.is_file():
            return False
        try:
            ck = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a torn file cannot exist (atomic writes) but a foreign one can
            raise InputError("checkpoint cannot be read", path=path, found=str(exc).splitlines()[0],
                             fix="delete the checkpoints folder to start the stage again") from exc
        self.module.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        set_rng_state(ck["rng"])
        self.best, self.best_epoch = float(ck["best"]), int(ck["best_epoch"])
        self.rows = list(ck["rows"])
        self.start_epoch = int(ck["epoch"]) + 1
        log.info("%s: resuming after epoch %d of %d", self.name, self.start_epoch, self.cfg.epochs)
        return True

    # ------------------------------------------------------------------ data
    def _transform(self, extra_keys: tuple[str, ...]) -> Any:
        from kidneyseg.augmentation import build_train_transform

        phase = None
        if self.cfg.contrast_phase_prob > 0:
            it = self.plan.intensity or {}
            if self.modality != "ct" or it.get("kind") != "window":
                raise InputError("contrast_phase_prob needs a CT stage with a window intensity plan",
                                 found=f"modality {self.modality}, intensity {it.get('kind')}",
                                 expected="modality ct and plan intensity kind 'window'",
                                 fix="set contrast_phase_prob to 0 or give the stage a window plan")
            phase = (self.cfg.contrast_phase_prob, (float(it["low"]), float(it["high"])))
        return build_train_transform(
            self.modality, self.spatial_dims, self.patch_size, fg_ratio=self.cfg.fg_ratio,
            strength=self.cfg.augmentation, sided_labels=self.sided, extra_label_keys=extra_keys,
            contrast_phase=phase, mirror=self.cfg.mirror, orientation=self.plan.orientation,
        )

    @staticmethod
    def _to_input(d: dict[str, Any]) -> torch.Tensor:
        img = torch.as_tensor(np.asarray(d["image"]), dtype=torch.float32)
        if "mask" in d:
            img = torch.cat([img, torch.as_tensor(np.asarray(d["mask"]), dtype=torch.float32)], dim=0)
        return img

    def _step(self, batch: list[dict[str, Any]], transform: Any, keys: tuple[str, ...], phase: str,
              seeds: Sequence[int]) -> float:
        """One optimiser step on ``batch``, each sample augmented by ``transform`` seeded with its entry of
        ``seeds`` (:func:`sample_seed`); returns the loss (this process's share of the batch)."""
        items = []
        for s, seed in zip(batch, seeds):
            transform.set_random_state(int(seed))
            out = transform({k: s[k] for k in keys})
            items.append(out[0] if isinstance(out, list) else out)
        x = torch.stack([self._to_input(d) for d in items]).as_subclass(torch.Tensor).to(self.device)
        y = torch.stack([torch.as_tensor(np.asarray(d["label"])).round().long() for d in items]
                        ).as_subclass(torch.Tensor).to(self.device)
        groups = stack_groups([s.get("groups") for s in batch])
        if groups is not None:
            groups = groups.to(self.device)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._loss(x, y, phase, groups)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    # ------------------------------------------------------------------ validation
    def _val_forward(self, phase: str) -> Callable[[torch.Tensor], torch.Tensor]:
        """The network output validation scores: a concat ensemble's members phase scores the members' mean
        probabilities (what the members have learned; the fusion is not trained yet), else the module."""
        if self.is_concat and phase == "members":
            ens: Any = self.module

            def members_mean(x: torch.Tensor) -> torch.Tensor:
                probs = torch.stack([torch.softmax(z, dim=1) for z in ens.member_logits(x)]).mean(dim=0)
                return torch.log(probs.clamp_min(1e-8))

            return members_mean
        return self.module

    @torch.no_grad()
    def validate(self, samples: list[dict[str, Any]], phase: str | None = None) -> dict[str, float]:
        """Dice per output channel over all validation voxels (global tp/fp/fn), and their mean.

        ``phase``: the epoch's training phase (:meth:`phase`); a concat ensemble's ``members`` phase is
        scored on the members' mean probabilities, not on the untrained fusion.  Several processes
        each score every ``world_size``-th sample and sum their counts: every process gets the same result.
        """
        forward = self._val_forward(phase or "train")
        n = len(self.channel_names)
        tp = np.zeros(n - 1, np.int64)
        fp = np.zeros_like(tp)
        fn = np.zeros_like(tp)
        by_group: dict[str, np.ndarray] = {}  # partial labels: tp, fp, fn per label group name
        grouped = any("groups" in s for s in samples)
        self.module.eval()
        for s in samples[self.dist.rank::self.dist.world_size]:
            x = self._to_input(s)[None].to(self.device)
            if self.spatial_dims == 3:
                from monai.inferers import sliding_window_inference

                roi = [min(p, max(16, d)) for p, d in zip(self.patch_size, x.shape[2:])]
                logits = sliding_window_inference(x, roi, 1, forward, overlap=0.25)
            else:
                logits = forward(x)
            pred = torch.as_tensor(logits).argmax(1)[0].cpu().numpy()
            if "groups" in s:  # partial labels: a predicted channel counts as the group that covers it
                g = np.asarray(s["groups"])
                pred = g.argmax(0)[pred]
                names = ["+".join(self.channel_names[c] for c in np.nonzero(row)[0]) for row in g]
                a, b, c = dice_per_channel(pred, np.asarray(s["label"])[0], len(names))
                for k, name in enumerate(names[1:]):
                    acc = by_group.setdefault(name, np.zeros(3, np.int64))
                    acc += (a[k], b[k], c[k])
                continue
            a, b, c = dice_per_channel(pred, np.asarray(s["label"])[0], n)
            tp, fp, fn = tp + a, fp + b, fn + c
        # partial labels: every sample has groups (training refuses a mix, stack_groups), so it is one or the other
        if grouped:
            counts = self.dist.sum_counts({name: list(acc) for name, acc in by_group.items()})
        else:
            counts = self.dist.sum_counts({name: [tp[i], fp[i], fn[i]]
                                           for i, name in enumerate(self.channel_names[1:])})
        out: dict[str, float] = {}
        for name in ([c for c in self.channel_names[1:] if c in counts] if not grouped else list(counts)):
            t, f_p, f_n = counts[name]
            denom = 2 * t + f_p + f_n
            out[f"dice_{name}"] = float(2 * t / denom) if denom else 1.0
        out["dice_mean"] = float(np.mean(list(out.values()))) if out else float("nan")
        return out

    # ------------------------------------------------------------------ loop
    def fit(self, train: list[dict[str, Any]], val: list[dict[str, Any]], *, resume: bool = False) -> dict[str, Any]:
        """Train for ``config.epochs`` epochs; returns a summary (best epoch and score, seconds)."""
        from tqdm import tqdm

        if not train:
            raise InputError(f"stage {self.name} has no training samples", expected=">= 1 labelled sample",
                             fix="check that the data set has label maps with the stage's labels")
        main = self.dist.is_main  # the one process that writes checkpoints, logs and the progress bar
        local_batch = self.dist.local_batch_size(self.cfg.batch_size)  # refuses a batch W does not divide
        if main:
            self.dir.mkdir(parents=True, exist_ok=True)
        if not (resume and self.load_checkpoint()):
            self.start_epoch = 0
        extra = ("mask",) if "mask" in train[0] else ()
        transform = self._transform(extra)
        keys = ("image", "label", *extra) if "label" in train[0] else ("image", "boxes")
        per_epoch = len(train) * (self.cfg.samples_per_case if self.spatial_dims == 3 else 1)
        steps = math.ceil(per_epoch / self.cfg.batch_size)
        # positions of each epoch's order this process takes: all of them alone, every W-th of W processes
        # (DistributedSampler); local step b then holds this process's share of global step b
        mine = self.dist.shard(per_epoch)
        t_start = time.time()
        bar = tqdm(total=steps * self.cfg.epochs, initial=steps * self.start_epoch, desc=f"train {self.name}",
                   unit="step", disable=not (self.cfg.progress and main), dynamic_ncols=True)
        for epoch in range(self.start_epoch, self.cfg.epochs):
            t0 = time.time()
            phase = self.phase(epoch)
            self._set_phase(phase)
            lr = lr_at(self.cfg.lr, epoch, self.cfg.epochs, self.cfg.lr_schedule)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            seed_e = (self.cfg.seed * 1_000_003 + epoch) % (2**31)
            order = np.random.default_rng(seed_e).permutation(per_epoch) % len(train)
            losses = []
            for b in range(steps):
                pos = mine[b * local_batch:(b + 1) * local_batch]
                loss = self._step([train[int(order[p])] for p in pos], transform, keys, phase,
                                  [sample_seed(self.cfg.seed, epoch, p) for p in pos])
                losses.append(loss)
                bar.update(1)
                bar.set_postfix(epoch=f"{epoch + 1}/{self.cfg.epochs}", loss=f"{losses[-1]:.4f}", phase=phase)
            # each step's loss over the whole global batch: the processes' shares are the same size
            losses = self.dist.mean_over_processes(losses)
            row: dict[str, Any] = {"epoch": epoch + 1, "phase": phase, "train_loss": float(np.mean(losses)),
                                   "lr": lr}
            last = epoch == self.cfg.epochs - 1
            if val and ((epoch + 1) % self.cfg.val_every == 0 or last):
                row.update(self.validate(val, phase))
                if self.is_concat and phase == "members":
                    row["val_output"] = "members' mean"  # the fusion is untrained: never a best epoch
                if self.counts_for_best(phase) and row[self.score_key] > self.best:
                    self.best, self.best_epoch = row[self.score_key], epoch + 1
                    if main:
                        _atomic_save({k: v.detach().clone() for k, v in self.module.state_dict().items()},
                                     self.dir / BEST)
            row["seconds"] = round(time.time() - t0, 3)
            self.rows.append(row)
            if main:
                _atomic_save(self._checkpoint(epoch), self.dir / LAST)
                self.write_logs()
            for cb in self.on_epoch_end:
                cb(epoch, row)
        bar.close()
        if main:
            (self.dir / DONE).write_text("done\n")
        self.train_module, self._wrapped_for = _TrainForward(self.module), None  # lets go of the DDP wrapper
        self.module.to("cpu")  # the model folder holds CPU tensors
        self.dist.barrier()  # every process has finished the stage before rank 0 writes it
        return self.summary(time.time() - t_start)

    def final_state(self) -> dict[str, torch.Tensor]:
        """Weights to ship: the best validation epoch's if there was validation, else the last.

        Only epochs that :meth:`counts_for_best` compete: a concat ensemble ships fusion-phase weights.
        """
        path = self.dir / BEST
        if self.best_epoch > 0 and path.is_file():
            return torch.load(path, map_location="cpu", weights_only=True)
        return self.module.state_dict()

    def summary(self, seconds: float) -> dict[str, Any]:
        last = self.rows[-1] if self.rows else {}
        return {
            "epochs": self.cfg.epochs,
            "best_epoch": self.best_epoch if self.best_epoch > 0 else None,
            "best_phase": next((r.get("phase") for r in self.rows if r.get("epoch") == self.best_epoch), None),
            "best_score": None if self.best_epoch <= 0 else round(self.best, 5),
            "score": self.score_key,
            "last_train_loss": last.get("train_loss"),
            "last_val": {k: v for k, v in last.items() if k.startswith(("dice_", "recall"))},
            "seconds_this_run": round(seconds, 1),
            "seconds_total": round(sum(r.get("seconds", 0) for r in self.rows), 1),
            "weights": "best" if self.best_epoch > 0 else "last",
        }

    def write_logs(self) -> None:
        """``log.csv`` (one row per epoch) and ``curves.png`` (loss and validation Dice)."""
        write_log(self.rows, self.dir / "log.csv", self.dir / "curves.png", title=self.name)


def write_log(rows: list[dict[str, Any]], csv_path: Path, png_path: Path | None, title: str = "") -> None:
    """Write the epoch rows as CSV and, if matplotlib is installed, plot the curves."""
    if not rows:
        return
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow(r)
    if png_path is None:
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - report extra missing
        return
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.5))
    ep = [r["epoch"] for r in rows]
    a1.plot(ep, [r["train_loss"] for r in rows], marker="o")
    a1.set(xlabel="epoch", ylabel="training loss", title=f"{title} loss")
    for k in [c for c in cols if c.startswith("dice_") or c.startswith("recall")]:
        pts = [(r["epoch"], r[k]) for r in rows if r.get(k) is not None and k in r]
        if pts:
            a2.plot(*zip(*pts), marker="o", label=k)
    a2.set(xlabel="epoch", ylabel="validation", title=f"{title} validation", ylim=(0, 1))
    if a2.lines:
        a2.legend(fontsize=7)
    fig.tight_layout()
    try:
        with atomic_path(png_path) as tmp_png:
            fig.savefig(tmp_png, dpi=80)
    finally:
        plt.close(fig)
