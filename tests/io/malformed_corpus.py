"""A generated corpus of malformed image files (issue 22, item 6): never committed, built into a folder.

:func:`build_corpus` writes every file of :data:`KINDS` into ``root/<id>/`` (one folder each, so
that a DICOM reader scanning a file's folder sees only that case) and returns the cases.  Each
is a file or DICOM folder that ``kidneyseg info``, ``convert`` and ``predict`` must refuse with
exit code 2 and one stderr line, without a traceback, without an output and without reading
pixels where the header alone shows the file cannot be used.

The files are small (the largest is a 1-bit PNG of about 30 KB that decodes to 196 million
pixels); building the whole corpus takes well under a second.

Also imported by file path (``sys.path``) from other test folders.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Malformed:
    """One malformed input: ``path`` to pass to the CLI, its ``group`` and a word its error must contain."""

    id: str
    group: str
    path: Path
    #: read it as a label map (``--label``): the defect is in label values (``predict`` reads images only)
    label: bool = False
    #: a word (case-insensitive) the one error line must contain
    says: str = ""


# ----------------------------------------------------------------------------- helpers

def _nifti_bytes(data: np.ndarray, affine: np.ndarray | None = None, *, dtype: object = None) -> bytes:
    import nibabel as nib

    img = nib.Nifti1Image(data, np.eye(4) if affine is None else affine, dtype=dtype)  # type: ignore[arg-type]
    return bytes(img.to_bytes())


def _nii(path: Path, data: np.ndarray, affine: np.ndarray | None = None, **kw: object) -> None:
    raw = _nifti_bytes(data, affine, **kw)
    path.write_bytes(gzip.compress(raw, compresslevel=1) if path.name.endswith(".gz") else raw)


def _patched(path: Path, patch: Callable[[bytearray], None], shape: tuple[int, ...] = (4, 4, 3),
             dtype: type = np.int16) -> None:
    """A NIfTI-1 file whose header bytes are overwritten (nibabel refuses to write such headers)."""
    raw = bytearray(_nifti_bytes(np.ones(shape, dtype)))
    patch(raw)
    path.write_bytes(gzip.compress(bytes(raw), compresslevel=1) if path.name.endswith(".gz") else bytes(raw))


def _set(offset: int, fmt: str, *values: float) -> Callable[[bytearray], None]:
    def patch(raw: bytearray) -> None:
        raw[offset: offset + struct.calcsize("<" + fmt)] = struct.pack("<" + fmt, *values)
    return patch


def _both(*patches: Callable[[bytearray], None]) -> Callable[[bytearray], None]:
    def patch(raw: bytearray) -> None:
        for p in patches:
            p(raw)
    return patch


def _png_chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
    crc = zlib.crc32(kind + data) if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc & 0xFFFFFFFF)


def _png(width: int, height: int, bit_depth: int, colour: int, idat: bytes, *, bad_crc: bool = False) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", idat, crc=0xDEADBEEF if bad_crc else None) + _png_chunk(b"IEND", b""))


def _png_grey(rows: int, cols: int, **kw: bool) -> bytes:
    raw = b"".join(b"\x00" + bytes((r * 7 + c) % 256 for c in range(cols)) for r in range(rows))
    return _png(cols, rows, 8, 0, zlib.compress(raw), **kw)


def _huge_1bit_png(side: int) -> bytes:
    """A real, complete 1-bit PNG of ``side`` x ``side`` black pixels (compressed to a few tens of KB)."""
    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    return _png(side, side, 1, 0, idat)


def _nrrd(path: Path, header_lines: list[str], data: bytes = b"") -> None:
    path.write_bytes(("\n".join(["NRRD0004", *header_lines]) + "\n\n").encode() + data)


def _mha(path: Path, lines: list[str], data: bytes = b"") -> None:
    path.write_bytes(("\n".join(lines) + "\n").encode() + data)


_MHA_3D = ["ObjectType = Image", "NDims = 3", "BinaryData = True", "BinaryDataByteOrderMSB = False",
           "TransformMatrix = 1 0 0 0 1 0 0 0 1", "Offset = 0 0 0"]


def _dicom_slice(path: Path, k: int, *, uid: str, study: str, frame: str, rows: int = 8, cols: int = 8,
                 position: float | None = None, pixels: bool = True, geometry: bool = True,
                 pixel_bytes: bytes | None = None) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    sop = generate_uid()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop
    ds.Modality = "CT"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, uid, frame
    ds.SeriesNumber = 1
    ds.InstanceNumber = k + 1
    ds.ImagePositionPatient = [0.0, 0.0, float(2.5 * k if position is None else position)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [0.8, 0.8]
    ds.SliceThickness = 2.5
    if geometry:
        ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1.0, -1024.0
    if pixels:
        ds.PixelData = pixel_bytes if pixel_bytes is not None else np.full(rows * cols, 1000, np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def _dicom_series(folder: Path, n: int = 3, **per_slice: object) -> list[Path]:
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    uid, study, frame = generate_uid(), generate_uid(), generate_uid()
    files = []
    for k in range(n):
        f = folder / f"IM{k:04d}.dcm"
        _dicom_slice(f, k, uid=uid, study=study, frame=frame, **per_slice)  # type: ignore[arg-type]
        files.append(f)
    return files


# ----------------------------------------------------------------------------- the corpus

def _good_nii_gz() -> bytes:
    data = np.random.default_rng(0).normal(0, 100, (24, 24, 16)).astype(np.float32)
    return gzip.compress(_nifti_bytes(data), compresslevel=1)


def _make(kind: str, d: Path) -> tuple[Path, dict[str, object]]:
    """Write the file of ``kind`` into the empty folder ``d``; returns its path and :class:`Malformed` options."""
    ones = np.ones((4, 4, 3), np.int16)
    # -- empty and truncated files
    if kind == "empty.nii.gz":
        (p := d / "empty.nii.gz").write_bytes(b"")
        return p, {}
    if kind == "empty.nii":
        (p := d / "empty.nii").write_bytes(b"")
        return p, {}
    if kind == "empty.nrrd":
        (p := d / "empty.nrrd").write_bytes(b"")
        return p, {}
    if kind == "empty.mha":
        (p := d / "empty.mha").write_bytes(b"")
        return p, {}
    if kind == "empty.png":
        (p := d / "empty.png").write_bytes(b"")
        return p, {}
    if kind == "empty.dcm":
        (p := d / "empty.dcm").write_bytes(b"")
        return p, {}
    if kind == "truncated.nii.gz":
        data = _good_nii_gz()
        (p := d / "truncated.nii.gz").write_bytes(data[: len(data) // 2])
        return p, {"says": "truncated"}
    if kind == "truncated.nii":
        raw = _nifti_bytes(np.zeros((20, 20, 20), np.float32))
        (p := d / "truncated.nii").write_bytes(raw[:5000])
        return p, {"says": "truncated"}
    if kind == "header-only.nii":
        (p := d / "header-only.nii").write_bytes(_nifti_bytes(ones)[:352])
        return p, {"says": "truncated"}
    if kind == "gzip-garbage.nii.gz":
        (p := d / "gzip-garbage.nii.gz").write_bytes(b"\x1f\x8b\x08\x00 this is not a gzip stream")
        return p, {}
    if kind == "gzip-of-text.nii.gz":
        (p := d / "gzip-of-text.nii.gz").write_bytes(gzip.compress(b"hello, this is text\n" * 40))
        return p, {}
    if kind == "bad-magic.nii":
        raw = bytearray(_nifti_bytes(ones))
        raw[344:348] = b"XXXX"
        (p := d / "bad-magic.nii").write_bytes(bytes(raw))
        return p, {}
    if kind == "truncated.nrrd.gz":
        data = zlib.compress(np.zeros(16 * 16 * 8, np.int16).tobytes())
        _nrrd(p := d / "truncated.nrrd", ["type: short", "dimension: 3", "sizes: 16 16 8", "encoding: gzip", "endian: little",
                                          "space: left-posterior-superior"], data[: len(data) // 2])
        return p, {}
    if kind == "truncated.mha":
        _mha(p := d / "truncated.mha", [*_MHA_3D, "ElementSpacing = 1 1 1", "DimSize = 16 16 8",
                                        "ElementType = MET_SHORT", "ElementDataFile = LOCAL"], b"\x00" * 100)
        return p, {}
    # -- mislabelled suffixes
    if kind == "png-named.nii.gz":
        (p := d / "image.nii.gz").write_bytes(_png_grey(8, 8))
        return p, {}
    if kind == "text-named.nrrd":
        (p := d / "notes.nrrd").write_text("This is a text file, not an NRRD image.\n" * 5)
        return p, {}
    if kind == "text-named.mha":
        (p := d / "notes.mha").write_text("This is a text file, not a MetaImage.\n" * 5)
        return p, {}
    if kind == "nifti-named.png":
        (p := d / "scan.png").write_bytes(_nifti_bytes(ones))
        return p, {}
    if kind == "zip-named.nii":
        (p := d / "archive.nii").write_bytes(b"PK\x03\x04" + b"\x00" * 400)
        return p, {}
    if kind == "html-named.dcm":
        (p := d / "slice.dcm").write_text("<html><body>not DICOM</body></html>\n" * 10)
        return p, {}
    # -- wrong dimensionality
    if kind == "1d.nii.gz":
        _nii(p := d / "line.nii.gz", np.zeros((10,), np.float32))
        return p, {"says": "1D"}
    if kind == "5d.nii.gz":
        _nii(p := d / "five.nii.gz", np.zeros((4, 4, 3, 2, 2), np.float32))
        return p, {"says": "5D"}
    if kind == "4d-3-channels.nii.gz":
        _nii(p := d / "channels.nii.gz", np.zeros((4, 4, 3, 3), np.float32))
        return p, {"says": "4D"}
    if kind == "4d-vector.nrrd":
        _nrrd(p := d / "vector.nrrd", ["type: uint8", "dimension: 4", "sizes: 3 4 4 3", "encoding: raw",
                                       "kinds: vector domain domain domain", "space: left-posterior-superior",
                                       "space directions: none (1,0,0) (0,1,0) (0,0,1)"], bytes(3 * 4 * 4 * 3))
        return p, {}
    if kind == "rgb.mha":
        _mha(p := d / "rgb.mha", [*_MHA_3D, "ElementSpacing = 1 1 1", "DimSize = 4 4 3",
                                  "ElementNumberOfChannels = 3", "ElementType = MET_UCHAR",
                                  "ElementDataFile = LOCAL"], bytes(4 * 4 * 3 * 3))
        return p, {"says": "components"}
    if kind == "4d.mha":
        _mha(p := d / "four.mha", ["ObjectType = Image", "NDims = 4", "BinaryData = True",
                                   "BinaryDataByteOrderMSB = False", "ElementSpacing = 1 1 1 1",
                                   "DimSize = 4 4 3 2", "ElementType = MET_UCHAR", "ElementDataFile = LOCAL"],
             bytes(4 * 4 * 3 * 2))
        return p, {"says": "4D"}
    # -- broken geometry
    if kind == "pixdim-zero.nii":
        _patched(p := d / "pixdim-zero.nii", _set(80, "3f", 1.0, 0.0, 1.0))
        return p, {"says": "spacing"}
    if kind == "pixdim-negative.nii":
        _patched(p := d / "pixdim-negative.nii", _set(80, "3f", 1.0, -2.0, 1.0))
        return p, {"says": "spacing"}
    if kind == "pixdim-nan.nii.gz":
        _patched(p := d / "pixdim-nan.nii.gz", _set(80, "3f", 1.0, float("nan"), 1.0))
        return p, {"says": "spacing"}
    if kind == "singular-sform.nii":
        _patched(p := d / "singular-sform.nii", _both(_set(252, "2h", 0, 1),
                                                      _set(280, "12f", 1, 0, 1, 0, 0, 1, 0, 0, 1, 0, 1, 0)))
        return p, {"says": "not invertible"}
    if kind == "nan-sform.nii":
        _patched(p := d / "nan-sform.nii", _both(_set(252, "2h", 0, 1),
                                                 _set(280, "12f", 1, 0, 0, float("nan"), 0, 1, 0, 0, 0, 0, 1, 0)))
        return p, {"says": "NaN"}
    if kind == "nan-qform.nii":
        _patched(p := d / "nan-qform.nii", _both(_set(252, "2h", 1, 0), _set(256, "3f", float("nan"), 0, 0)))
        return p, {}
    if kind == "nan-origin.nrrd":
        _nrrd(p := d / "nan-origin.nrrd", ["type: uint8", "dimension: 3", "sizes: 3 3 3", "encoding: raw",
                                           "space: left-posterior-superior",
                                           "space directions: (1,0,0) (0,1,0) (0,0,1)", "space origin: (0,nan,0)"],
              bytes(27))
        return p, {"says": "NaN"}
    if kind == "zero-direction.nrrd":
        _nrrd(p := d / "zero-direction.nrrd", ["type: uint8", "dimension: 3", "sizes: 3 3 3", "encoding: raw",
                                               "space: left-posterior-superior",
                                               "space directions: (1,0,0) (0,0,0) (0,0,1)", "space origin: (0,0,0)"],
              bytes(27))
        return p, {"says": "spacing"}
    if kind == "zero-spacing.mha":
        _mha(p := d / "zero-spacing.mha", [*_MHA_3D, "ElementSpacing = 1 0 1", "DimSize = 3 3 3",
                                           "ElementType = MET_UCHAR", "ElementDataFile = LOCAL"], bytes(27))
        return p, {}
    if kind == "dicom-uneven-slices":
        files = _dicom_series(d / "series", n=4)
        files[2].unlink()  # a missing slice: gaps 2.5, 5.0
        return d / "series", {"says": "unevenly"}
    # -- unusual voxel types
    if kind == "complex64.nii.gz":
        _nii(p := d / "complex.nii.gz", (np.ones((4, 4, 3)) * (1 + 2j)).astype(np.complex64))
        return p, {"says": "complex"}
    if kind == "rgb24.nii.gz":
        rgb = np.zeros((4, 4, 3), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
        _nii(p := d / "rgb.nii.gz", rgb)
        return p, {}
    if kind == "binary-datatype.nii":
        _patched(p := d / "binary.nii", _both(_set(70, "hh", 1, 1)))  # DT_BINARY, 1 bit per voxel
        return p, {}
    if kind == "unknown-datatype.nii":
        _patched(p := d / "unknown-type.nii", _set(70, "hh", 9999, 16))
        return p, {}
    if kind == "float128-overflow.nii":
        if np.finfo(np.longdouble).max <= np.finfo(np.float64).max:  # pragma: no cover - no extended precision
            big = np.full((4, 4, 3), 1e300, np.float64)
            _nii(p := d / "float64-overflow.nii", big)
        else:  # nibabel does not write float128: an int16 header set to FLOAT128 (1536), 16 bytes a voxel
            raw = bytearray(_nifti_bytes(ones)[:352])
            raw[70:74] = struct.pack("<hh", 1536, 128)
            data = np.full(ones.shape, np.longdouble("1e4000"), np.longdouble).tobytes(order="F")
            (p := d / "float128-overflow.nii").write_bytes(bytes(raw) + data)
        return p, {"says": "float32"}
    if kind == "float64-overflow.nii.gz":
        _nii(p := d / "float64-overflow.nii.gz", np.full((4, 4, 3), -1e300, np.float64))
        return p, {"says": "float32"}
    if kind == "nan-only.nii.gz":
        _nii(p := d / "nan-only.nii.gz", np.full((4, 4, 3), np.nan, np.float32))
        return p, {"says": "no finite"}
    if kind == "nan-only.nrrd":
        _nrrd(p := d / "nan-only.nrrd", ["type: float", "dimension: 3", "sizes: 3 3 3", "encoding: raw",
                                         "endian: little", "space: left-posterior-superior",
                                         "space directions: (1,0,0) (0,1,0) (0,0,1)"],
              np.full(27, np.nan, "<f4").tobytes())
        return p, {"says": "no finite"}
    if kind == "int64-huge-labels.nii.gz":
        _nii(p := d / "int64-labels.nii.gz", np.full((4, 4, 3), 2**62, np.int64), dtype=np.int64)
        return p, {"label": True, "says": "label values"}
    if kind == "float-labels.nii.gz":
        _nii(p := d / "float-labels.nii.gz", np.full((4, 4, 3), 0.5, np.float32))
        return p, {"label": True, "says": "label"}
    if kind == "zero-size-axis.nii":
        _patched(p := d / "zero-size.nii", _set(40, "4h", 3, 4, 0, 3))
        return p, {"says": "no voxels"}
    # -- impossible sizes (the header claims far more than the file holds): refused from the header
    if kind == "huge-header.nii":
        _patched(p := d / "huge.nii", _set(40, "4h", 3, 32000, 32000, 32000))
        return p, {"says": "voxels"}
    if kind == "huge-header.nii.gz":
        _patched(p := d / "huge.nii.gz", _set(40, "4h", 3, 32000, 32000, 32000))
        return p, {"says": "voxels"}
    if kind == "truncated-claim.nii.gz":  # a plausible 512^3 claim in a file of 400 bytes
        _patched(p := d / "claim.nii.gz", _set(40, "4h", 3, 512, 512, 512))
        return p, {"says": "voxels"}
    if kind == "huge-header.nrrd":
        _nrrd(p := d / "huge.nrrd", ["type: float", "dimension: 3", "sizes: 100000 100000 100000",
                                     "encoding: raw", "endian: little", "space: left-posterior-superior",
                                     "space directions: (1,0,0) (0,1,0) (0,0,1)"], bytes(64))
        return p, {"says": "voxels"}
    if kind == "huge-header-gzip.nrrd":
        _nrrd(p := d / "huge-gz.nrrd", ["type: float", "dimension: 3", "sizes: 100000 100000 100000",
                                        "encoding: gzip", "endian: little", "space: left-posterior-superior",
                                        "space directions: (1,0,0) (0,1,0) (0,0,1)"], gzip.compress(bytes(64)))
        return p, {"says": "voxels"}
    if kind == "huge-header.mha":
        _mha(p := d / "huge.mha", [*_MHA_3D, "ElementSpacing = 1 1 1", "DimSize = 100000 100000 100000",
                                   "ElementType = MET_FLOAT", "ElementDataFile = LOCAL"], bytes(64))
        return p, {"says": "voxels"}
    if kind == "huge-header.dcm":
        _dicom_series(d / "series", n=1, rows=65535, cols=65535, pixel_bytes=bytes(128))
        return d / "series", {"says": "voxels"}
    if kind == "bomb-ihdr.png":  # IHDR claims 100000 x 100000 grey pixels; 50 bytes of data
        (p := d / "bomb-ihdr.png").write_bytes(_png(100_000, 100_000, 8, 0, zlib.compress(b"\x00" * 64)))
        return p, {"says": "pixels"}
    if kind == "bomb-1bit.png":  # a complete 14000 x 14000 1-bit PNG: 196 M pixels, over twice Pillow's limit
        (p := d / "bomb-1bit.png").write_bytes(_huge_1bit_png(14_000))
        return p, {"says": "pixels"}
    if kind == "bomb-warning-zone.png":  # 10000 x 10000: over Pillow's limit, under twice it (a warning only)
        (p := d / "bomb-10k.png").write_bytes(_huge_1bit_png(10_000))
        return p, {"says": "pixels"}
    # -- broken PNG
    if kind == "bad-crc.png":
        (p := d / "bad-crc.png").write_bytes(_png_grey(8, 8, bad_crc=True))
        return p, {}
    if kind == "truncated.png":
        data = _png_grey(32, 32)
        (p := d / "truncated.png").write_bytes(data[: len(data) // 2])
        return p, {}
    if kind == "header-only.png":
        (p := d / "header-only.png").write_bytes(_png_grey(8, 8)[:33])
        return p, {}
    # -- broken DICOM
    if kind == "dicom-no-pixel-data":
        _dicom_series(d / "series", n=3, pixels=False)
        return d / "series", {}
    if kind == "dicom-truncated":
        files = _dicom_series(d / "series", n=3)
        data = files[1].read_bytes()
        files[1].write_bytes(data[: len(data) - 60])
        return d / "series", {}
    if kind == "dicom-short-pixel-data":
        _dicom_series(d / "series", n=3, pixel_bytes=bytes(10))
        return d / "series", {}
    if kind == "dicom-missing-rows-columns":
        _dicom_series(d / "series", n=3, geometry=False)
        return d / "series", {"says": "no DICOM image slices"}
    if kind == "dicom-mixed-acquisitions":  # one SeriesInstanceUID, two acquisitions at the same positions
        from pydicom.uid import generate_uid

        (d / "series").mkdir()
        uid, study, frame = generate_uid(), generate_uid(), generate_uid()
        for k in range(6):
            _dicom_slice(d / "series" / f"IM{k:04d}.dcm", k, uid=uid, study=study, frame=frame, position=2.5 * (k % 3))
        return d / "series", {"says": "same position"}
    if kind == "dicom-folder-of-junk":
        (d / "series").mkdir()
        (d / "series" / "notes.txt").write_text("hello")
        (d / "series" / "scan.dcm").write_bytes(b"\x00" * 300)
        return d / "series", {"says": "no DICOM files"}
    if kind == "dicom-slice-without-series":  # one .dcm file named on the command line, not an image slice
        _dicom_series(d, n=1, geometry=False)
        return d / "IM0000.dcm", {}
    # -- detached headers whose data file is missing
    if kind == "mhd-missing-raw":
        _mha(p := d / "image.mhd", [*_MHA_3D, "ElementSpacing = 1 1 1", "DimSize = 4 4 3",
                                    "ElementType = MET_SHORT", "ElementDataFile = image.raw"])
        return p, {}
    if kind == "nhdr-missing-data":
        _nrrd(p := d / "image.nhdr", ["type: short", "dimension: 3", "sizes: 4 4 3", "encoding: raw",
                                      "endian: little", "space: left-posterior-superior",
                                      "space directions: (1,0,0) (0,1,0) (0,0,1)", "data file: image.raw"])
        return p, {}
    if kind == "nrrd-zero-size":
        _nrrd(p := d / "zero-size.nrrd", ["type: uint8", "dimension: 3", "sizes: 4 0 3", "encoding: raw",
                                          "space: left-posterior-superior",
                                          "space directions: (1,0,0) (0,1,0) (0,0,1)"])
        return p, {}
    raise KeyError(kind)  # pragma: no cover


#: Every kind of malformed file, by group.
KINDS: dict[str, tuple[str, ...]] = {
    "empty": ("empty.nii.gz", "empty.nii", "empty.nrrd", "empty.mha", "empty.png", "empty.dcm"),
    "truncated": ("truncated.nii.gz", "truncated.nii", "header-only.nii", "gzip-garbage.nii.gz",
                  "gzip-of-text.nii.gz", "bad-magic.nii", "truncated.nrrd.gz", "truncated.mha"),
    "mislabelled": ("png-named.nii.gz", "text-named.nrrd", "text-named.mha", "nifti-named.png", "zip-named.nii",
                    "html-named.dcm"),
    "dimensionality": ("1d.nii.gz", "5d.nii.gz", "4d-3-channels.nii.gz", "4d-vector.nrrd", "rgb.mha", "4d.mha"),
    "geometry": ("pixdim-zero.nii", "pixdim-negative.nii", "pixdim-nan.nii.gz", "singular-sform.nii",
                 "nan-sform.nii", "nan-qform.nii", "nan-origin.nrrd", "zero-direction.nrrd", "zero-spacing.mha",
                 "dicom-uneven-slices"),
    "voxel type": ("complex64.nii.gz", "rgb24.nii.gz", "binary-datatype.nii", "unknown-datatype.nii",
                   "float128-overflow.nii", "float64-overflow.nii.gz", "nan-only.nii.gz", "nan-only.nrrd",
                   "int64-huge-labels.nii.gz", "float-labels.nii.gz", "zero-size-axis.nii", "nrrd-zero-size"),
    "size": ("huge-header.nii", "huge-header.nii.gz", "truncated-claim.nii.gz", "huge-header.nrrd",
             "huge-header-gzip.nrrd", "huge-header.mha", "huge-header.dcm", "bomb-ihdr.png", "bomb-1bit.png",
             "bomb-warning-zone.png"),
    "png": ("bad-crc.png", "truncated.png", "header-only.png"),
    "dicom": ("dicom-no-pixel-data", "dicom-truncated", "dicom-short-pixel-data", "dicom-missing-rows-columns",
              "dicom-mixed-acquisitions", "dicom-folder-of-junk", "dicom-slice-without-series"),
    "missing data file": ("mhd-missing-raw", "nhdr-missing-data"),
}

ALL_KINDS: tuple[str, ...] = tuple(k for kinds in KINDS.values() for k in kinds)


def build_one(root: Path, kind: str) -> Malformed:
    """Write the malformed file ``kind`` into ``root/<kind>/``."""
    group = next(g for g, kinds in KINDS.items() if kind in kinds)
    d = root / kind.replace(".", "_")
    d.mkdir(parents=True)
    path, options = _make(kind, d)
    return Malformed(id=kind, group=group, path=path, **options)  # type: ignore[arg-type]


def build_corpus(root: Path) -> list[Malformed]:
    """Write every file of :data:`KINDS` under ``root`` (one folder each); returns them in :data:`ALL_KINDS` order."""
    return [build_one(root, kind) for kind in ALL_KINDS]


def good_volume(path: Path, seed: int = 1) -> Path:
    """A small readable CT phantom volume (for batches that mix good and bad files)."""
    from kidneyseg.data.phantoms import ct_phantom

    ph = ct_phantom(size=(40, 40, 20), seed=seed)
    _nii(path, ph.image.astype(np.int16), ph.affine)
    return path
