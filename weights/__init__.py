"""Weights registry: one table (``registry.json``) maps quality levels to models and files.

``registry.json`` is the single source of truth: per model its architecture name and config, the
safetensors file, its sha256 and what it was trained on; per quality the model, the gain index and
the lambda it was trained for. Every load verifies the sha256 of the file before using it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from semcodec.errors import WeightsError

WEIGHTS_DIR = Path(__file__).resolve().parent
REGISTRY_FILE = "registry.json"
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
class ModelEntry:
    name: str
    architecture: str
    config: dict
    file: str
    sha256: str
    token_space: str
    info: dict
    token_heads: dict[str, dict]

    @property
    def short_hash(self) -> bytes:
        """The 8-byte weights hash written into every bitstream made with this model."""
        return bytes.fromhex(self.sha256[:16])


@dataclass(frozen=True)
class Registry:
    root: Path
    models: dict[str, ModelEntry]
    qualities: dict[int, QualityLevel]
    default_quality: int

    def quality(self, q: int) -> QualityLevel:
        if q not in self.qualities:
            raise WeightsError(f"quality {q} is not available (choose from {sorted(self.qualities)})")
        return self.qualities[q]

    def model(self, name: str) -> ModelEntry:
        if name not in self.models:
            raise WeightsError(f"model {name!r} is not in the weights registry {self.root / REGISTRY_FILE}")
        return self.models[name]


def default_weights_dir() -> Path:
    """``$SEMCODEC_WEIGHTS`` if set (a folder with a registry.json), else the packaged weights."""
    return Path(os.environ.get("SEMCODEC_WEIGHTS", WEIGHTS_DIR))


def load_registry(root: Path | str | None = None) -> Registry:
    root = Path(root) if root is not None else default_weights_dir()
    path = root / REGISTRY_FILE
    try:
        raw = json.loads(path.read_text())
        models = {
            name: ModelEntry(
                name=name,
                architecture=m["architecture"],
                config=m["config"],
                file=m["file"],
                sha256=m["sha256"],
                token_space=m.get("token_space", "semcodec-latent"),
                info=m.get("info", {}),
                token_heads=m.get("token_heads", {}),
            )
            for name, m in raw["models"].items()
        }
        qualities = {
            int(q): QualityLevel(int(q), v["model"], int(v["gain_index"]), float(v["lambda"]))
            for q, v in raw["qualities"].items()
        }
        default = int(raw.get("default_quality", min(qualities)))
    except FileNotFoundError:
        raise WeightsError(f"no weights registry at {path}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise WeightsError(f"weights registry {path} is malformed: {exc}") from None
    return Registry(root, models, qualities, default)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_state_dict(registry: Registry, name: str) -> dict[str, torch.Tensor]:
    """Read a model's tensors as float32 after checking the file's sha256 against the registry."""
    entry = registry.model(name)
    return load_verified(registry.root / entry.file, entry.sha256)


def load_verified(path: Path, sha256: str) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file (floats as float32), only if its sha256 is ``sha256``."""
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
    packed = {}
    for k, v in state.items():
        v = v.detach().cpu().contiguous()
        if v.is_floating_point() and v.numel() >= HALF_PRECISION_MIN_NUMEL:
            v = v.half()
        packed[k] = v
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(packed, str(tmp), metadata=metadata)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return sha256_file(path)


def write_registry(root: Path, raw: dict) -> None:
    tmp = root / (REGISTRY_FILE + ".tmp")
    tmp.write_text(json.dumps(raw, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, root / REGISTRY_FILE)
