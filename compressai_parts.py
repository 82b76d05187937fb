"""Import the parts of CompressAI semcodec uses without its package ``__init__``.

``import compressai`` (which any ``import compressai.x`` runs first) imports every submodule:
datasets, point-cloud transforms and with them torch_geometric and torch._dynamo. That costs about
2 s of every command's start-up on a 2-core CPU and prints torch_geometric's FutureWarning. The
entropy models, layers, ops and model utilities need none of it, so :func:`use_compressai_parts`
registers the ``compressai`` and ``compressai.models`` packages as bare package objects (their
submodules still import normally, from the installed files) with the entropy-coder settings the
real ``__init__`` defines. Code that then needs the rest (``compressai.zoo``, for a benchmark's
reference model) calls :func:`full_compressai` to run the real ``__init__`` files.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

from semcodec.import_parts import register_bare, run_real_inits

_BARE = ("compressai", "compressai.models", "compressai.registry")
"""Packages whose ``__init__`` pulls in the rest (the registry's imports point-cloud transforms)."""


def use_compressai_parts() -> None:
    """Register bare ``compressai`` packages (once; a no-op if compressai is already imported)."""
    if "compressai" in sys.modules:
        return
    for name in _BARE:
        if not register_bare(name):
            return  # not installed: let the ordinary import say so
    _entropy_coder_settings(sys.modules["compressai"])
    registry = sys.modules["compressai.registry"]
    decorators = importlib.import_module("compressai.registry.torch")
    registry.__dict__.update({k: v for k, v in vars(decorators).items() if not k.startswith("__")})


def full_compressai() -> ModuleType:
    """Run the real package ``__init__`` files (all of CompressAI), keeping the submodules loaded so far."""
    run_real_inits(_BARE)  # innermost first: each package's __init__ imports names from the next
    return importlib.import_module("compressai")


def _entropy_coder_settings(package: ModuleType) -> None:
    """What compressai/__init__.py defines for the entropy models (only "ans" is used here)."""
    package._entropy_coder = "ans"
    package._available_entropy_coders = ["ans"]

    def get_entropy_coder() -> str:
        return package._entropy_coder

    def available_entropy_coders() -> list[str]:
        return package._available_entropy_coders

    def set_entropy_coder(entropy_coder: str) -> None:
        if entropy_coder not in package._available_entropy_coders:
            raise ValueError(
                f'Invalid entropy coder "{entropy_coder}", choose from {package._available_entropy_coders}'
            )
        package._entropy_coder = entropy_coder

    package.get_entropy_coder = get_entropy_coder
    package.available_entropy_coders = available_entropy_coders
    package.set_entropy_coder = set_entropy_coder
