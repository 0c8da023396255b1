"""Ensembles of 2D segmentation networks.

* :class:`MeanEnsemble` (``ensemble-mean``, CT ensemble transfer-learning
  method): output ``log(mean_m softmax(z_m))``, so ``softmax`` of the output
  is the mean of the member probabilities.
* :class:`ConcatFusionEnsemble` (``ensemble-concat``, ultrasound "triple
  concatenated" model): member logits concatenated along channels
  ``(N, M*C, H, W)`` and fused by a learned ``k x k`` convolution to
  ``(N, C, H, W)`` logits.

Both keep their members in ``self.members`` (an ``nn.ModuleList`` built from
``[{"arch": NAME, "arch_kwargs": {...}}, ...]`` through the registry) and
expose :meth:`member_logits` so the trainer can train members with their own
losses.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from kidneyseg.errors import KidneysegError
from kidneyseg.models.modules import check_spatial_dims


def _build_members(
    members: list[dict[str, Any]], in_channels: int, out_channels: int, encoder_weights: Any
) -> nn.ModuleList:
    from kidneyseg.models.registry import create_model, model_info

    if not isinstance(members, (list, tuple)) or not members:
        raise KidneysegError(
            "an ensemble needs a non-empty list of members",
            found=members,
            expected='[{"arch": NAME, "arch_kwargs": {...}}, ...]',
            fix="list the member architectures in arch_kwargs['members']",
        )
    if encoder_weights is None or isinstance(encoder_weights, (str, bytes)) or hasattr(encoder_weights, "__fspath__"):
        per_member = [encoder_weights] * len(members) if encoder_weights is None else None
        if per_member is None:
            raise KidneysegError(
                "an ensemble takes one encoder-weights file per member",
                found=str(encoder_weights),
                expected=f"a list of {len(members)} paths (or None entries)",
                fix="give --encoder-weights once per member, in member order (use 'none' to skip one)",
            )
    else:
        per_member = list(encoder_weights)
        if len(per_member) != len(members):
            raise KidneysegError(
                "wrong number of encoder-weights files for the ensemble",
                found=len(per_member),
                expected=len(members),
                fix="give one path per member, in member order (use 'none' to skip one)",
            )
    mods = []
    for spec, weights in zip(members, per_member):
        arch = spec.get("arch") if isinstance(spec, dict) else None
        info = model_info(str(arch))
        if info.spatial_dims != 2 or info.kind != "segmentation" or str(arch).startswith("ensemble-"):
            raise KidneysegError(
                "ensemble members must be 2D segmentation models",
                found=arch,
                expected="a 2D segmentation registry name",
                fix="pick members such as unet-resnet50 or deeplabv3plus-resnet18",
            )
        mods.append(
            create_model(
                str(arch), in_channels=in_channels, out_channels=out_channels,
                encoder_weights=weights, **dict(spec.get("arch_kwargs", {}))
            )
        )
    return nn.ModuleList(mods)


class MeanEnsemble(nn.Module):
    """Average of member probabilities; returns ``log`` of the mean (``(N, C, H, W)``)."""

    def __init__(self, members: list[dict[str, Any]], *, in_channels: int = 1, out_channels: int = 2, encoder_weights: Any = None) -> None:
        super().__init__()
        self.members = _build_members(members, in_channels, out_channels, encoder_weights)

    def member_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of each member, each ``(N, C, H, W)``."""
        check_spatial_dims(x, 2)
        return [m(x) for m in self.members]

    def combine(self, logits: list[torch.Tensor]) -> torch.Tensor:
        """``log(mean softmax)`` of member logits."""
        probs = torch.stack([torch.softmax(z, dim=1) for z in logits]).mean(dim=0)
        return torch.log(probs.clamp_min(1e-8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.combine(self.member_logits(x))


class ConcatFusionEnsemble(nn.Module):
    """Member logits concatenated and fused by a learned convolution.

    Parameters
    ----------
    members:
        Member specs, see module docstring.
    fusion_kernel:
        Kernel size of the fusion convolution (1 or 3; odd).
    fusion_init:
        ``"mean"`` (default): the fusion starts as the mean of the member logits (weight ``1/M`` from
        channel ``c`` of every member to output channel ``c`` at the kernel's centre, 0 elsewhere, bias 0),
        so the untrained ensemble already predicts what its members agree on and the fusion phase refines
        that; ``"random"``: PyTorch's default initialisation (a few fusion epochs at the low end of a
        decaying learning rate do not train it out of a random start: held-out Dice of the shipped
        ultrasound recipe about 0.19 against 0.9 for its best member, docs/experiments.md 2026-12-06).
    """

    def __init__(
        self,
        members: list[dict[str, Any]],
        *,
        in_channels: int = 1,
        out_channels: int = 2,
        fusion_kernel: int = 3,
        encoder_weights: Any = None,
        fusion_init: str = "mean",
    ) -> None:
        super().__init__()
        if int(fusion_kernel) % 2 != 1:
            raise KidneysegError(
                "fusion_kernel must be odd", found=fusion_kernel, expected="1 or 3", fix="set arch_kwargs.fusion_kernel to 1 or 3"
            )
        if fusion_init not in ("mean", "random"):
            raise KidneysegError("unknown fusion_init", found=fusion_init, expected="'mean' or 'random'",
                                 fix="set arch_kwargs.fusion_init to 'mean' or 'random'")
        self.members = _build_members(members, in_channels, out_channels, encoder_weights)
        k = int(fusion_kernel)
        self.fusion = nn.Conv2d(len(self.members) * out_channels, out_channels, k, padding=k // 2)
        if fusion_init == "mean":
            m = len(self.members)
            with torch.no_grad():
                self.fusion.weight.zero_()
                self.fusion.bias.zero_()  # type: ignore[union-attr]  # nn.Conv2d built with a bias
                for j in range(m):  # input channel j * C + c is member j's logit of class c
                    for c in range(out_channels):
                        self.fusion.weight[c, j * out_channels + c, k // 2, k // 2] = 1.0 / m

    def member_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of each member, each ``(N, C, H, W)``."""
        check_spatial_dims(x, 2)
        return [m(x) for m in self.members]

    def combine(self, logits: list[torch.Tensor]) -> torch.Tensor:
        """Fused logits ``(N, C, H, W)`` from member logits."""
        return self.fusion(torch.cat(logits, dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.combine(self.member_logits(x))
