"""nn.Modules only: transforms, entropy models and heads. No bytes, no files."""

from semcodec.compressai_parts import use_compressai_parts

use_compressai_parts()  # before any compressai import: its entropy models and layers, not its datasets

from semcodec.models.layers import WindowedTransformer  # noqa: E402
from semcodec.models.semantic_hyperprior import SemanticHyperprior, SemanticHyperpriorConfig  # noqa: E402
from semcodec.models.token_head import TokenHead  # noqa: E402

ARCHITECTURES = {"semantic-hyperprior": (SemanticHyperprior, SemanticHyperpriorConfig)}
"""Architecture name (as written in the weights registry) -> (module class, config dataclass)."""

__all__ = [
    "ARCHITECTURES",
    "SemanticHyperprior",
    "SemanticHyperpriorConfig",
    "TokenHead",
    "WindowedTransformer",
]
