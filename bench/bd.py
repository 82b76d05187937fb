"""Bjontegaard delta rate (VCEG-M33): the average bitrate change at equal quality.

Standard form: for each curve fit log(rate) as a cubic polynomial of the distortion metric (PSNR),
integrate both fits over the metric interval the curves share, and convert the mean log-rate
difference to a percentage: ``(exp(mean difference) - 1) * 100``. Negative means the test curve
needs fewer bits than the anchor for the same quality.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def bd_rate(
    anchor_rate: Sequence[float],
    anchor_metric: Sequence[float],
    test_rate: Sequence[float],
    test_metric: Sequence[float],
) -> float:
    """BD-rate (%) of ``test`` against ``anchor``; NaN where the curves share no metric interval.

    Each curve needs at least 4 points for the cubic fit (fewer: a lower-order fit is used).
    """
    lo = max(min(anchor_metric), min(test_metric))
    hi = min(max(anchor_metric), max(test_metric))
    if hi <= lo:
        return math.nan
    mean_logs = []
    for rate, metric in ((anchor_rate, anchor_metric), (test_rate, test_metric)):
        order = min(3, len(rate) - 1)
        poly = np.polyint(np.polyfit(np.asarray(metric, float), np.log(np.asarray(rate, float)), order))
        mean_logs.append((np.polyval(poly, hi) - np.polyval(poly, lo)) / (hi - lo))
    return float((math.exp(mean_logs[1] - mean_logs[0]) - 1) * 100)
