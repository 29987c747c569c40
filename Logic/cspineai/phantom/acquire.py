"""Acquisition physics: series grids, tissue rendering with partial volume, CT and MRI image formation.

Rendering evaluates the implicit anatomy (:func:`anatomy.classify`) directly at each series' sample points, mapped
through that session's pose, with ``n_sub`` sub-samples spread over each voxel's slab along the slice axis (a
rectangular slice profile). The image is the weighted mean of the sub-samples' tissue values: partial volume through the
thick slice as the scanner integrates it, not a subsampled thin-slice volume. In-plane partial volume comes from the
point-spread function (Gaussian blur) applied afterwards.

CT: Hounsfield units per tissue (``TISSUE_HU``), trabecular texture in marrow, a kernel-specific PSF (sharp bone kernel
with edge enhancement, smooth soft-tissue kernel) and kernel-specific correlated noise.
MRI: fast spin echo signal ``S = PD * (1 - exp(-TR/T1)) * exp(-TE/T2)`` per tissue (``TISSUE_MR``, 1.5 T values,
effective T2 of fat lengthened by J-coupling decoupling in FSE), a smooth multiplicative bias field (posterior surface
coil), in-plane PSF and Rician noise (magnitude of complex Gaussian noise).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from ..volume import Volume
from .anatomy import TISSUES, Patient, classify
from .pose import Pose

# Hounsfield units (mean, texture SD) per tissue; sources in docs/phantom.md.
TISSUE_HU = {
    "air": (-1000, 0), "skin": (30, 8), "fat": (-100, 10), "muscle": (50, 8), "cortical_bone": (1400, 80),
    "cancellous_bone": (260, 70), "disc_nucleus": (85, 8), "disc_annulus": (95, 8), "csf": (8, 3), "cord": (38, 4),
    "cord_oedema": (32, 4), "blood_flow": (42, 4), "ligament": (90, 8), "ossified_ligament": (1000, 80),
    "modic1": (230, 50), "modic2": (120, 50), "sclerosis": (800, 60), "joint": (60, 8), "epidural": (30, 15),
    "mucosa": (45, 8), "disc_degenerated": (105, 10),
}
# Proton density (relative), T1 and T2 (ms) at 1.5 T; flowing blood is a flow void in spin echo (PD ~ 0).
TISSUE_MR = {
    "air": (0.0, 1000, 1), "skin": (0.75, 600, 45), "fat": (0.95, 270, 150), "muscle": (0.75, 1000, 40),
    "cortical_bone": (0.05, 1000, 5), "cancellous_bone": (0.85, 500, 90), "disc_nucleus": (0.9, 1150, 130),
    "disc_annulus": (0.6, 900, 45), "csf": (1.0, 4000, 2000), "cord": (0.72, 850, 78), "cord_oedema": (0.8, 1150, 160),
    "blood_flow": (0.05, 1400, 200), "ligament": (0.2, 700, 12), "ossified_ligament": (0.05, 1000, 5),
    "modic1": (0.9, 1200, 130), "modic2": (0.95, 380, 120), "sclerosis": (0.2, 900, 20), "joint": (0.85, 1500, 110),
    "epidural": (0.85, 700, 110), "mucosa": (0.8, 1000, 60), "disc_degenerated": (0.7, 900, 50),
}


@dataclasses.dataclass
class Grid:
    """A voxel grid: ``size`` (ni, nj, nk), ``spacing`` (mm, i j k), LPS ``origin``, ``direction`` (columns i j k)."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: np.ndarray
    direction: np.ndarray

    @classmethod
    def centred(cls, centre: np.ndarray, direction: np.ndarray, spacing, fov_mm) -> Grid:
        """Grid of ``fov_mm`` (i, j, k extents) centred on the LPS point ``centre``."""
        spacing = np.asarray(spacing, dtype=float)
        size = np.maximum(2, np.round(np.asarray(fov_mm, dtype=float) / spacing)).astype(int)
        origin = np.asarray(centre, dtype=float) - np.asarray(direction) @ (spacing * (size - 1) / 2.0)
        return cls(tuple(int(n) for n in size), tuple(float(s) for s in spacing), origin, np.asarray(direction, float))

    def flipped(self, axes: tuple[bool, bool, bool]) -> Grid:
        """The same voxel centres with the chosen index axes reversed (header updated, physical space unchanged)."""
        direction = self.direction.copy()
        origin = self.origin.copy()
        for n, flip in enumerate(axes):
            if flip:
                origin = origin + direction[:, n] * self.spacing[n] * (self.size[n] - 1)
                direction[:, n] = -direction[:, n]
        return Grid(self.size, self.spacing, origin, direction)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.size[2], self.size[1], self.size[0]

    def volume(self, array: np.ndarray, modality: str) -> Volume:
        return Volume(array, self.spacing, tuple(self.origin), self.direction.copy(), modality, f"phantom {modality}")

    def points(self, k: np.ndarray) -> np.ndarray:
        """LPS points ``(len(k), J, I, 3)`` of the (possibly fractional) slice positions ``k``, float32."""
        ni, nj, _ = self.size
        m = self.direction * np.asarray(self.spacing)
        i = np.arange(ni, dtype=np.float32)[None, None, :, None] * m[:, 0].astype(np.float32)
        j = np.arange(nj, dtype=np.float32)[None, :, None, None] * m[:, 1].astype(np.float32)
        kk = np.asarray(k, dtype=np.float32)[:, None, None, None] * m[:, 2].astype(np.float32)
        return (i + j + kk + self.origin.astype(np.float32)).astype(np.float32)


def sub_offsets(n_sub: int) -> np.ndarray:
    """Sub-sample offsets (in slices) at the centres of ``n_sub`` equal parts of the slab; odd ``n_sub`` keeps 0."""
    return (np.arange(n_sub) + 0.5) / n_sub - 0.5


def _interpolation_matrix(positions: np.ndarray, n: int) -> np.ndarray:
    """``(len(positions), n)`` matrix of linear-interpolation weights from ``n`` lattice points to ``positions``."""
    lo = np.clip(np.floor(positions).astype(int), 0, max(n - 2, 0))
    frac = (positions - lo).astype(np.float32)
    m = np.zeros((len(positions), n), dtype=np.float32)
    rows = np.arange(len(positions))
    m[rows, lo] += 1.0 - frac
    if n > 1:
        m[rows, lo + 1] += frac
    return m


def _separable_upsample(coarse: np.ndarray, positions: list[np.ndarray]) -> np.ndarray:
    """Linear interpolation of ``coarse`` (K, J, I, C) at fractional indices given per axis (K, J, I).

    Separable: one small matrix product per axis (BLAS), far cheaper than gathering eight neighbours per point.
    """
    out = coarse
    for axis, pos in enumerate(positions):
        m = _interpolation_matrix(np.asarray(pos, dtype=float), out.shape[axis])
        out = np.moveaxis(np.tensordot(m, out, axes=([1], [axis])), 0, axis)
    return np.ascontiguousarray(out)


class ReferenceMapper:
    """Reference-frame coordinates of a grid's (fractional) slice positions under a session's pose.

    A rigid pose is affine in the voxel indices and applied exactly. An articulated pose is smooth on the scale of
    ``coarse_mm`` (its blending width is 6 mm), so it is evaluated exactly on a lattice of that spacing and
    interpolated linearly (error well under 0.05 mm, checked in the tests); this keeps the blend's cost off the
    millions of sub-samples.
    """

    def __init__(self, grid: Grid, pose: Pose, k: np.ndarray, coarse_mm: float = 2.0):
        self.grid, self.pose = grid, pose
        self.ijk_to_world = np.eye(4)
        self.ijk_to_world[:3, :3] = grid.direction * np.asarray(grid.spacing)
        self.ijk_to_world[:3, 3] = grid.origin
        if pose.is_rigid:
            self.affine = (np.linalg.inv(pose.transforms[0]) @ self.ijk_to_world).astype(np.float32)
            return
        k = np.asarray(k, dtype=float)
        self.k_lo, self.k_hi = float(k.min()), float(k.max())
        axes = [np.array([self.k_lo, self.k_hi]), np.array([0.0, grid.size[1] - 1.0]),
                np.array([0.0, grid.size[0] - 1.0])]
        steps = [grid.spacing[2], grid.spacing[1], grid.spacing[0]]
        self.lattice_n = [max(2, int(np.ceil((hi - lo) * step / coarse_mm)) + 1) for (lo, hi), step in zip(axes, steps,
                                                                                                          strict=True)]
        lattices = [np.linspace(lo, hi, m) for (lo, hi), m in zip(axes, self.lattice_n, strict=True)]
        kk, jj, ii = np.meshgrid(*lattices, indexing="ij")
        ijk = np.stack([ii, jj, kk, np.ones_like(ii)], axis=-1).reshape(-1, 4)
        world = (ijk @ self.ijk_to_world.T)[:, :3]
        self.coarse = pose.to_reference(world).reshape(*kk.shape, 3).astype(np.float32)

    def __call__(self, k: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(x, y, z)`` reference coordinates, each ``(len(k), J, I)`` float32."""
        k = np.asarray(k, dtype=np.float32)
        ni, nj = self.grid.size[0], self.grid.size[1]
        if self.pose.is_rigid:
            i = np.arange(ni, dtype=np.float32)[None, None, :]
            j = np.arange(nj, dtype=np.float32)[None, :, None]
            kk = k[:, None, None]
            a = self.affine
            return tuple((a[c, 0] * i + a[c, 1] * j) + (a[c, 2] * kk + a[c, 3]) for c in range(3))
        span = max(self.k_hi - self.k_lo, 1e-9)
        positions = [(k - self.k_lo) / span * (self.lattice_n[0] - 1),
                     np.arange(nj) / max(nj - 1, 1) * (self.lattice_n[1] - 1),
                     np.arange(ni) / max(ni - 1, 1) * (self.lattice_n[2] - 1)]
        out = _separable_upsample(self.coarse, positions)
        return out[..., 0], out[..., 1], out[..., 2]


def reference_points(grid: Grid, pose: Pose, k: np.ndarray, coarse_mm: float = 2.0) -> np.ndarray:
    """Reference points ``(len(k), J, I, 3)`` of a grid's slice positions ``k`` (see :class:`ReferenceMapper`)."""
    return np.stack(ReferenceMapper(grid, pose, k, coarse_mm)(k), axis=-1)


@dataclasses.dataclass
class Rendered:
    """Tissue classes of every sub-sample and the centre-sample label and causal maps of one grid."""

    tissue: np.ndarray  # (n_sub, K, J, I) uint8
    label: np.ndarray  # (K, J, I) uint8
    causal: np.ndarray  # (K, J, I) uint8
    weights: np.ndarray  # (n_sub,) slice-profile weights, summing to 1

    def mix(self, values: np.ndarray) -> np.ndarray:
        """Partial-volume image: slice-profile weighted mean of ``values[tissue]`` over the sub-samples (float32)."""
        values = np.asarray(values, dtype=np.float32)
        out = np.zeros(self.label.shape, dtype=np.float32)
        for w, t in zip(self.weights, self.tissue, strict=True):
            out += w * values[t]
        return out

    def fraction(self, names: tuple[str, ...]) -> np.ndarray:
        values = np.array([name in names for name in TISSUES], dtype=np.float32)
        return self.mix(values)


def render(patient: Patient, grid: Grid, pose: Pose, n_sub: int, chunk_points: int = 1_000_000) -> Rendered:
    """Classify ``n_sub`` sub-samples per voxel of ``grid`` (``n_sub`` odd: the centre sample gives the labels)."""
    n_sub = int(n_sub) | 1
    offsets = sub_offsets(n_sub)
    nk, nj, ni = grid.size[2], grid.size[1], grid.size[0]
    tissue = np.zeros((n_sub, nk, nj, ni), dtype=np.uint8)
    label = np.zeros((nk, nj, ni), dtype=np.uint8)
    causal = np.zeros((nk, nj, ni), dtype=np.uint8)
    k_all = (np.arange(nk)[:, None] + offsets[None, :]).ravel()  # slice-major, sub-sample minor
    mapper = ReferenceMapper(grid, pose, k_all)
    per_chunk = max(1, chunk_points // (nj * ni))
    centre = n_sub // 2
    for start in range(0, len(k_all), per_chunk):
        stop = min(len(k_all), start + per_chunk)
        x, y, z = (np.ascontiguousarray(c).ravel() for c in mapper(k_all[start:stop]))
        t, lab, cau = classify(patient, x, y, z)
        t = t.reshape(stop - start, nj, ni)
        lab = lab.reshape(stop - start, nj, ni)
        cau = cau.reshape(stop - start, nj, ni)
        for row in range(start, stop):
            k, m = divmod(row, n_sub)
            tissue[m, k] = t[row - start]
            if m == centre:
                label[k] = lab[row - start]
                causal[k] = cau[row - start]
    weights = np.full(n_sub, 1.0 / n_sub)
    return Rendered(tissue, label, causal, weights)


# --- CT ---------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class CTKernel:
    """Reconstruction kernel: in-plane PSF (Gaussian SD, mm), edge enhancement gain, noise SD (HU), noise grain (mm)."""

    psf_mm: float
    sharpen: float
    noise_hu: float
    noise_grain_mm: float


CT_KERNELS = {
    "CT_bone": CTKernel(psf_mm=0.3, sharpen=0.8, noise_hu=55.0, noise_grain_mm=0.25),
    "CT_tissue": CTKernel(psf_mm=0.75, sharpen=0.0, noise_hu=9.0, noise_grain_mm=0.9),
}


def ct_attenuation(rendered: Rendered, spacing, rng: np.random.Generator, hu_table: dict | None = None,
                   marrow_scale: float = 1.0) -> np.ndarray:
    """Noise-free HU image before the kernel: tissue HU with partial volume and trabecular texture, float32."""
    table = hu_table or TISSUE_HU
    means = np.array([table[name][0] for name in TISSUES], dtype=np.float32)
    means[TISSUES.index("cancellous_bone")] *= marrow_scale
    hu = rendered.mix(means)
    # Trabecular texture: band-limited noise at the trabecular scale, only where marrow is.
    grain = np.array([0.35 / spacing[2], 0.35 / spacing[1], 0.35 / spacing[0]])
    texture = ndimage.gaussian_filter(rng.standard_normal(hu.shape, dtype=np.float32), grain)
    texture /= texture.std() + 1e-6
    sds = np.array([table[name][1] for name in TISSUES], dtype=np.float32)
    hu += texture * rendered.mix(sds)
    return hu


def ct_reconstruct(hu: np.ndarray, spacing, kernel: CTKernel, rng: np.random.Generator) -> np.ndarray:
    """Apply a kernel's PSF, edge enhancement and correlated noise to a HU image; int16 HU clipped to [-1024, 3071]."""
    sigma = np.array([0.0, kernel.psf_mm / spacing[1], kernel.psf_mm / spacing[0]])
    image = ndimage.gaussian_filter(hu, sigma)
    if kernel.sharpen:
        wide = ndimage.gaussian_filter(image, [0.0, 1.0 / spacing[1], 1.0 / spacing[0]])
        image = image + kernel.sharpen * (image - wide)
    grain = [0.0, kernel.noise_grain_mm / spacing[1], kernel.noise_grain_mm / spacing[0]]
    noise = ndimage.gaussian_filter(rng.standard_normal(hu.shape, dtype=np.float32), grain)
    noise *= kernel.noise_hu / (noise.std() + 1e-6)
    image = image + noise * (hu > -950)  # air outside the patient is quiet after the scanner's air correction
    return np.clip(np.round(image), -1024, 3071).astype(np.int16)


# --- MRI --------------------------------------------------------------------------------------------------------------
def fse_signal(tr_ms: float, te_ms: float, table: dict | None = None) -> np.ndarray:
    """Per-tissue fast spin echo signal (arbitrary units, 0..1) at repetition time ``tr_ms`` and echo time ``te_ms``."""
    table = table or TISSUE_MR
    out = np.zeros(len(TISSUES), dtype=np.float32)
    for n, name in enumerate(TISSUES):
        pd, t1, t2 = table[name]
        out[n] = pd * (1.0 - np.exp(-tr_ms / t1)) * np.exp(-te_ms / t2)
    return out


def bias_field(grid: Grid, rng: np.random.Generator, strength: float, coil_centre: np.ndarray,
               coil_axis: np.ndarray) -> np.ndarray:
    """Smooth multiplicative field (K, J, I): a random quadratic in space times a posterior surface-coil falloff."""
    pts = grid.points(np.arange(grid.size[2])[:: max(1, grid.size[2] // 8)])  # coarse in k, interpolated below
    rel = (pts - coil_centre.astype(np.float32)) / 100.0
    c = rng.normal(0.0, strength, 9)
    log_field = (c[0] * rel[..., 0] + c[1] * rel[..., 1] + c[2] * rel[..., 2] + c[3] * rel[..., 0] ** 2
                 + c[4] * rel[..., 1] ** 2 + c[5] * rel[..., 2] ** 2 + c[6] * rel[..., 0] * rel[..., 1]
                 + c[7] * rel[..., 1] * rel[..., 2] + c[8] * rel[..., 0] * rel[..., 2])
    depth = rel @ coil_axis.astype(np.float32)  # distance from the coil (100 mm units): sensitivity falls with it
    field = np.exp(log_field) * (0.55 + 0.45 * np.exp(-np.clip(depth, 0.0, None) * 1.2 * strength / 0.2))
    ks = np.arange(grid.size[2])[:: max(1, grid.size[2] // 8)]
    if len(ks) == grid.size[2]:
        return field.astype(np.float32)
    pos = np.interp(np.arange(grid.size[2]), ks, np.arange(len(ks)))
    return _separable_upsample(field[..., None], [pos, np.arange(grid.size[1]), np.arange(grid.size[0])])[..., 0]


def mr_image(rendered: Rendered, values: np.ndarray, grid: Grid, rng: np.random.Generator, bias: np.ndarray,
             snr: float, psf_px: float = 0.45, scale: float = 1000.0) -> np.ndarray:
    """Partial-volume signal -> in-plane PSF -> bias -> Rician noise; int16, ``scale`` ~ the brightest tissue."""
    signal = rendered.mix(values)
    signal = ndimage.gaussian_filter(signal, [0.0, psf_px, psf_px])
    signal *= bias
    reference = float(np.max(values))
    sigma = reference / snr
    real = signal + rng.normal(0.0, sigma, signal.shape).astype(np.float32)
    imag = rng.normal(0.0, sigma, signal.shape).astype(np.float32)
    magnitude = np.sqrt(real * real + imag * imag)
    return np.clip(np.round(magnitude * (scale / reference)), 0, 32767).astype(np.int16)
