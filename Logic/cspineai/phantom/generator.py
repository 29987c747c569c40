"""One synthetic case: patient, poses, the five series with labels, the true MRI->CT displacement and the outcome."""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from ..series import DISC_LEVELS, VERTEBRAL_LEVELS
from ..volume import Volume
from . import acquire, anatomy, outcome, pose
from .protocol import Protocol, preset
from .radiograph import lateral_drr
from .randomize import randomized_protocol

SAGITTAL_DIRECTION = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # i -> P, j -> I, k -> L ("PIL")
AXIAL_DIRECTION = np.eye(3)  # i -> L, j -> P, k -> S ("LPS")


@dataclasses.dataclass
class PhantomCase:
    """A generated case (see :func:`generate_case`). Geometry is LPS mm throughout."""

    seed: int
    series: dict[str, Volume]
    labels: dict[str, Volume]
    displacement: np.ndarray  # (K, J, I, 3) float32 on the T1_sag grid: MRI x -> CT x + d(x)
    landmarks: dict[str, dict[str, list[float]]]
    clinical: dict
    label: int
    probability: float
    causal_mask: dict[str, Volume]
    findings: dict
    protocol: dict
    pose: dict
    radiograph: np.ndarray | None = None  # (rows SI top-down, cols AP) float32 in [0, 1]
    radiograph_spacing: tuple[float, float] = (1.0, 1.0)  # mm (col, row)
    tissues: dict[str, np.ndarray] | None = None  # centre-sample tissue class (anatomy.TISSUES) per series' grid


def _rngs(seed: int) -> dict[str, np.random.Generator]:
    # One independent stream per concern: changing e.g. the imaging code never changes a patient's anatomy or label.
    names = ("clinical", "anatomy", "pose", "outcome", "protocol", "imaging", "variation")
    children = np.random.SeedSequence(int(seed)).spawn(len(names))
    return {name: np.random.default_rng(child) for name, child in zip(names, children, strict=True)}


def sample_parameters(seed: int, vary_cord: bool = False) -> dict:
    """Patient, clinical table, pain probability and label of case ``seed``, without any image (fast).

    :func:`generate_case` calls this first, so the cohort's labels are exactly these. ``vary_cord``: cord size and
    CSF space drawn independently of the bony canal (:func:`~cspineai.phantom.anatomy.vary_cord_size`, own random
    stream: the rest of the case is drawn as without it).
    """
    rngs = _rngs(seed)
    demographics = outcome.sample_demographics(rngs["clinical"])
    patient = anatomy.sample_patient(rngs["anatomy"], demographics)
    if vary_cord:
        patient = anatomy.vary_cord_size(patient, rngs["variation"])
    clinical = {**demographics, **outcome.sample_symptoms(rngs["clinical"], demographics, patient.findings)}
    probability = outcome.pain_probability(patient.findings, clinical)
    label = int(rngs["outcome"].random() < probability)
    patient.causal = outcome.causes(patient.findings, clinical)
    return {"patient": patient, "clinical": clinical, "probability": probability, "label": label, "rngs": rngs}


def _spine_centre(patient: anatomy.Patient, top: str = "C2", bottom: str = "T1", posterior: float = 8.0) -> np.ndarray:
    names = [v.name for v in patient.vertebrae]
    s = (patient.vertebrae[names.index(top)].s + patient.vertebrae[names.index(bottom)].s) / 2.0
    y, z = anatomy.arc_point(patient.curvature, s, patient.arc_limits)
    frame = anatomy.arc_frame(patient.curvature, s, patient.arc_limits)
    return np.array([0.0, y, z]) + posterior * frame[:, 1]


def generate_case(seed: int, randomize: bool = False, resolution: str = "default",
                  protocol: Protocol | None = None, threads: int = 2, vary_cord: bool = False) -> PhantomCase:
    """Generate case ``seed`` (deterministic: the same seed gives identical arrays).

    Args:
        seed: any non-negative integer.
        randomize: domain-randomised acquisition (random tissue intensities, resolution, bias, noise, gamma, blur,
            flips); anatomy, labels, landmarks and outcome are those of the physical case with the same seed.
        resolution: protocol preset, a name of :data:`~cspineai.phantom.protocol.PRESETS` (``"default"``,
            ``"coarse"``: fast, for tests; ``"thin"``: 1 mm sagittal slices).
        protocol: explicit protocol (overrides ``resolution``).
        threads: render the CT and MRI sessions concurrently on this many threads (1 inside cohort workers).
        vary_cord: cord size and CSF space independent of the bony canal (see :func:`sample_parameters`).

    Returns:
        A :class:`PhantomCase`: ``series`` CT_bone, CT_tissue (int16 HU, axial), T1_sag, T2_sag (int16, sagittal, same
        grid), T2_tra (int16, axial); ``labels`` and ``causal_mask`` (uint8) on each series' grid; ``displacement`` on
        the T1_sag grid; ``landmarks`` {"CT", "MRI"} -> name -> LPS mm; clinical table, label and findings.
    """
    params = sample_parameters(seed, vary_cord)
    patient, rngs = params["patient"], params["rngs"]
    proto = protocol or preset(resolution)
    if randomize:
        proto = randomized_protocol(rngs["protocol"], proto)
    proto = dataclasses.replace(proto, ct_marrow_scale=float(np.clip(1.25 - 0.008 * params["clinical"]["age"], 0.7,
                                                                      1.1)))
    ct_pose, mri_pose, pose_params = pose.sample_poses(rngs["pose"], patient)
    img_rng = rngs["imaging"]

    # --- grids: each series centred on the spine in its own session, with a small random FOV offset ------------------
    centre_ref = _spine_centre(patient)
    ct_centre = ct_pose.to_scanner(centre_ref[None])[0] + img_rng.uniform(-5, 5, 3)
    ct_grid = acquire.Grid.centred(ct_centre, AXIAL_DIRECTION, (proto.ct_inplane_mm, proto.ct_inplane_mm,
                                                                proto.ct_slice_mm), proto.ct_fov_mm)
    sag_centre = mri_pose.to_scanner(_spine_centre(patient, "C2", "T1", posterior=7.0)[None])[0]
    sag_centre = sag_centre + np.array([img_rng.uniform(-1.5, 1.5), img_rng.uniform(-5, 5), img_rng.uniform(-5, 5)])
    sag_fov = (proto.sag_fov_mm[0], proto.sag_fov_mm[1], proto.sag_slice_mm * proto.sag_slices)
    sag_grid = acquire.Grid.centred(sag_centre, SAGITTAL_DIRECTION, (proto.sag_inplane_mm, proto.sag_inplane_mm,
                                                                     proto.sag_slice_mm), sag_fov)
    tra_centre = mri_pose.to_scanner(_spine_centre(patient, "C3", "C7", posterior=8.0)[None])[0]
    tra_centre = tra_centre + img_rng.uniform(-4, 4, 3)
    tra_fov = (*proto.tra_fov_mm, proto.tra_slice_mm * proto.tra_slices)
    tra_grid = acquire.Grid.centred(tra_centre, AXIAL_DIRECTION, (proto.tra_inplane_mm, proto.tra_inplane_mm,
                                                                  proto.tra_slice_mm), tra_fov)
    flips = proto.flips or {}
    ct_grid = ct_grid.flipped(flips.get("CT", (False,) * 3))
    sag_grid = sag_grid.flipped(flips.get("SAG", (False,) * 3))
    tra_grid = tra_grid.flipped(flips.get("T2_tra", (False,) * 3))

    # --- render --------------------------------------------------------------------------------------------------
    jobs = ((ct_grid, ct_pose, proto.ct_sub), (sag_grid, mri_pose, proto.sag_sub), (tra_grid, mri_pose, proto.tra_sub))
    anatomy.prepare(patient)  # build the lookup tables once, before the threads share the patient
    if threads > 1:
        # numpy releases the GIL in its array loops, so the three renders overlap on a multi-core machine.
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=threads) as pool:
            ct_r, sag_r, tra_r = pool.map(lambda job: acquire.render(patient, *job), jobs)
    else:
        ct_r, sag_r, tra_r = (acquire.render(patient, *job) for job in jobs)

    series: dict[str, Volume] = {}
    hu = acquire.ct_attenuation(ct_r, ct_grid.spacing, img_rng, marrow_scale=proto.ct_marrow_scale)
    for name, noise in (("CT_bone", proto.ct_bone_noise_hu), ("CT_tissue", proto.ct_tissue_noise_hu)):
        kernel = dataclasses.replace(acquire.CT_KERNELS[name], noise_hu=noise)
        image = acquire.ct_reconstruct(hu, ct_grid.spacing, kernel, img_rng)
        series[name] = ct_grid.volume(image, name)

    coil_axis = mri_pose.transforms[4, :3, :3] @ np.array([0.0, -1.0, 0.0])  # sensitivity falls away from the neck coil
    coil_centre = mri_pose.to_scanner(_spine_centre(patient, posterior=70.0)[None])[0]
    for name, r, grid, tr, te in (("T1_sag", sag_r, sag_grid, proto.t1_tr_ms, proto.t1_te_ms),
                                  ("T2_sag", sag_r, sag_grid, proto.t2_tr_ms, proto.t2_te_ms),
                                  ("T2_tra", tra_r, tra_grid, proto.t2_tra_tr_ms, proto.t2_tra_te_ms)):
        if proto.random_intensity is not None:
            values = np.asarray(proto.random_intensity[name], dtype=np.float32)
        else:
            values = acquire.fse_signal(tr, te)
        bias = acquire.bias_field(grid, img_rng, proto.bias_strength, coil_centre, coil_axis)
        psf = proto.mr_psf_px + proto.extra_blur_mm / grid.spacing[0]
        image = acquire.mr_image(r, values, grid, img_rng, bias, proto.mr_snr, psf)
        if proto.gamma != 1.0:
            scaled = image.astype(np.float32) / max(1.0, float(image.max()))
            image = np.round(1000.0 * scaled**proto.gamma).astype(np.int16)
        series[name] = grid.volume(image, name)

    labels = {"CT_bone": ct_grid.volume(ct_r.label, "CT_bone_labels"),
              "CT_tissue": ct_grid.volume(ct_r.label.copy(), "CT_tissue_labels"),
              "T1_sag": sag_grid.volume(sag_r.label, "T1_sag_labels"),
              "T2_sag": sag_grid.volume(sag_r.label.copy(), "T2_sag_labels"),
              "T2_tra": tra_grid.volume(tra_r.label, "T2_tra_labels")}
    causal = {"CT_bone": ct_grid.volume(ct_r.causal, "CT_bone_causal"),
              "CT_tissue": ct_grid.volume(ct_r.causal.copy(), "CT_tissue_causal"),
              "T1_sag": sag_grid.volume(sag_r.causal, "T1_sag_causal"),
              "T2_sag": sag_grid.volume(sag_r.causal.copy(), "T2_sag_causal"),
              "T2_tra": tra_grid.volume(tra_r.causal, "T2_tra_causal")}

    # --- truth: displacement on the T1_sag grid and landmarks ---------------------------------------------------
    ref = acquire.reference_points(sag_grid, mri_pose, np.arange(sag_grid.size[2], dtype=float))
    ct_m = ct_pose.transforms[0]
    ct_points = ref @ ct_m[:3, :3].T.astype(np.float32) + ct_m[:3, 3].astype(np.float32)
    mri_points = sag_grid.points(np.arange(sag_grid.size[2]))
    displacement = (ct_points - mri_points).astype(np.float32)

    landmarks = _landmarks(patient, ct_pose, mri_pose)
    radiograph, radiograph_spacing = None, (1.0, 1.0)
    if proto.radiograph:
        hu_axial = _to_canonical_axial(hu, ct_grid)
        radiograph = lateral_drr(ndimage.gaussian_filter(hu_axial, 0.5), (proto.ct_inplane_mm,) * 2 + (
            proto.ct_slice_mm,), img_rng)[::-1]  # top row = superior, as a film is viewed
        radiograph_spacing = (proto.ct_inplane_mm, proto.ct_slice_mm)

    findings = {**patient.findings, "causes": {k: bool(v) for k, v in patient.causal.items() if v}}
    return PhantomCase(
        seed=int(seed), series=series, labels=labels, displacement=displacement, landmarks=landmarks,
        clinical=params["clinical"], label=params["label"], probability=params["probability"], causal_mask=causal,
        findings=findings, protocol=proto.to_dict(), pose=pose_params, radiograph=radiograph,
        radiograph_spacing=radiograph_spacing,
        tissues={"CT": ct_r.tissue[ct_r.tissue.shape[0] // 2], "SAG": sag_r.tissue[sag_r.tissue.shape[0] // 2],
                 "T2_tra": tra_r.tissue[tra_r.tissue.shape[0] // 2]},
    )


def _to_canonical_axial(array: np.ndarray, grid: acquire.Grid) -> np.ndarray:
    """Undo index flips of an axial grid so that the array reads k = S, j = P, i = L."""
    out = array
    for axis_ijk in range(3):
        if grid.direction[axis_ijk, axis_ijk] < 0:
            out = np.flip(out, axis=2 - axis_ijk)
    return np.ascontiguousarray(out)


def _landmarks(patient: anatomy.Patient, ct_pose: pose.Pose, mri_pose: pose.Pose) -> dict:
    """Vertebral body centroids C2..T1 and disc centres C2-C3..C7-T1 in the CT and MRI scanner frames (LPS mm)."""
    names = [v.name for v in patient.vertebrae]
    points, hints, keys = [], [], []
    for level in VERTEBRAL_LEVELS:
        n = names.index(level)
        points.append(patient.vertebrae[n].centre)
        hints.append(n)
        keys.append(level)
    for d, level in enumerate(DISC_LEVELS):
        y, z = anatomy.arc_point(patient.curvature, patient.disc_s[d], patient.arc_limits)
        points.append(np.array([0.0, y, z]))
        hints.append(names.index(level.split("-")[0]))
        keys.append(level)
    points = np.array(points)
    ct = ct_pose.to_scanner(points, np.array(hints))
    mri = mri_pose.to_scanner(points, np.array(hints))
    return {"CT": {k: [round(float(c), 5) for c in p] for k, p in zip(keys, ct, strict=True)},
            "MRI": {k: [round(float(c), 5) for c in p] for k, p in zip(keys, mri, strict=True)}}
