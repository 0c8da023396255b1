"""Fixtures of the I/O tests (the factories live in ``io_factories.py``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from io_factories import write_dicom_series


@pytest.fixture
def dicom_series() -> Callable[..., list[Path]]:
    """The :func:`write_dicom_series` factory."""
    return write_dicom_series


@pytest.fixture
def oblique_affine() -> np.ndarray:
    """A non-RAS, anisotropic, slightly rotated voxel-to-RAS affine (axes roughly L, I, P)."""
    c, s = np.cos(0.2), np.sin(0.2)
    rot = np.array([[-1.0, 0, 0], [0, c, -s], [0, s, c]]) @ np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([0.7, 2.5, 1.3])
    aff[:3, 3] = [12.25, -30.5, 101.125]
    return aff
