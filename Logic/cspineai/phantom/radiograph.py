"""Lateral cervical radiograph: a digitally reconstructed radiograph (DRR) from the CT attenuation.

Parallel projection along the patient's LR axis (the CT's i axis) of the linear attenuation coefficient
``mu = mu_water * (1 + HU / 1000)`` (``mu_water`` = 0.02 /mm, about 60 keV effective energy), then film:
transmitted fraction ``exp(-integral mu)``, forward scatter (a broad blur of the primary added back), quantum noise, a
sigmoid characteristic (H&D) curve on log exposure, inverted so that bone is white, and the anode heel effect (a gentle
exposure gradient along the tube axis). Source magnification is ignored (parallel beam): lateral films are taken at
1.5-1.8 m where it is about 10% and uniform.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

MU_WATER_PER_MM = 0.02


def lateral_drr(hu: np.ndarray, spacing: tuple[float, float, float], rng: np.random.Generator,
                scatter: float = 0.25, noise: float = 0.01) -> np.ndarray:
    """Film-like lateral radiograph of an axial CT.

    Args:
        hu: noise-free CT ``(K, J, I)`` in HU, axial (k = SI upwards, j = AP towards posterior, i = LR).
        spacing: (i, j, k) mm.

    Returns:
        ``(K, J)`` float32 in [0, 1] (1 = white = dense), rows ordered like the CT's k (inferior first).
    """
    mu = np.clip(MU_WATER_PER_MM * (1.0 + hu.astype(np.float32) / 1000.0), 0.0, None)
    path = mu.sum(axis=2) * spacing[0]
    primary = np.exp(-path)
    sigma = [8.0 / spacing[2], 8.0 / spacing[1]]
    exposure = primary + scatter * ndimage.gaussian_filter(primary, sigma)
    heel = np.linspace(0.92, 1.08, exposure.shape[0], dtype=np.float32)[:, None]
    exposure = exposure * heel
    exposure = exposure * (1.0 + noise * rng.standard_normal(exposure.shape).astype(np.float32) / np.sqrt(
        np.clip(exposure, 1e-3, None)))
    log_e = np.log10(np.clip(exposure, 1e-4, None))
    # H&D curve: film density rises sigmoidally with log exposure; a radiograph shows bone (low exposure) white.
    density = 1.0 / (1.0 + np.exp(-(log_e + 1.1) * 3.2))
    return (1.0 - density).astype(np.float32)
