"""A U-Net field for image data of any depth (paper Appendix F.2, MNIST design).

The states of all ``D`` levels enter the network together: concatenated along
the channel axis, they go through one input convolution. Each level's time
has its own sinusoidal embedding and MLP; the per-level embeddings are summed
into one conditioning vector that modulates every residual block (a scale and
a shift after its second group norm).

The input convolution of the channel concatenation is a sum of one
convolution per level, so :meth:`HierarchicalUNet.encode` applies level ``k``'s
share of it (and its time MLP) and a nested sampler that reuses the encodings
of the outer levels saves that work, as for :class:`~hrflow.fields.HierarchicalMLP`.

Shapes: ``n`` images of event shape ``(C, H, W)``. Any ``H`` and ``W`` work:
downsampling is a stride-2 convolution (``ceil(H / 2)``) and upsampling goes
back to the exact size of the matching skip connection, so odd sizes such as
7x7 need no padding.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .base import HierarchicalField
from .embedding import SinusoidalEmbedding

__all__ = ["HierarchicalUNet", "n_parameters", "unet_resolutions"]


def n_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) scalar parameters of a module.

    Parameters
    ----------
    module : torch.nn.Module
    trainable_only : bool, default=True
        Count only parameters with ``requires_grad``.

    Returns
    -------
    int

    Examples
    --------
    >>> from torch import nn
    >>> n_parameters(nn.Linear(3, 2))  # 3 * 2 weights + 2 biases
    8
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def unet_resolutions(height: int, width: int, n_levels: int) -> list[tuple[int, int]]:
    """Feature-map sizes of the U-Net levels: each level halves (rounding up).

    Parameters
    ----------
    height, width : int
        Image size.
    n_levels : int
        Number of resolution levels (``len(channel_mult)``).

    Returns
    -------
    list of (int, int) of length n_levels
        ``(h_i, w_i)`` of level ``i``; level 0 is the image size.

    Examples
    --------
    >>> unet_resolutions(28, 28, 3)
    [(28, 28), (14, 14), (7, 7)]
    >>> unet_resolutions(7, 5, 3)
    [(7, 5), (4, 3), (2, 2)]
    """
    sizes = [(int(height), int(width))]
    for _ in range(n_levels - 1):
        h, w = sizes[-1]
        sizes.append(((h + 1) // 2, (w + 1) // 2))
    return sizes


def _check_int(value, name, low):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int >= {low}, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


def _check_int_tuple(value, name, low, allow_empty):
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a tuple of ints >= {low}, got {value!r}")
    if not value and not allow_empty:
        raise ValueError(f"{name} must hold at least one int >= {low}, got {value!r}")
    return tuple(_check_int(v, f"every entry of {name}", low) for v in value)


def _groups(channels: int, norm_groups: int) -> int:
    """Number of GroupNorm groups: the largest divisor of ``channels`` that divides ``norm_groups``."""
    return math.gcd(channels, norm_groups)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class _ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, modulated by the conditioning vector, GroupNorm-SiLU-dropout-conv, + skip."""

    def __init__(self, in_ch, out_ch, cond_dim, dropout, norm_groups):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(in_ch, norm_groups), in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.cond = nn.Linear(cond_dim, 2 * out_ch)
        self.norm2 = nn.GroupNorm(_groups(out_ch, norm_groups), out_ch)
        self.drop = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x, cond):
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.cond(cond)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.drop(F.silu(h)))
        return self.skip(x) + h


class _Attention(nn.Module):
    """Multi-head self-attention over the ``H * W`` positions of each image, with a residual."""

    def __init__(self, channels, n_heads, norm_groups):
        super().__init__()
        if channels % n_heads:
            raise ValueError(
                f"n_heads={n_heads} must divide the channel count {channels} of every attention block"
            )
        self.n_heads = n_heads
        self.norm = nn.GroupNorm(_groups(channels, norm_groups), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x, cond=None):
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, self.n_heads, c // self.n_heads, h * w).unbind(1)
        # plain softmax attention (no fused kernel): supports the double passes of divergences
        weights = torch.softmax(torch.einsum("bhcq,bhck->bhqk", q, k) / math.sqrt(c // self.n_heads), -1)
        out = torch.einsum("bhqk,bhck->bhcq", weights, v).reshape(n, c, h, w)
        return x + self.proj(out)


class HierarchicalUNet(HierarchicalField):
    """U-Net field for images ``(C, H, W)``, any depth (paper Appendix F.2).

    Architecture (DDPM-style): a per-level 3x3 input convolution whose outputs
    are summed (a convolution of the channel concatenation of all level
    states); ``len(channel_mult)`` resolution levels, each with
    ``n_res_blocks`` residual blocks (GroupNorm, SiLU, 3x3 convolutions,
    dropout) and optional self-attention, joined by stride-2 downsampling; a
    middle block; the mirrored up path with skip connections and
    nearest-neighbour upsampling; GroupNorm, SiLU and a 3x3 output convolution
    to ``C`` channels. Each level ``k`` embeds its time ``t_k`` by
    :class:`~hrflow.fields.SinusoidalEmbedding` followed by its own 2-layer MLP
    (width ``4 * base_channels``); the sum over levels conditions every
    residual block. The last convolution of every block and the output
    convolution start at zero, so an untrained field predicts 0.

    Parameters
    ----------
    depth : int
        Number of levels ``D``.
    event_shape : tuple of 3 ints
        ``(C, H, W)`` of one image.
    base_channels : int, default=32
        Channels of the first resolution level.
    channel_mult : tuple of int, default=(1, 2)
        Channel multiplier of each resolution level; its length is the number
        of resolution levels (``len - 1`` downsamplings).
    n_res_blocks : int, default=1
        Residual blocks per resolution level on the way down (one more on the way up).
    attention_resolutions : tuple of int, default=()
        Feature-map heights at which self-attention follows each residual
        block (e.g. ``(4,)`` for the 4x4 level of an 8x8 image). Every entry
        must be the height of one level, see :func:`unet_resolutions`. The
        middle block has attention when the lowest level does.
    dropout : float, default=0.0
        Dropout rate inside the residual blocks (training only).
    embedding_dim : int, default=32
        Size of the sinusoidal time embedding (even).
    n_heads : int, default=1
        Attention heads.
    norm_groups : int, default=8
        GroupNorm groups (``gcd(channels, norm_groups)`` for each norm).

    Attributes
    ----------
    resolutions : list of (int, int)
        Feature-map size of each resolution level.

    Examples
    --------
    >>> import torch
    >>> field = HierarchicalUNet(2, (1, 8, 8), base_channels=8, channel_mult=(1, 2))
    >>> zs = [torch.randn(3, 1, 8, 8) for _ in range(2)]
    >>> ts = [torch.rand(3) for _ in range(2)]
    >>> field(zs, ts).shape
    torch.Size([3, 1, 8, 8])
    >>> field.resolutions
    [(8, 8), (4, 4)]
    """

    def __init__(
        self,
        depth: int,
        event_shape: Sequence[int],
        base_channels: int = 32,
        channel_mult: Sequence[int] = (1, 2),
        n_res_blocks: int = 1,
        attention_resolutions: Sequence[int] = (),
        dropout: float = 0.0,
        embedding_dim: int = 32,
        n_heads: int = 1,
        norm_groups: int = 8,
    ):
        if isinstance(event_shape, (str, bytes)) or not isinstance(event_shape, Sequence):
            raise TypeError(f"event_shape must be a tuple (C, H, W), got {event_shape!r}")
        if len(event_shape) != 3:
            raise ValueError(f"event_shape must be a tuple (C, H, W) of 3 ints, got {event_shape!r}")
        shape = tuple(_check_int(s, "every entry of event_shape", 1) for s in event_shape)
        base_channels = _check_int(base_channels, "base_channels", 1)
        channel_mult = _check_int_tuple(channel_mult, "channel_mult", 1, allow_empty=False)
        n_res_blocks = _check_int(n_res_blocks, "n_res_blocks", 1)
        attention_resolutions = _check_int_tuple(attention_resolutions, "attention_resolutions", 1, True)
        n_heads = _check_int(n_heads, "n_heads", 1)
        norm_groups = _check_int(norm_groups, "norm_groups", 1)
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0 <= dropout < 1:
            raise ValueError(f"dropout must be a float in [0, 1), got {dropout!r}")
        super().__init__(depth, shape)
        c_in, height, width = shape
        self.resolutions = unet_resolutions(height, width, len(channel_mult))
        heights = [h for h, _ in self.resolutions]
        unknown = sorted(set(attention_resolutions) - set(heights))
        if unknown:
            raise ValueError(
                f"attention_resolutions {unknown} match no feature-map height; the heights of this "
                f"U-Net are {heights} (image height {height}, channel_mult of length {len(channel_mult)})"
            )
        attend = [h in attention_resolutions for h in heights]
        self.config = dict(
            base_channels=base_channels, channel_mult=channel_mult, n_res_blocks=n_res_blocks,
            attention_resolutions=attention_resolutions, dropout=float(dropout),
            embedding_dim=embedding_dim, n_heads=n_heads, norm_groups=norm_groups,
        )

        cond_dim = 4 * base_channels
        self.embed = SinusoidalEmbedding(embedding_dim)
        self.time = nn.ModuleList(
            nn.Sequential(nn.Linear(embedding_dim, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim))
            for _ in range(depth)
        )
        # input convolution of the channel concatenation, split per level (bias in the head)
        self.inputs = nn.ModuleList(
            nn.Conv2d(c_in, base_channels, 3, padding=1, bias=False) for _ in range(depth)
        )
        self.input_bias = nn.Parameter(torch.zeros(base_channels))

        def block(cin, cout, level):
            return _ResBlock(cin, cout, cond_dim, dropout, norm_groups), (
                _Attention(cout, n_heads, norm_groups) if attend[level] else None
            )

        self.down = nn.ModuleList()
        self.down_attn = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skip_channels = [base_channels]
        ch = base_channels
        for i, mult in enumerate(channel_mult):
            for _ in range(n_res_blocks):
                res, attn = block(ch, base_channels * mult, i)
                ch = base_channels * mult
                self.down.append(res)
                self.down_attn.append(attn if attn is not None else nn.Identity())
                skip_channels.append(ch)
            if i < len(channel_mult) - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skip_channels.append(ch)
        self.mid1 = _ResBlock(ch, ch, cond_dim, dropout, norm_groups)
        self.mid_attn = _Attention(ch, n_heads, norm_groups) if attend[-1] else nn.Identity()
        self.mid2 = _ResBlock(ch, ch, cond_dim, dropout, norm_groups)
        self.up = nn.ModuleList()
        self.up_attn = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i in reversed(range(len(channel_mult))):
            for _ in range(n_res_blocks + 1):
                res, attn = block(ch + skip_channels.pop(), base_channels * channel_mult[i], i)
                ch = base_channels * channel_mult[i]
                self.up.append(res)
                self.up_attn.append(attn if attn is not None else nn.Identity())
            if i > 0:
                self.upsample.append(nn.Conv2d(ch, ch, 3, padding=1))
        self.out_norm = nn.GroupNorm(_groups(ch, norm_groups), ch)
        self.out = _zero(nn.Conv2d(ch, c_in, 3, padding=1))

    def encode(self, level: int, z: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Level ``k``'s share of the input convolution and its time embedding.

        Parameters
        ----------
        level : int
            Level index ``k`` in ``[0, depth)``.
        z : torch.Tensor of shape (n, C, H, W)
        t : torch.Tensor of shape (n,)

        Returns
        -------
        features : torch.Tensor of shape (n, base_channels, H, W)
        time : torch.Tensor of shape (n, 4 * base_channels)
        """
        if z.dim() != 4 or tuple(z.shape[1:]) != self.event_shape:
            raise ValueError(f"z must have shape (n, *{self.event_shape}), got {tuple(z.shape)}")
        return self.inputs[level](z), self.time[level](self.embed(t.to(z.dtype)))

    def head(self, encodings: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Run the U-Net on the summed level encodings; returns shape ``(n, C, H, W)``."""
        h = encodings[0][0]
        emb = encodings[0][1]
        for feat, tim in encodings[1:]:
            h = h + feat
            emb = emb + tim
        h = h + self.input_bias[:, None, None]
        cond = F.silu(emb)
        skips = [h]
        n_res = self.config["n_res_blocks"]
        blocks = iter(zip(self.down, self.down_attn))
        for i in range(len(self.resolutions)):
            for _ in range(n_res):
                res, attn = next(blocks)
                h = attn(res(h, cond))
                skips.append(h)
            if i < len(self.resolutions) - 1:
                h = self.downsample[i](h)
                skips.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, cond)), cond)
        blocks = iter(zip(self.up, self.up_attn))
        ups = iter(self.upsample)
        for i in reversed(range(len(self.resolutions))):
            for _ in range(n_res + 1):
                res, attn = next(blocks)
                h = attn(res(torch.cat([h, skips.pop()], dim=1), cond))
            if i > 0:
                h = next(ups)(F.interpolate(h, size=skips[-1].shape[-2:], mode="nearest"))
        return self.out(F.silu(self.out_norm(h)))
