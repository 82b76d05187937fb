"""Joint training with the machine in the distortion: ``R + lambda_q * (255^2 * MSE + w * D_tokens)``.

The survey this project follows (arXiv 2508.13460) calls it the shared objective: J = R + lambda * D,
D the distortion of whoever consumes the result. Trained for pixel MSE alone, the analysis transform
has no reason to put what a vision tower needs into the base layer, and a head distilled afterwards
with the codec frozen can only read what is there. Here the transforms, the entropy model and the
token head learn together: ``D_tokens`` is measured from the head on the **base layer** (the
latent a tokens decoder rebuilds from the file's prefix: base channels coded, the rest the
hyperprior's means) against the frozen tower's answer on the original crop, never the labels.

It is the refining encoder's objective (:mod:`semcodec.codec.refine`) made a training loss, per crop:
the split map's standardised MSE, ``1 - cosine`` and the relative MSE of the tower's tokens, plus
(towers with a classifier) the KL divergence from the tower's output distribution on the original,
as distillation has it. Both distortions trade against the rate through the same lambda, so the
machine's share of the bits does not shrink as the quality grows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semcodec.codec.token_targets import classifier_kl, teacher_answers
from semcodec.errors import WeightsError
from semcodec.models.semantic_hyperprior import SemanticHyperprior
from semcodec.models.token_head import TokenHead, build_head, token_map
from semcodec.models.towers import VisionTower
from semcodec.weights import Registry, load_verified


@dataclass
class TokenObjective:
    """The trainable head (the adapter of a split head) and the frozen tower it answers to."""

    space: str
    head: TokenHead
    tower: VisionTower
    weight: float
    record: dict
    """The registry record of the head it started from (architecture, grid, split point)."""

    @property
    def split(self) -> bool:
        return bool(self.record.get("split"))


def load_objective(
    registry: Registry,
    model_name: str,
    model: SemanticHyperprior,
    space: str,
    weight: float,
    tower_weights: Path | None = None,
) -> TokenObjective:
    """The head ``model_name`` has for tower ``space`` (the start; it trains on) and the tower itself."""
    from semcodec.weights.towers import check_tower_hash, load_tower

    entry = registry.model(model_name)
    if space not in entry.token_heads:
        have = ", ".join(entry.token_heads) or "none"
        raise WeightsError(f"{model_name} has no token head for {space!r} to train jointly (heads: {have})")
    record = entry.token_heads[space]
    tower = load_tower(space, tower_weights)
    check_tower_hash(tower, record.tower_sha256)
    if record.split:
        tower.set_split(record.split_block)
    tower.eval().requires_grad_(False)
    head = build_head(model, record.target_dim, record.target_grid, record.arch)
    head.load_state_dict(load_verified(registry.root / record.file, record.sha256))
    return TokenObjective(space, head, tower, weight, dict(record.record))


def base_layer_grid(model: SemanticHyperprior, out: dict, quality: Tensor, height: int, width: int) -> Tensor:
    """The semantic grid a tokens decoder rebuilds from the base layer of a training pass ``out``."""
    cb = model.base_channels
    base = torch.cat([out["y_hat"][:, :cb], out["means"][:, cb:]], dim=1)
    return model.semantic_grid(base, quality, height, width)


def token_distortion(objective: TokenObjective, grid: Tensor, images: Tensor) -> dict[str, Tensor]:
    """Per crop (B,): ``distortion`` (what the loss weighs) and its parts, against the tower's answer
    on the original ``images``."""
    head, tower = objective.head, objective.tower
    with torch.no_grad():
        target, tokens, teacher_logits = teacher_answers(tower, images)
    parts: dict[str, Tensor] = {}
    if objective.split:
        standardised = head.standardised(grid)
        goal = (target - head.target_mean) / head.target_std
        parts["feature_mse"] = (standardised - goal).pow(2).flatten(1).mean(1)
        pred = tower.tail(token_map(standardised * head.target_std + head.target_mean, head.grid))
    else:
        pred = head(grid)
    parts["cosine"] = F.cosine_similarity(pred, tokens, dim=-1).mean(1)
    parts["rel_mse"] = (pred - tokens).pow(2).flatten(1).mean(1) / tokens.flatten(1).var(1).clamp_min(1e-8)
    parts["distortion"] = parts.get("feature_mse", 0.0) + 1 - parts["cosine"] + parts["rel_mse"]
    if teacher_logits is not None:  # the tower's own output distribution, never the labels
        parts["kl"] = classifier_kl(tower.classify(pred), teacher_logits)
        parts["distortion"] = parts["distortion"] + parts["kl"]
    return parts


def joint_parameters(objective: TokenObjective) -> list[nn.Parameter]:
    return list(objective.head.parameters())
