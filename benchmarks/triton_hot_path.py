#!/usr/bin/env python3
"""Instruction counts per (mode, lag) of the Triton Vandermonde kernels from their SASS, no GPU needed.

A proxy for speed where no GPU is lent (issue 17 item 5): each launch configuration is compiled for
sm_90 on the CPU (``triton.compile`` + the wheel's ``nvdisasm``), the innermost loops of the kernel
are found from the backward branches, and the instructions of each loop are counted on its hot path
-- a conditional forward branch that skips over a nested loop (libdevice's Payne-Hanek argument
reduction of sin / cos, taken only for |x| > ~1e5) is assumed taken. The count of a loop iteration,
divided by the (mode, lag) entries one thread handles per iteration, is the figure reported.

    PYTHONPATH=src python benchmarks/triton_hot_path.py [--rev GIT_REV] [--cc 90]

``--rev`` also compiles ``src/statespaces/ops/triton/vandermonde.py`` as it was at that revision
(e.g. the commit before the rewrite by powers) for a side-by-side table. ``TRITON_INTERPRET`` must
be unset.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from typing import Dict, List, Tuple

os.environ.pop("TRITON_INTERPRET", None)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))


def sass(cfg, cc: int) -> str:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sig = {**dict(cfg.signature), **{k: "constexpr" for k in cfg.consts}}
    k = triton.compile(ASTSource(fn=cfg.kernel, signature=sig, constexprs=cfg.consts),
                       target=GPUTarget("cuda", cc, 32), options={"num_warps": cfg.num_warps})
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "nvdisasm")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "k.cubin")
        with open(path, "wb") as f:
            f.write(k.asm["cubin"])
        return subprocess.run([tool, "-c", path], capture_output=True, text=True, check=True).stdout


def hot_loops(text: str) -> List[Tuple[int, int, int, Dict[str, int]]]:
    """(start, end, hot-path instructions, opcode histogram) of every loop with >= 40 of them."""
    ins, labels, pending = [], {}, None
    for line in text.splitlines():
        m = re.match(r"\s*\.(L_x_\d+):", line)
        if m:
            pending = m.group(1)
            continue
        m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?);", line)
        if m:
            addr = int(m.group(1), 16)
            if pending:
                labels[pending], pending = addr, None
            ins.append((addr, m.group(2)))
    index = {a: i for i, (a, _) in enumerate(ins)}

    def target(t):
        m = re.search(r"BRA.*\(\.(L_x_\d+)\)", t)
        return labels.get(m.group(1)) if m else None

    back = [(target(t), a) for a, t in ins if target(t) is not None and target(t) < a]
    out = []
    for s, e in back:
        n, ops, i = 0, {}, index[s]
        while i < len(ins) and ins[i][0] <= e:
            a, t = ins[i]
            T = target(t)
            if T is not None and T > a and t.startswith("@") and any(a < bs and be < T for bs, be in back):
                i = index[T]                                   # skip the cold region
                continue
            n += 1
            op = (t.split()[1] if t.startswith("@") else t.split()[0]).split(".")[0]
            ops[op] = ops.get(op, 0) + 1
            i += 1
        if n >= 40:
            out.append((s, e, n, ops))
    return out


def entries_per_thread(cfg) -> Dict[str, float]:
    """(mode, lag) entries one thread handles per iteration of each kind of loop of a config."""
    c = cfg.consts
    threads = 32 * cfg.num_warps
    tile = c["BLOCK_N"] * c["BLOCK_L"] / threads
    return {"tile": tile, "group": tile * c.get("BLOCK_T", 1)}


def report(module, cc: int, label: str) -> None:
    for cfg in module.configs():
        if "BLOCK_N" not in cfg.consts or "BLOCK_L" not in cfg.consts:
            continue              # a kernel without (mode, lag) tiles (the ZOH factor gradients): nothing to count
        if cfg.consts.get("BLOCK_N") != max(c.consts.get("BLOCK_N", 0) for c in module.configs() if c.name == cfg.name):
            continue
        ent = entries_per_thread(cfg)
        per = ent["group"] if "BLOCK_T" in cfg.consts else ent["tile"]
        loops = hot_loops(sass(cfg, cc))
        inner = min(loops, key=lambda x: x[2]) if loops else None
        if inner is None:
            print(f"{label:8s} {cfg.label()}: no loop found")
            continue
        top = ", ".join(f"{k} {v}" for k, v in sorted(inner[3].items(), key=lambda kv: -kv[1])[:6])
        print(f"{label:8s} {cfg.name:34s} inner loop {inner[2]:5d} instr / {per:5.0f} entries per thread = "
              f"{inner[2] / per:6.1f} per (mode, lag)   [{top}]", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rev", default=None, help="also count the kernels of this git revision")
    p.add_argument("--cc", type=int, default=90)
    a = p.parse_args(argv)
    from statespaces.ops.triton import vandermonde

    if a.rev:
        src = subprocess.run(["git", "-C", ROOT, "show", f"{a.rev}:src/statespaces/ops/triton/vandermonde.py"],
                             capture_output=True, text=True, check=True).stdout
        import importlib.util

        tmp = os.path.join(os.path.dirname(vandermonde.__file__), "_hot_path_old.py")
        with open(tmp, "w") as f:
            f.write(src)
        try:
            spec = importlib.util.spec_from_file_location("statespaces.ops.triton._hot_path_old", tmp)
            old = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = old
            spec.loader.exec_module(old)
            report(old, a.cc, a.rev[:8])
        finally:
            os.remove(tmp)
    report(vandermonde, a.cc, "current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
