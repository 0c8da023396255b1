"""Shared test fixtures.

``shared_data`` is the one way tests reach the real third-party data in
``../shared/data`` (or ``$KIDNEYSEG_SHARED_DATA``); where it is absent those
tests are skipped with a message naming the missing folder.  Every other test
uses small data it generates itself.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("KIDNEYSEG_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder with the real data (kits19_slices, chaos_t2, kits23_masks, ...); skips if absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (set KIDNEYSEG_SHARED_DATA to use another)")
    return SHARED_DATA


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded random generator."""
    return np.random.default_rng(1234)


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    os.environ.setdefault("MPLBACKEND", "Agg")
    # ONNX exports made by the tests go to a cache of this run (subprocesses inherit it), not the user's
    if "KIDNEYSEG_CACHE" not in os.environ:
        import tempfile

        os.environ["KIDNEYSEG_CACHE"] = tempfile.mkdtemp(prefix="kidneyseg-test-cache-")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test that reads ../shared (through ``shared_data``, the one way in) carries the ``shared`` marker,
    so ``-m "not shared"`` runs exactly the suite that needs no third-party data."""
    for item in items:
        if "shared_data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.shared)
