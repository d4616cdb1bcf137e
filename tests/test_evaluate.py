"""PSNR and Bjontegaard deltas."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dualcodec.evaluate import bd_psnr, bd_rate, psnr

RATE = np.array([0.1, 0.2, 0.4, 0.8])
PSNR = np.array([28.0, 31.0, 33.5, 35.5])


def test_psnr_known_value_and_identity():
    a = np.zeros((4, 4, 3), np.uint8)
    b = np.full((4, 4, 3), 10, np.uint8)
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 100))
    assert psnr(a, a) == float("inf")


def test_bd_rate_of_a_curve_with_itself_is_zero():
    assert bd_rate(RATE, PSNR, RATE, PSNR) == pytest.approx(0.0, abs=1e-9)
    assert bd_psnr(RATE, PSNR, RATE, PSNR) == pytest.approx(0.0, abs=1e-9)


def test_bd_rate_of_half_the_rate_is_minus_fifty_percent():
    assert bd_rate(RATE, PSNR, RATE / 2, PSNR) == pytest.approx(-50.0, abs=1e-6)
    assert bd_rate(RATE / 2, PSNR, RATE, PSNR) == pytest.approx(100.0, abs=1e-6)


def test_bd_psnr_of_a_shifted_curve_is_the_shift():
    assert bd_psnr(RATE, PSNR, RATE, PSNR + 0.7) == pytest.approx(0.7, abs=1e-9)


def test_bd_rate_ignores_point_order_and_needs_overlap():
    order = [2, 0, 3, 1]
    assert bd_rate(RATE[order], PSNR[order], RATE / 2, PSNR) == pytest.approx(-50.0, abs=1e-6)
    assert math.isnan(bd_rate(RATE, PSNR, RATE, PSNR + 20))
