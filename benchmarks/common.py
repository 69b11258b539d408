"""Shared timing helpers for the benchmark scripts (wall-clock medians, in one process)."""
from __future__ import annotations

import platform
import time
from typing import Callable

import torch


def timeit(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def copy_floor(numel: int, passes: int, dtype=torch.float32) -> float:
    """Time to stream ``passes`` tensors of ``numel`` elements through memory once each (clone = read+write)."""
    x = torch.randn(numel, dtype=dtype)
    return passes * timeit(lambda: x.clone(), repeat=5)


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
