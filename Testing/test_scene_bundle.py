"""Whole scenes: .mrb and bundle-folder round trips into a fresh scene, slice pictures, the case writer, the demo."""

from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest

from cspineai.errors import CSpineInputError
from cspineai.geometry import physically_equal
from cspineai.series import BODY_VALUES, CORD, DISC_VALUES
from helpers import make_volume

pytest.importorskip("slicer")

from cspineai.scene import (  # noqa: E402
    Column,
    create_context,
    displacement_to_transform_node,
    heatmap_to_node,
    labelmap_to_segmentation_node,
    load_bundle,
    load_results,
    node_to_volume,
    render_slice_array,
    render_views_png,
    rows_to_table_node,
    save_bundle,
    save_bundle_directory,
    segment_infos,
    segmentation_node_to_labelmap,
    segmentation_to_labelmap_node,
    table_columns,
    table_node_to_rows,
    transform_node_to_displacement,
    volume_to_node,
    write_case_scene,
)

TABLE_COLUMNS = [Column("level", "string"), Column("slices", "int", "", "count"), Column("csa", "double", "mm2")]
TABLE_ROWS = [{"level": "C3", "slices": 3, "csa": 70.5}, {"level": "C4", "slices": 2, "csa": 61.0}]


def block_labels(image):
    array = np.zeros(image.shape, dtype=np.int16)
    k, j, i = (n // 4 for n in image.shape)
    array[k : 3 * k, j : 2 * j, i : 2 * i] = CORD
    array[k : 3 * k, 2 * j : 3 * j, 2 * i : 3 * i] = BODY_VALUES["C5"]
    array[:2, :2, :2] = DISC_VALUES["C2-C3"]
    return image.with_array(array)


@pytest.fixture
def populated():
    """A scene with one of each node kind this package makes, and the inputs it was made from."""
    context = create_context()
    image = make_volume("oblique")
    labels = block_labels(image)
    heat = image.with_array(np.linspace(0, 1, image.array.size, dtype=np.float32).reshape(image.shape))
    field = np.random.default_rng(5).normal(size=(*image.shape, 3))
    image_node = volume_to_node(image, "T1_sag", context=context)
    labelmap_to_segmentation_node(labels, "labels", reference_node=image_node, context=context)
    heatmap_to_node(heat, "saliency", context=context)
    rows_to_table_node(TABLE_ROWS, "Morphometry", TABLE_COLUMNS, context=context)
    transform = displacement_to_transform_node(field, image, "CT to MRI", context=context)
    moving = volume_to_node(make_volume("axial", seed=2), "CT_bone", context=context)
    moving.SetAndObserveTransformNodeID(transform.GetID())
    return context, {"image": image, "labels": labels, "heat": heat, "field": field}


def assert_scene_content(context, inputs):
    scene = context.scene
    image_node = scene.GetFirstNodeByName("T1_sag")
    assert physically_equal(node_to_volume(image_node), inputs["image"])
    segmentation = scene.GetFirstNodeByName("labels")
    infos = {info.label_value: info for info in segment_infos(segmentation)}
    assert infos[CORD].name == "spinal cord" and infos[CORD].terminology.type.value == "2748008"
    assert np.array_equal(
        segmentation_node_to_labelmap(segmentation, image_node, context).array, inputs["labels"].array
    )
    heat = scene.GetFirstNodeByName("saliency")
    assert np.allclose(node_to_volume(heat).array, inputs["heat"].array)
    assert heat.GetDisplayNode().GetColorNode().GetName() == "Inferno"
    assert not heat.GetDisplayNode().GetAutoWindowLevel()
    table = scene.GetFirstNodeByName("Morphometry")
    assert table_columns(table) == TABLE_COLUMNS
    assert table_node_to_rows(table) == TABLE_ROWS
    field, grid = transform_node_to_displacement(scene.GetFirstNodeByName("CT to MRI"))
    assert np.allclose(field, inputs["field"], atol=1e-6)
    assert np.allclose(grid.ijk_to_lps, inputs["image"].ijk_to_lps)
    assert scene.GetFirstNodeByName("CT_bone").GetParentTransformNode().GetName() == "CT to MRI"


def test_everything_survives_mrb_save_and_reload_into_a_fresh_scene(populated, tmp_path):
    context, inputs = populated
    path = save_bundle(tmp_path / "case.mrb", context)
    assert zipfile.is_zipfile(path)
    assert [p.name for p in tmp_path.iterdir()] == ["case.mrb"]  # no temporary left behind
    reloaded = load_bundle(path)
    assert reloaded.scene is not context.scene
    assert_scene_content(reloaded, inputs)


def test_everything_survives_directory_save_and_reload_into_a_fresh_scene(populated, tmp_path):
    context, inputs = populated
    mrml = save_bundle_directory(tmp_path / "case", context)
    assert mrml == tmp_path / "case" / "case.mrml" and mrml.is_file()
    assert any(p.name.endswith(".schema.tsv") for p in (tmp_path / "case").rglob("*"))  # table types and units
    assert_scene_content(load_bundle(tmp_path / "case"), inputs)


def test_reports_error_when_bundle_folder_exists_and_overwrite_is_not_allowed(populated, tmp_path):
    context, _ = populated
    (tmp_path / "case").mkdir()
    with pytest.raises(CSpineInputError, match="already exists"):
        save_bundle_directory(tmp_path / "case", context)


def test_reports_error_when_bundle_is_missing_or_not_a_bundle(tmp_path):
    with pytest.raises(CSpineInputError, match="not found"):
        load_bundle(tmp_path / "none.mrb")
    bogus = tmp_path / "bogus.mrb"
    bogus.write_bytes(b"not a zip")
    with pytest.raises(CSpineInputError, match="zip"):
        load_bundle(bogus)
    empty_zip = tmp_path / "empty.mrb"
    with zipfile.ZipFile(empty_zip, "w") as archive:
        archive.writestr("readme.txt", "no scene in here")
    cwd = os.getcwd()
    with pytest.raises(CSpineInputError, match="not a readable"):
        load_bundle(empty_zip)
    assert os.getcwd() == cwd  # Slicer's unzip changes directory; a failed read must not leave us elsewhere


def test_slice_views_render_background_heatmap_and_label_outline_to_a_non_trivial_png(populated, tmp_path):
    import matplotlib.image

    context, inputs = populated
    scene = context.scene
    background = scene.GetFirstNodeByName("T1_sag")
    labels = segmentation_to_labelmap_node(scene.GetFirstNodeByName("labels"), background, context=context)
    plain = render_slice_array("Axial", background, size=96, context=context)
    with_layers = render_slice_array(
        "Axial", background, scene.GetFirstNodeByName("saliency"), labels, size=96, context=context
    )
    assert plain.shape == (96, 96, 3) and plain.dtype == np.uint8
    assert plain.std() > 10  # anatomy, not a blank picture
    assert np.any(np.abs(with_layers.astype(int) - plain.astype(int)).sum(axis=-1) > 30)  # heatmap/labels visible

    path = render_views_png(
        tmp_path / "views.png", background, scene.GetFirstNodeByName("saliency"), labels, size=96, context=context
    )
    picture = matplotlib.image.imread(path)
    assert picture.shape[0] == 96 and picture.shape[1] == 3 * 96 + 2 * 4
    assert picture[..., :3].std() > 0.05

    # A segmentation node can be given directly, drawn filled or as outlines; filled covers more pixels.
    segmentation = scene.GetFirstNodeByName("labels")
    filled = render_slice_array("Axial", background, None, segmentation, label_outline=False, size=96, context=context)
    outlined = render_slice_array("Axial", background, None, segmentation, label_outline=True, size=96, context=context)
    changed = [int((np.abs(v.astype(int) - plain.astype(int)).sum(axis=-1) > 30).sum()) for v in (filled, outlined)]
    assert changed[0] > changed[1] > 0
    assert scene.GetFirstNodeByName("__cspineai_render_labels__") is None
    # Three different views: the axial, sagittal and coronal tiles are not copies of each other.
    tiles = [picture[:, n * 100 : n * 100 + 96, :3] for n in range(3)]
    assert not np.allclose(tiles[0], tiles[1]) and not np.allclose(tiles[1], tiles[2])


def synthetic_case():
    mri = make_volume("sagittal", shape=(10, 32, 24), spacing=(0.8, 0.8, 2.0), modality="T1_sag")
    ct = make_volume("axial", shape=(16, 24, 24), spacing=(0.7, 0.7, 1.5), modality="CT_bone", origin=(-20, 0, 80))
    displacement = np.zeros((*mri.shape, 3))
    displacement[..., 2] = 1.5  # LPS: 1.5 mm towards S
    return {"T1_sag": mri, "CT_bone": ct}, {"T1_sag": block_labels(mri), "CT_bone": block_labels(ct)}, displacement


def test_case_scene_bundle_and_picture_are_written_together(tmp_path):
    series, labels, displacement = synthetic_case()
    result = write_case_scene(series, labels, tmp_path / "out", displacement=displacement, view_size=64)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["case.mrb", "views.png"]
    scene = load_bundle(result.bundle).scene
    ct = scene.GetFirstNodeByName("CT_bone")
    assert ct.GetParentTransformNode().GetName() == "CT to MRI displacement"
    assert scene.GetFirstNodeByName("CT_bone segmentation").GetParentTransformNode() is not None
    assert scene.GetFirstNodeByName("T1_sag").GetParentTransformNode() is None
    field, _ = transform_node_to_displacement(ct.GetParentTransformNode())
    assert np.allclose(field[..., 2], 1.5) and np.allclose(field[..., :2], 0.0)  # S stays S in RAS
    rows = table_node_to_rows(scene.GetFirstNodeByName("Label volumes"))
    cord = next(r for r in rows if r["series"] == "T1_sag" and r["label"] == CORD)
    assert cord["voxels"] == int((labels["T1_sag"].array == CORD).sum())
    assert cord["volume"] == pytest.approx(cord["voxels"] * 0.8 * 0.8 * 2.0 / 1000, abs=1e-4)


def test_results_folder_loads_into_an_existing_scene_and_returns_its_nodes_by_role(tmp_path):
    series, labels, displacement = synthetic_case()
    write_case_scene(series, labels, tmp_path / "case", displacement=displacement, view_size=32)
    context = create_context()
    first = load_results(tmp_path / "case", context=context)
    second = load_results(tmp_path / "case", context=context)
    for nodes in (first, second):
        assert {"T1_sag", "CT_bone", "T1_sag segmentation", "transform", "label table", "mri", "ct"} <= set(nodes)
        assert nodes["mri"] is nodes["T1_sag"] and nodes["ct"] is nodes["CT_bone"]
        assert nodes["ct"].GetParentTransformNode() is nodes["transform"]
        assert physically_equal(node_to_volume(nodes["T1_sag"]), series["T1_sag"])
    assert first["T1_sag"] is not second["T1_sag"]  # the second load's own nodes
    with pytest.raises(CSpineInputError, match="no case.mrb"):
        load_results(tmp_path, context=context)


def test_case_writer_refuses_existing_folder_and_labels_on_another_grid(tmp_path):
    series, labels, _ = synthetic_case()
    (tmp_path / "out").mkdir()
    with pytest.raises(CSpineInputError, match="already exists"):
        write_case_scene(series, labels, tmp_path / "out")
    wrong = {"T1_sag": labels["CT_bone"]}
    with pytest.raises(CSpineInputError, match="share one voxel grid"):
        write_case_scene(series, wrong, tmp_path / "other")
    assert not (tmp_path / "other").exists()


@pytest.mark.slow
def test_demo_scene_only_writes_the_ground_truth_scene_and_a_picture(tmp_path, capsys):
    from cspineai.cli import main

    assert main(["demo", "--scene-only", "--out", str(tmp_path / "demo"), "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "case.mrb" in out and "views.png" in out
    assert zipfile.is_zipfile(tmp_path / "demo" / "case.mrb")
    reloaded = load_bundle(tmp_path / "demo" / "case.mrb").scene
    for name in ("CT_bone", "CT_tissue", "T1_sag", "T2_sag", "T2_tra"):
        assert reloaded.GetFirstNodeByName(name) is not None, name
    assert reloaded.GetFirstNodeByName("CT_bone").GetParentTransformNode() is not None
    assert main(["demo", "--scene-only", "--out", str(tmp_path / "demo")]) == 2  # exists, no --overwrite: refused
