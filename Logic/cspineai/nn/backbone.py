"""The per-modality pyramid backbone of paper 000 (section 2.1; methods.md section 2).

One backbone per series (weights not shared). Four stages, fine to coarse; a stage is two difference-convolution units
(:class:`~cspineai.nn.abpdc.DifferenceConv` -> norm -> activation) with a residual connection, ResNet-basic style::

    stage(x) = act(norm(conv2(act(norm(conv1(x, stride))))) + shortcut(x))

Every stage halves the in-plane axes (H, W); the slice axis D is halved only while it is longer than the kernel, because
thick-slice series have few slices (a 16-slice sagittal series goes 16 -> 8 -> 4 -> 2 -> 2). The strides are fixed when
the backbone is built from its working input size, so that a model's geometry does not change from case to case.

Output, for an input ``(B, in_channels, D, H, W)``: the pyramid ``[f1, f2, f3, f4]`` with
``f_i`` of shape ``(B, widths[i-1], D_i, H / 2**i, W / 2**i)`` (sizes rounded up), ``D_i`` from :attr:`strides`.
FPRAN consumes these levels (``pyramid_shapes`` gives their sizes; each level's voxel centres are those of a strided
convolution with "same" padding: level i samples input index ``n * cumulative_stride_i`` along each axis) and the
classifier pools ``f4``. Grad-CAM's target layer is the last stage (:attr:`target_layer`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.layers.factories import Act, Norm
from monai.networks.layers.utils import get_act_layer, get_norm_layer
from torch import nn

from .abpdc import DEFAULT_THETA, DifferenceConv

DEFAULT_WIDTHS = (16, 32, 64, 128)


def pyramid_strides(input_size: Sequence[int], levels: int = 4, kernel_size: int = 3) -> list[tuple[int, ...]]:
    """Per-stage strides ``(sD, sH, sW)``: in-plane 2 at every stage, slice axis 2 while it is longer than the kernel.

    ``input_size`` is ``(D, H, W)`` (2-D: ``(H, W)``, the first axis then playing the slice axis).
    """
    size = [int(n) for n in input_size]
    strides = []
    for _ in range(levels):
        first = 2 if size[0] > kernel_size else 1
        stride = (first, *([2] * (len(size) - 1)))
        size = [-(-n // s) for n, s in zip(size, stride, strict=True)]
        strides.append(stride)
    return strides


class DifferenceConvUnit(nn.Sequential):
    """DifferenceConv -> norm -> activation (activation optional). ``(B, C_in, ...) -> (B, C_out, ...)``."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, stride: Sequence[int] | int = 1,
                 variant: str = "abpdc", kernel_size: int = 3, theta: float = DEFAULT_THETA,
                 norm: str | tuple = Norm.BATCH, act: str | tuple | None = Act.RELU):
        super().__init__()
        self.add_module("conv", DifferenceConv(spatial_dims, in_channels, out_channels, kernel_size, stride=stride,
                                               variant=variant, theta=theta))
        self.add_module("norm", get_norm_layer(norm, spatial_dims, out_channels))
        if act is not None:
            self.add_module("act", get_act_layer(act))


class PyramidStage(nn.Module):
    """Two difference-convolution units with a residual connection; the first unit carries the stride.

    The shortcut is the identity when shape and width are unchanged, else a plain strided 1x1x1 convolution + norm.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, stride: Sequence[int],
                 variant: str = "abpdc", kernel_size: int = 3, theta: float = DEFAULT_THETA,
                 norm: str | tuple = Norm.BATCH, act: str | tuple = Act.RELU):
        super().__init__()
        common = dict(variant=variant, kernel_size=kernel_size, theta=theta, norm=norm)
        self.unit1 = DifferenceConvUnit(spatial_dims, in_channels, out_channels, stride, act=act, **common)
        self.unit2 = DifferenceConvUnit(spatial_dims, out_channels, out_channels, 1, act=None, **common)
        if in_channels == out_channels and all(s == 1 for s in stride):
            self.shortcut = nn.Identity()
        else:
            conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
            self.shortcut = nn.Sequential(
                conv(in_channels, out_channels, 1, stride=tuple(stride), bias=False),
                get_norm_layer(norm, spatial_dims, out_channels),
            )
        self.act = get_act_layer(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.unit2(self.unit1(x)) + self.shortcut(x))


class PyramidBackbone(nn.Module):
    """Four-stage (by default) difference-convolution backbone returning the feature pyramid ``[f1, ..., f4]``.

    Args:
        input_size: working size ``(D, H, W)`` of the series this backbone reads (fixes the slice-axis strides).
        in_channels: input channels (1: one normalised series).
        widths: output channels of each stage, fine to coarse (its length is the number of levels).
        variant: ``conv``, ``cdc``, ``pdc``, ``acdc`` or ``abpdc`` (every convolution of the stages).
        kernel_size: odd K of the difference convolutions.
        theta: fixed θ (``cdc``/``pdc``), starting θ (``acdc``/``abpdc``).
        norm, act: MONAI layer names (e.g. ``"batch"``, ``"instance"``; ``"relu"``).
        spatial_dims: 3 (2 allowed).
    """

    def __init__(self, input_size: Sequence[int], in_channels: int = 1, widths: Sequence[int] = DEFAULT_WIDTHS,
                 variant: str = "abpdc", kernel_size: int = 3, theta: float = DEFAULT_THETA,
                 norm: str | tuple = Norm.BATCH, act: str | tuple = Act.RELU, spatial_dims: int = 3):
        super().__init__()
        if len(input_size) != spatial_dims:
            raise ValueError(f"input_size {tuple(input_size)} does not have {spatial_dims} axes")
        self.input_size = tuple(int(n) for n in input_size)
        self.widths = tuple(int(w) for w in widths)
        self.strides = pyramid_strides(self.input_size, len(self.widths), kernel_size)
        self.stages = nn.ModuleList()
        channels = in_channels
        for width, stride in zip(self.widths, self.strides, strict=True):
            stage = PyramidStage(spatial_dims, channels, width, stride, variant, kernel_size, theta, norm, act)
            self.stages.append(stage)
            channels = width
        self.out_channels = channels

    @property
    def target_layer(self) -> nn.Module:
        """The module whose output is ``f4`` (Grad-CAM's target layer)."""
        return self.stages[-1]

    def pyramid_shapes(self, input_size: Sequence[int] | None = None) -> list[tuple[int, ...]]:
        """``(C, D_i, H_i, W_i)`` of every level for an input of ``input_size`` (default: the working size)."""
        size = list(input_size or self.input_size)
        shapes = []
        for width, stride in zip(self.widths, self.strides, strict=True):
            size = [-(-n // s) for n, s in zip(size, stride, strict=True)]
            shapes.append((width, *size))
        return shapes

    def cumulative_strides(self) -> list[tuple[int, ...]]:
        """Voxel step of each level in input voxels, per axis: level i samples the input at ``n * step``."""
        steps, step = [], [1] * len(self.input_size)
        for stride in self.strides:
            step = [a * b for a, b in zip(step, stride, strict=True)]
            steps.append(tuple(step))
        return steps

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``(B, in_channels, D, H, W)`` -> ``[f1, ..., f4]`` (shapes in the module docstring)."""
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


__all__ = ["DEFAULT_WIDTHS", "DifferenceConvUnit", "PyramidBackbone", "PyramidStage", "pyramid_strides"]
