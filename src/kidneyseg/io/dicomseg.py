"""DICOM-SEG output (highdicom) for a label map predicted on a DICOM series.

:func:`write_dicom_seg` writes one Segmentation instance that references the
source series (same Study, Frame of Reference, one frame per source slice that
holds a segment), with one segment per label, SNOMED CT codes from
:func:`segment_codes` (the one code table) and the label's display colour
(:func:`kidneyseg.labels.color_of`, stored as CIELab):

==================== ============================================= =================================================
label                segmented property category                   segmented property type
==================== ============================================= =================================================
kidney               Anatomical structure (SCT 91723000)           Kidney (SCT 64033007)
kidney_right         Anatomical structure                          Kidney, modifier Right (SCT 24028007)
kidney_left          Anatomical structure                          Kidney, modifier Left (SCT 7771000)
tumour               Morphologically abnormal structure (49755003) Neoplasm (SCT 108369006), region Kidney
cyst                 Morphologically abnormal structure            Cyst (SCT 367643001), region Kidney
liver                Anatomical structure                          Liver (SCT 10200004)
spleen               Anatomical structure                          Spleen (SCT 78961009)
pancreas             Anatomical structure                          Pancreas (SCT 15776009)
cortex               Anatomical structure                          Renal cortex (SCT 50403003)
medulla              Tissue (SCT 85756007)                         Tissue, region Kidney (no verified code)
central_echo_complex Tissue                                        Tissue, region Kidney (no verified code)
other names          Tissue                                        Tissue, segment label = the label's name (warned)
==================== ============================================= =================================================

Source headers are checked first (:func:`check_sources`).  What the standard
lets us derive is repaired on in-memory copies and logged (SOPClassUID and
SOPInstanceUID from the file meta's MediaStorage UIDs; empty Type 2 patient and
study attributes).  A required attribute that cannot be derived (for example an
empty SeriesInstanceUID, StudyInstanceUID or a missing FrameOfReferenceUID)
refuses the output with one :class:`DicomSegError` naming the attribute and
suggesting another output format.  Unreadable files never crash: they raise
:class:`~kidneyseg.errors.InputError`.

The label map is sampled onto each source slice by world position (nearest
voxel), so the result does not depend on how the reader ordered the slices.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from kidneyseg.errors import InputError, OutputError
from kidneyseg.labels import canonical_label_name, color_of, get_task

log = logging.getLogger(__name__)

# Type 1 attributes every source image must carry, non-empty, for a SEG referencing it.
REQUIRED = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "FrameOfReferenceUID",
            "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns")
# Type 2 attributes copied into the SEG: may be empty, so an absent one is added empty.
TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyID", "AccessionNumber",
         "StudyDate", "StudyTime", "ReferringPhysicianName")


class DicomSegError(OutputError):
    """A DICOM-SEG cannot be written for this input (the message names the attribute)."""


#: SNOMED CT "Structure of cortex of kidney (body structure)" as (code value, scheme, code meaning);
#: not in pydicom's dictionary.  Source: HL7 mCODE IG, TG263 to SNOMED CT concept map (TG263 Kidney_Cortex).
RENAL_CORTEX = ("50403003", "SCT", "Renal cortex")


class SegmentCode(NamedTuple):
    """How one label is coded in a DICOM-SEG segment description (pydicom/highdicom codes)."""

    category: Any
    type: Any
    #: laterality of the type (SegmentedPropertyTypeModifierCodeSequence), e.g. SCT Right
    modifier: Any | None = None
    #: anatomic region (AnatomicRegionSequence), e.g. SCT Kidney for a renal mass
    region: Any | None = None


def segment_codes() -> dict[str, SegmentCode]:
    """The one table of DICOM-SEG codes: canonical label name -> :class:`SegmentCode`.

    SNOMED CT codes from ``pydicom.sr.codedict.codes.SCT`` (the concepts of the DICOM
    segmentation contexts CID 7150/7151/7159), right and left kidney as Kidney with
    the laterality modifier (as TotalSegmentator's DICOM-SEG export codes them).

    The ultrasound regions (``openkidney-us-regions``) are not in pydicom's dictionary
    (nor in the DICOM segmentation contexts it bundles).  The renal cortex is coded with
    SNOMED CT 50403003 "Structure of cortex of kidney (body structure)", the code the
    HL7 mCODE implementation guide's TG263-to-SNOMED CT concept map gives for TG263
    ``Kidney_Cortex`` (:data:`RENAL_CORTEX`).  For the medulla and the central echo
    complex (the renal sinus: fat, vessels and collecting system) no SNOMED CT code
    could be verified offline, so they keep the generic coding, Tissue within the
    Kidney, rather than an unverified identifier (the renal pelvis, SCT 25990002, is
    only part of the sinus).  Names not in the table get :func:`generic_code` (never
    Kidney).
    """
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    sct = codes.SCT
    anat, abnormal = sct.AnatomicalStructure, sct.MorphologicallyAbnormalStructure
    return {
        "kidney": SegmentCode(anat, sct.Kidney),
        "kidney_right": SegmentCode(anat, sct.Kidney, modifier=sct.Right),
        "kidney_left": SegmentCode(anat, sct.Kidney, modifier=sct.Left),
        "capsule": SegmentCode(anat, sct.Kidney),  # the capsule outline is the whole kidney
        "tumor": SegmentCode(abnormal, sct.Neoplasm, region=sct.Kidney),
        "cyst": SegmentCode(abnormal, sct.Cyst, region=sct.Kidney),
        "liver": SegmentCode(anat, sct.Liver),
        "spleen": SegmentCode(anat, sct.Spleen),
        "pancreas": SegmentCode(anat, sct.Pancreas),
        "central_echo_complex": SegmentCode(sct.Tissue, sct.Tissue, region=sct.Kidney),
        "medulla": SegmentCode(sct.Tissue, sct.Tissue, region=sct.Kidney),
        "cortex": SegmentCode(anat, Code(*RENAL_CORTEX)),
        "foreground": SegmentCode(sct.Tissue, sct.Tissue),
    }


def generic_code() -> SegmentCode:
    """Code of a label name the table does not know: SCT Tissue (category and type)."""
    from pydicom.sr.codedict import codes

    return SegmentCode(codes.SCT.Tissue, codes.SCT.Tissue)


def read_sources(files: Sequence[str | os.PathLike[str]]) -> list[Any]:
    """Read the headers (no pixel data) of the source slices; unreadable files raise InputError."""
    import pydicom

    out = []
    for f in files:
        try:
            try:
                ds = pydicom.dcmread(str(f), stop_before_pixels=True)
            except pydicom.errors.InvalidDicomError:
                # files without the 128-byte preamble are legal in old archives
                ds = pydicom.dcmread(str(f), stop_before_pixels=True, force=True)
            if "Rows" not in ds:
                raise ValueError("no image attributes (Rows) found")
            out.append(ds)
        except Exception as exc:  # any reader failure is a bad input, never a crash
            raise InputError(
                "cannot read DICOM file", path=f, found=f"{type(exc).__name__}: {exc}",
                expected="a DICOM image file", fix="remove the file from the series folder",
            ) from exc
    if not out:
        raise InputError("no DICOM source files", expected="the files of the input series",
                         fix="pass the DICOM series folder as input")
    return out


def _empty(ds: Any, name: str) -> bool:
    if name not in ds:
        return True
    v = ds.get(name)
    return v is None or (isinstance(v, str) and v.strip() == "") or (hasattr(v, "__len__") and len(v) == 0)


def check_sources(datasets: list[Any], path: str | os.PathLike[str] | None = None, *,
                  one_series: bool = True) -> list[str]:
    """Repair derivable attributes in place and refuse underivable ones.

    Returns the list of repairs made (each also logged).  Raises
    :class:`DicomSegError` for the first required attribute that is empty or
    absent and cannot be derived, naming it; with ``one_series`` also when
    the slices belong to several series or repeat a SOPInstanceUID.
    """
    repairs: list[str] = []
    for ds in datasets:
        meta = getattr(ds, "file_meta", None)
        for attr, meta_attr in (("SOPClassUID", "MediaStorageSOPClassUID"),
                                ("SOPInstanceUID", "MediaStorageSOPInstanceUID")):
            if _empty(ds, attr) and meta is not None and not _empty(meta, meta_attr):
                setattr(ds, attr, meta.get(meta_attr))
                repairs.append(f"{attr} taken from the file meta {meta_attr}")
        for attr in TYPE2:
            if attr not in ds:
                setattr(ds, attr, "")
                repairs.append(f"{attr} (Type 2) added empty")
    for attr in REQUIRED:
        bad = [ds for ds in datasets if _empty(ds, attr)]
        if bad:
            raise DicomSegError(
                f"cannot write DICOM-SEG: {attr} is empty or absent in {len(bad)} of {len(datasets)} "
                f"source slices and cannot be derived",
                path=path,
                fix="choose another output format, e.g. --output-format nifti, nrrd or seg.nrrd",
            )
    for attr in ("SeriesInstanceUID", "StudyInstanceUID", "FrameOfReferenceUID") if one_series else ():
        values = {str(ds.get(attr)) for ds in datasets}
        if len(values) > 1:
            raise DicomSegError(
                f"cannot write DICOM-SEG: the source slices have {len(values)} different {attr} values",
                path=path, expected="one series", fix="pass a folder holding a single series, "
                "or choose another output format (nifti, nrrd, seg.nrrd)",
            )
    uids = [str(ds.SOPInstanceUID) for ds in datasets]
    if one_series and len(set(uids)) != len(uids):
        raise DicomSegError("cannot write DICOM-SEG: duplicate SOPInstanceUID in the source slices", path=path,
                            fix="choose another output format (nifti, nrrd, seg.nrrd)")
    unique = sorted(set(repairs))
    for r in unique:
        log.info("DICOM-SEG source repair: %s", r)
    return unique


def label_to_frames(label: np.ndarray, affine: np.ndarray, datasets: list[Any]) -> np.ndarray:
    """Sample a label map onto the pixel grid of each source slice.

    Parameters
    ----------
    label:
        uint8 ``[i, j, k]`` label map on the grid of the series as read.
    affine:
        4x4 voxel-to-RAS+ (mm) matrix of ``label``.
    datasets:
        Source slice headers (ImagePositionPatient, ImageOrientationPatient,
        PixelSpacing in DICOM LPS mm).

    Returns
    -------
    numpy.ndarray
        uint8 ``(n_slices, Rows, Columns)`` in the order of ``datasets``;
        pixels falling outside the label grid are 0.
    """
    inv = np.linalg.inv(np.asarray(affine, dtype=np.float64))
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    frames = []
    shape = np.asarray(label.shape)
    for ds in datasets:
        rows, cols = int(ds.Rows), int(ds.Columns)
        ipp = np.asarray([float(v) for v in ds.ImagePositionPatient])
        iop = np.asarray([float(v) for v in ds.ImageOrientationPatient])
        dr, dc = (float(v) for v in ds.PixelSpacing)  # between rows, between columns
        row_dir, col_dir = iop[:3], iop[3:]  # direction of increasing column index, of increasing row index
        origin = inv[:3, :3] @ (lps_to_ras @ ipp) + inv[:3, 3]
        step_col = inv[:3, :3] @ (lps_to_ras @ (row_dir * dc))
        step_row = inv[:3, :3] @ (lps_to_ras @ (col_dir * dr))
        r = np.arange(rows, dtype=np.float64)[:, None, None]
        c = np.arange(cols, dtype=np.float64)[None, :, None]
        idx = np.rint(origin + r * step_row + c * step_col).astype(np.int64)  # (rows, cols, 3)
        inside = np.all((idx >= 0) & (idx < shape), axis=-1)
        frame = np.zeros((rows, cols), np.uint8)
        ii = idx[inside]
        frame[inside] = label[ii[:, 0], ii[:, 1], ii[:, 2]]
        frames.append(frame)
    return np.stack(frames)


def write_dicom_seg(
    label: np.ndarray,
    affine: np.ndarray,
    source_files: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    labels: Mapping[Any, str] | None = None,
    series_description: str = "kidneyseg segmentation",
    software_version: str | None = None,
) -> Path:
    """Write ``label`` as a DICOM Segmentation referencing the source series.

    Parameters
    ----------
    label, affine:
        uint8 ``[i, j, k]`` label map on the grid of the series as read, and its
        voxel-to-RAS+ affine (mm).
    source_files:
        The files of the source series.
    labels:
        ``{value: name}``; names of :func:`segment_codes` (any spelling: ``Tumour``,
        ``right kidney``) get their standard codes, other names the generic
        :func:`generic_code` with a warning.  Default KiTS23.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from kidneyseg import __version__
    from kidneyseg.io._common import atomic_path, check_output

    out_p = check_output(out, list(source_files))
    folder = Path(source_files[0]).parent if source_files else None
    datasets = read_sources(source_files)
    check_sources(datasets, folder)
    labels = {int(k): str(v) for k, v in (labels or get_task("kits23").labels).items()}
    frames = label_to_frames(np.asarray(label), affine, datasets)
    known = segment_codes()
    values = [v for v in sorted(labels) if v != 0]
    algo = hd.AlgorithmIdentificationSequence(
        name="kidneyseg", version=software_version or __version__, family=codes.DCM.ArtificialIntelligence
    )
    descriptions = []
    seg_array = np.zeros(frames.shape, np.uint8)
    for number, value in enumerate(values, start=1):
        name = labels[value]
        code = known.get(canonical_label_name(name))
        if code is None:
            code = generic_code()
            log.warning("DICOM-SEG: label %d '%s' has no standard code: written as SCT Tissue with segment "
                        "label '%s' (known names: %s)", value, name, name, ", ".join(sorted(known)))
        desc = hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=name,
            segmented_property_category=code.category,
            segmented_property_type=code.type,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algo,
            anatomic_regions=[code.region] if code.region is not None else None,
            tracking_uid=hd.UID(),
            tracking_id=f"kidneyseg {name}",
            display_color=hd.color.CIELabColor.from_rgb(*color_of(name)),
        )
        if code.modifier is not None:  # laterality (highdicom's SegmentDescription has no argument for it)
            desc.SegmentedPropertyTypeModifierCodeSequence = [hd.sr.CodedConcept.from_code(code.modifier)]
        descriptions.append(desc)
        seg_array[frames == value] = number
    if not values:
        raise DicomSegError("cannot write DICOM-SEG: the model declares no foreground labels",
                            fix="choose another output format")
    seg = hd.seg.Segmentation(
        source_images=datasets,
        pixel_array=seg_array,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=int(datasets[0].get("SeriesNumber") or 0) + 900,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="kidneyseg",
        manufacturer_model_name="kidneyseg",
        software_versions=software_version or __version__,
        device_serial_number="0",
        series_description=series_description,
        omit_empty_frames=bool(seg_array.any()),
    )
    with atomic_path(out_p) as tmp:
        seg.save_as(str(tmp))
    return out_p
