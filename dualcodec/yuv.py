"""RGB <-> Y'CbCr 4:2:0, the one place dualcodec converts colour.

Training (the base-layer proxy), encoding (frames handed to the base codec) and
decoding (frames coming out of it) all call these functions, so the learned
resamplers see exactly the colour conversion and chroma subsampling that the real
base layer applies.

Conventions
-----------
* RGB tensors are float, shape ``[B, 3, H, W]``, values in [0, 1] (non-linear R'G'B').
* Plane tensors hold *code values* (0..255 at 8 bit, 0..1023 at 10 bit) as float:
  ``y`` is ``[B, 1, H, W]``, ``uv`` is ``[B, 2, H/2, W/2]`` (H and W even).
* Matrix: ITU-R BT.709 (Kr = 0.2126, Kb = 0.0722).
* Range: limited ("tv": Y in 16..235, C in 16..240 at 8 bit) or full ("pc"),
  flagged in the base-layer stream and in the container header.
* Chroma siting: centre (the 2x2 box average when subsampling, bilinear with
  ``align_corners=False`` when upsampling; both agree on sample positions).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

KR, KB = 0.2126, 0.0722
KG = 1.0 - KR - KB


@dataclass(frozen=True)
class YUVFormat:
    """How R'G'B' maps to integer Y'CbCr code values."""

    bit_depth: int = 8
    full_range: bool = False

    def __post_init__(self) -> None:
        if self.bit_depth not in (8, 10, 16):
            raise ValueError(f"bit depth must be 8, 10 or 16, got {self.bit_depth}")

    @property
    def max_code(self) -> int:
        return (1 << self.bit_depth) - 1

    @property
    def _scale(self) -> float:
        return float(1 << (self.bit_depth - 8))

    @property
    def luma_offset_range(self) -> tuple[float, float]:
        if self.full_range:
            return 0.0, float(self.max_code)
        return 16.0 * self._scale, 219.0 * self._scale

    @property
    def chroma_offset_range(self) -> tuple[float, float]:
        offset = 128.0 * self._scale
        if self.full_range:
            return offset, float(self.max_code)
        return offset, 224.0 * self._scale

    @property
    def range_name(self) -> str:
        return "pc" if self.full_range else "tv"


def ycbcr_matrix(fmt: YUVFormat) -> tuple[torch.Tensor, torch.Tensor]:
    """``(M, offset)``, float64, with ``ycbcr = M @ rgb + offset`` in code values for R'G'B' in [0, 1]."""
    y_off, y_rng = fmt.luma_offset_range
    c_off, c_rng = fmt.chroma_offset_range
    luma = torch.tensor([KR, KG, KB], dtype=torch.float64)
    blue = (torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64) - luma) / (2.0 * (1.0 - KB))
    red = (torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64) - luma) / (2.0 * (1.0 - KR))
    matrix = torch.stack([y_rng * luma, c_rng * blue, c_rng * red])
    return matrix, torch.tensor([y_off, c_off, c_off], dtype=torch.float64)


def rgb_to_ycbcr(x: torch.Tensor, fmt: YUVFormat) -> torch.Tensor:
    """``[B, 3, H, W]`` R'G'B' in [0, 1] to full-resolution Y'CbCr code values (float)."""
    matrix, offset = ycbcr_matrix(fmt)
    return torch.einsum("ij,bjhw->bihw", matrix.to(x), x) + offset.to(x).view(1, 3, 1, 1)


def ycbcr_to_rgb(ycc: torch.Tensor, fmt: YUVFormat) -> torch.Tensor:
    """Inverse of :func:`rgb_to_ycbcr` (no clamping)."""
    matrix, offset = ycbcr_matrix(fmt)
    inverse = torch.linalg.inv(matrix)
    return torch.einsum("ij,bjhw->bihw", inverse.to(ycc), ycc - offset.to(ycc).view(1, 3, 1, 1))


def rgb_to_yuv420(x: torch.Tensor, fmt: YUVFormat) -> tuple[torch.Tensor, torch.Tensor]:
    """R'G'B' ``[B, 3, H, W]`` (H, W even) to unrounded planes ``(y, uv)``."""
    if x.shape[-1] % 2 or x.shape[-2] % 2:
        raise ValueError(f"4:2:0 needs even width and height, got {tuple(x.shape[-2:])}")
    ycc = rgb_to_ycbcr(x, fmt)
    return ycc[:, :1], F.avg_pool2d(ycc[:, 1:], 2)


def yuv420_to_rgb(y: torch.Tensor, uv: torch.Tensor, fmt: YUVFormat) -> torch.Tensor:
    """Planes (code values) to R'G'B' ``[B, 3, H, W]``, not clamped."""
    uv_full = F.interpolate(uv, size=y.shape[-2:], mode="bilinear", align_corners=False)
    return ycbcr_to_rgb(torch.cat([y, uv_full], dim=1), fmt)


def quantize_planes(
    y: torch.Tensor, uv: torch.Tensor, fmt: YUVFormat
) -> tuple[torch.Tensor, torch.Tensor]:
    """Round and clamp planes to valid integer code values (still float tensors)."""
    return (
        y.round().clamp(0, fmt.max_code),
        uv.round().clamp(0, fmt.max_code),
    )
