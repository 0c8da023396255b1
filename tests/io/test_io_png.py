"""2D images: spacing sources, colour policy, label PNG writing."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from PIL import Image

from kidneyseg import io
from kidneyseg.errors import InputError


def _grey(tmp_path, name="img.png", shape=(20, 30), seed=0):
    arr = np.random.default_rng(seed).integers(0, 256, size=shape).astype(np.uint8)
    Image.fromarray(arr).save(tmp_path / name)
    return tmp_path / name, arr


def test_spacing_argument_sidecar_and_default(tmp_path):
    path, arr = _grey(tmp_path)
    with pytest.warns(UserWarning, match="assuming 1 mm"):
        case = io.read(path)
    assert case.spacing == (1.0, 1.0) and case.meta["spacing_source"] == "default"
    np.testing.assert_array_equal(case.image, arr)
    assert case.shape == (20, 30)
    (tmp_path / "img.json").write_text(json.dumps({"spacing": [0.5, 0.25]}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert io.read(path).spacing == (0.5, 0.25)
        assert io.read(path, spacing=(0.3, 0.4)).spacing == (0.3, 0.4)


def test_label_png_round_trip(tmp_path):
    lab = np.zeros((17, 23), np.uint8)
    lab[3:9, 4:12] = 1
    lab[5:7, 6:8] = 2
    Image.fromarray(lab).save(tmp_path / "lab.png")
    case = io.read(tmp_path / "lab.png", is_label=True, spacing=(0.7, 0.7))
    out = io.write(case.label, tmp_path / "out.png", case)
    with Image.open(out) as im:
        assert im.mode == "L" and im.size == (23, 17)
        np.testing.assert_array_equal(np.asarray(im), lab)


def test_png_to_nifti_and_back(tmp_path):
    path, arr = _grey(tmp_path)
    case = io.read(path, spacing=(0.5, 0.8))
    nii = io.write(case.image, tmp_path / "img.nii.gz", case, is_label=False)
    vol = io.read(nii)
    assert vol.shape == (20, 30, 1)
    np.testing.assert_allclose(vol.spacing[:2], (0.5, 0.8))
    back = io.write(vol.image, tmp_path / "back.png", vol, is_label=False)
    with Image.open(back) as im:
        np.testing.assert_array_equal(np.asarray(im), arr)


def test_grey_stored_as_rgb_and_opaque_alpha_read_silently(tmp_path):
    _, arr = _grey(tmp_path)
    Image.fromarray(np.stack([arr] * 3 + [np.full_like(arr, 255)], axis=-1)).save(tmp_path / "rgba.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        case = io.read(tmp_path / "rgba.png", spacing=(1, 1))
    np.testing.assert_array_equal(case.image, arr)


def test_colour_image_converted_with_warning_colour_label_refused(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, size=(8, 9, 3)).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    with pytest.warns(UserWarning, match="converted to grey"):
        case = io.read(tmp_path / "c.png", spacing=(1, 1))
    expected = np.asarray(Image.fromarray(rgb).convert("L"))
    np.testing.assert_array_equal(case.image, expected)
    with pytest.raises(InputError, match="label map is in colour"):
        io.read(tmp_path / "c.png", is_label=True, spacing=(1, 1))


def test_transparency_refused(tmp_path):
    _, arr = _grey(tmp_path)
    alpha = np.full_like(arr, 255)
    alpha[0, 0] = 0
    Image.fromarray(np.stack([arr, alpha], axis=-1), mode="LA").save(tmp_path / "la.png")
    with pytest.raises(InputError, match="transparent"):
        io.read(tmp_path / "la.png", spacing=(1, 1))


def test_16bit_and_palette_labels(tmp_path):
    arr16 = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000)
    Image.fromarray(arr16).save(tmp_path / "i16.png")
    case = io.read(tmp_path / "i16.png", spacing=(1, 1))
    np.testing.assert_array_equal(case.image, arr16)
    out = io.write(case.image, tmp_path / "i16_out.png", case, is_label=False)
    with Image.open(out) as im:
        np.testing.assert_array_equal(np.asarray(im), arr16)
    pal = Image.fromarray(np.array([[0, 1], [2, 1]], np.uint8), mode="P")
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    pal.save(tmp_path / "pal.png")
    lab = io.read(tmp_path / "pal.png", is_label=True, spacing=(1, 1))
    np.testing.assert_array_equal(lab.label, [[0, 1], [2, 1]])


@pytest.mark.shared
def test_real_kits19_slice_pair(shared_data, tmp_path):
    folder = shared_data / "kits19_slices"
    image = sorted(folder.glob("*_image.png"))[0]
    label = image.with_name(image.name.replace("_image", "_label"))
    case = io.read_pair(image, label, spacing=(0.8, 0.8))
    assert case.image.shape == case.label.shape == (512, 512)
    assert set(np.unique(case.label)) <= {0, 1, 2}
    out = io.write(case.label, tmp_path / "lab.png", case)
    with Image.open(out) as im, Image.open(label) as ref:
        np.testing.assert_array_equal(np.asarray(im), np.asarray(ref))
