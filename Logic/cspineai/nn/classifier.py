"""The two-branch outcome classifier of paper 000 and its MONAI baselines, built from a configuration dict.

    p = W · [GAP(f4_axial); GAP(f4_sagittal)] + b        (two classes: no pain, pain; cross-entropy)

One branch per series of the modality pair, weights not shared. The paper calls the axial branch "CT" (CT_bone,
CT_tissue or the axial T2) and the sagittal one "MRI" (T1_sag or T2_sag); here the branches are named by their series
and ordered axial first, sagittal second (:attr:`TwoBranchClassifier.series`). The axial series is the one FPRAN
moves onto the sagittal one.

A branch is any module mapping ``(B, 1, D, H, W)`` to a list of feature maps, fine to coarse, with ``out_channels`` (the
channels of the last map) and ``target_layer`` (the module whose output is the last map: Grad-CAM's target). Branches:

- ``"abpdc"``: :class:`~cspineai.nn.backbone.PyramidBackbone` with any difference-convolution ``variant`` (``conv``,
  ``cdc``, ``pdc``, ``acdc``, ``abpdc``); its four levels are FPRAN's pyramid.
- the baselines of the paper's Table 2, one MONAI network per branch used as a feature extractor: ``"resnet"``
  (ResNet-10, basic blocks), ``"densenet"`` (DenseNet, three dense blocks), ``"vit"`` (ViT, 4 layers, on MONAI's patch
  embedding) and
  ``"efficientnet"`` (EfficientNet-B0). Their sizes are reduced from the ImageNet defaults and their first strides
  adapted so that thick-slice inputs of 16 slices survive their downsampling; each change is stated in its builder.

Configuration (all keys optional, :data:`DEFAULT_CONFIG` fills the rest)::

    {"series": ["T1_sag", "CT_bone"], "backbone": "abpdc", "variant": "abpdc", "widths": [16, 32, 64, 128],
     "kernel_size": 3, "theta": 0.7, "norm": "batch", "dropout": 0.0, "num_classes": 2,
     "input_sizes": {"CT_bone": [32, 96, 96], ...}, "fpran": None}

``input_sizes`` defaults to the working grids of :mod:`cspineai.preprocess`.

``fpran`` (default None: no head) adds the paper's registration auxiliary network,
:class:`~cspineai.nn.fpran.FPRAN`, on the branches' own pyramids, for joint training (the ``pain`` task with
``task_options.fpran_sim`` > 0). Its value is a dict of FPRAN options (:data:`FPRAN_DEFAULTS` fills the missing ones:
``hidden``, ``radius``, ``affine_bound``, ``paired_affine``). The axial branch's pyramid is the moving (CT) one, the
sagittal branch's the fixed (MRI) one; only the ``"abpdc"`` backbone has the four-level pyramid FPRAN needs. The pain
logits never use FPRAN: it shapes the backbones' features through the joint loss only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import CSpineInputError
from ..series import SERIES_PLANE
from .abpdc import DEFAULT_THETA, VARIANTS
from .backbone import DEFAULT_WIDTHS, PyramidBackbone
from .fpran import FPRAN, FPRAN_DEFAULTS, FPRANOutput

DEFAULT_CONFIG: dict[str, Any] = {
    "series": ["T1_sag", "CT_bone"],  # the paper's best pair
    "backbone": "abpdc",
    "variant": "abpdc",
    "widths": list(DEFAULT_WIDTHS),
    "kernel_size": 3,
    "theta": DEFAULT_THETA,
    "norm": "batch",
    "dropout": 0.0,
    "num_classes": 2,
    "aux_outputs": 0,  # > 0: a second linear head on the same pooled features (training-time auxiliary targets)
    "fpran": None,  # a dict of FPRAN options: the registration head of joint training (module docstring)
}

#: The modality pairs of the paper's Table 1, (sagittal, axial).
PAPER_PAIRS = (
    ("T2_sag", "T2_tra"),
    ("T2_sag", "CT_bone"),
    ("T2_sag", "CT_tissue"),
    ("T1_sag", "T2_tra"),
    ("T1_sag", "CT_bone"),
    ("T1_sag", "CT_tissue"),
)


@dataclasses.dataclass
class ClassifierOutput:
    """What :meth:`TwoBranchClassifier.forward` returns with ``return_features=True``.

    Attributes:
        logits: ``(B, num_classes)``.
        features: per series, the pooled last-level feature ``(B, out_channels)`` that enters the linear head.
        pyramids: per series, the branch's feature maps fine to coarse, ``[(B, C_i, D_i, H_i, W_i), ...]``.
        aux: ``(B, aux_outputs)`` from the auxiliary head, or None when the model has none.
        registration: the FPRAN head's output (axial CT registered to the sagittal MRI's working grid), when the
            forward pass was given ``fpran_base``; else None.
    """

    logits: torch.Tensor
    features: dict[str, torch.Tensor]
    pyramids: dict[str, list[torch.Tensor]]
    aux: torch.Tensor | None = None
    registration: FPRANOutput | None = None


# --- MONAI baselines as branches ------------------------------------------------------------------------------------
class _Reshape(nn.Module):
    """Tokens ``(B, N, C)`` -> feature map ``(B, C, *grid)`` (a module so that Grad-CAM can hook it)."""

    def __init__(self, grid: Sequence[int]):
        super().__init__()
        self.grid = tuple(grid)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *self.grid)


class MonaiBranch(nn.Module):
    """A MONAI network used as a feature extractor: ``(B, 1, D, H, W)`` -> ``[feature maps]`` (coarsest last)."""

    def __init__(self, kind: str, network: nn.Module, out_channels: int, target_layer: nn.Module,
                 extract: Callable[[nn.Module, torch.Tensor], list[torch.Tensor]]):
        super().__init__()
        self.kind, self.network, self.out_channels = kind, network, out_channels
        self._target = [target_layer]  # a list keeps the module from being registered twice
        self._extract = extract

    @property
    def target_layer(self) -> nn.Module:
        return self._target[0]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self._extract(self.network, x)


def _resnet_features(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    x = net.act(net.bn1(net.conv1(x)))
    if not net.no_max_pool:
        x = net.maxpool(x)
    features = []
    for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
        x = layer(x)
        features.append(x)
    return features


def resnet_branch(input_size: Sequence[int], norm: str = "batch") -> MonaiBranch:
    """MONAI ResNet-10 (basic blocks) at half ResNet's widths (32..256). Its 7x7x7 stem becomes 3x7x7 with stride
    (1, 2, 2): thick slices are not halved before the residual layers."""
    from monai.networks.nets import ResNet

    net = ResNet("basic", [1, 1, 1, 1], [32, 64, 128, 256], spatial_dims=3, n_input_channels=1,
                 conv1_t_size=(3, 7, 7), conv1_t_stride=(1, 2, 2), feed_forward=False, norm=norm)
    return MonaiBranch("resnet", net, 256, net.layer4, _resnet_features)


def _densenet_features(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    return [net.final_act(net.features(x))]


def densenet_branch(input_size: Sequence[int], norm: str = "batch") -> MonaiBranch:
    """MONAI DenseNet with three dense blocks (6, 12, 24; growth 16, 32 initial features): DenseNet-121 has four, whose
    five halvings would leave no slice of a 16-slice series."""
    from monai.networks.nets import DenseNet

    net = DenseNet(3, 1, 2, init_features=32, growth_rate=16, block_config=(6, 12, 24), norm=norm)
    channels = net.class_layers.out.in_features
    net.class_layers = nn.Identity()  # pooling and the linear layer belong to the two-branch head
    net.final_act = nn.ReLU()  # DenseNet's last activation, a module of its own so that Grad-CAM can hook it
    return MonaiBranch("densenet", net, channels, net.final_act, _densenet_features)


#: EfficientNet-B0's stages (MONAI's block strings) with 3x3x3 instead of 5x5x5 depthwise kernels (see below).
EFFICIENTNET_B0_K3 = (
    "r1_k3_s11_e1_i32_o16_se0.25",
    "r2_k3_s22_e6_i16_o24_se0.25",
    "r2_k3_s22_e6_i24_o40_se0.25",
    "r3_k3_s22_e6_i40_o80_se0.25",
    "r3_k3_s11_e6_i80_o112_se0.25",
    "r4_k3_s22_e6_i112_o192_se0.25",
    "r1_k3_s11_e6_i192_o320_se0.25",
)


def _efficientnet_features(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    x = net._swish(net._bn0(net._conv_stem(net._conv_stem_padding(x))))
    x = net._blocks(x)
    return [net.head_act(net._bn1(net._conv_head(net._conv_head_padding(x))))]


def efficientnet_branch(input_size: Sequence[int], norm: str = "batch") -> MonaiBranch:
    """MONAI EfficientNet, B0's widths, depths and strides, up to its 1280-channel head (before pooling).

    B0's three 5x5x5 depthwise stages become 3x3x3: after four isotropic halvings a 16- or 32-slice series has one or
    two slices left, which a 5x5x5 kernel with "same" padding cannot run on (MONAI's strides are isotropic)."""
    from monai.networks.nets import EfficientNet

    # MONAI sizes its static "same" padding for a cubic image; the shortest axis (the slice axis) is the one that must
    # be exact, the longer in-plane axes then get at most one voxel of extra padding.
    net = EfficientNet(list(EFFICIENTNET_B0_K3), spatial_dims=3, in_channels=1, num_classes=2,
                       image_size=min(int(n) for n in input_size), norm=(norm, {"eps": 1e-3, "momentum": 0.01}))
    net._fc = nn.Identity()  # pooling and the linear layer belong to the two-branch head
    net.head_act = nn.SiLU()  # = swish; a module of its own so that Grad-CAM can hook the last map
    return MonaiBranch("efficientnet", net, net._conv_head.out_channels, net.head_act, _efficientnet_features)


class _VisionTransformer(nn.Module):
    """ViT encoder: MONAI's patch embedding (convolution, learnt positions) and PyTorch's pre-norm transformer layers.

    MONAI's own ``ViT`` class is not used because its attention block needs ``einops``, which is not a dependency of
    this project; the architecture is the same (Dosovitskiy et al. 2021, without the class token: features are the mean
    of the patch tokens, as in the other branches' global average pooling).
    """

    def __init__(self, input_size: Sequence[int], patch_size: Sequence[int], hidden_size: int, mlp_dim: int,
                 num_layers: int, num_heads: int):
        super().__init__()
        from monai.networks.blocks import PatchEmbeddingBlock

        self.embed = PatchEmbeddingBlock(1, input_size, patch_size, hidden_size, num_heads, proj_type="conv",
                                         pos_embed_type="learnable", spatial_dims=len(input_size))
        layer = nn.TransformerEncoderLayer(hidden_size, num_heads, mlp_dim, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden_size)
        self.to_grid = _Reshape([n // p for n, p in zip(input_size, patch_size, strict=True)])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.to_grid(self.norm(self.encoder(self.embed(x))))]


def vit_branch(input_size: Sequence[int], norm: str = "batch") -> MonaiBranch:
    """ViT, 4 layers, width 192, 4 heads, on anisotropic patches (4 slices x 16 x 16 voxels): ViT-Base's 12 layers of
    width 768 would dwarf every other model here. Its tokens are laid back on their grid as the feature map."""
    size = tuple(int(n) for n in input_size)
    patch = (min(4, size[0]), 16, 16)
    if any(n % p for n, p in zip(size, patch, strict=True)):
        raise ValueError(f"ViT needs an input size divisible by its patch {patch}, got {size}")
    net = _VisionTransformer(size, patch, hidden_size=192, mlp_dim=384, num_layers=4, num_heads=4)
    return MonaiBranch("vit", net, 192, net.to_grid, lambda vit, x: vit(x))


BASELINES: dict[str, Callable[..., MonaiBranch]] = {
    "resnet": resnet_branch,
    "densenet": densenet_branch,
    "vit": vit_branch,
    "efficientnet": efficientnet_branch,
}
BACKBONES = ("abpdc", *BASELINES)


# --- the classifier -------------------------------------------------------------------------------------------------
class TwoBranchClassifier(nn.Module):
    """Two branches, global average pooling of each branch's last map, concatenation, one linear layer.

    Args:
        branches: series name -> branch (see the module docstring); the axial series first.
        num_classes: 2 (no pain, pain).
        dropout: dropout on the concatenated features.
        aux_outputs: > 0 adds a second linear head on the same pooled features, trained on auxiliary targets (the
            ``pain`` task's ``aux_findings``: the synthetic generator's image findings); the pain logits never use it.
        config: the configuration the model was built from (kept for saving and reloading).
        fpran: optional registration head (:class:`~cspineai.nn.fpran.FPRAN`) on the branches' pyramids, axial
            (moving, "CT") to sagittal (fixed, "MRI"); the pain logits never use it.

    ``forward(inputs)`` takes ``{series: (B, 1, D, H, W)}`` and returns logits ``(B, num_classes)``, or a
    :class:`ClassifierOutput` with ``return_features=True``. With ``fpran_base`` (R, ``(B, 4, 4)`` or ``(4, 4)``:
    sagittal working-grid normalised coordinates -> axial working-grid normalised coordinates,
    :func:`~cspineai.nn.fpran.base_transform_from_volumes`) and ``return_features=True`` the FPRAN head also runs and
    fills :attr:`ClassifierOutput.registration` (the axial image warped onto the sagittal working grid); without it the
    head is skipped, which is what inference does.
    """

    def __init__(self, branches: Mapping[str, nn.Module], num_classes: int = 2, dropout: float = 0.0,
                 config: Mapping[str, Any] | None = None, aux_outputs: int = 0, fpran: nn.Module | None = None):
        super().__init__()
        self.series = tuple(branches)
        self.branches = nn.ModuleDict(dict(branches))
        width = sum(int(b.out_channels) for b in self.branches.values())
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(width, num_classes)
        self.aux_head = nn.Linear(width, aux_outputs) if aux_outputs > 0 else None
        self.fpran = fpran
        self.config = dict(config or {})

    def target_layers(self, level: int | None = None) -> dict[str, nn.Module]:
        """Per series, the layer Grad-CAM hooks: the last stage of each branch, or pyramid ``level`` (1..4) of a
        pyramid backbone (finer levels localise more sharply; MONAI branches have no levels)."""
        if level is None:
            return {name: branch.target_layer for name, branch in self.branches.items()}
        layers = {}
        for name, branch in self.branches.items():
            stages = getattr(branch, "stages", None)
            if stages is None:
                raise ValueError(f"the {name} branch ({type(branch).__name__}) has no pyramid levels to choose from")
            if not 1 <= int(level) <= len(stages):
                raise ValueError(f"level must be in 1..{len(stages)}, got {level}")
            layers[name] = stages[int(level) - 1]
        return layers

    def forward(self, inputs: Mapping[str, torch.Tensor], return_features: bool = False,
                fpran_base: torch.Tensor | None = None):
        missing = [name for name in self.series if name not in inputs]
        if missing:
            raise CSpineInputError(f"{', '.join(missing)} series", "is required by this model but was not provided")
        if fpran_base is not None and (self.fpran is None or not return_features):
            raise ValueError("fpran_base needs a model with an FPRAN head and return_features=True")
        pyramids = {name: self.branches[name](inputs[name]) for name in self.series}
        features = {name: pyramid[-1].mean(dim=tuple(range(2, pyramid[-1].ndim))) for name, pyramid in pyramids.items()}
        pooled = self.dropout(torch.cat([features[name] for name in self.series], dim=1))
        logits = self.head(pooled)
        if return_features:
            aux = self.aux_head(pooled) if self.aux_head is not None else None
            registration = None
            if fpran_base is not None:
                axial, sagittal = self.series
                registration = self.fpran(pyramids[axial], pyramids[sagittal], fpran_base, ct_image=inputs[axial],
                                          mri_size=tuple(inputs[sagittal].shape[2:]))
            return ClassifierOutput(logits, features, pyramids, aux, registration)
        return logits


def order_pair(series: Sequence[str]) -> tuple[str, str]:
    """(axial, sagittal) from a pair given in any order; refuse pairs that are not one axial and one sagittal series."""
    series = tuple(series)
    unknown = [s for s in series if s not in SERIES_PLANE]
    if len(series) != 2 or unknown:
        raise CSpineInputError(
            "model configuration", f"'series' must name two of {', '.join(SERIES_PLANE)}, got {series}"
        )
    planes = sorted(series, key=lambda s: SERIES_PLANE[s] != "axial")
    if SERIES_PLANE[planes[0]] != "axial" or SERIES_PLANE[planes[1]] != "sagittal":
        raise CSpineInputError("model configuration",
                               f"the pair needs one axial and one sagittal series (paper 000), got {series}")
    return planes[0], planes[1]


def resolve_config(config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """:data:`DEFAULT_CONFIG` updated with ``config``, checked, with ``series`` ordered and ``input_sizes`` filled."""
    from ..preprocess import WORKING_GRIDS

    merged = {**DEFAULT_CONFIG, **dict(config or {})}
    unknown = set(merged) - set(DEFAULT_CONFIG) - {"input_sizes"}
    if unknown:
        raise CSpineInputError("model configuration", f"unknown key(s): {', '.join(sorted(unknown))}")
    if merged["backbone"] not in BACKBONES:
        raise CSpineInputError(
            "model configuration", f"backbone must be one of {BACKBONES}, not {merged['backbone']!r}"
        )
    if merged["variant"] not in VARIANTS:
        raise CSpineInputError("model configuration", f"variant must be one of {sorted(VARIANTS)}")
    merged["series"] = list(order_pair(merged["series"]))
    sizes = dict(merged.get("input_sizes") or {})
    merged["input_sizes"] = {s: list(sizes.get(s, WORKING_GRIDS[s].size)) for s in merged["series"]}
    merged["widths"] = [int(w) for w in merged["widths"]]
    if merged["fpran"] is not None:
        merged["fpran"] = _resolve_fpran(merged)
    return merged


def _resolve_fpran(config: Mapping[str, Any]) -> dict[str, Any]:
    """The FPRAN options of a configuration, filled from :data:`FPRAN_DEFAULTS`; refuse backbones FPRAN cannot use."""
    options = config["fpran"]
    if not isinstance(options, Mapping):
        raise CSpineInputError("model configuration",
                               f"'fpran' must be None or a dict of FPRAN options, not {options!r}")
    unknown = set(options) - set(FPRAN_DEFAULTS)
    if unknown:
        raise CSpineInputError("model configuration", f"unknown FPRAN option(s): {', '.join(sorted(unknown))} "
                               f"(known: {', '.join(FPRAN_DEFAULTS)})")
    if config["backbone"] != "abpdc":
        raise CSpineInputError(
            "model configuration",
            f"FPRAN (joint registration training) needs the four-level feature pyramid of the 'abpdc' backbone; the "
            f"{config['backbone']!r} baseline has none. Turn FPRAN off (task_options.fpran_sim: 0) or use "
            f"backbone 'abpdc'",
        )
    if len(config["widths"]) != 4:
        raise CSpineInputError(
            "model configuration", f"FPRAN needs a four-level pyramid: 'widths' needs 4 entries, not {config['widths']}"
        )
    merged = {**FPRAN_DEFAULTS, **dict(options)}
    merged["radius"] = [int(r) for r in merged["radius"]]
    return merged


def build_branch(config: Mapping[str, Any], series: str) -> nn.Module:
    """One branch for ``series`` from a resolved configuration."""
    size = config["input_sizes"][series]
    if config["backbone"] == "abpdc":
        return PyramidBackbone(size, 1, config["widths"], config["variant"], config["kernel_size"], config["theta"],
                               config["norm"])
    return BASELINES[config["backbone"]](size, norm=config["norm"])


def build_classifier(config: Mapping[str, Any] | None = None) -> TwoBranchClassifier:
    """The two-branch classifier described by ``config`` (see the module docstring); a factory for every backbone."""
    config = resolve_config(config)
    branches = {s: build_branch(config, s) for s in config["series"]}
    fpran = build_fpran_head(config, branches) if config["fpran"] is not None else None
    return TwoBranchClassifier(branches, config["num_classes"], config["dropout"], config, int(config["aux_outputs"]),
                               fpran)


def build_fpran_head(config: Mapping[str, Any], branches: Mapping[str, nn.Module]) -> FPRAN:
    """The FPRAN head of a resolved configuration on ``branches`` (axial = moving, sagittal = fixed).

    Level channels are the branches' widths; the sagittal level-4 grid must fit the level-4 attention's memory bound.
    """
    axial, sagittal = config["series"]
    options = config["fpran"]
    fpran = FPRAN(branches[axial].widths, branches[sagittal].widths, int(options["hidden"]), options["radius"],
                  float(options["affine_bound"]), bool(options["paired_affine"]))
    level4 = branches[sagittal].pyramid_shapes()[3][1:]
    if math.prod(level4) > fpran.level4.max_tokens:
        raise CSpineInputError(
            "model configuration",
            f"the {sagittal} working size {config['input_sizes'][sagittal]} leaves a level-4 grid of {level4} voxels, "
            f"over FPRAN's attention bound of {fpran.level4.max_tokens}: use a smaller working size",
        )
    return fpran


__all__ = [
    "BACKBONES",
    "BASELINES",
    "DEFAULT_CONFIG",
    "FPRAN_DEFAULTS",
    "PAPER_PAIRS",
    "ClassifierOutput",
    "MonaiBranch",
    "TwoBranchClassifier",
    "build_branch",
    "build_classifier",
    "build_fpran_head",
    "order_pair",
    "resolve_config",
]
