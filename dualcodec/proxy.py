"""The base codec inside the training loop.

Forward: the *real* encoder and decoder (x264 / x265 / SVT-AV1 through PyAV) code each
training crop's planes as an intra picture (8-bit code values, rounded and clamped as
the encoder's input is), or each clip of ``clip`` crops as a short video: its first frame
a key frame, the others predicted (P- and B-frames), as in a file. Backward: a
straight-through gradient (rounding, clamping and the codec's quantisation pass the
gradient unchanged).

Rate: a rho-domain estimate (He and Mitra 2001), the sum of ``log2(1 + |c| / q)`` over
8x8 DCT coefficients ``c`` of the Y, U and V planes with the H.264 quantiser step
``q = 2 ** ((QP - 4) / 6)``, rescaled per batch by the stop-gradient factor
``real_bits / estimate``: its value is the real codec's bits, its gradient the estimate's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dualcodec.basecodec import BaseCodecSettings, planes_from_tensors, planes_to_tensors, roundtrip
from dualcodec.model import BaseLayerOutput
from dualcodec.yuv import BT601, planes_to_unit, unit_to_planes


def dct_matrix(n: int = 8) -> torch.Tensor:
    """Orthonormal DCT-II matrix ``[n, n]``."""
    k = torch.arange(n, dtype=torch.float32).unsqueeze(1)
    i = torch.arange(n, dtype=torch.float32).unsqueeze(0)
    m = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    m[0] /= math.sqrt(2.0)
    return m


def block_dct(plane: torch.Tensor, n: int = 8) -> torch.Tensor:
    """``[B,C,H,W]`` to 8x8 block DCT coefficients ``[B, C*L, n, n]`` (edges replicate-padded)."""
    h, w = plane.shape[-2:]
    plane = F.pad(plane, (0, (-w) % n, 0, (-h) % n), mode="replicate")
    b, c = plane.shape[:2]
    blocks = F.unfold(plane, n, stride=n).view(b, c, n, n, -1).permute(0, 1, 4, 2, 3).reshape(b, -1, n, n)
    d = dct_matrix(n).to(plane)
    return d @ blocks @ d.T


def rho_rate_estimate(y: torch.Tensor, uv: torch.Tensor, qp: int) -> torch.Tensor:
    """Differentiable bits estimate per frame ``[B]`` from unrounded code-value planes."""
    q = 2.0 ** ((qp - 4) / 6.0)
    bits = 0.0
    for plane in (y - 128.0, uv - 128.0):
        coeffs = block_dct(plane)
        bits = bits + torch.log2(1.0 + coeffs.abs() / q).sum(dim=(1, 2, 3))
    return bits


class RealCodecLayer:
    """Callable base layer for :meth:`DualLayerModel.forward` (see module docstring)."""

    def __init__(self, codec: str, preset: str, qp: int, clip: int = 1) -> None:
        """``clip``: the batch holds clips of that many consecutive frames, coded as videos."""
        # The training crops' format (dualcodec.data.TRAINING_FORMAT): 8-bit limited range BT.601.
        self.settings = BaseCodecSettings(codec=codec, qp=qp, preset=preset, matrix=BT601)
        self.clip = clip

    def __call__(self, y_lr: torch.Tensor, uv_lr: torch.Tensor) -> BaseLayerOutput:
        fmt = self.settings.yuv_format
        y, uv = unit_to_planes(y_lr.float(), uv_lr.float(), fmt)
        frames = planes_from_tensors(y, uv, fmt)
        if self.clip == 1:
            decoded, sizes = roundtrip(self.settings, frames)
        else:
            decoded, sizes = [], []
            for start in range(0, len(frames), self.clip):
                clip_decoded, clip_sizes = roundtrip(self.settings, frames[start : start + self.clip], intra=False)
                decoded += clip_decoded
                sizes += clip_sizes
        y_real, uv_real = (t.to(y_lr.device) for t in planes_to_unit(*planes_to_tensors(decoded), fmt))
        real_bits = 8.0 * torch.tensor(sizes, dtype=torch.float32, device=y_lr.device)
        estimate = rho_rate_estimate(y, uv, self.settings.qp)
        bits = estimate * (real_bits.sum() / estimate.sum().clamp_min(1e-6)).detach()
        # Straight through: the value is the real decoded planes, the gradient the identity.
        y_lr_hat = y_lr + (y_real - y_lr).detach()
        uv_lr_hat = uv_lr + (uv_real - uv_lr).detach()
        return BaseLayerOutput(y_lr_hat.to(y_lr.dtype), uv_lr_hat.to(uv_lr.dtype), bits)
