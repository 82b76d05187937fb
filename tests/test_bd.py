from __future__ import annotations

import math

import pytest

from semcodec.bench.bd import bd_rate

RATES = [0.1, 0.2, 0.4, 0.8, 1.6]
PSNRS = [27.0, 29.5, 32.0, 34.5, 37.0]


def test_identical_curves_have_zero_bd_rate():
    assert bd_rate(RATES, PSNRS, RATES, PSNRS) == pytest.approx(0.0, abs=1e-9)


def test_uniformly_cheaper_curve():
    cheaper = [r * 0.8 for r in RATES]
    assert bd_rate(RATES, PSNRS, cheaper, PSNRS) == pytest.approx(-20.0, abs=1e-6)
    assert bd_rate(cheaper, PSNRS, RATES, PSNRS) == pytest.approx(25.0, abs=1e-6)


def test_disjoint_quality_ranges_give_nan():
    assert math.isnan(bd_rate(RATES, PSNRS, RATES, [p + 20 for p in PSNRS]))
