"""Small pieces shared by the networks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Normalize(nn.Module):
    """Centre and scale Y, Cb, Cr on the unit scale of :func:`dualcodec.yuv.planes_to_unit`
    (the per-channel statistics of natural images); ``fold``: the channels are those of a
    ``pixel_unshuffle`` by ``fold`` (each of Y, Cb, Cr ``fold**2`` times, in turn), chroma's
    by ``chroma_fold`` where given (4:2:0 planes folded to one grid: ``fold=2, chroma_fold=1``).

    Every network starts with this, so callers hand over plain plane values.
    """

    def __init__(self, fold: int = 1, chroma_fold: int | None = None) -> None:
        super().__init__()
        chroma_fold = fold if chroma_fold is None else chroma_fold
        counts = torch.tensor([fold * fold, chroma_fold * chroma_fold, chroma_fold * chroma_fold])
        mean, std = torch.tensor([0.45, 0.5, 0.5]), torch.tensor([0.26, 0.07, 0.07])
        self.register_buffer("mean", mean.repeat_interleave(counts).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std.repeat_interleave(counts).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Replicate-pad the bottom and right edges so H and W divide by ``multiple``."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, pw, 0, ph), mode="replicate")


def bicubic_down(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Antialiased bicubic downsampling by an integer factor (the baseline's downsampler)."""
    return F.interpolate(x, scale_factor=1.0 / scale, mode="bicubic", antialias=True, align_corners=False)


def bicubic_up(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic upsampling by an integer factor (the baseline's upsampler)."""
    return F.interpolate(x, scale_factor=float(scale), mode="bicubic", align_corners=False)


def bicubic_polyphase(scale: int, taps: int) -> torch.Tensor:
    """Bicubic upsampling written as ``scale**2`` polyphase filters, ``[scale**2, taps, taps]``."""
    size = taps + 8
    centre = size // 2
    half = taps // 2
    impulses = torch.zeros(taps * taps, 1, size, size)
    for k in range(taps * taps):
        dy, dx = divmod(k, taps)
        impulses[k, 0, centre + dy - half, centre + dx - half] = 1.0
    up = F.interpolate(impulses, scale_factor=float(scale), mode="bicubic", align_corners=False)
    phases = up[:, 0, centre * scale : centre * scale + scale, centre * scale : centre * scale + scale]
    return phases.reshape(taps, taps, scale * scale).permute(2, 0, 1).contiguous()


def polyphase_folded(x: torch.Tensor, phases: torch.Tensor) -> torch.Tensor:
    """:func:`polyphase_up` before its pixel shuffle: the upsampled ``x`` folded by
    ``pixel_unshuffle``, ``[B, C scale**2, h, w]`` (channel ``c scale**2 + k``: phase ``k``
    of channel ``c``). A grouped convolution."""
    channels, taps = x.shape[1], phases.shape[-1]
    kernel = phases.to(x).unsqueeze(1).repeat(channels, 1, 1, 1)
    return F.conv2d(F.pad(x, [taps // 2] * 4, mode="replicate"), kernel, groups=channels)


def polyphase_up(x: torch.Tensor, phases: torch.Tensor, scale: int) -> torch.Tensor:
    """Upsample every channel of ``x`` by ``scale`` with polyphase filters ``phases``
    ``[scale**2, t, t]`` (odd ``t``, centred; edges replicated): a grouped convolution and
    a pixel shuffle, which a compiled graph runs far faster than an Interpolate node."""
    return F.pixel_shuffle(polyphase_folded(x, phases), scale)


def bicubic_up_folded(x: torch.Tensor, scale: int, taps: int = 5) -> torch.Tensor:
    """``pixel_unshuffle(bicubic_up(x, scale), scale)`` (to float rounding), with no
    shuffle either way (:func:`polyphase_folded`)."""
    return polyphase_folded(x, bicubic_polyphase(scale, taps))


def _bilinear_x2_kernel() -> torch.Tensor:
    """Bilinear x2 (centre siting) as 4 polyphase 3x3 filters, ``[4, 3, 3]``: output
    ``2i`` takes ``(x[i-1] + 3 x[i]) / 4``, output ``2i+1`` takes ``(3 x[i] + x[i+1]) / 4``."""
    taps = torch.tensor([[0.25, 0.75, 0.0], [0.0, 0.75, 0.25]])
    return torch.einsum("ay,bx->abyx", taps, taps).reshape(4, 3, 3)


def to_444(y: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """4:2:0 planes ``[B,1,H,W]``, ``[B,2,H/2,W/2]`` (``H``, ``W`` even) to ``[B,3,H,W]``: chroma upsampled
    bilinearly (centre siting, edges replicated: ``F.interpolate``'s bilinear, to float
    rounding), for networks that see the three channels together. Written as a polyphase
    convolution (:func:`polyphase_up`)."""
    uv_up = polyphase_up(uv, _bilinear_x2_kernel(), 2)
    return torch.cat([y, uv_up[..., : y.shape[-2], : y.shape[-1]]], dim=1)


def to_444_folded(y: torch.Tensor, uv: torch.Tensor, scale: int) -> torch.Tensor:
    """``pixel_unshuffle(to_444(y, uv), scale)`` (to float rounding) for ``H``, ``W``
    divisible by ``2 scale``, ``[B, 3 scale**2, H/scale, W/scale]``: at scale 2 the chroma
    phases come straight from the polyphase convolution, unshuffled by nothing."""
    phases = polyphase_folded(uv, _bilinear_x2_kernel())
    uv_folded = phases if scale == 2 else F.pixel_unshuffle(F.pixel_shuffle(phases, 2), scale)
    return torch.cat([F.pixel_unshuffle(y, scale), uv_folded], dim=1)


def from_444(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B,3,H,W]`` back to 4:2:0 planes: chroma averaged over each 2x2 block (centre siting)."""
    return x[:, :1], F.avg_pool2d(x[:, 1:], 2)
