"""`kidneyseg models --time`: a measured ms-per-forward column (no timing thresholds: only that it is a number > 0)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from kidneyseg.cli import main  # noqa: E402


def _rows(out: str) -> tuple[list[str], dict[str, list[str]]]:
    lines = [line for line in out.splitlines() if line.strip()]
    header = lines[0].split()
    return header, {line.split()[0]: line.split() for line in lines[1:] if not line.startswith("ms/forward")}


def test_time_prints_a_positive_ms_per_forward_column_and_keeps_the_threads(capsys) -> None:
    before = torch.get_num_threads()
    assert main(["models", "unet-squeezenet", "unet2d", "--time", "--threads", "1", "--repeats", "2",
                 "--input-size", "32", "32"]) == 0
    out = capsys.readouterr().out
    header, rows = _rows(out)
    assert header[-3:-1] == ["GFLOPs", "ms/forward"]
    for name in ("unet-squeezenet", "unet2d"):
        row = rows[name]
        assert row[2] == "32x32"  # the size asked for, used for the FLOPs and the timing
        assert float(row[6]) > 0 and float(row[5]) >= 0  # ms/forward, GFLOPs
    assert "median of 2 forward passes after 1 warm-up, batch 1, CPU, 1 torch thread(s)" in out
    assert torch.get_num_threads() == before  # --threads is for the timing only


def test_no_time_column_by_default_and_timing_options_need_time(capsys) -> None:
    assert main(["models", "unet2d", "--no-flops"]) == 0
    out = capsys.readouterr().out
    assert "ms/forward" not in out and "256x256" in out
    assert main(["models", "unet2d", "--threads", "2"]) == 2
    assert "options of --time" in capsys.readouterr().err


def test_forward_ms_is_a_median_of_measured_passes() -> None:
    from kidneyseg.errors import KidneysegError
    from kidneyseg.models.registry import forward_ms

    assert forward_ms("unet2d", input_size=(16, 16), repeats=1, warmup=0) > 0
    with pytest.raises(KidneysegError):
        forward_ms("unet2d", input_size=(16, 16), repeats=0)
