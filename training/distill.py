"""Distil a token head: decoded latent grid -> a vision tower's tokens of the original image.

The codec is frozen (its bitstreams stay valid); only the head learns. Each crop is coded at a
random quality, with the decoder's own quantisation (``round(y - mean) + mean``), so the head sees
what a decoder will hand it. Loss: ``MSE / var(target) + (1 - cosine)`` per token.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from semcodec.codec.api import Codec, _pad
from semcodec.models.token_head import TokenHead
from semcodec.training.budget import Budget
from semcodec.training.data import CropBank
from semcodec.weights import REGISTRY_FILE, save_state_dict, sha256_file, write_registry
from semcodec.weights.towers import load_tower


@dataclass
class DistillConfig:
    tower: str
    tower_weights: Path | None
    data: list[Path]
    weights_dir: Path | None = None
    model_name: str | None = None
    steps: int = 2000
    max_minutes: float | None = None
    batch: int = 16
    lr: float = 1e-3
    hidden: int = 384
    num_heads: int = 6
    save_every: int = 250
    seed: int = 0


def token_loss(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    mse = (pred - target).pow(2).mean() / target.var().clamp_min(1e-8)
    cos = F.cosine_similarity(pred, target, dim=-1).mean()
    return {"loss": mse + (1 - cos), "rel_mse": mse, "cosine": cos}


def coded_grid(codec: Codec, model_name: str, x: torch.Tensor, gain_index: torch.Tensor) -> torch.Tensor:
    """The semantic grid a decoder rebuilds for crops ``x`` (no entropy coding: it is lossless)."""
    model, tables = codec.model(model_name)
    with torch.no_grad():
        y = model.analysis(_pad(x, model.downsampling), gain_index)
        medians = model.z_medians()
        z_hat = torch.round(model.h_a(y) - medians) + medians
        means, _ = model.hyper_synthesis(z_hat)
        y_hat = torch.round(y - means) + means
        y_hat[:, model.base_channels :] = means[:, model.base_channels :]  # tokens use the base layer only
        return model.semantic_grid(y_hat, gain_index, x.shape[2], x.shape[3])


def distill(cfg: DistillConfig) -> dict:
    torch.manual_seed(cfg.seed)
    codec = Codec(cfg.weights_dir)
    registry = codec.registry
    model_name = cfg.model_name or registry.quality(registry.default_quality).model
    entry = registry.model(model_name)
    tower = load_tower(cfg.tower, cfg.tower_weights)
    tower_path = tower.source_file
    gains = sorted({q.gain_index for q in registry.qualities.values() if q.model == model_name})
    arch = {"hidden": cfg.hidden, "num_heads": cfg.num_heads}
    head = TokenHead(entry.config["latent_channels"], tower.dim, tower.grid, **arch)
    file = f"{model_name}.head.{_slug(cfg.tower)}.safetensors"
    previous = entry.token_heads.get(cfg.tower, {})
    step = 0
    if previous.get("codec_sha256") == entry.sha256 and (registry.root / previous["file"]).exists():
        from semcodec.weights import load_verified

        head.load_state_dict(load_verified(registry.root / previous["file"], previous["sha256"]))
        step = int(previous.get("steps", 0))
    bank = CropBank(cfg.data, short_side=max(256, tower.input_size), crop=tower.input_size, seed=cfg.seed + step)
    optimizer = torch.optim.Adam(head.parameters(), lr=cfg.lr)
    generator = torch.Generator().manual_seed(cfg.seed + step)
    budget = Budget(cfg.steps, cfg.max_minutes)
    bar = tqdm(total=cfg.steps, initial=step, desc=f"head {cfg.tower}", dynamic_ncols=True)
    stats: dict[str, float] = {}
    while step < cfg.steps:
        progress = budget.progress(step)
        if progress is None:
            break
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        x = bank.sample(cfg.batch)
        gain_index = torch.tensor(gains)[torch.randint(len(gains), (cfg.batch,), generator=generator)]
        with torch.no_grad():
            target = tower(x)
        losses = token_loss(head(coded_grid(codec, model_name, x, gain_index)), target)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizer.step()
        step += 1
        stats = {k: v.item() for k, v in losses.items()}
        bar.update(1)
        bar.set_postfix(cos=f"{stats['cosine']:.3f}", rel_mse=f"{stats['rel_mse']:.3f}")
        if step % cfg.save_every == 0:
            _save(head, registry.root, model_name, cfg, tower, tower_path, file, arch, step, entry.sha256)
    bar.close()
    _save(head, registry.root, model_name, cfg, tower, tower_path, file, arch, step, entry.sha256)
    return stats


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name)


def _save(
    head,
    root: Path,
    model_name: str,
    cfg: DistillConfig,
    tower,
    tower_path,
    file: str,
    arch: dict,
    step: int,
    codec_sha256: str,
) -> None:
    sha = save_state_dict(head.state_dict(), root / file, metadata={"steps": str(step), "tower": cfg.tower})
    raw = json.loads((root / REGISTRY_FILE).read_text())
    model = raw["models"][model_name]
    model.setdefault("token_heads", {})[cfg.tower] = {
        "file": file,
        "sha256": sha,
        "tower": cfg.tower,
        "tower_sha256": sha256_file(tower_path) if tower_path else None,
        "layer": tower.layer,
        "grid": list(tower.grid),
        "dim": tower.dim,
        "input_size": tower.input_size,
        "arch": arch,
        "codec_sha256": codec_sha256,
        "steps": step,
    }
    write_registry(root, raw)
