"""2D images (PNG, JPEG, BMP, TIFF) with Pillow: grey images and label maps.

Conventions
-----------
* Arrays are ``[row, col]``; the affine is ``diag(row spacing, col spacing, 1, 1)``
  (mm), so ``case.spacing == (row, col)``.
* Pixel spacing comes from the ``spacing=(row, col)`` argument, else a sidecar
  JSON ``<stem>.json`` holding ``{"spacing": [row, col]}``, else 1 mm with a
  warning (:func:`warnings.warn`, shown by the CLI as a log line).

Colour policy
-------------
* RGB/RGBA whose three channels are equal, and alpha that is fully opaque, are
  grey images stored in a colour mode: read as grey, silently (no loss).
* Transparency (any alpha < 255) is refused: the hidden pixels would be lost.
* Real colour is refused for a label map (colours are not label values); for
  an image it is converted to grey (ITU-R 601 luma, Pillow's ``convert("L")``)
  with a warning.
* Palette images: for label maps the palette indices are the label values;
  for images the palette colours are used (then the rules above).

Writing: 8-bit PNG (pixel value = label value) of the input's size; images
are written 8-bit when their values are integers in 0..255, 16-bit when they
are integers in 0..65535, and refused otherwise (window them first).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np

from kidneyseg.case import Case
from kidneyseg.errors import GeometryError, InputError, OutputError
from kidneyseg.io._common import (
    atomic_path,
    case_from_array,
    check_grid_shape,
    describe_exc,
    stem_of,
    to_label_array,
)
from kidneyseg.io.headers import check_png, check_voxels, too_many_pixels


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """``<folder>/<stem>.json`` for an image path."""
    p = Path(path)
    return p.parent / f"{stem_of(p)}.json"


def _spacing_for(p: Path, spacing: tuple[float, float] | None) -> tuple[tuple[float, float], str]:
    if spacing is not None:
        sp = tuple(float(s) for s in spacing)
        origin = "argument"
    else:
        side = sidecar_path(p)
        if side.is_file():
            try:
                sp = tuple(float(s) for s in json.loads(side.read_text())["spacing"])
            except (ValueError, KeyError, TypeError) as exc:
                raise InputError(
                    "cannot read pixel spacing from sidecar JSON",
                    path=side,
                    found=describe_exc(exc),
                    expected='{"spacing": [row_mm, col_mm]}',
                    fix="repair the JSON or pass --spacing ROW COL",
                ) from exc
            origin = str(side)
        else:
            warnings.warn(
                f"{p}: no pixel spacing given (no --spacing, no {side.name}); assuming 1 mm x 1 mm",
                stacklevel=3,
            )
            return (1.0, 1.0), "default"
    if len(sp) != 2 or not all(np.isfinite(s) and s > 0 for s in sp):
        raise GeometryError(
            "pixel spacing is zero, negative or not a number",
            path=p,
            found=sp,
            expected="two positive values (row, col) in mm",
            fix="pass --spacing ROW COL with positive millimetres (or fix the sidecar JSON)",
        )
    return sp, origin


def read_2d(
    path: str | os.PathLike[str],
    *,
    is_label: bool = False,
    spacing: tuple[float, float] | None = None,
) -> Case:
    """Read a 2D grey image or label map into a :class:`Case` (see the module notes).

    Returns ``image`` float32 ``(rows, cols)`` or ``label`` uint8 ``(rows, cols)``;
    ``meta["pil_mode"]`` is the file's Pillow mode and ``meta["spacing_source"]``
    says where the spacing came from.
    """
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    limit = Image.MAX_IMAGE_PIXELS
    check_png(p, limit)  # PNG chunks and size from the header, before Pillow decodes anything
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                width, height = im.size
                if limit is not None and width * height > limit:
                    raise too_many_pixels(p, width, height, limit)
                check_voxels((height, width), p, unit="pixels")
                im.load()
                mode = im.mode
                n_frames = getattr(im, "n_frames", 1)
                arr = _grey_array(im, p, is_label)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(
            "image has more pixels than Pillow's decompression-bomb limit",
            path=p,
            found=describe_exc(exc),
            expected=f"at most {limit:,} pixels (PIL.Image.MAX_IMAGE_PIXELS)" if limit else "a smaller image",
            fix="downsample or crop the image first",
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InputError(
            "cannot read image file (unreadable or truncated)",
            path=p,
            found=describe_exc(exc),
            expected="a complete PNG, JPEG, BMP or TIFF file",
            fix="re-export the image",
        ) from exc
    if n_frames > 1:
        warnings.warn(f"{p}: {n_frames} frames; reading the first only", stacklevel=2)
    if arr.ndim != 2:  # pragma: no cover - _grey_array returns 2D
        raise InputError("not a 2D image", path=p, found=arr.shape, expected="(rows, cols)")
    sp, sp_origin = _spacing_for(p, spacing)
    affine = np.diag([sp[0], sp[1], 1.0, 1.0])
    return case_from_array(arr, affine, p, is_label=is_label, meta={"format": "png", "pil_mode": mode, "spacing_source": sp_origin, "dtype": _dtype_of_mode(mode)})


def _dtype_of_mode(mode: str) -> str:
    return {"I;16": "uint16", "I;16B": "uint16", "I": "int32", "F": "float32"}.get(mode, "uint8")


def _grey_array(im, p: Path, is_label: bool) -> np.ndarray:
    """The pixels of an open Pillow image as a 2D array, applying the colour policy."""
    mode = im.mode
    if mode in ("L", "I", "F", "I;16", "I;16B", "I;16L"):
        return np.asarray(im)
    if mode == "1":
        return np.asarray(im).astype(np.uint8)
    if mode == "P":
        if is_label and "transparency" not in im.info:
            return np.asarray(im)
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in ("LA", "PA", "RGBA", "La", "RGBa"):
        rgba = np.asarray(im.convert("RGBA") if mode != "LA" else im)
        alpha = rgba[..., -1]
        if np.any(alpha < 255):
            raise InputError(
                "image has transparent pixels (alpha channel)",
                path=p,
                found=f"mode {mode}, {int(np.count_nonzero(alpha < 255))} pixels with alpha < 255",
                expected="a grey image without transparency",
                fix="flatten the image onto a background and save it as grey (e.g. PIL: im.convert('L'))",
            )
        if mode == "LA":
            return rgba[..., 0]
        im = im.convert("RGB")
        mode = "RGB"
    if mode in ("RGB", "CMYK", "YCbCr", "LAB", "HSV"):
        rgb = np.asarray(im.convert("RGB"))
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
            return rgb[..., 0]
        if is_label:
            raise InputError(
                "label map is in colour",
                path=p,
                found=f"mode {im.mode} with different R, G, B values",
                expected="a grey label map whose pixel values are the label values (0, 1, 2, ...)",
                fix="save the label map as an 8-bit grey PNG with value = label (not a coloured overlay)",
            )
        warnings.warn(f"{p}: colour image (mode {im.mode}) converted to grey (ITU-R 601 luma)", stacklevel=4)
        return np.asarray(im.convert("L"))
    raise InputError(
        "unsupported image mode",
        path=p,
        found=f"Pillow mode {mode}",
        expected="grey (L, I;16, I, F), RGB, RGBA or palette",
        fix="save the image as an 8- or 16-bit grey PNG",
    )


def write_2d(array: np.ndarray, path: str | os.PathLike[str], like: Case, *, is_label: bool = True) -> Path:
    """Write a 2D label map (or image) as PNG/BMP/TIFF of ``like``'s size, atomically.

    ``array`` is ``(rows, cols)`` or ``(rows, cols, 1)``; ``like`` must be a 2D
    case or a one-slice volume.  Labels are 8-bit with pixel value = label value.
    """
    from PIL import Image

    out = Path(path)
    arr = np.asarray(array)
    if (like.ndim == 3 and like.shape[2] != 1) or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 1):
        raise OutputError(
            "a 2D image format cannot hold a volume",
            path=out,
            found=f"shape {tuple(arr.shape)}",
            expected="a 2D array (rows, cols)",
            fix="write volumes as .nii.gz, .nrrd or .mha",
        )
    check_grid_shape(arr, like.shape if like.ndim == 2 else like.shape[:2], out)
    if arr.ndim == 3:
        arr = arr[:, :, 0]
    if out.name.lower().endswith((".jpg", ".jpeg")) and is_label:
        raise OutputError(
            "JPEG is lossy and would change label values",
            path=out,
            expected="a .png, .bmp or .tif output",
            fix="write label maps as .png",
        )
    if is_label:
        data = to_label_array(arr, out)
    else:
        a = np.asarray(arr, dtype=np.float64)
        integral = bool(np.all(np.isfinite(a))) and bool(np.all(a == np.round(a)))
        if integral and a.size and a.min() >= 0 and a.max() <= 255:
            data = a.astype(np.uint8)
        elif integral and a.size and a.min() >= 0 and a.max() <= 65535 and out.suffix.lower() in (".png", ".tif", ".tiff"):
            data = a.astype(np.uint16)
        else:
            raise OutputError(
                "image values do not fit an 8/16-bit picture",
                path=out,
                found=f"values {a.min():.4g}..{a.max():.4g}" if a.size else "empty",
                expected="integers 0..255 (or 0..65535 for PNG/TIFF)",
                fix="window and scale the image to 0..255 first, or write it as .nii.gz/.nrrd",
            )
    img = Image.fromarray(np.ascontiguousarray(data))  # uint8 -> "L", uint16 -> "I;16"
    fmt = {".png": "PNG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF", ".jpg": "JPEG", ".jpeg": "JPEG"}.get(
        out.suffix.lower(), "PNG"
    )
    with atomic_path(out) as tmp:
        img.save(tmp, format=fmt)
    return out
