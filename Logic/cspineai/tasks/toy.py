"""``toy``: the engine's own task, small enough for unit tests and the training benchmark's default.

Binary classification of small 3-D volumes listed in a manifest's ``T1_sag`` column: positive cases hold a bright cube
somewhere in noise, negative ones do not. :func:`write_toy_cohort` writes such a cohort (NIfTI files and
``manifest.csv``). The network is a two-convolution 3-D CNN with dropout (so that resume tests exercise the RNG), the
transforms include random flips and noise (so that they exercise transform re-seeding), and the figures are those of
the pain classifier (accuracy, F1, AUC with DeLong CI, at a Youden threshold chosen on validation data).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..training.tasks import Task, register_task


class ToyNet(nn.Module):
    """Two strided 3-D convolutions, global average pooling, dropout, linear head.

    Input ``(B, 1, D, H, W)``, output logits ``(B, 2)``.
    """

    def __init__(self, width: int = 8, dropout: float = 0.2):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv3d(1, width, 3, padding=1), nn.GroupNorm(1, width), nn.ReLU(inplace=True),
            nn.Conv3d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool3d(1), nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * width, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ToyTask(Task):
    name = "toy"
    required_columns = ("T1_sag", "label")
    model_defaults = {"width": 8, "dropout": 0.2}
    options_defaults = {"series": "T1_sag", "augment": True}
    monitor, monitor_mode = "auc", "max"

    def build_model(self, config: dict) -> nn.Module:
        return ToyNet(config["model"]["width"], config["model"]["dropout"])

    def data_items(self, cases, config: dict) -> list[dict]:
        series = config["task_options"]["series"]
        return [{"image": str(c.path(series)), "label": int(c.label), "case_id": c.case_id} for c in cases]

    def transforms(self, config: dict, train: bool):
        from monai import transforms as mt

        steps = [
            mt.LoadImaged(keys="image", reader="NibabelReader", image_only=True),
            mt.EnsureChannelFirstd(keys="image", channel_dim="no_channel"),
            mt.ScaleIntensityd(keys="image"),
        ]
        if train and config["task_options"]["augment"]:
            steps += [mt.RandFlipd(keys="image", prob=0.5, spatial_axis=0),
                      mt.RandGaussianNoised(keys="image", prob=0.5, std=0.05)]
        steps.append(mt.EnsureTyped(keys=("image", "label"), track_meta=False))
        return mt.Compose(steps)

    def step(self, model, batch: dict, config: dict):
        logits = model(batch["image"].float())
        label = batch["label"].long()
        loss = nn.functional.cross_entropy(logits, label)
        score = torch.softmax(logits.float(), dim=1)[:, 1]
        return loss, {"score": score.detach(), "label": label.detach(), "case_id": list(batch["case_id"])}

    def compute_metrics(self, outputs: dict, config: dict, fitted: dict | None = None) -> dict[str, float]:
        from ..metrics.classification import binary_report, youden_threshold

        y = outputs["label"].numpy().astype(int)
        s = outputs["score"].numpy()
        if fitted is not None and "threshold" in fitted:
            threshold = float(fitted["threshold"])  # chosen on validation data, re-used on test data
        elif 0 < y.sum() < y.size:
            threshold = youden_threshold(y, s)
        else:
            threshold = 0.5
        report = binary_report(y, s, threshold)
        return {k: report[k] for k in ("accuracy", "f1", "auc", "auc_low", "auc_high", "sensitivity", "specificity",
                                       "threshold")}

    def case_rows(self, outputs: dict, config: dict) -> list[dict]:
        return [{"case_id": c, "label": int(y), "score": float(s)}
                for c, y, s in zip(outputs["case_id"], outputs["label"], outputs["score"], strict=True)]


register_task(ToyTask())


def write_toy_cohort(folder: str | Path, n_cases: int = 16, shape: tuple[int, int, int] = (8, 16, 16),
                     folds: int | None = 2, seed: int = 0) -> Path:
    """Write ``n_cases`` NIfTI volumes (``shape`` as ``[k, j, i]``) and ``manifest.csv`` in ``folder``; return the
    manifest path. Labels alternate 0/1; with ``folds`` the manifest carries a ``fold`` column (dealt per label)."""
    import SimpleITK as sitk

    from ..manifest import Case, write_manifest

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cases = []
    for n in range(n_cases):
        label = n % 2
        array = rng.normal(0.0, 1.0, size=shape).astype(np.float32)
        if label:
            k, j, i = (int(rng.integers(0, max(1, s - 4))) for s in shape)
            array[k:k + 4, j:j + 4, i:i + 4] += 3.0
        path = folder / "images" / f"toy{n:03d}.nii.gz"
        sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
        cases.append(Case(case_id=f"toy{n:03d}", label=label, fold=(n // 2) % folds if folds else None,
                          paths={"T1_sag": path}))
    return write_manifest(cases, folder / "manifest.csv")
