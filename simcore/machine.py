"""One description of the machine a figure was measured on (benchmarks, eval reports,
model cards), so every JSON names its hardware the same way."""
from __future__ import annotations

import os
import platform
from typing import Any


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def simd_level() -> str:
    """The widest x86 vector extension the CPU reports (AVX-512, AVX2+FMA, AVX, SSE2),
    or the machine type elsewhere: machines sold as the same kind differ here, and
    speeds differ with it."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    if "avx512f" in flags:
        return "AVX-512"
    if {"avx2", "fma"} <= flags:
        return "AVX2+FMA"
    if "avx" in flags:
        return "AVX"
    if "sse2" in flags:
        return "SSE2"
    return platform.machine() or "unknown"


def describe(device: str = "cpu") -> dict[str, Any]:
    """CPU, cores, Python/platform, simcore and torch versions, torch threads, GPU (if used)."""
    import torch

    import simcore

    info: dict[str, Any] = {
        "cpu": cpu_model(), "simd": simd_level(), "cores": os.cpu_count(), "python": platform.python_version(),
        "platform": platform.platform(), "simcore": simcore.__version__, "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "device": str(device),
    }
    if str(device).startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info
