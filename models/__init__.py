"""nn.Modules only: transforms, entropy models and heads. No bytes, no files."""

from semcodec.compressai_parts import use_compressai_parts
from semcodec.import_parts import use_light_imports

use_compressai_parts()  # before any compressai import: its entropy models and layers, not its datasets
use_light_imports()  # before timm: the torchvision parts timm's layers use, scipy.stats when first used

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
