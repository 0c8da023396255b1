"""Phantoms: deterministic, anatomically sided, plausible intensities, every layout reads back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kidneyseg.data.adapters import load_dataset
from kidneyseg.data.phantoms import ct_phantom, mr_phantom, us_phantom, write_phantom_set
from kidneyseg.errors import RegistryError

SMALL = (72, 72, 40)


def test_ct_phantom_deterministic_sided_and_plausible() -> None:
    a = ct_phantom(SMALL, seed=3)
    b = ct_phantom(SMALL, seed=3)
    np.testing.assert_array_equal(a.image, b.image)
    assert not np.array_equal(a.image, ct_phantom(SMALL, seed=4).image)
    assert set(np.unique(a.label)) == {0, 1, 2, 3}
    # NIfTI world x (RAS+) grows towards the patient's right: the right kidney and
    # the liver must lie at positive world x, whatever the array order.
    wx = a.affine[0, 0] * np.arange(SMALL[0]) + a.affine[0, 3]
    kid = a.label > 0
    assert kid[wx > 0].sum() > 0 and kid[wx < 0].sum() > 0
    for side, (cx, _, _) in a.info["kidney_centres_mm"]:
        # side -1 = right kidney (array coordinate cx grows towards the patient's left)
        assert np.sign(cx) == side
        i = int(round(cx / a.spacing[0] + (SMALL[0] - 1) / 2))
        assert np.sign(wx[i]) == -side
    hu = a.image.astype(float)
    assert -1030 < np.median(hu[a.label == 0][:1000]) < -900  # the corner is air
    kidney = hu[a.label == 1]
    assert 150 < np.percentile(kidney, 90) < 220  # enhancing cortex ~175 HU
    assert 80 < np.median(kidney) < 200  # cortex and medulla (~105 HU)
    assert 30 < np.median(hu[a.label == 2]) < 130  # tumour
    from scipy import ndimage

    cyst_core = np.unravel_index(np.argmax(ndimage.distance_transform_edt(a.label == 3)), a.label.shape)
    assert hu[cyst_core] < 30  # cyst ~8 HU (its rim is blurred by partial volume at 5.5 mm voxels)
    assert np.allclose(np.abs(np.diag(a.affine)[:3]), a.spacing)
    import nibabel as nib

    assert nib.aff2axcodes(a.affine) == ("L", "A", "S")


def test_mr_phantom_chaos_labels_sided() -> None:
    m = mr_phantom((64, 64, 16), seed=1)
    assert set(np.unique(m.label)) >= {0, 1, 2, 3, 4}
    wx = m.affine[0, 0] * np.arange(64) + m.affine[0, 3]  # world x, + = patient right
    assert wx[np.nonzero(m.label == 2)[0]].mean() > 0 > wx[np.nonzero(m.label == 3)[0]].mean()
    assert wx[np.nonzero(m.label == 1)[0]].mean() > 0  # liver on the patient's right
    assert wx[np.nonzero(m.label == 4)[0]].mean() < 0  # spleen on the patient's left
    assert m.image.min() >= 0  # magnitude image


def test_us_phantom_fan_and_label() -> None:
    u = us_phantom((120, 160), seed=2)
    assert u.image.dtype == np.uint8 and u.image.shape == (120, 160)
    assert u.image[0, 0] == 0 and u.image[-1, 0] == 0  # outside the fan
    assert u.label.sum() > 100 and set(np.unique(u.regions)) <= {0, 1, 2, 3}
    assert u.image[u.label == 1].std() > 5  # speckle


@pytest.mark.parametrize("modality,layout,task", [
    ("ct", "kits23", "kits23"), ("ct", "nnunet", "kits23"), ("ct", "slices", "kits19"), ("ct", "folder", "kits23"),
    ("mr", "chaos-mr", "chaos-mr"), ("mr", "nnunet", "chaos-mr"),
    ("us", "openkidney-us", "openkidney-us"), ("us", "folder", "openkidney-us"),
])
def test_layouts_read_back(tmp_path: Path, modality: str, layout: str, task: str) -> None:
    size = {"ct": [56, 56, 32], "mr": [48, 48, 12], "us": [96, 128]}[modality]
    write_phantom_set(tmp_path, modality, 2, size=size, seed=0, layout=layout, progress=False)
    ds = load_dataset(tmp_path, layout)
    assert ds.task == task and not ds.problems
    case = ds.cases[0].load()
    assert case.image is not None and case.label is not None and case.label.max() >= 1


def test_bad_layout() -> None:
    with pytest.raises(RegistryError, match="openkidney-us"):
        write_phantom_set("unused", "us", 1, layout="kits23")


@pytest.mark.shared
def test_real_shapes(shared_data: Path) -> None:
    p = ct_phantom(SMALL, seed=0, shapes_root=shared_data)
    assert p.info["kidney_shapes"] == "kits23 masks" and set(np.unique(p.label)) == {0, 1, 2, 3}
    u = us_phantom((96, 128), seed=0, shapes_root=shared_data)
    assert u.info["kidney_shape"].startswith("openkidney-us") and u.label.any()
