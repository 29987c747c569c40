"""Acquisition protocol of a synthetic case: grids, sequence timings, noise, bias; presets and their ranges.

Defaults follow the papers' dataset (MMCS, ``000_*.txt`` section 3.1): axial CT reconstructed twice (bone and
soft-tissue kernels), sagittal T1 and T2 fast spin echo, axial T2. ``coarse`` is a fast preset for tests; ``thin``
acquires the sagittal series as 3-D volumes of about 1 mm slices.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class Protocol:
    """Everything that decides how a case is imaged (mm, ms); see docs/phantom.md for the ranges."""

    ct_inplane_mm: float = 0.55
    ct_slice_mm: float = 2.0
    ct_fov_mm: tuple[float, float, float] = (118.0, 118.0, 150.0)  # LR, AP, SI
    ct_sub: int = 3
    ct_marrow_scale: float = 1.0  # bone density relative to the table (age lowers it)
    sag_inplane_mm: float = 0.6
    sag_slice_mm: float = 3.5
    sag_slices: int = 13
    sag_slice_range_mm: tuple[float, float] = (2.5, 5.0)  # what domain randomisation draws sag_slice_mm from
    sag_fov_mm: tuple[float, float] = (160.0, 180.0)  # AP, SI
    sag_sub: int = 3
    tra_inplane_mm: float = 0.6
    tra_slice_mm: float = 4.0
    tra_slices: int = 22
    tra_fov_mm: tuple[float, float] = (128.0, 128.0)  # LR, AP
    tra_sub: int = 3
    t1_tr_ms: float = 550.0
    t1_te_ms: float = 12.0
    t2_tr_ms: float = 3200.0
    t2_te_ms: float = 105.0
    t2_tra_tr_ms: float = 3600.0
    t2_tra_te_ms: float = 100.0
    mr_snr: float = 28.0  # brightest tissue / noise SD
    mr_psf_px: float = 0.45
    bias_strength: float = 0.2
    ct_bone_noise_hu: float = 55.0
    ct_tissue_noise_hu: float = 9.0
    # Domain randomisation (None = physical contrast): per-series random tissue intensities, gamma, extra blur, flips.
    random_intensity: dict | None = None
    gamma: float = 1.0
    extra_blur_mm: float = 0.0
    flips: dict = dataclasses.field(default_factory=dict)  # series -> (flip i, flip j, flip k)
    radiograph: bool = True

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        if out["random_intensity"] is not None:
            out["random_intensity"] = {k: [round(float(x), 4) for x in v] for k, v in out["random_intensity"].items()}
        return out


PRESETS = {
    "default": {},
    # Fast preset for tests and quick looks: 1 mm in-plane, thicker slices, fewer sub-samples.
    "coarse": {"ct_inplane_mm": 1.0, "ct_slice_mm": 3.0, "sag_inplane_mm": 1.0, "tra_inplane_mm": 1.0,
               "ct_sub": 3, "sag_sub": 3, "tra_sub": 3, "tra_slices": 18},
    # 3-D sagittal T1/T2 reconstructed at about 1 mm isotropic, as many sites acquire them: cordseg-unet 1.4.0, trained
    # on 2.5-5 mm sagittal slices only, over-estimated the cord's area on them (docs/results/segmentation.md).
    "thin": {"sag_inplane_mm": 1.0, "sag_slice_mm": 1.0, "sag_slices": 48, "sag_slice_range_mm": (0.8, 1.5)},
}


def preset(name: str, **overrides) -> Protocol:
    """A named preset (``default``, ``coarse``, ``thin``) with optional field overrides."""
    if name not in PRESETS:
        raise ValueError(f"unknown resolution preset {name!r}; choose one of {sorted(PRESETS)}")
    return dataclasses.replace(Protocol(), **{**PRESETS[name], **overrides})
