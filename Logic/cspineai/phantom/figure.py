"""Figure of one synthetic case beside a real MRI, for judging realism at a glance (``docs/figures``).

    python -m cspineai.phantom.figure --seed 20 --real REAL_T1_FOLDER --out docs/figures/phantom_case.png

``REAL_T1_FOLDER`` holds ``t1w.nii.gz`` and ``t1w_seg-manual.nii.gz`` (the docs figure used the Spinal Cord Toolbox
test scan that the developers keep beside the checkout).

Top row: the phantom's five series and its labels as the project writes them. Bottom row: the phantom's T1 and the
real T1 resampled onto the same 0.5 mm sagittal and axial planes through the cord, same field of view, each with its
cord outline (phantom: label map; real: manual segmentation).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..geometry import index_to_world, resample_like
from ..series import CORD
from ..volume import Volume
from .generator import AXIAL_DIRECTION, SAGITTAL_DIRECTION

PLANE_MM = 0.5


def _plane(centre: np.ndarray, direction: np.ndarray, size_mm: tuple[float, float]) -> Volume:
    """A one-slice reference grid of ``size_mm`` (i, j extents) centred on ``centre`` (LPS)."""
    n = (int(size_mm[0] / PLANE_MM), int(size_mm[1] / PLANE_MM))
    origin = centre - direction @ np.array([(n[0] - 1) * PLANE_MM / 2, (n[1] - 1) * PLANE_MM / 2, 0.0])
    return Volume(np.zeros((1, n[1], n[0]), np.float32), (PLANE_MM, PLANE_MM, 1.0), tuple(origin), direction)


def _centroid(mask: Volume) -> np.ndarray:
    ijk = np.argwhere(mask.array > 0)[:, ::-1].mean(axis=0)
    return index_to_world(mask, ijk)


def _cut(volume: Volume, plane: Volume, nearest: bool = False) -> np.ndarray:
    return resample_like(volume, plane, "nearest" if nearest else "linear").array[0]


def render_figure(case, real_dir: str | Path | None, out: str | Path) -> Path:
    """Write the comparison PNG; ``real_dir`` holds ``t1w.nii.gz`` and ``t1w_seg-manual.nii.gz`` (optional)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io import read_volume

    fig, axes = plt.subplots(2, 6, figsize=(24, 9.5))
    s = case.series
    ct_labels = case.labels["CT_bone"]
    levels = case.findings["levels"]
    worst = min(levels, key=lambda name: levels[name]["cord_compression_ratio"])
    k_ct = int(round(float(np.linalg.solve(ct_labels.direction * np.array(ct_labels.spacing),
                                           np.array(case.landmarks["CT"][worst]) - ct_labels.origin)[2])))
    k_ct = int(np.clip(k_ct, 0, ct_labels.shape[0] - 1))
    tra = s["T2_tra"]
    k_tra = int(np.clip(round(float(np.linalg.solve(tra.direction * np.array(tra.spacing), np.array(
        case.landmarks["MRI"][worst]) - tra.origin)[2])), 0, tra.shape[0] - 1))
    mid = s["T1_sag"].shape[0] // 2
    views = [
        ("CT_bone axial (bone window)", s["CT_bone"].array[k_ct], (-450, 1500), 1.0),
        ("CT_tissue axial (soft-tissue window)", s["CT_tissue"].array[k_ct], (-160, 240), 1.0),
        ("T1_sag", s["T1_sag"].array[mid], None, 1.0),
        ("T2_sag", s["T2_sag"].array[mid], None, 1.0),
        (f"T2_tra at {worst}", tra.array[k_tra], None, 1.0),
    ]
    for ax, (title, image, window, aspect) in zip(axes[0], views, strict=False):
        vmin, vmax = window if window else (0, np.percentile(image, 99.5))
        ax.imshow(image, cmap="gray", vmin=vmin, vmax=vmax, aspect=aspect, interpolation="nearest")
        ax.set_title(title)
    axes[0, 5].imshow(s["T1_sag"].array[mid], cmap="gray", vmin=0, vmax=np.percentile(s["T1_sag"].array, 99.5))
    lab = case.labels["T1_sag"].array[mid].astype(float)
    axes[0, 5].imshow(np.ma.masked_equal(lab, 0), cmap="tab20", alpha=0.55, vmin=0, vmax=22, interpolation="nearest")
    axes[0, 5].set_title("T1_sag labels (cord, CSF, bodies, discs, posterior)")

    cord_label = case.labels["T1_sag"].with_array((case.labels["T1_sag"].array == CORD).astype(np.uint8))
    centre = _centroid(cord_label)
    sag = _plane(centre, SAGITTAL_DIRECTION, (76.0, 77.0))
    # The real case is healthy: cut the phantom's axial plane through its least compressed cervical level.
    healthiest = max(list(levels)[:-1], key=lambda name: levels[name]["cord_compression_ratio"])
    cord_points = index_to_world(cord_label, np.argwhere(cord_label.array > 0)[:, ::-1].astype(float))
    near = np.abs(cord_points[:, 2] - case.landmarks["MRI"][healthiest][2]) < 2.0
    axial = _plane(cord_points[near].mean(axis=0) if near.any() else centre, AXIAL_DIRECTION, (42.0, 76.0))
    panels = [("phantom T1, sagittal", _cut(s["T1_sag"], sag), _cut(cord_label, sag, True)),
              (f"phantom T1, axial reformat at {healthiest}", _cut(s["T1_sag"], axial), _cut(cord_label, axial, True))]
    if real_dir is not None and (Path(real_dir) / "t1w.nii.gz").is_file():
        real = read_volume(Path(real_dir) / "t1w.nii.gz")
        mask = read_volume(Path(real_dir) / "t1w_seg-manual.nii.gz", allow_constant=True)
        real_centre = _centroid(mask)
        rsag = _plane(real_centre, SAGITTAL_DIRECTION, (76.0, 77.0))
        rax = _plane(real_centre, AXIAL_DIRECTION, (42.0, 76.0))
        panels += [("real T1 (SCT, 1 mm), sagittal", _cut(real, rsag), _cut(mask, rsag, True)),
                   ("real T1, axial", _cut(real, rax), _cut(mask, rax, True))]
    for n, (title, image, outline) in enumerate(panels):
        ax = axes[1, n]
        ax.imshow(image, cmap="gray", vmin=0, vmax=np.percentile(image, 99.5))
        ax.contour(outline > 0, levels=[0.5], colors="yellow", linewidths=0.8)
        ax.set_title(title)
    if case.radiograph is not None:
        ax = axes[1, 4]
        ratio = case.radiograph_spacing[1] / case.radiograph_spacing[0]
        ax.imshow(case.radiograph, cmap="gray", vmin=0, vmax=1, aspect=ratio)
        ax.set_title("lateral radiograph (DRR)")
    clinical = case.clinical
    text = (f"seed {case.seed}\nlabel (pain) {case.label}, p = {case.probability:.2f}\nage {clinical['age']}, "
            f"{clinical['sex']}, BMI {clinical['bmi']}\nworst level {worst}: cord AP ratio "
            f"{levels[worst]['cord_compression_ratio']:.2f}\nextensor fat fraction "
            f"{case.findings['extensor_fat_fraction']:.2f}\ncauses: {', '.join(case.findings['causes']) or 'none'}")
    axes[1, 5].text(0.02, 0.98, text, va="top", ha="left", fontsize=11, family="monospace", wrap=True)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    axes[1, 5].axis("off")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="figure of one synthetic case beside a real MRI")
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--real", default=None, help="folder with t1w.nii.gz and t1w_seg-manual.nii.gz")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    from .generator import generate_case

    print(render_figure(generate_case(args.seed), args.real, args.out))


if __name__ == "__main__":
    main()
