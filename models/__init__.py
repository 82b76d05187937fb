"""nn.Modules only: transforms, entropy models and heads. No bytes, no files."""

from semcodec.models.layers import WindowedTransformer
from semcodec.models.semantic_hyperprior import SemanticHyperprior, SemanticHyperpriorConfig
from semcodec.models.token_head import TokenHead

ARCHITECTURES = {"semantic-hyperprior": (SemanticHyperprior, SemanticHyperpriorConfig)}
"""Architecture name (as written in the weights registry) -> (module class, config dataclass)."""

__all__ = [
    "ARCHITECTURES",
    "SemanticHyperprior",
    "SemanticHyperpriorConfig",
    "TokenHead",
    "WindowedTransformer",
]
