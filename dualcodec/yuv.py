"""Y'CbCr 4:2:0 formats, and the few places dualcodec converts colour.

Video is coded in its own planes: the encoder and decoder never convert colour. These
functions serve the edges: training crops (R'G'B' images) become 4:2:0 planes, PNG
output and the RGB metrics (LPIPS) turn planes back into R'G'B', and the networks see
planes normalised by :func:`planes_to_unit` (the format's black, white and grey map to
0, 1 and 0.5 whatever the bit depth and range).

Conventions
-----------
* RGB tensors are float, shape ``[B, 3, H, W]``, values in [0, 1] (non-linear R'G'B').
* Plane tensors hold *code values* (0..255 at 8 bit, 0..1023 at 10 bit) as float:
  ``y`` is ``[B, 1, H, W]``, ``uv`` is ``[B, 2, H/2, W/2]`` (H and W even).
* Matrix: the ITU-T H.273 ``matrix_coefficients`` code point of the format: 1 (BT.709),
  5 or 6 (BT.601) or 9 (BT.2020 non-constant luminance). :func:`matrix_for` gives the
  usual rule for unflagged video (BT.709 from 1280 wide or above 576 lines, else BT.601).
* Range: limited ("tv": Y in 16..235, C in 16..240 at 8 bit) or full ("pc"),
  flagged in the base-layer stream and in the container header.
* Chroma siting: centre (the 2x2 box average when subsampling, bilinear with
  ``align_corners=False`` when upsampling; both agree on sample positions).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

BT709, BT601_625, BT601, BT2020 = 1, 5, 6, 9  # ITU-T H.273 matrix_coefficients
# (Kr, Kb) of each matrix.
LUMA_WEIGHTS = {BT709: (0.2126, 0.0722), BT601_625: (0.299, 0.114), BT601: (0.299, 0.114), BT2020: (0.2627, 0.0593)}
MATRIX_NAMES = {BT709: "bt709", BT601_625: "bt470bg", BT601: "smpte170m", BT2020: "bt2020nc"}


def matrix_for(flagged: int | None, width: int, height: int) -> int:
    """The matrix of a stream flagged ``flagged`` (None or 2: unspecified): players' rule
    for unflagged video is BT.709 for HD (1280 wide or more, or over 576 lines), else BT.601."""
    if flagged in LUMA_WEIGHTS:
        return flagged
    return BT709 if width >= 1280 or height > 576 else BT601


@dataclass(frozen=True)
class YUVFormat:
    """How R'G'B' maps to integer Y'CbCr code values."""

    bit_depth: int = 8
    full_range: bool = False
    matrix: int = BT709

    def __post_init__(self) -> None:
        if self.bit_depth not in (8, 10, 16):
            raise ValueError(f"bit depth must be 8, 10 or 16, got {self.bit_depth}")
        if self.matrix not in LUMA_WEIGHTS:
            raise ValueError(f"colour matrix {self.matrix} (ITU-T H.273) is not supported")

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
    kr, kb = LUMA_WEIGHTS[fmt.matrix]
    luma = torch.tensor([kr, 1.0 - kr - kb, kb], dtype=torch.float64)
    blue = (torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64) - luma) / (2.0 * (1.0 - kb))
    red = (torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64) - luma) / (2.0 * (1.0 - kr))
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


def unit_scale(fmt: YUVFormat) -> tuple[float, float, float, float, float]:
    """``(luma offset, luma range, chroma offset, chroma range, max code)`` of a format: the
    numbers :func:`planes_to_unit` and :func:`unit_to_planes` use (a compiled graph takes
    them as an input, so one graph serves every format)."""
    return (*fmt.luma_offset_range, *fmt.chroma_offset_range, float(fmt.max_code))


def codes_to_unit(y, uv, scale):
    """:func:`planes_to_unit` with the numbers of :func:`unit_scale` (floats or tensors)."""
    y_off, y_rng, c_off, c_rng = scale[0], scale[1], scale[2], scale[3]
    return (y - y_off) / y_rng, (uv - c_off) / c_rng + 0.5


def unit_to_codes(y, uv, scale):
    """:func:`unit_to_planes` with the numbers of :func:`unit_scale` (floats or tensors)."""
    y_off, y_rng, c_off, c_rng = scale[0], scale[1], scale[2], scale[3]
    return y * y_rng + y_off, (uv - 0.5) * c_rng + c_off


def planes_to_unit(y: torch.Tensor, uv: torch.Tensor, fmt: YUVFormat) -> tuple[torch.Tensor, torch.Tensor]:
    """Code values to the networks' scale: luma black 0, white 1; chroma grey 0.5, with the
    nominal range of 1 (values outside the nominal range, e.g. luma 247 at 8 bits limited,
    stay outside it: nothing is clipped)."""
    return codes_to_unit(y, uv, unit_scale(fmt))


def unit_to_planes(y: torch.Tensor, uv: torch.Tensor, fmt: YUVFormat) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`planes_to_unit`: unrounded code values."""
    return unit_to_codes(y, uv, unit_scale(fmt))
