"""What a token head is measured against: the tower's answers on the original image, and the
token distance. Shared by distillation (which trains the head) and the refining encoder (which
steers the latent for a fixed head), so both minimise the same thing."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from semcodec.models.token_head import latent_tokens
from semcodec.models.towers import VisionTower


def teacher_answers(tower: VisionTower, x: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
    """``(head target, final tokens, logits)`` of the tower on images ``x``: the head target is
    the split map as tokens for a tower with a split point, else the tokens."""
    prepared = tower.prepare(x)
    if tower.split_dim is not None:
        features = tower.features(prepared)
        tokens = tower.tail(features)
        target = latent_tokens(features)
    else:
        tokens = target = tower.tokens(prepared)
    classify = getattr(tower, "classify", None)
    return target, tokens, (classify(tokens) if classify is not None else None)


def token_loss(pred: Tensor, target: Tensor) -> dict[str, Tensor]:
    """``1 - cosine`` per token plus the MSE relative to the target's variance."""
    rel_mse = (pred - target).pow(2).mean() / target.var().clamp_min(1e-8)
    cos = F.cosine_similarity(pred, target, dim=-1).mean()
    return {"rel_mse": rel_mse, "cosine": cos}


def classifier_kl(logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """KL divergence (B,) from the tower's output distribution on the original (``teacher_logits``)
    to the one on the prediction: the classifier's answer as a distortion, never the labels."""
    return F.kl_div(
        F.log_softmax(logits, -1), F.log_softmax(teacher_logits, -1), log_target=True, reduction="none"
    ).sum(-1)
