"""Encoder defaults the API, the CLI and batch all read (torch-free, so the CLI's help can show them)."""

DEFAULT_REFINE_STEPS = 0
"""Encoder refinement is opt-in: the default encode is one analysis pass (well under a second for a
Kodak image on a 2-core CPU), the same file from ``semcodec.encode``, ``semcodec encode`` and
``semcodec batch encode``. A model trained jointly with a tower (``semcodec train --token-space``)
carries the machine's tokens in its base layer without it; refinement buys more at seconds per image."""

TOKEN_DTYPES = ("fp32", "fp16")
DEFAULT_TOKEN_DTYPE = "fp32"
"""Token files (``decode --target tokens``, ``batch decode --target tokens``) hold the head's float32
values unless ``--dtype fp16`` asks for half the bytes."""

SUGGESTED_REFINE_STEPS = 40
"""The step count the docs suggest for opt-in refinement (``--refine-steps 40``): 8 s per 224 px crop
on one core, where the straight-through objective has settled (docs/tokens.md)."""

EFFORT_REFINE_STEPS = (0, 10, 40)
"""``--effort N`` -> encoder refinement steps (as avifenc's ``--speed`` or cjxl's ``-e``, but higher is
slower). Same format, same decoder. Chosen from ``python -m semcodec.bench effort`` (vit-hp-192,
kodim01-03, 2026-12-06, docs/results.md): 10 steps -0.4% BD-rate, 40 steps -1.4%, 150 steps -1.45%
for four times 40's encode time, so the levels stop at 40: beyond it the straight-through refinement
has settled (it spends more bits at quality 4 for PSNR worth about as much)."""
DEFAULT_EFFORT = 0

SEMANTIC_REACH = 0
"""In a file encoded for N tokens (``--tokens N`` with a semantic layer), the layer codes the latent
positions within this Chebyshev distance of a kept token (its latent grid is the token grid): 0, the
kept tokens' own positions. The tower's tail mixes neighbours (its receptive field spans the whole
7 x 7 grid), so the encoder fits those positions' latent to the kept tokens (:data:`SEMANTIC_FIT_STEPS`)
rather than coding the neighbours: docs/tokens.md has the measurement that chose both."""

SEMANTIC_FIT_STEPS = 40
"""Adam steps of the pruned semantic layer's fit (about 1 s on one core for a 224 px crop)."""
