#!/usr/bin/env python3
"""Where a layer's GPU time goes: per-kernel CUDA time of one fwd+bwd, and whether the host keeps up.

    PYTHONPATH=src python benchmarks/gpu_profile.py [--shapes 16,4096 1,65536] [--layers s4d s4 linoss]
        [--paths auto torch] [--compile] [--host]

For each (layer, path, shape) it prints: wall ms per fwd+bwd with ten calls queued back to back, the host
time to issue them (equal to the wall time when the run is bound by Python/op dispatch rather than by the
GPU), the summed kernel time per call from ``torch.profiler`` and the number of kernels, then the 16
kernels that took the most time. ``--compile`` adds ``torch.compile`` (default mode) of each layer beside
eager: compile seconds and fwd+bwd ms; ``--host`` where the host time goes, by Python function (cProfile).
Workloads are ``gpu_check.path_workload`` (H=256, N=64 by default).
Needs CUDA; without it, prints a message and exits 2 (as gpu_check.py: nothing was measured).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
import traceback
from typing import Dict, List, Tuple

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "src"))


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", os.path.join(HERE, "gpu_check.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def kernel_table(fn, calls: int = 5) -> Tuple[float, int, Dict[str, Tuple[int, float]]]:
    """(kernel ms per call, kernels per call, {kernel name: (launches per call, ms per call)}) over ``calls``
    calls of fn."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    agg: Dict[str, Tuple[int, float]] = {}
    for e in p.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            n, t = agg.get(e.name[:110], (0, 0.0))
            agg[e.name[:110]] = (n + 1, t + e.device_time)
    per_call = {name: (n // calls, t / calls / 1e3) for name, (n, t) in agg.items()}
    return (sum(ms for _, ms in per_call.values()), sum(n for n, _ in per_call.values()), per_call)


def host_bound(fn, calls: int = 10) -> Tuple[float, float]:
    """(wall ms, host ms) per call with ``calls`` calls queued without synchronising in between."""
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    host = (time.perf_counter() - t0) / calls
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / calls * 1e3, host * 1e3


def host_table(fn, calls: int = 10, top: int = 20) -> List[Tuple[str, float, float, int]]:
    """Where the host time of ``fn`` goes: cProfile over ``calls`` calls, the ``top`` functions by
    cumulative time per call, as ``(function, cumulative ms, own ms, calls per call)``. Works on any device
    (no synchronisation: it measures the CPU side only)."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        fn()
    prof.disable()
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    rows = []
    for (path, line, name), (_, ncalls, own, cum, _) in stats.items():
        where = path.split("site-packages/")[-1].split("src/")[-1] if path != "~" else ""
        label = f"{where}:{line}({name})" if where else name
        rows.append((label, cum / calls * 1e3, own / calls * 1e3, ncalls // calls))
    rows.sort(key=lambda r: -r[1])
    return [r for r in rows if "host_table" not in r[0] and "<lambda>" not in r[0]][:top]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", nargs="+", default=["16,4096", "1,65536"], help="B,L pairs")
    p.add_argument("--layers", nargs="+", default=["s4d", "s4", "linoss"], choices=["s4d", "s4", "linoss"])
    p.add_argument("--paths", nargs="+", default=["auto"], choices=["auto", "torch"])
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--d-state", type=int, default=64)
    p.add_argument("--compile", action="store_true", help="also time torch.compile(layer) beside eager")
    p.add_argument("--host", action="store_true",
                   help="also print where the host time goes (cProfile: top functions by cumulative time)")
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_profile: no CUDA device here: nothing to profile. Run it on a machine with an NVIDIA GPU.",
              file=sys.stderr)
        return 2
    from statespaces import backend

    gc = _gpu_check()
    torch.backends.cuda.matmul.allow_tf32 = False
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    for layer in a.layers:
        for path in a.paths:
            for shape in a.shapes:
                B, L = (int(v) for v in shape.split(","))
                spec = dict(B=B, L=L, H=a.d_model, N=a.d_state)
                try:
                    with backend.use_backend(path):
                        _, fwd_bwd = gc.path_workload(f"{layer}_layer", spec)
                        for _ in range(3):
                            fwd_bwd()
                        wall, host = host_bound(fwd_bwd)
                        busy, count, agg = kernel_table(fwd_bwd)
                except Exception:
                    traceback.print_exc()
                    continue
                print(f"\n== {layer} ({path}) B={B} L={L}: wall {wall:.2f} ms, host {host:.2f} ms, "
                      f"kernels {busy:.2f} ms ({count} per call)")
                for name, (n, ms) in sorted(agg.items(), key=lambda kv: -kv[1][1])[:16]:
                    print(f"  {ms:8.3f} ms {n:4d}x  {name}")
                if a.host:
                    print("  host time by function (cProfile; cumulative / own ms per call, calls per call):")
                    for label, cum, own, n in host_table(fwd_bwd):
                        print(f"    {cum:8.3f} {own:8.3f} {n:5d}x  {label[:110]}")
                if a.compile:
                    print("  " + compile_line(layer, spec, gc))
    return 0


def compile_line(layer: str, spec: Dict[str, int], gc) -> str:
    """Eager vs ``torch.compile`` fwd+bwd of one workload, and the compile time."""
    try:
        from statespaces import S4, S4D, LinOSS

        module = {"s4d": S4D, "s4": S4, "linoss": LinOSS}[layer](spec["H"], spec["N"], seed=0).cuda()
        x = torch.randn(spec["B"], spec["L"], spec["H"], device="cuda", requires_grad=True)
        compiled = torch.compile(module)

        def run(m):
            return lambda: m(x).sum().backward()

        eager = gc.cuda_time(run(module), 10)
        t0 = time.perf_counter()
        run(compiled)()
        torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        comp = gc.cuda_time(run(compiled), 10)
        return (f"torch.compile: eager {eager:.2f} ms, compiled {comp:.2f} ms ({eager / comp:.2f}x), "
                f"compile {seconds:.0f} s")
    except Exception as e:
        return f"torch.compile failed: {type(e).__name__}: {str(e)[:200]}"


if __name__ == "__main__":
    sys.exit(main())
