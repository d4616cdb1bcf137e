"""Spatially varying upsampler: per-pixel mixtures of learned polyphase filters.

After LAPAR (Li et al., NeurIPS 2020) and kernel-prediction networks: a small CNN at
low resolution predicts, for every *output* pixel, the weights of ``K`` learned
filters; the output pixel is the weighted sum of those filters applied to the decoded
base frame. The filters therefore change from pixel to pixel, steered by the decoded
frame and by the side features ``s`` that only the encoder could compute.

    x_lr_hat [B,3,h,w] --Normalize--+
    s        [B,C_s,h,w] -----------+--cat--conv3x3--(conv3x3 + residual) x depth = f --conv1x1--> w [B,K s^2,h,w]
    x_lr_hat --polyphase conv (K filters x s^2 phases, t x t taps)--> c [B,3 K s^2,h,w]
    m = sum_k w_k * c_k  (+ d, a per-pixel detail term from a 1x1 conv of f, if ``residual``;
                          + r, the side stream's enhancement residual)   [B, 3 s^2, h, w]
    y_hat = pixel_shuffle(m_Y, s);  uv_hat = 2x2 means of pixel_shuffle(m_CbCr, s)

That is ``chroma="luma"``. With ``chroma="own"`` (the shipped default) luma's mixture
serves Y alone, and chroma has its own head and filters, shared by Cb and Cr, applied to
chroma on luma's grid at chroma's own output phases (one per base pixel at 2x), so no
2x2 averaging is needed; the side features enter the first convolution through a
convolution of their own (``conv_side``), computed once per side packet.

Filter 0 starts as bicubic and the weights start at (1, 0, ..., 0), so an untrained
upsampler is exactly bicubic upsampling.

:class:`FoldedUpsampler` (``model.up_form = "folded"``) is the same design on the 4:2:0
planes' common grid: each 2x2 block of base luma folded into four channels beside the
block's chroma pair, so the network runs on a quarter of the base pixels with no 4:4:4
conversion and its filters see 6x6 base pixels through 3x3 taps. Its int8 graph runs
1.7x faster than the mixture form's (``experiments/bench_upsampler.py``): the per-pixel
work around the network (the conversion to 4:4:4, the heads, the activations of 16
channels at every base pixel) is what the mixture form spends most of its time on.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from dualcodec.nets.common import Normalize, bicubic_polyphase, conv3x3, to_444
from dualcodec.nets.quant import conv_parts

CHANNELS = 3  # Y, Cb, Cr, chroma on luma's grid


def chroma_average(scale: int) -> torch.Tensor:
    """A grouped 1x1 convolution that averages each 2x2 block of output positions of a
    phase layout (``scale**2`` phases per pixel, ``scale >= 2``) into ``(scale/2)**2`` phases,
    per chroma channel: ``[2 (s/2)^2, s^2, 1, 1]``."""
    half = scale // 2
    weight = torch.zeros(2 * half * half, scale * scale, 1, 1)
    for c in range(2):
        for py in range(scale):
            for px in range(scale):
                weight[c * half * half + (py // 2) * half + px // 2, py * scale + px] = 0.25
    return weight


CHROMA_MODES = ("luma", "own")


MOTION_WIDTH = 24  # the temporal upsampler's motion network: four 3x3 convolutions on the folded grid


def _motion_network() -> nn.Sequential:
    """A temporal upsampler's motion: four 3x3 convolutions of two frames' folded base
    planes (normalised) to motion (x, y) on the folded grid; the last starts at zero."""
    network = nn.Sequential(conv3x3(12, MOTION_WIDTH), nn.LeakyReLU(0.1),
                            conv3x3(MOTION_WIDTH, MOTION_WIDTH), nn.LeakyReLU(0.1),
                            conv3x3(MOTION_WIDTH, MOTION_WIDTH), nn.LeakyReLU(0.1),
                            conv3x3(MOTION_WIDTH, 2))
    nn.init.zeros_(network[-1].weight)
    nn.init.zeros_(network[-1].bias)
    return network


def warp(plane: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``plane`` ``[B,C,H,W]`` warped by motion ``v`` ``[B,2,h,w]`` (x, y) given on a coarser
    grid of the same picture in units of half that grid's pixels (base luma pixels on the
    folded grid): ``out(p) = plane(p + v(p))``, bilinear, edges repeated."""
    h, w = plane.shape[-2:]
    factor = h / v.shape[-2]  # plane pixels per grid pixel
    v = F.interpolate(v, size=(h, w), mode="bilinear", align_corners=False) * (factor / 2)
    # grid_sample's coordinates: -1 and 1 at the outer edges of the corner pixels (align_corners False)
    xs = (torch.arange(w, dtype=plane.dtype, device=plane.device) * 2 + 1) / w - 1
    ys = (torch.arange(h, dtype=plane.dtype, device=plane.device) * 2 + 1) / h - 1
    grid = torch.stack([xs.view(1, 1, w) + v[:, 0] * (2 / w), ys.view(1, h, 1) + v[:, 1] * (2 / h)], dim=-1)
    return F.grid_sample(plane, grid, mode="bilinear", padding_mode="border", align_corners=False)


class Memory(NamedTuple):
    """What a temporal upsampler (:class:`FoldedUpsampler` with ``temporal``) keeps from the
    previous frame of the same GOP: its decoded base planes and the upsampler's output
    planes, unit scale. ``present`` ``[1]`` or ``[B,1,1,1]``: 1 where the previous frame is
    real, 0 where it is a stand-in (a compiled graph has one set of inputs, so a GOP's
    first frame passes zeros with ``present = 0``); ``None``: present."""

    y_lr_hat: torch.Tensor  # [B,1,h,w]
    uv_lr_hat: torch.Tensor  # [B,2,h/2,w/2]
    y_hat: torch.Tensor  # [B,1,sh,sw]
    uv_hat: torch.Tensor  # [B,2,sh/2,sw/2]
    present: torch.Tensor | None = None


class Ahead(NamedTuple):
    """The next frame's decoded base planes (unit scale), for a temporal upsampler with
    ``ahead`` (a decoder one frame behind); ``present`` as :class:`Memory`'s."""

    y_lr_hat: torch.Tensor  # [B,1,h,w]
    uv_lr_hat: torch.Tensor  # [B,2,h/2,w/2]
    present: torch.Tensor | None = None


class SideInputs(NamedTuple):
    """The side stream's inputs to the upsampler, from :meth:`SpatiallyVaryingUpsampler.side_inputs`
    (each ``None`` where the model has no side stream, or no enhancement residual); the
    shapes are the mixture form's, :class:`FoldedUpsampler`'s are on its grid."""

    t: torch.Tensor | None  # the side features' term of the first convolution [B, width or C_s, h, w]
    r_y: torch.Tensor | None  # the residual on luma's phases [B, s^2, h, w]
    r_uv: torch.Tensor | None  # on chroma's [B, 2 P_c, h, w] (own chroma) or [B, 2 s^2, h, w]


def chroma_phases(scale: int) -> int:
    """Output phases per base luma pixel of each chroma plane (4:2:0 at ``scale``; at scale
    1 chroma is mixed on luma's grid and averaged over 2x2 blocks)."""
    return max(1, (scale // 2) ** 2)


def new_mixture(width: int, num_filters: int, start: torch.Tensor) -> tuple[nn.Conv2d, nn.Parameter]:
    """A weight head from ``width`` features (zero: every pixel takes filter 0) and ``K``
    filters of ``P`` phases ``[K, P, ...]`` that start as ``start`` ``[P, ...]`` (the others perturbed)."""
    head = nn.Conv2d(width, num_filters * start.shape[0], 1)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return head, new_filters(num_filters, start)


def new_filters(num_filters: int, start: torch.Tensor) -> nn.Parameter:
    """``K`` filters ``[K, P, ...]`` that start as ``start`` ``[P, ...]`` (all but the first perturbed)."""
    filters = start.unsqueeze(0).repeat(num_filters, *(1,) * start.dim())
    filters[1:] += 0.02 * torch.randn_like(filters[1:])
    return nn.Parameter(filters)


def group_sum(num_filters: int, outputs: int) -> torch.Tensor:
    """The 1x1 kernel ``[N, N K, 1, 1]`` of zeros and ones that sums each run of K channels."""
    groups = torch.arange(outputs * num_filters) // num_filters
    return (groups[None] == torch.arange(outputs)[:, None]).float()[..., None, None]


def register_sums(module: nn.Module, prefix: str, num_filters: int, channels: int, phases: int) -> None:
    """The fixed index and weights of a 4-D mixture of ``channels`` channels (see
    :func:`mixture_weights` and :func:`in_strips`), as buffers of ``module``."""
    k = num_filters
    order = torch.arange(k * phases).view(k, phases).t().reshape(-1)
    module.register_buffer(prefix + "head_order", order, persistent=False)
    module.register_buffer(prefix + "filter_sum", group_sum(k, channels * phases), persistent=False)
    offset = F.one_hot(torch.zeros(phases, dtype=torch.long), k).t().reshape(-1).float()  # filter 0, row (k, p)
    module.register_buffer(prefix + "weight_offset", offset, persistent=False)


def residual_body(z: torch.Tensor, body: nn.ModuleList, biases: torch.Tensor | None = None) -> torch.Tensor:
    """The feature network after its first convolution: ``f = lrelu(z)``, then
    ``f + lrelu(conv(f))`` for each convolution of ``body``; ``biases`` ``[B, len(body),
    C, 1, 1]``: added to each convolution's output (:class:`LevelBias`)."""
    f = F.leaky_relu(z, 0.1)
    for i, conv in enumerate(body):
        f = f + F.leaky_relu(conv(f) if biases is None else conv(f) + biases[:, i], 0.1)
    return f


class LevelBias(nn.Module):
    """Per-channel biases of a feature network's ``layers`` convolutions as a function of
    the base layer's quantiser ``level`` (the QP on H.264's 8-bit scale, which the file
    header carries): a small MLP of ``(level - 32) / 6``, its last layer zero at the start
    (so an untrained one adds nothing). One model then filters a QP 22 frame, nearly
    clean, and a QP 42 one, blocky, each as it needs; blind to the level it can only
    average the two."""

    def __init__(self, width: int, layers: int, hidden: int = 16) -> None:
        super().__init__()
        self.width, self.layers = width, layers
        self.hidden = nn.Linear(1, hidden)
        self.out = nn.Linear(hidden, width * layers)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, level: torch.Tensor) -> torch.Tensor:
        """``level``: a number or ``[B]`` -> biases ``[B or 1, layers, width, 1, 1]``."""
        q = ((level.float() - 32.0) / 6.0).reshape(-1, 1)
        return self.out(F.leaky_relu(self.hidden(q), 0.1)).view(-1, self.layers, self.width, 1, 1)


def mixture_weights(f: torch.Tensor, head: nn.Conv2d, order: torch.Tensor, offset: torch.Tensor,
                    channels: int) -> torch.Tensor:
    """Filter weights for every output pixel, in low-resolution layout, repeated for the
    ``channels`` channels a mixture serves: ``[B, C P K, h, w]``, channel ``(c P + p) K + k``
    for channel ``c``, phase ``p`` and filter ``k`` (the order of the candidates)."""
    # The head's rows, stored (k, p), are read in (p, k) order and repeated per channel:
    # the mixture then stays a 4-D, per-channel product (no 6-D views, which cost a
    # layout change each in a compiled graph). The offset rides in the bias.
    weight = head.weight[order].repeat(channels, 1, 1, 1)
    return F.conv2d(f.contiguous(), weight, (head.bias + offset)[order].repeat(channels))


def per_channel_kernel(filters: torch.Tensor, channels: int) -> torch.Tensor:
    """Filters ``[K, P, t, t]``, applied to each of ``channels`` channels on its own, as a
    grouped convolution's kernel ``[C P K, 1, t, t]`` (rows in the order of :func:`mixture_weights`)."""
    taps = filters.shape[-1]
    return filters.transpose(0, 1).reshape(-1, 1, taps, taps).repeat(channels, 1, 1, 1)


def replicate_pad(x: torch.Tensor, taps: int) -> torch.Tensor:
    """``x`` padded for a ``taps x taps`` convolution that keeps its size, edges replicated."""
    return F.pad(x, [taps // 2] * 4, mode="replicate")


def in_strips(x_padded: torch.Tensor, weights: torch.Tensor, kernel: torch.Tensor, filter_sum: torch.Tensor,
              groups: int, rows: int | None) -> torch.Tensor:
    """``sum_k w_k c_k`` of the candidates ``c = conv(x_padded, kernel, groups)`` (every
    filter's output, in the order of ``weights`` ``[B, N K, h, w]``; ``x_padded`` padded for
    the kernel) for every output channel ``[B, N, h, w]``: a 1x1 convolution of zeros and
    ones sums each group of K. Formed in strips of ``rows`` rows, so that a strip's
    candidates stay in cache (``None``: one strip, the form a compiled graph takes)."""
    pad = kernel.shape[-1] // 2
    x_padded = x_padded.contiguous()

    def mix(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(x, kernel, groups=groups) * w, filter_sum)

    if rows is None:  # no slices: a traced graph keeps its sizes free
        return mix(x_padded, weights)
    h = weights.shape[-2]
    return torch.cat([mix(x_padded[:, :, top : min(h, top + rows) + 2 * pad], weights[:, :, top : min(h, top + rows)])
                      for top in range(0, h, rows)], dim=-2)


class SpatiallyVaryingUpsampler(nn.Module):
    """See the module docstring. ``chroma``: ``"luma"`` mixes chroma with luma's weights
    and filters at luma's phases, then averages each 2x2 output block; ``"own"`` gives
    chroma its own weights (shared by Cb and Cr) and filters, at chroma's own output
    phases (:func:`chroma_phases`): at scale 2 a quarter of chroma's mixture channels, half
    of the whole mixture's."""

    def __init__(
        self,
        scale: int,
        side_channels: int,
        width: int = 24,
        depth: int = 3,
        num_filters: int = 8,
        taps: int = 5,
        residual: bool = False,
        chroma: str = "luma",
    ) -> None:
        super().__init__()
        if chroma not in CHROMA_MODES:
            raise ValueError(f"chroma must be one of {CHROMA_MODES}, got {chroma!r}")
        self.scale = scale
        self.num_filters = num_filters
        self.taps = taps
        self.phases = scale * scale
        self.own_chroma = chroma == "own"
        self.luma_channels = 1 if self.own_chroma else CHANNELS  # the channels luma's mixture serves
        self.normalize = Normalize()
        # Own chroma: the side features' part of the first convolution is its own (no
        # bias), so the decoder computes it once per side packet (:meth:`side_inputs`).
        self.conv_in = conv3x3(3 if self.own_chroma and side_channels else 3 + side_channels, width)
        self.conv_side = nn.Conv2d(side_channels, width, 3, padding=1, bias=False) if self.own_chroma and side_channels else None
        self.body = nn.ModuleList(conv3x3(width, width) for _ in range(depth))
        bicubic = bicubic_polyphase(scale, taps)
        self.head, self.filters = new_mixture(width, num_filters, bicubic)
        register_sums(self, "", num_filters, self.luma_channels, self.phases)
        # Optional additive detail per output pixel, predicted from the same features:
        # channel c*s*s + phase, as pixel_shuffle reads it (chroma at its own phases if own).
        self.detail_channels = self.phases + 2 * chroma_phases(scale) if self.own_chroma else CHANNELS * self.phases
        self.detail = nn.Conv2d(width, self.detail_channels, 1) if residual else None
        if self.detail is not None:
            nn.init.zeros_(self.detail.weight)
            nn.init.zeros_(self.detail.bias)
        average = chroma_average(scale) if scale > 1 else None
        self.register_buffer("chroma_average", average, persistent=False)
        if self.own_chroma:
            # Filter 0 starts as what "luma" mode does untrained: bicubic phases averaged.
            start = bicubic if average is None else torch.einsum("qp,pyx->qyx", average[: chroma_phases(scale), :, 0, 0], bicubic)
            self.chroma_head, self.chroma_filters = new_mixture(width, num_filters, start)
            register_sums(self, "chroma_", num_filters, 2, chroma_phases(scale))

    def side_size(self, lr_height: int, lr_width: int) -> tuple[int, int]:
        """The grid of :meth:`side_inputs` for a base layer of ``lr_height x lr_width``: the
        base layer's own."""
        return lr_height, lr_width

    def side_inputs(self, s: torch.Tensor | None, r_y: torch.Tensor | None = None,
                    r_uv: torch.Tensor | None = None) -> SideInputs:
        """What :meth:`forward` takes of the side features ``s`` ``[B,C_s,h,w]`` and the
        enhancement residual's luma and chroma phases ``r_y`` ``[B,s^2,h,w]``, ``r_uv``
        ``[B,2 s^2,h,w]`` (pixel-shuffle layout): the side term of the first convolution
        (``s`` itself in luma mode), and the residual (chroma's averaged to chroma's own
        phases with own chroma). Computed once per side packet: a decoder reuses it for
        every frame that repeats it."""
        t = s if s is None or self.conv_side is None else self.conv_side(s)
        if r_uv is not None and self.own_chroma and self.chroma_average is not None:
            r_uv = F.conv2d(r_uv, self.chroma_average, groups=2)
        return SideInputs(t, r_y, r_uv)

    def features(self, x_lr_hat: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
        z = self.normalize(x_lr_hat)
        if t is None:
            z = self.conv_in(z)
        elif self.conv_side is None:
            z = self.conv_in(torch.cat([z, t], dim=1))
        else:
            z = self.conv_in(z) + t
        return residual_body(z, self.body)

    def _mixture(self, x: torch.Tensor, f: torch.Tensor, rows: int | None, chroma: bool) -> torch.Tensor:
        """Luma's mixture (``chroma`` False: of channel 0 with own chroma, else of all three)
        or chroma's own of the base planes ``x`` ``[B, C, h, w]`` with the weights from
        features ``f``: ``[B, C P, h, w]``."""
        if chroma:
            filters, filter_sum = self.chroma_filters, self.chroma_filter_sum
            weights = mixture_weights(f, self.chroma_head, self.chroma_head_order, self.chroma_weight_offset, 2)
        else:
            filters, filter_sum = self.filters, self.filter_sum
            weights = mixture_weights(f, self.head, self.head_order, self.weight_offset, self.luma_channels)
        return in_strips(replicate_pad(x, self.taps), weights, per_channel_kernel(filters, x.shape[1]), filter_sum,
                         x.shape[1], rows)

    def forward(self, y_lr_hat: torch.Tensor, uv_lr_hat: torch.Tensor, t: torch.Tensor | None = None,
                r_y: torch.Tensor | None = None, r_uv: torch.Tensor | None = None,
                rows: int | None = 32) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoded base planes ``y_lr_hat`` ``[B,1,h,w]`` and ``uv_lr_hat`` ``[B,2,h/2,w/2]``
        (unit scale) and the :class:`SideInputs` ``t, r_y, r_uv`` of :meth:`side_inputs`
        (``None`` without a side stream or residual) -> 4:2:0 planes ``y_hat``
        ``[B,1,sh,sw]`` and ``uv_hat`` ``[B,2,sh/2,sw/2]``. The networks see chroma on
        luma's grid (:func:`~dualcodec.nets.common.to_444`).

        The mixture is formed at low resolution, phase by phase, in strips of ``rows``
        rows (the candidates of a strip stay in cache; ``None``: one strip, the form a
        compiled graph takes). Luma's phases are pixel-shuffled to their output
        positions; chroma's are its own (own chroma) or averaged over each 2x2 output
        block still in phase layout (:func:`~dualcodec.nets.common.from_444` without
        forming full-resolution chroma). Detail and residual are added in phase layout.
        """
        x = to_444(y_lr_hat, uv_lr_hat)
        f = self.features(x, t)
        if self.own_chroma:
            y_mix = self._mixture(y_lr_hat, f, rows, chroma=False)
            uv_mix = self._mixture(x[:, 1:], f, rows, chroma=True)
        else:
            mixed = self._mixture(x, f, rows, chroma=False)
            y_mix, uv_mix = mixed[:, : self.phases], mixed[:, self.phases :]
        if self.detail is not None:  # two convolutions, no split of a tensor
            y_detail, uv_detail = conv_parts(self.detail, f, [self.phases, self.detail_channels - self.phases])
            y_mix, uv_mix = y_mix + y_detail, uv_mix + uv_detail
        if r_y is not None:
            y_mix, uv_mix = y_mix + r_y, uv_mix + r_uv
        y_hat = F.pixel_shuffle(y_mix, self.scale)
        if self.scale == 1:
            return y_hat, F.avg_pool2d(uv_mix, 2)
        if not self.own_chroma:
            uv_mix = F.conv2d(uv_mix, self.chroma_average, groups=2)
        return y_hat, F.pixel_shuffle(uv_mix, self.scale // 2)


def folded_bicubic(scale: int) -> torch.Tensor:
    """Bicubic upsampling by ``scale`` on the folded grid of :class:`FoldedUpsampler`: the
    ``(2 scale)**2`` output phases of each 2x2 block of base pixels from the four
    ``pixel_unshuffle`` channels of that block and its eight neighbours, ``[(2s)^2, 4, 3, 3]``
    (bicubic's four taps reach at most two base pixels past the block: one folded pixel)."""
    size = 16  # base pixels of the impulse images; the block read out starts at (8, 8)
    impulses = torch.zeros(36, 1, size, size)
    for n in range(36):
        a, b, dy, dx = n // 18, n // 9 % 2, n // 3 % 3, n % 3
        impulses[n, 0, 8 + 2 * (dy - 1) + a, 8 + 2 * (dx - 1) + b] = 1.0
    up = F.interpolate(impulses, scale_factor=float(scale), mode="bicubic", align_corners=False)
    block = up[:, 0, 8 * scale : 10 * scale, 8 * scale : 10 * scale].reshape(2, 2, 3, 3, -1)  # a, b, dy, dx, phase
    return block.permute(4, 0, 1, 2, 3).reshape(-1, 4, 3, 3).contiguous()


class FoldedUpsampler(nn.Module):
    """The spatially varying upsampler on the 4:2:0 planes' common grid: every base luma
    2x2 block folded into four channels beside the block's chroma pair, so the network runs
    on a quarter of the base layer's pixels with no 4:4:4 conversion, and writes each
    block's ``(2s)^2`` output luma pixels and ``s^2`` pixels of each chroma plane::

        [u2(y_lr_hat), uv_lr_hat] --Normalize--conv3x3 (+ t)--(conv3x3 + residual) x depth = f
        luma:   m_Y  = sum_k w_k(f) * (F_k conv u2(y_lr_hat))   F_k: [(2s)^2, 4, 3, 3]
        chroma: m_UV = sum_k v_k(f) * (G_k conv uv_lr_hat)      G_k: [s^2, t, t], per plane
        (+ 1x1 detail of f, + the side stream's residual r), then depth_to_space by 2s and s

    ``u2`` is ``pixel_unshuffle`` by 2. The per-pixel weights ``w``, ``v`` come from 1x1
    heads of the features, as in :class:`SpatiallyVaryingUpsampler` (own chroma); filter 0
    starts as bicubic (:func:`folded_bicubic`), and an untrained upsampler is bicubic
    upsampling. Same arguments, methods and outputs as that class; chroma always has its
    own mixture, and ``taps`` are chroma's.

    **Temporal** (``temporal``): the frames of a GOP help each other, recurrently, as
    BasicVSR propagates its features, here through the previous frame's output ``p``
    (its :class:`Memory`), aligned by motion ``v`` estimated at low resolution, as FRVSR
    does (a small network of both base frames on the folded grid, :meth:`motion`, in base
    pixels; ``W_v`` warps a plane by ``v``, bilinear)::

        v  = motion(u2(y_lr_hat), uv_lr_hat, u2(y_lr_prev), uv_lr_prev)
        z += present * conv1x1([x_lr_hat - W_v(x_lr_prev), u(W_v(p))])     (folded, normalised)
        m  += present * g(f) * (u(W_v(p)) - m)        per output phase; g a 1x1 head of f

    With ``temporal_width`` the 1x1 ``conv1x1`` reads a branch of ``temporal_depth`` 3x3
    convolutions of the base, the change and ``u(W_v(p))`` instead (more room to fuse the
    previous frame's detail). What still changed after alignment tells the network where the previous frame cannot
    be trusted; ``g`` blends each output pixel towards the aligned previous output. ``v``,
    ``conv1x1`` and ``g`` start at zero, so an untrained temporal part leaves the
    per-frame upsampler exactly as it was (a per-frame model's weights start one).
    :meth:`alignment_error` is FRVSR's loss on the motion: the previous base frame warped
    onto the current one. Nothing reaches back past a GOP's first frame, whose memory is
    absent: every GOP decodes on its own."""

    own_chroma = True

    def __init__(self, scale: int, side_channels: int, width: int = 32, depth: int = 2,
                 num_filters: int = 4, taps: int = 5, residual: bool = True, level_input: bool = False,
                 temporal: bool = False, temporal_width: int = 0, temporal_depth: int = 2,
                 ahead: bool = False) -> None:
        super().__init__()
        self.scale = scale
        self.num_filters = num_filters
        # the quantiser's biases of the first convolution and of each residual block's
        self.level_bias = LevelBias(width, depth + 1) if level_input else None
        self.taps = taps
        self.phases = (2 * scale) ** 2  # luma outputs per folded pixel
        self.chroma_phases = scale * scale  # each chroma plane's
        self.normalize = Normalize(2, chroma_fold=1)
        self.conv_in = conv3x3(6, width)
        # The side features' part of the first convolution, once per side packet (:meth:`side_inputs`).
        self.conv_side = nn.Conv2d(4 * side_channels, width, 3, padding=1, bias=False) if side_channels else None
        self.body = nn.ModuleList(conv3x3(width, width) for _ in range(depth))
        # Luma's filters [K, P 4, 3, 3] (4-D, as a module's parameters may be), read as [K, P, 4, 3, 3].
        self.head, self.filters = self._new_mixture(width, folded_bicubic(scale).flatten(0, 1), 1, self.phases)
        self.chroma_head, self.chroma_filters = self._new_mixture(width, bicubic_polyphase(scale, taps), 2,
                                                                  self.chroma_phases)
        self.register_buffer("filter_sum", group_sum(num_filters, self.phases), persistent=False)
        self.register_buffer("chroma_filter_sum", group_sum(num_filters, 2 * self.chroma_phases), persistent=False)
        self.detail_channels = self.phases + 2 * self.chroma_phases
        self.detail = nn.Conv2d(width, self.detail_channels, 1) if residual else None
        if self.detail is not None:
            nn.init.zeros_(self.detail.weight)
            nn.init.zeros_(self.detail.bias)
        self.memory_in = self.memory_gate = None
        if temporal:  # base change (4 + 2) and the previous output's phases, in; a blend weight per phase, out
            self.memory_normalize = Normalize(2 * scale, chroma_fold=scale)
            self.memory_motion = _motion_network()
            memory_channels = 6 + self.detail_channels
            self.memory_branch = None
            if temporal_width:  # the wide form: 3x3 convolutions of [base, change, previous output] first
                layers = [conv3x3(6 + memory_channels, temporal_width), nn.LeakyReLU(0.1)]
                for _ in range(temporal_depth - 1):
                    layers += [conv3x3(temporal_width, temporal_width), nn.LeakyReLU(0.1)]
                self.memory_branch = nn.Sequential(*layers)
                memory_channels = temporal_width
            self.memory_in = nn.Conv2d(memory_channels, width, 1)
            self.memory_gate = nn.Conv2d(width, self.detail_channels, 1)
            for conv in (self.memory_in, self.memory_gate):
                nn.init.zeros_(conv.weight)
                nn.init.zeros_(conv.bias)
        self.memory_ahead_motion = self.memory_ahead_in = None
        if temporal and ahead:  # the next base frame, aligned by motion of its own, into the features
            self.memory_ahead_motion = _motion_network()
            self.memory_ahead_in = nn.Conv2d(12, width, 1)
            nn.init.zeros_(self.memory_ahead_in.weight)
            nn.init.zeros_(self.memory_ahead_in.bias)

    @property
    def temporal(self) -> bool:
        return self.memory_in is not None

    @property
    def ahead(self) -> bool:
        """Whether the upsampler also reads the next frame's base (:class:`Ahead`)."""
        return self.memory_ahead_in is not None

    def motion(self, y_lr_hat: torch.Tensor, uv_lr_hat: torch.Tensor, memory: Memory | Ahead,
               network: nn.Module | None = None) -> torch.Tensor:
        """Motion ``[B,2,h/2,w/2]`` (x, y; in base luma pixels) on the folded grid from the
        other frame (``memory``'s, or the next one's) to this one: where each folded pixel was."""
        now = self.normalize(torch.cat([F.pixel_unshuffle(y_lr_hat, 2), uv_lr_hat], dim=1))
        other = self.normalize(torch.cat([F.pixel_unshuffle(memory.y_lr_hat, 2), memory.uv_lr_hat], dim=1))
        return (network or self.memory_motion)(torch.cat([now, other], dim=1))

    def alignment_error(self, y_lr_hat: torch.Tensor, uv_lr_hat: torch.Tensor, memory: Memory) -> torch.Tensor:
        """Mean absolute error of the previous base luma warped by :meth:`motion` onto this
        frame's (FRVSR's motion loss), per item ``[B]``."""
        warped = warp(memory.y_lr_hat, self.motion(y_lr_hat, uv_lr_hat, memory))
        return (warped - y_lr_hat).abs().mean(dim=(1, 2, 3))

    def _new_mixture(self, width: int, start: torch.Tensor, channels: int, phases: int) -> tuple[nn.Conv2d, nn.Parameter]:
        """Filters as :func:`new_mixture`, and a weight head whose rows are the candidates'
        order, ``(c P + p) K + k``, one set per channel (no reordering, no repeat: a plain
        1x1 convolution, which int8 can run); its bias starts every pixel on filter 0."""
        head = nn.Conv2d(width, channels * phases * self.num_filters, 1)
        nn.init.zeros_(head.weight)
        with torch.no_grad():
            head.bias.copy_((torch.arange(head.out_channels) % self.num_filters == 0).float())
        return head, new_filters(self.num_filters, start)

    def side_size(self, lr_height: int, lr_width: int) -> tuple[int, int]:
        """The grid of :meth:`side_inputs` for a base layer of ``lr_height x lr_width`` (even):
        the folded grid, half of it each way."""
        return lr_height // 2, lr_width // 2

    def side_inputs(self, s: torch.Tensor | None, r_y: torch.Tensor | None = None,
                    r_uv: torch.Tensor | None = None) -> SideInputs:
        """:meth:`SpatiallyVaryingUpsampler.side_inputs` (same inputs, on the base layer's
        grid of even size) on the folded grid: the side term of the first convolution, the
        residual's luma at the ``(2s)^2`` phases of each folded pixel and chroma's averaged
        over each 2x2 output block, at its ``s^2``."""
        t = None if s is None else self.conv_side(F.pixel_unshuffle(s, 2))
        if r_y is not None:
            r_y = F.pixel_unshuffle(F.pixel_shuffle(r_y, self.scale), 2 * self.scale)
            r_uv = F.pixel_unshuffle(F.avg_pool2d(F.pixel_shuffle(r_uv, self.scale), 2), self.scale)
        return SideInputs(t, r_y, r_uv)

    def forward(self, y_lr_hat: torch.Tensor, uv_lr_hat: torch.Tensor, t: torch.Tensor | None = None,
                r_y: torch.Tensor | None = None, r_uv: torch.Tensor | None = None,
                rows: int | None = 16, level: torch.Tensor | None = None,
                memory: Memory | None = None, ahead: Ahead | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoded base planes ``y_lr_hat`` ``[B,1,h,w]``, ``uv_lr_hat`` ``[B,2,h/2,w/2]`` (unit
        scale, ``h``, ``w`` even) and the :class:`SideInputs` of :meth:`side_inputs` -> 4:2:0
        planes ``y_hat`` ``[B,1,sh,sw]``, ``uv_hat`` ``[B,2,sh/2,sw/2]``; ``rows``: strips of
        the folded grid (see :func:`in_strips`); ``level``: the base layer's quantiser (a
        number or ``[B]``), which a level-input upsampler needs (:class:`LevelBias`);
        ``memory``: the previous frame's, for a temporal upsampler (``None``: a GOP's first
        frame, or a per-frame upsampler)."""
        y_folded = F.pixel_unshuffle(y_lr_hat, 2)
        x_folded = self.normalize(torch.cat([y_folded, uv_lr_hat], dim=1))
        z = self.conv_in(x_folded)
        previous = None
        if memory is not None and self.temporal:
            v = self.motion(y_lr_hat, uv_lr_hat, memory)
            previous = (F.pixel_unshuffle(warp(memory.y_hat, v), 2 * self.scale),
                        F.pixel_unshuffle(warp(memory.uv_hat, v), self.scale))
            change = torch.cat([y_folded - F.pixel_unshuffle(warp(memory.y_lr_hat, v), 2),
                                uv_lr_hat - warp(memory.uv_lr_hat, v)], dim=1)
            z_memory = torch.cat([change / self.normalize.std, self.memory_normalize(torch.cat(previous, dim=1))], dim=1)
            if self.memory_branch is not None:
                z_memory = self.memory_branch(torch.cat([x_folded, z_memory], dim=1))
            z_memory = self.memory_in(z_memory)
            z = z + (z_memory if memory.present is None else memory.present * z_memory)
        if ahead is not None and self.ahead:
            v_ahead = self.motion(y_lr_hat, uv_lr_hat, ahead, self.memory_ahead_motion)
            aligned = self.normalize(torch.cat([F.pixel_unshuffle(warp(ahead.y_lr_hat, v_ahead), 2),
                                                warp(ahead.uv_lr_hat, v_ahead)], dim=1))
            z_ahead = self.memory_ahead_in(torch.cat([x_folded - aligned, aligned], dim=1))
            z = z + (z_ahead if ahead.present is None else ahead.present * z_ahead)
        biases = None
        if self.level_bias is not None:
            if level is None:
                raise ValueError("this upsampler takes the base layer's quantiser level")
            biases = self.level_bias(level)
            z = z + biases[:, 0]
        f = residual_body(z if t is None else z + t, self.body, None if biases is None else biases[:, 1:])
        kernel = self.filters.view(self.num_filters, self.phases, 4, 3, 3).transpose(0, 1).reshape(-1, 4, 3, 3)  # rows (p, k)
        # padded by a base pixel pair, edges replicated as in the base layer (not pairs repeated)
        y_padded = F.pixel_unshuffle(F.pad(y_lr_hat, [2] * 4, mode="replicate"), 2)
        y_mix = in_strips(y_padded, self.head(f), kernel, self.filter_sum, 1, rows)
        uv_mix = in_strips(replicate_pad(uv_lr_hat, self.taps), self.chroma_head(f), per_channel_kernel(self.chroma_filters, 2),
                           self.chroma_filter_sum, 2, rows)
        if self.detail is not None:
            y_detail, uv_detail = conv_parts(self.detail, f, [self.phases, 2 * self.chroma_phases])
            y_mix, uv_mix = y_mix + y_detail, uv_mix + uv_detail
        if r_y is not None:
            y_mix, uv_mix = y_mix + r_y, uv_mix + r_uv
        if previous is not None:
            y_gate, uv_gate = conv_parts(self.memory_gate, f, [self.phases, 2 * self.chroma_phases])
            if memory.present is not None:
                y_gate, uv_gate = memory.present * y_gate, memory.present * uv_gate
            y_mix = y_mix + y_gate * (previous[0] - y_mix)
            uv_mix = uv_mix + uv_gate * (previous[1] - uv_mix)
        return F.pixel_shuffle(y_mix, 2 * self.scale), F.pixel_shuffle(uv_mix, self.scale)
