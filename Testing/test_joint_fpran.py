"""Joint training of FPRAN with the neck-pain classifier (paper 000 §2.4: L = L_class + λ_sim L_sim + λ_reg L_reg)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cspineai.errors import CSpineInputError
from cspineai.manifest import read_manifest
from cspineai.nn.classifier import build_classifier
from cspineai.nn.fpran import sample_moving
from cspineai.tasks.pain import FPRAN_BASE, LoadPairedSeriesd, input_sizes, mirrored_base, write_tiny_cohort
from cspineai.training.config import load_config, resolve_config
from cspineai.training.tasks import get_task

REPO = Path(__file__).resolve().parents[1]
TINY = ["task_options.sagittal_size=[8,32,32]", "task_options.axial_size=[8,32,32]", "model.widths=[4,8,8,8]",
        "model.dropout=0.0", "task_options.aux_findings=0", "model.fpran.hidden=8"]
# The NCC window must fit the 8-slice tiny sagittal grid (the paper's 9 needs 9 slices).
JOINT = ["task_options.fpran_sim=1", "task_options.fpran_reg=1", "task_options.fpran_ncc_window=5"]
AXIAL, SAGITTAL = "CT_bone", "T1_sag"


@pytest.fixture(scope="module")
def tiny_manifest(tmp_path_factory) -> Path:
    return write_tiny_cohort(tmp_path_factory.mktemp("tiny_joint"), n_cases=4)


def tiny_config(manifest: Path, *extra: str) -> dict:
    return load_config(REPO / "Training" / "configs" / "pain_cpu.yaml", [f"manifest={manifest}", *TINY, *extra])


def batch_of(task, config: dict, manifest: Path, train: bool = False) -> dict:
    transform = task.transforms(config, train=train)
    items = [transform(item) for item in task.data_items(read_manifest(manifest), config)]
    from monai.data import list_data_collate

    return list_data_collate(items)


def inputs_of(batch: dict, config: dict) -> dict:
    return {name: batch[name].float() for name in input_sizes(config)}


def test_joint_mode_is_off_by_default_and_leaves_model_items_and_outputs_unchanged(tiny_manifest):
    task = get_task("pain")
    config = tiny_config(tiny_manifest)
    assert config["task_options"]["fpran_sim"] == 0.0
    model = task.build_model(config)
    assert model.fpran is None and not any(k.startswith("fpran.") for k in model.state_dict())
    batch = batch_of(task, config, tiny_manifest)
    assert FPRAN_BASE not in batch
    _, outputs = task.step(model, batch, config)
    assert not any(k.startswith("loss_fpran_") for k in outputs)


def test_zero_initialised_fpran_reproduces_the_header_alignment_of_the_working_grids(tiny_manifest):
    from cspineai.geometry import resample_like
    from cspineai.io import read_volume
    from cspineai.preprocess import grid_for_size, prepare_series

    torch.manual_seed(0)
    task = get_task("pain")
    config = tiny_config(tiny_manifest, *JOINT)
    model = task.build_model(config).eval()
    case = read_manifest(tiny_manifest)[1]  # label 1: a bright block in both series
    item = task.data_items([case], config)[0]
    loaded = LoadPairedSeriesd(input_sizes(config), fpran_base=True)(item)
    base = torch.as_tensor(loaded[FPRAN_BASE])[None]
    ct, mri = torch.as_tensor(loaded[AXIAL])[None], torch.as_tensor(loaded[SAGITTAL])[None]
    with torch.no_grad():
        out = model({AXIAL: ct, SAGITTAL: mri}, return_features=True, fpran_base=base)
    warped = out.registration.warped_ct
    assert tuple(warped.shape) == tuple(mri.shape)
    assert torch.allclose(out.registration.displacement, torch.zeros_like(out.registration.displacement))
    # L = I and ψ = 0: the CT sampled through R alone ...
    by_base = sample_moving(ct, base, None, mri.shape[2:])
    assert torch.allclose(warped, by_base, atol=1e-6)
    # ... which is the CT working grid resampled in physical space onto the MRI working grid (headers only).
    sizes = input_sizes(config)
    grids = {name: prepare_series(read_volume(case.path(name)), name, grid_for_size(name, sizes[name])).grid
             for name in (AXIAL, SAGITTAL)}
    physical = resample_like(grids[AXIAL], grids[SAGITTAL], "linear", default_value=-1.0).array
    # Points inside the CT grid's outer voxel centres (ITK extends the edge half a voxel, grid_sample fades it to 0).
    inside = (physical >= 0) & (sample_moving(torch.ones_like(ct), base, None, mri.shape[2:])[0, 0] > 1 - 1e-6).numpy()
    assert inside.sum() > 0.2 * inside.size and float(physical[inside].max()) > 0.5  # the block is in view
    np.testing.assert_allclose(warped[0, 0].numpy()[inside], physical[inside], atol=1e-4)


def test_joint_loss_is_finite_adds_both_terms_and_reports_them_as_figures(tiny_manifest):
    task = get_task("pain")
    config = tiny_config(tiny_manifest, *JOINT, "task_options.aux_findings=2.0")  # with the CPU protocol's aux head
    torch.manual_seed(0)
    model = task.build_model(config).train()
    batch = batch_of(task, config, tiny_manifest, train=True)
    assert tuple(batch[FPRAN_BASE].shape) == (4, 4, 4)
    loss, outputs = task.step(model, batch, config)
    assert torch.isfinite(loss)
    assert outputs["loss_fpran_sim"].shape == (4,) and outputs["loss_fpran_reg"].shape == (4,)
    assert float(outputs["loss_fpran_sim"][0]) < 0  # -local NCC² of two overlapping images
    figures = task.compute_metrics({k: v if isinstance(v, list) else v.detach() for k, v in outputs.items()}, config)
    assert np.isfinite(figures["loss_fpran_sim"]) and np.isfinite(figures["loss_fpran_reg"])
    loss.backward()
    head = [model.fpran.level4.head.weight, *(sam.head.weight for sam in model.fpran.fine)]
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in head)
    assert float(model.fpran.level4.affine.params.weight.grad.abs().sum()) > 0


def test_registration_loss_reaches_both_backbones_but_never_the_pain_logits(tiny_manifest):
    from cspineai.tasks.pain import fpran_loss

    task = get_task("pain")
    config = tiny_config(tiny_manifest, *JOINT, "task_options.fpran_similarity=mind")
    torch.manual_seed(0)
    model = task.build_model(config).eval()
    for head in [model.fpran.level4.head, *(sam.head for sam in model.fpran.fine)]:
        torch.nn.init.normal_(head.weight, std=0.05)  # as after some training: zero heads pass no gradient back
    batch = batch_of(task, config, tiny_manifest)
    inputs, base = inputs_of(batch, config), batch[FPRAN_BASE].float()
    out = model(inputs, return_features=True, fpran_base=base)
    assert torch.equal(out.logits, model(inputs))  # the pain logits do not depend on FPRAN
    registration_loss, _ = fpran_loss(config)(inputs[SAGITTAL], out.registration.warped_ct,
                                              out.registration.displacement_voxels)
    registration_loss.backward()
    for name in (AXIAL, SAGITTAL):
        grad = model.branches[name].stages[0].unit1.conv.weight.grad
        assert grad is not None and float(grad.abs().sum()) > 0, name
    assert model.head.weight.grad is None
    model.zero_grad()
    torch.nn.functional.cross_entropy(out.logits, batch["label"].long()).backward(inputs=list(model.fpran.parameters()))
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in model.fpran.parameters())


def test_mirror_of_a_case_mirrors_its_base_transform_so_the_pair_stays_aligned(tiny_manifest):
    task = get_task("pain")
    config = tiny_config(tiny_manifest, *JOINT, "task_options.mirror_prob=1.0", "task_options.affine_prob=0.0",
                         "task_options.intensity_jitter=0.0", "task_options.noise_std=0.0")
    item = task.data_items(read_manifest(tiny_manifest)[1:2], config)[0]
    plain = task.transforms(config, train=False)(dict(item))
    mirrored = task.transforms(config, train=True)(dict(item))
    base, base_m = plain[FPRAN_BASE].numpy(), mirrored[FPRAN_BASE].numpy()
    assert not np.allclose(base, base_m)
    np.testing.assert_allclose(mirrored_base(base_m, 0, 2), base, atol=1e-6)  # mirroring twice gives R back
    ct, ct_m = (torch.as_tensor(x[AXIAL])[None].float() for x in (plain, mirrored))
    size = plain[SAGITTAL].shape[1:]
    assert torch.allclose(ct_m, ct.flip(4), atol=1e-5)  # axial LR = W, sagittal LR = D
    warped = sample_moving(ct, torch.as_tensor(base)[None], None, size)
    warped_m = sample_moving(ct_m, torch.as_tensor(base_m)[None], None, size)
    assert float(warped.abs().max()) > 0.5
    # The mirrored CT through the mirrored R is the mirror (along the MRI's LR axis) of the CT through R.
    assert torch.allclose(warped_m, warped.flip(2), atol=1e-4)
    assert torch.allclose(torch.as_tensor(mirrored[SAGITTAL]), torch.as_tensor(plain[SAGITTAL]).flip(1), atol=1e-5)


def test_joint_model_saves_and_reloads_strictly_from_its_stored_config(tiny_manifest, tmp_path):
    task = get_task("pain")
    config = tiny_config(tiny_manifest, *JOINT)
    torch.manual_seed(0)
    model = task.build_model(config)
    batch = batch_of(task, config, tiny_manifest)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loss, _ = task.step(model.train(), batch, config)
    loss.backward()
    optimiser.step()  # the zero-initialised FPRAN layers move off zero
    torch.save({"model": model.state_dict(), "config": config}, tmp_path / "joint.pt")

    state = torch.load(tmp_path / "joint.pt", map_location="cpu", weights_only=True)
    stored = resolve_config(dict(state["config"]), "joint.pt")
    reloaded = task.build_model(stored)
    reloaded.load_state_dict(state["model"], strict=True)
    again = build_classifier(model.config)  # the classifier's own stored configuration builds the same network
    again.load_state_dict(state["model"], strict=True)
    inputs, base = inputs_of(batch, config), batch[FPRAN_BASE].float()
    with torch.no_grad():
        a = model.eval()(inputs, return_features=True, fpran_base=base)
        b = reloaded.eval()(inputs, return_features=True, fpran_base=base)
    assert torch.equal(a.logits, b.logits)
    assert torch.equal(a.registration.displacement, b.registration.displacement)
    assert float(a.registration.displacement.abs().max()) > 0


def test_predict_pain_runs_a_joint_model_and_ignores_its_fpran_head(tiny_manifest):
    from cspineai.io import read_volume
    from cspineai.prediction import predict_pain

    task = get_task("pain")
    config = tiny_config(tiny_manifest, *JOINT)
    torch.manual_seed(0)
    joint = task.build_model(config)
    plain = build_classifier({**joint.config, "fpran": None})
    plain.load_state_dict({k: v for k, v in joint.state_dict().items() if not k.startswith("fpran.")}, strict=True)
    case = read_manifest(tiny_manifest)[0]
    volumes = {name: read_volume(case.path(name)) for name in (AXIAL, SAGITTAL)}
    with_head, without = predict_pain(volumes, joint), predict_pain(volumes, plain)
    assert 0.0 <= with_head.probability <= 1.0
    assert with_head.probability == pytest.approx(without.probability, abs=1e-7)


@pytest.mark.parametrize("backbone", ["resnet", "vit"])
def test_fpran_on_a_monai_baseline_is_refused_with_a_clear_message(tiny_manifest, backbone):
    with pytest.raises(CSpineInputError, match=f"'abpdc' backbone; the '{backbone}' baseline has none"):
        build_classifier({"backbone": backbone, "fpran": {}})
    config = tiny_config(tiny_manifest, *JOINT, f"model.backbone={backbone}")
    with pytest.raises(CSpineInputError, match="fpran_sim: 0"):
        get_task("pain").build_model(config)


def test_fpran_settings_that_cannot_work_are_refused_before_training(tiny_manifest):
    with pytest.raises(CSpineInputError, match="four-level pyramid"):
        build_classifier({"widths": [4, 8, 8], "fpran": {}})
    with pytest.raises(CSpineInputError, match="unknown FPRAN option"):
        build_classifier({"fpran": {"hiden": 8}})
    task = get_task("pain")
    with pytest.raises(CSpineInputError, match="fpran_ncc_window"):
        task.build_model(tiny_config(tiny_manifest, "task_options.fpran_sim=1"))  # 9 > the 8 tiny sagittal slices
    with pytest.raises(CSpineInputError, match="fpran_similarity"):
        task.build_model(tiny_config(tiny_manifest, *JOINT, "task_options.fpran_similarity=mi"))


def test_a_joint_run_starts_from_the_shipped_classifier_with_a_fresh_fpran_head():
    from cspineai.models.registry import find_model, load_model_state
    from cspineai.tasks.pain import PainTask
    from cspineai.training.config import load_config
    from cspineai.training.init_from import initialise_weights

    config = load_config(REPO / "Training" / "configs" / "pain_cpu.yaml",
                         ["init_from=pain-abpdc-t1sag-ctbone", "task_options.fpran_sim=1"])
    model = PainTask().build_model(config)
    fresh = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("fpran.")}
    assert fresh
    initialise_weights(model, config)
    shipped = load_model_state(find_model("pain-abpdc-t1sag-ctbone"))["model"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, fresh[key] if key.startswith("fpran.") else shipped[key]), key
