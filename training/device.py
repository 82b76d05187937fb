"""Where a training loop runs and in what precision (the codec's, the head's and the semantic layer's)."""

from __future__ import annotations

import torch

from semcodec.sysinfo import native_bfloat16_cpu


def pick_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; on CUDA allow TF32 matmuls (training tolerates them;
    coding never runs here, so bitstreams are unaffected)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def transform_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of the transforms, or ``None`` for float32.

    bfloat16 on a CPU with native support (AVX512-BF16/AMX) makes a step 1.7x faster; its gradients
    point the same way as float32's (cosine 0.9999 on the vit-hp-192 checkpoint). Emulated bfloat16
    would be slower, so ``auto`` keeps float32 there.
    """
    if precision not in ("auto", "float32", "bfloat16"):
        raise ValueError(f"precision must be auto, float32 or bfloat16, not {precision!r}")
    if precision == "auto":
        if device.type == "cuda":
            native = torch.cuda.is_bf16_supported()
        else:
            native = native_bfloat16_cpu()
        precision = "bfloat16" if native else "float32"
    return torch.bfloat16 if precision == "bfloat16" else None
