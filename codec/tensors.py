"""Images as tensors: the codec's input, a tower's input, the padding to the model's stride."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def image_tensor(pixels: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> (1, 3, H, W) float in [0, 1]."""
    return torch.from_numpy(pixels).permute(2, 0, 1)[None].float().div(255.0)


def tower_input(pixels: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """An image for a tower that resizes it to ``size`` (rows, columns): a large one shrunk first
    (PIL, to twice that) so the tower's own resize never holds a many-megapixel float copy."""
    h, w = pixels.shape[:2]
    if h * w > 16 * size[0] * size[1]:
        from PIL import Image

        small = Image.fromarray(pixels).resize((2 * size[1], 2 * size[0]), Image.Resampling.BICUBIC, reducing_gap=3.0)
        pixels = np.array(small)  # writable: torch.from_numpy warns on a read-only array
    return image_tensor(pixels)


def pad_to_stride(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Replicate-pad right and bottom to a multiple of the total stride (cropped after decoding)."""
    h, w = x.shape[2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if not (ph or pw):
        return x
    # replicate padding of a 1-pixel-wide image works; it needs no more pixels than it has
    return F.pad(x, (0, pw, 0, ph), mode="replicate")
