"""Train a pixel model that reads the semantic layer (issue 56): only its semantic refiner learns.

A released pixel model (``base``) is grown with a zero-started refiner of its hyperprior's means and
scales that reads the decoded latent of one released semantic layer, resampled to y's grid
(:mod:`semcodec.codec.semantic_condition`). Everything else stays frozen (the transforms, ``h_a``,
``h_s``, z's tables, the context nets), so the new model's z is the base's and only y's coding
parameters change: rate alone is the loss. Each training photo is analysed once (``g_a`` before the
gain, whole photo, shrunk by a random factor as the pixel training scales photos) and paired with the
semantic latent exactly as the encoder makes it for that photo (the whole photo's geometry, the
encoder's gain); a step reads random 16 x 16 windows of cached latents at random qualities.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from semcodec.models.semantic_hyperprior import SemanticHyperprior, SemanticHyperpriorConfig
from semcodec.weights import ModelEntry, SemanticLayerEntry

WINDOW = 16
"""Latent cells a side of a training window (256 pixels)."""


@dataclass(frozen=True)
class CachedPhoto:
    y: Tensor  # (1, C, h, w) g_a output before the gain, float16
    semantic: Tensor  # (1, M, h, w) the decoded semantic latent on y's grid


def grown_with_refiner(base: SemanticHyperprior, semantic_channels: int, hidden: int = 64) -> SemanticHyperprior:
    """A copy of ``base`` with a zero-started semantic refiner: it codes exactly as ``base`` until trained."""
    config = SemanticHyperpriorConfig(
        **{**base.config.to_dict(), "semantic_channels": semantic_channels, "semantic_hidden": hidden}
    )
    model = SemanticHyperprior(config)
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    if unexpected or any(not key.startswith("semantic_refiner.") for key in missing):
        raise ValueError(f"base weights do not fit the grown model: {missing or unexpected}")
    return model.eval()


def shrunk_photo(path: Path, rng: random.Random) -> np.ndarray:
    """The photo's RGB pixels shrunk by a random factor in [0.6, 1] (its short side kept at 256 px
    where it can): the scales the pixel training sees, for latents cached once per photo."""
    with Image.open(path) as img:
        img = img.convert("RGB")
        low = min(1.0, max(0.6, 256 / min(img.size)))
        factor = math.exp(rng.uniform(math.log(low), 0.0))
        size = (round(img.width * factor), round(img.height * factor))
        return np.array(img.resize(size, Image.Resampling.LANCZOS))


def photo_latents(
    paths: list[Path],
    model: SemanticHyperprior,
    semantic_latent: Callable[[np.ndarray], Tensor],
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> list[CachedPhoto]:
    """Per photo (shrunk by a random factor in [0.6, 1], short side kept at 256 where it can): its
    ``g_a`` output and ``semantic_latent(pixels)`` resampled onto y's grid."""
    from semcodec.codec.semantic_condition import on_latent_grid
    from semcodec.codec.tensors import image_tensor, pad_to_stride

    rng = random.Random(seed)
    cache = []
    for i, path in enumerate(paths):
        pixels = shrunk_photo(path, rng)
        x = pad_to_stride(image_tensor(pixels), model.downsampling)
        if min(x.shape[2:]) < WINDOW * model.latent_stride:
            continue
        with torch.inference_mode():
            y = model.analysis_transform(x)
            grid = tuple(y.shape[2:])
            semantic = on_latent_grid(semantic_latent(pixels), pixels.shape[:2], grid, model.latent_stride)
        cache.append(CachedPhoto(y.half(), semantic.float()))
        if i % 100 == 0:
            log(f"cached {i}/{len(paths)} photos")
    return cache


def sample(cache: list[CachedPhoto], batch: int, rng: random.Random) -> tuple[Tensor, Tensor]:
    """``batch`` aligned windows (on z's grid, so the hyperprior sees what it sees in a photo)."""
    ys, ss = [], []
    for _ in range(batch):
        photo = cache[rng.randrange(len(cache))]
        r = rng.randrange(photo.y.shape[2] // 4 - WINDOW // 4 + 1)
        c = rng.randrange(photo.y.shape[3] // 4 - WINDOW // 4 + 1)
        rows, cols = slice(4 * r, 4 * r + WINDOW), slice(4 * c, 4 * c + WINDOW)
        ys.append(photo.y[:, :, rows, cols])
        ss.append(photo.semantic[:, :, rows, cols])
    return torch.cat(ys).float(), torch.cat(ss)


def window_bits(model: SemanticHyperprior, y: Tensor, semantic: Tensor, rate: str = "noise") -> Tensor:
    """Bits of the gained latents ``y`` (y only: z is the base model's, whatever the refiner does)."""
    out = model.entropy_forward(y, rate=rate, semantic=semantic)
    return -torch.log2(out["likelihoods"]["y"]).sum()


def train_refiner(
    model: SemanticHyperprior,
    cache: list[CachedPhoto],
    minutes: float,
    steps: int,
    lr: float = 3e-4,
    batch: int = 32,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> int:
    """Adam on the refiner alone for ``minutes`` or ``steps``, a cosine to 5% over the budget (rate
    only: bits per pixel of y); returns the steps taken."""
    for p in model.parameters():
        p.requires_grad_(False)
    params = list(model.semantic_refiner.parameters())
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=lr)
    model.train()  # noisy rate, as the pixel training's
    rng = random.Random(seed)
    torch.manual_seed(seed)
    qualities = model.log_gain.shape[0]
    start, step, running = time.time(), 0, []
    while step < steps:
        progress = max(step / steps, (time.time() - start) / (60 * minutes))
        if progress >= 1:
            break
        for group in optimizer.param_groups:
            group["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))
        y, semantic = sample(cache, batch, rng)
        q = torch.randint(qualities, (batch,))
        loss = window_bits(model, y * model.quality_gain(q), semantic) / (batch * (WINDOW * model.latent_stride) ** 2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        running.append(loss.item())
        step += 1
        if step % 50 == 0:
            log(f"step {step}: {np.mean(running):.4f} bpp of y (noisy), lr {optimizer.param_groups[0]['lr']:.1e}")
            running = []
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return step


def save_conditioned(
    out: Path, model: SemanticHyperprior, model_id: str, base: ModelEntry, layer: SemanticLayerEntry, info: dict
) -> str:
    """Write ``model``'s refiner as ``out/<model_id>.safetensors`` (the rest is the frozen base's: the
    codec loads both) with its registry entry (the base's quality table and token space, what it
    reads); return the file's sha256. One file, overwritten."""
    from semcodec.weights import save_state_dict
    from semcodec.weights.editor import RegistryEditor

    out.mkdir(parents=True, exist_ok=True)
    file = f"{model_id}.safetensors"
    refiner = {k: v for k, v in model.state_dict().items() if k.startswith("semantic_refiner.")}
    sha = save_state_dict(refiner, out / file)
    editor = RegistryEditor(out)
    editor.put_model(
        model_id,
        {
            "architecture": base.architecture,
            "config": model.config.to_dict(),
            "file": file,
            "sha256": sha,
            "token_space": base.token_space,
            "info": {**info, "init_from": base.name},
            "token_heads": {},
            "qualities": {str(q): {"gain_index": v.gain_index, "lambda": v.lmbda} for q, v in base.qualities.items()},
            "semantic_condition": {"layer": layer.name, "layer_sha256": layer.sha256, "base": base.name},
        },
    )
    editor.save()
    return sha


def register_conditioned(source: Path, model_id: str, weights_dir: Path, release: str | None = None) -> str:
    """Install ``model_id`` of the training folder ``source`` in ``weights_dir`` (which has its base
    model and semantic layer) as the encoder's model for files carrying that layer; return its sha256.
    An id names one file forever: an id registered with other weights is refused."""
    import shutil

    from semcodec.errors import WeightsError
    from semcodec.weights import load_registry
    from semcodec.weights.editor import RegistryEditor

    entry = load_registry(source).model(model_id)
    editor = RegistryEditor(weights_dir)
    if editor.has_model(model_id) and editor.model(model_id)["sha256"] != entry.sha256:
        raise WeightsError(f"model {model_id} exists with other weights: ship new weights under a new id")
    if (source / entry.file).resolve() != (weights_dir / entry.file).resolve():
        shutil.copyfile(source / entry.file, weights_dir / entry.file)
    raw = RegistryEditor(source).model(model_id)
    if release is not None:
        raw["release"] = release
    editor.put_model(model_id, raw)
    editor.put_conditioned(entry.semantic_condition.base, model_id)
    editor.save()
    return entry.sha256
