"""``cordseg``: train the cord / CSF / vertebral body segmentation (SAttisUNet or a baseline) for
:mod:`cspineai.segmentation`.

Data: every MRI series of a case that has a label map beside it (manifest columns ``T1_sag``/``T1_sag_labels``,
``T2_sag``/..., ``T2_tra``/...; the synthetic cohort, domain-randomised or not, writes them). Each volume goes through
the *same* preprocessing as inference (:func:`cspineai.segmentation.working_grid` and ``normalise_intensity``: sagittal
working slices at ``spacing_mm``), so what the network sees in training is what it sees in use; label values become
class indices in the order of :data:`cspineai.series.SEGMENTATION_CLASSES` (other structures: background).

Training samples are 2-D tiles (``tile`` x ``tile`` working voxels) of one sagittal slice, centred on a random voxel of
a class drawn with ``class_ratios`` (the cord is oversampled), with intensity randomisation on top of the cohort's own
(bias field, gamma, noise, blur, histogram shift), small in-plane rotations and scalings, and (``small_fov_prob``)
a field of view cut to a random smaller window, zero-padded back. Never flipped: the SI order
of the vertebral levels and the AP order of body and cord are what the network must learn.
``column_samples`` more tiles per volume come from the cord's column in random slices (lateral ones included).
An optimiser step takes ``data.batch_size`` volumes and ``samples_per_volume + column_samples`` tiles from each
(a batch of ``batch_size`` x that many tiles), so an epoch has ceil(volumes / ``batch_size``) steps: for more
steps per epoch lower ``batch_size``, not ``samples_per_volume``.
With ``context_slices`` c > 0 every tile carries the c working slices on either side of its own as extra channels
(zeros beyond the volume), as :func:`cspineai.segmentation.slice_context` feeds them in use; the label is the middle
slice's.
Validation: every working slice, one ``val_tile`` tile each at the cord's in-plane position (deterministic),
segmented as inference segments (:func:`cspineai.segmentation.window_logits`: Gaussian-weighted sliding windows of
``tile``), so the Dice that picks the best checkpoint is that of the model's use.
Loss: MONAI ``DiceCELoss``. Figures: Dice of cord, CSF and vertebral bodies (pooled over the validation tiles);
``cord_dice`` drives early stopping.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.transforms import Randomizable, Transform

from ..series import MRI_SERIES, SEGMENTATION_CLASSES
from ..training.tasks import Task, register_task

#: Label of the slices padded beyond the volume for slice context: no class, so never the centre of a sample.
OUTSIDE = 255


def class_index_lut() -> np.ndarray:
    """Look-up table label value (0..255) -> class index (position in SEGMENTATION_CLASSES, else 0)."""
    lut = np.zeros(256, dtype=np.uint8)
    for index, value in enumerate(SEGMENTATION_CLASSES):
        lut[value] = index
    return lut


class LoadWorkingGridd(Transform):
    """Read ``image`` and ``label`` files and put both on the inference working grid.

    Output: ``image`` ``(1, K + 2c, J, I)`` float32 in [0, 1], ``label`` ``(1, K + 2c, J, I)`` uint8 class indices
    (K = LR slices, c = ``config.context_slices`` zero slices padded on either side, labelled :data:`OUTSIDE`).
    Deterministic, so cacheable: a MONAI ``Transform`` on purpose, because MONAI's caching datasets stop
    caching at the first callable that is not one, which would re-read and resample every case at every epoch.
    """

    def __init__(self, config):
        self.config = config
        self.lut = class_index_lut()

    def __call__(self, item: dict) -> dict:
        from ..geometry import resample_like
        from ..io import read_volume
        from ..segmentation import normalise_intensity, working_grid

        image = read_volume(item["image"])
        labels = read_volume(item["label"], allow_constant=True)
        grid = working_grid(image, self.config)
        image = resample_like(normalise_intensity(image, self.config.intensity_percentiles), grid, "linear")
        labels = resample_like(labels, grid, "nearest")
        # Padded, not stacked into channels as slice_context does at inference: the cache keeps one copy of each
        # slice, and the croppers cut the 2c + 1 slice windows per sample.
        context = ((self.config.context_slices,) * 2, (0, 0), (0, 0))
        out = dict(item)
        out["image"] = np.pad(image.array.astype(np.float32), context)[None]
        out["label"] = np.pad(self.lut[np.clip(labels.array, 0, 255).astype(np.uint8)], context,
                              constant_values=OUTSIDE)[None]
        return out


def _real_slices(label: np.ndarray, context: int) -> range:
    """Indices of the volume's own slices in a ``(K + 2c, J, I)`` array padded for slice context."""
    return range(context, label.shape[0] - context)


def _window(volume: np.ndarray, k: int, j: int, i: int, size: int, context: int) -> np.ndarray:
    """``(2c + 1, size, size)`` tiles of slices ``k - c .. k + c`` of a padded ``(K + 2c, J, I)`` array."""
    return np.stack([_tile(volume[n], j, i, size) for n in range(k - context, k + context + 1)])


class SliceContextd(Transform):
    """``image`` ``(1, 2c + 1, H, W)`` -> ``(2c + 1, H, W)`` (the slices become channels); ``label`` -> its middle
    slice ``(1, H, W)``. With c = 0 this is MONAI's ``SqueezeDimd(dim=1)``."""

    def __init__(self, context: int):
        self.context = context

    def __call__(self, item: dict) -> dict:
        out = dict(item)
        out["image"] = item["image"][0]
        out["label"] = item["label"][:, self.context]
        return out


class CordSliced:
    """Validation samples: every working slice of the volume, a ``size`` x ``size`` tile centred where the cord is
    in-plane (its centroid over all slices), so the lateral slices without cord count too: their false positives
    are what a whole-volume segmentation pays for, and a tile of the central slice alone never sees them.

    Input ``(1, K + 2c, J, I)`` arrays (:class:`LoadWorkingGridd`), output a list of K items: ``image``
    ``(2c + 1, size, size)``, ``label`` ``(1, size, size)`` (zero-padded where the slice is smaller).
    """

    def __init__(self, size: int, context: int = 0):
        self.size, self.context = size, context

    def __call__(self, item: dict) -> list[dict]:
        image, label = np.asarray(item["image"])[0], np.asarray(item["label"])[0]
        cord = np.argwhere(label == 1)
        j, i = (int(round(c)) for c in cord[:, 1:].mean(axis=0)) if len(cord) else (label.shape[1] // 2,
                                                                                     label.shape[2] // 2)
        out = []
        for k in _real_slices(label, self.context):
            sample = dict(item)
            sample["image"] = _window(image, k, j, i, self.size, self.context)
            sample["label"] = _tile(label[k], j, i, self.size)[None]
            out.append(sample)
        return out


class RandCordColumnCropd(Randomizable, Transform):
    """Training samples from the cord's column: a random working slice (any of the K, lateral ones included) cut at
    the in-plane position of a random cord voxel, ``num_samples`` tiles of ``(1, 2c + 1, tile, tile)`` (the slice and
    its ``context`` neighbours on either side, as the class-centred crops give them).

    Why: sampling centred on a class's voxels (MONAI's ``RandCropByLabelClassesd``) almost never shows the network a
    lateral slice at the cord's position, where there is no cord but the foramina and roots look like one; the
    network then draws cord in every slice of a thick-slice series (measured: predicted cord 2-3x the true volume).
    """

    def __init__(self, tile: int, num_samples: int, context: int = 0):
        self.tile, self.num_samples, self.context = tile, num_samples, context

    def randomize(self, data=None) -> None:  # draws happen per sample in __call__
        pass

    def __call__(self, item: dict) -> list[dict]:
        label = np.asarray(item["label"])[0]
        cord = np.argwhere(label == 1)
        slices = _real_slices(label, self.context)
        out = []
        for _ in range(self.num_samples):
            k = slices[int(self.R.randint(len(slices)))]
            _, j, i = cord[self.R.randint(len(cord))] if len(cord) else (0, label.shape[1] // 2, label.shape[2] // 2)
            sample = dict(item)
            for key in ("image", "label"):
                sample[key] = _window(np.asarray(item[key])[0], k, int(j), int(i), self.tile, self.context)[None]
            out.append(sample)
        return out


class _Concatenated(Randomizable, Transform):
    """The samples of several multi-sample croppers of one item, one list (MONAI applies the next steps to each)."""

    def __init__(self, croppers: list):
        self.croppers = croppers

    def set_random_state(self, seed=None, state=None):
        super().set_random_state(seed, state)
        for cropper in self.croppers:
            cropper.set_random_state(seed=int(self.R.randint(2**31)))
        return self

    def randomize(self, data=None) -> None:
        pass

    def __call__(self, item: dict) -> list[dict]:
        return [sample for cropper in self.croppers for sample in cropper(item)]


def _tile(slice_2d: np.ndarray, j: int, i: int, size: int) -> np.ndarray:
    half = size // 2
    padded = np.pad(slice_2d, half + 1)
    j, i = j + half + 1, i + half + 1
    return np.ascontiguousarray(padded[j - half : j - half + size, i - half : i - half + size])


class CordSegTask(Task):
    name = "cordseg"
    required_columns = ()
    stratify_by = None
    model_defaults = {"network": "sattisunet", "options": {}}
    options_defaults = {
        "series": list(MRI_SERIES),
        "spacing_mm": 1.0,
        "max_slice_spacing_mm": 3.0,
        "tile": 128,
        "val_tile": 192,
        "samples_per_volume": 4,
        "class_ratios": [1.0, 3.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
        "augment": True,
        "small_fov_prob": 0.25,
        "column_samples": 4,
        "context_slices": 0,
        # Class frequencies of the training tiles (the class_ratios sampling over cordseg.csv, 60 volumes of folds
        # 1-4, context 2): a network trained from scratch starts predicting them (init_output_prior); [] starts uniform.
        "class_prior": [0.92, 0.018, 0.023, 0.004, 0.005, 0.006, 0.007, 0.007, 0.006, 0.004],
    }
    weight_options = ("context_slices",)  # the network's input channels
    monitor, monitor_mode = "cord_dice", "max"

    def segmentation_config(self, config: dict):
        """The :class:`cspineai.segmentation.SegmentationConfig` matching this training (saved with the model)."""
        from ..segmentation import SegmentationConfig

        options = config["task_options"]
        # The sliding window tiles the network was trained on: with larger windows a small field of view (a scan
        # cropped to the canal) sits in a sea of zero padding that training never showed. Validation fold 0 of
        # cordseg.csv with cordseg-unet 1.3.0: windows of 256 (the former fixed size) cord Dice 0.767 on whole
        # volumes and 0.609 cropped to 42 x 76 x 77 mm; 128 (its tile) 0.831 and 0.786 (docs/results/segmentation.md).
        return SegmentationConfig(
            spacing_mm=options["spacing_mm"], max_slice_spacing_mm=options["max_slice_spacing_mm"],
            roi_size=(int(options["tile"]),) * 2, context_slices=options["context_slices"],
        )

    def build_model(self, config: dict):
        from ..nn.sattisunet import build_segmentation_network, init_output_prior

        options = config["task_options"]
        prior = options["class_prior"]
        if prior and len(prior) != len(SEGMENTATION_CLASSES):
            from ..errors import CSpineInputError

            raise CSpineInputError("task_options.class_prior", f"needs {len(SEGMENTATION_CLASSES)} frequencies, one "
                                   f"per class (background, cord, CSF, C2..T1), not {len(prior)}")
        network = build_segmentation_network(
            config["model"]["network"], 1 + 2 * options["context_slices"], len(SEGMENTATION_CLASSES), 2,
            **config["model"]["options"]
        )
        # Only a start from scratch keeps this bias: init_from, resuming and loading a trained model replace it.
        return init_output_prior(network, prior) if prior else network

    def starting_weights(self, model, weights: dict, config: dict) -> dict:
        """A slice-wise starting model (one input channel) widened to this run's slice context: each input layer's
        kernel goes to the middle channel and the neighbours' kernels start at zero, so the network starts as exactly
        the starting model and learns what the neighbours add."""
        context = config["task_options"]["context_slices"]
        own = model.state_dict()
        out = dict(weights)
        for key, value in weights.items():
            target = own.get(key)
            if (context and target is not None and value.ndim >= 3 and value.shape[1] == 1
                    and target.shape == (value.shape[0], 1 + 2 * context, *value.shape[2:])):
                widened = torch.zeros_like(target)
                widened[:, context] = value[:, 0]
                out[key] = widened
        return out

    def data_items(self, cases, config: dict) -> list[dict]:
        items = []
        for case in cases:
            for series in config["task_options"]["series"]:
                if series in case.paths and f"{series}_labels" in case.paths:
                    items.append({"image": str(case.paths[series]), "label": str(case.paths[f"{series}_labels"]),
                                  "case_id": f"{case.case_id}/{series}"})
        if not items:
            from ..errors import CSpineInputError

            raise CSpineInputError("manifest", "no case has an MRI series with its label map (<series>_labels column)")
        return items

    def transforms(self, config: dict, train: bool):
        from monai import transforms as mt

        options = config["task_options"]
        context = options["context_slices"]
        steps = [LoadWorkingGridd(self.segmentation_config(config))]
        if not train:
            steps += [CordSliced(options["val_tile"], context)]
        else:
            tile, window = options["tile"], 1 + 2 * context
            by_class = mt.RandCropByLabelClassesd(
                keys=("image", "label"), label_key="label", spatial_size=(window, tile, tile),
                ratios=options["class_ratios"], num_classes=len(SEGMENTATION_CLASSES),
                num_samples=options["samples_per_volume"], allow_smaller=True, warn=False,
            )
            steps += [
                _Concatenated([by_class, RandCordColumnCropd(tile, options["column_samples"], context)]
                              if options["column_samples"] else [by_class]),
                mt.SpatialPadd(keys=("image", "label"), spatial_size=(window, tile, tile)),
                SliceContextd(context),
            ]
            if options["augment"]:
                # Small fields of view: real cord scans are often cropped to the canal (the shared SCT T1 is
                # 42 x 76 x 77 mm), which the full-neck phantoms never show; cut the tile to a random smaller window
                # and pad it back with zeros, as inference pads a small volume.
                small_fov = mt.Compose([
                    mt.RandSpatialCropd(keys=("image", "label"), roi_size=(tile // 2, tile // 2),
                                        max_roi_size=(tile, tile), random_size=True),
                    mt.SpatialPadd(keys=("image", "label"), spatial_size=(tile, tile)),
                ])
                p_fov = float(options["small_fov_prob"])
                steps += [
                    mt.OneOf([small_fov, mt.Identityd(keys=("image", "label"))], weights=(p_fov, 1.0 - p_fov)),
                    mt.RandAffined(keys=("image", "label"), prob=0.5, rotate_range=0.26, scale_range=0.15,
                                   mode=("bilinear", "nearest"), padding_mode="zeros"),
                    mt.RandBiasFieldd(keys="image", prob=0.3, coeff_range=(0.0, 0.3)),
                    mt.RandAdjustContrastd(keys="image", prob=0.3, gamma=(0.6, 1.6)),
                    mt.RandHistogramShiftd(keys="image", prob=0.2, num_control_points=(5, 10)),
                    mt.RandGaussianSmoothd(keys="image", prob=0.2, sigma_x=(0.0, 1.0), sigma_y=(0.0, 1.0)),
                    mt.RandGaussianNoised(keys="image", prob=0.3, std=0.05),
                ]
        steps.append(mt.EnsureTyped(keys=("image", "label"), track_meta=False))
        return mt.Compose(steps)

    def _loss(self):
        if not hasattr(self, "_dice_ce"):
            from monai.losses import DiceCELoss

            self._dice_ce = DiceCELoss(to_onehot_y=True, softmax=True)
        return self._dice_ce

    def step(self, model, batch: dict, config: dict):
        from ..segmentation import window_logits

        image, label = batch["image"].float(), batch["label"].long()
        # Validation (eval mode) runs the network as segment_cord does, in windows of the training tile over the
        # larger validation tile; one pass over the whole tile scored a use the model never has.
        logits = model(image) if model.training else window_logits(image, model, self.segmentation_config(config))
        loss = self._loss()(logits.float(), label)
        with torch.no_grad():
            n_classes = logits.shape[1]
            pred = torch.nn.functional.one_hot(logits.argmax(1), n_classes).movedim(-1, 1)
            ref = torch.nn.functional.one_hot(label[:, 0], n_classes).movedim(-1, 1)
            dims = tuple(range(2, pred.ndim))
            outputs = {
                "intersection": (pred * ref).sum(dims).cpu(),
                "predicted": pred.sum(dims).cpu(),
                "reference": ref.sum(dims).cpu(),
                "case_id": list(batch["case_id"]),
            }
        return loss, outputs

    def compute_metrics(self, outputs: dict, config: dict, fitted: dict | None = None) -> dict[str, float]:
        inter, pred, ref = (outputs[k].double().sum(0) for k in ("intersection", "predicted", "reference"))

        def dice(index) -> float:
            total = float(pred[index].sum() + ref[index].sum())
            return float("nan") if total == 0 else 2.0 * float(inter[index].sum()) / total

        bodies = list(range(3, len(SEGMENTATION_CLASSES)))
        return {"cord_dice": dice([1]), "csf_dice": dice([2]), "body_dice": dice(bodies)}

    def case_rows(self, outputs: dict, config: dict) -> list[dict]:
        rows = []
        for n, case_id in enumerate(outputs["case_id"]):
            i, p, r = (outputs[k][n, 1].item() for k in ("intersection", "predicted", "reference"))
            rows.append({"case_id": case_id, "cord_dice": 2.0 * i / (p + r) if p + r else float("nan")})
        return rows


register_task(CordSegTask())
