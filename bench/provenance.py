"""Where a benchmark figure came from: date, machine, threads and the weights, printed and saved with it.

The README's rule: a figure always names the weights, date and machine it came from.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import torch

from semcodec.sysinfo import cpu_name
from semcodec.weights import Registry


def provenance(registry: Registry, models: list[str] | None = None) -> dict:
    """Date (UTC), machine, torch threads and each model's weights sha256 (default: the served ones)."""
    names = models or sorted({level.model for level in registry.qualities.values()})
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "machine": f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "weights": {name: registry.model(name).sha256 for name in names},
    }


def weights_header(weights_dir: Path | None = None) -> str:
    """:func:`header` of the served models of ``weights_dir`` (default: the installed weights)."""
    from semcodec.weights import load_registry

    return header(provenance(load_registry(weights_dir)))


def header(info: dict) -> str:
    """One line for the top of a table."""
    weights = ", ".join(f"{name} (sha256 {sha[:12]})" for name, sha in info["weights"].items())
    return f"# {info['date']}, {info['machine']}; weights {weights}"
