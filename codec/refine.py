"""Encoder-side latent refinement: spend encode time to lower ``R + lambda * D`` of one image.

The analysis transform is amortised: one network guesses every image's latent, and a guess is not
the best latent for *this* image under the decoder that will read it (Campos et al. 2019,
"Content Adaptive Optimization for Neural Image Compression"; Yang et al. 2020, "Improving
Inference for Neural Image Compression"). Refinement starts from ``g_a``'s latent and takes a few
Adam steps on the latent itself, with the decoder, the hyperprior and the entropy model fixed, so
the file format and the decoder do not change: only the encoder gets slower.

The objective is the training loss of the quality's lambda, ``bpp + lambda * 255^2 * MSE``; when
the file serves a machine (a token space with a distilled head) the distortion gains a second
term, ``bpp + lambda * (255^2 * MSE + weight * semantic(grid))``: the distance between what the
head makes of the *base layer* (the bytes a tokens decoder reads) and the tower's answer on the
original image, which only the encoder has. Both distortions trade against the rate through the
same lambda, so the machine's share of the bits does not shrink as the quality (lambda) grows. This
is the semantic base layer steered by the encoder: bits go where the machine's answer needs them.

Quantisation is straight-through rounding around the (context-refined) means, as the decoder
rounds; the rate is the discrete likelihood of the rounded values (gradients pass by the STE), and
z is re-derived from the refined latent at every step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semcodec.codec.defaults import EFFORT_REFINE_STEPS
from semcodec.codec.token_targets import classifier_kl, teacher_answers, token_loss
from semcodec.models.semantic_hyperprior import SemanticHyperprior
from semcodec.models.token_head import SplitTokenHead, token_map
from semcodec.models.towers import VisionTower

SemanticLoss = Callable[[Tensor], Tensor]
"""Base-layer semantic grid (1, C, h, w), gain undone and cropped to the image -> scalar loss."""


@dataclass(frozen=True)
class RefineConfig:
    steps: int
    lr: float = 0.002  # Adam; larger steps flip many roundings at once and the STE objective jumps
    # (0.01 suited vit-hp-small; on vit-hp-192 at 106,603 steps, 40 steps on a kodim23 crop reached
    # 0.2720 / 0.2700 / 0.2726 from 0.2732 at lr 0.001 / 0.002 / 0.003)
    semantic_weight: float = 170.0
    """The semantic distance's weight next to ``255^2 * MSE``, both times lambda: 0.31 against the
    rate at quality 1 (lambda 0.0018), 2.2 at quality 4 (0.013)."""
    max_pixels: int = 1024 * 1024
    """Larger images are coded without refinement (and say so): autograd runs through the decoder
    and the tower at full size, about 1.1 GB and, on one core, 2.5 min per megapixel for 40 steps."""

    @classmethod
    def for_effort(cls, effort: int) -> RefineConfig:
        """The refinement of encoder effort level ``effort`` (``--effort``)."""
        if not 0 <= effort < len(EFFORT_REFINE_STEPS):
            raise ValueError(f"effort {effort} outside 0..{len(EFFORT_REFINE_STEPS) - 1}")
        return cls(steps=EFFORT_REFINE_STEPS[effort])


def refine_latent(
    model: SemanticHyperprior,
    x: Tensor,
    y: Tensor,
    gain_index: int,
    lmbda: float,
    size: tuple[int, int],
    config: RefineConfig,
    semantic: SemanticLoss | None = None,
    keep: Tensor | None = None,
    progress: bool = False,
    condition: Tensor | None = None,
) -> tuple[Tensor, list[dict[str, float]]]:
    """The refined gained latent (same shape as ``y``) and the objective's terms per step.

    ``x``: the padded image (1, 3, H, W) in [0, 1]; ``size``: the image's own (h, w) (the padding
    is not scored); ``keep`` (1, 1, h, w) bool: the tokens a file pruned with ``--tokens N`` codes (the
    others decode as the prior's means, cost nothing and get no say). Returns the latent of the best
    step seen (the objective is noisy under STE).
    Needs grad mode: call outside ``torch.inference_mode``. ``progress``: a bar on stderr (seconds per step).
    ``condition``: the decoded semantic latent on y's grid, for a model that reads it.
    """
    from tqdm import tqdm

    h, w = size
    target = x[:, :, :h, :w]
    pixels = h * w
    latent = y.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([latent], lr=config.lr)
    best, best_loss, history = latent.detach().clone(), math.inf, []
    for step in tqdm(range(config.steps + 1), desc="refine", unit="step", disable=not progress, leave=False):
        terms = objective(
            model, latent, target, gain_index, lmbda, pixels, semantic, config.semantic_weight, keep, condition
        )
        loss = terms["loss"]
        history.append({k: float(v.detach()) for k, v in terms.items()})
        if float(loss.detach()) < best_loss:
            best_loss, best = float(loss.detach()), latent.detach().clone()
        if step == config.steps:
            break
        for group in optimizer.param_groups:  # cosine decay: large moves first, settle at the end
            group["lr"] = config.lr * 0.5 * (1 + math.cos(math.pi * step / config.steps))
        (grad,) = torch.autograd.grad(loss, [latent])  # the model's parameters get no gradient
        latent.grad = grad
        optimizer.step()
    return best, history


def objective(
    model: SemanticHyperprior,
    y: Tensor,
    target: Tensor,
    gain_index: int,
    lmbda: float,
    pixels: int,
    semantic: SemanticLoss | None = None,
    semantic_weight: float = RefineConfig.semantic_weight,
    keep: Tensor | None = None,
    condition: Tensor | None = None,
) -> dict[str, Tensor]:
    """``bpp + lambda * (255^2 * MSE [+ weight * semantic])`` of latent ``y`` as the decoder would see it."""
    out = model.entropy_forward(y, rate="rounded", keep=keep, semantic=condition)
    y_hat, means = out["y_hat"], out["means"]
    bits = sum(-torch.log2(likelihood).sum() for likelihood in out["likelihoods"].values())
    x_hat = model.synthesis(y_hat, gain_index)[:, :, : target.shape[2], : target.shape[3]]
    mse = (x_hat - target).pow(2).mean()
    bpp = bits / pixels
    terms = {"bpp": bpp, "mse": mse, "loss": bpp + lmbda * 255**2 * mse}
    if semantic is not None:
        cb = model.base_channels
        base = torch.cat([y_hat[:, :cb], means[:, cb:]], dim=1)  # what a tokens decoder rebuilds
        grid = model.semantic_grid(base, gain_index, target.shape[2], target.shape[3])
        terms["semantic"] = semantic(grid)
        terms["loss"] = terms["loss"] + lmbda * semantic_weight * terms["semantic"]
    return terms


def token_fidelity(head: nn.Module, tower: VisionTower, image: Tensor, classifier: bool = False) -> SemanticLoss:
    """The semantic term for a file that serves ``tower``'s token space through ``head``.

    The tower's answer on the original ``image`` (1, 3, h, w) is the target; the loss is what
    distillation minimised: ``1 - cosine`` and relative MSE of the tokens, the standardised MSE
    of the split map for a head that ends in the tower's own tail, and the KL divergence of the
    tower's classifier when ``classifier`` is asked for and the tower has one (off by default: then
    the classifier's answer is not optimised for, and measuring it stays a fair test of the tokens).
    """
    split = isinstance(head, SplitTokenHead)
    with torch.no_grad():
        target, tokens, logits = teacher_answers(tower, image)
        if split:
            adapter = head.adapter
            target_map = (target - adapter.target_mean) / adapter.target_std
    classify = tower.classify if classifier and logits is not None else None

    def loss(grid: Tensor) -> Tensor:
        if split:
            standardised = adapter.standardised(grid)
            pred = tower.tail(token_map(standardised * adapter.target_std + adapter.target_mean, adapter.grid))
            value = F.mse_loss(standardised, target_map)
        else:
            pred, value = head(grid), grid.new_zeros(())
        distance = token_loss(pred, tokens)
        value = value + 1 - distance["cosine"] + distance["rel_mse"]
        if classify is not None:
            value = value + classifier_kl(classify(pred), logits).mean()
        return value

    return loss
