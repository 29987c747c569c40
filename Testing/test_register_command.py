"""``cspineai register`` end to end: the output folder, its files and conventions, and refusal of unrelated pairs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from cspineai.cli import main
from cspineai.geometry import resample_like
from cspineai.io import read_volume, write_volume
from cspineai.volume import Volume
from test_registration import make_pair


@pytest.fixture(scope="module")
def pair_files(tmp_path_factory) -> dict:
    pair = make_pair(strength=1.0)
    folder = tmp_path_factory.mktemp("pair")
    return {**pair, "ct_path": write_volume(pair["ct"], folder / "ct_input.nii.gz"),
            "mri_path": write_volume(pair["mri"], folder / "mri_input.nii.gz")}


def test_identity_registration_writes_the_warped_ct_the_field_the_transform_and_the_figures(pair_files, tmp_path):
    out = tmp_path / "reg"
    rc = main(["register", "--ct", str(pair_files["ct_path"]), "--mri", str(pair_files["mri_path"]), "--out", str(out),
               "--method", "identity"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["displacement_lps.nii.gz", "quality.json", "transform.h5",
                                                     "warped_ct.nii.gz"]
    mri = pair_files["mri"]
    warped = read_volume(out / "warped_ct.nii.gz")
    expected = resample_like(pair_files["ct"], mri, default_value=float(pair_files["ct"].array.min()))
    np.testing.assert_allclose(warped.array, expected.array, atol=1e-3)
    np.testing.assert_allclose(warped.origin, mri.origin, atol=1e-4)
    field = sitk.ReadImage(str(out / "displacement_lps.nii.gz"))
    assert field.GetNumberOfComponentsPerPixel() == 3 and field.GetSize() == mri.size_ijk
    assert not sitk.GetArrayFromImage(field).any()
    quality = json.loads((out / "quality.json").read_text(encoding="utf-8"))
    assert quality["method"] == "identity" and quality["folding_percent"] == 0.0
    assert quality["field"]["frame"] == "LPS"
    # no input names: they may identify the patient
    assert "_input" not in (out / "quality.json").read_text(encoding="utf-8")


def test_written_field_and_transform_map_mri_points_like_the_api(pair_files, tmp_path):
    """A known constant LPS shift written by the command reads back the same way through both files."""
    from cspineai import registration

    shift = np.array([2.0, -1.5, 3.0])
    real_register = registration.register

    def shifted(ct, mri, **kwargs):
        result = real_register(ct, mri, method="identity")
        result.displacement_ras = np.broadcast_to(shift * [-1, -1, 1], result.displacement_ras.shape).astype(
            np.float32)
        return result

    out = tmp_path / "reg"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(registration, "register", shifted)
        assert main(["register", "--ct", str(pair_files["ct_path"]), "--mri", str(pair_files["mri_path"]),
                     "--out", str(out), "--method", "identity"]) == 0
    point = pair_files["mri_points"][2]
    transform = sitk.ReadTransform(str(out / "transform.h5"))
    np.testing.assert_allclose(transform.TransformPoint(tuple(point)), point + shift, atol=1e-5)
    field = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "displacement_lps.nii.gz")))
    np.testing.assert_allclose(field[3, 10, 10], shift, atol=1e-6)


def test_refuses_ct_and_mri_without_overlap_with_a_message_and_no_output_folder(pair_files, tmp_path, capsys):
    ct = pair_files["ct"]
    far = Volume(ct.array, ct.spacing, (400.0, 400.0, 900.0), np.eye(3), "CT_bone", "far")
    far_path = write_volume(far, tmp_path / "far_ct.nii.gz")
    out = tmp_path / "reg"
    rc = main(["register", "--ct", str(far_path), "--mri", str(pair_files["mri_path"]), "--out", str(out),
               "--method", "identity"])
    assert rc == 2
    assert "do not cover the same region" in capsys.readouterr().err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".reg")]


def test_refuses_an_existing_output_folder_before_any_work(pair_files, tmp_path, capsys):
    out = tmp_path / "reg"
    out.mkdir()
    (out / "keep.txt").write_text("earlier results", encoding="utf-8")
    rc = main(["register", "--ct", str(pair_files["ct_path"]), "--mri", str(pair_files["mri_path"]), "--out", str(out),
               "--method", "identity"])
    assert rc == 2 and "already exists" in capsys.readouterr().err
    assert (out / "keep.txt").read_text(encoding="utf-8") == "earlier results"


def test_bspline_baseline_refuses_a_ct_without_bone_naming_the_problem(pair_files, tmp_path, capsys):
    ct = pair_files["ct"]
    soft_tissue_only = ct.with_array(np.minimum(ct.array, 100.0).astype(np.float32))
    boneless = write_volume(soft_tissue_only, tmp_path / "soft_ct.nii.gz")
    out = tmp_path / "reg"
    rc = main(["register", "--ct", str(boneless), "--mri", str(pair_files["mri_path"]), "--out", str(out),
               "--method", "bspline"])
    assert rc == 2 and "no voxel above 200 HU" in capsys.readouterr().err
    assert not out.exists()
