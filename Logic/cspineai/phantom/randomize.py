"""Domain randomisation: acquisition settings drawn far wider than any one scanner, for segmentation training.

In randomised mode each case gets (SynthSeg-style, Billot et al. 2023) random resolution and slice thickness, random
per-tissue MRI intensities (independently per series), bias field strength, noise level, gamma, extra blur and random
index-axis flips (the header follows the flip, so physical geometry, planes and labels stay correct). CT keeps its
Hounsfield physics (a randomised CT would teach nothing the HU scale does not already fix) but its resolution, kernels
and noise vary.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .anatomy import TISSUES
from .protocol import Protocol


def randomized_protocol(rng: np.random.Generator, base: Protocol) -> Protocol:
    """A copy of ``base`` with every randomised setting drawn from its range (see docs/phantom.md)."""
    sag_slice = float(rng.uniform(*base.sag_slice_range_mm))
    tra_slice = float(rng.uniform(2.5, 6.0))
    flips = {}
    for series in ("CT", "SAG", "T2_tra"):
        flips[series] = tuple(bool(x) for x in rng.random(3) < 0.3)
    intensity = {}
    for series in ("T1_sag", "T2_sag", "T2_tra"):
        values = rng.uniform(0.0, 1.0, len(TISSUES))
        values[TISSUES.index("air")] = rng.uniform(0.0, 0.08)
        intensity[series] = values
    return dataclasses.replace(
        base,
        ct_inplane_mm=float(rng.uniform(0.4, 0.8)),
        ct_slice_mm=float(rng.uniform(1.0, 3.0)),
        sag_inplane_mm=float(rng.uniform(0.45, 1.1)),
        sag_slice_mm=sag_slice,
        # about 48 mm left-right; thick draws (2.5-5 mm) stay within the 9-19 slices they always had
        sag_slices=int(np.clip(round(48.0 / sag_slice), 9, 60)),
        tra_inplane_mm=float(rng.uniform(0.45, 1.1)),
        tra_slice_mm=tra_slice,
        tra_slices=int(np.clip(round(90.0 / tra_slice), 14, 30)),
        mr_snr=float(rng.uniform(8.0, 45.0)),
        mr_psf_px=float(rng.uniform(0.3, 1.2)),
        bias_strength=float(rng.uniform(0.05, 0.5)),
        ct_bone_noise_hu=float(rng.uniform(25.0, 110.0)),
        ct_tissue_noise_hu=float(rng.uniform(4.0, 20.0)),
        random_intensity=intensity,
        gamma=float(np.exp(rng.normal(0.0, 0.3))),
        extra_blur_mm=float(rng.uniform(0.0, 1.0)),
        flips=flips,
    )
