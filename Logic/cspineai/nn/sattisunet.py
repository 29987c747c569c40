"""SAttisUNet: a Swin U-shaped network with attentive skip connections, and the segmentation baselines.

Paper 001 (section III.B) describes SAttisUNet in words only; it publishes neither code nor a figure legible in text.
What is **read from the paper**:

- a U-shaped encoder-decoder in which Swin Transformer blocks (shifted windows) replace the convolutional hierarchy;
- the encoder's features feed an *attentive skip connection module* built on a *merging cross-covariance attention*
  (its reference [28] is XCiT, El-Nouby et al. 2021) that fuses the encoder's features before they reach the decoder.

What is **inferred** (the project's reading, ``docs``/``methods.md`` section 4):

- the decoder follows Swin-Unet (Cao et al. 2021): patch expanding (linear + pixel shuffle) and Swin blocks, skip
  features concatenated and linearly projected back to the decoder width;
- the attentive skip: every encoder scale's tokens are projected to one common width, *merged* by concatenating them
  along the token axis, passed through XCiT blocks (XCA + MLP, pre-norm, residual), split back to their scales,
  projected back to each scale's width and added to the encoder tokens (residual) before fusion with the decoder.
  Because XCA attends between channels (a ``d x d`` map per head) its cost is linear in the number of tokens, which is
  what makes attention over all scales at once affordable; XCiT's local patch interaction is left out (the Swin blocks
  already mix locally);
- 2-D by default (slice-wise, the paper segments sagittal slices); ``spatial_dims=3`` builds the same network in 3-D;
- a full-resolution convolutional skip (as in SwinUNETR's first encoder block) before the head: the cord is 5-10 voxels
  wide at working resolution and patch embedding alone loses its boundary. ``full_resolution_skip=False`` removes it.
- ``attentive_skip=False`` gives plain Swin-Unet skips, the ablation the paper's claim rests on.

Shapes: input ``(B, C_in, H, W)`` or ``(B, C_in, D, H, W)``; output logits with ``C_out`` channels on the same grid. Any
spatial size is accepted: the input is padded to a multiple of ``patch_size * 2**(len(depths) - 1)`` and the logits are
cropped back.

Baselines (MONAI UNet and SwinUNETR) are built by :func:`build_segmentation_network` with the same call, so one training
frame serves all three.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812
from monai.networks.blocks import MLPBlock, PatchEmbed, UnetrBasicBlock, UnetResBlock
from monai.networks.nets.swin_unetr import PatchMerging, SwinTransformerBlock, compute_mask, get_window_size
from monai.networks.utils import pixelshuffle
from torch import nn

__all__ = [
    "CrossCovarianceAttention",
    "XCABlock",
    "AttentiveSkip",
    "PatchExpand",
    "SwinStage",
    "SAttisUNet",
    "PadToMultiple",
    "SEGMENTATION_NETWORKS",
    "build_segmentation_network",
    "init_output_prior",
]


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.movedim(1, -1)


def _channels_first(x: torch.Tensor) -> torch.Tensor:
    return x.movedim(-1, 1)


class CrossCovarianceAttention(nn.Module):
    """XCiT's cross-covariance attention (El-Nouby et al. 2021, eq. 2) on a token sequence.

    Queries and keys are L2-normalised along the *token* axis, so ``softmax(tau * K^T Q)`` is a ``(d x d)`` map between
    the channels of each head (``d = dim / num_heads``) and the cost is linear in the number of tokens ``N``. Written
    here because no maintained library except timm (not a dependency: it pulls a CUDA build of torch) provides it.

    Args:
        dim: token width ``C``; must be divisible by ``num_heads``.
        num_heads: number of heads; each attends among its own ``C / num_heads`` channels.
        qkv_bias: learn a bias in the query/key/value projection.
        attn_drop: dropout on the channel attention map.
        proj_drop: dropout after the output projection.

    Input ``(B, N, C)``, output ``(B, N, C)``. Permuting the tokens permutes the output identically (no positional
    term).
    """

    def __init__(
        self, dim: int, num_heads: int = 4, qkv_bias: bool = False, attn_drop: float = 0.0, proj_drop: float = 0.0
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        # A learnable temperature per head replaces the 1/sqrt(d) scaling: normalised q, k give cosines in [-1, 1].
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, n, c = x.shape
        # (3, B, heads, d, N): channels of a head as rows, tokens as columns.
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 4, 1)
        q, k, v = qkv.unbind(0)
        return F.normalize(q, dim=-1), F.normalize(k, dim=-1), v

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The channel attention ``(B, heads, d, d)`` for tokens ``x`` ``(B, N, C)``; its size does not depend on N."""
        q, k, _ = self._qkv(x)
        return ((q @ k.transpose(-2, -1)) * self.temperature).softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self._qkv(x)
        attn = self.attn_drop(((q @ k.transpose(-2, -1)) * self.temperature).softmax(dim=-1))
        out = (attn @ v).permute(0, 3, 1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(out))


class XCABlock(nn.Module):
    """Pre-norm transformer block with XCA in place of token self-attention: ``x + XCA(LN x)``, then ``x + MLP(LN x)``.

    Input and output ``(B, N, C)``.
    """

    def __init__(self, dim: int, num_heads: int = 4, mlp_ratio: float = 2.0, drop: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = CrossCovarianceAttention(dim, num_heads, qkv_bias=True, attn_drop=drop, proj_drop=drop)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), dropout_rate=drop, act="GELU", dropout_mode="swin")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class SwinStage(nn.Module):
    """A stage of ``depth`` Swin blocks (MONAI's ``SwinTransformerBlock``), alternating plain and shifted windows.

    MONAI's own ``BasicLayer`` does the same but needs ``einops``, an optional MONAI dependency this project does not
    install; this is its loop, with the shifted-window mask from MONAI's ``compute_mask``.

    Args:
        dim: channels ``C``.
        depth: number of blocks.
        num_heads: attention heads.
        window_size: window (in tokens) per spatial axis; axes shorter than the window use their full length unshifted.
        drop_path: stochastic depth rate of each block (``depth`` values).

    Input and output channel-first ``(B, C, *spatial)``.
    """

    def __init__(
        self, dim: int, depth: int, num_heads: int, window_size: Sequence[int], drop_path: Sequence[float] = ()
    ) -> None:
        super().__init__()
        self.window_size = tuple(window_size)
        self.shift_size = tuple(w // 2 for w in self.window_size)
        drop_path = list(drop_path) or [0.0] * depth
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(
                dim,
                num_heads,
                self.window_size,
                shift_size=(0,) * len(self.window_size) if n % 2 == 0 else self.shift_size,
                qkv_bias=True,
                drop_path=drop_path[n],
            )
            for n in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = tuple(x.shape[2:])
        window, shift = get_window_size(spatial, self.window_size, self.shift_size)
        padded = [math.ceil(n / w) * w for n, w in zip(spatial, window, strict=True)]
        mask = compute_mask(padded, window, shift, x.device)
        x = _channels_last(x).contiguous()
        for block in self.blocks:
            x = block(x, mask)
        return _channels_first(x)


class AttentiveSkip(nn.Module):
    """The attentive skip connection: merge all encoder scales' tokens, apply XCA, split back, add to each scale.

    Args:
        skip_channels: channels of each encoder scale, fine to coarse (e.g. ``(32, 64, 128)``).
        width: common token width the scales are projected to before merging.
        depth: number of XCA blocks applied to the merged tokens.
        num_heads: XCA heads.

    ``forward`` takes a list of channel-first maps ``(B, C_s, *spatial_s)`` and returns maps of the same shapes.
    """

    def __init__(self, skip_channels: Sequence[int], width: int = 64, depth: int = 1, num_heads: int = 4) -> None:
        super().__init__()
        self.project_in = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(c), nn.Linear(c, width)) for c in skip_channels
        )
        self.blocks = nn.Sequential(*(XCABlock(width, num_heads) for _ in range(depth)))
        self.project_out = nn.ModuleList(nn.Linear(width, c) for c in skip_channels)

    def forward(self, skips: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        tokens = [proj(_channels_last(s).flatten(1, -2)) for proj, s in zip(self.project_in, skips, strict=True)]
        merged = self.blocks(torch.cat(tokens, dim=1))
        parts = merged.split([t.shape[1] for t in tokens], dim=1)
        out = []
        for proj, part, skip in zip(self.project_out, parts, skips, strict=True):
            delta = proj(part).reshape(skip.shape[0], *skip.shape[2:], skip.shape[1])
            out.append(skip + _channels_first(delta))
        return out


class PatchExpand(nn.Module):
    """Swin-Unet's patch expanding: a linear layer then pixel shuffle, upsampling by ``scale`` and setting the width.

    Input ``(B, C_in, *spatial)``, output ``(B, C_out, *(scale * spatial))``, layer-normalised over channels.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, scale: int = 2) -> None:
        super().__init__()
        self.spatial_dims, self.scale = spatial_dims, scale
        self.expand = nn.Linear(in_channels, out_channels * scale**spatial_dims, bias=False)
        self.norm = nn.LayerNorm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _channels_first(self.expand(_channels_last(x)))
        x = pixelshuffle(x, self.spatial_dims, self.scale)
        return _channels_first(self.norm(_channels_last(x)))


class SAttisUNet(nn.Module):
    """Swin U-network with attentive (merged XCA) skip connections; see the module docstring for what is inferred.

    Args:
        in_channels: image channels.
        out_channels: classes (logits, no softmax).
        spatial_dims: 2 (slice-wise) or 3.
        embed_dim: width of the first stage; stage ``s`` has ``embed_dim * 2**s`` channels.
        depths: Swin blocks per encoder stage, the last one being the bottleneck (no merging after it). The decoder
            mirrors ``depths[:-1]``.
        num_heads: attention heads per stage (same length as ``depths``).
        window_size: Swin window (in tokens) along each spatial axis; smaller maps use their own size.
        patch_size: patch embedding stride (tokens are ``patch_size`` voxels wide).
        skip_width: common width of the attentive skip's merged tokens.
        skip_depth: XCA blocks in the attentive skip.
        skip_heads: XCA heads.
        attentive_skip: ``False`` gives plain Swin-Unet skips (ablation).
        full_resolution_skip: add a convolutional full-resolution skip before the head.
        drop_path_rate: stochastic depth, linearly increasing over the encoder blocks.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 10,
        spatial_dims: int = 2,
        embed_dim: int = 32,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (2, 4, 8, 16),
        window_size: int | Sequence[int] = 8,
        patch_size: int = 4,
        skip_width: int = 64,
        skip_depth: int = 1,
        skip_heads: int = 4,
        attentive_skip: bool = True,
        full_resolution_skip: bool = True,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, not {spatial_dims}")
        if len(num_heads) != len(depths) or len(depths) < 2:
            raise ValueError("depths and num_heads need one entry per stage and at least two stages")
        self.spatial_dims = spatial_dims
        self.patch_size = patch_size
        self.multiple = patch_size * 2 ** (len(depths) - 1)
        window = (window_size,) * spatial_dims if isinstance(window_size, int) else tuple(window_size)
        dims = [embed_dim * 2**s for s in range(len(depths))]

        self.patch_embed = PatchEmbed(
            patch_size, in_channels, embed_dim, norm_layer=nn.LayerNorm, spatial_dims=spatial_dims
        )
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.encoder = nn.ModuleList()
        self.merging = nn.ModuleList()
        for s, (dim, depth, heads) in enumerate(zip(dims, depths, num_heads, strict=True)):
            drop = rates[sum(depths[:s]) : sum(depths[: s + 1])]
            self.encoder.append(SwinStage(dim, depth, heads, window, drop))
            if s < len(depths) - 1:
                self.merging.append(PatchMerging(dim, spatial_dims=spatial_dims))
        self.attentive_skip = AttentiveSkip(dims[:-1], skip_width, skip_depth, skip_heads) if attentive_skip else None

        self.expand = nn.ModuleList()
        self.fuse = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for s in reversed(range(len(depths) - 1)):
            self.expand.append(PatchExpand(spatial_dims, dims[s + 1], dims[s]))
            self.fuse.append(nn.Linear(2 * dims[s], dims[s]))
            self.decoder.append(SwinStage(dims[s], depths[s], num_heads[s], window))
        # Full-resolution convolutions dominate the cost on CPU: keep them at half the embedding width.
        narrow = max(embed_dim // 2, out_channels)
        self.final_expand = PatchExpand(spatial_dims, embed_dim, narrow, scale=patch_size)
        self.stem = (
            UnetrBasicBlock(spatial_dims, in_channels, narrow, 3, 1, norm_name="instance", res_block=True)
            if full_resolution_skip
            else None
        )
        head_in = 2 * narrow if full_resolution_skip else narrow
        self.head = nn.Sequential(
            UnetResBlock(spatial_dims, head_in, narrow, 3, 1, norm_name="instance"),
            (nn.Conv2d if spatial_dims == 2 else nn.Conv3d)(narrow, out_channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = x.shape[2:]
        if len(spatial) != self.spatial_dims:
            raise ValueError(f"expected {self.spatial_dims} spatial axes, got input of shape {tuple(x.shape)}")
        pad = [(-n) % self.multiple for n in spatial]
        if any(pad):
            # F.pad lists the last axis first.
            x = F.pad(x, [p for n in reversed(pad) for p in (0, n)])
        tokens = self.patch_embed(x)
        skips = []
        for s, stage in enumerate(self.encoder):
            tokens = stage(tokens.contiguous())
            if s < len(self.merging):
                skips.append(tokens)
                tokens = _channels_first(self.merging[s](_channels_last(tokens)))
        if self.attentive_skip is not None:
            skips = self.attentive_skip(skips)
        for expand, fuse, stage, skip in zip(self.expand, self.fuse, self.decoder, reversed(skips), strict=True):
            up = expand(tokens)
            tokens = _channels_first(fuse(_channels_last(torch.cat([up, skip], dim=1))))
            tokens = stage(tokens.contiguous())
        features = self.final_expand(tokens)
        if self.stem is not None:
            features = torch.cat([features, self.stem(x)], dim=1)
        logits = self.head(features)
        return logits[(slice(None), slice(None), *(slice(0, n) for n in spatial))]


class PadToMultiple(nn.Module):
    """Wrap a network that needs spatial sizes divisible by ``multiple``: pad (zeros, at the high end), run, crop back.

    Lets every network of :data:`SEGMENTATION_NETWORKS` take the same sliding-window tiles.
    """

    def __init__(self, network: nn.Module, multiple: int) -> None:
        super().__init__()
        self.network, self.multiple = network, multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = x.shape[2:]
        pad = [(-n) % self.multiple for n in spatial]
        if any(pad):
            x = F.pad(x, [p for n in reversed(pad) for p in (0, n)])
        return self.network(x)[(slice(None), slice(None), *(slice(0, n) for n in spatial))]


def _unet(in_channels: int, out_channels: int, spatial_dims: int, **kwargs) -> nn.Module:
    from monai.networks.nets import UNet

    options = {"channels": (16, 32, 64, 128, 256), "strides": (2, 2, 2, 2), "num_res_units": 2, "norm": "instance"}
    options.update(kwargs)
    multiple = math.prod(options["strides"])
    return PadToMultiple(UNet(spatial_dims, in_channels, out_channels, **options), multiple)


def _swinunetr(in_channels: int, out_channels: int, spatial_dims: int, **kwargs) -> nn.Module:
    from monai.networks.nets import SwinUNETR

    options = {"feature_size": 24, "depths": (2, 2, 2, 2), "num_heads": (3, 6, 12, 24), "window_size": 7}
    options.update(kwargs)
    patch = options.get("patch_size", 2)
    return PadToMultiple(SwinUNETR(in_channels, out_channels, spatial_dims=spatial_dims, **options), patch**5)


def _sattisunet(in_channels: int, out_channels: int, spatial_dims: int, **kwargs) -> nn.Module:
    return SAttisUNet(in_channels, out_channels, spatial_dims, **kwargs)


#: Segmentation networks by name; each takes ``(in_channels, out_channels, spatial_dims, **options)``.
SEGMENTATION_NETWORKS = {"sattisunet": _sattisunet, "unet": _unet, "swinunetr": _swinunetr}


def build_segmentation_network(
    name: str, in_channels: int = 1, out_channels: int = 10, spatial_dims: int = 2, **options
) -> nn.Module:
    """Build a segmentation network by name (``"sattisunet"``, ``"unet"``, ``"swinunetr"``).

    All three accept any spatial size and return logits ``(B, out_channels, *spatial)`` on the input grid; ``options``
    go to the network's constructor (see :class:`SAttisUNet`, MONAI ``UNet`` and ``SwinUNETR``).
    """
    try:
        factory = SEGMENTATION_NETWORKS[name.lower()]
    except KeyError:
        known = sorted(SEGMENTATION_NETWORKS)
        raise ValueError(f"unknown segmentation network {name!r}; choose one of {known}") from None
    return factory(in_channels, out_channels, spatial_dims, **options)


def init_output_prior(network: nn.Module, prior: Sequence[float]) -> nn.Module:
    """Start ``network`` predicting the class ``prior`` everywhere: the bias of its output convolution (the last
    convolution with ``len(prior)`` output channels) becomes ``log(prior)``, so softmax starts near the prior instead
    of uniform (Lin et al. 2017, "Focal loss for dense object detection", section 4.1, "Initialization").

    Why: from a uniform start the loss is dominated by learning that ~92% of the training tiles' voxels are
    background; SAttisUNet (Swin blocks, no pretrained weights) spent hundreds of steps there and collapsed to
    all-background (docs/results/segmentation.md, session 9). Returns ``network``.
    """
    prior_t = torch.as_tensor(prior, dtype=torch.float32)
    if prior_t.ndim != 1 or bool((prior_t <= 0).any()):
        raise ValueError(f"the class prior must be positive frequencies, one per class, not {list(prior)}")
    outputs = [m for m in network.modules()
               if isinstance(m, nn.modules.conv._ConvNd) and m.out_channels == len(prior_t) and m.bias is not None]
    if not outputs:
        raise ValueError(f"{type(network).__name__} has no biased output convolution with {len(prior_t)} channels")
    with torch.no_grad():
        outputs[-1].bias.copy_((prior_t / prior_t.sum()).log())
    return network
