"""Data-parallel training with ``torch.distributed``: one model trained by several processes.

``torchrun --nproc-per-node N -m kidneyseg train ...`` starts ``N`` processes (and ``--nnodes M``
as many on each of ``M`` machines); each reads the rendezvous ``torchrun`` sets in its
environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) and
:func:`from_environment` joins the process group: ``gloo`` on CPU, ``nccl`` when CUDA is
available (each process then uses GPU ``LOCAL_RANK``).  Without those variables (a plain
``kidneyseg train``) the context is the single process, ``world_size == 1``, and nothing changes.

How one epoch is shared (:class:`~kidneyseg.training.trainer.StageTrainer`):

* ``--batch-size`` is the **global** batch; each process takes ``batch_size / world_size``
  samples of it (``batch_size`` must be a multiple of the process count);
* the epoch's seeded sample order is cut with :class:`torch.utils.data.DistributedSampler`
  (``shuffle=False``: the order is already shuffled, the same on every process), so process
  ``r`` takes positions ``r, r + W, r + 2W, ...`` and global step ``b`` covers the same
  positions ``b * B .. (b + 1) * B - 1`` as the one-process run;
* each sample is augmented from its own seed (seed, epoch, position), so a sample is
  augmented alike whichever process takes it;
* :class:`~torch.nn.parallel.DistributedDataParallel` averages the gradients; losses that are a
  mean over samples (``dice-ce``, ``dice``, ``bce-dice``) then give the one-process gradient up to
  floating-point summation order;
* validation is shared the same way and the per-label tp/fp/fn counts are summed
  (:meth:`DistContext.sum_counts`), so every process computes the same Dice;
* only rank 0 (:attr:`DistContext.is_main`) writes: checkpoints, ``log.csv``, ``curves.png``, the
  model folder, the progress bar.  Every process reads ``last.pt`` on ``--resume``, so ``-o``
  must be on a file system all nodes see.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kidneyseg.errors import InputError

log = logging.getLogger(__name__)

#: Environment variables ``torchrun`` sets in every worker.
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")

#: How long a collective may wait for the slowest process (a rank validating a large 3D case).
DEFAULT_TIMEOUT_MIN = 60


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a data-parallel run.

    Attributes
    ----------
    rank, world_size, local_rank:
        Global rank ``0..world_size-1``, number of processes, rank on this machine.
    backend:
        ``"gloo"`` or ``"nccl"`` when a process group is joined, else ``None``.
    device:
        Torch device of this process (``"cpu"`` or ``"cuda:<local_rank>"``).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: str = "cpu"

    @property
    def enabled(self) -> bool:
        """Several processes train together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """The process that writes files and logs (rank 0)."""
        return self.rank == 0

    def describe(self) -> dict[str, Any]:
        """Facts saved in the stage's training summary."""
        return {"world_size": self.world_size, "backend": self.backend, "device": self.device.split(":")[0]}

    def barrier(self) -> None:
        """Wait for every process (no-op for one process)."""
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def local_batch_size(self, batch_size: int) -> int:
        """Samples per process of a global batch of ``batch_size``.

        Raises :class:`InputError` when ``batch_size`` is not a multiple of :attr:`world_size`.
        """
        if batch_size % self.world_size:
            raise InputError("the batch size is not a multiple of the number of training processes",
                             found=f"batch_size {batch_size}, {self.world_size} processes",
                             expected=f"a multiple of {self.world_size}",
                             fix=f"pass --batch-size {self.world_size * max(1, batch_size // self.world_size)} "
                                 "(it is the global batch, shared by the processes) or change --nproc-per-node")
        return batch_size // self.world_size

    def shard(self, n: int) -> list[int]:
        """Positions ``0..n-1`` this process takes (:class:`torch.utils.data.DistributedSampler`, in order).

        With ``n`` not a multiple of :attr:`world_size` the sampler repeats the first positions so
        every process takes as many (PyTorch's convention); a one-process run takes them all once.
        """
        if not self.enabled:
            return list(range(n))
        from torch.utils.data import DistributedSampler

        positions: Any = range(n)  # a sized sequence is all the sampler reads of its data set
        sampler: DistributedSampler[int] = DistributedSampler(positions, num_replicas=self.world_size, rank=self.rank,
                                                              shuffle=False)
        return [int(i) for i in sampler]

    def sum_counts(self, counts: Mapping[str, Sequence[int]]) -> dict[str, list[int]]:
        """Sum integer count vectors (tp, fp, fn per label) over the processes, key by key.

        Keys missing on some process count as zeros there; the result (keys in rank order of first
        appearance) is the same on every process.
        """
        mine = {k: [int(x) for x in v] for k, v in counts.items()}
        if not self.enabled:
            return mine
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, mine)
        total: dict[str, list[int]] = {}
        for part in gathered:
            for k, v in part.items():
                acc = total.setdefault(k, [0] * len(v))
                total[k] = [a + b for a, b in zip(acc, v)]
        return total

    def mean_over_processes(self, values: Sequence[float]) -> list[float]:
        """Element-wise mean of ``values`` (the same length on every process) over the processes."""
        if not self.enabled:
            return [float(v) for v in values]
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, [float(v) for v in values])
        return [float(sum(col) / self.world_size) for col in zip(*gathered)]

    def wrap(self, module: Any, *, find_unused: bool = False) -> Any:
        """``module`` in :class:`~torch.nn.parallel.DistributedDataParallel` (gradients averaged over the
        processes), or ``module`` itself for one process.  Only parameters that require gradients at
        this call are synchronised: wrap again when that set changes (an ensemble's fusion phase).
        ``find_unused``: some parameters may get no gradient in a step (a concat ensemble's fusion while
        its members train)."""
        if not self.enabled:
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [int(self.device.split(":")[1])] if self.device.startswith("cuda") else None
        return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused)


def _env_int(name: str, env: Mapping[str, str]) -> int:
    raw = env.get(name, "")
    try:
        return int(raw)
    except ValueError:
        raise InputError(f"environment variable {name} is not an integer", found=repr(raw),
                         expected="what torchrun sets (0, 1, ...)",
                         fix="start the processes with torchrun (python -m torch.distributed.run)") from None


def from_environment(env: Mapping[str, str] | None = None, *, timeout_min: float = DEFAULT_TIMEOUT_MIN,
                     ) -> DistContext:
    """This process's :class:`DistContext`, joining the process group when ``torchrun`` started several.

    ``env`` defaults to ``os.environ``.  ``WORLD_SIZE`` unset or 1: the single process (no group).
    Otherwise the group is initialised once (``env://`` rendezvous: ``MASTER_ADDR``/``MASTER_PORT``)
    with ``nccl`` when CUDA is available, else ``gloo``; ``timeout_min`` bounds every collective.

    Raises :class:`InputError` when the variables are inconsistent (a rank outside the world).
    """
    env = os.environ if env is None else env
    if "WORLD_SIZE" not in env or _env_int("WORLD_SIZE", env) <= 1:
        return DistContext()
    world, rank, local = (_env_int(n, env) for n in ("WORLD_SIZE", "RANK", "LOCAL_RANK"))
    if not 0 <= rank < world or local < 0:
        raise InputError("torchrun's environment is inconsistent", found=f"RANK={rank}, WORLD_SIZE={world}, "
                         f"LOCAL_RANK={local}", expected="0 <= RANK < WORLD_SIZE",
                         fix="start the processes with torchrun, not by setting these variables by hand")
    import torch
    import torch.distributed as dist

    cuda = torch.cuda.is_available()
    backend = "nccl" if cuda else "gloo"
    device = f"cuda:{local}" if cuda else "cpu"
    if cuda:
        if local >= torch.cuda.device_count():
            raise InputError("more processes on this machine than GPUs", found=f"LOCAL_RANK={local}",
                             expected=f"< {torch.cuda.device_count()} GPUs",
                             fix="pass --nproc-per-node no larger than the number of GPUs")
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=timeout_min))
    ctx = DistContext(rank=rank, world_size=world, local_rank=local, backend=backend, device=device)
    log.debug("process %d of %d (%s on %s)", rank, world, backend, device)
    return ctx


def shutdown(ctx: DistContext) -> None:
    """Leave the process group :func:`from_environment` joined (no-op for one process)."""
    if ctx.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
