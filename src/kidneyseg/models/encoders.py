"""Pretrained encoder weights, from a local file only.

kidneyseg never downloads weights.  A user who wants ImageNet encoders saves
the torchvision (or timm) state dict once on a machine with internet, e.g.::

    python -c "import torch, torchvision; torch.save(torchvision.models.resnet34(weights='IMAGENET1K_V1').state_dict(), 'resnet34.pth')"

and passes ``--encoder-weights resnet34.pth``.  Keys of the classifier head
(``fc``, ``classifier``) are ignored; a 3-channel first convolution is summed
over its input channels for 1-channel models (or repeated and rescaled for
other counts), as segmentation_models_pytorch does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from kidneyseg.errors import InputError, KidneysegError

HUB_NAMES = ("imagenet", "imagenet21k", "ssl", "swsl", "advprop", "noisy-student", "default", "DEFAULT")

_PREFIXES = ("module.", "model.", "encoder.", "backbone.", "body.")


def encoder_of(module: nn.Module, arch: str) -> nn.Module:
    """The sub-module that a torchvision/timm encoder state dict loads into."""
    net = getattr(module, "net", module)
    if arch == "fasterrcnn-resnet50":
        return net.backbone.body
    if arch == "unet-squeezenet":
        return module.encoder
    enc = getattr(net, "encoder", None)
    if enc is None:
        raise KidneysegError(
            f"model '{arch}' has no pretrained encoder to load",
            expected="an encoder model (unet-resnet34, unet-resnet50, unet-vgg16, unet-inceptionv3, unet-squeezenet, "
            "deeplabv3plus-*, linknet-resnet34, fasterrcnn-resnet50)",
            fix="drop --encoder-weights for this model",
        )
    return getattr(enc, "model", enc)  # timm encoders (tu-*) wrap the timm model


def _check_path(weights: Any) -> Path:
    text = str(weights)
    path = Path(os.path.expanduser(text))
    if not path.is_file():
        hint = (
            "kidneyseg never downloads weights; save a torchvision/timm state dict once on a machine with internet, "
            "e.g. torch.save(torchvision.models.resnet34(weights='IMAGENET1K_V1').state_dict(), 'resnet34.pth'), "
            "then pass --encoder-weights resnet34.pth"
        )
        what = "encoder weights must be a local file, not a hub name" if text in HUB_NAMES or not path.suffix else "encoder weights file not found"
        raise InputError(what, path=text, found=text, expected="path of a .pth/.pt state dict", fix=hint)
    return path


def _adapt_first_conv(w: torch.Tensor, target_shape: torch.Size) -> torch.Tensor:
    cin = target_shape[1]
    if w.shape[1] == cin:
        return w
    if cin == 1:
        return w.sum(dim=1, keepdim=True)
    reps = -(-cin // w.shape[1])
    return w.repeat(1, reps, 1, 1)[:, :cin] * (w.shape[1] / cin)


def load_encoder_weights(module: nn.Module, weights: Any, *, arch: str) -> dict[str, int]:
    """Load a local encoder state dict into ``module``'s encoder.

    Parameters
    ----------
    module:
        A model built by :func:`~kidneyseg.models.registry.create_model`.
    weights:
        Path of a state dict file (``torch.save(model.state_dict())``) or an
        already-loaded ``dict`` of tensors.
    arch:
        Registry name of ``module``.

    Returns
    -------
    dict
        ``{"loaded": n, "encoder_tensors": m}``.

    Raises
    ------
    InputError
        Hub name or missing file; a file that matches less than half of the
        encoder's tensors (wrong architecture).
    """
    target = encoder_of(module, arch)
    if isinstance(weights, dict):
        state, path = weights, "<state dict>"
    else:
        p = _check_path(weights)
        state, path = torch.load(p, map_location="cpu", weights_only=True), str(p)
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
    own = target.state_dict()
    matched: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        k = key
        for _ in range(3):
            if k in own:
                break
            for pre in _PREFIXES:
                if k.startswith(pre):
                    k = k[len(pre):]
                    break
        if k not in own or not isinstance(value, torch.Tensor):
            continue
        if value.shape != own[k].shape:
            if value.ndim == 4 and value.shape[0] == own[k].shape[0] and value.shape[2:] == own[k].shape[2:]:
                value = _adapt_first_conv(value, own[k].shape)
            else:
                continue
        matched[k] = value
    n_params = sum(1 for k in own if not k.endswith("num_batches_tracked"))
    n_loaded = sum(1 for k in matched if not k.endswith("num_batches_tracked"))
    if n_loaded < max(1, n_params // 2):
        raise InputError(
            f"encoder weights do not fit the encoder of '{arch}'",
            path=path,
            found=f"{n_loaded} of {n_params} encoder tensors matched",
            expected="a state dict of the same encoder (torchvision/timm naming)",
            fix="save the state dict of the matching torchvision/timm model (e.g. resnet34 for unet-resnet34)",
        )
    target.load_state_dict(matched, strict=False)
    return {"loaded": n_loaded, "encoder_tensors": n_params}
