"""The one write side of ``registry.json``: every writer (training, distillation, semantic layers,
releases) edits it through these named operations, and :meth:`RegistryEditor.save` writes it
atomically only if the result parses (:func:`~semcodec.weights.parse_registry`, as loading does), so no
writer can leave a registry the codec refuses. Torch-free, like the read side.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path

from semcodec.errors import WeightsError
from semcodec.fileio import write_atomic
from semcodec.weights import REGISTRY_FILE, parse_registry


class RegistryEditor:
    """``registry.json`` of ``root`` (an empty one if there is none yet), edited in memory until :meth:`save`."""

    def __init__(self, root: Path):
        self.root = Path(root)
        path = self.root / REGISTRY_FILE
        self._raw: dict = json.loads(path.read_text()) if path.exists() else {"models": {}, "qualities": {}}

    # ---------------------------------------------------------------- reading what is there
    def model(self, name: str) -> dict:
        """The raw entry of model ``name`` (a copy; empty if it is not listed)."""
        return copy.deepcopy(self._raw["models"].get(name, {}))

    def has_model(self, name: str) -> bool:
        return name in self._raw["models"]

    def retired(self, name: str) -> bool:
        """Whether ``name`` is a released model this registry no longer ships."""
        return name in self._raw.get("retired", {})

    @property
    def quality_numbers(self) -> list[int]:
        return sorted(int(q) for q in self._raw["qualities"])

    @property
    def default_quality(self) -> int | None:
        value = self._raw.get("default_quality")
        return int(value) if value is not None else None

    def serving_model(self, quality: int) -> str | None:
        return self._raw["qualities"].get(str(quality), {}).get("model")

    def semantic_layer(self, layer_id: str) -> dict:
        return copy.deepcopy(self._raw.get("semantic_layers", {}).get(layer_id, {}))

    # ---------------------------------------------------------------- editing
    def put_model(self, name: str, entry: Mapping) -> None:
        """List model ``name`` with ``entry`` (architecture, config, file, sha256, qualities, info, ...)."""
        self._raw["models"][name] = dict(entry)

    def put_head(self, model: str, space: str, head: Mapping) -> None:
        """Record the token head of ``model`` for tower ``space``."""
        if model not in self._raw["models"]:
            raise WeightsError(f"no model {model!r} to record a {space!r} head for")
        self._raw["models"][model].setdefault("token_heads", {})[space] = dict(head)

    def serve(self, model: str, qualities: Mapping[int, tuple[int, float]], default_quality: int | None = None) -> None:
        """Make ``model`` the encoder's model for ``qualities`` (quality -> its gain index and lambda),
        keeping the other qualities as they are; ``default_quality`` if given, else the current one
        if it is still served, else the lowest of ``qualities`` (3 when it has it)."""
        table = self._raw["qualities"]
        for q, (gain, lmbda) in qualities.items():
            table[str(q)] = {"model": model, "gain_index": int(gain), "lambda": float(lmbda)}
        self._raw["qualities"] = {str(q): table[str(q)] for q in sorted(int(k) for k in table)}
        if default_quality is not None:
            self._raw["default_quality"] = int(default_quality)
        elif str(self._raw.get("default_quality")) not in self._raw["qualities"]:
            self._raw["default_quality"] = 3 if 3 in qualities else min(qualities)

    def serve_only(
        self, model: str, qualities: Mapping[int, tuple[int, float]], default_quality: int | None = None
    ) -> None:
        """Make ``model`` the encoder's model for exactly ``qualities`` (a training folder's table,
        a release that serves every quality)."""
        self._raw["qualities"] = {}
        self.serve(model, qualities, default_quality)

    def put_semantic_layer(self, layer_id: str, entry: Mapping, encoder_for: str | None = None) -> None:
        """List semantic layer ``layer_id``; ``encoder_for``: the tower the encoder writes it for."""
        self._raw.setdefault("semantic_layers", {})[layer_id] = dict(entry)
        if encoder_for is not None:
            self._raw.setdefault("encoder_semantic_layers", {})[encoder_for] = layer_id

    def put_conditioned(self, base: str, model: str) -> None:
        """Make ``model`` (which reads a semantic layer) the encoder's model in place of ``base`` for
        files that carry that layer."""
        self._raw.setdefault("encoder_conditioned", {})[base] = model

    # ---------------------------------------------------------------- writing
    def save(self) -> None:
        """Write the registry atomically, after checking that it parses as the codec will read it."""
        parse_registry(self._raw, self.root)  # raises WeightsError, one line, if any table disagrees
        text = json.dumps(self._raw, indent=2, sort_keys=False) + "\n"
        write_atomic(self.root / REGISTRY_FILE, text.encode(), force=True)
