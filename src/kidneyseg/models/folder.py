"""The model folder: what a trained model leaves behind (docs/CONTRACTS.md).

::

    MODEL_DIR/
      model.json          {"format_version": 1, "pipeline", "task", "modality", "labels",
                           "stages": [...], "training", "versions", "card"}
      <stage>/model.json  {"arch", "arch_kwargs", "in_channels", "out_channels",
                           "channel_to_label", "plan", "stage"}
      <stage>/weights.pt  state_dict only (torch.load(weights_only=True))

Everything needed to rebuild a network is in its stage ``model.json``: the
registry name and constructor arguments.  Files are written atomically
(:func:`kidneyseg.io.atomic_path`: temporary file, then ``os.replace``).
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kidneyseg.errors import InputError
from kidneyseg.io import atomic_path
from kidneyseg.preprocessing.plan import Plan

FORMAT_VERSION = 1
MODEL_JSON = "model.json"
WEIGHTS = "weights.pt"
STAGE_KEYS = ("arch", "arch_kwargs", "in_channels", "out_channels", "channel_to_label", "plan")


def library_versions() -> dict[str, str]:
    """Versions of Python and of the libraries a model depends on."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("kidneyseg", "torch", "torchvision", "monai", "segmentation-models-pytorch", "timm", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def write_json(path: str | os.PathLike[str], obj: dict[str, Any]) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False, default=_json_default)
        f.write("\n")


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def save_stage(stage_dir: str | os.PathLike[str], module: Any, stage_spec: dict[str, Any]) -> Path:
    """Write ``stage_dir/model.json`` and ``stage_dir/weights.pt``.

    Parameters
    ----------
    stage_dir:
        Folder of the stage (created).
    module:
        The network; its ``state_dict()`` is saved (CPU tensors).
    stage_spec:
        Must hold ``arch``, ``arch_kwargs``, ``in_channels``, ``out_channels``,
        ``channel_to_label`` and ``plan``; may hold ``stage`` (free-form stage
        facts: role, crop margin, training summary...).
    """
    import torch

    missing = [k for k in STAGE_KEYS if k not in stage_spec]
    if missing:
        raise InputError(
            "stage spec lacks required keys", path=stage_dir, found=sorted(stage_spec), expected=list(STAGE_KEYS),
            fix="add " + ", ".join(missing),
        )
    d = Path(stage_dir)
    state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
    with atomic_path(d / WEIGHTS) as tmp:
        torch.save(state, tmp)
    spec = dict(stage_spec)
    spec.setdefault("stage", {})
    write_json(d / MODEL_JSON, spec)
    return d


def save_model_folder(model_dir: str | os.PathLike[str], top_spec: dict[str, Any]) -> Path:
    """Write the top-level ``model.json`` (stages must already be saved).

    ``format_version`` and ``versions`` are filled in when absent.  Raises
    :class:`InputError` if a listed stage has no saved sub-folder.
    """
    d = Path(model_dir)
    spec = {"format_version": FORMAT_VERSION, **top_spec}
    spec.setdefault("versions", library_versions())
    for name in spec.get("stages", []):
        if not (d / name / MODEL_JSON).is_file() or not (d / name / WEIGHTS).is_file():
            raise InputError(
                f"stage '{name}' has not been saved", path=d / name, expected=f"{MODEL_JSON} and {WEIGHTS}",
                fix="call save_stage for every stage before save_model_folder",
            )
    write_json(d / MODEL_JSON, spec)
    return d


@dataclass
class LoadedStage:
    """One stage of a loaded model.

    ``module`` is in eval mode on ``device``; ``plan`` is the preprocessing
    plan of this stage; ``channel_to_label[c]`` is the label value that output
    channel ``c`` stands for.
    """

    name: str
    dir: Path
    spec: dict[str, Any]
    module: Any
    plan: Plan
    channel_to_label: list[int]

    @property
    def arch(self) -> str:
        return str(self.spec["arch"])


@dataclass
class LoadedModel:
    """A loaded model folder: ``spec`` (top ``model.json``), ``dir``, ``stages`` by name, in order."""

    dir: Path
    spec: dict[str, Any]
    stages: dict[str, LoadedStage] = field(default_factory=dict)

    @property
    def pipeline(self) -> str:
        return str(self.spec["pipeline"])

    @property
    def labels(self) -> dict[int, str]:
        return {int(k): v for k, v in self.spec.get("labels", {}).items()}


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(
            "not a kidneyseg model folder", path=path.parent, found="no model.json", expected="model.json with the stages",
            fix="point --model at the folder written by `kidneyseg train`",
        )
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise InputError("model.json is not valid JSON", path=path, found=str(exc), fix="re-train or restore the file") from exc


def load_stage(stage_dir: str | os.PathLike[str], *, name: str | None = None, device: str = "cpu",
               runtime: str = "torch") -> LoadedStage:
    """Rebuild one stage from its ``model.json`` and load ``weights.pt`` (``weights_only=True``).

    ``runtime``: ``"torch"`` (the module is the torch network), ``"auto"`` (a segmentation stage on the CPU
    runs on ONNX Runtime, :class:`kidneyseg.models.onnx.OnnxNetwork`, from the stage's ``model.onnx`` or the
    user cache, exported there on first use; torch is then not imported when the export exists; anything
    else, or no ``onnxruntime``, stays on torch) or ``"onnx"`` (as ``auto``, but a stage that cannot run on
    ONNX Runtime is an error).
    """
    from kidneyseg.models import onnx as onnx_rt

    d = Path(stage_dir)
    spec = _read_json(d / MODEL_JSON)
    missing = [k for k in STAGE_KEYS if k not in spec]
    if missing:
        raise InputError("stage model.json lacks keys", path=d / MODEL_JSON, found=sorted(spec), expected=list(STAGE_KEYS),
                         fix="re-train the model with this version of kidneyseg")
    onnx_rt.check_runtime(runtime)
    wpath = d / WEIGHTS
    if not wpath.is_file():
        raise InputError("stage weights are missing", path=wpath, expected=WEIGHTS, fix="re-train or restore the model folder")
    plan = Plan.from_json(spec["plan"], path=d / MODEL_JSON)
    c2l = [int(c) for c in spec["channel_to_label"]]
    digest: str | None = None
    if runtime != "torch":
        usable = str(device) == "cpu" and onnx_rt.exportable(spec) and onnx_rt.onnxruntime_available()
        if not usable:
            if runtime == "onnx":
                why = ("onnxruntime is not installed" if not onnx_rt.onnxruntime_available() else
                       f"device {device}" if str(device) != "cpu" else f"{spec['arch']} is not a segmentation network")
                raise InputError("this stage cannot run on ONNX Runtime", path=d, found=why,
                                 expected="a segmentation stage on the CPU with onnxruntime installed",
                                 fix="use --runtime auto or torch (pip install onnxruntime for ONNX)")
        else:
            digest = onnx_rt.stage_digest(wpath, spec)
            net = onnx_rt.find_export(d, digest)
            if net is not None:
                return LoadedStage(name=name or d.name, dir=d, spec=spec, module=net, plan=plan, channel_to_label=c2l)
    stage = _load_torch_stage(d, spec, wpath, name=name, device=device, plan=plan, c2l=c2l)
    if digest is not None:
        net = onnx_rt.cache_export(stage.module, spec, digest)
        if net is not None:
            stage.module = net
        elif runtime == "onnx":
            raise InputError("this stage cannot run on ONNX Runtime", path=d, found="its export could not be written",
                             fix="set KIDNEYSEG_CACHE to a writable folder or run `kidneyseg models --export-onnx MODEL_DIR`")
    return stage


def _load_torch_stage(d: Path, spec: dict[str, Any], wpath: Path, *, name: str | None, device: str, plan: Plan,
                      c2l: list[int]) -> LoadedStage:
    """The stage with its torch network built from the registry and ``weights.pt`` loaded."""
    import torch

    from kidneyseg.models.registry import create_model

    module = create_model(
        spec["arch"], in_channels=int(spec["in_channels"]), out_channels=int(spec["out_channels"]), **dict(spec["arch_kwargs"])
    )
    state = torch.load(wpath, map_location=device, weights_only=True)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InputError(
            "weights do not fit the architecture in model.json", path=wpath, found=str(exc).splitlines()[0],
            expected=f"a state dict of {spec['arch']}", fix="keep weights.pt and model.json of the same training run together",
        ) from exc
    module.to(device).eval()
    return LoadedStage(name=name or d.name, dir=d, spec=spec, module=module, plan=plan, channel_to_label=c2l)


def load_model_folder(model_dir: str | os.PathLike[str], *, device: str = "cpu", runtime: str = "torch") -> LoadedModel:
    """Load ``model_dir``: the top ``model.json`` and every stage listed in it, in order (``runtime``: see
    :func:`load_stage`)."""
    d = Path(model_dir)
    spec = _read_json(d / MODEL_JSON)
    version = spec.get("format_version")
    if version != FORMAT_VERSION:
        raise InputError("unsupported model folder format", path=d / MODEL_JSON, found=version, expected=FORMAT_VERSION,
                         fix="re-train the model with this version of kidneyseg")
    stages = spec.get("stages")
    if not isinstance(stages, list) or not stages:
        raise InputError("model.json lists no stages", path=d / MODEL_JSON, found=stages, expected='e.g. ["main"]',
                         fix="re-train the model")
    model = LoadedModel(dir=d, spec=spec)
    for name in stages:
        model.stages[name] = load_stage(d / name, name=name, device=device, runtime=runtime)
    return model
