"""Training images held in memory as uint8 tensors; random crops drawn on the fly.

Decoding 1200 JPEGs every epoch would cost more CPU than the model on 2 cores, so each image is
decoded once, downscaled (which also removes JPEG artefacts, as CompressAI-style pipelines do),
and kept as uint8.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from semcodec.errors import ImageError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


def list_images(root: Path | str) -> list[Path]:
    return sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def shrink_to_short_side(img: Image.Image, short_side: int, floor: int = 0) -> Image.Image:
    """Downscale (never enlarge) ``img`` so its short side is ``short_side``, no side below ``floor``.

    One rule for the training crops and for the photos pre-shrunk for a lent GPU
    (``tools/prepare_device.py``), so both train on the same pixels."""
    scale = short_side / min(img.size)
    if scale >= 1:
        return img
    size = (max(floor, round(img.width * scale)), max(floor, round(img.height * scale)))
    return img.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)


class CropBank:
    """Images downscaled so their short side is ``short_side``; ``sample`` returns random crops.

    ``downscale=(low, high)`` (with ``short_side=None``) keeps each photo at its own resolution and
    shrinks every crop by its own factor, drawn log-uniformly from that range and capped by what the
    photo holds: the box of ``crop / factor`` pixels is resized to ``crop``. One fixed shrink of a
    500 x 375 photo to a short side of 256 leaves a 256 px crop at most 85 px of room along one
    side; a factor per crop gives more positions and scales of each photo, nearly all of them still
    shrunk (which hides the JPEG artefacts, as the data notes advise).

    ``zoom=(min_area, max_area)`` samples crops as torchvision's ``RandomResizedCrop`` does (a
    fraction of the image's area, aspect 3:4..4:3, resized to ``crop``), drawn from this bank's own
    generator so a seed gives the same crops: more distinct views of few images (a token head
    distilled from 1,140 photos otherwise learns them by heart).
    """

    def __init__(
        self,
        paths: list[Path],
        short_side: int | None = 256,
        crop: int = 128,
        seed: int = 0,
        zoom: tuple[float, float] | None = None,
        downscale: tuple[float, float] | None = None,
    ):
        if not paths:
            raise ValueError("no training images found")
        if zoom is not None and not 0 < zoom[0] <= zoom[1] <= 1:
            raise ValueError(f"zoom must be 0 < min <= max <= 1 (area fractions), got {zoom}")
        if downscale is not None and (zoom is not None or not 0 < downscale[0] <= downscale[1] <= 1):
            raise ValueError(f"downscale must be 0 < low <= high <= 1 (and not with zoom), got {downscale}")
        if (short_side is None) != (downscale is not None):
            raise ValueError("downscale keeps the photos' own size: pass it with short_side=None")
        self.crop = crop
        self.zoom = zoom
        self.downscale = downscale
        self.images: list[Tensor] = []
        for path in paths:
            with Image.open(path) as img:
                img = img.convert("RGB")
                if short_side is not None:
                    img = shrink_to_short_side(img, short_side, floor=crop)
                if min(img.size) < crop:
                    continue
                self.images.append(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1))
        if not self.images:
            raise ImageError(f"no training image is at least {crop} px on its short side (pass a smaller --crop)")
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.images)

    def sample(self, batch: int) -> Tensor:
        """A float batch (B, 3, crop, crop) in [0, 1], random image, position and flip per crop."""
        g, c = self.generator, self.crop
        out = torch.empty(batch, 3, c, c, dtype=torch.uint8)
        for i in range(batch):
            img = self.images[int(torch.randint(len(self.images), (1,), generator=g))]
            h, w = self._box(img.shape[1], img.shape[2])
            top = int(torch.randint(img.shape[1] - h + 1, (1,), generator=g))
            left = int(torch.randint(img.shape[2] - w + 1, (1,), generator=g))
            patch = img[:, top : top + h, left : left + w]
            if (h, w) != (c, c):
                patch = TF.resize(patch, [c, c], antialias=True)
            if torch.rand(1, generator=g) < 0.5:
                patch = patch.flip(2)
            out[i] = patch
        return out.float().div_(255.0)

    def _box(self, height: int, width: int) -> tuple[int, int]:
        """The crop's size before resizing: ``crop`` square, a random area / aspect (``zoom``), or a
        square of ``crop / factor`` (``downscale``)."""
        if self.downscale is not None:
            low, high = (math.log(f) for f in self.downscale)
            factor = math.exp(low + (high - low) * float(torch.rand(1, generator=self.generator)))
            side = max(self.crop, min(height, width, round(self.crop / factor)))
            return side, side
        if self.zoom is None:
            return self.crop, self.crop
        u = torch.rand(2, generator=self.generator).tolist()
        area = height * width * (self.zoom[0] + (self.zoom[1] - self.zoom[0]) * u[0])
        aspect = math.exp(math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * u[1])
        h = min(height, max(self.crop // 4, round(math.sqrt(area / aspect))))
        w = min(width, max(self.crop // 4, round(math.sqrt(area * aspect))))
        return h, w
