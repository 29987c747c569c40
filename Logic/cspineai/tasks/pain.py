"""``pain``: train the two-branch postoperative neck-pain classifier of paper 000 (methods.md sections 2 and 8).

Data: for every case of the manifest, the two series of the configured pair (``task_options.series``, default
``T1_sag`` + ``CT_bone``, the paper's best) and the binary ``label``. Each series goes through *exactly* the
preprocessing of inference (:func:`cspineai.preprocess.prepare_series`: its own acquisition geometry in canonical
order, resampled onto a fixed working grid per modality, intensities normalised per modality, CT windows as the
series' name says), so what the network sees in training is what :func:`cspineai.prediction.predict_pain` feeds it.
The working sizes are ``task_options.sagittal_size`` / ``axial_size`` ``(D, H, W)``; the defaults are the working
grids of :mod:`cspineai.preprocess`, smaller ones (the reduced CPU protocol) keep the same field of view with a
coarser spacing (:func:`cspineai.preprocess.grid_for_size`). The model stores its sizes, so a model trained on a
reduced grid is always fed that grid.

Augmentation (training only; the deterministic preprocessing comes first so that the engine's caches hold it):

- intensity jitter per series: random scale and shift of the normalised intensities, a gamma change, Gaussian noise;
- a left/right mirror of the *whole case* (both series together, each along its own LR axis, one coin per case);
- with ``affine_prob`` > 0, a small in-plane rotation, translation (mm) and scaling per series (the two series are
  separate acquisitions, positioned independently); never a tilt through the thick slices.
  Anterior/posterior and superior/inferior flips are never used: the order of levels and of body, canal and posterior
  elements is anatomy the network must learn, and no patient has it reversed.

Step: cross-entropy on the two logits (no pain, pain); score = softmax probability of pain. With
``aux_findings`` > 0 (synthetic cohorts only), the classifier gets a second linear head on the same pooled features
that regresses the image terms of the cohort's outcome rule (:data:`AUX_FINDINGS`, read from each case's ``clinical``
JSON through :func:`cspineai.phantom.outcome.rule_terms`); the loss adds ``aux_findings`` x their mean squared error.
This is privileged information that only a synthetic cohort has: it tells the network which image findings carry the
outcome, where the labels alone (Bernoulli draws, Bayes-optimal accuracy ~0.87) let it memorise noise (measured:
docs/results/pain_ablation.md). The pain logits never use the auxiliary head; cases without findings (a real site's)
are masked out of the auxiliary loss, and ``aux_findings: 0`` (the default and the paper's protocol) trains on labels
alone.

Joint FPRAN training (paper 000 §2.4: ``L = L_class + λ_sim L_sim + λ_reg L_reg``), on iff ``fpran_sim`` (λ_sim) > 0:
the classifier gets the FPRAN head (:func:`cspineai.nn.classifier.build_fpran_head`, options in ``model.fpran``),
which registers the axial series (moving, "CT") to the sagittal one (fixed, "MRI") on the branches' own pyramids.
Each item then also holds ``fpran_base``, R between the two *working grids* from their headers
(:func:`cspineai.nn.fpran.base_transform_from_volumes`). The step adds ``fpran_sim`` x L_sim (``fpran_similarity``:
local NCC over ``fpran_ncc_window``³ voxels, 9 in the paper, or MIND-SSC) between the sagittal working image and the
axial one warped onto it, and ``fpran_reg`` x L_reg (squared displacement gradient in sagittal working voxels), the
terms of :class:`cspineai.losses.RegistrationLoss`, reported as ``loss_fpran_sim`` / ``loss_fpran_reg``. The pain
logits never use FPRAN's output; the registration loss reaches them only through the shared backbones. The
left/right mirror keeps the pair consistent by mirroring R with the arrays (:func:`mirrored_base`); the in-plane
affine augmentation moves each series on its own grid while R stays that of the headers: a positioning error that
FPRAN learns to correct. Inference (:func:`cspineai.prediction.predict_pain`) skips the head. ``fpran_sim: 0`` (the
default) leaves the task exactly as without FPRAN.

Figures: accuracy, F1, sensitivity, specificity at a Youden threshold chosen on validation data (re-used, never
re-chosen, on test data: ``cspineai evaluate`` passes the validation figures back as ``fitted``), AUC with its DeLong
95% CI; AUC drives early stopping and ``best.pt``.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.transforms import Transform
from torch import nn

from ..nn.fpran import FPRAN_DEFAULTS
from ..training.tasks import Task, register_task

#: Image terms of the synthetic outcome rule regressed by the auxiliary head (``aux_findings`` > 0).
AUX_FINDINGS = ("extensor_fat", "facet", "modic", "compression", "t2_hyperintensity", "opll")

#: Keys of the config's ``model:`` section that go to :func:`cspineai.nn.classifier.build_classifier` unchanged.
MODEL_KEYS = ("backbone", "variant", "widths", "kernel_size", "theta", "norm", "dropout")

#: Item key of R (4x4 float32: sagittal working-grid normalised -> axial working-grid normalised) in joint mode.
FPRAN_BASE = "fpran_base"


def pair_of(config: dict) -> tuple[str, str]:
    """(axial, sagittal) series of a training configuration, checked (one axial and one sagittal series)."""
    from ..nn.classifier import order_pair

    return order_pair(config["task_options"]["series"])


def input_sizes(config: dict) -> dict[str, list[int]]:
    """Working size ``(D, H, W)`` of each series of the pair, from ``task_options.axial_size`` / ``sagittal_size``."""
    axial, sagittal = pair_of(config)
    options = config["task_options"]
    return {axial: [int(n) for n in options["axial_size"]], sagittal: [int(n) for n in options["sagittal_size"]]}


def classifier_config(config: dict) -> dict:
    """The :func:`~cspineai.nn.classifier.build_classifier` configuration of a training configuration."""
    model = {k: config["model"][k] for k in MODEL_KEYS}
    aux = len(AUX_FINDINGS) if float(config["task_options"].get("aux_findings") or 0) > 0 else 0
    fpran = dict(config["model"].get("fpran") or {}) if joint_mode(config) else None
    return {**model, "series": list(pair_of(config)), "num_classes": 2, "input_sizes": input_sizes(config),
            "aux_outputs": aux, "fpran": fpran}


def joint_mode(config: dict) -> bool:
    """Whether FPRAN trains jointly with the classifier (``task_options.fpran_sim`` > 0)."""
    return float(config["task_options"].get("fpran_sim") or 0) > 0


def fpran_loss(config: dict):
    """The joint mode's :class:`cspineai.losses.RegistrationLoss` (λ_sim, λ_reg, similarity from ``task_options``)."""
    from ..errors import CSpineInputError
    from ..losses import SIMILARITIES, RegistrationLoss

    options = config["task_options"]
    if options["fpran_similarity"] not in SIMILARITIES:
        raise CSpineInputError("configuration", f"task_options.fpran_similarity must be one of "
                               f"{', '.join(sorted(SIMILARITIES))}, not {options['fpran_similarity']!r}")
    window, size = int(options["fpran_ncc_window"]), input_sizes(config)[pair_of(config)[1]]
    if options["fpran_similarity"] == "ncc" and (window % 2 != 1 or any(1 < n < window for n in size)):
        # cspineai.losses.box_mean pools over the whole window: no axis (but a single voxel) may be shorter than it
        raise CSpineInputError("configuration", f"task_options.fpran_ncc_window must be odd and fit the sagittal "
                               f"working size {size}, not {window}")
    return RegistrationLoss({"similarity": options["fpran_similarity"], "sim": float(options["fpran_sim"]),
                             "reg": float(options["fpran_reg"]), "ncc_window": window})


def read_clinical(case) -> dict:
    """A case's ``clinical`` JSON (the synthetic cohort's covariates, findings and pain probability); ``{}`` without."""
    import json

    file = case.paths.get("clinical")
    return json.loads(open(file, encoding="utf-8").read()) if file is not None else {}


def finding_targets(case) -> np.ndarray:
    """The :data:`AUX_FINDINGS` terms of a synthetic case (its ``clinical`` JSON); NaN where the case has none."""
    from ..phantom.outcome import rule_terms

    clinical = read_clinical(case)
    if "findings" not in clinical:
        return np.full(len(AUX_FINDINGS), np.nan, dtype=np.float32)
    terms = rule_terms(clinical["findings"], clinical)
    return np.array([terms[k] for k in AUX_FINDINGS], dtype=np.float32)


class LoadPairedSeriesd(Transform):
    """Read the pair's series and put each on its working grid (:func:`cspineai.preprocess.prepare_series`).

    Output: one float32 array ``(1, D, H, W)`` in [0, 1] per series name; with ``fpran_base`` also
    :data:`FPRAN_BASE`, R (4x4 float32) from the two working grids' geometry: sagittal (fixed, MRI) normalised
    coordinates -> axial (moving, CT) normalised coordinates (:func:`cspineai.nn.fpran.base_transform_from_volumes`).
    Deterministic, so cacheable; the item's ``grid`` string (working sizes, and whether R is included) makes a disk
    cache of another working size or mode a different cache entry.
    A MONAI ``Transform`` on purpose: MONAI's caching datasets stop caching at the first callable that is not one
    (they cannot tell it is deterministic), which would re-read and resample every case at every epoch.
    """

    def __init__(self, sizes: dict[str, list[int]], fpran_base: bool = False):
        from ..preprocess import grid_for_size

        self.grids = {name: grid_for_size(name, size) for name, size in sizes.items()}
        self.fpran_base = fpran_base

    def __call__(self, item: dict) -> dict:
        from ..errors import CSpineInputError
        from ..io import read_volume
        from ..preprocess import prepare_series

        out, working = dict(item), {}
        for name, grid in self.grids.items():
            try:
                volume = read_volume(item[name])
            except CSpineInputError as error:
                raise CSpineInputError(f"case {item['case_id']}, {name} series", error.problem) from None
            prepared = prepare_series(volume, name, grid)
            out[name], working[name] = prepared.tensor.numpy(), prepared.grid
        if self.fpran_base:
            from ..nn.classifier import order_pair
            from ..nn.fpran import base_transform_from_volumes

            axial, sagittal = order_pair(list(working))
            base = base_transform_from_volumes(fixed=working[sagittal], moving=working[axial])
            out[FPRAN_BASE] = base.astype(np.float32)
        return out


def lr_axis(series: str) -> int:
    """Spatial axis (0 = D, 1 = H, 2 = W of a channel-first tensor) that runs left/right on a series' working grid."""
    from ..geometry import CANONICAL_ORIENTATION
    from ..series import SERIES_PLANE

    code = CANONICAL_ORIENTATION[SERIES_PLANE[series]]  # letters for i, j, k; tensor axes are (k, j, i)
    position = next(n for n, letter in enumerate(code) if letter in "LR")
    return 2 - position


def mirrored_base(base: np.ndarray, fixed_lr_axis: int, moving_lr_axis: int) -> np.ndarray:
    """R of a pair after both arrays are mirrored along their left/right axes (the case mirror of augmentation).

    ``*_lr_axis``: the spatial tensor axis (0 = D, 1 = H, 2 = W, :func:`lr_axis`) flipped in the fixed (sagittal) and
    moving (axial) series. Flipping tensor axis ``a`` negates normalised coordinate ``2 - a`` (x = W, y = H, z = D;
    ``align_corners`` grids are symmetric about 0), so a flipped image is ``X'(u) = X(F u)`` with
    ``F = diag(±1, ±1, ±1, 1) = F⁻¹``. Fixed point ``u`` of the flipped pair shows the original fixed point
    ``F_fixed u``, which matches the original moving point ``R F_fixed u``, shown in the flipped moving image at
    ``F_moving R F_fixed u``; hence ``R' = F_moving · R · F_fixed`` (mirroring twice gives R back).
    """
    def flip(axis: int) -> np.ndarray:
        f = np.eye(4)
        f[2 - axis, 2 - axis] = -1.0
        return f

    base = np.asarray(base)
    return (flip(moving_lr_axis) @ base.astype(np.float64) @ flip(fixed_lr_axis)).astype(base.dtype)


def _affine(series: str, size, options: dict):
    """Small in-plane rotation, translation and scaling of one series on its working grid (patient positioning).

    Rotation only about the slice axis D: the slices are thick, so a tilt through them would invent data.
    Translations are given in mm and converted to working voxels of this series.
    """
    from monai import transforms as mt

    from ..preprocess import grid_for_size

    spacing = grid_for_size(series, size).spacing  # (i, j, k) mm; tensor axes are (k, j, i)
    shift = float(options["translate_mm"])
    return mt.RandAffined(
        keys=series, prob=float(options["affine_prob"]), rotate_range=(np.deg2rad(options["rotate_deg"]), 0.0, 0.0),
        translate_range=(0.0, shift / spacing[1], shift / spacing[0]),
        scale_range=(0.0, options["scale"], options["scale"]), mode="bilinear", padding_mode="border",
    )


def _mirror_transform():
    from monai.transforms import MapTransform, RandomizableTransform

    class RandMirrorCased(RandomizableTransform, MapTransform):
        """Mirror a whole case left/right with probability ``prob``: every key along its own LR axis, one draw.

        ``axes``: key -> spatial axis (of ``(C, D, H, W)`` arrays) that runs left/right (:func:`lr_axis`).
        ``pair``: (fixed, moving) series; when the item holds :data:`FPRAN_BASE` (joint mode), R is mirrored with the
        arrays (:func:`mirrored_base`) so that it still joins the flipped pair.
        """

        def __init__(self, axes: dict[str, int], prob: float = 0.5, pair: tuple[str, str] | None = None):
            RandomizableTransform.__init__(self, prob)
            MapTransform.__init__(self, list(axes))
            self.axes = dict(axes)
            self.pair = pair

        def __call__(self, data: dict) -> dict:
            self.randomize(None)
            if not self._do_transform:
                return data
            out = dict(data)
            for key, axis in self.axes.items():
                out[key] = np.ascontiguousarray(np.flip(np.asarray(data[key]), axis=axis + 1))
            if self.pair is not None and FPRAN_BASE in data:
                fixed, moving = self.pair
                out[FPRAN_BASE] = mirrored_base(data[FPRAN_BASE], self.axes[fixed], self.axes[moving])
            return out

    return RandMirrorCased


class PainTask(Task):
    name = "pain"
    # The series are checked per configured pair in data_items (a site may only have the T2 pair).
    required_columns = ("label",)
    model_defaults = {
        "backbone": "abpdc",
        "variant": "abpdc",
        "widths": [16, 32, 64, 128],
        "kernel_size": 3,
        "theta": 0.7,
        "norm": "batch",
        "dropout": 0.0,
        "fpran": dict(FPRAN_DEFAULTS),  # options of the FPRAN head, built in joint mode only (task_options.fpran_sim)
    }
    options_defaults = {
        "series": ["T1_sag", "CT_bone"],
        "sagittal_size": [16, 128, 128],
        "axial_size": [32, 96, 96],
        "augment": True,
        "mirror_prob": 0.5,
        "intensity_jitter": 0.1,
        "noise_std": 0.02,
        "affine_prob": 0.0,
        "rotate_deg": 6.0,
        "translate_mm": 6.0,
        "scale": 0.06,
        "aux_findings": 0.0,
        "fpran_sim": 0.0,  # λ_sim of joint FPRAN training; > 0 turns the joint mode on (paper: 1)
        "fpran_reg": 1.0,  # λ_reg (paper: 1)
        "fpran_similarity": "ncc",  # ncc (paper, local NCC 9^3) | mind (MIND-SSC, modality-independent)
        "fpran_ncc_window": 9,  # NCC window in sagittal working voxels (paper: 9)
    }
    monitor, monitor_mode = "auc", "max"

    def build_model(self, config: dict) -> nn.Module:
        from ..nn.classifier import build_classifier

        if joint_mode(config):
            fpran_loss(config)  # refuse an unknown similarity before any data is read
        return build_classifier(classifier_config(config))

    def data_items(self, cases, config: dict) -> list[dict]:
        from ..errors import CSpineInputError

        sizes = input_sizes(config)
        grid = ";".join(f"{name}={'x'.join(map(str, size))}" for name, size in sizes.items())
        if joint_mode(config):
            grid += f";{FPRAN_BASE}"  # the cached items then hold R: a disk cache without it is another entry
        items = []
        for case in cases:
            if case.label not in (0, 1):
                raise CSpineInputError(f"case {case.case_id}", f"label must be 0 or 1, not {case.label!r}")
            item = {"label": int(case.label), "case_id": case.case_id, "grid": grid}
            if float(config["task_options"]["aux_findings"]) > 0:
                item["aux"] = finding_targets(case)
            for name in sizes:
                item[name] = str(case.path(name))  # names the case and the missing series
            items.append(item)
        return items

    def transforms(self, config: dict, train: bool):
        from monai import transforms as mt

        options = config["task_options"]
        sizes = input_sizes(config)
        names = list(sizes)
        joint = joint_mode(config)
        steps = [LoadPairedSeriesd(sizes, fpran_base=joint)]
        if train and options["augment"]:
            jitter = float(options["intensity_jitter"])
            axial, sagittal = pair_of(config)
            steps.append(_mirror_transform()({name: lr_axis(name) for name in names}, prob=options["mirror_prob"],
                                             pair=(sagittal, axial)))
            for name in names:  # independent draws per series: two acquisitions, unrelated positioning and scanners
                if options["affine_prob"] > 0:
                    steps.append(_affine(name, sizes[name], options))
                steps += [
                    mt.RandScaleIntensityd(keys=name, factors=jitter, prob=0.5),
                    mt.RandShiftIntensityd(keys=name, offsets=jitter / 2.0, prob=0.5),
                    mt.RandAdjustContrastd(keys=name, gamma=(1.0 - 2 * jitter, 1.0 + 2 * jitter), prob=0.3),
                    mt.RandGaussianNoised(keys=name, std=float(options["noise_std"]), prob=0.3),
                ]
        # Every array key typed here: a disk cache hands back tensors where a fresh item has NumPy arrays, and one
        # batch must not mix them (the collate refuses).
        extra = [FPRAN_BASE] if joint else []
        if float(options["aux_findings"]) > 0:
            extra.append("aux")
        steps.append(mt.EnsureTyped(keys=(*names, "label", *extra), track_meta=False))
        return mt.Compose(steps)

    def step(self, model, batch: dict, config: dict):
        names = input_sizes(config)
        inputs = {name: batch[name].float() for name in names}
        label = batch["label"].long()
        weight = float(config["task_options"]["aux_findings"])
        joint = joint_mode(config)
        out = model(inputs, return_features=True, fpran_base=batch[FPRAN_BASE].float() if joint else None)
        logits = out.logits
        loss = nn.functional.cross_entropy(logits.float(), label)
        if weight > 0:
            target = torch.as_tensor(batch["aux"]).float()
            known = torch.isfinite(target)
            if known.any():
                loss = loss + weight * nn.functional.mse_loss(out.aux.float()[known], target[known])
        if joint:  # the sagittal (MRI) working image against the axial (CT) one warped onto it
            registration, sagittal = out.registration, pair_of(config)[1]
            joint_loss, terms = fpran_loss(config)(inputs[sagittal], registration.warped_ct.float(),
                                                   registration.displacement_voxels.float())
            loss = loss + joint_loss
        score = torch.softmax(logits.detach().float(), dim=1)[:, 1]
        outputs = {"score": score, "label": label.detach(), "case_id": list(batch["case_id"])}
        if weight > 0:
            outputs.update(aux_predicted=out.aux.detach(), aux_target=target)
        if joint:
            outputs.update({f"loss_fpran_{k}": v.detach().float().expand(label.shape[0]) for k, v in terms.items()})
        return loss, outputs

    def compute_metrics(self, outputs: dict, config: dict, fitted: dict | None = None) -> dict[str, float]:
        figures = score_figures(outputs["label"].numpy().astype(int), outputs["score"].numpy(), fitted)
        if "aux_predicted" in outputs:  # how well the auxiliary head reads each finding (Pearson r)
            predicted, target = outputs["aux_predicted"].numpy(), outputs["aux_target"].numpy()
            for k, name in enumerate(AUX_FINDINGS):
                known = np.isfinite(target[:, k])
                spread = known.sum() > 2 and target[known, k].std() > 0 and predicted[known, k].std() > 0
                figures[f"aux_r_{name}"] = (float(np.corrcoef(predicted[known, k], target[known, k])[0, 1])
                                            if spread else float("nan"))
        figures.update({k: float(v.float().mean()) for k, v in outputs.items() if k.startswith("loss_fpran_")})
        return figures

    def reference_figures(self, cases) -> dict[str, float]:
        """On synthetic cases (each with its ``clinical`` JSON): the Bayes-optimal accuracy of the full outcome rule,
        and the accuracy and AUC of the image-only oracle P(pain | image findings)
        (:func:`cspineai.phantom.outcome.image_only_probability`), the ceiling of a model that sees only the images.
        Nothing for cases without them (a real site's data)."""
        from ..metrics.classification import roc_auc
        from ..phantom.outcome import image_only_probability

        if not cases:
            return {}
        p, q = [], []
        for n, case in enumerate(cases):
            clinical = read_clinical(case)
            if "pain_probability" not in clinical or "findings" not in clinical:
                return {}
            p.append(clinical["pain_probability"])
            q.append(image_only_probability(clinical["findings"], draws=1000, seed=n))
        p, q, y = np.array(p), np.array(q), np.array([case.label for case in cases])
        return {"bayes_accuracy": float(np.maximum(p, 1 - p).mean()),
                "image_only_bayes_accuracy": float(np.maximum(q, 1 - q).mean()),
                "image_only_oracle_accuracy": float(((q > 0.5) == y).mean()),
                "image_only_oracle_auc": roc_auc(y, q)}

    def case_rows(self, outputs: dict, config: dict) -> list[dict]:
        return [{"case_id": c, "label": int(y), "probability": round(float(s), 6)}
                for c, y, s in zip(outputs["case_id"], outputs["label"], outputs["score"], strict=True)]


def score_figures(y: np.ndarray, score: np.ndarray, fitted: dict | None = None) -> dict[str, float]:
    """Accuracy, F1, sensitivity, specificity at the threshold, AUC with DeLong 95% CI, and the threshold.

    The threshold is ``fitted["threshold"]`` when given (chosen on validation data), else Youden's on ``(y, score)``
    (0.5 when only one class is present, where Youden's index is undefined).
    """
    from ..metrics.classification import binary_report, youden_threshold

    y = np.asarray(y).astype(int)
    score = np.asarray(score, dtype=float)
    if fitted is not None and "threshold" in fitted:
        threshold = float(fitted["threshold"])
    elif 0 < y.sum() < y.size:
        threshold = float(youden_threshold(y, score))
    else:
        threshold = 0.5
    report = binary_report(y, score, threshold)
    keys = ("accuracy", "f1", "auc", "auc_low", "auc_high", "sensitivity", "specificity", "threshold")
    return {k: float(report[k]) for k in keys}


register_task(PainTask())


def write_tiny_cohort(folder, n_cases: int = 8, seed: int = 0, folds: int = 2, test_cases: int = 0):
    """Write a tiny two-series cohort (seconds, not the phantom's minutes) and its ``manifest.csv``; return the path.

    For unit tests and smoke runs of the training and ablation drivers, not for measuring anything. Each case has a
    sagittal ``T1_sag`` (``[k, j, i]`` = 6 x 24 x 24, 6 x 6 x 4 mm voxels as scanners write sagittal series: i towards
    P, j towards I, k towards L) and an axial ``CT_bone`` (8 x 24 x 24 at 6 x 6 x 18 mm, HU), noise around a
    body-like value; label 1 cases carry a bright block in both (hyperintense on T1, 1500 HU on CT), so a network can
    learn the label within a few steps. Labels alternate; the last ``test_cases`` cases get ``split = test``.
    """
    from pathlib import Path

    from ..io import write_volume
    from ..manifest import Case, write_manifest
    from ..volume import Volume

    folder = Path(folder)
    rng = np.random.default_rng(seed)
    sagittal = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    cases = []
    for n in range(n_cases):
        label = n % 2
        t1 = rng.normal(300.0, 30.0, size=(6, 24, 24)).astype(np.float32)
        ct = rng.normal(40.0, 20.0, size=(8, 24, 24)).astype(np.float32)
        if label:
            t1[1:5, 8:16, 8:16] += 600.0
            ct[2:6, 8:16, 8:16] = 1500.0
        case_dir = folder / f"tiny{n:03d}"
        paths = {
            "T1_sag": write_volume(Volume(t1, (6.0, 6.0, 4.0), (-10.0, -60.0, 80.0), sagittal, "T1_sag"),
                                   case_dir / "T1_sag.nii.gz"),
            "CT_bone": write_volume(Volume(ct, (6.0, 6.0, 18.0), (-70.0, -70.0, -60.0), np.eye(3), "CT_bone"),
                                    case_dir / "CT_bone.nii.gz"),
        }
        test = n >= n_cases - test_cases
        cases.append(Case(case_id=f"tiny{n:03d}", label=label, fold=None if test else (n // 2) % folds,
                          split="test" if test else "train", paths=paths))
    return write_manifest(cases, folder / "manifest.csv")


__all__ = ["FPRAN_BASE", "LoadPairedSeriesd", "PainTask", "classifier_config", "fpran_loss", "input_sizes",
           "joint_mode", "lr_axis", "mirrored_base", "pair_of", "score_figures", "write_tiny_cohort"]
