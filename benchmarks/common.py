"""Shared timing helpers for the benchmark scripts (wall-clock medians, in one process)."""
from __future__ import annotations

import os
import platform
import sys
import time
from typing import Any, Callable

import torch


def sync(device) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timeit(fn: Callable[[], object], repeat: int = 5, warmup: int = 1, clock: Callable[[], float] = time.perf_counter,
           device=None) -> float:
    """Median time of ``fn()`` in seconds by ``clock`` (wall clock by default; ``time.process_time``
    for CPU time), synchronizing ``device`` around each call when it is a GPU."""
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise ValueError(f"repeat={repeat!r}: allowed: an integer >= 1 (timed calls per median)")
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeat):
        t0 = clock()
        fn()
        sync(device)
        times.append(clock() - t0)
    times.sort()
    return times[len(times) // 2]


def copy_floor(numel: int, passes: int, dtype=torch.float32, device=None, clock: Callable[[], float] = time.perf_counter,
               repeat: int = 5) -> float:
    """Time to stream ``passes`` tensors of ``numel`` elements through memory once each (a read and a write).

    Copied into a buffer allocated and touched beforehand: a ``clone`` allocates, and above the allocator's
    cache a fresh tensor is page-faulted in on every call (2.5-3.5x the copy's own time for 134 MB on this
    2-core machine), which made the floor look slower than memory and every layer closer to it."""
    x = torch.randn(numel, dtype=dtype, device=device)
    dst = torch.zeros_like(x)
    return passes * timeit(lambda: dst.copy_(x), repeat=repeat, clock=clock, device=device)


def layer_floor(numel: int, grad: bool = True, device=None, clock: Callable[[], float] = time.perf_counter,
                repeat: int = 5) -> float:
    """:func:`copy_floor` of a layer call on a (B, L, H) fp32 input of ``numel`` elements: the forward reads x and
    writes y (one pass); with ``grad`` the backward also reads dy and writes dx (two passes). Parameters, states
    and intermediates are not counted, so no layer can beat it."""
    return copy_floor(numel, 2 if grad else 1, device=device, clock=clock, repeat=repeat)


#: Header text for :func:`layer_floor` (the scripts print it beside their ``floor`` column).
LAYER_FLOOR = "floor: fp32 copy of the (B, L, H) activations, x->y (fwd: 1 pass) and dy->dx (fwd+bwd: 2 passes)"


def nbytes(obj) -> int:
    """Bytes of the tensors in ``obj`` (a tensor, module, or nested list / tuple / dict of them; other leaves 0)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, torch.nn.Module):
        return sum(nbytes(p) for p in obj.parameters())
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(nbytes(o) for o in obj)
    return 0


def step_floor(state, params, device=None, clock: Callable[[], float] = time.perf_counter, repeat: int = 5) -> float:
    """Seconds of one recurrent step at copy bandwidth: ``state`` read and the new state written, ``params`` (a
    module or tensors) read once; as one fp32 copy moving as many bytes (its per-call overhead included)."""
    moved = 2 * nbytes(state) + nbytes(params)
    return copy_floor(max(1, moved // 8), 1, device=device, clock=clock, repeat=repeat)


def bandwidth(numel: int, dtype=torch.float32, device=None, repeat: int = 5) -> float:
    """Copy bandwidth in GB/s (bytes read plus bytes written per second of wall clock), for the floor's label."""
    seconds = copy_floor(numel, 1, dtype, device, repeat=repeat)
    return 2 * numel * torch.tensor([], dtype=dtype).element_size() / seconds / 1e9


def _cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """CPU model, torch threads, torch version (and the GPU when CUDA is available): the line every script prints."""
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{_cpu_name()} ({os.cpu_count()} cores), {torch.get_num_threads()} threads, torch {torch.__version__}{gpu}"


def positive_int(text: str) -> int:
    """An ``argparse`` type: an integer >= 1 (``--repeat``, sizes)."""
    value = int(text)                  # a ValueError: argparse's own "invalid positive_int value"
    if value < 1:
        import argparse

        raise argparse.ArgumentTypeError(f"{value}: allowed: an integer >= 1")
    return value


def nonneg_int(text: str) -> int:
    """An ``argparse`` type: an integer >= 0 (sizes where 0 means "skip" or "the default")."""
    value = int(text)
    if value < 0:
        import argparse

        raise argparse.ArgumentTypeError(f"{value}: allowed: an integer >= 0")
    return value


def int_tuple(names: str) -> Callable[[str], tuple]:
    """An ``argparse`` type for a comma-separated tuple of integers >= 1 named by ``names`` (e.g. ``"B,L"``):
    ``--shapes 2,-256`` is refused at parsing with one line naming the flag, not by torch after the header."""
    count = len(names.split(","))

    def parse(text: str) -> tuple:
        import argparse

        parts = text.split(",")
        try:
            values = tuple(int(v) for v in parts)
        except ValueError:
            values = ()
        if len(values) != count or any(v < 1 for v in values):
            raise argparse.ArgumentTypeError(f"{text!r}: expected {count} integers >= 1 as {names}")
        return values

    parse.__name__ = names            # argparse names the type in its "invalid ... value" messages
    return parse


def clock_name(clock) -> str:
    """``"wall"``, ``"cpu"``, :func:`time.perf_counter` or :func:`time.process_time` in words."""
    if clock in ("cpu", time.process_time):
        return "process CPU time (time.process_time)"
    if clock in ("wall", time.perf_counter):
        return "wall clock (time.perf_counter)"
    return getattr(clock, "__name__", str(clock))


def timing_line(clock, statistic: str) -> str:
    """The line every script prints about how it times: the clock and the statistic, e.g.
    ``timing_line("wall", "median of 5 calls after 1 warm-up")``."""
    return f"timing: {clock_name(clock)}; {statistic}"


#: Errors a benchmark reports in one line (bad arguments, missing devices or peers; a JSONDecodeError is a
#: ValueError), exit status 2.
USER_ERRORS = (ValueError, TypeError, KeyError, RuntimeError, AssertionError, OSError, ImportError)


def run(main: Callable[[], Any]) -> Any:
    """Run a script's ``main()``: an error prints one line, ``<script>: error: ...``, on stderr and exits with status
    2 (``STATESPACES_DEBUG=1`` shows the traceback instead); returns what ``main`` returns."""
    try:
        return main()
    except USER_ERRORS as e:
        if os.environ.get("STATESPACES_DEBUG"):
            raise
        text = " ".join(str(e).split()) or type(e).__name__
        print(f"{os.path.basename(sys.argv[0])}: error: {type(e).__name__}: {text}", file=sys.stderr)
        raise SystemExit(2) from None
