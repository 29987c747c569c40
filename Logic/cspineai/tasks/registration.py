"""``registration``: train the registration-only FPRAN (methods §3) on synthetic CT/MRI pairs whose truth is known.

Data: for every case of the manifest, the moving CT (``task_options.ct``, default ``CT_bone``) and the fixed MRI
(``task_options.mri``, default ``T1_sag``), their label maps and ``landmarks.json`` (the generator's vertebral-body
centroids and disc centres in both scanner frames). Each pair goes through *exactly* the preprocessing of inference
(:func:`cspineai.registration.working_grids` at ``task_options.spacing_mm``, :func:`normalise_intensity`, the
header-derived base transform R), so the network sees in training what :func:`cspineai.registration.register` feeds
it. The model remembers its working spacing (``model.spacing_mm``), which ``register`` then uses.

Loss (weights in ``task_options.loss``, :class:`cspineai.losses.RegistrationLossWeights`):
``λ_sim L_sim + λ_reg L_reg [+ λ_dice L_dice + λ_landmark L_landmark]``; ``L_sim`` is local NCC (9³, the paper) or
MIND-SSC, ``L_reg`` the squared displacement gradient in MRI working voxels, ``L_dice`` the soft Dice of the CT's
vertebra labels warped (trilinear, so differentiable) onto the MRI against the MRI's, ``L_landmark`` the mean distance
(mm) of the mapped MRI landmarks to their true CT positions. The last two use the generator's truth
(semi-supervised); with their weights at 0 the training is unsupervised, as in the paper.

Augmentation (training only, ``task_options.header_shift_mm`` / ``header_rotation_deg``): the CT header is moved by a
random rigid transform (the CT image, its labels and its landmarks move with it in physical space, so the truth stays
exact: only R changes). It widens the range of misalignments beyond the cohort's without any resampling. Intensity
jitter (scale, gamma, noise) per image. No flips: the anatomy's order must be learnt.

Figures (validation): mean landmark error (mm, drives ``best.pt``), soft vertebra Dice, and the loss terms.

Joint training with the classifier (``L = L_class + L_sim + L_reg``) is not a mode of this task but of the ``pain``
task (``task_options.fpran_sim`` > 0, :mod:`cspineai.tasks.pain`): there FPRAN runs on the classifier's own backbones'
pyramids inside the classifier's step, whereas this task trains FPRAN on two light encoders of its own, without
the outcome (docs/training.md, "Joint FPRAN training").
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..nn.fpran import FPRAN_DEFAULTS
from ..training.tasks import Task, register_task

#: Vertebra map values 1..7 = C2..T1 (body + posterior elements of :data:`cspineai.series.LABELS`), 0 elsewhere.
N_VERTEBRAE = 7


def vertebra_map(labels: np.ndarray) -> np.ndarray:
    """Label map (values of :mod:`cspineai.series`) -> vertebra map: 1..7 = C2..T1 (body + posterior elements)."""
    labels = np.asarray(labels)
    out = np.zeros(labels.shape, dtype=np.uint8)
    body = (labels >= 3) & (labels <= 9)
    posterior = (labels >= 16) & (labels <= 22)
    out[body] = labels[body] - 2
    out[posterior] = labels[posterior] - 15
    return out


def read_landmarks(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``landmarks.json`` -> (MRI points, CT points), each ``(N, 3)`` LPS mm, same landmark order."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    names = sorted(set(data["MRI"]) & set(data["CT"]))
    return np.array([data["MRI"][n] for n in names], float), np.array([data["CT"][n] for n in names], float)


def normalised_points(volume, points_lps: np.ndarray) -> np.ndarray:
    """LPS points ``(N, 3)`` -> normalised coordinates ``(N, 3)`` (x, y, z) of ``volume``'s grid (align_corners)."""
    from ..geometry import world_to_index
    from ..nn.fpran import index_to_normalised

    index = world_to_index(volume, np.asarray(points_lps, float))
    return (np.c_[index, np.ones(len(index))] @ index_to_normalised(volume.size_ijk).T)[:, :3]


def prepare_pair(ct, mri, ct_labels, mri_labels, mri_points, ct_points, spacing_mm: float) -> dict:
    """Working tensors of one pair, as :func:`cspineai.registration.register` builds them, plus the truth.

    Returns float32 arrays: ``ct`` (1, Dc, Hc, Wc) and ``mri`` (1, D, H, W) in [0, 1]; ``ct_vertebrae`` (8, Dc, Hc, Wc)
    and ``mri_vertebrae`` (8, D, H, W) one-hot (channel 0 background); ``fixed_points`` / ``moving_points`` (N, 3) in
    MRI / CT normalised coordinates; ``mm_per_unit`` (3,) of the CT working grid; and for the header augmentation
    ``ct_norm_from_lps`` (4, 4) and ``lps_from_mri_norm`` (4, 4), whose product is R, plus ``mri_centre`` (3,) LPS.
    """
    from ..geometry import resample_like
    from ..nn.fpran import index_to_normalised
    from ..registration import normalise_intensity, working_grids

    ct_w, mri_w = working_grids(ct, mri, spacing_mm)

    def onehot(labels, grid) -> np.ndarray:
        vertebrae = vertebra_map(resample_like(labels, grid, "nearest").array)
        return np.stack([vertebrae == v for v in range(N_VERTEBRAE + 1)]).astype(np.float32)

    ct_norm_from_lps = index_to_normalised(ct_w.size_ijk) @ np.linalg.inv(ct_w.ijk_to_lps)
    lps_from_mri_norm = mri_w.ijk_to_lps @ np.linalg.inv(index_to_normalised(mri_w.size_ijk))
    lower, upper = (mri_w.ijk_to_lps @ np.array([[0, 0, 0, 1], [*(n - 1 for n in mri_w.size_ijk), 1]]).T)[:3].T
    return {
        "ct": normalise_intensity(ct_w.array)[None],
        "mri": normalise_intensity(mri_w.array)[None],
        "ct_vertebrae": onehot(ct_labels, ct_w),
        "mri_vertebrae": onehot(mri_labels, mri_w),
        "fixed_points": normalised_points(mri_w, mri_points).astype(np.float32),
        "moving_points": normalised_points(ct_w, ct_points).astype(np.float32),
        "mm_per_unit": (np.array(ct_w.spacing) * (np.array(ct_w.size_ijk) - 1) / 2).astype(np.float32),
        "ct_norm_from_lps": ct_norm_from_lps.astype(np.float32),
        "lps_from_mri_norm": lps_from_mri_norm.astype(np.float32),
        "mri_centre": ((lower + upper) / 2).astype(np.float32),
    }


class LoadRegistrationPaird:
    """Read a case's CT, MRI, label maps and landmarks and put them on the working grids (:func:`prepare_pair`).

    Deterministic, so cacheable; the item's ``spacing`` makes a disk cache of another spacing a different entry.
    """

    def __init__(self, spacing_mm: float):
        self.spacing_mm = float(spacing_mm)

    def __call__(self, item: dict) -> dict:
        from ..errors import CSpineInputError
        from ..io import read_volume

        volumes = {}
        for key in ("ct", "mri", "ct_labels", "mri_labels"):
            try:
                volumes[key] = read_volume(item[key])
            except CSpineInputError as error:
                raise CSpineInputError(f"case {item['case_id']}, {key}", error.problem) from None
        mri_points, ct_points = read_landmarks(item["landmarks"])
        prepared = prepare_pair(volumes["ct"], volumes["mri"], volumes["ct_labels"], volumes["mri_labels"],
                                mri_points, ct_points, self.spacing_mm)
        return {"case_id": item["case_id"], "spacing": item["spacing"], **prepared}


def rigid_matrix(angles_rad: np.ndarray, shift_mm: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """4x4 LPS rigid transform: rotation (x, then y, then z axes) about ``centre``, then ``shift_mm``."""
    cx, cy, cz = np.cos(angles_rad)
    sx, sy, sz = np.sin(angles_rad)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    m = np.eye(4)
    m[:3, :3] = rz @ ry @ rx
    m[:3, 3] = centre - m[:3, :3] @ centre + shift_mm
    return m


def base_of(item: dict, header_move: np.ndarray | None = None) -> np.ndarray:
    """R of a prepared item, with the CT header moved by the rigid ``header_move`` (CT physical -> new physical)."""
    middle = np.eye(4) if header_move is None else np.linalg.inv(header_move)
    return (np.asarray(item["ct_norm_from_lps"], float) @ middle @ np.asarray(item["lps_from_mri_norm"], float))


def _augment_transform():
    from monai.transforms import RandomizableTransform

    class RandRegistrationAugmentd(RandomizableTransform):
        """Move the CT header by a random rigid transform (R changes, the truth does not) and jitter intensities.

        Adds ``base`` (4, 4) float32; the deterministic variant (``train=False``) only adds the header-derived R.
        """

        def __init__(self, shift_mm: float, rotation_deg: float, intensity_jitter: float, noise_std: float,
                     train: bool):
            RandomizableTransform.__init__(self, 1.0)
            self.shift_mm, self.rotation = float(shift_mm), np.radians(float(rotation_deg))
            self.jitter, self.noise_std, self.train = float(intensity_jitter), float(noise_std), train

        def __call__(self, data: dict) -> dict:
            out = dict(data)
            if not self.train:
                out["base"] = base_of(data).astype(np.float32)
                return out
            r = self.R
            angles = r.uniform(-self.rotation, self.rotation, 3)
            move = rigid_matrix(angles, r.uniform(-self.shift_mm, self.shift_mm, 3), np.asarray(data["mri_centre"]))
            out["base"] = base_of(data, move).astype(np.float32)
            for key in ("ct", "mri"):
                image = np.asarray(data[key], np.float32)
                if self.jitter > 0:
                    gamma = float(np.exp(r.uniform(-self.jitter, self.jitter)))
                    scale = 1.0 + r.uniform(-self.jitter, self.jitter)
                    image = np.clip(image, 0.0, 1.0) ** gamma * scale + r.uniform(-self.jitter, self.jitter) / 2
                if self.noise_std > 0:
                    image = image + r.normal(0.0, self.noise_std, image.shape)
                out[key] = image.astype(np.float32)
            return out

    return RandRegistrationAugmentd


class RegistrationTask(Task):
    name = "registration"
    required_columns = ("CT_bone", "T1_sag", "CT_bone_labels", "T1_sag_labels", "landmarks")
    model_defaults = {"channels": [8, 16, 16, 32], **FPRAN_DEFAULTS, "image_level": False}
    options_defaults = {
        "ct": "CT_bone",
        "mri": "T1_sag",
        "spacing_mm": 2.0,
        "loss": {"similarity": "ncc", "sim": 1.0, "reg": 1.0, "dice": 0.0, "landmark": 0.0, "ncc_window": 9},
        "augment": True,
        "header_shift_mm": 5.0,
        "header_rotation_deg": 3.0,
        "intensity_jitter": 0.1,
        "noise_std": 0.01,
    }
    monitor, monitor_mode = "landmark_mm", "min"
    stratify_by = None

    def build_model(self, config: dict):
        from ..nn.fpran import RegistrationNet

        m = config["model"]
        model = RegistrationNet(m["channels"], m["hidden"], m["radius"], m["affine_bound"], m["paired_affine"],
                                m["image_level"])
        model.spacing_mm = float(config["task_options"]["spacing_mm"])  # read by cspineai.registration.register
        return model

    def data_items(self, cases, config: dict) -> list[dict]:
        options = config["task_options"]
        ct, mri = options["ct"], options["mri"]
        return [{"ct": str(c.path(ct)), "mri": str(c.path(mri)), "ct_labels": str(c.path(f"{ct}_labels")),
                 "mri_labels": str(c.path(f"{mri}_labels")), "landmarks": str(c.path("landmarks")),
                 "case_id": c.case_id, "spacing": f"{float(options['spacing_mm']):g}mm"} for c in cases]

    def transforms(self, config: dict, train: bool):
        from monai.transforms import Compose

        options = config["task_options"]
        augment = train and options["augment"]
        return Compose([
            LoadRegistrationPaird(options["spacing_mm"]),
            _augment_transform()(options["header_shift_mm"], options["header_rotation_deg"],
                                 options["intensity_jitter"], options["noise_std"], augment),
        ])

    def step(self, model, batch: dict, config: dict):
        from ..losses import RegistrationLoss, landmark_loss
        from ..nn.fpran import sample_moving

        loss_fn = RegistrationLoss(config["task_options"]["loss"])
        ct, mri = batch["ct"].float(), batch["mri"].float()
        out = model(ct, mri, batch["base"].float())
        spatial = tuple(mri.shape[2:])
        warped_labels = sample_moving(batch["ct_vertebrae"].float(), out.affine, out.displacement, spatial)
        landmarks = {"mapping": out.mapping, "fixed_points": batch["fixed_points"].float(),
                     "moving_points": batch["moving_points"].float(), "mm_per_unit": batch["mm_per_unit"].float()}
        total, terms = loss_fn(mri, out.warped_ct, out.displacement_voxels, warped_labels,
                               batch["mri_vertebrae"].float(), landmarks)
        with torch.no_grad():
            per_case = torch.stack([landmark_loss(**{k: v[b:b + 1] for k, v in landmarks.items()})
                                    for b in range(ct.shape[0])])
            dice = soft_dice(warped_labels, batch["mri_vertebrae"].float())
        outputs = {"landmark_mm": per_case.detach(), "dice": dice.detach(), "case_id": list(batch["case_id"])}
        outputs.update({f"loss_{k}": v.detach().expand(ct.shape[0]) for k, v in terms.items()})
        return total, outputs

    def compute_metrics(self, outputs: dict, config: dict, fitted: dict | None = None) -> dict[str, float]:
        figures = {"landmark_mm": float(outputs["landmark_mm"].mean()), "dice": float(outputs["dice"].mean())}
        figures.update({k: float(v.mean()) for k, v in outputs.items() if k.startswith("loss_")})
        return figures

    def case_rows(self, outputs: dict, config: dict) -> list[dict]:
        return [{"case_id": c, "landmark_mm": float(e), "dice": float(d)}
                for c, e, d in zip(outputs["case_id"], outputs["landmark_mm"], outputs["dice"], strict=True)]


def soft_dice(warped: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
    """Per-case mean Dice over the foreground channels present in ``fixed`` of ``(B, L, D, H, W)`` maps -> ``(B,)``."""
    dims = (2, 3, 4)
    intersection = (warped[:, 1:] * fixed[:, 1:]).sum(dims)
    sizes = warped[:, 1:].sum(dims) + fixed[:, 1:].sum(dims)
    present = fixed[:, 1:].sum(dims) > 0
    dice = 2 * intersection / sizes.clamp_min(1e-6)
    return (dice * present).sum(1) / present.sum(1).clamp_min(1)


register_task(RegistrationTask())


def write_split_manifest(manifest: str | Path, out: str | Path, n_train: int, validation_every: int = 10) -> Path:
    """The registration split of a generated cohort: the first ``n_train`` cases (in manifest order) train, every
    ``validation_every``-th of them validates (fold 0; the others fold 1..), the rest are ``split=test`` (held out for
    ``benchmarks/bench_registration.py``). Case ids, not labels, decide: registration does not use the outcome."""
    from ..manifest import read_manifest, write_manifest

    cases = read_manifest(manifest, check_files=False)
    return write_manifest(split_registration(cases, n_train, validation_every), out)


def split_registration(cases: list, n_train: int, validation_every: int = 10) -> list:
    """In place (and returned): the first ``n_train`` cases train (fold ``n % validation_every``: fold 0 validates),
    the rest are ``split=test``; see :func:`write_split_manifest`."""
    for n, case in enumerate(cases):
        case.split = "train" if n < n_train else "test"
        case.fold = n % validation_every if n < n_train else None
    return cases
