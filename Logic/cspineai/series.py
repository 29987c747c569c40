"""The image series of a case and the label values shared by the cohort generator, the models and the scene.

One place for these names: the manifest's columns, the CLI's options and the Slicer module's selectors all use them.
"""

from __future__ import annotations

import dataclasses

#: Series of a case and the plane each one is acquired in (k is the slice axis of that plane).
SERIES_PLANE = {
    "CT_bone": "axial",  # bone window, sharp kernel
    "CT_tissue": "axial",  # soft-tissue window, smooth kernel
    "T1_sag": "sagittal",
    "T2_sag": "sagittal",
    "T2_tra": "axial",
}
SERIES = tuple(SERIES_PLANE)
CT_SERIES = ("CT_bone", "CT_tissue")
MRI_SERIES = ("T1_sag", "T2_sag", "T2_tra")

VERTEBRAL_LEVELS = ("C2", "C3", "C4", "C5", "C6", "C7", "T1")
DISC_LEVELS = tuple(f"{a}-{b}" for a, b in zip(VERTEBRAL_LEVELS[:-1], VERTEBRAL_LEVELS[1:], strict=True))


@dataclasses.dataclass(frozen=True)
class Label:
    value: int
    name: str
    color: tuple[float, float, float]  # RGB in [0, 1]


def _labels() -> tuple[Label, ...]:
    labels = [Label(1, "spinal cord", (1.0, 0.9, 0.3)), Label(2, "CSF", (0.35, 0.65, 1.0))]
    for n, level in enumerate(VERTEBRAL_LEVELS):  # vertebral bodies 3..9
        labels.append(Label(3 + n, f"{level} vertebral body", (0.95, 0.85 - 0.07 * n, 0.75 - 0.08 * n)))
    for n, level in enumerate(DISC_LEVELS):  # intervertebral discs 10..15
        labels.append(Label(10 + n, f"{level} intervertebral disc", (0.3 + 0.1 * n, 0.8, 0.5)))
    for n, level in enumerate(VERTEBRAL_LEVELS):  # posterior elements (pedicles, laminae, processes) 16..22
        labels.append(Label(16 + n, f"{level} posterior elements", (0.85, 0.6 - 0.05 * n, 0.45)))
    return tuple(labels)


#: The label map the cohort generator writes on every series' grid (0 is background).
LABELS = _labels()
LABEL_BY_NAME = {label.name: label for label in LABELS}
CORD, CSF = 1, 2
BODY_VALUES = {level: 3 + n for n, level in enumerate(VERTEBRAL_LEVELS)}
DISC_VALUES = {level: 10 + n for n, level in enumerate(DISC_LEVELS)}
POSTERIOR_VALUES = {level: 16 + n for n, level in enumerate(VERTEBRAL_LEVELS)}

#: Classes the segmentation model predicts: background, cord, CSF/canal, vertebral bodies C2..T1 (the values above).
SEGMENTATION_CLASSES = (0, CORD, CSF, *BODY_VALUES.values())


def vertebra_value(level: str) -> tuple[int, int]:
    """Label values whose union is the whole vertebra ``level`` (body and posterior elements)."""
    return BODY_VALUES[level], POSTERIOR_VALUES[level]
