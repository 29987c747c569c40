"""A parametric cervical spine, C1..T2, with its canal, cord, discs, neck muscles and pathology.

Coordinates. The patient is built in a *reference frame* (LPS mm: x towards the patient's left, y posterior, z
superior). The line through the vertebral body centres is a circular arc in the mid-sagittal plane (Harrison's circle
model of cervical lordosis); ``s`` is arc length along it (mm, superior positive, 0 mid-way between C2 and C7),
``v`` the signed distance from it in the sagittal plane (mm, posterior positive) and ``u = x``. Tubular structures (neck
outline, muscles, airway, canal, thecal sac, cord, discs) are implicit shapes in ``(u, v, s)``; each vertebra is a rigid
body with its own frame ``(u, a, h)`` (a posterior, h along its axis, superior) centred on its body centroid.

Nothing here touches an image grid: :func:`classify` maps any array of reference points to tissue classes, label
values and the causal-finding mask, so every acquisition samples the same anatomy at its own points. Sizes and their
sources are listed in ``docs/phantom.md``.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np

from ..series import BODY_VALUES, CORD, CSF, DISC_LEVELS, DISC_VALUES, POSTERIOR_VALUES

# --- tissue classes (the physics of each lives in acquire.py) ---------------------------------------------------------
TISSUES = (
    "air", "skin", "fat", "muscle", "cortical_bone", "cancellous_bone", "disc_nucleus", "disc_annulus", "csf", "cord",
    "cord_oedema", "blood_flow", "ligament", "ossified_ligament", "modic1", "modic2", "sclerosis", "joint",
    "epidural", "mucosa", "disc_degenerated",
)
T = {name: n for n, name in enumerate(TISSUES)}

LEVELS = ("C1", "C2", "C3", "C4", "C5", "C6", "C7", "T1", "T2")  # rendered; C1 and T2 are unlabelled context
DISCS = DISC_LEVELS  # C2-C3 .. C7-T1 (labelled)
#                       C1    C2    C3    C4    C5    C6    C7    T1    T2
_BODY_HALF_WIDTH = (0.0, 8.3, 7.9, 8.1, 8.5, 9.0, 9.8, 11.0, 12.0)  # mm, LR (Panjabi 1991: widths 15-20 mm)
_BODY_HALF_DEPTH = (0.0, 8.0, 7.5, 7.7, 7.9, 8.1, 8.4, 8.6, 9.0)  # mm, AP (Panjabi 1991: depths 15-17 mm)
_BODY_HALF_HEIGHT = (5.0, 8.0, 6.9, 6.9, 6.9, 7.0, 7.3, 8.0, 8.6)  # mm, SI (Panjabi 1991: heights 13-16 mm)
_CANAL_HALF_WIDTH = (14.5, 12.8, 12.4, 12.6, 12.8, 12.8, 12.2, 10.5, 9.0)  # mm (canal width 22-27 mm)
_CANAL_HALF_DEPTH = (9.5, 8.4, 7.6, 7.5, 7.4, 7.4, 7.5, 7.8, 8.0)  # mm (canal AP 14-17 mm, Murone 1974)
_SPINOUS_LENGTH = (14.0, 24.0, 16.0, 16.0, 18.0, 21.0, 30.0, 33.0, 33.0)  # mm
_CORD_HALF_LR = (5.4, 5.5, 5.8, 6.3, 6.6, 6.4, 6.0, 5.3, 4.8)  # mm: cervical enlargement C4-C6 (Kameyama 1996)
_CORD_HALF_AP = (4.1, 4.0, 3.9, 3.8, 3.75, 3.7, 3.7, 3.6, 3.5)  # mm: AP diameter 7-8 mm (Frostell 2016)
#                       C2-C3 C3-C4 C4-C5 C5-C6 C6-C7 C7-T1
_DISC_HEIGHT = (4.6, 5.0, 5.4, 5.6, 5.6, 5.0)  # mm, healthy (Gilad & Nissan 1986: 4.5-6.5 mm)
_DISC_RISK = (0.06, 0.16, 0.24, 0.30, 0.18, 0.06)  # where spondylosis concentrates: C5-C6 most, then C4-C5, C6-C7
_T1T2_DISC = 4.2  # mm, unlabelled
_C1_GAP = 10.0  # mm from the C2 body top to the C1 ring centre (the dens passes through the ring)


@dataclasses.dataclass
class Vertebra:
    """One rigid vertebra: ``centre`` (reference LPS mm) and ``axes`` (3x3, columns u, a, h in the reference frame)."""

    name: str
    s: float
    centre: np.ndarray
    axes: np.ndarray
    half_width: float
    half_depth: float
    half_height: float
    canal_half_width: float
    canal_half_depth: float
    spinous_length: float
    spinous_angle: float  # radians below the horizontal
    up_half: float = 10.0  # half the distance to the vertebra above, along the arc (facet joint position)
    down_half: float = 10.0
    facet_up: int = 0  # arthropathy grade 0..3 of the facet joints above / below this vertebra
    facet_down: int = 0
    modic_up: int = 0  # Modic type 0..3 at the superior / inferior endplate
    modic_down: int = 0
    osteophyte_up: float = 0.0  # mm, endplate spurs at the superior / inferior endplate
    osteophyte_down: float = 0.0

    @property
    def body_label(self) -> int:
        return BODY_VALUES.get(self.name, 0)

    @property
    def posterior_label(self) -> int:
        return POSTERIOR_VALUES.get(self.name, 0)


@dataclasses.dataclass
class Patient:
    """Every parameter of one synthetic patient (sizes mm, angles radians); sampled by :func:`sample_patient`."""

    curvature: float  # 1/mm; lordosis (positive) bends the ends of the spine posteriorly
    arc_limits: tuple[float, float]  # arc lengths (T1, C2 centres) between which the curve bends; straight beyond
    lordosis_deg: float  # C2-C7 tangent angle, degrees
    vertebrae: list[Vertebra]
    disc_s: np.ndarray  # arc position of each labelled disc centre, (6,)
    disc_height: np.ndarray  # mm, (6,)
    size: float  # global scale of the skeleton
    cord_scale: float
    neck_half_lr: float
    neck_half_ap: float
    subcutaneous_fat: float  # mm
    extensor_fat_fraction: float  # 0..1, fatty infiltration of the deep extensors (multifidus, semispinalis cervicis)
    findings: dict
    causal: dict = dataclasses.field(default_factory=dict)  # finding -> True when it raised the outcome's logit
    fat_waves: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((6, 4)))
    # Cord size and CSF space independent of the bony canal (:func:`vary_cord_size`); the defaults are the standard
    # phantom, whose cord and thecal sac keep fixed proportions to the canal.
    cord_lr_factor: float = 1.0
    cord_ap_factor: float = 1.0
    sac_margin_lr: float = 3.6  # mm of CSF beside the cord (thecal sac half-width minus cord half-width; Kato 2012)
    sac_margin_ap: float = 2.8  # mm of CSF in front of and behind the cord

    # --- tube parameters along s, sampled per vertebra and interpolated -------------------------------------------
    def profile(self, name: str, s: np.ndarray) -> np.ndarray:
        table = self._profiles[name]
        return np.interp(s, self._s_sorted, table).astype(np.float32)

    def __post_init__(self) -> None:
        order = np.argsort([v.s for v in self.vertebrae])
        self._s_sorted = np.array([self.vertebrae[n].s for n in order])
        get = lambda key: np.array([getattr(self.vertebrae[n], key) for n in order])  # noqa: E731
        half_width = get("half_width")
        half_width[half_width == 0] = half_width[half_width > 0].min()
        half_depth = get("half_depth")
        half_depth[half_depth == 0] = 8.0
        self._profiles = {
            "W": half_width,
            "D": half_depth,
            "Wc": get("canal_half_width"),
            "Dc": get("canal_half_depth"),
            "cord_a": np.array([_CORD_HALF_LR[n] for n in order]) * self.cord_scale * self.cord_lr_factor,
            "cord_b": np.array([_CORD_HALF_AP[n] for n in order]) * self.cord_scale * self.cord_ap_factor,
        }


# --- the arc -------------------------------------------------------------------------------------------------------
def arc_point(curvature: float, s: np.ndarray, limits: tuple[float, float] | None = None) -> tuple[np.ndarray,
                                                                                                  np.ndarray]:
    """``(y, z)`` of the spine curve at arc length ``s`` (tangent +z and position 0 at ``s = 0``).

    The curve is a circular arc between ``limits`` (arc lengths of T1 and C2) continued by its tangents beyond them:
    the lordosis is cervical, the thoracic spine and the skull base do not keep bending along the same circle.
    """
    s = np.asarray(s, dtype=float)
    k = curvature
    sc = s if limits is None else np.clip(s, *limits)
    y = sc * sc * k / 2.0 * np.sinc(k * sc / (2 * np.pi)) ** 2  # (1 - cos ks)/k, exact and finite as k -> 0
    z = sc * np.sinc(k * sc / np.pi)  # sin(ks)/k
    if limits is not None:
        extra = s - sc
        y = y + extra * np.sin(k * sc)
        z = z + extra * np.cos(k * sc)
    return y, z


def arc_frame(curvature: float, s: float, limits: tuple[float, float] | None = None) -> np.ndarray:
    """Columns ``(u, a, h)``: LR, posterior normal and superior tangent of the curve at ``s`` (reference frame)."""
    phi = curvature * (s if limits is None else float(np.clip(s, *limits)))
    return np.array([[1.0, 0.0, 0.0], [0.0, np.cos(phi), np.sin(phi)], [0.0, -np.sin(phi), np.cos(phi)]])


def arc_coordinates(curvature: float, y: np.ndarray, z: np.ndarray,
                    limits: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(v, s)`` of reference points: signed posterior offset from the curve and arc length of their foot point."""
    if abs(curvature) < 1e-7:
        return y, z
    sign = 1.0 if curvature > 0 else -1.0
    radius = 1.0 / abs(curvature)
    dy = sign * y - radius  # mirror kyphosis onto lordosis: the formulas below assume a positive curvature
    dist = np.sqrt(dy * dy + z * z)
    v = sign * (radius - dist)
    s = radius * np.arctan2(z, -dy)
    if limits is not None:
        for end, beyond in ((limits[1], s > limits[1]), (limits[0], s < limits[0])):
            if np.any(beyond):  # foot point on the straight continuation: project onto the tangent line
                ye, ze = arc_point(curvature, end)
                phi = curvature * end
                dyy, dzz = y[beyond] - ye, z[beyond] - ze
                s[beyond] = end + dyy * np.sin(phi) + dzz * np.cos(phi)
                v[beyond] = dyy * np.cos(phi) - dzz * np.sin(phi)
    return v.astype(np.float32), s.astype(np.float32)


# --- sampling a patient --------------------------------------------------------------------------------------------
def sample_patient(rng: np.random.Generator, clinical: dict) -> Patient:
    """Draw anatomy and pathology of one patient; ``clinical`` (age, sex, BMI...) shapes sizes and degeneration."""
    female = clinical["sex"] == "F"
    age = clinical["age"]
    size = float(np.clip(rng.normal(0.95 if female else 1.03, 0.04), 0.86, 1.14))
    cord_scale = float(np.clip(rng.normal(1.0, 0.03), 0.94, 1.07))
    canal_scale = float(np.clip(rng.normal(1.0, 0.07), 0.82, 1.15))  # developmental canal size
    lordosis = float(np.clip(rng.normal(14.0, 11.0), -15.0, 40.0))
    # Degeneration grows with age (Matsumoto 1998: disc degeneration in >85% of asymptomatic subjects over 60).
    degeneration = float(np.clip((age - 35) / 40 + rng.normal(0, 0.25), 0.0, 1.2))

    n_disc = len(DISCS)
    n_affected = int(rng.choice([1, 2, 3], p=[0.45, 0.38, 0.17]))
    affected = rng.choice(n_disc, size=n_affected, replace=False, p=np.array(_DISC_RISK) / sum(_DISC_RISK))
    pfirrmann = np.clip(np.round(degeneration * 2 + rng.normal(0, 0.6, n_disc)), 0, 3).astype(int)
    protrusion = np.zeros(n_disc)
    osteophyte = np.zeros(n_disc)
    offset = np.zeros(n_disc)  # LR position of a focal herniation (mm)
    focal = np.zeros(n_disc, dtype=bool)
    for d in affected:  # every patient of the cohort had surgery: at least one level narrows the canal
        pfirrmann[d] = max(pfirrmann[d], int(rng.integers(1, 4)))
        protrusion[d] = rng.uniform(2.0, 6.0)
        osteophyte[d] = rng.uniform(0.0, 3.0) * degeneration
        focal[d] = rng.random() < 0.35
        offset[d] = rng.normal(0, 3.0) if focal[d] else 0.0
    protrusion += (pfirrmann >= 2) * rng.uniform(0.0, 1.2, n_disc) * (protrusion == 0)
    disc_height = np.array(_DISC_HEIGHT) * size * (1.0 - 0.12 * pfirrmann)
    facet = np.clip(np.round(degeneration * 1.6 + rng.normal(-0.4, 0.7, n_disc)), 0, 3).astype(int)
    modic = np.zeros(n_disc, dtype=int)
    for d in range(n_disc):
        if pfirrmann[d] >= 2 and rng.random() < 0.22 + 0.1 * (d in affected):
            modic[d] = int(rng.choice([1, 2, 3], p=[0.35, 0.55, 0.10]))
    lf_buckling = np.clip(0.45 * pfirrmann + rng.normal(0, 0.4, n_disc), 0, 2.5)
    opll = None
    if rng.random() < 0.18:  # OPLL in about one in five operated East-Asian CSM patients
        start = int(rng.integers(0, n_disc - 1))
        span = int(rng.integers(1, 4))
        opll = {"levels": [DISCS[d] for d in range(start, min(n_disc, start + span))],
                "thickness_mm": float(rng.uniform(2.0, 5.5)), "width_mm": float(rng.uniform(7.0, 12.0))}
    bmi = clinical["bmi"]
    fat_fraction = float(np.clip(0.06 + 0.0035 * (age - 40) + 0.006 * (bmi - 24) + 0.05 * female
                                 + rng.normal(0, 0.07), 0.02, 0.55))

    # --- the skeleton along the arc ----------------------------------------------------------------------------
    heights = np.array(_BODY_HALF_HEIGHT) * size
    gaps = [_C1_GAP * size, *disc_height, _T1T2_DISC * size]  # between consecutive LEVELS, top to bottom
    s_pos = np.zeros(len(LEVELS))
    for n in range(1, len(LEVELS)):
        above = heights[n - 1] if n > 1 else 0.0  # the C1 gap is measured from the ring centre
        s_pos[n] = s_pos[n - 1] - above - gaps[n - 1] - heights[n]
    s_pos -= (s_pos[LEVELS.index("C2")] + s_pos[LEVELS.index("C7")]) / 2.0
    span = s_pos[LEVELS.index("C2")] - s_pos[LEVELS.index("C7")]
    curvature = np.radians(lordosis) / span
    limits = (float(s_pos[LEVELS.index("T1")]), float(s_pos[LEVELS.index("C2")]))
    vertebrae = []
    for n, name in enumerate(LEVELS):
        y, z = arc_point(curvature, s_pos[n], limits)
        tilt = rng.normal(0.0, np.radians(2.0))
        frame = arc_frame(curvature, s_pos[n], limits) @ _rotation_x(tilt)
        vertebrae.append(Vertebra(
            name=name, s=float(s_pos[n]), centre=np.array([0.0, y, z]), axes=frame,
            half_width=_BODY_HALF_WIDTH[n] * size, half_depth=_BODY_HALF_DEPTH[n] * size,
            half_height=heights[n], canal_half_width=_CANAL_HALF_WIDTH[n] * size * (0.5 + 0.5 * canal_scale),
            canal_half_depth=_CANAL_HALF_DEPTH[n] * size * canal_scale,
            spinous_length=_SPINOUS_LENGTH[n] * size * rng.uniform(0.85, 1.15),
            spinous_angle=np.radians(rng.uniform(15, 35)),
        ))
    for n, vertebra in enumerate(vertebrae):
        if n > 0:
            vertebra.up_half = (vertebrae[n - 1].s - vertebra.s) / 2.0
        if n < len(vertebrae) - 1:
            vertebra.down_half = (vertebra.s - vertebrae[n + 1].s) / 2.0
    vertebrae[0].up_half = vertebrae[0].down_half
    vertebrae[-1].down_half = vertebrae[-1].up_half
    for d in range(n_disc):  # disc d lies between LEVELS[d + 1] (above) and LEVELS[d + 2] (below)
        upper, lower = vertebrae[d + 1], vertebrae[d + 2]
        upper.facet_down = lower.facet_up = int(facet[d])
        upper.modic_down = lower.modic_up = int(modic[d])
        upper.osteophyte_down = lower.osteophyte_up = float(osteophyte[d])
    disc_s = np.array([(vertebrae[d + 1].s - vertebrae[d + 1].half_height + vertebrae[d + 2].s
                        + vertebrae[d + 2].half_height) / 2.0 for d in range(n_disc)])

    subcutaneous = float(np.clip(4.0 + 0.7 * (bmi - 22.0) + rng.normal(0, 1.0), 2.0, 16.0))
    findings = {
        "lordosis_deg": round(lordosis, 2),
        "extensor_fat_fraction": round(fat_fraction, 4),
        "opll": opll,
        "levels": {
            DISCS[d]: {
                "pfirrmann": int(pfirrmann[d]) + 1,  # Pfirrmann-like grade 1 (healthy) .. 4
                "protrusion_mm": round(float(protrusion[d]), 3),
                "focal_herniation": bool(focal[d]),
                "herniation_offset_mm": round(float(offset[d]), 3),
                "osteophyte_mm": round(float(osteophyte[d]), 3),
                "facet_arthropathy": int(facet[d]),
                "modic": int(modic[d]),
                "ligamentum_flavum_buckling_mm": round(float(lf_buckling[d]), 3),
                "disc_height_mm": round(float(disc_height[d]), 3),
            }
            for d in range(n_disc)
        },
    }
    waves = rng.normal(0.0, 1.0, (6, 4))
    waves[:, :3] /= np.linalg.norm(waves[:, :3], axis=1, keepdims=True)
    waves[:, 2] *= 0.25  # streaks of fat run along the muscle fibres (SI): weak variation along z
    waves[:, :3] *= 2 * np.pi / rng.uniform(2.5, 5.0, (6, 1))  # 2.5-5 mm wavelength
    waves[:, 3] = rng.uniform(0, 2 * np.pi, 6)
    patient = Patient(
        curvature=float(curvature), arc_limits=limits, lordosis_deg=lordosis,
        vertebrae=vertebrae, disc_s=disc_s, disc_height=disc_height,
        size=size, cord_scale=cord_scale, neck_half_lr=float(rng.uniform(52, 60) * size + subcutaneous - 6),
        neck_half_ap=float(rng.uniform(54, 60) * size + subcutaneous - 6), subcutaneous_fat=subcutaneous,
        extensor_fat_fraction=fat_fraction, findings=findings, fat_waves=waves,
    )
    _compute_compression(patient)
    return patient


def vary_cord_size(patient: Patient, rng: np.random.Generator) -> Patient:
    """``patient`` with the cord's width and depth and the CSF space around it drawn independently of the bony canal.

    Why: in the standard phantom the cord and thecal sac keep fixed proportions to the canal, so a segmentation
    network can place the cord from the bones alone. cordseg-unet 1.5.0 did: with the whole canal of the real T1
    painted black it still drew a full-width cord, and a phantom cord 25% narrower than usual made its T1 cord 21-54%
    too large (docs/results/segmentation.md). Ranges: healthy adult cords 10-15 mm wide and 6-9 mm deep, narrower
    when atrophic (Frostell 2016, Kato 2012); the CSF space beside the cord is widest in the upper cervical spine.
    Findings (compression) are recomputed, so labels and outcome follow the new anatomy.
    """
    varied = dataclasses.replace(
        patient,
        findings=copy.deepcopy(patient.findings),
        cord_lr_factor=float(rng.uniform(0.72, 1.12)),
        cord_ap_factor=float(rng.uniform(0.8, 1.12)),
        sac_margin_lr=float(rng.uniform(2.5, 6.5)),
        sac_margin_ap=float(rng.uniform(1.8, 4.5)),
    )
    _compute_compression(varied)
    varied.findings["cord_variation"] = {
        key: round(getattr(varied, key), 4)
        for key in ("cord_lr_factor", "cord_ap_factor", "sac_margin_lr", "sac_margin_ap")
    }
    return varied


def _rotation_x(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


# --- canal geometry shared by the renderer and the findings --------------------------------------------------------
def _bump(x: np.ndarray, width: float) -> np.ndarray:
    return np.exp(-0.5 * (x / width) ** 2)


def anterior_intrusion(patient: Patient, s: np.ndarray, u: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Depth (mm) of disc / osteophyte / OPLL intruding into the canal from its anterior wall, and which (0 disc,
    1 osteophyte, 2 OPLL), at arc position ``s`` and LR offset ``u``."""
    s = np.asarray(s, dtype=np.float32)
    u = np.asarray(u, dtype=np.float32)
    disc = np.zeros(np.broadcast(s, u).shape, dtype=np.float32)
    bone = np.zeros_like(disc)
    for d, level in enumerate(DISCS):
        f = patient.findings["levels"][level]
        ds = s - patient.disc_s[d]
        if f["protrusion_mm"] > 0:
            width_u = 4.5 if f["focal_herniation"] else 11.0
            height = patient.disc_height[d] / 2 + 1.8
            disc = np.maximum(disc, f["protrusion_mm"] * _bump(ds, height / 1.4)
                              * _bump(u - f["herniation_offset_mm"], width_u))
        if f["osteophyte_mm"] > 0:
            # Spurs sit on both endplates around the disc: a ridge a little taller than the disc, broad in LR.
            bone = np.maximum(bone, f["osteophyte_mm"] * _bump(ds, patient.disc_height[d] / 2 + 2.0) * _bump(u, 9.0))
    opll = np.zeros_like(disc)
    if patient.findings["opll"]:
        o = patient.findings["opll"]
        idx = [DISCS.index(level) for level in o["levels"]]
        top = patient.disc_s[min(idx)] + 9.0
        bottom = patient.disc_s[max(idx)] - 9.0
        along = np.clip(np.minimum(s - bottom, top - s) / 3.0, 0.0, 1.0)
        opll = o["thickness_mm"] * along * np.clip(1.2 - (u / (o["width_mm"] / 2)) ** 2, 0.0, 1.0)
    depth = np.maximum(np.maximum(disc, bone), opll)
    kind = np.where(opll >= depth, 2, np.where(bone >= disc, 1, 0)).astype(np.uint8)
    kind[depth <= 0] = 0
    return depth, kind


def posterior_intrusion(patient: Patient, s: np.ndarray) -> np.ndarray:
    """Thickness (mm) of the ligamentum flavum in the canal from behind: 1.5 mm plus buckling at degenerated levels."""
    s = np.asarray(s, dtype=np.float32)
    out = np.full(s.shape, 1.5, dtype=np.float32)
    for d, level in enumerate(DISCS):
        out += patient.findings["levels"][level]["ligamentum_flavum_buckling_mm"] * _bump(s - patient.disc_s[d], 3.5)
    return out


def sac_front_wall(canal_centre: np.ndarray, sac_half_depth: np.ndarray, intrusion_front: np.ndarray) -> np.ndarray:
    """Front wall of the thecal sac (mm along ``v``): its place in a healthy canal, pushed back behind an anterior
    intrusion (disc, osteophyte, OPLL) whose back edge is ``intrusion_front``. One formula for the findings
    (:func:`canal_layout`) and the painted image, where a focal herniation dents the wall at its own LR position."""
    return np.maximum(canal_centre - 0.15 - sac_half_depth, intrusion_front + 0.3)


def canal_layout(patient: Patient, s: np.ndarray, u_cord: np.ndarray | float = 0.0) -> dict[str, np.ndarray]:
    """Positions along ``v`` (mm) of the canal walls, thecal sac walls and cord, and the cord half-axes at ``s``.

    The cord keeps its healthy shape until the sac leaves it less than its AP diameter; then it flattens (AP half-axis
    down to 35% of healthy) and widens a little, so its area falls: the compression the findings report.
    """
    s = np.asarray(s, dtype=np.float32)
    body_depth, canal_width, canal_depth = patient.profile("D", s), patient.profile("Wc", s), patient.profile("Dc", s)
    a0, b0 = patient.profile("cord_a", s), patient.profile("cord_b", s)
    canal_front = body_depth + 1.0  # posterior longitudinal ligament, about 1 mm, behind the body
    centre = canal_front + canal_depth
    canal_back = centre + canal_depth
    sac_a, sac_b = a0 + patient.sac_margin_lr, np.minimum(b0 + patient.sac_margin_ap, canal_depth - 0.4)
    front, _ = anterior_intrusion(patient, s, u_cord)
    sac_front = sac_front_wall(centre, sac_b, canal_front + front)
    sac_back = np.minimum(centre - 0.15 + sac_b, canal_back - posterior_intrusion(patient, s))
    sac_back = np.maximum(sac_back, sac_front + 0.8)
    cord_front = np.maximum(centre - 0.6 - b0, sac_front + 0.4)
    cord_back = np.minimum(centre - 0.6 + b0, sac_back - 0.4)
    b = np.maximum((cord_back - cord_front) / 2.0, 0.35 * b0)
    b = np.minimum(b, b0)
    cord_centre = np.where(b < b0, (sac_front + sac_back) / 2.0, centre - 0.6)
    a = a0 * (1.0 + 0.3 * (1.0 - b / b0))
    return {"canal_front": canal_front, "canal_centre": centre, "canal_back": canal_back,
            "canal_half_width": canal_width, "canal_half_depth": canal_depth, "sac_front": sac_front,
            "sac_back": sac_back, "sac_half_width": sac_a, "sac_half_depth": sac_b, "cord_centre": cord_centre,
            "cord_a": a, "cord_b": b, "cord_a0": a0, "cord_b0": b0}


def cord_area(patient: Patient, s: np.ndarray) -> np.ndarray:
    """Cord cross-sectional area (mm^2, perpendicular to the arc) at arc positions ``s``: pi * a * b."""
    layout = canal_layout(patient, s)
    return np.pi * layout["cord_a"] * layout["cord_b"]


def _compute_compression(patient: Patient) -> None:
    for d, level in enumerate(DISCS):
        s = np.linspace(patient.disc_s[d] - 4, patient.disc_s[d] + 4, 17, dtype=np.float32)
        layout = canal_layout(patient, s)
        ratio = float(np.min(layout["cord_b"] / layout["cord_b0"]))
        area = float(np.min(np.pi * layout["cord_a"] * layout["cord_b"]))
        f = patient.findings["levels"][level]
        f["cord_compression_ratio"] = round(ratio, 4)  # compressed AP / healthy AP (1 = not compressed)
        f["cord_area_mm2"] = round(area, 3)
        f["canal_ap_mm"] = round(float(np.min(layout["sac_back"] - layout["sac_front"])), 3)
        # T2 hyperintensity follows sustained compression (Nouri 2015): more likely the flatter the cord.
        f["cord_t2_hyperintensity"] = bool(ratio < 0.72)
    patient.findings["max_compression"] = round(
        1.0 - min(f["cord_compression_ratio"] for f in patient.findings["levels"].values()), 4)


# --- classification of points ----------------------------------------------------------------------------------------
def _ellipse(u: np.ndarray, v: np.ndarray, u0: float, v0: float, a, b) -> np.ndarray:
    du = (u - u0) / a
    dv = (v - v0) / b
    return du * du + dv * dv


def fat_streaks(patient: Patient, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Smooth random field, about N(0, 1), at reference points (a sum of random plane waves: streaks along the
    fibres); fat where it falls below :func:`fat_threshold`."""
    w = patient.fat_waves.astype(np.float32)
    field = np.zeros(len(x), dtype=np.float32)
    for k in range(len(w)):
        field += np.sin(x * w[k, 0] + y * w[k, 1] + z * w[k, 2] + w[k, 3])
    return field / np.sqrt(len(w) / 2.0)


def fat_threshold(fraction: float) -> float:
    """Threshold of :func:`fat_streaks` whose lower tail has ``fraction`` of the points (the field is ~N(0, 1))."""
    from scipy.stats import norm

    return float(norm.ppf(np.clip(fraction, 1e-4, 1 - 1e-4)))


S_TABLE_STEP = 0.1  # mm, resolution of the along-spine lookup tables
UV_TABLE_STEP = 0.2  # mm, resolution of the neck cross-section table


def prepare(patient: Patient) -> None:
    """Build the patient's lookup tables now (they are otherwise built on first use by :func:`classify`)."""
    _tables(patient)


def _tables(patient: Patient) -> dict:
    """Per-patient lookup tables, built once: canal layout along ``s`` and the neck's soft-tissue cross-section.

    The implicit shapes are evaluated on these fine tables (0.1 mm along the spine, 0.2 mm across) rather than on
    every sample point, because a case has tens of millions of sub-samples; sampling a table is one gather per point.
    """
    cached = getattr(patient, "_cache", None)
    if cached is not None:
        return cached
    s_min = min(v.s for v in patient.vertebrae) - 60.0
    s_max = max(v.s for v in patient.vertebrae) + 60.0
    s = np.arange(s_min, s_max + S_TABLE_STEP, S_TABLE_STEP, dtype=np.float32)
    layout = canal_layout(patient, s)
    c7 = patient.vertebrae[LEVELS.index("C7")].s
    tube = {key: value.astype(np.float32) for key, value in layout.items()}
    tube["D"], tube["W"] = patient.profile("D", s), patient.profile("W", s)
    tube["lf"] = posterior_intrusion(patient, s)
    tube["widen"] = (1.0 + 0.35 / (1.0 + np.exp((s - c7) / 8.0))).astype(np.float32)  # shoulders at the lower neck
    # The neck's axis is straighter than the spine (skin profiles curve far less than the lordosis): the outer soft
    # tissue follows an arc of 40% of the spine's curvature, offset from the spine's by ``delta`` along v.
    lim = patient.arc_limits
    tube["delta"] = (arc_point(patient.curvature, s, lim)[0] - arc_point(0.4 * patient.curvature, s, lim)[0]).astype(
        np.float32)
    outer, inner, deep = _neck_cross_section(patient)
    patient._cache = {"s0": float(s[0]), "n_s": len(s), "tube": tube, "neck": outer, "inner": inner, "deep": deep}
    return patient._cache


def _neck_cross_section(patient: Patient) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Soft tissue of the neck in the ``(|u|, v)`` plane at the mid-cervical level.

    Returns the *outer* table (outline, fat, superficial muscles, airway, vessels: they follow the neck's own,
    straighter axis), the *inner* table (deep extensors in their fascial plane, ligamentum nuchae, longus colli:
    attached to the spine, so they follow its curve; 255 where transparent) and the deep-extensor flag of the inner
    table. Rows are ``v`` from -80 mm, columns ``|u|`` from 0, both at :data:`UV_TABLE_STEP`. Bones, canal and discs
    are painted over both by :func:`classify` at their true position along the spine.
    """
    mid = [v for v in patient.vertebrae if v.name in ("C3", "C4", "C5", "C6", "C7")]
    d = float(np.mean([v.half_depth for v in mid]))
    back = float(np.mean([v.half_depth + 1.0 + 2 * v.canal_half_depth for v in mid]))
    pu, pv = np.meshgrid(np.arange(0.0, 95.0, UV_TABLE_STEP, dtype=np.float32),
                         np.arange(-80.0, 90.0, UV_TABLE_STEP, dtype=np.float32))
    t = np.full(pu.shape, T["fat"], dtype=np.uint8)
    deep_flag = np.zeros(pu.shape, dtype=bool)
    inner_a = patient.neck_half_lr - patient.subcutaneous_fat - 2.0
    inner_b = patient.neck_half_ap - patient.subcutaneous_fat - 2.0
    within = _ellipse(pu, pv, 0.0, 7.0, inner_a, inner_b) < 1.0
    t[within & (_ellipse(pu, pv, 17.0, back + 20.0, 21.0, 17.0) < 1.0)] = T["muscle"]  # splenius, semispinalis cap.
    t[within & (_ellipse(pu, pv, inner_a * 0.62, 6.0, 13.0, 16.0) < 1.0)] = T["muscle"]  # levator scapulae, scalenes
    t[within & (_ellipse(pu, pv, inner_a * 0.6, -20.0, 8.0, 15.0) < 1.0)] = T["muscle"]  # sternocleidomastoid
    inner = np.full(pu.shape, 255, dtype=np.uint8)
    deep = _ellipse(pu, pv, 9.5, back + 9.5, 8.5, 10.5)
    inner[(deep >= 1.0) & (deep < 1.35)] = T["fat"]  # fascial plane around the deep extensors
    inner[deep < 1.0] = T["muscle"]  # multifidus and semispinalis cervicis
    deep_flag[deep < 1.0] = True
    inner[(pu < 1.0) & (pv > back + 6.0) & (pv < back + 45.0)] = T["ligament"]  # ligamentum nuchae
    inner[_ellipse(pu, pv, 7.0, -d - 3.5, 5.5, 3.8) < 1.0] = T["muscle"]  # longus colli
    airway_v = -d - 20.0
    t[_ellipse(pu, pv, 10.0, airway_v - 10.5, 8.0, 2.6) < 1.0] = T["muscle"]  # strap muscles
    air = _ellipse(pu, pv, 0.0, airway_v, 9.5, 8.0)
    t[air < 1.0] = T["mucosa"]
    t[air < 0.62] = T["air"]
    t[_ellipse(pu, pv, 0.0, -d - 8.5, 8.0, 3.2) < 1.0] = T["mucosa"]  # oesophagus
    t[_ellipse(pu, pv, 20.0, -d - 12.0, 3.6, 3.6) < 1.0] = T["blood_flow"]  # common carotid arteries
    t[_ellipse(pu, pv, 27.5, -d - 9.0, 5.8, 4.5) < 1.0] = T["blood_flow"]  # internal jugular veins
    return t, inner, deep_flag


def classify(patient: Patient, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                                      np.ndarray]:
    """Tissue class, label value and causal flag at reference points.

    Args:
        x, y, z: ``(N,)`` float32 reference LPS mm (separate arrays: cheaper than an ``(N, 3)`` layout).

    Returns:
        ``tissue`` (N,) uint8 indices of :data:`TISSUES`; ``label`` (N,) uint8 values of :mod:`cspineai.series`;
        ``causal`` (N,) bool, True inside a finding that raised the outcome's logit (``patient.causal``).
    """
    tables = _tables(patient)
    tube = tables["tube"]
    n = len(x)
    tissue = np.zeros(n, dtype=np.uint8)
    label = np.zeros(n, dtype=np.uint8)
    causal = np.zeros(n, dtype=bool)
    u = x
    v, s = arc_coordinates(patient.curvature, y, z, patient.arc_limits)
    si = np.clip(((s - tables["s0"]) * (1.0 / S_TABLE_STEP) + 0.5).astype(np.int32), 0, tables["n_s"] - 1)
    widen = tube["widen"][si]

    # Neck outline, skin, then the soft-tissue cross-section (widened towards the shoulders).
    au = np.abs(u) / widen
    vn = v + tube["delta"][si]  # offset from the neck's own axis
    r_neck = _ellipse(au, vn, 0.0, 7.0, patient.neck_half_lr, patient.neck_half_ap)
    inside = np.nonzero(r_neck < 1.0)[0]
    tissue[inside] = T["skin"]
    skin_r = (1.0 - 2.0 / patient.neck_half_ap) ** 2
    idx = inside[r_neck[inside] < skin_r]
    neck, inner, deep = tables["neck"], tables["inner"], tables["deep"]
    scale = 1.0 / UV_TABLE_STEP
    iu = np.minimum((au[idx] * scale).astype(np.int32), neck.shape[1] - 1)
    iv = np.clip(((vn[idx] + 80.0) * scale).astype(np.int32), 0, neck.shape[0] - 1)
    tissue[idx] = neck.ravel()[iv * neck.shape[1] + iu]
    iu = np.minimum((np.abs(u[idx]) * scale).astype(np.int32), neck.shape[1] - 1)
    iv = np.clip(((v[idx] + 80.0) * scale).astype(np.int32), 0, neck.shape[0] - 1)
    flat = iv * neck.shape[1] + iu
    spine_attached = inner.ravel()[flat]
    attached = spine_attached != 255
    tissue[idx[attached]] = spine_attached[attached]
    deep_idx = idx[deep.ravel()[flat]]
    if len(deep_idx) and patient.extensor_fat_fraction > 0:
        field = fat_streaks(patient, x[deep_idx], y[deep_idx], z[deep_idx])
        tissue[deep_idx[field < fat_threshold(patient.extensor_fat_fraction)]] = T["fat"]
        if patient.causal.get("extensor_fat"):
            causal[deep_idx] = True

    # The spine's neighbourhood: discs, canal and vertebrae.
    vi, si_idx = v[idx], si[idx]
    near = (np.abs(u[idx]) < 48.0) & (vi > -tube["D"][si_idx] - 10.0) & (vi < tube["canal_back"][si_idx] + 45.0)
    sp = idx[near]
    pu, pv, ps, ssi = u[sp], v[sp], s[sp], si[sp]
    t, lab, cau = tissue[sp], label[sp], causal[sp]
    depth, width, back = tube["D"][ssi], tube["W"][ssi], tube["canal_back"][ssi]

    for d, level in enumerate(DISCS):
        half = patient.disc_height[d] / 2.0 + 1.6
        sel = np.nonzero(np.abs(ps - patient.disc_s[d]) < half)[0]
        if not len(sel):
            continue
        r = _ellipse(pu[sel], pv[sel], 0.0, 0.0, width[sel] * 1.02, depth[sel] * 1.02)
        disc = sel[r < 1.0]
        pf = patient.findings["levels"][level]["pfirrmann"]
        t[disc] = T["disc_annulus"]
        nucleus = disc[r[r < 1.0] < (0.42 if pf < 3 else 0.25)]
        t[nucleus] = T["disc_degenerated"] if pf >= 3 else T["disc_nucleus"]
        lab[disc] = DISC_VALUES[level]

    c = np.nonzero(_ellipse(pu, pv, 0.0, tube["canal_centre"][ssi], tube["canal_half_width"][ssi],
                            tube["canal_half_depth"][ssi]) < 1.0)[0]
    _paint_canal(patient, tube, c, pu[c], pv[c], ps[c], ssi[c], t, lab, cau)

    # Vertebrae, each on the points of its neighbourhood only: the spine's points sorted by s make every vertebra's
    # window along the spine a contiguous range.
    s_base = float(ps.min()) if len(ps) else 0.0
    s_bin = (ps - s_base).astype(np.int16)  # 1 mm bins: a radix sort, far cheaper than sorting floats
    order = np.argsort(s_bin, kind="stable")
    bin_sorted = s_bin[order]
    for vert in patient.vertebrae:
        hh = vert.half_height
        body_hi = hh + (20.0 if vert.name == "C2" else 4.5)
        lo, hi = np.searchsorted(bin_sorted, [np.floor(vert.s - hh - 26.0 - s_base), vert.s + hh + 12.0 - s_base])
        cand = order[lo:hi]
        cs, cv, cu = ps[cand], pv[cand], np.abs(pu[cand])
        far = cv > back[cand] + 3.0  # spinous processes: long window below, short above
        in_window = np.where(far, (cs > vert.s - hh - 26.0) & (cs < vert.s + hh + 10.0),
                             np.abs(cs - vert.s) < hh + 12.0)
        body_sel = cand[(cv < vert.half_depth + 3.5) & (cu < vert.half_width + 3.5) & (cs > vert.s - hh - 4.5)
                        & (cs < vert.s + body_hi)]
        post_sel = cand[(cv > -4.0) & in_window & (cu < vert.half_width + 30.0)]
        for sel, paint in ((body_sel, _paint_body), (post_sel, _paint_posterior)):
            if len(sel):
                paint(vert, *_local(vert, x[sp[sel]], y[sp[sel]], z[sp[sel]]), sel, t, lab, cau, patient)

    # Vertebral arteries through the transverse foramina (painted after the bone to open the foramina).
    top, bottom = patient.vertebrae[LEVELS.index("C1")].s, patient.vertebrae[LEVELS.index("C7")].s
    va = np.nonzero((ps < top) & (ps > bottom))[0]
    t[va[_ellipse(np.abs(pu[va]), pv[va], width[va] + 5.5, depth[va] * 0.15, 2.1, 2.1) < 1.0]] = T["blood_flow"]
    tissue[sp], label[sp], causal[sp] = t, lab, cau
    return tissue, label, causal


def _local(vert: Vertebra, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reference points -> the vertebra's frame ``(u, a, h)`` (mm)."""
    ax = vert.axes.astype(np.float32)
    c = vert.centre.astype(np.float32)
    dx, dy, dz = x - c[0], y - c[1], z - c[2]
    return (dx * ax[0, 0] + dy * ax[1, 0] + dz * ax[2, 0], dx * ax[0, 1] + dy * ax[1, 1] + dz * ax[2, 1],
            dx * ax[0, 2] + dy * ax[1, 2] + dz * ax[2, 2])


def _paint_canal(patient: Patient, tube: dict, c: np.ndarray, cu: np.ndarray, cv: np.ndarray, cs: np.ndarray,
                 ci: np.ndarray, t: np.ndarray, lab: np.ndarray, cau: np.ndarray) -> None:
    """Canal contents at canal points ``c``: epidural space, ligaments, intrusions, thecal sac (CSF), cord."""
    t[c] = T["epidural"]
    lab[c] = 0
    back = tube["canal_back"][ci]
    t[c[cv > back - tube["lf"][ci]]] = T["ligament"]  # ligamentum flavum
    depth, kind = anterior_intrusion(patient, cs, cu)
    front = tube["canal_front"][ci]
    intr = cv < front + depth
    t[c[intr & (kind == 0)]] = T["disc_annulus"]
    t[c[intr & (kind > 0)]] = T["ossified_ligament"]
    if patient.findings["opll"] and patient.causal.get("opll"):
        cau[c[intr & (kind == 2)]] = True
    for d, level in enumerate(DISCS):  # disc material in the canal keeps its disc label
        near = intr & (kind == 0) & (np.abs(cs - patient.disc_s[d]) < patient.disc_height[d] / 2 + 6)
        lab[c[near]] = DISC_VALUES[level]
    t[c[cv < front]] = T["ligament"]  # posterior longitudinal ligament
    # The sac's front wall follows the intrusion at this point's own LR position (focal herniations dent it).
    sac_front = sac_front_wall(tube["canal_centre"][ci], tube["sac_half_depth"][ci], front + depth)
    sac_back = np.maximum(tube["sac_back"][ci], sac_front + 0.8)
    sac = _ellipse(cu, cv, 0.0, (sac_front + sac_back) / 2.0, tube["sac_half_width"][ci], (sac_back - sac_front) / 2.0)
    sac = sac < 1.0
    t[c[sac]] = T["csf"]
    lab[c[sac]] = CSF
    centre, a, b = tube["cord_centre"][ci], tube["cord_a"][ci], tube["cord_b"][ci]
    cord = _ellipse(cu, cv, 0.0, centre, a, b) < 1.0
    t[c[cord]] = T["cord"]
    lab[c[cord]] = CORD
    for d, level in enumerate(DISCS):
        f = patient.findings["levels"][level]
        near = cord & (np.abs(cs - patient.disc_s[d]) < 7.0)
        if f["cord_t2_hyperintensity"]:
            oedema = near & (_ellipse(cu, cv, 0.0, centre, a * 0.6, b * 0.75) < 1.0) & (
                np.abs(cs - patient.disc_s[d]) < 5.0)
            t[c[oedema]] = T["cord_oedema"]
        if patient.causal.get(f"compression:{level}"):
            cau[c[near | (intr & (np.abs(cs - patient.disc_s[d]) < 6.0))]] = True


def _paint_body(vert: Vertebra, u: np.ndarray, a: np.ndarray, h: np.ndarray, sel: np.ndarray, t: np.ndarray,
                lab: np.ndarray, cau: np.ndarray, patient: Patient) -> None:
    """Vertebral body (cortex, marrow, Modic bands, osteophytes, uncinate processes, dens) at local points
    ``(u, a, h)`` (mm in the vertebra's frame); ``sel`` maps them into ``t``, ``lab``, ``cau``."""
    if vert.name == "C1":
        return
    au, aa = np.abs(u), np.abs(a)
    w, d, hh = vert.half_width, vert.half_depth, vert.half_height
    label = vert.body_label
    cortex = 0.9

    def put(mask, tissue, value=None):
        t[sel[mask]] = T[tissue]
        if value is not None:
            lab[sel[mask]] = value

    # Rounded-rectangle cross-section (superellipse of order 3) and slightly concave endplates.
    xu, xa = au / w, aa / d
    q = xu * xu * xu + xa * xa * xa
    r2 = xu * xu + xa * xa
    top = hh - 0.7 * np.clip(1.0 - r2, 0.0, 1.0)
    ah = np.abs(h)
    body = (q < 1.0) & (ah < top)
    put(body, "cortical_bone", label)
    marrow = body & (q * (w / (w - cortex)) ** 3 < 1.0) & (ah < top - 0.7)
    put(marrow, "cancellous_bone")
    for side, modic, ost in ((1, vert.modic_up, vert.osteophyte_up), (-1, vert.modic_down, vert.osteophyte_down)):
        level = _disc_of(vert, side)
        if modic and level:
            band = marrow & (side * h > top - 0.7 - 4.5) & (r2 < 0.75)
            put(band, ("modic1", "modic2", "sclerosis")[modic - 1])
            if patient.causal.get(f"modic:{level}"):
                cau[sel[band]] = True
        if ost > 0:  # anterior marginal osteophytes (the posterior ones are painted as canal intrusions)
            spur = _ellipse(u, a, 0.0, -d - 0.3 * ost, w * 0.75, 1.2 + ost) + ((side * h - hh) / 2.2) ** 2 < 1.0
            put(spur & (a < 0), "cortical_bone", label)
    if vert.name in ("C3", "C4", "C5", "C6", "C7"):  # uncinate processes
        put(_ellipse(au, a, w - 1.3, 0.5, 1.6, d * 0.6) + ((h - hh - 1.0) / 2.3) ** 2 < 1.0, "cortical_bone", label)
    if vert.name == "C2":  # dens
        dens = (_ellipse(u, a, 0.0, -0.5, 5.0, 5.5) + ((h - hh - 8.0) / 10.0) ** 2 < 1.0) & (h > 0)
        put(dens, "cortical_bone", label)
        put(dens & (_ellipse(u, a, 0.0, -0.5, 3.8, 4.3) + ((h - hh - 8.0) / 8.8) ** 2 < 1.0), "cancellous_bone")


def _paint_posterior(vert: Vertebra, u: np.ndarray, a: np.ndarray, h: np.ndarray, sel: np.ndarray, t: np.ndarray,
                     lab: np.ndarray, cau: np.ndarray, patient: Patient) -> None:
    """Posterior elements (transverse processes, pedicles, laminae, articular pillars with facet joints, spinous
    process; the atlas ring for C1) at local points ``(u, a, h)``."""
    au = np.abs(u)
    w, d = vert.half_width, vert.half_depth
    wc, dc = vert.canal_half_width, vert.canal_half_depth
    ac = d + 1.0 + dc  # canal centre (local a)
    label = vert.posterior_label

    def put(mask, tissue, value=None):
        t[sel[mask]] = T[tissue]
        if value is not None:
            lab[sel[mask]] = value

    if vert.name == "C1":  # atlas: a ring with two lateral masses, no body; unlabelled context
        ring_out = _ellipse(u, a, 0.0, 8.5, wc + 9.0, 24.0)
        ring_in = _ellipse(u, a, 0.0, 8.5, wc, 15.5)
        thick = 3.8 + 5.0 * np.clip((au - wc + 3.0) / 6.0, 0.0, 1.0) * (np.abs(a - 8.5) < 12.0)
        ring = (ring_out < 1.0) & (ring_in > 1.0) & (np.abs(h) < thick)
        put(ring, "cortical_bone")
        put(ring & (ring_out < 0.8) & (ring_in > 1.25) & (np.abs(h) < thick - 1.2), "cancellous_bone")
        return
    # Transverse processes (the vertebral artery painted later opens the foramen) and pedicles.
    tp = (au > w - 1.0) & (au < w + 10.0) & (np.abs(a - 0.25 * d) < 3.0 + 0.1 * (au - w)) & (np.abs(h) < 3.2)
    put(tp, "cortical_bone", label)
    ped = (au > wc - 0.6) & (au < wc + 4.2) & (a > d - 1.5) & (a < ac - 0.2 * dc) & (np.abs(h - 1.0) < 3.6)
    put(ped, "cortical_bone", label)
    # Laminae: the posterior half-ring around the canal, sloping down posteriorly.
    rc = _ellipse(u, a, 0.0, ac, wc, dc)
    lam = (rc > 1.0) & (rc < (1.0 + 3.2 / dc) ** 2) & (a > ac - 0.2 * dc) & (np.abs(h + 0.35 * (a - ac) + 1.0) < 5.0)
    put(lam, "cortical_bone", label)
    # Articular pillars between facet joints inclined about 45 degrees to the axial plane; arthropathy grade g
    # enlarges the pillar (hypertrophy, osteophytes), narrows the joint and adds subchondral sclerosis.
    grow = 0.8 * max(vert.facet_up, vert.facet_down)
    lm_u, lm_a = wc + 5.0, ac + 0.05 * dc
    pillar_r = _ellipse(au, a, lm_u, lm_a, 5.0 + grow, 6.0 + grow)
    jc = h + (a - lm_a)  # tan(45 deg) = 1
    gap_up, gap_down = 1.6 - 0.35 * vert.facet_up, 1.6 - 0.35 * vert.facet_down
    in_pillar = pillar_r < 1.0
    pillar = in_pillar & (jc < vert.up_half - gap_up / 2) & (jc > -vert.down_half + gap_down / 2)
    put(pillar, "cortical_bone", label)
    put(pillar & (pillar_r < 0.55), "cancellous_bone")
    put(in_pillar & (np.abs(jc - vert.up_half) < gap_up / 2), "joint")
    for side, grade, half in ((1, vert.facet_up, vert.up_half), (-1, vert.facet_down, -vert.down_half)):
        level = _disc_of(vert, side)
        if grade >= 2:
            put(pillar & (np.abs(jc - half) < 0.9 + 0.6 * grade), "sclerosis")
        if level and patient.causal.get(f"facet:{level}"):
            cau[sel[in_pillar & (np.abs(jc - half) < 4.0)]] = True
    # Spinous process from the lamina junction, sloping down, tapering, with a bulbous tip.
    a0 = ac + dc + 1.5
    ca, sa = np.cos(vert.spinous_angle), np.sin(vert.spinous_angle)
    along = (a - a0) * ca - (h + 1.0) * sa
    across = np.abs((a - a0) * sa + (h + 1.0) * ca)
    frac = np.clip(along / vert.spinous_length, 0.0, 1.0)
    half_u = 2.2 + 1.2 * frac**4 + (1.2 if vert.name in ("C2", "C7", "T1") else 0.0)
    half_h = 4.0 - 1.2 * frac
    sp = (along > -4.0) & (along < vert.spinous_length) & (au < half_u) & (across < half_h)
    put(sp, "cortical_bone", label)
    put(sp & (au < half_u - 1.0) & (across < half_h - 1.1) & (along > 0), "cancellous_bone")


def _disc_of(vert: Vertebra, side: int) -> str | None:
    """The labelled disc above (side 1) or below (side -1) ``vert``, or None."""
    n = LEVELS.index(vert.name)
    other = n - 1 if side > 0 else n + 1
    if other < 0 or other >= len(LEVELS):
        return None
    name = f"{LEVELS[n - 1]}-{vert.name}" if side > 0 else f"{vert.name}-{LEVELS[n + 1]}"
    return name if name in DISCS else None
