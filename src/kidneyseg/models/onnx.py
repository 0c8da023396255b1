"""ONNX Runtime for the registry's segmentation networks: exported once, run without torch.

Why
---
On a laptop CPU the network is most of a prediction, and importing torch,
MONAI and segmentation_models_pytorch costs seconds before the first voxel is
read.  ONNX Runtime runs the same graph 1.5-3x faster than eager torch on CPU
(the table in docs/prediction.md) and imports in about 0.1 s, so a stage that
has an ONNX export runs without torch being imported at all.

Where the export comes from
---------------------------
* ``<stage>/model.onnx`` in the model folder (written by
  ``kidneyseg models --export-onnx MODEL_DIR``, :func:`export_model_folder`), or
* the user cache (:func:`cache_dir`: ``$KIDNEYSEG_CACHE``, else
  ``$XDG_CACHE_HOME/kidneyseg``, else ``~/.cache/kidneyseg``), where the first
  prediction with a stage writes it (a few seconds, once per weights file).

An export is used only when it was made from the very weights and architecture
of the stage: its metadata hold :func:`stage_digest` (SHA-256 of ``weights.pt``
and of the stage's architecture spec), checked at every load.  A stale or
foreign file is ignored (and, in the cache, replaced).

Tensor conventions (as the registry's): input ``(N, C_in, *spatial)`` float32,
output logits ``(N, C_out, *spatial)`` float32 (log-probabilities for
``ensemble-mean``).  The registry's :class:`~kidneyseg.models.modules.PadToMultiple`
pads inside the torch graph; the exported graph is traced at sizes that need
no padding, and :class:`OnnxNetwork` pads the input at the high end of each
axis to the least common multiple of every ``PadToMultiple`` in the network
and crops the logits back (exactly the torch behaviour for single networks;
for an ensemble whose members need different multiples, the members with the
smaller one see a few more zero rows at the high edge).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kidneyseg.errors import InputError, KidneysegError

log = logging.getLogger(__name__)

#: File name of an export inside a stage folder.
ONNX_FILE = "model.onnx"
#: Metadata key of the digest the export was made from.
DIGEST_KEY = "kidneyseg_stage_digest"
#: ``runtime`` values: ``auto`` (ONNX Runtime where possible, else torch), ``onnx`` (required), ``torch``.
RUNTIMES = ("auto", "onnx", "torch")
#: Environment variable that sets the default runtime (``auto`` when unset).
RUNTIME_ENV = "KIDNEYSEG_RUNTIME"
#: Largest difference of softmax probabilities between torch and the export accepted by the export check.
PARITY_TOLERANCE = 1e-3

_THREADS: int | None = None


def set_threads(n: int | None) -> None:
    """CPU threads of the ONNX Runtime sessions created from now on (``None``: ONNX Runtime's default)."""
    global _THREADS
    _THREADS = None if n is None else int(n)


def default_runtime() -> str:
    """The runtime from ``$KIDNEYSEG_RUNTIME`` (``auto`` when unset); a wrong value lists the valid ones."""
    value = os.environ.get(RUNTIME_ENV, "auto").strip().lower() or "auto"
    return check_runtime(value, what=f"${RUNTIME_ENV}")


def check_runtime(value: str, *, what: str = "runtime") -> str:
    """``value`` if it is one of :data:`RUNTIMES`, else an :class:`InputError` naming the valid values."""
    if value not in RUNTIMES:
        raise InputError(f"unknown {what}", found=value, expected=" | ".join(RUNTIMES),
                         fix="use auto (ONNX Runtime where possible), onnx or torch")
    return value


def onnxruntime_available() -> bool:
    """Whether ``onnxruntime`` can be imported."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def cache_dir() -> Path:
    """Folder of cached exports: ``$KIDNEYSEG_CACHE``, else ``$XDG_CACHE_HOME/kidneyseg``, else ``~/.cache/kidneyseg``."""
    if os.environ.get("KIDNEYSEG_CACHE"):
        return Path(os.environ["KIDNEYSEG_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kidneyseg"


def stage_digest(weights: str | os.PathLike[str], spec: dict[str, Any]) -> str:
    """SHA-256 (hex) of the weights file and of the stage's architecture (arch, arch_kwargs, channels).

    Two stages with the same digest build the same graph with the same weights.
    """
    h = hashlib.sha256()
    with open(weights, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    arch = {k: spec.get(k) for k in ("arch", "arch_kwargs", "in_channels", "out_channels")}
    h.update(json.dumps(arch, sort_keys=True).encode())
    return h.hexdigest()


def exportable(spec: dict[str, Any]) -> bool:
    """Whether a stage's network can run on ONNX Runtime: segmentation networks of the registry (not the
    Faster R-CNN detector, whose box post-processing stays in torch)."""
    from kidneyseg.models.registry import model_info

    try:
        return model_info(str(spec["arch"])).kind == "segmentation"
    except (KidneysegError, KeyError):
        return False


def pad_multiple(module: Any) -> int:
    """Least common multiple of the ``multiple`` of every :class:`PadToMultiple` inside ``module`` (1 if none)."""
    from kidneyseg.models.modules import PadToMultiple

    m = 1
    for sub in module.modules():
        if isinstance(sub, PadToMultiple):
            m = m * int(sub.multiple) // math.gcd(m, int(sub.multiple))
    return m


class OnnxNetwork:
    """A segmentation network on ONNX Runtime, called like the torch module it was exported from.

    ``network(x)`` takes ``(N, C_in, *spatial)`` float32 (a numpy array, or a torch tensor, which gets a
    tensor back) and returns the logits ``(N, C_out, *spatial)``.  The session is created at the first call
    with the threads of :func:`set_threads`.
    """

    #: Engines look for this to run the network on numpy arrays without torch.
    runs_on_numpy = True
    #: As a torch module in eval mode: an export has no training behaviour (dropout, batch statistics).
    training = False

    def __init__(self, path: str | os.PathLike[str], *, multiple: int, spatial_dims: int, digest: str) -> None:
        self.path = Path(path)
        self.multiple = int(multiple)
        self.spatial_dims = int(spatial_dims)
        self.digest = digest
        self._session: Any = None

    def __repr__(self) -> str:
        return f"OnnxNetwork({str(self.path)!r}, multiple={self.multiple})"

    def _get_session(self) -> Any:
        if self._session is None:
            self._session = _session(self.path)
            self._input = self._session.get_inputs()[0].name
        return self._session

    def run(self, x: np.ndarray) -> np.ndarray:
        """Logits of ``x`` ``(N, C_in, *spatial)`` float32 (numpy in, numpy out)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 + self.spatial_dims:
            raise InputError("network input has the wrong number of spatial dimensions", found=tuple(x.shape),
                             expected=f"(N, C) + {self.spatial_dims} spatial axes",
                             fix="give 2D models (N, C, H, W) slices and 3D models (N, C, X, Y, Z) volumes")
        size = x.shape[2:]
        pads = [(-s) % self.multiple for s in size]
        if any(pads):
            x = np.pad(x, [(0, 0), (0, 0)] + [(0, p) for p in pads])
        session = self._get_session()
        y = session.run(None, {self._input: x})[0]
        if any(pads):
            y = y[(slice(None), slice(None), *(slice(0, s) for s in size))]
        return np.ascontiguousarray(y, dtype=np.float32)

    def __call__(self, x: Any) -> Any:
        if isinstance(x, np.ndarray):
            return self.run(x)
        import torch  # a torch tensor: torch is loaded already (MONAI's sliding window calls with tensors)

        y = self.run(x.detach().cpu().numpy())
        return torch.from_numpy(y).to(x.device)

    def eval(self) -> OnnxNetwork:
        """No-op (an export is always in inference mode); for code written for torch modules."""
        return self


def _session(path: str | os.PathLike[str]) -> Any:
    """An ONNX Runtime CPU session on ``path`` with the threads of :func:`set_threads`."""
    from kidneyseg._optional import require

    ort = require("onnxruntime", "running a network on ONNX Runtime")
    so = ort.SessionOptions()
    if _THREADS is not None:
        so.intra_op_num_threads = _THREADS
        so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _trace_size(multiple: int, min_size: int, spatial_dims: int) -> list[int]:
    n = max(int(min_size), 64 if spatial_dims == 2 else 32)
    n = int(math.ceil(n / multiple) * multiple)
    return [n] * spatial_dims


def export_module(module: Any, spec: dict[str, Any], out: str | os.PathLike[str], *, digest: str) -> OnnxNetwork:
    """Export a torch segmentation ``module`` (eval mode) of stage ``spec`` to ``out`` and check it.

    The graph has dynamic batch and spatial axes; the export is checked against torch on an input of
    another size than the traced one (largest softmax difference <= :data:`PARITY_TOLERANCE`), else
    :class:`KidneysegError`.  Written atomically.  Returns the loaded :class:`OnnxNetwork`.
    """
    import torch

    from kidneyseg.io import atomic_path
    from kidneyseg.models.registry import model_info

    info = model_info(str(spec["arch"]))
    dims = int(info.spatial_dims)
    multiple = pad_multiple(module)
    cin = int(spec["in_channels"])
    size = _trace_size(multiple, info.min_size, dims)
    x = torch.zeros((2, cin, *size), dtype=torch.float32)
    names = {0: "batch"} | {2 + i: f"s{i}" for i in range(dims)}
    out_path = Path(out)
    module = module.eval()
    with atomic_path(out_path) as tmp:
        import warnings

        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")  # the tracer's notes on PadToMultiple's size checks (traced unpadded)
            torch.onnx.export(module, (x,), str(tmp), input_names=["x"], output_names=["logits"],
                              dynamic_axes={"x": names, "logits": names}, opset_version=17, dynamo=False,
                              do_constant_folding=True)
        import onnx

        proto = onnx.load(str(tmp))
        meta = {DIGEST_KEY: digest, "kidneyseg_arch": str(spec["arch"]), "kidneyseg_pad_multiple": str(multiple),
                "kidneyseg_spatial_dims": str(dims), "kidneyseg_torch": str(torch.__version__)}
        for k, v in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = k, v
        onnx.save(proto, str(tmp))
        net = OnnxNetwork(tmp, multiple=multiple, spatial_dims=dims, digest=digest)
        check = [s + multiple * (i + 1) for i, s in enumerate(size)]
        gen = torch.Generator().manual_seed(0)
        xc = torch.randn((1, cin, *check), generator=gen)
        with torch.inference_mode():
            ref = torch.softmax(module(xc).float(), dim=1).numpy()
        got = net.run(xc.numpy())
        got = np.exp(got - got.max(axis=1, keepdims=True))
        got /= got.sum(axis=1, keepdims=True)
        diff = float(np.abs(got - ref).max())
        if not diff <= PARITY_TOLERANCE:
            raise KidneysegError("the ONNX export does not reproduce the torch network", path=spec.get("arch"),
                                 found=f"largest probability difference {diff:.2g}",
                                 expected=f"<= {PARITY_TOLERANCE}", fix="run with --runtime torch")
        net._session = None  # the session was opened on the temporary file
    net.path = out_path
    log.info("exported %s to ONNX: %s (probability difference to torch %.1e)", spec["arch"], out_path, diff)
    return net


def _open_export(path: Path, digest: str) -> OnnxNetwork | None:
    """The export at ``path`` if it exists and was made from ``digest``; its session is kept."""
    if not path.is_file():
        return None
    try:
        session = _session(path)
        meta = session.get_modelmeta().custom_metadata_map
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime's load errors (InvalidProtobuf...) derive from Exception
        log.info("ignoring unreadable ONNX export %s: %s", path, exc)
        return None
    if meta.get(DIGEST_KEY) != digest:
        log.info("ignoring ONNX export %s: made from other weights or another architecture", path)
        return None
    net = OnnxNetwork(path, multiple=int(meta.get("kidneyseg_pad_multiple", "1")),
                      spatial_dims=int(meta.get("kidneyseg_spatial_dims", "2")), digest=digest)
    net._session = session
    net._input = session.get_inputs()[0].name
    return net


def find_export(stage_dir: str | os.PathLike[str], digest: str) -> OnnxNetwork | None:
    """The export of a stage: ``<stage_dir>/model.onnx``, else the cached one, if made from ``digest``."""
    for path in (Path(stage_dir) / ONNX_FILE, cache_dir() / "onnx" / f"{digest}.onnx"):
        net = _open_export(path, digest)
        if net is not None:
            return net
    return None


def cache_export(module: Any, spec: dict[str, Any], digest: str) -> OnnxNetwork | None:
    """Export ``module`` into the cache (``None``, with the reason logged, when the cache cannot be written)."""
    out = cache_dir() / "onnx" / f"{digest}.onnx"
    try:
        net = export_module(module, spec, out, digest=digest)
    except OSError as exc:
        log.warning("cannot write the ONNX export to %s (%s): running on torch (set KIDNEYSEG_CACHE to a writable "
                    "folder, or run `kidneyseg models --export-onnx MODEL_DIR`)", out, exc)
        return None
    return _open_export(out, digest) or net


def export_model_folder(model_dir: str | os.PathLike[str], stages: Sequence[str] | None = None) -> list[Path]:
    """Write ``<stage>/model.onnx`` for every exportable stage of a model folder; returns the files written."""
    from kidneyseg.models.folder import WEIGHTS, load_model_folder

    model = load_model_folder(model_dir, runtime="torch")
    written: list[Path] = []
    for name, st in model.stages.items():
        if stages is not None and name not in stages:
            continue
        if not exportable(st.spec):
            log.info("stage %s (%s) stays on torch: not a segmentation network", name, st.arch)
            continue
        digest = stage_digest(st.dir / WEIGHTS, st.spec)
        written.append(export_module(st.module, st.spec, st.dir / ONNX_FILE, digest=digest).path)
    return written
