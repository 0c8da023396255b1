"""Small model folders for prediction tests: tiny networks, trained a few steps on phantoms.

Used by tests/inference and tests/cli/test_predict.py (imported by path).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

WINDOW = {"kind": "window", "low": -60, "high": 300}
KITS = {"0": "background", "1": "kidney", "2": "tumor", "3": "cyst"}


def plan3d(spacing, patch, labels=None) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return {"modality": "ct", "spatial_dims": 3, "orientation": "RAS", "target_spacing": list(spacing),
            "patch_size": list(patch), "intensity": dict(WINDOW), "denoise": None, "labels": labels or dict(KITS)}


def plan2d(spacing, patch, modality="ct", intensity=None, labels=None) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return {"modality": modality, "spatial_dims": 2, "orientation": "RAS" if modality != "us" else None,
            "target_spacing": None if spacing is None else list(spacing), "patch_size": list(patch),
            "intensity": intensity or dict(WINDOW), "denoise": None, "labels": labels or dict(KITS)}


def train_few_steps(module, image: np.ndarray, target: np.ndarray, steps: int = 30, lr: float = 1e-2, seed: int = 0,  # type: ignore[no-untyped-def]
                    batched: bool = False):
    """A few Adam steps of class-weighted cross-entropy (foreground x5) on one (C, *spatial) image.

    ``batched``: ``image`` is ``(N, C, *spatial)`` and ``target`` ``(N, *spatial)``, one batch.
    """
    import torch

    torch.manual_seed(seed)
    x = torch.from_numpy(np.ascontiguousarray(image, np.float32))
    y = torch.from_numpy(np.ascontiguousarray(target, np.int64))
    if not batched:
        x, y = x[None], y[None]
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    module.train()
    for _ in range(steps):
        opt.zero_grad()
        logits = module(x)
        weight = torch.ones(logits.shape[1])
        weight[1:] = 5.0
        loss = torch.nn.functional.cross_entropy(logits, y, weight=weight)
        loss.backward()
        opt.step()
    module.eval()
    return float(loss.detach())


def _stage(d: Path, name: str, arch: str, kwargs: dict, cin: int, c2l: list[int], plan: dict, facts=None, module=None):  # type: ignore[no-untyped-def]
    from kidneyseg.models.folder import save_stage
    from kidneyseg.models.registry import create_model

    if module is None:
        module = create_model(arch, in_channels=cin, out_channels=len(c2l), **kwargs)
    save_stage(d / name, module, {"arch": arch, "arch_kwargs": kwargs, "in_channels": cin, "out_channels": len(c2l),
                                  "channel_to_label": c2l, "plan": plan, "stage": facts or {}})
    return module


def _top(d: Path, pipeline: str, stages: list[str], modality="ct", labels=None) -> Path:  # type: ignore[no-untyped-def]
    from kidneyseg.models.folder import save_model_folder

    save_model_folder(d, {"pipeline": pipeline, "task": "kits23", "modality": modality, "labels": labels or dict(KITS),
                          "stages": stages, "training": {"note": "test model"}, "card": {}})
    return d


TINY3D = {"channels": [8, 16], "strides": [2], "num_res_units": 1}


def cached_unet3d(tmp_path_factory, steps: int = 40) -> Path:  # type: ignore[no-untyped-def]
    """:func:`trained_unet3d` once per test session (shared by test modules)."""
    d = Path(tmp_path_factory.getbasetemp()) / "kidneyseg-test-unet3d"
    if not (d / "model.json").is_file():
        trained_unet3d(d, steps=steps)
    return d


def trained_unet3d(d: Path, steps: int = 25) -> Path:
    """Single-stage 3D U-Net (kidney vs background) trained a few steps on a 3 mm CT phantom."""
    from kidneyseg.case import Case
    from kidneyseg.data.phantoms import ct_phantom
    from kidneyseg.models.registry import create_model
    from kidneyseg.preprocessing.plan import apply_plan

    plan = plan3d([8.0, 8.0, 8.0], [48, 48, 24], labels={"0": "background", "1": "kidney"})
    ph = ct_phantom(size=(40, 40, 20), seed=1)
    pre = apply_plan(Case(ph.image.astype(np.float32), ph.affine, label=ph.label), plan)
    import torch

    torch.manual_seed(0)
    net = create_model("unet3d", in_channels=1, out_channels=2, **TINY3D)
    train_few_steps(net, pre.image[None], (pre.label > 0).astype(np.int64), steps=steps)
    _stage(d, "main", "unet3d", TINY3D, 1, [0, 1], plan, module=net)
    return _top(d, "unet3d", ["main"], labels={"0": "background", "1": "kidney"})


def _kidney_crops(ph, coarse_plan: dict, margin_mm: float) -> list:  # type: ignore[no-untyped-def]
    """The RAS crops of ``ph`` (a phantom) the fine stage sees: each kidney's box on the coarse grid, grown."""
    from kidneyseg.case import Case
    from kidneyseg.inference.cascades import _component_boxes
    from kidneyseg.preprocessing.geometry import crop, reorient, world_box_to_grid
    from kidneyseg.preprocessing.plan import apply_plan

    case = Case(ph.image.astype(np.float32), ph.affine, label=ph.label)
    pre = apply_plan(case, coarse_plan)
    ras = reorient(case, "RAS")
    return [crop(ras, world_box_to_grid(b, pre.affine, ras, margin_mm)) for b in _component_boxes(pre.label > 0)]


def cascade(d: Path, steps: int = 0) -> Path:
    """ct3d-cascade folder: coarse (4 mm), fine (2 mm), lesion (2 mm, 2 inputs); tiny U-Nets."""
    import torch

    from kidneyseg.case import Case
    from kidneyseg.data.phantoms import ct_phantom
    from kidneyseg.models.registry import create_model
    from kidneyseg.preprocessing.plan import apply_plan

    torch.manual_seed(0)  # the same networks whatever ran before
    coarse_plan = plan3d([8.0, 8.0, 8.0], [32, 32, 32])
    coarse = create_model("unet3d", in_channels=1, out_channels=2, **TINY3D)
    if steps:
        ph = ct_phantom(size=(40, 40, 20), seed=1)  # the tests' phantom: a check of the pipeline, not of learning
        pre = apply_plan(Case(ph.image.astype(np.float32), ph.affine, label=ph.label), coarse_plan)
        train_few_steps(coarse, pre.image[None], (pre.label > 0).astype(np.int64), steps=steps)
    _stage(d, "coarse", "unet3d", TINY3D, 1, [0, 1], coarse_plan, module=coarse)
    fine_plan = plan3d([4.0, 4.0, 4.0], [32, 32, 32])
    fine = create_model("unet3d", in_channels=1, out_channels=2, **TINY3D)
    if steps:  # trained as the cascade uses it, on the crop around each kidney, so its output can be checked
        for crop_case in _kidney_crops(ph, coarse_plan, margin_mm=10.0):
            pre = apply_plan(crop_case, fine_plan)
            train_few_steps(fine, pre.image[None], (pre.label > 0).astype(np.int64), steps=steps)
    _stage(d, "fine", "unet3d", TINY3D, 1, [0, 1], fine_plan, {"crop_margin_mm": 10.0}, module=fine)
    _stage(d, "lesion", "unet3d", TINY3D, 2, [0, 2, 3], plan3d([4.0, 4.0, 4.0], [32, 32, 32]),
           {"crop_margin_mm": 10.0, "inside_kidney": True})
    return _top(d, "ct3d-cascade", ["coarse", "fine", "lesion"])


def oracle_detections(case, size: int = 64) -> dict[int, np.ndarray]:  # type: ignore[no-untyped-def]
    """What a perfect kidney detector returns for ``case`` (with its label) on the detector plan's slices:
    ``detect_slices``' format, one box per kidney per axial slice, score 1."""
    from kidneyseg.models.detection import boxes_from_slice
    from kidneyseg.preprocessing.plan import Plan, apply_plan

    pre = apply_plan(case, Plan.from_json(plan2d(None, [size, size])))
    out = {}
    for k in range(pre.shape[-1]):
        b = boxes_from_slice(pre.label[..., k])
        if len(b):
            out[k] = np.c_[b, np.ones(len(b))].astype(np.float32)
    return out


def detect_vnet(d: Path, size: int = 64, score_threshold: float = 0.0, train_on=None, steps: int = 20) -> Path:  # type: ignore[no-untyped-def]
    """ct-detect-vnet folder (detector at ``size`` px, V-Net on 32^3 crops) with random weights; ``train_on``
    (a Case with its label): the V-Net is trained ``steps`` steps on the crops the cascade cuts around its
    kidneys (from :func:`oracle_detections`), resized to the patch as at prediction."""
    import torch

    from kidneyseg.inference.engines import boxes_to_3d
    from kidneyseg.models.registry import create_model
    from kidneyseg.preprocessing.geometry import crop, reorient, world_box_to_grid
    from kidneyseg.preprocessing.plan import Plan, apply_plan

    _stage(d, "detector", "fasterrcnn-resnet50", {"min_size": size, "max_size": size}, 1, [0, 1],
           plan2d(None, [size, size]), {"score_threshold": score_threshold, "batch_size": 8})
    seg_plan = plan3d([4.0, 4.0, 4.0], [32, 32, 32])
    module = None
    if train_on is not None:
        torch.manual_seed(0)
        module = create_model("vnet", in_channels=1, out_channels=3)
        det_pre = apply_plan(train_on, Plan.from_json(plan2d(None, [size, size])))
        ras = reorient(train_on, "RAS")
        crops = []
        for box in boxes_to_3d(oracle_detections(train_on, size), det_pre.shape):
            c = crop(ras, world_box_to_grid(box, det_pre.affine, ras, 10.0))
            fit = Plan.from_json(seg_plan).updated(
                {"target_spacing": [n * s / p for n, s, p in zip(c.shape, c.spacing, (32, 32, 32))]})
            crops.append(apply_plan(c, fit))
        x = np.stack([c.image[None] for c in crops])
        y = np.stack([np.clip(c.label, 0, 2) for c in crops])  # cysts as background: the V-Net's classes
        train_few_steps(module, x, y, steps=steps, batched=True)
    _stage(d, "segmenter", "vnet", {}, 1, [0, 1, 2], seg_plan, {"crop_margin_mm": 10.0, "resize_to_patch": True},
           module=module)
    return _top(d, "ct-detect-vnet", ["detector", "segmenter"])


def _train_on_slices(module, image: np.ndarray, label: np.ndarray, steps: int) -> None:  # type: ignore[no-untyped-def]
    """:func:`train_few_steps` on the batch of axial slices (last axis) of a preprocessed volume that hold an organ."""
    ks = [k for k in range(label.shape[-1]) if label[..., k].any()]
    x = np.moveaxis(image[..., ks], -1, 0)[:, None]
    train_few_steps(module, x, np.moveaxis(label[..., ks], -1, 0), steps=steps, batched=True)


def slice2d(d: Path, arch: str = "unet2d", kwargs=None, spacing=None, steps: int = 0) -> Path:  # type: ignore[no-untyped-def]
    """Slice-wise 2D folder: random weights, or trained ``steps`` steps on the tests' CT phantom's slices."""
    kwargs = {"channels": [8, 16], "strides": [2], "num_res_units": 1} if kwargs is None else kwargs
    plan = plan2d(spacing, [256, 256])
    module = None
    if steps:
        import torch

        from kidneyseg.case import Case
        from kidneyseg.data.phantoms import ct_phantom
        from kidneyseg.models.registry import create_model
        from kidneyseg.preprocessing.plan import apply_plan

        torch.manual_seed(0)
        module = create_model(arch, in_channels=1, out_channels=4, **kwargs)
        ph = ct_phantom(size=(40, 40, 20), seed=1)  # the tests' phantom: a check of the pipeline, not of learning
        pre = apply_plan(Case(ph.image.astype(np.float32), ph.affine, label=ph.label), plan)
        _train_on_slices(module, pre.image, pre.label, steps)
    _stage(d, "main", arch, kwargs, 1, [0, 1, 2, 3], plan, module=module)
    return _top(d, "ct2d-unet-resnet" if arch == "unet-resnet34" else "custom-2d", ["main"])


def us_model(d: Path, arch: str = "unet2d", kwargs=None, steps: int = 0, phantom=None) -> Path:  # type: ignore[no-untyped-def]
    """2D ultrasound folder (kidney capsule): random weights, or trained ``steps`` steps on ``phantom``."""
    labels = {"0": "background", "1": "kidney"}
    kwargs = {"channels": [8, 16], "strides": [2], "num_res_units": 1} if kwargs is None else kwargs
    plan = plan2d([0.5, 0.5], [256, 256], modality="us",
                  intensity={"kind": "percentile_zscore", "low_pct": 0.5, "high_pct": 99.5}, labels=labels)
    module = None
    if steps:
        import torch

        from kidneyseg.case import Case
        from kidneyseg.models.registry import create_model
        from kidneyseg.preprocessing.plan import apply_plan

        torch.manual_seed(0)
        module = create_model(arch, in_channels=1, out_channels=2, **kwargs)
        pre = apply_plan(Case(phantom.image.astype(np.float32), phantom.affine, label=phantom.label,
                              modality="us"), plan)
        train_few_steps(module, pre.image[None], (pre.label > 0).astype(np.int64), steps=steps)
    _stage(d, "main", arch, kwargs, 1, [0, 1], plan, module=module)
    return _top(d, "us-triple-ensemble" if arch == "ensemble-concat" else "custom-us", ["main"], modality="us",
                labels=labels)


#: Small ``ct2d-ensemble`` members: InceptionV3 keeps the ensemble's smallest input (128 px), SqueezeNet is cheap.
SMALL_CT2D_MEMBERS = [{"arch": "unet-squeezenet", "arch_kwargs": {"decoder_channels": [8, 8, 8, 8]}},
                      {"arch": "unet-inceptionv3", "arch_kwargs": {"decoder_channels": [8, 8, 8, 8, 8]}}]


def ct2d_ensemble(d: Path, spacing=(0.8, 0.8), members=None) -> Path:  # type: ignore[no-untyped-def]
    """``ct2d-ensemble`` folder with random weights: ``ensemble-mean`` of small members, plan at ``spacing`` mm."""
    import torch

    torch.manual_seed(0)
    kwargs = {"members": members or SMALL_CT2D_MEMBERS}
    _stage(d, "main", "ensemble-mean", kwargs, 1, [0, 1, 2, 3], plan2d(list(spacing), [256, 256]))
    return _top(d, "ct2d-ensemble", ["main"])
