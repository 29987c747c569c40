"""Volume I/O: round trips keep physical geometry; every bad input is refused with a message naming it and no output."""

from __future__ import annotations

import gzip
import re

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from cspineai import CSpineInputError, Volume
from cspineai.cli import main as cli
from cspineai.geometry import physically_equal, require_plane, require_same_grid
from cspineai.io import list_dicom_series, read_volume, write_volume
from helpers import make_volume, write_dicom_series

KINDS = ["axial", "sagittal", "oblique", "left_handed"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_file_round_trip_is_physically_equal(tmp_path, kind, suffix):
    volume = make_volume(kind)
    path = write_volume(volume, tmp_path / f"v{suffix}")
    again = read_volume(path)
    assert physically_equal(volume, again)
    assert again.source == str(path)


@pytest.mark.parametrize("kind", KINDS)
def test_nifti_header_agrees_with_nibabel_in_ras(tmp_path, kind):
    # An independent reader checks our LPS->RAS bookkeeping: nibabel's affine is IJK->RAS.
    volume = make_volume(kind)
    path = write_volume(volume, tmp_path / "v.nii.gz")
    again = read_volume(path)
    assert np.allclose(nib.load(path).affine, again.ijk_to_ras, atol=1e-4)
    world_a = again.ijk_to_ras @ np.array([3, 5, 7, 1.0])
    world_b = volume.ijk_to_ras @ np.array([3, 5, 7, 1.0])
    if kind != "left_handed":  # a left-handed image may come back with k flipped: same image, other index
        assert np.allclose(world_a, world_b, atol=1e-4)


def test_real_mri_reads_with_its_geometry(real_t1_dir):
    volume = read_volume(real_t1_dir / "t1w.nii.gz", modality="T1_sag")
    assert volume.shape == (77, 76, 42)
    assert np.allclose(volume.spacing, 1.0)
    assert np.allclose(nib.load(real_t1_dir / "t1w.nii.gz").affine, volume.ijk_to_ras, atol=1e-4)
    mask = read_volume(real_t1_dir / "t1w_seg-manual.nii.gz", allow_constant=True)
    assert set(np.unique(mask.array)) == {0, 1}


def test_dicom_series_reads_like_the_volume_it_came_from(tmp_path):
    volume = make_volume("sagittal", shape=(6, 20, 16))
    folder = write_dicom_series(volume, tmp_path / "dicom")
    again = read_volume(folder)
    assert physically_equal(volume, again)


def test_dicom_conversion_writes_no_patient_identifiers(tmp_path):
    folder = write_dicom_series(make_volume("axial", shape=(6, 20, 16)), tmp_path / "dicom", patient_name="DOE^JANE")
    out = tmp_path / "out.nrrd"
    assert cli(["convert", str(folder), str(out)]) == 0
    data = out.read_bytes()
    assert b"DOE" not in data and b"PID-12345" not in data


# --- bad inputs: a clear message naming the input, and no output file ---------------------------------------------
def convert_fails(tmp_path, source, capsys, *extra) -> str:
    """Run ``cspineai convert`` on a bad input; check it fails with exit 2 and writes nothing; return the message."""
    out = tmp_path / "out" / "converted.nii.gz"
    assert cli(["convert", str(source), str(out), *extra]) == 2
    assert not out.exists()
    assert not out.parent.exists() or not any(out.parent.iterdir()), "a partial output was left behind"
    message = capsys.readouterr().err
    assert str(source) in message
    return message


def test_reports_error_when_file_is_missing(tmp_path, capsys):
    message = convert_fails(tmp_path, tmp_path / "nothing.nii.gz", capsys)
    assert "not found" in message


def test_reports_error_when_file_is_corrupt(tmp_path, capsys):
    path = tmp_path / "corrupt.nii.gz"
    path.write_bytes(gzip.compress(b"this is not a NIfTI header" * 20))
    message = convert_fails(tmp_path, path, capsys)
    assert "cannot be read" in message


def test_reports_error_when_file_is_truncated(tmp_path, capsys):
    good = write_volume(make_volume(), tmp_path / "good.nrrd", compress=False)
    path = tmp_path / "truncated.nrrd"
    path.write_bytes(good.read_bytes()[:-500])
    message = convert_fails(tmp_path, path, capsys)
    assert "cannot be read" in message


def test_reports_error_when_file_is_empty(tmp_path, capsys):
    path = tmp_path / "empty.nii.gz"
    path.touch()
    assert "empty" in convert_fails(tmp_path, path, capsys)


def test_reports_error_for_a_2d_image(tmp_path, capsys):
    path = tmp_path / "slice.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.arange(64, dtype=np.int16).reshape(8, 8)), str(path))
    assert "2-D" in convert_fails(tmp_path, path, capsys)


def test_reports_error_for_a_single_slice_volume(tmp_path, capsys):
    path = write_volume(make_volume(shape=(1, 20, 16)), tmp_path / "one_slice.nii.gz")
    assert "single 2-D slice" in convert_fails(tmp_path, path, capsys)


def test_reports_error_for_a_constant_volume(tmp_path, capsys):
    volume = make_volume()
    path = write_volume(volume.with_array(np.zeros_like(volume.array)), tmp_path / "blank.nii.gz")
    assert "every voxel has the value 0" in convert_fails(tmp_path, path, capsys)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_reports_error_for_non_finite_voxels(tmp_path, capsys, bad):
    volume = make_volume(dtype=np.float32)
    array = volume.array.copy()
    array[3, 4, 5] = bad
    path = write_volume(volume.with_array(array), tmp_path / "nonfinite.nii.gz")
    assert "1 voxel(s) are not finite" in convert_fails(tmp_path, path, capsys)


@pytest.mark.parametrize("spacing", [(0.7, 0.8, 25.0), (0.01, 0.8, 2.5), (0.7, 0.0, 2.5)])
def test_reports_error_for_absurd_spacing(tmp_path, capsys, spacing):
    path = tmp_path / "spacing.mha"
    image = make_volume().to_sitk()
    image.SetSpacing(spacing if min(spacing) > 0 else (0.7, 1.0, 2.5))
    sitk.WriteImage(image, str(path))
    if min(spacing) == 0:  # SimpleITK refuses to set a zero spacing: write a valid file, then break its header
        path.write_bytes(re.sub(rb"ElementSpacing = [^\n]*", b"ElementSpacing = 0.7 0 2.5", path.read_bytes()))
    assert "outside the plausible range" in convert_fails(tmp_path, path, capsys)


def test_reports_error_for_a_non_rotation_direction(tmp_path, capsys):
    path = tmp_path / "skewed.mha"
    sitk.WriteImage(make_volume().to_sitk(), str(path))
    text = path.read_bytes().replace(b"TransformMatrix = 1 0 0 0 1 0 0 0 1", b"TransformMatrix = 1 0 0 0.5 1 0 0 0 1")
    path.write_bytes(text)
    assert "not a rotation" in convert_fails(tmp_path, path, capsys)


def test_reports_error_for_unsupported_file_type(tmp_path, capsys):
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"\xff\xd8\xff" + b"0" * 100)
    assert "unsupported file type" in convert_fails(tmp_path, path, capsys)


def test_reports_error_for_a_wrongly_oriented_series(tmp_path, capsys):
    path = write_volume(make_volume("sagittal"), tmp_path / "sagittal.nii.gz")
    message = convert_fails(tmp_path, path, capsys, "--plane", "axial")
    assert "expected an axial acquisition" in message and "sagittal" in message


def test_reports_error_for_dicom_series_with_missing_slices(tmp_path, capsys):
    folder = write_dicom_series(make_volume(shape=(8, 20, 16)), tmp_path / "dicom", skip=(4,))
    assert "1 slice(s) appear to be missing" in convert_fails(tmp_path, folder, capsys)


def test_reports_error_for_dicom_series_with_uneven_slices(tmp_path, capsys):
    folder = write_dicom_series(make_volume(shape=(8, 20, 16)), tmp_path / "dicom", shift_slice=(3, 0.8))
    assert "not uniformly spaced" in convert_fails(tmp_path, folder, capsys)


def test_lists_series_when_a_dicom_folder_holds_several(tmp_path, capsys):
    folder = tmp_path / "dicom"
    write_dicom_series(make_volume(shape=(5, 20, 16)), folder, series_uid="1.2.3.4.1", description="T1 SAG")
    write_dicom_series(
        make_volume(shape=(5, 20, 16), seed=1), folder / "b", series_uid="1.2.3.4.2", description="T2 SAG"
    )
    for f in (folder / "b").iterdir():
        f.rename(folder / ("b_" + f.name))
    (folder / "b").rmdir()
    message = convert_fails(tmp_path, folder, capsys)
    assert "holds 2 DICOM series" in message and "1.2.3.4.1 (T1 SAG" in message and "1.2.3.4.2 (T2 SAG" in message
    assert "DOE" not in message
    assert len(list_dicom_series(folder)) == 2
    chosen = read_volume(folder, series_uid="1.2.3.4.2")
    assert chosen.shape == (5, 20, 16)


def test_reports_error_for_mismatched_grids():
    a = make_volume(shape=(12, 20, 16), source="T1.nii.gz")
    b = make_volume(shape=(12, 20, 18), source="mask.nii.gz")
    with pytest.raises(CSpineInputError, match=r"mask\.nii\.gz.*must share one voxel grid.*T1\.nii\.gz"):
        require_same_grid(a, b, "the image and its mask")


def test_plane_check_accepts_the_right_plane():
    require_plane(make_volume("sagittal"), "sagittal")
    require_plane(make_volume("oblique"), "axial")


def test_refuses_to_overwrite_an_existing_output(tmp_path, capsys):
    source = write_volume(make_volume(), tmp_path / "in.nii.gz")
    out = tmp_path / "exists.nii.gz"
    out.write_bytes(b"user's file")
    assert cli(["convert", str(source), str(out)]) == 2
    assert out.read_bytes() == b"user's file"
    assert "already exists" in capsys.readouterr().err


def test_write_is_atomic_when_the_writer_fails(tmp_path, monkeypatch):
    target = tmp_path / "out.nii.gz"

    def half_write(image, name, useCompression=True):  # noqa: N803 (SimpleITK's keyword)
        with open(name, "wb") as f:
            f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(sitk, "WriteImage", half_write)
    with pytest.raises(RuntimeError, match="disk full"):
        write_volume(make_volume(), target)
    assert list(tmp_path.iterdir()) == []


def test_volume_rejects_an_array_of_another_shape():
    with pytest.raises(ValueError, match="does not match"):
        make_volume().with_array(np.zeros((2, 2, 2)))


def test_volume_knows_its_plane():
    assert make_volume("sagittal").plane == "sagittal"
    assert Volume(np.zeros((3, 3, 3))).plane == "axial"
