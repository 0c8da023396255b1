"""A tiny 3D U-Net trained for a few seconds on the test phantom, saved as a real model folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kidneyseg.case import Case


def train_tiny_model(folder: Path, case: Case, label: np.ndarray, *, steps: int = 25, seed: int = 0) -> Path:
    """Fit ``unet3d`` (channels 8/16) to one phantom with its plan and save ``folder`` (model.json, main/)."""
    import torch

    from kidneyseg.models.folder import save_model_folder, save_stage
    from kidneyseg.models.registry import create_model
    from kidneyseg.preprocessing.plan import apply_plan

    torch.manual_seed(seed)
    plan = {"modality": "ct", "spatial_dims": 3, "orientation": "RAS", "target_spacing": [3.0, 3.0, 5.0],
            "patch_size": [32, 28, 20], "intensity": {"kind": "window", "low": -160, "high": 240},
            "denoise": None, "labels": {"0": "background", "1": "kidney", "2": "tumor", "3": "cyst"}}
    pre = apply_plan(case.copy(label=label), plan)
    kwargs = {"channels": [8, 16], "strides": [2], "num_res_units": 0}
    net = create_model("unet3d", in_channels=1, out_channels=4, **kwargs)
    x = torch.from_numpy(np.asarray(pre.image, np.float32))[None, None]
    y = torch.from_numpy(np.asarray(pre.label, np.int64))[None]
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    weight = torch.tensor([0.2, 1.0, 2.0, 2.0])
    net.train()
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x), y, weight=weight)
        loss.backward()
        opt.step()
    net.eval()
    save_stage(folder / "main", net, {"arch": "unet3d", "arch_kwargs": kwargs, "in_channels": 1, "out_channels": 4,
                                      "channel_to_label": [0, 1, 2, 3], "plan": plan})
    save_model_folder(folder, {"pipeline": "unet3d", "task": "kits23", "modality": "ct",
                               "labels": plan["labels"], "stages": ["main"]})
    return folder


_CACHE: dict[str, Path] = {}


def shared_tiny_model(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    """One tiny model per test session (training costs a few seconds), in pytest's temporary folder."""
    if "model" not in _CACHE:
        from phantom_case import phantom

        case, lab = phantom()
        _CACHE["model"] = train_tiny_model(tmp_path_factory.mktemp("tiny_model"), case, lab)
    return _CACHE["model"]
