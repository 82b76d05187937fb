"""Does the machine still get its answer? Tokens from the bitstream vs pixels vs classical codecs.

For each image (ImageNet-style 224 px centre crop) and each quality: code the crop with semcodec,
then measure against the tower run on the original crop (its tokens and its prediction):
(a) tokens decoded straight from the bitstream through the distilled head, (b) the tower on
semcodec's decoded pixels, (c) the tower on JPEG / WebP / AVIF decodes at equal (or the nearest
reachable larger) byte counts. Reports cosine and relative MSE of tokens, top-1 accuracy against
the label, agreement with the original prediction, bytes, and decode-to-tokens time.

Bytes: (a) counts what the tokens target reads (header + semantic layer, or header + base layer
in a file without one: a machine-only receiver needs nothing more), (b) the whole file. With
``keeps``, a file with a semantic layer is also encoded for N tokens (``--tokens N``: the encoder
keeps N and the layer codes only what they need), and (d) prunes the unpruned file's decoded
tokens to N by the same importance: the same tokens for every byte of the layer. Classical codecs
are matched to both budgets, so each semcodec row has classical rows at its own byte count (files
pruned with ``--keep N``: at the token bytes only).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from itertools import product
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from semcodec.bench.classical import EQUAL_BYTES, at_most_bytes
from semcodec.bench.provenance import header, provenance
from semcodec.codec import Codec
from semcodec.codec.image_io import read_image
from semcodec.codec.refine import RefineConfig
from semcodec.codec.semantic_tokens import kept_tokens, token_importance


def center_crop(pixels: np.ndarray, size: int) -> np.ndarray:
    """Resize the short side to size * 256/224, then take the centre ``size`` square (ImageNet eval)."""
    img = Image.fromarray(pixels)
    scale = size * 256 / 224 / min(img.size)
    img = img.resize(
        (max(size, round(img.width * scale)), max(size, round(img.height * scale))), Image.Resampling.BICUBIC
    )
    left, top = (img.width - size) // 2, (img.height - size) // 2
    return np.array(img.crop((left, top, left + size, top + size)))


@dataclass
class Tally:
    """Running sums for one column of the report."""

    n: int = 0
    bytes: float = 0.0
    cosine: float = 0.0
    rel_mse: float = 0.0
    top1: int = 0
    agree: int = 0
    seconds: float = 0.0
    classified: bool = False

    def add(
        self,
        tokens: torch.Tensor,
        reference: torch.Tensor,
        logits: torch.Tensor | None,
        label: int,
        reference_pred: int,
        size: int,
        seconds: float = 0.0,
    ) -> None:
        self.n += 1
        self.bytes += size
        self.cosine += F.cosine_similarity(tokens, reference, dim=-1).mean().item()
        self.rel_mse += ((tokens - reference).pow(2).mean() / reference.var()).item()
        if logits is not None:
            pred = int(logits.argmax())
            self.top1 += pred == label
            self.agree += pred == reference_pred
        self.classified = logits is not None
        self.seconds += seconds

    def row(self) -> dict:
        n = max(self.n, 1)
        return {
            "bytes": self.bytes / n,
            "cosine": self.cosine / n,
            "rel_mse": self.rel_mse / n,
            "top1": self.top1 / n if self.classified else None,
            "agreement": self.agree / n if self.classified else None,
            "seconds": self.seconds / n,
        }


def run(
    dataset: Path,
    tower_name: str,
    tower_weights: Path | None,
    weights: Path | None = None,
    limit: int | None = None,
    qualities: list[int] | None = None,
    with_classical: bool = True,
    keeps: list[int] | None = None,
    refine_steps: list[int] | None = None,
    semantic_weight: float | None = None,
) -> dict:
    """Every image x quality x kept-token count (``keeps``; ``None`` = all tokens) x encoder
    refinement (``refine_steps``; 0 = none; N > 0: the file is encoded for the tower's token space
    with N refinement steps, :mod:`semcodec.codec.refine`, its encode seconds reported;
    ``semantic_weight``: the refinement's, if not :class:`RefineConfig`'s default)."""
    weight = RefineConfig.semantic_weight if semantic_weight is None else semantic_weight
    codec = Codec(weights, tower_files={tower_name: tower_weights} if tower_weights else None)
    tower = codec.tower(tower_name)  # the one a split head finishes with: loaded once
    classify = getattr(tower, "classify", None)  # towers without a classifier report tokens only

    def logits_of(tokens: torch.Tensor) -> torch.Tensor | None:
        return classify(tokens[None])[0] if classify is not None else None

    files = sorted(p for p in dataset.iterdir() if p.suffix.lower() in {".jpeg", ".jpg", ".png"})
    synsets = sorted({p.name.split("_")[0] for p in files})
    files = files[:: max(1, len(files) // limit)][:limit] if limit else files
    qualities = qualities or sorted(codec.registry.qualities)
    tallies: dict[tuple[int, int | None, int, str], Tally] = {}
    keeps = [None, *(keeps or [])]
    refine_steps = refine_steps or [0]
    encode_seconds: dict[tuple[int, int | None, int], list[float]] = {}
    original = Tally()
    for path in tqdm(files, desc="bench tokens", unit="img", dynamic_ncols=True):  # stderr: tables stay clean
        label = synsets.index(path.name.split("_")[0])
        crop = center_crop(read_image(path).pixels, tower.input_size)
        x = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255
        with torch.inference_mode():
            reference = tower(x)[0]
            ref_logits = logits_of(reference)
        ref_pred = int(ref_logits.argmax()) if ref_logits is not None else -1
        original.add(reference, reference, ref_logits, label, ref_pred, 0)
        for q, keep, steps in product(qualities, keeps, refine_steps):
            start = time.perf_counter()
            refine = RefineConfig(steps=steps, semantic_weight=weight) if steps else None
            data = codec.encode(crop, q, tower_name, keep, refine).data  # as `encode --token-space` does
            encode_seconds.setdefault((q, keep, steps), []).append(time.perf_counter() - start)
            with torch.inference_mode():
                start = time.perf_counter()
                out = codec.decode_tokens(data, token_space=tower_name)
                t_tokens = time.perf_counter() - start
                token_bytes = int(out.metadata["bitstream_bytes_read"])
                semantic = out.metadata.get("layers_read") == "semantic"
                # a pruned semantic layer's tokens are the kept ones: compared with those of the original
                kept_reference = reference[out.positions] if semantic and out.positions is not None else reference
                tallies.setdefault((q, keep, steps, "semcodec tokens (a)"), Tally()).add(
                    out.tokens, kept_reference, logits_of(out.tokens), label, ref_pred, token_bytes, t_tokens
                )
                if semantic and keep is None:  # the other way to N tokens: decode them all, then prune
                    importance = token_importance(out.tokens, getattr(tower, "classifier", None))
                    for n in (k for k in keeps if k is not None and k <= len(out.tokens)):
                        index = torch.tensor(kept_tokens(importance, n))
                        pruned = out.tokens[index]
                        tallies.setdefault((q, n, steps, "semcodec tokens, pruned after decoding (d)"), Tally()).add(
                            pruned, reference[index], logits_of(pruned), label, ref_pred, token_bytes
                        )
                if semantic and keep is not None:
                    continue  # its pixel layers are the unpruned file's: rows (b) and (c) are the same
                start = time.perf_counter()
                pixels = codec.decode(data)
                tokens = tower(torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255)[0]
                t_pixels = time.perf_counter() - start
                tallies.setdefault((q, keep, steps, "semcodec pixels + tower (b)"), Tally()).add(
                    tokens, reference, logits_of(tokens), label, ref_pred, len(data), t_pixels
                )
                # pruned files: the classical codecs at the token bytes only (what tokens compete with)
                budgets = {"at token bytes": token_bytes}
                if keep is None:
                    budgets = {"at file bytes": len(data), **budgets}
                for (budget_name, budget), (name, encoder) in product(
                    budgets.items() if with_classical else [], EQUAL_BYTES.items()
                ):
                    size, decoded = at_most_bytes(encoder, crop, budget)
                    tokens = tower(torch.from_numpy(decoded).permute(2, 0, 1)[None].float() / 255)[0]
                    tallies.setdefault((q, keep, steps, f"{name} + tower {budget_name} (c)"), Tally()).add(
                        tokens, reference, logits_of(tokens), label, ref_pred, size
                    )
    served = sorted({codec.registry.quality(q).model for q in qualities})
    heads = {m: codec.registry.model(m).token_heads.get(tower_name) for m in served}
    head = {m: h.sha256 if h is not None else None for m, h in heads.items()}
    layer = codec.registry.semantic_layer_for(tower_name)
    semantic = {"id": layer.name, "sha256": layer.sha256, "steps": layer.info.get("steps")} if layer else None
    return {
        "provenance": {**provenance(codec.registry, served), "heads": head, "semantic_layer": semantic},
        "images": len(files),
        "tower": tower_name,
        "semantic_weight": weight,
        "original": original.row(),
        "rows": [
            {"quality": q, "tokens": k or "all", "refine_steps": r, "method": m, **t.row()}
            for (q, k, r, m), t in tallies.items()
        ],
        "encode_seconds": [
            {"quality": q, "tokens": k or "all", "refine_steps": r, "seconds": sum(t) / len(t)}
            for (q, k, r), t in encode_seconds.items()
        ],
    }


def _fraction(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _semantic_note(layer: dict | None) -> str:
    """Which semantic layer wrote the tokens rows, when the files carry one."""
    return f"; semantic layer {layer['id']} (sha256 {layer['sha256'][:12]})" if layer else ""


def table(result: dict) -> str:
    o = result["original"]
    lines = [
        *([header(result["provenance"])] if "provenance" in result else []),
        f"tower {result['tower']} on {result['images']} images: original top-1 {_fraction(o['top1'])}"
        + _semantic_note(result.get("provenance", {}).get("semantic_layer")),
        "",
        "| quality | coded tokens | refine steps | method | bytes | token cosine | token rel. MSE | top-1 "
        "| agreement | decode s |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        secs = f"{r['seconds']:.3f}" if r["seconds"] else ""
        lines.append(
            f"| {r['quality']} | {r['tokens']} | {r['refine_steps']} | {r['method']} | {r['bytes']:.0f} "
            f"| {r['cosine']:.4f} "
            f"| {r['rel_mse']:.4f} "
            f"| {_fraction(r['top1'])} | {_fraction(r['agreement'])} | {secs} |"
        )
    lines += ["", "| quality | coded tokens | refine steps | encode s |", "|---:|---:|---:|---:|"]
    lines += [
        f"| {e['quality']} | {e['tokens']} | {e['refine_steps']} | {e['seconds']:.3f} |"
        for e in result.get("encode_seconds", [])
    ]
    return "\n".join(lines)
