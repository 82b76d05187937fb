"""Training images held in memory as uint8 tensors; random crops drawn on the fly.

Decoding 1200 JPEGs every epoch would cost more CPU than the model on 2 cores, so each image is
decoded once, downscaled (which also removes JPEG artefacts, as CompressAI-style pipelines do),
and kept as uint8.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


def list_images(root: Path | str) -> list[Path]:
    return sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


class CropBank:
    """Images downscaled so their short side is ``short_side``; ``sample`` returns random crops."""

    def __init__(self, paths: list[Path], short_side: int = 256, crop: int = 128, seed: int = 0):
        if not paths:
            raise ValueError("no training images found")
        self.crop = crop
        self.images: list[Tensor] = []
        for path in paths:
            with Image.open(path) as img:
                img = img.convert("RGB")
                scale = short_side / min(img.size)
                if scale < 1:
                    size = (max(crop, round(img.width * scale)), max(crop, round(img.height * scale)))
                    img = img.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
                if min(img.size) < crop:
                    continue
                self.images.append(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1))
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.images)

    def sample(self, batch: int) -> Tensor:
        """A float batch (B, 3, crop, crop) in [0, 1], random image, position and flip per crop."""
        g, c = self.generator, self.crop
        out = torch.empty(batch, 3, c, c, dtype=torch.uint8)
        for i in range(batch):
            img = self.images[int(torch.randint(len(self.images), (1,), generator=g))]
            top = int(torch.randint(img.shape[1] - c + 1, (1,), generator=g))
            left = int(torch.randint(img.shape[2] - c + 1, (1,), generator=g))
            patch = img[:, top : top + c, left : left + c]
            if torch.rand(1, generator=g) < 0.5:
                patch = patch.flip(2)
            out[i] = patch
        return out.float().div_(255.0)
