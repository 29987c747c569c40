"""Patient pose per acquisition session and the exact mapping between the CT and MRI sessions.

The CT session holds the patient in the reference pose (neutral neck) moved rigidly into the CT scanner frame. The MRI
session bends the neck at every joint (flexion positive: the head moves anteriorly) and moves the whole patient
rigidly. Each vertebra moves rigidly (a kinematic chain from T2 upwards, rotating about the disc centres); soft
tissue in between follows a smooth blend of the neighbouring vertebrae's motions (weights: a Gaussian of the distance
to each vertebra, normalised). The blend is written as a map from MRI scanner points to reference points, so every MRI
voxel is evaluated exactly without inverting anything; only landmarks need the inverse, solved by fixed-point
iteration to 1e-4 mm.

All points are LPS mm, arrays ``(N, 3)``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .anatomy import LEVELS, Patient, arc_point

#: How far (mm) each vertebra's motion reaches into its surroundings; about a third of the vertebral pitch.
BLEND_SIGMA_MM = 6.0
#: Share of a flexion/extension movement taken by each joint C1-C2 .. T1-T2 (cervical motion peaks at C4-C6).
JOINT_SHARE = np.array([0.55, 0.8, 1.0, 1.15, 1.15, 0.95, 0.5, 0.15])


def rotation(rx: float, ry: float, rz: float) -> np.ndarray:
    """Rotation matrix (x, then y, then z axes; radians)."""
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    mx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    my = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    mz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return mz @ my @ mx


def _homogeneous(rot: np.ndarray, trans: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = rot
    m[:3, 3] = trans
    return m


@dataclasses.dataclass
class Pose:
    """Reference -> scanner motion of one session: one 4x4 matrix per vertebra of :data:`LEVELS`."""

    transforms: np.ndarray  # (V, 4, 4) reference -> scanner, per vertebra
    centres: np.ndarray  # (V, 3) vertebral body centres in the scanner frame
    joint_angles_deg: np.ndarray  # (V - 1,) flexion at each joint, degrees
    sigma: float = BLEND_SIGMA_MM

    @property
    def is_rigid(self) -> bool:
        return bool(np.allclose(self.transforms, self.transforms[0], atol=1e-12))

    def to_reference(self, points: np.ndarray) -> np.ndarray:
        """Scanner points ``(N, 3)`` -> reference points ``(N, 3)`` (float64, or float32 for float32 input)."""
        points = np.asarray(points)
        dtype = points.dtype if points.dtype in (np.float32, np.float64) else np.float64
        inverse = np.linalg.inv(self.transforms).astype(dtype)
        x, y, z = (np.ascontiguousarray(points[:, c], dtype=dtype) for c in range(3))
        if self.is_rigid:
            m = inverse[0]
            return np.stack([m[r, 0] * x + m[r, 1] * y + m[r, 2] * z + m[r, 3] for r in range(3)], axis=-1)
        # Normalised Gaussian weights, computed as a stable softmax of -d^2 / (2 sigma^2) over the vertebrae.
        logits = np.empty((len(self.centres), len(x)), dtype=dtype)
        for v, c in enumerate(self.centres.astype(dtype)):
            logits[v] = ((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) * (-0.5 / self.sigma**2)
        logits -= logits.max(axis=0)  # far from the spine one vertebra still wins, without underflow
        weights = np.exp(logits)
        weights /= weights.sum(axis=0)
        out = np.zeros((3, len(x)), dtype=dtype)
        for v in range(len(self.centres)):
            m, w = inverse[v], weights[v]
            for r in range(3):
                out[r] += w * (m[r, 0] * x + m[r, 1] * y + m[r, 2] * z + m[r, 3])
        return out.T

    def to_scanner(self, reference_points: np.ndarray, vertebra: np.ndarray | None = None, tol: float = 1e-4,
                   max_iter: int = 100) -> np.ndarray:
        """Inverse of :meth:`to_reference` for a few points (landmarks), by fixed-point iteration.

        ``vertebra`` (N,) names the vertebra index whose motion seeds each point (nearest by default).
        """
        p = np.atleast_2d(np.asarray(reference_points, dtype=float))
        if vertebra is None:
            inv_centres = np.array([np.linalg.inv(m)[:3, :3] @ c + np.linalg.inv(m)[:3, 3]
                                    for m, c in zip(self.transforms, self.centres, strict=True)])
            vertebra = np.argmin(((p[:, None, :] - inv_centres[None]) ** 2).sum(-1), axis=1)
        m = self.transforms[vertebra]
        x = np.einsum("nij,nj->ni", m[:, :3, :3], p) + m[:, :3, 3]
        for _ in range(max_iter):
            residual = p - self.to_reference(x)
            x = x + np.einsum("nij,nj->ni", m[:, :3, :3], residual)
            if np.max(np.abs(residual)) < tol:
                break
        return x


def articulated_pose(patient: Patient, joint_angles_deg: np.ndarray, global_rotation: np.ndarray,
                     global_translation: np.ndarray) -> Pose:
    """Pose from flexion angles at the joints C1-C2 .. T1-T2 (degrees) and a global rigid motion."""
    vertebrae = patient.vertebrae
    n = len(vertebrae)
    pivots = []
    for j in range(n - 1):
        upper, lower = vertebrae[j], vertebrae[j + 1]
        bottom_of_upper = upper.s - (upper.half_height if j > 0 else 0.0)
        s_pivot = (bottom_of_upper + lower.s + lower.half_height) / 2.0
        y, z = arc_point(patient.curvature, s_pivot, patient.arc_limits)
        pivots.append(np.array([0.0, y + 2.0, z]))  # centre of rotation slightly behind the disc centre
    transforms = np.zeros((n, 4, 4))
    transforms[n - 1] = np.eye(4)
    for j in range(n - 2, -1, -1):
        r = rotation(np.radians(joint_angles_deg[j]), 0.0, 0.0)
        joint = _homogeneous(r, pivots[j] - r @ pivots[j])
        transforms[j] = transforms[j + 1] @ joint
    g = _homogeneous(global_rotation, global_translation)
    transforms = np.einsum("ij,njk->nik", g, transforms)
    centres = np.array([m[:3, :3] @ v.centre + m[:3, 3] for m, v in zip(transforms, vertebrae, strict=True)])
    return Pose(transforms=transforms, centres=centres, joint_angles_deg=np.asarray(joint_angles_deg, dtype=float))


def sample_poses(rng: np.random.Generator, patient: Patient) -> tuple[Pose, Pose, dict]:
    """CT pose (neutral neck, rigid) and MRI pose (flexed or extended neck plus a rigid shift), with their parameters.

    Ranges: total flexion change between sessions U(-16, 16) degrees (supine neck position varies with pillows and
    coils by roughly this much); rigid rotation up to 4 (CT) / 5 (MRI) degrees per axis; translation up to 10 mm per
    axis in each session.

    Both sessions are expressed in one patient frame, as the registration contract assumes (methods §3: the initial
    CT->MRI alignment R comes from the image headers): what differs between the sessions is the neck pose and a rigid
    misalignment of at most about 20 mm and 9 degrees, not the scanners' table positions. Real CT/MRI pairs whose
    headers do not share a frame of reference need a pre-alignment first; the cohort does not model that.
    """
    n_joints = len(LEVELS) - 1
    ct_rot = rotation(*np.radians(rng.uniform(-4, 4, 3)))
    ct_shift = rng.uniform(-10, 10, 3)
    ct = articulated_pose(patient, np.zeros(n_joints), ct_rot, ct_shift)
    total = rng.uniform(-16.0, 16.0)
    share = JOINT_SHARE * rng.uniform(0.7, 1.3, n_joints)
    angles = total * share / share.sum() + rng.normal(0.0, 0.8, n_joints)
    mri_rot = rotation(*np.radians(rng.uniform(-5, 5, 3)))
    mri_shift = rng.uniform(-10, 10, 3)
    mri = articulated_pose(patient, angles, mri_rot, mri_shift)
    params = {"mri_flexion_deg": round(float(angles.sum()), 3),
              "mri_joint_flexion_deg": {f"{a}-{b}": round(float(x), 3)
                                         for a, b, x in zip(LEVELS[:-1], LEVELS[1:], angles, strict=True)}}
    return ct, mri, params


def mri_to_ct(ct: Pose, mri: Pose, points: np.ndarray) -> np.ndarray:
    """The true correspondence: MRI scanner points ``(N, 3)`` -> CT scanner points (LPS mm)."""
    reference = mri.to_reference(points)
    m = ct.transforms[0]
    return reference @ m[:3, :3].T.astype(reference.dtype) + m[:3, 3].astype(reference.dtype)
