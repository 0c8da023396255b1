"""DICOM-SEG output: references the source series, standard codes, repairs and refusals."""

from __future__ import annotations

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
pytest.importorskip("highdicom")

from kidneyseg.io.dicomseg import DicomSegError, check_sources, label_to_frames, read_sources, write_dicom_seg  # noqa: E402


def write_ct_series(folder, n=6, rows=24, cols=20, spacing=(1.5, 1.25), dz=2.0, origin=(-20.0, -30.0, 100.0),
                    frame_of_reference=True):
    """Write a small well-formed CT series with pydicom; returns (files, series_uid, affine).

    The returned affine maps label indices ``[col, row, slice]`` to RAS+ mm.
    """
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    study, series, for_uid = generate_uid(), generate_uid(), generate_uid()
    files = []
    for k in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        sop = generate_uid()
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        f = folder / f"slice{k:03d}.dcm"
        ds = FileDataset(str(f), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        if frame_of_reference:
            ds.FrameOfReferenceUID = for_uid
        ds.PatientName = "Phantom^Kidney"
        ds.PatientID = "P1"
        ds.PatientBirthDate = ""
        ds.PatientSex = "O"
        ds.StudyDate = "20240101"
        ds.StudyTime = "120000"
        ds.StudyID = "1"
        ds.AccessionNumber = ""
        ds.ReferringPhysicianName = ""
        ds.Modality = "CT"
        ds.SeriesNumber = 3
        ds.InstanceNumber = k + 1
        ds.Manufacturer = "test"
        ds.ImagePositionPatient = [origin[0], origin[1], origin[2] + k * dz]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [spacing[0], spacing[1]]
        ds.SliceThickness = dz
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = 0
        ds.RescaleSlope = 1
        ds.PositionReferenceIndicator = ""
        ds.PixelData = (np.full((rows, cols), 40, np.int16)).tobytes()
        ds.save_as(str(f), enforce_file_format=True)
        files.append(f)
    dr, dc = spacing
    affine = np.array([[-dc, 0, 0, -origin[0]], [0, -dr, 0, -origin[1]], [0, 0, dz, origin[2]], [0, 0, 0, 1.0]])
    return files, series, affine


def test_seg_references_series_with_codes(tmp_path):
    files, series_uid, affine = write_ct_series(tmp_path / "ct")
    label = np.zeros((20, 24, 6), np.uint8)  # [col, row, slice]
    label[4:12, 5:15, 1:5] = 1
    label[6:9, 7:10, 2:4] = 2
    label[10:12, 12:14, 3] = 3
    frames = label_to_frames(label, affine, read_sources(files))
    for k in range(6):
        np.testing.assert_array_equal(frames[k], label[:, :, k].T)
    out = write_dicom_seg(label, affine, files, tmp_path / "out" / "seg.dcm")
    seg = pydicom.dcmread(str(out))
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation Storage
    assert seg.Modality == "SEG"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid
    types = [s.SegmentedPropertyTypeCodeSequence[0].CodeValue for s in seg.SegmentSequence]
    assert types == ["64033007", "108369006", "367643001"]  # kidney, neoplasm, cyst (SNOMED CT)
    import highdicom as hd

    back = hd.seg.segread(str(out))
    vol = back.get_volume(combine_segments=True) if hasattr(back, "get_volume") else None
    assert back.number_of_segments == 3
    assert vol is None or int(np.asarray(vol.array).max()) == 3


def test_missing_frame_of_reference_is_refused_by_name(tmp_path):
    files, _, affine = write_ct_series(tmp_path / "ct", frame_of_reference=False)
    with pytest.raises(DicomSegError, match="FrameOfReferenceUID") as err:
        write_dicom_seg(np.ones((20, 24, 6), np.uint8), affine, files, tmp_path / "seg.dcm")
    assert "nifti" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "seg.dcm").exists()


def test_corrupt_source_is_an_input_error(tmp_path):
    from kidneyseg.errors import InputError

    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"not dicom at all")
    with pytest.raises(InputError):
        read_sources([bad])


def test_example_ct_dicom_repairs_sop_class_then_refuses(shared_data, tmp_path, caplog):
    folder = shared_data / "totalseg_example" / "example_ct_dicom"
    files = sorted(p for p in folder.iterdir() if p.is_file())
    datasets = read_sources(files)
    with pytest.raises(DicomSegError, match=r"SeriesInstanceUID|StudyInstanceUID"):
        check_sources(datasets, folder)
    assert all(str(ds.SOPClassUID) == "1.2.840.10008.5.1.4.1.1.2" for ds in datasets)  # repaired from file meta


def test_each_label_has_its_own_code_and_colour(tmp_path, caplog):
    """Every default label gets its SNOMED CT code (laterality for the sides) and its colour; an unknown
    name gets the generic Tissue code, never Kidney, with a warning."""
    import highdicom as hd

    from kidneyseg.labels import color_of

    files, _, affine = write_ct_series(tmp_path / "ct", n=3)
    names = {1: "kidney", 2: "Tumour", 3: "cyst", 4: "liver", 5: "pancreas", 6: "spleen", 7: "right kidney",
             8: "kidney_left", 9: "renal vein"}
    label = np.zeros((20, 24, 3), np.uint8)
    for v in names:
        label[2 * v, 3:6, 1] = v
    with caplog.at_level("WARNING", logger="kidneyseg.io.dicomseg"):
        out = write_dicom_seg(label, affine, files, tmp_path / "seg.dcm", labels={0: "background", **names})
    expected = {  # segment label: (category, type, type modifier, anatomic region)
        "kidney": ("91723000", "64033007", None, None),
        "Tumour": ("49755003", "108369006", None, "64033007"),
        "cyst": ("49755003", "367643001", None, "64033007"),
        "liver": ("91723000", "10200004", None, None),
        "pancreas": ("91723000", "15776009", None, None),
        "spleen": ("91723000", "78961009", None, None),
        "right kidney": ("91723000", "64033007", "24028007", None),
        "kidney_left": ("91723000", "64033007", "7771000", None),
        "renal vein": ("85756007", "85756007", None, None),
    }
    seg = pydicom.dcmread(str(out))
    found = {}
    for s in seg.SegmentSequence:
        mod = s.get("SegmentedPropertyTypeModifierCodeSequence")
        region = s.get("AnatomicRegionSequence")
        found[s.SegmentLabel] = (s.SegmentedPropertyCategoryCodeSequence[0].CodeValue,
                                 s.SegmentedPropertyTypeCodeSequence[0].CodeValue,
                                 mod[0].CodeValue if mod else None, region[0].CodeValue if region else None)
        assert all(c.CodingSchemeDesignator == "SCT" for c in s.SegmentedPropertyTypeCodeSequence)
        lab = tuple(int(v) for v in s.RecommendedDisplayCIELabValue)
        assert lab == hd.color.CIELabColor.from_rgb(*color_of(s.SegmentLabel)).value, s.SegmentLabel
    assert found == expected
    assert color_of("liver") != color_of("spleen") != color_of("kidney")
    assert "renal vein" in caplog.text and "Tissue" in caplog.text
    back = hd.seg.segread(str(out))  # highdicom reads it back
    assert back.number_of_segments == len(names)


def test_ultrasound_regions_in_the_code_table():
    """openkidney-us-regions: the cortex has its SNOMED CT code (50403003, Renal cortex); the medulla and the
    central echo complex (no code verified offline) stay Tissue within the Kidney; every label of the task is in
    the one table, so none falls back to the generic code.  (Ultrasound 2D images carry no slice geometry, so
    DICOM-SEG is written for DICOM series only: the mapping is checked at the table level.)"""
    from kidneyseg.io.dicomseg import RENAL_CORTEX, segment_codes
    from kidneyseg.labels import canonical_label_name, get_task

    table = segment_codes()
    task = get_task("openkidney-us-regions")
    names = [canonical_label_name(n) for v, n in task.labels.items() if v]
    assert set(names) <= set(table), names

    def coded(name):
        c = table[name]
        return (c.category.value, c.type.value, c.type.scheme_designator,
                None if c.region is None else c.region.value)

    assert RENAL_CORTEX == ("50403003", "SCT", "Renal cortex")
    assert coded("cortex") == ("91723000", "50403003", "SCT", None)
    assert table["cortex"].type.meaning == "Renal cortex"
    assert coded("medulla") == ("85756007", "85756007", "SCT", "64033007")
    assert coded("central_echo_complex") == ("85756007", "85756007", "SCT", "64033007")
    assert coded(canonical_label_name("central echo complex")) == coded("central_echo_complex")


def test_ultrasound_region_labels_written_with_their_codes(tmp_path, caplog):
    """The same labels on a DICOM series: Renal cortex written as SCT 50403003, no fallback warning."""
    files, _, affine = write_ct_series(tmp_path / "ct", n=3)
    label = np.zeros((20, 24, 3), np.uint8)
    label[2:5, 3:6, 1], label[8:10, 3:6, 1], label[12:15, 3:6, 1] = 1, 2, 3
    with caplog.at_level("WARNING", logger="kidneyseg.io.dicomseg"):
        out = write_dicom_seg(label, affine, files, tmp_path / "us_regions_seg.dcm",
                              labels={0: "background", 1: "central_echo_complex", 2: "medulla", 3: "cortex"})
    seg = pydicom.dcmread(str(out))
    types = {s.SegmentLabel: (s.SegmentedPropertyTypeCodeSequence[0].CodeValue,
                              s.SegmentedPropertyTypeCodeSequence[0].CodeMeaning) for s in seg.SegmentSequence}
    assert types["cortex"] == ("50403003", "Renal cortex")
    assert types["medulla"][0] == types["central_echo_complex"][0] == "85756007"
    assert "no standard code" not in caplog.text
