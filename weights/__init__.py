"""Weights registry: one table (``registry.json``) maps quality levels to models and files.

``registry.json`` is the single source of truth: per model its architecture name and config, the
safetensors file, its sha256, what it was trained on, the quality levels *it* serves (quality number
-> gain index and lambda) and, once shipped, the semcodec ``release`` that froze it; per current
quality level the model the encoder uses. Every load verifies the sha256 of the file before using it.

Released models are immutable (README, "Compatibility"): a model id names one weights file forever,
so a file written by any release names a model that every later release still has. The decoder
reads a file with the model (and that model's own quality table) the file names; the encoder writes
with the current ``qualities``. ``retired`` lists released models a release no longer ships, with
the releases that have them, so a file that names one gets a useful one-line answer.

Importing this module does not import torch (``semcodec --version`` and ``info`` read the registry).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from semcodec.errors import WeightsError
from semcodec.fileio import sha256_file, write_atomic

if TYPE_CHECKING:
    import torch

WEIGHTS_DIR = Path(__file__).resolve().parent
REGISTRY_FILE = "registry.json"
PIXELS_ONLY = "none"
"""``--token-space none`` / ``token_space="none"``: a file without a semantic layer (pixels only)."""
HALF_PRECISION_MIN_NUMEL = 1024
"""Float tensors at least this large are stored as float16 (halves the file); small ones (GDN
pedestals, gains, entropy-model parameters) stay float32."""


@dataclass(frozen=True)
class QualityLevel:
    quality: int
    model: str
    gain_index: int
    lmbda: float


@dataclass(frozen=True)
class TokenHeadEntry:
    """A token head distilled for one model's weights (``codec_sha256``) and one tower: what it
    predicts (``target_dim`` x ``target_grid``: the tower's tokens, or for a split head the tower's
    map at ``split_block``, which the tower's own tail then finishes), its file and training record."""

    file: str
    sha256: str
    tower_sha256: str | None
    layer: str | None
    grid: tuple[int, int]
    dim: int
    split: bool = False
    split_block: int | None = None
    head_grid: tuple[int, int] | None = None
    head_dim: int | None = None
    arch: dict = field(default_factory=dict)
    codec_sha256: str | None = None
    record: dict = field(default_factory=dict, compare=False)
    """The registry's entry as written (training figures included), for writers that copy it on."""

    @property
    def target_dim(self) -> int:
        return self.head_dim if self.head_dim is not None else self.dim

    @property
    def target_grid(self) -> tuple[int, int]:
        return self.head_grid if self.head_grid is not None else self.grid

    @classmethod
    def from_record(cls, record: dict) -> TokenHeadEntry:
        return cls(
            file=record["file"],
            sha256=record["sha256"],
            tower_sha256=record.get("tower_sha256"),
            layer=record.get("layer"),
            grid=tuple(record["grid"]),
            dim=int(record["dim"]),
            split=bool(record.get("split", False)),
            split_block=record.get("split_block"),
            head_grid=tuple(record["head_grid"]) if record.get("head_grid") is not None else None,
            head_dim=record.get("head_dim"),
            arch=dict(record.get("arch") or {}),
            codec_sha256=record.get("codec_sha256"),
            record=dict(record),
        )


@dataclass(frozen=True)
class SemanticCondition:
    """What a pixel model that reads the semantic layer was trained with: the layer (by id and
    weights) whose decoded latent its entropy model reads, and the pixel model it grew from, which
    codes files without that layer."""

    layer: str
    layer_sha256: str
    base: str

    @property
    def layer_hash(self) -> bytes:
        return bytes.fromhex(self.layer_sha256[:16])


@dataclass(frozen=True)
class ModelEntry:
    name: str
    architecture: str
    config: dict
    file: str
    sha256: str
    token_space: str
    info: dict
    token_heads: dict[str, TokenHeadEntry]
    qualities: dict[int, QualityLevel] = field(default_factory=dict)
    """The quality numbers this model's files carry -> its gain index and lambda (frozen with it)."""
    release: str | None = None
    """The semcodec release that shipped (and froze) this model; ``None``: a training checkpoint."""
    semantic_condition: SemanticCondition | None = None
    """Set for a model whose entropy model reads a semantic layer: it codes only files carrying it."""

    @property
    def short_hash(self) -> bytes:
        """The 8-byte weights hash written into every bitstream made with this model."""
        return bytes.fromhex(self.sha256[:16])

    @property
    def frozen(self) -> bool:
        return self.release is not None

    def level(self, quality: int) -> QualityLevel | None:
        """The gain index and lambda of ``quality`` in this model's own table, or ``None``."""
        return self.qualities.get(quality)

    def check_token_space(self, space: str | None, semantic: tuple[str, ...] = ()) -> None:
        """``space`` (if given) is this model's latent space, one it has a head for or one of the
        ``semantic`` layers' towers, else one clear line."""
        spaces = [self.token_space, *self.token_heads, *(t for t in semantic if t not in self.token_heads)]
        if space is not None and space not in spaces:
            choices = ", ".join(spaces)
            raise WeightsError(f"unknown token space {space!r} for model {self.name} (choose from {choices})")


@dataclass(frozen=True)
class SemanticLayerEntry:
    """A semantic base layer: codes tower ``tower``'s map after block ``split_block`` at the encoder
    (:mod:`semcodec.models.semantic_layer`). Frozen like a model once released: an id names one file."""

    name: str
    file: str
    sha256: str
    tower: str
    tower_sha256: str
    split_block: int
    config: dict
    gain_index: dict[int, int]
    """File quality -> this layer's gain index (the encoder's table; files record the index they used)."""
    info: dict
    release: str | None = None
    encoder_gain: int | None = None
    """The gain index the encoder uses at every file quality (``None``: :attr:`gain_index` per
    quality). The machine's answer hardly follows the pixel quality (sem-lite0-b7: top-1 0.86 at
    gain 0, 1,049 bytes; 0.87 at gain 2, 1,656 bytes), so its layer need not either."""
    encoder_gains: tuple[int, ...] | None = None
    """Gain indices the encoder tries, fewest bytes first (overrides :attr:`encoder_gain`): the first
    whose decoded tokens keep the tower's answer on the original is coded, the last when none does
    (or when the tower has no classifier). A photo the machine reads easily costs the fewest bytes."""

    def encoder_gain_for(self, quality: int) -> int | None:
        """The gain index a new file of pixel ``quality`` codes this layer at (``None``: none fits);
        with :attr:`encoder_gains`, the last (most bytes) of them."""
        if self.encoder_gains:
            return self.encoder_gains[-1]
        return self.encoder_gain if self.encoder_gain is not None else self.gain_index.get(quality)

    def encoder_gains_for(self, quality: int) -> tuple[int, ...]:
        """The gain indices the encoder tries for pixel ``quality``, fewest bytes first (empty: none fits)."""
        if self.encoder_gains:
            return self.encoder_gains
        gain = self.encoder_gain_for(quality)
        return () if gain is None else (gain,)

    @property
    def short_hash(self) -> bytes:
        return bytes.fromhex(self.sha256[:16])


@dataclass(frozen=True)
class Registry:
    root: Path
    models: dict[str, ModelEntry]
    qualities: dict[int, QualityLevel]
    default_quality: int
    retired: dict[str, dict] = field(default_factory=dict)
    """Released models this folder no longer ships: id -> {"sha256", "releases", ...}."""
    semantic_layers: dict[str, SemanticLayerEntry] = field(default_factory=dict)
    encoder_semantic_layers: dict[str, str] = field(default_factory=dict)
    """Token space -> the semantic layer the encoder writes for it (absent: none, the head alone)."""
    default_token_space: str | None = None
    """The token space a file carries when the encoder is not told one: its semantic layer is in
    every default file (``None``: pixel-only files by default)."""
    encoder_conditioned: dict[str, str] = field(default_factory=dict)
    """Pixel model -> the model the encoder uses instead for a file that carries the semantic layer
    that model reads (:class:`SemanticCondition`); pixel-only files keep the pixel model."""

    def conditioned_model(self, model_name: str, layer_name: str) -> ModelEntry | None:
        """The model the encoder codes ``model_name``'s qualities with in a file carrying semantic
        layer ``layer_name`` (``None``: ``model_name`` itself)."""
        name = self.encoder_conditioned.get(model_name)
        if name is None or self.models[name].semantic_condition.layer != layer_name:
            return None
        return self.models[name]

    def requested_space(self, token_space: str | None) -> str | None:
        """The token space an encode asked for ``token_space`` writes: the registry's default when
        none is given, ``None`` (the model's own latent space, no semantic layer) for ``"none"``."""
        if token_space is None:
            return self.default_token_space
        return None if token_space == PIXELS_ONLY else token_space

    def check_encode_space(self, model_name: str, space: str | None) -> None:
        """``space`` can be encoded with ``model_name``: its own spaces or one a semantic layer serves."""
        self.model(model_name).check_token_space(space, tuple(self.encoder_semantic_layers))

    def semantic_layer_for(self, space: str) -> SemanticLayerEntry | None:
        """The semantic layer the encoder writes for token space ``space``, if any."""
        name = self.encoder_semantic_layers.get(space)
        return self.semantic_layers[name] if name is not None else None

    def decoding_semantic_layer(self, name: str, weights_hash: bytes) -> SemanticLayerEntry:
        """The semantic layer a file names, with the weights that wrote it, or a clear refusal."""
        from semcodec.errors import BitstreamError

        entry = self.semantic_layers.get(name)
        if entry is None:
            raise BitstreamError(
                f"bitstream's semantic layer {name!r} is not installed (installed: "
                f"{', '.join(self.semantic_layers) or 'none'}); a later semcodec release has it"
            )
        if weights_hash != entry.short_hash:
            raise BitstreamError(
                f"bitstream's semantic layer {name} was written by weights {weights_hash.hex()}, "
                f"installed weights are {entry.short_hash.hex()}"
            )
        return entry

    def quality(self, q: int) -> QualityLevel:
        if q not in self.qualities:
            raise WeightsError(f"quality {q} is not available (choose from {sorted(self.qualities)})")
        return self.qualities[q]

    def model(self, name: str) -> ModelEntry:
        if name not in self.models:
            raise WeightsError(f"model {name!r} is not in the weights registry {self.root / REGISTRY_FILE}")
        return self.models[name]

    def missing_model_message(self, model_id: str) -> str:
        """One line for a file whose model is not installed: which release has it, if known."""
        from semcodec import __version__

        retired = self.retired.get(model_id)
        if retired is not None:
            releases = retired.get("releases", "an earlier release")
            return (
                f"bitstream was written by model {model_id!r}, which semcodec {__version__} no longer ships; "
                f"semcodec {releases} decodes it (pip install 'semcodec=={retired.get('last_release', '')}')"
            )
        if self.root.resolve() != WEIGHTS_DIR:
            return (
                f"bitstream was written by model {model_id!r}, which the weights folder {self.root} does not "
                f"have (it has: {', '.join(self.models)})"
            )
        return (
            f"bitstream was written by model {model_id!r}, which semcodec {__version__} does not have "
            f"(installed: {', '.join(self.models)}); a later semcodec release ships it: pip install -U semcodec"
        )

    def decoding_model(self, model_id: str, weights_hash: bytes) -> ModelEntry:
        """The model a file names, installed with the weights that wrote it, or a clear refusal."""
        from semcodec.errors import BitstreamError

        if model_id not in self.models:
            raise BitstreamError(self.missing_model_message(model_id))
        if weights_hash != self.models[model_id].short_hash:
            raise BitstreamError(self.foreign_weights_message(model_id, weights_hash))
        return self.models[model_id]

    def foreign_weights_message(self, model_id: str, weights_hash: bytes) -> str:
        """One line for a file that names an installed model id but other weights."""
        entry = self.model(model_id)
        if entry.frozen:
            return (
                f"bitstream was written by {model_id} weights {weights_hash.hex()}, which no release shipped "
                f"(semcodec {entry.release} froze {model_id} at {entry.short_hash.hex()}); files written by "
                "development weights before a model was released cannot be decoded: re-encode the original"
            )
        return (
            f"bitstream was written by {model_id} weights {weights_hash.hex()}, "
            f"installed weights are {entry.short_hash.hex()}"
        )


def default_weights_dir() -> Path:
    """``$SEMCODEC_WEIGHTS`` if set (a folder with a registry.json), else the packaged weights."""
    return Path(os.environ.get("SEMCODEC_WEIGHTS", WEIGHTS_DIR))


def load_registry(root: Path | str | None = None) -> Registry:
    root = Path(root) if root is not None else default_weights_dir()
    path = root / REGISTRY_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise WeightsError(f"no weights registry at {path}") from None
    except ValueError as exc:
        raise WeightsError(f"weights registry {path} is malformed: {exc}") from None
    return parse_registry(raw, root)


def parse_registry(raw: dict, root: Path) -> Registry:
    """The registry ``raw`` (``registry.json``'s content) describes, for the weights in ``root``;
    a table that does not fit is one clear line (also the registry editor's check before it writes)."""
    path = root / REGISTRY_FILE
    try:
        qualities = {
            int(q): QualityLevel(int(q), v["model"], int(v["gain_index"]), float(v["lambda"]))
            for q, v in raw["qualities"].items()
        }
        models = {name: _model_entry(name, m, qualities) for name, m in raw["models"].items()}
        # a training folder that holds only a semantic layer serves no quality (0: none)
        default = int(raw.get("default_quality", min(qualities, default=0)))
        retired = dict(raw.get("retired", {}))
        semantic = {name: _semantic_entry(name, v) for name, v in raw.get("semantic_layers", {}).items()}
        encoder_semantic = {str(k): str(v) for k, v in raw.get("encoder_semantic_layers", {}).items()}
        unknown = sorted(set(encoder_semantic.values()) - set(semantic))
        if unknown:
            raise KeyError(f"encoder_semantic_layers names unknown layers {unknown}")
        default_space = raw.get("default_token_space")
        if default_space is not None and default_space not in encoder_semantic:
            raise KeyError(f"default_token_space {default_space!r} has no encoder semantic layer")
        conditioned = {str(k): str(v) for k, v in raw.get("encoder_conditioned", {}).items()}
        for base, name in conditioned.items():
            condition = models[name].semantic_condition if name in models else None
            if condition is None or condition.base != base or condition.layer not in semantic:
                raise KeyError(f"encoder_conditioned: {name!r} is no installed model reading a layer for {base!r}")
            if models[name].qualities != {q: _with_model(v, name) for q, v in models[base].qualities.items()}:
                raise KeyError(f"encoder_conditioned: {name!r} has not the quality table of {base!r}")
    except (ValueError, KeyError, TypeError) as exc:
        raise WeightsError(f"weights registry {path} is malformed: {exc}") from None
    for level in qualities.values():
        own = models[level.model].level(level.quality) if level.model in models else None
        if own is None or own.gain_index != level.gain_index:
            # a quality may move to a newer model, but never redefine what a model's files mean
            raise WeightsError(
                f"weights registry {path} is malformed: quality {level.quality} disagrees with "
                f"model {level.model!r}'s own quality table"
            )
    return Registry(root, models, qualities, default, retired, semantic, encoder_semantic, default_space, conditioned)


def _with_model(level: QualityLevel, model: str) -> QualityLevel:
    return QualityLevel(level.quality, model, level.gain_index, level.lmbda)


def _model_entry(name: str, m: dict, current: dict[int, QualityLevel]) -> ModelEntry:
    """A model's entry; a model without its own quality table (a training checkpoint written
    before tables were per model) takes the current levels that point at it."""
    if "qualities" in m:
        own = {
            int(q): QualityLevel(int(q), name, int(v["gain_index"]), float(v["lambda"]))
            for q, v in m["qualities"].items()
        }
    else:
        own = {q: level for q, level in current.items() if level.model == name}
    return ModelEntry(
        name=name,
        architecture=m["architecture"],
        config=m["config"],
        file=m["file"],
        sha256=m["sha256"],
        token_space=m.get("token_space", "semcodec-latent"),
        info=m.get("info", {}),
        token_heads={space: TokenHeadEntry.from_record(h) for space, h in m.get("token_heads", {}).items()},
        qualities=own,
        release=m.get("release"),
        semantic_condition=SemanticCondition(**m["semantic_condition"]) if m.get("semantic_condition") else None,
    )


def _semantic_entry(name: str, v: dict) -> SemanticLayerEntry:
    return SemanticLayerEntry(
        name=name,
        file=v["file"],
        sha256=v["sha256"],
        tower=v["tower"],
        tower_sha256=v["tower_sha256"],
        split_block=int(v["split_block"]),
        config=v["config"],
        gain_index={int(q): int(g) for q, g in v["gain_index"].items()},
        info=v.get("info", {}),
        release=v.get("release"),
        encoder_gain=int(v["encoder_gain"]) if v.get("encoder_gain") is not None else None,
        encoder_gains=tuple(int(g) for g in v["encoder_gains"]) if v.get("encoder_gains") else None,
    )


def head_file_name(model_name: str, space: str) -> str:
    """The file of ``model_name``'s token head for tower ``space`` (one name, wherever heads are written)."""
    slug = "".join(c if c.isalnum() or c in "-_" else "-" for c in space)
    return f"{model_name}.head.{slug}.safetensors"


def load_state_dict(registry: Registry, name: str) -> dict[str, torch.Tensor]:
    """Read a model's tensors as float32 after checking the file's sha256 against the registry."""
    entry = registry.model(name)
    return load_verified(registry.root / entry.file, entry.sha256)


def load_verified(path: Path, sha256: str) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file (floats as float32), only if its sha256 is ``sha256``."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise WeightsError(f"weights file {path} is missing")
    actual = sha256_file(path)
    if actual != sha256:
        raise WeightsError(
            f"weights file {path.name} fails its sha256 check (registry {sha256[:12]}, "
            f"file {actual[:12]}): reinstall semcodec or re-export the weights"
        )
    return {k: (v.float() if v.is_floating_point() else v) for k, v in load_file(path).items()}


def save_state_dict(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> str:
    """Write ``state`` as safetensors (large floats in float16) atomically; return its sha256."""
    from safetensors.torch import save

    packed = {}
    for k, v in state.items():
        v = v.detach().cpu().contiguous()
        if v.is_floating_point() and v.numel() >= HALF_PRECISION_MIN_NUMEL:
            v = v.half()
        packed[k] = v
    write_atomic(path, save(packed, metadata=metadata), force=True)
    return sha256_file(path)


def refuse_frozen(root: Path, model_name: str, action: str) -> None:
    """Raise if ``root``'s registry lists ``model_name`` as released: released weights never change."""
    path = root / REGISTRY_FILE
    if not path.exists():
        return
    raw = json.loads(path.read_text())
    release = raw.get("models", {}).get(model_name, {}).get("release")
    if release is not None:
        raise WeightsError(
            f"{model_name} was released in semcodec {release} and is frozen: {action} a new model id "
            f"(e.g. semcodec train --out checkpoints --init-from {model_name}), then ship it with tools/ship_model.py"
        )
