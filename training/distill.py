"""Distil a token head: decoded latent grid -> a vision tower's tokens of the original image.

The codec is frozen (its bitstreams stay valid); only the head learns. Crops are coded once at
every quality with the decoder's own quantisation (base layer only, as ``--target tokens`` reads
it), and the tower's answers on the original crops are stored beside them: a *teacher cache*.
A head step then costs the head (and the tower's tail), not the codec and the whole tower: on the
2-core CPU about 45 crops/s instead of 12.

Targets. A tower with a split point (EfficientNet-Lite0) is distilled at that point: the head
predicts the intermediate map and the tower's own tail finishes it. Loss = MSE of standardised
intermediate features + (1 - cosine) + relative MSE of the final tokens + KL divergence of the
tower's classifier outputs (when the tower has a classifier). A tower without a split point:
standardised MSE + (1 - cosine) of its tokens. A held-out image set measures what the head does
on images it never saw; its figures go into the registry.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from semcodec.codec.api import Codec
from semcodec.codec.tensors import pad_to_stride
from semcodec.codec.token_choice import important_tokens, latent_energy
from semcodec.codec.token_targets import classifier_kl, teacher_answers, token_loss
from semcodec.errors import SemcodecError
from semcodec.models.semantic_hyperprior import SemanticHyperprior
from semcodec.models.token_head import TokenHead, build_head, token_map
from semcodec.models.towers import VisionTower
from semcodec.training.budget import Budget, scheduled_lr
from semcodec.training.data import CropBank
from semcodec.training.device import pick_device
from semcodec.weights import (
    head_file_name,
    load_verified,
    refuse_frozen,
    save_state_dict,
)
from semcodec.weights.editor import RegistryEditor
from semcodec.weights.towers import load_tower


@dataclass
class DistillConfig:
    tower: str
    tower_weights: Path | None
    data: list[Path]
    weights_dir: Path | None = None
    model_name: str | None = None
    steps: int = 4000
    max_minutes: float | None = None
    batch: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    hidden: int = 384
    num_heads: int = 6
    depth: int = 2
    crops_per_image: int = 4
    zoom: tuple[float, float] | None = None  # random-resized crops: area fraction range (None: plain crops)
    pruned_share: float = 0.0  # share of training samples coded with --tokens N (N log-uniform in prune_range)
    prune_range: tuple[int, int] = (8, 144)
    held_out_keep: int = 64  # the token count pruned held-out files keep (as the tokens benchmark's --keep 64)
    holdout_every: int = 20
    split_block: int | None = None  # towers with a split point: where (None: the tower's default)
    synthesis_stem: bool = False  # start the head from a copy of the codec's synthesis token stage
    warm_from: str | None = None  # another model whose head for this tower starts this one (same shapes copied)
    save_every: int = 500
    seed: int = 0
    device: str = "cpu"


@dataclass
class TeacherCache:
    """Coded crops and the tower's answers on the originals (float16 to halve the memory)."""

    grids: Tensor  # (n, qualities, C, h, w): the decoder's semantic grid at every quality
    targets: Tensor  # (n, N, D): what the head predicts (the split map as tokens, or the tokens)
    tokens: Tensor  # (n, N', D'): the tower's final tokens
    logits: Tensor | None  # (n, classes): the tower's classifier, if it has one
    pruned: Tensor | None = None  # like grids, for each crop coded with --tokens N (N random per crop)

    def __len__(self) -> int:
        return self.grids.shape[0]


def coded_grids(
    model: SemanticHyperprior, x: Tensor, gains: list[int], keep: Tensor | None = None
) -> tuple[Tensor, Tensor | None]:
    """The base-layer semantic grids a decoder rebuilds for crops ``x`` at each gain (B, G, C, h, w):
    of the whole latent, and (``keep``: a token count per crop) of files pruned with ``--tokens N``.

    No entropy coding is needed (it is lossless); the analysis transform runs once for all gains.
    """
    features = model.analysis_transform(pad_to_stride(x, model.downsampling))
    grids, pruned = [], []
    for gain in gains:
        y = features * model.quality_gain(gain)
        means, scales = model.decoded_hyper(y)
        y_hat = model.quantize_latent(y, means, scales, base_only=True)  # tokens read the base layer only
        grids.append(model.semantic_grid(y_hat, gain, x.shape[2], x.shape[3]))
        if keep is not None:
            energy = latent_energy(model, y, means, scales)
            kept = important_tokens(energy, keep, x.shape[2:], model.latent_stride)[:, None]
            y_hat = model.quantize_latent(y, means, scales, base_only=True, keep=kept)
            pruned.append(model.semantic_grid(y_hat, gain, x.shape[2], x.shape[3]))
    return torch.stack(grids, dim=1), (torch.stack(pruned, dim=1) if keep is not None else None)


def build_cache(
    model: SemanticHyperprior,
    tower: VisionTower,
    bank: CropBank,
    count: int,
    gains: list[int],
    keep_range: tuple[int, int] | None = None,
    seed: int = 0,
) -> TeacherCache:
    """The cache lives where ``model`` does (on a GPU the head's steps then never copy a batch).

    ``keep_range``: also store each crop as a file pruned to N tokens, N log-uniform in the range
    (drawn from their own generator, ``seed``, so the crops are the same with or without pruning)."""
    parts: dict[str, list[Tensor]] = {"grids": [], "pruned": [], "targets": [], "tokens": [], "logits": []}
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for start in tqdm(range(0, count, 16), desc="teacher cache", dynamic_ncols=True, leave=False):
            x = bank.sample(min(16, count - start)).to(device)
            keep = None
            if keep_range is not None:
                low, high = math.log(keep_range[0]), math.log(keep_range[1])
                keep = (low + (high - low) * torch.rand(len(x), generator=generator)).exp().round().long()
            target, tokens, logits = teacher_answers(tower, x)
            grids, pruned = coded_grids(model, x, gains, keep.to(device) if keep is not None else None)
            parts["grids"].append(grids.half())
            if pruned is not None:
                parts["pruned"].append(pruned.half())
            parts["targets"].append(target.half())
            parts["tokens"].append(tokens.half())
            if logits is not None:
                parts["logits"].append(logits.float())
    return TeacherCache(
        torch.cat(parts["grids"]),
        torch.cat(parts["targets"]),
        torch.cat(parts["tokens"]),
        torch.cat(parts["logits"]) if parts["logits"] else None,
        torch.cat(parts["pruned"]) if parts["pruned"] else None,
    )


def head_losses(
    head: TokenHead, tower: VisionTower, cache: TeacherCache, index: Tensor, grids: Tensor
) -> dict[str, Tensor]:
    """All loss terms for decoded ``grids`` of cache rows ``index``; ``loss`` is their sum."""
    standardised = head.standardised(grids.float())
    target = cache.targets[index].float()
    out = {"feature_mse": F.mse_loss(standardised, (target - head.target_mean) / head.target_std)}
    pred = standardised * head.target_std + head.target_mean
    split = tower.split_dim is not None
    tokens = tower.tail(token_map(pred, head.grid)) if split else pred  # the tower's own tail finishes
    out.update(token_loss(tokens, cache.tokens[index].float()))
    loss = out["feature_mse"] + (1 - out["cosine"])
    if split:
        loss = loss + out["rel_mse"]
    if cache.logits is not None:
        logits = tower.classify(tokens)
        teacher = cache.logits[index]
        out["kl"] = classifier_kl(logits, teacher).mean()
        out["agreement"] = (logits.argmax(-1) == teacher.argmax(-1)).float().mean()
        loss = loss + out["kl"]
    out["loss"] = loss
    return out


def evaluate(head: TokenHead, tower: VisionTower, cache: TeacherCache) -> dict[str, float]:
    """Mean cosine / relative MSE / classifier agreement over every held-out crop and quality; of
    pruned files too (keys ``pruned_*``) when the cache holds them."""
    report: dict[str, float] = {}
    head.eval()
    with torch.no_grad():
        for prefix, grids in (("", cache.grids), ("pruned_", cache.pruned)):
            if grids is None:
                continue
            totals: dict[str, float] = {}
            for slot in range(grids.shape[1]):
                for start in range(0, len(cache), 64):
                    index = torch.arange(start, min(start + 64, len(cache)), device=grids.device)
                    losses = head_losses(head, tower, cache, index, grids[index, slot])
                    for k in ("cosine", "rel_mse", "agreement"):
                        if k in losses:
                            totals[k] = totals.get(k, 0.0) + losses[k].item() * len(index)
            report.update({prefix + k: v / (len(cache) * grids.shape[1]) for k, v in totals.items()})
    head.train()
    return report


def distill(cfg: DistillConfig) -> dict:
    torch.manual_seed(cfg.seed)
    codec = Codec(cfg.weights_dir)
    registry = codec.registry
    model_name = cfg.model_name or registry.quality(registry.default_quality).model
    refuse_frozen(registry.root, model_name, "distil heads for")  # before the long teacher cache
    entry = registry.model(model_name)
    device = pick_device(cfg.device)
    model, _ = codec.model(model_name)
    model = model.to(device)
    tower = load_tower(cfg.tower, cfg.tower_weights)
    if cfg.split_block is not None:
        tower.set_split(cfg.split_block)
    split = tower.split_dim is not None
    gains = sorted({q.gain_index for q in entry.qualities.values()})
    arch = {"hidden": cfg.hidden, "num_heads": cfg.num_heads, "depth": cfg.depth}
    if cfg.synthesis_stem:
        arch["synthesis_stem"] = True
    target_dim, target_grid = (tower.split_dim, tower.split_grid) if split else (tower.dim, tower.grid)
    tower.to(device)
    head = build_head(model, target_dim, target_grid, arch).to(device)

    warm_state = None
    if cfg.warm_from is not None:  # checked before the (long) teacher cache
        source = registry.model(cfg.warm_from).token_heads.get(cfg.tower)
        split_block = getattr(tower, "split_block", None)
        if source is None or source.arch != arch or source.split_block != split_block:
            raise SemcodecError(
                f"{cfg.warm_from} has no {cfg.tower} head with this architecture ({arch}, split block {split_block}) "
                "to start from"
            )
        warm_state = load_verified(registry.root / source.file, source.sha256)

    held_out = cfg.data[:: cfg.holdout_every] if len(cfg.data) >= 2 * cfg.holdout_every else []
    held = set(held_out)
    train_paths = [p for p in cfg.data if p not in held]
    size = tower.input_size
    started = time.time()
    bank = CropBank(train_paths, short_side=max(256, size), crop=size, seed=cfg.seed, zoom=cfg.zoom)
    pruning = cfg.pruned_share > 0
    cache = build_cache(
        model, tower, bank, cfg.crops_per_image * len(bank), gains, cfg.prune_range if pruning else None, cfg.seed
    )
    val = None
    if held_out:
        held_bank = CropBank(held_out, max(256, size), size, seed=cfg.seed + 1)
        keep = (cfg.held_out_keep, cfg.held_out_keep) if pruning else None
        val = build_cache(model, tower, held_bank, len(held_out), gains, keep, cfg.seed + 1)
    cache_seconds = time.time() - started

    file = head_file_name(model_name, cfg.tower)
    previous = entry.token_heads.get(cfg.tower)
    step = 0
    if (
        previous is not None
        and previous.arch == arch
        and previous.split_block == getattr(tower, "split_block", None)
        and (registry.root / previous.file).exists()
    ):
        # resume; after a codec change that kept the latent's meaning (e.g. a retrained entropy
        # model), the previous head is the best start and the steps go on counting
        head.load_state_dict(load_verified(registry.root / previous.file, previous.sha256))
        step = int(previous.record.get("steps", 0))
        if previous.codec_sha256 != entry.sha256:
            tqdm.write(f"head for {cfg.tower}: warm start from the head of other {model_name} weights")
    elif warm_state is not None:
        skipped = copy_matching(head, warm_state)
        tqdm.write(f"head for {cfg.tower}: warm start from {cfg.warm_from}'s head, new: {', '.join(skipped) or 'none'}")
    else:  # start from the targets' own statistics
        flat = cache.targets.float().flatten(0, 1)
        head.target_mean.copy_(flat.mean(0))
        head.target_std.copy_(flat.std(0).clamp_min(1e-3 * flat.std(0).max().item()))

    optimizer = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    generator = torch.Generator().manual_seed(cfg.seed + step)
    budget = Budget(cfg.steps, cfg.max_minutes)
    bar = tqdm(total=cfg.steps, initial=step, desc=f"head {cfg.tower}", dynamic_ncols=True)
    stats: dict[str, float] = {}
    losses: dict[str, Tensor] = {}

    def save() -> None:
        report = evaluate(head, tower, val) if val is not None else {}
        stats.update({f"val_{k}": v for k, v in report.items()})
        _save(head, registry.root, model_name, cfg, tower, file, arch, step, entry.sha256, report)

    while step < cfg.steps:
        progress = budget.progress(step)
        if progress is None:
            break
        for group in optimizer.param_groups:
            group["lr"] = scheduled_lr(cfg.lr, progress, step, warmup_steps=100)
        index = torch.randint(len(cache), (cfg.batch,), generator=generator).to(device)
        slot = torch.randint(len(gains), (cfg.batch,), generator=generator).to(device)
        grids = cache.grids[index, slot]
        if cache.pruned is not None:  # a share of the batch: files pruned with --tokens N
            pick = (torch.rand(cfg.batch, generator=generator) < cfg.pruned_share).to(device)
            grids = torch.where(pick[:, None, None, None], cache.pruned[index, slot], grids)
        losses = head_losses(head, tower, cache, index, grids)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
        optimizer.step()
        step += 1
        bar.update(1)
        if step % 20 == 0:  # reading losses syncs a GPU: not every step
            stats = {k: v.item() for k, v in losses.items()}
            bar.set_postfix(cos=f"{stats['cosine']:.3f}", loss=f"{stats['loss']:.3f}")
        if step % cfg.save_every == 0:
            save()
    bar.close()
    stats.update({k: v.item() for k, v in losses.items()})
    save()
    stats["cache_seconds"] = cache_seconds
    stats["train_crops"] = len(cache)
    stats["held_out_images"] = len(held_out)
    return stats


def copy_matching(head: torch.nn.Module, state: dict[str, Tensor]) -> list[str]:
    """Copy the tensors of ``state`` whose name and shape ``head`` shares; return the names of the
    head's own tensors that were not copied (they keep their fresh initialisation).

    Why: a head for another codec model (another latent width) has already learnt the part that
    matters most, blocks and projection to the same tower's targets; only its input layers differ.
    """
    own = head.state_dict()
    matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    head.load_state_dict(matching, strict=False)
    return sorted(k for k in own if k not in matching)


def _save(
    head: TokenHead,
    root: Path,
    model_name: str,
    cfg: DistillConfig,
    tower: VisionTower,
    file: str,
    arch: dict,
    step: int,
    codec_sha256: str,
    held_out: dict[str, float],
) -> None:
    sha = save_state_dict(head.state_dict(), root / file, metadata={"steps": str(step), "tower": cfg.tower})
    editor = RegistryEditor(root)
    editor.put_head(
        model_name,
        cfg.tower,
        {
            "file": file,
            "sha256": sha,
            "tower": cfg.tower,
            "tower_sha256": tower.source_sha256,
            "layer": tower.layer,
            "grid": list(tower.grid),
            "dim": tower.dim,
            "input_size": tower.input_size,
            "split": tower.split_dim is not None,
            "split_block": getattr(tower, "split_block", None),
            "head_grid": list(head.grid),
            "head_dim": head.out.out_features,
            "arch": arch,
            "codec_sha256": codec_sha256,
            "steps": step,
            "views": {
                "crops_per_image": cfg.crops_per_image,
                "zoom": list(cfg.zoom) if cfg.zoom else None,
                "pruned_share": cfg.pruned_share,
                "prune_range": list(cfg.prune_range) if cfg.pruned_share else None,
            },
            "held_out": {k: round(v, 4) for k, v in held_out.items()},
        },
    )
    editor.save()
