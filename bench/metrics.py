"""Image quality metrics as the learned-compression literature reports them (RGB, per image)."""

from __future__ import annotations

import numpy as np
import torch
from pytorch_msssim import ms_ssim


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def msssim(a: np.ndarray, b: np.ndarray) -> float:
    ta = torch.from_numpy(a).permute(2, 0, 1)[None].double()
    tb = torch.from_numpy(b).permute(2, 0, 1)[None].double()
    return float(ms_ssim(ta, tb, data_range=255.0))
