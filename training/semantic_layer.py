"""Train a semantic base layer: code a tower's split map for ``R + lambda_q * D``.

``D = MSE of the standardised map + w * KL + t * token error``: the KL of the tower's classifier on
the rebuilt map against its answer on the original (its output distribution, never the labels); the
token error, the squared error of the tail's tokens relative to their energy (what the machine
reads, as the pruned layer's encoder-side fit measures it). The tower runs once per
training crop to fill a cache (map + logits); a step then costs the small layer and the tower's
tail, so CPU training is practical (no pixels are ever coded here).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from semcodec.codec.token_targets import classifier_kl
from semcodec.errors import WeightsError
from semcodec.models.semantic_layer import SemanticLayer, SemanticLayerConfig
from semcodec.models.towers import VisionTower
from semcodec.training.budget import Budget, scheduled_lr
from semcodec.training.data import CropBank

DEFAULT_SEMANTIC_LAMBDAS = (2.0, 4.0, 8.0, 16.0)
"""lambda per quality; rate in bits per map element. Chosen by measurement (docs/experiments.md)."""
DEFAULT_KL_WEIGHT = 0.0
"""w in D = MSE + w * KL: the map alone. Measured 2026-12-06 (docs/experiments.md): KL from the start
(w = 1) pulled the layer to the tower's average answer; switched on after 5,900 map-only steps it
raised the held-out bytes by 40% and cut top-1 on the tokens benchmark's crops from 0.86 to 0.79
within 500 steps. The map's MSE through the pretrained tail already keeps top-1 within 4 points of
the original at quality 1."""
DEFAULT_KL_AFTER = 0.5
"""Share of the run trained on the map alone before the KL term joins. From scratch, KL (about 5 nats
at the start against a map MSE of 1) pulls the layer toward the tower's average answer: the map MSE
stayed at 1.07 and agreement at 0 for 80 steps, while the map alone fell to MSE 0.72 (measured
2026-12-06 on the efficientnet-lite0 maps of train/)."""
DEFAULT_TOKEN_WEIGHT = 0.0
"""t in D = MSE + w * KL + t * token error: the map alone, as sem-lite0-b7 was trained."""
TINY_ARCH = {"latent_channels": 8, "hyper_channels": 4, "hidden": 8}
"""A tiny architecture for tests and smoke runs."""


@dataclass
class SemanticLayerTraining:
    tower: str
    data: list[Path]
    out: Path  # a registry folder (like ``train --out``): the layer's file and entry, resumed from
    layer_id: str = "sem-run"
    init_from: str | None = None  # a semantic layer of the packaged weights a layer new to ``out`` starts from
    steps: int = 20000
    max_minutes: float | None = None
    batch: int = 32
    lr: float = 1e-3
    lambdas: tuple[float, ...] = DEFAULT_SEMANTIC_LAMBDAS
    kl_weight: float = DEFAULT_KL_WEIGHT
    kl_after: float = DEFAULT_KL_AFTER
    token_weight: float = DEFAULT_TOKEN_WEIGHT
    crops_per_image: int = 8
    zoom: tuple[float, float] = (0.3, 1.0)
    holdout_every: int = 20
    save_every: int = 500
    seed: int = 0
    arch: dict = field(default_factory=dict)
    cache: Path | None = None  # the crops' maps (and tail tokens, once computed), kept to start the next run at once


@dataclass
class MapCache:
    """The tower's split maps (float16) and classifier logits of a set of crops."""

    maps: Tensor  # (n, C, h, w)
    logits: Tensor  # (n, classes)
    tokens: Tensor | None = None  # (n, N, D) the tail's tokens of the maps, for the token term

    def with_tokens(self, tower: VisionTower) -> MapCache:
        """This cache with the tail's tokens of its maps (float16), computed once."""
        if self.tokens is None:
            with torch.no_grad():
                parts = [tower.tail(self.maps[i : i + 64].float()).half() for i in range(0, len(self), 64)]
            self.tokens = torch.cat(parts)
        return self

    def __len__(self) -> int:
        return self.maps.shape[0]

    def saved(self) -> dict[str, Tensor]:
        """What ``--cache`` keeps: maps, logits and, once computed, the tail's tokens."""
        parts = {"maps": self.maps, "logits": self.logits}
        return parts if self.tokens is None else {**parts, "tokens": self.tokens}


def build_map_cache(tower: VisionTower, bank: CropBank, count: int) -> MapCache:
    maps, logits = [], []
    with torch.no_grad():
        for start in tqdm(range(0, count, 32), desc="tower maps", dynamic_ncols=True, leave=False):
            x = bank.sample(min(32, count - start))
            features = tower.features(tower.prepare(x))
            maps.append(features.half())
            logits.append(tower.classify(tower.tail(features)).half())
    return MapCache(torch.cat(maps), torch.cat(logits))


def layer_losses(
    layer: SemanticLayer,
    tower: VisionTower,
    maps: Tensor,
    teacher: Tensor,
    quality: Tensor,
    lambdas: Tensor,
    w: float,
    with_tower: bool = False,
    t: float = 0.0,
    targets: Tensor | None = None,
) -> dict[str, Tensor]:
    """Per-batch loss terms; ``loss`` = mean over crops of ``bits / elements + lambda_q * D``. The
    tower's tail runs when ``w > 0``, ``t > 0`` or ``with_tower`` (then KL and agreement are reported
    too, and the token error when ``targets``, the tail's tokens of the original maps, are given)."""
    out = layer(maps, quality)
    elements = maps[0].numel()
    bits = sum(-torch.log2(lik).flatten(1).sum(1) for lik in out["likelihoods"].values())
    mse = F.mse_loss(layer.standardise(out["features"]), layer.standardise(maps), reduction="none").flatten(1).mean(1)
    terms = {"bytes": bits.mean() / 8, "mse": mse.mean()}
    if w == 0 and t == 0 and not with_tower:  # the map alone: no pass through the tower's tail (2.4x the steps/s)
        return {"loss": (bits / elements + lambdas[quality] * mse).mean(), **terms}
    tokens = tower.tail(out["features"])
    logits = tower.classify(tokens)
    kl = classifier_kl(logits, teacher)
    distortion = mse + w * kl
    if targets is not None:
        token_error = (tokens - targets).pow(2).mean((1, 2)) / targets.pow(2).mean((1, 2))
        distortion = distortion + t * token_error
        terms["token_error"] = token_error.mean()
    loss = (bits / elements + lambdas[quality] * distortion).mean()
    agreement = (logits.argmax(-1) == teacher.argmax(-1)).float().mean()
    return {"loss": loss, **terms, "kl": kl.mean(), "agreement": agreement}


def evaluate(
    layer: SemanticLayer, tower: VisionTower, cache: MapCache, lambdas: Tensor, w: float, t: float = 0.0
) -> dict[str, float]:
    """Held-out bytes (the model's rate), map MSE, token error and classifier agreement per quality."""
    layer.eval()
    report: dict[str, float] = {}
    targets = cache.with_tokens(tower).tokens.float()
    with torch.no_grad():
        for q in range(len(lambdas)):
            quality = torch.full((len(cache),), q)
            maps, logits = cache.maps.float(), cache.logits.float()
            terms = layer_losses(layer, tower, maps, logits, quality, lambdas, w, True, t, targets)
            report.update({f"q{q + 1}_{k}": round(v.item(), 4) for k, v in terms.items() if k != "loss"})
    layer.train()
    return report


def train_semantic_layer(
    cfg: SemanticLayerTraining,
    tower: VisionTower,
    layer: SemanticLayer | None = None,
    start_step: int = 0,
    on_save: Callable[[SemanticLayer, int, dict], None] | None = None,
) -> dict:
    """Train (or go on training ``layer`` from ``start_step``); ``on_save(layer, step, held_out)``
    every ``save_every`` steps and at the end."""
    torch.manual_seed(cfg.seed)
    held = set(cfg.data[:: cfg.holdout_every])
    train_paths = [p for p in cfg.data if p not in held]
    size = tower.input_size
    started = time.time()
    if cfg.cache is not None and cfg.cache.exists():
        cache, val = (MapCache(p["maps"], p["logits"], p.get("tokens")) for p in torch.load(cfg.cache))
    else:
        bank = CropBank(train_paths, short_side=max(256, size), crop=size, seed=cfg.seed, zoom=cfg.zoom)
        cache = build_map_cache(tower, bank, cfg.crops_per_image * len(bank))
        val = build_map_cache(tower, CropBank(sorted(held), max(256, size), size, seed=cfg.seed + 1), len(held))
    fresh = cfg.cache is not None and not cfg.cache.exists()
    if cfg.token_weight > 0 and cache.tokens is None:
        cache.with_tokens(tower)  # the tail over every crop: minutes on a CPU, so kept in the cache too
        fresh = cfg.cache is not None
    if fresh:
        partial = cfg.cache.with_name(cfg.cache.name + ".partial")
        torch.save([c.saved() for c in (cache, val)], partial)
        partial.replace(cfg.cache)  # whole or not at all: a run killed meanwhile keeps the old cache
    cache_seconds = time.time() - started
    if layer is None:
        layer = SemanticLayer(SemanticLayerConfig(feature_channels=tower.split_dim, **cfg.arch))
        flat = cache.maps.float().transpose(0, 1).flatten(1)
        layer.feature_mean.copy_(flat.mean(1).view(1, -1, 1, 1))
        layer.feature_std.copy_(flat.std(1).clamp_min(1e-3).view(1, -1, 1, 1))
    lambdas = torch.tensor(cfg.lambdas)
    params = [p for n, p in layer.named_parameters() if not n.endswith(".quantiles")]
    optimizer = torch.optim.Adam(params, lr=cfg.lr)
    aux_optimizer = torch.optim.Adam([p for n, p in layer.named_parameters() if n.endswith(".quantiles")], lr=1e-3)
    generator = torch.Generator().manual_seed(cfg.seed)
    budget = Budget(cfg.steps - start_step, cfg.max_minutes)
    bar = tqdm(total=cfg.steps, initial=start_step, desc="semantic layer", dynamic_ncols=True)
    step = start_step
    while step < cfg.steps:
        progress = budget.progress(step - start_step)
        if progress is None:
            break
        for group in optimizer.param_groups:
            group["lr"] = scheduled_lr(cfg.lr, progress, step, warmup_steps=200)
        index = torch.randint(len(cache), (cfg.batch,), generator=generator)
        quality = torch.randint(len(lambdas), (cfg.batch,), generator=generator)
        w = cfg.kl_weight if progress >= cfg.kl_after else 0.0
        targets = cache.tokens[index].float() if cfg.token_weight > 0 else None
        maps, teacher = cache.maps[index].float(), cache.logits[index].float()
        terms = layer_losses(layer, tower, maps, teacher, quality, lambdas, w, False, cfg.token_weight, targets)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        aux_optimizer.zero_grad(set_to_none=True)
        layer.aux_loss().backward()
        aux_optimizer.step()
        step += 1
        bar.update(1)
        if step % 20 == 0:
            bar.set_postfix({k: f"{v.item():.3f}" for k, v in terms.items() if k != "loss"})
        if step % cfg.save_every == 0 and on_save is not None:
            on_save(layer, step, evaluate(layer, tower, val, lambdas, cfg.kl_weight, cfg.token_weight))
    bar.close()
    report = evaluate(layer, tower, val, lambdas, cfg.kl_weight, cfg.token_weight)
    if on_save is not None:
        on_save(layer, step, report)
    return {"layer": layer, "steps": step, "held_out": report, "cache_seconds": cache_seconds, "crops": len(cache)}


def save_checkpoint(layer: SemanticLayer, root: Path, layer_id: str, step: int, info: dict) -> str:
    """Write ``layer`` (entropy tables frozen first) as ``root/<layer_id>.safetensors`` and its entry in
    ``root``'s registry (config, steps and ``info``), as ``train`` and ``distill`` keep theirs; return
    the file's sha256. One file per layer, overwritten: resumable from it."""
    from semcodec.weights import save_state_dict
    from semcodec.weights.editor import RegistryEditor

    layer.update(force=True)
    root.mkdir(parents=True, exist_ok=True)
    file = f"{layer_id}.safetensors"
    sha = save_state_dict(layer.state_dict(), root / file, metadata={"steps": str(step)})
    editor = RegistryEditor(root)
    editor.put_semantic_layer(layer_id, _entry(layer, file, sha, editor.quality_numbers, step, info))
    editor.save()
    return sha


def _entry(layer: SemanticLayer, file: str, sha: str, qualities: list[int], steps: int, info: dict) -> dict:
    """A registry entry of ``layer``; its gain per file quality of ``qualities`` (the last gain beyond)."""
    kept = ("tower", "tower_sha256", "split_block")
    return {
        "file": file,
        "sha256": sha,
        **{k: info[k] for k in kept},
        "config": layer.config.to_dict(),
        "gain_index": {str(q): min(i, layer.config.num_qualities - 1) for i, q in enumerate(qualities)},
        "info": {"steps": steps, **{k: v for k, v in info.items() if k not in kept}},
    }


def load_checkpoint(root: Path, layer_id: str) -> tuple[SemanticLayer, int, dict]:
    """``(layer, steps, info)`` of semantic layer ``layer_id`` in the registry folder ``root``
    (sha256-checked); ``info`` holds the tower fields too."""
    from semcodec.weights import load_registry, load_verified

    entry = load_registry(root).semantic_layers.get(layer_id)
    if entry is None:
        raise WeightsError(f"no semantic layer {layer_id!r} in {root}")
    layer = SemanticLayer(SemanticLayerConfig(**entry.config))
    layer.load_state_dict({k: v.float() for k, v in load_verified(root / entry.file, entry.sha256).items()})
    info = {"tower": entry.tower, "tower_sha256": entry.tower_sha256, "split_block": entry.split_block}
    info.update({k: v for k, v in entry.info.items() if k != "steps"})
    return layer, int(entry.info.get("steps", 0)), info


def grown(layer: SemanticLayer, arch: dict) -> SemanticLayer:
    """``layer`` in a wider architecture (``arch`` overrides its config): only parts that start as the
    identity (a context model) may be new, so the grown layer starts out coding as ``layer`` did."""
    bigger = SemanticLayer(SemanticLayerConfig(**{**layer.config.to_dict(), **arch}))
    try:
        missing, unexpected = bigger.load_state_dict(layer.state_dict(), strict=False)
    except RuntimeError:  # a shape changed
        missing, unexpected = ["(shapes)"], []
    if unexpected or any(not key.startswith("context.") for key in missing):
        raise WeightsError(f"--arch {arch} changes more than a context: {sorted(unexpected) or sorted(missing)[:3]}")
    return bigger


def run(cfg: SemanticLayerTraining, tower: VisionTower) -> dict:
    """Train into ``cfg.out``, resuming from it when it exists (its own architecture and steps)."""
    import json

    from semcodec.weights import REGISTRY_FILE, load_registry

    layer, step = None, 0
    if (cfg.out / REGISTRY_FILE).exists() and cfg.layer_id in load_registry(cfg.out).semantic_layers:
        layer, step, _ = load_checkpoint(cfg.out, cfg.layer_id)
        tqdm.write(f"resuming {cfg.layer_id} in {cfg.out} at step {step}")
    elif cfg.init_from is not None:
        from semcodec.weights import default_weights_dir

        layer, step, released = load_checkpoint(default_weights_dir(), cfg.init_from)
        if released["tower"] != cfg.tower:
            raise WeightsError(f"--init-from {cfg.init_from} codes {released['tower']}'s map, not {cfg.tower}'s")
        if cfg.arch:
            layer = grown(layer, cfg.arch)
        tqdm.write(f"{cfg.layer_id}: starting from {cfg.init_from} at step {step}")
    info = {"tower": cfg.tower, "tower_sha256": tower.source_sha256, "split_block": tower.split_block,
            "lambdas": list(cfg.lambdas), "kl_weight": cfg.kl_weight, "token_weight": cfg.token_weight}  # fmt: skip

    def on_save(layer: SemanticLayer, step: int, report: dict) -> None:
        save_checkpoint(layer, cfg.out, cfg.layer_id, step, {**info, "held_out": report})
        tqdm.write(f"step {step}: held out {json.dumps(report)}")

    return train_semantic_layer(cfg, tower, layer, step, on_save)


def register(
    source: Path,
    source_id: str,
    layer_id: str,
    weights_dir: Path,
    encoder_default: bool = True,
    release: str | None = None,
    encoder_gains: tuple[int, ...] | None = None,
) -> str:
    """Install semantic layer ``source_id`` of the training folder ``source`` as ``layer_id`` in
    ``weights_dir`` (file + registry entry, its gains mapped to that folder's qualities), the one the
    encoder writes for its tower when ``encoder_default``; return its sha256.

    An id names one file forever: an id already registered with other weights is refused."""
    import shutil

    from semcodec.weights import load_registry
    from semcodec.weights.editor import RegistryEditor

    layer, steps, info = load_checkpoint(source, source_id)
    source_entry = load_registry(source).semantic_layers[source_id]
    sha = source_entry.sha256
    editor = RegistryEditor(weights_dir)
    existing = editor.semantic_layer(layer_id)
    if existing and existing["sha256"] != sha:
        raise WeightsError(f"semantic layer {layer_id} exists with other weights: ship new weights under a new id")
    file = f"{layer_id}.safetensors"
    if (source / source_entry.file).resolve() != (weights_dir / file).resolve():
        shutil.copyfile(source / source_entry.file, weights_dir / file)
    entry = _entry(layer, file, sha, editor.quality_numbers, steps, info)
    if release is not None:
        entry["release"] = release
    if encoder_gains:
        entry["encoder_gains"] = list(encoder_gains)
    editor.put_semantic_layer(layer_id, entry, encoder_for=info["tower"] if encoder_default else None)
    editor.save()
    return sha
