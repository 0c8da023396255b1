"""Data-parallel training under torchrun: 2 CPU processes (gloo) train the model 1 process trains.

Tolerance: after training, every weight of the 2-process model is within ``WEIGHT_ATOL`` = 1e-6 of
the 1-process model's.  DDP sums the two half-batch gradients where one process sums the whole batch,
so they differ by rounding only (measured: at most 3e-8 after 40 Adam steps); 1e-6 is a thousandth
of one Adam step at lr 1e-3, while sharing the batch wrongly (no gradient averaging, another sample
order, each process augmenting differently) moves weights by about one step, ~1e-3.  One exception:
the bias of a convolution followed by instance normalisation has a zero gradient in exact arithmetic
(the normalisation subtracts it), so Adam, which divides by the gradient's own size, moves it by
about ``lr`` on rounding noise in *any* run; those tensors (:func:`_null_gradient`) are only held to
Adam's bound (lr per step).  They do not change the network's output.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from kidneyseg.errors import InputError  # noqa: E402
from kidneyseg.training.config import TrainConfig  # noqa: E402
from kidneyseg.training.distributed import DistContext  # noqa: E402
from kidneyseg.training.run import train_pipeline  # noqa: E402

TINY = {"main": {"channels": [4, 8], "strides": [2], "num_res_units": 0}}
WEIGHT_ATOL = 1e-6
LR = 1e-3


def _cfg(epochs: int) -> TrainConfig:
    # 2 training cases x 4 patches = 8 samples per epoch: 2 global batches of 4 (2 per process)
    return TrainConfig(epochs=epochs, batch_size=4, samples_per_case=4, folds=2, seed=7, lr=LR, progress=False,
                       threads=1, patch_size=[16, 16, 16], stage_arch_kwargs=TINY)


@pytest.fixture(scope="module")
def mr_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kidneyseg.data.phantoms import write_phantom_set

    root = tmp_path_factory.mktemp("mr")
    write_phantom_set(root, "mr", 4, size=(32, 32, 8), seed=0, progress=False)
    return root


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _torchrun(mr_set: Path, out: Path, cfg: TrainConfig, *extra: str) -> list[str]:
    cfg_file = out.parent / f"{out.name}.json"
    cfg_file.write_text(json.dumps(cfg.to_dict()))
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
            "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
            "-m", "kidneyseg", "train", "--pipeline", "unet3d", "--data", str(mr_set), "--format", "chaos-mr",
            "-o", str(out), "--config", str(cfg_file), "--no-progress", *extra]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    return dict(env, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")  # gloo on CPU, as in CI


def _run(cmd: list[str], timeout: float = 150) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every process below it (torchrun starts each worker in a session of its own)."""
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            todo += [int(c) for c in task.read_text().split()]
    for p in tree:
        with contextlib.suppress(ProcessLookupError):  # ended meanwhile
            os.kill(p, signal.SIGKILL)


def _null_gradient(cfg: TrainConfig) -> set[str]:
    """Names of the bias tensors of convolutions that instance normalisation follows (see the module doc)."""
    from kidneyseg.models.registry import create_model

    net = create_model("unet3d", in_channels=1, out_channels=5, **cfg.stage_arch_kwargs["main"])
    names = set()
    for name, m in net.named_modules():
        adn = getattr(m, "adn", None)
        conv = getattr(m, "conv", None)
        if adn is not None and conv is not None and conv.bias is not None \
                and isinstance(getattr(adn, "N", None), torch.nn.InstanceNorm3d):
            names.add(f"{name}.conv.bias")
    return names


def _log(d: Path) -> list[dict[str, str]]:
    with open(d / "main" / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def _assert_same_training(one: Path, two: Path, cfg: TrainConfig) -> None:
    wa = torch.load(one / "main" / "weights.pt", weights_only=True)
    wb = torch.load(two / "main" / "weights.pt", weights_only=True)
    assert wa.keys() == wb.keys()
    null = _null_gradient(cfg)
    assert null and null <= set(wa)  # the exception names real tensors
    steps = cfg.epochs * 2
    for k in wa:
        diff = float((wa[k].double() - wb[k].double()).abs().max()) if wa[k].numel() else 0.0
        bound = 1.01 * LR * steps if k in null else WEIGHT_ATOL
        assert diff <= bound, f"{k}: max |w1 - w2| = {diff:.3g} > {bound:.3g}"
    la, lb = _log(one), _log(two)
    assert [r["epoch"] for r in la] == [r["epoch"] for r in lb] == [str(e) for e in range(1, cfg.epochs + 1)]
    for ra, rb in zip(la, lb):
        assert float(ra["train_loss"]) == pytest.approx(float(rb["train_loss"]), rel=1e-6)
        for key in (k for k in ra if k.startswith("dice_")):  # a few voxels of another argmax at most
            assert float(ra[key]) == pytest.approx(float(rb[key]), abs=1e-3), key


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_two_processes_train_the_one_process_model(mr_set: Path, tmp_path: Path) -> None:
    cfg = _cfg(epochs=1)
    one = train_pipeline("unet3d", mr_set, "chaos-mr", tmp_path / "one", cfg, dist=DistContext())
    two = tmp_path / "two"
    done = _run(_torchrun(mr_set, two, cfg))
    assert done.stdout.count(str(two)) == 1  # rank 0 alone prints the folder
    _assert_same_training(one, two, cfg)
    stage = json.loads((two / "main" / "model.json").read_text())["stage"]["training"]
    assert stage["distributed"] == {"world_size": 2, "backend": "gloo", "device": "cpu"}
    assert (two / "main" / "curves.png").is_file() and not (two / "main" / "weights.pt.tmp").exists()


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds torchrun's workers in /proc (Linux)")
def test_killed_two_process_run_resumes(mr_set: Path, tmp_path: Path) -> None:
    cfg = _cfg(epochs=10)
    out = tmp_path / "two"
    proc = subprocess.Popen(_torchrun(mr_set, out, cfg), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    last = out / "checkpoints" / "main" / "last.pt"
    deadline = time.time() + 150
    try:
        while not last.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        if proc.poll() is not None:
            pytest.fail("the 2-process run ended before it could be killed")
    finally:
        if proc.poll() is None:
            _kill_tree(proc.pid)  # torchrun and both workers, as a crashed node
        proc.wait(timeout=30)
    assert not (out / "model.json").exists()
    done = _run(_torchrun(mr_set, out, cfg, "--resume"))
    resumed = [ln for ln in done.stderr.splitlines() if "resuming after epoch" in ln]
    assert len(resumed) == 1, done.stderr[-2000:]  # rank 0 alone logs it
    after = int(resumed[0].split("resuming after epoch")[1].split()[0])
    assert 1 <= after < cfg.epochs
    one = train_pipeline("unet3d", mr_set, "chaos-mr", tmp_path / "one", cfg, dist=DistContext())
    _assert_same_training(one, out, cfg)


def test_batch_shared_as_one_process_takes_it() -> None:
    """Global step b of 2 or 4 processes covers the positions of step b of 1 process (DistributedSampler)."""
    for n, batch, world in ((8, 4, 2), (6, 4, 2), (12, 8, 4), (7, 2, 1)):
        steps = -(-n // batch)
        local = DistContext(world_size=world).local_batch_size(batch)
        shards = [DistContext(rank=r, world_size=world).shard(n) for r in range(world)]
        for b in range(steps):
            got = sorted(p for s in shards for p in s[b * local:(b + 1) * local])
            assert got == list(range(b * batch, min(n, (b + 1) * batch))), (n, batch, world, b)


def test_batch_not_shared_evenly_is_refused() -> None:
    with pytest.raises(InputError) as err:
        DistContext(rank=0, world_size=3).local_batch_size(4)
    assert str(err.value) == (
        "the batch size is not a multiple of the number of training processes; found batch_size 4, 3 processes; "
        "expected a multiple of 3. Fix: pass --batch-size 3 (it is the global batch, shared by the processes) "
        "or change --nproc-per-node")
