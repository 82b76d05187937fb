"""What the semantic layer serves a machine: the tower's view of the photo and the tokens it keeps.

**Geometry** (format 4 on). The tower sees the whole photo at its own shape: the short side at the
tower's input size, the long side at the photo's aspect (up to :data:`MAX_ASPECT`), both multiples
of the token stride, so the token grid is whole. Measured 2026-12-07 on all 1,000 imagenet-sample
photos (938 not square), EfficientNet-Lite0's top-1 on the original: squashed to 224 x 224 (format
3) 0.826, padded to a square 0.784, centre crop 0.867, whole at its shape 0.860. The centre crop
drops a third of a 3:2 photo; a codec serves the whole photo, so: its shape, nothing cropped.

**Which tokens** (``--tokens N``). The encoder runs the tower's tail on the original map and keeps
the N tokens with the most evidence for the tower's own top class (class activation mapping, Zhou
et al. 2016: token ``t_i``'s logit share ``w_c . t_i``). Measured on the bench's 100 centre crops
(original tokens, classifier on the mean of the kept ones): class evidence 0.90 / 0.90 / 0.87 top-1
at N = 32 / 16 / 8, activation energy (the token's norm) 0.88 / 0.89 / 0.81, the centre tokens
0.88 / 0.84 / 0.75. Towers without a classifier rank by energy.

**How many bytes** (layers with ``encoder_gains``). The encoder codes the layer at the lowest gain
whose rebuilt map still gives the tower's answer on the original (:func:`keeps_answer`): rate
allocated by what the machine needs, per photo, as a target-quality encoder does for pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch-free at import: the CLI's checks read tower_geometry before torch loads
    from torch import Tensor, nn

    from semcodec.models.towers import VisionTower

MAX_ASPECT = 2.0
"""Wider photos (panoramas) are squashed to this aspect: the token count stays bounded (98 at 224 px)."""


def tower_geometry(height: int, width: int, short: int, multiple: int) -> tuple[int, int]:
    """The tower input (rows, columns) for a ``height x width`` photo: the short side ``short``, the
    long one at the photo's aspect (at most :data:`MAX_ASPECT`), both multiples of ``multiple``."""
    aspect = min(max(height, width) / min(height, width), MAX_ASPECT)
    long = max(short, int(short * aspect / multiple + 0.5) * multiple)
    return (short, long) if height <= width else (long, short)


def token_importance(tokens: Tensor, classifier: nn.Linear | None) -> Tensor:
    """Per token (N,), how much the machine's answer rests on it: evidence for the tower's own top
    class (``classifier`` on the mean token), else the token's norm."""
    if classifier is None:
        return tokens.norm(dim=-1)
    top = int(classifier(tokens.mean(dim=0)).argmax())
    return tokens @ classifier.weight[top]


def kept_tokens(importance: Tensor, keep: int) -> tuple[int, ...]:
    """The flat indices of the ``keep`` most important tokens, in grid order (ties: the earlier)."""
    order = importance.argsort(descending=True, stable=True)[:keep]
    return tuple(sorted(int(i) for i in order))


def keeps_answer(tower: VisionTower, features: Tensor) -> Callable[[Tensor], bool]:
    """Whether a rebuilt split map gives the tower's answer (its classifier's top class) on the
    original map ``features``; for a tower with a classifier."""
    answer = tower.classify(tower.tail(features)).argmax(-1)
    return lambda rebuilt: bool((tower.classify(tower.tail(rebuilt)).argmax(-1) == answer).all())
