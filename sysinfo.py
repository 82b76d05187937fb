"""The machine a figure or a conformance set was measured on (torch-free)."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_flags() -> set[str]:
    """The CPU's feature flags (``/proc/cpuinfo``: x86 ``flags``, Arm ``Features``); empty where unknown."""
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("flags", "Features"):
                flags.update(value.split())
    except OSError:
        pass
    return flags


def native_bfloat16_cpu() -> bool:
    """Whether the CPU has bfloat16 instructions (AVX512-BF16 or AMX-BF16 on x86, BF16 on Arm).

    Not oneDNN's ``_is_mkldnn_bf16_supported``: that is true on any AVX-512 CPU, where bfloat16 is emulated.
    """
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16", "bf16"})


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
