"""How many bytes would a tower's own split map need, coded directly by the encoder? (issue 40 probe)

The 100 crops of the tokens benchmark (every 10th imagenet-sample photo, short side 256, centre 224);
EfficientNet-Lite0's block-7 map (80 x 14 x 14), standardised per channel over the crops, uniformly
quantised with each step; the rate is the order-0 entropy of each channel's symbols (no transform, no
context: a learned coder would need fewer bits); top-1 through the tower's own tail and classifier.

    python tools/probe_split_map_bytes.py
"""

from __future__ import annotations

import torch

from semcodec.bench.tokens import center_crop
from semcodec.codec import Codec
from semcodec.codec.image_io import read_image
from semcodec.shared_data import DATA_ROOT
from semcodec.training.data import list_images

STEPS = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0)


def order0_bits(symbols: torch.Tensor) -> float:
    """Order-0 entropy of each channel's symbols (N, C, h, w), summed over channels, per crop."""
    bits = 0.0
    for channel in symbols.transpose(0, 1):
        _, counts = torch.unique(channel, return_counts=True)
        p = counts.double() / counts.sum()
        bits += float(-(p * p.log2()).sum()) * channel[0].numel()
    return bits


def main() -> None:
    torch.set_num_threads(1)
    tower = Codec().tower("efficientnet-lite0")
    files = list_images(DATA_ROOT / "imagenet-sample")
    synsets = sorted({p.name.split("_")[0] for p in files})
    files = files[:: len(files) // 100][:100]
    with torch.inference_mode():
        maps, labels = [], []
        for path in files:
            crop = center_crop(read_image(path).pixels, tower.input_size)
            x = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255
            maps.append(tower.features(tower.prepare(x)))
            labels.append(synsets.index(path.name.split("_")[0]))
        f, labels = torch.cat(maps), torch.tensor(labels)
        mean, std = f.mean((0, 2, 3), keepdim=True), f.std((0, 2, 3), keepdim=True)
        original = tower.classify(tower.tail(f)).argmax(-1)
        print(f"{len(files)} crops, original top-1 {(original == labels).float().mean():.2f}")
        print("| step | bytes per crop (order-0 entropy) | top-1 | agreement with the original's prediction |")
        print("|---:|---:|---:|---:|")
        for step in STEPS:
            symbols = torch.round((f - mean) / std / step)
            predicted = tower.classify(tower.tail(symbols * step * std + mean)).argmax(-1)
            top1 = (predicted == labels).float().mean()
            agreement = (predicted == original).float().mean()
            print(f"| {step} | {order0_bits(symbols) / 8:,.0f} | {top1:.2f} | {agreement:.2f} |")


if __name__ == "__main__":
    main()
