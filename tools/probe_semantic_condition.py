"""Probe for issue 56: how many pixel-layer bits does the decoded semantic layer save as context?

Before building a conditioned entropy model into the codec, measure the effect it can have. The
pixel model's transforms stay frozen (vit-hp-192: its ``g_a`` outputs are cached once per photo);
two copies of its entropy model (``h_a``, ``h_s``, channel/spatial context, z's bottleneck) are
trained further for the same steps on the same latents and qualities, rate only:

* ``plain``: as the codec has it (the control: more entropy training alone);
* ``semantic``: the entropy model also reads the decoded semantic latent (the encoder's layer at its
  gain, the whole photo's geometry, nearest-resampled), started at zero (so it starts as ``plain``).
  ``--entry hyper``: on z's grid, as extra input channels of ``h_s``'s first layer. ``--entry
  latent``: on y's grid, through a refiner of the hyperprior's means and scales (three 3x3
  convolutions reading ``[means, scales, semantic]``, last layer at zero), which ``plain`` also
  gets, reading zeros in place of the semantic latent (the same capacity, no semantic information).

The figure is the rounded rate (what the coder charges: y and z, hard z) of all 24 Kodak images at
qualities 1-4 for the released model, ``plain`` and ``semantic``, against the semantic layer's own
bytes. Float maths throughout: the codec's integer ``h_s`` differs by rounding only.

    python tools/probe_semantic_condition.py --steps 600 --out docs/results/probe_semantic_condition.json
    python tools/probe_semantic_condition.py --entry latent --steps 600 --out docs/results/probe_semantic_latent.json
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
from compressai.models.utils import deconv
from compressai.ops import quantize_ste
from PIL import Image
from torch import Tensor, nn

from semcodec.codec import Codec
from semcodec.codec.semantic_tokens import tower_geometry
from semcodec.codec.tensors import image_tensor, pad_to_stride, tower_input
from semcodec.models.layers import zero_start_refiner
from semcodec.shared_data import DATA_ROOT
from semcodec.training.semantic_condition import shrunk_photo

BATCH = 32
SEMANTIC_SCALE = 1 / 16
"""The semantic latent (|values| up to a few hundred) scaled near z's range before h_s reads it."""


def semantic_latent(codec: Codec, pixels: np.ndarray) -> Tensor:
    """The decoded semantic latent (1, M, h, w) a default file of ``pixels`` carries (float maths)."""
    registry = codec.registry
    layer_entry = registry.semantic_layer_for(registry.default_token_space)
    layer = codec.semantic_coder(layer_entry.name).layer
    tower = codec.tower(layer_entry.tower, sha256=layer_entry.tower_sha256)
    tower.set_split(layer_entry.split_block)
    h, w = pixels.shape[:2]
    shape = tower_geometry(h, w, tower.input_size, 2 * tower.split_stride)
    features = tower.features(tower.prepare(tower_input(pixels, shape), shape))
    gain = layer_entry.encoder_gain_for(1)
    y = layer.analysis(features, gain)
    medians = layer.z_medians()
    z_hat = torch.round(layer.h_a(y) - medians) + medians
    means, scales = layer.hyper_synthesis(z_hat, tuple(y.shape[2:]))
    return layer.quantize_latent(y, means, scales), shape


ENTRY_STRIDE = {"hyper": 64, "latent": 16}
"""Pixels per cell of the grid the semantic latent is resampled onto: z's, or y's."""


def on_grid(
    latent: Tensor, tower_shape: tuple[int, int], photo: tuple[int, int], grid: tuple[int, int], stride: int
) -> Tensor:
    """``latent`` (stride 32 of the tower's input) nearest-resampled onto a grid of ``stride`` pixels
    of the photo (the pixel model's z or y): integer index arithmetic, exact at both ends."""
    index = []
    for cells, tower_side, photo_side, side in zip(grid, tower_shape, photo, latent.shape[2:], strict=True):
        centres = np.arange(cells) * stride + stride // 2
        index.append(torch.from_numpy(np.minimum(side - 1, centres * tower_side // (photo_side * 32))))
    return latent[:, :, index[0]][:, :, :, index[1]]


class Conditioned(nn.Module):
    """The pixel model's entropy part reading the semantic latent: ``h_s`` reading ``[z_hat,
    semantic]`` (``entry="hyper"``) or a refiner of its output (``"latent"``), new weights at zero."""

    def __init__(self, model: nn.Module, semantic_channels: int, entry: str = "hyper"):
        super().__init__()
        self.model = copy.deepcopy(model)
        self.entry, self.semantic_channels = entry, semantic_channels
        if entry == "latent":
            m = model.config.latent_channels
            self.refiner = zero_start_refiner(2 * m + semantic_channels, 96, 2 * m)
            return
        old = self.model.h_s[0]
        new = deconv(old.in_channels + semantic_channels, old.out_channels, 3, 2)
        with torch.no_grad():
            new.weight.zero_()
            new.weight[: old.in_channels] = old.weight
            new.bias.copy_(old.bias)
        self.model.h_s[0] = new

    def entry_parameters(self) -> list[nn.Parameter]:
        """Where the semantic inputs enter (trained at a higher rate, in both copies alike)."""
        return list(self.refiner.parameters() if self.entry == "latent" else self.model.h_s[0].parameters())

    def rate(self, y: Tensor, semantic: Tensor | None, mode: str) -> tuple[Tensor, Tensor]:
        """Bits of y and of z (summed per batch) for gained latents ``y``."""
        m = self.model
        z = m.h_a(y)
        medians = m.z_medians()
        z_hat = quantize_ste(z - medians) + medians
        if mode == "rounded":
            eb = m.entropy_bottleneck
            per_channel = z_hat.transpose(0, 1)
            z_lik = eb.likelihood_lower_bound(eb._likelihood(per_channel.reshape(z.shape[1], 1, -1))[0])
        else:
            _, z_lik = m.entropy_bottleneck(z)
        grid = y.shape[2:] if self.entry == "latent" else z_hat.shape[2:]
        if semantic is None:
            semantic = z_hat.new_zeros(z_hat.shape[0], self.semantic_channels, *grid)
        if self.entry == "latent":
            means, scales = m.h_s(z_hat).chunk(2, dim=1)
            d_mean, d_scale = self.refiner(torch.cat([means, scales, semantic * SEMANTIC_SCALE], 1)).chunk(2, dim=1)
            means, scales = means + d_mean, scales + d_scale
        else:
            means, scales = m.h_s(torch.cat([z_hat, semantic * SEMANTIC_SCALE], 1)).chunk(2, dim=1)
        _, y_lik = m.code_latent(y, means, scales, rate="noise" if mode == "noise" else "rounded")
        return -torch.log2(y_lik).sum(), -torch.log2(z_lik).sum()


def photo_cache(
    codec: Codec, model: nn.Module, paths: list[Path], seed: int, stride: int
) -> list[tuple[Tensor, Tensor]]:
    """Per training photo (shrunk by a random factor in [0.6, 1], short side >= 256 where it can):
    its whole ``g_a`` output (fp16) and the semantic latent on its grid of ``stride`` pixels."""
    rng = random.Random(seed)
    cache = []
    for i, path in enumerate(paths):
        pixels = shrunk_photo(path, rng)
        x = pad_to_stride(image_tensor(pixels), 64)
        if min(x.shape[2:]) < 256:
            continue
        with torch.inference_mode():
            y = model.analysis_transform(x)
            latent, tower_shape = semantic_latent(codec, pixels)
            grid = (x.shape[2] // stride, x.shape[3] // stride)
            cache.append((y.half(), on_grid(latent, tower_shape, pixels.shape[:2], grid, stride)))
        if i % 100 == 0:
            print(f"cache {i}/{len(paths)}", flush=True)
    return cache


def sample(cache: list, batch: int, rng: random.Random) -> tuple[Tensor, Tensor]:
    """``batch`` aligned 16 x 16 windows of cached latents and their semantic windows (4 x 4 on z's
    grid, 16 x 16 on y's)."""
    ys, ss = [], []
    for _ in range(batch):
        y, s = cache[rng.randrange(len(cache))]
        r, c = rng.randrange(y.shape[2] // 4 - 3), rng.randrange(y.shape[3] // 4 - 3)
        ys.append(y[:, :, 4 * r : 4 * r + 16, 4 * c : 4 * c + 16])
        cell = 4 if s.shape[2] == y.shape[2] else 1  # semantic cells per z cell
        ss.append(s[:, :, cell * r : cell * (r + 4), cell * c : cell * (c + 4)])
    return torch.cat(ys).float(), torch.cat(ss)


def train(net: Conditioned, cache: list, use_semantic: bool, steps: int, seed: int) -> float:
    """Rate-only training of ``net``'s entropy parts for ``steps`` (the same for both copies: a
    fair comparison whatever else the machine runs); returns the minutes it took."""
    m = net.model
    net.train()  # the bottleneck and the conditional add noise: in eval mode they round, and z's rate
    # passes no gradient to h_a (a first run of this probe drifted from 0.18 to 0.74 bpp at q1 so)
    for p in m.parameters():
        p.requires_grad_(False)
    parts = [m.h_a, m.h_s, m.entropy_bottleneck] + ([m.context] if m.context is not None else [])
    parts += [net.refiner] if net.entry == "latent" else []
    main, aux = [], []
    for part in parts:
        for name, p in part.named_parameters():
            p.requires_grad_(True)
            (aux if name.endswith("quantiles") else main).append(p)
    first = net.entry_parameters()
    rest = [p for p in main if all(p is not f for f in first)]
    optimizer = torch.optim.Adam([{"params": rest, "lr": 5e-5}, {"params": first, "lr": 3e-4}])
    aux_optimizer = torch.optim.Adam(aux, lr=1e-3)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    qualities = m.log_gain.shape[0]
    step, start = 0, time.time()
    while step < steps:
        y, semantic = sample(cache, BATCH, rng)
        q = torch.randint(qualities, (y.shape[0],))
        y_bits, z_bits = net.rate(y * m.quality_gain(q), semantic if use_semantic else None, "noise")
        loss = (y_bits + z_bits) / (y.shape[0] * 256 * 256)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        aux_loss = m.entropy_bottleneck.loss()
        aux_optimizer.zero_grad()
        aux_loss.backward()
        aux_optimizer.step()
        step += 1
        if step % 100 == 0:
            print(f"{'semantic' if use_semantic else 'plain'} step {step}: {loss.item():.4f} bpp", flush=True)
    return round((time.time() - start) / 60, 1)


def kodak_rates(codec: Codec, model: nn.Module, nets: dict[str, tuple[Conditioned, bool]]) -> dict:
    """bpp (rounded rate, y + z) of every Kodak image at qualities 1-4 for each net."""
    out: dict[str, list[list[float]]] = {name: [] for name in nets}
    for path in sorted((DATA_ROOT / "kodak").glob("*.png")):
        pixels = np.asarray(Image.open(path).convert("RGB"))
        x = pad_to_stride(image_tensor(pixels), 64)
        h, w = pixels.shape[:2]
        with torch.inference_mode():
            y_raw = model.analysis_transform(x)
            latent, tower_shape = semantic_latent(codec, pixels)
            stride = ENTRY_STRIDE[next(iter(nets.values()))[0].entry]
            semantic = on_grid(latent, tower_shape, (h, w), (x.shape[2] // stride, x.shape[3] // stride), stride)
            for name, (net, use_semantic) in nets.items():
                row = []
                for q in range(4):
                    bits = net.rate(y_raw * net.model.quality_gain(q), semantic if use_semantic else None, "rounded")
                    row.append(float(sum(bits)) / (h * w))
                out[name].append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=600, help="training steps of each copy")
    parser.add_argument("--max-photos", type=int, default=None)
    parser.add_argument("--entry", choices=sorted(ENTRY_STRIDE), default="hyper", help="where it enters")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    codec = Codec()
    model_name = codec.registry.quality(1).model
    model, _ = codec.model(model_name)
    model = copy.deepcopy(model).float().train(False)
    paths = sorted((DATA_ROOT / "train").rglob("*.*"))
    paths = [p for p in paths if p.suffix.lower() in (".jpg", ".jpeg", ".png")][: args.max_photos]
    started = time.time()
    cache = photo_cache(codec, model, paths, seed=0, stride=ENTRY_STRIDE[args.entry])
    cache_minutes = (time.time() - started) / 60
    channels = cache[0][1].shape[1]
    released = Conditioned(model, channels, args.entry)
    plain, semantic = Conditioned(model, channels, args.entry), Conditioned(model, channels, args.entry)
    minutes = {
        "plain": train(plain, cache, False, args.steps, 1),
        "semantic": train(semantic, cache, True, args.steps, 1),
    }
    for net in (released, plain, semantic):
        net.eval()
    rates = kodak_rates(
        codec, model, {"released": (released, False), "plain": (plain, False), "semantic": (semantic, True)}
    )
    mean = {name: [float(np.mean([r[q] for r in rows])) for q in range(4)] for name, rows in rates.items()}
    report = {
        "model": model_name,
        "entry": args.entry,
        "semantic_layer": codec.registry.semantic_layer_for(codec.registry.default_token_space).name,
        "photos_cached": len(cache),
        "cache_minutes": round(cache_minutes, 1),
        "steps_each": args.steps,
        "batch": BATCH,
        "minutes": minutes,
        "kodak_mean_bpp_q1_4": mean,
        "per_image": rates,
        "date": time.strftime("%Y-%m-%d"),
    }
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "per_image"}, indent=1))


if __name__ == "__main__":
    main()
