r"""Compile every Triton launch configuration for NVIDIA targets on a machine without a GPU, and
report registers, stack and spills.

``triton.compile(ASTSource(...), target=GPUTarget("cuda", cc, 32))`` builds PTX and a cubin with
the ``ptxas`` shipped in the triton wheel, no device needed; ``ptxas -v`` on that PTX (same flags
as Triton's own call) then gives the registers per thread, the stack frame and the spill
stores / loads. The configurations are :func:`statespaces.ops.triton.configs` -- the table the
launch sites read -- so the check cannot drift from what can actually be launched.

A note on "stack": kernels calling ``tl.sin`` / ``tl.cos`` (the Vandermonde kernels) show a
stack frame of ~28-32 bytes that is not a spill -- it is the local array of libdevice's
large-argument (Payne-Hanek) reduction, never taken for the reduced arguments used there. Spills
are what ptxas reports as "spill stores"; each config carries a ``spill_budget`` (0 today).

Run: ``python -m statespaces.ops.triton._resources [--cc 80 90] [--jobs N] [--json out.json]``
(``TRITON_INTERPRET`` must be unset: the interpreter replaces the kernels by Python functions).
Exit status 1 if a config fails to compile or spills beyond its budget.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

_RE_PROPS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_RE_REGS = re.compile(r"Used (\d+) registers")


def _ptxas(cc: int) -> str:
    """The ptxas Triton itself uses for this target (the wheel ships one per PTX generation)."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas

        return get_ptxas(cc).path
    except Exception:  # older triton: the one bundled binary
        import triton

        return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")


def compile_config(cfg, cc: int) -> Dict:
    """Compile one :class:`~statespaces.ops.triton._launch.Config` for sm_{cc}: a result dict."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    rec: Dict = {"config": cfg.label(), "kernel": cfg.name, "cc": cc, "num_warps": cfg.num_warps,
                 "constexprs": {k: str(v).replace("triton.language.", "tl.") for k, v in cfg.constexprs},
                 "spill_budget": cfg.spill_budget}
    t0 = time.perf_counter()
    consts = cfg.consts
    sig = {**dict(cfg.signature), **{k: "constexpr" for k in consts}}
    try:
        src = ASTSource(fn=cfg.kernel, signature=sig, constexprs=consts)
        k = triton.compile(src, target=GPUTarget("cuda", cc, 32), options={"num_warps": cfg.num_warps})
    except Exception as e:  # reported, and the caller fails
        rec.update(ok=False, error=f"{type(e).__name__}: {str(e).strip()[:2000]}",
                   seconds=round(time.perf_counter() - t0, 2))
        return rec
    arch = f"sm_{cc}a" if cc >= 90 else f"sm_{cc}"
    with tempfile.TemporaryDirectory() as d:
        ptx = os.path.join(d, "k.ptx")
        with open(ptx, "w") as f:
            f.write(k.asm["ptx"])
        out = subprocess.run([_ptxas(cc), "-lineinfo", "-v", "--regAllocOptLevel=2", f"--gpu-name={arch}", ptx,
                              "-o", os.path.join(d, "k.o")], capture_output=True, text=True)
    log = out.stdout + out.stderr
    props, regs = _RE_PROPS.search(log), _RE_REGS.search(log)
    if out.returncode != 0 or not props or not regs:
        rec.update(ok=False, error=f"ptxas -v: {log.strip()[:2000]}", seconds=round(time.perf_counter() - t0, 2))
        return rec
    stack, spill_st, spill_ld = (int(x) for x in props.groups())
    rec.update(ok=True, registers=int(regs.group(1)), stack=stack, spill_stores=spill_st, spill_loads=spill_ld,
               shared=int(getattr(k.metadata, "shared", 0) or 0), seconds=round(time.perf_counter() - t0, 2))
    return rec


def _job(args):
    i, cc = args
    from statespaces.ops.triton import configs

    return compile_config(configs()[i], cc)


def check(ccs=(80, 90), jobs: Optional[int] = None) -> List[Dict]:
    """Compile every config for every target (``jobs`` processes); list of result dicts."""
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise RuntimeError("unset TRITON_INTERPRET: the resource check compiles the real kernels")
    from statespaces.ops.triton import configs

    n = len(configs())
    work = [(i, cc) for cc in ccs for i in range(n)]
    jobs = max(1, jobs or os.cpu_count() or 1)
    if jobs == 1:
        return [_job(w) for w in work]
    import multiprocessing as mp

    with mp.get_context("fork").Pool(jobs) as pool:
        return pool.map(_job, work, chunksize=1)


def failures(results: List[Dict]) -> List[str]:
    bad = []
    for r in results:
        if not r["ok"]:
            bad.append(f"sm_{r['cc']} {r['config']}: compile error: {r['error'].splitlines()[0]}")
        elif r["spill_stores"] > r["spill_budget"]:
            bad.append(f"sm_{r['cc']} {r['config']}: {r['spill_stores']} bytes of spill stores "
                       f"(budget {r['spill_budget']}), {r['registers']} registers")
    return bad


def table(results: List[Dict]) -> str:
    lines = [f"{'target':7s} {'regs':>4s} {'stack':>5s} {'spill':>5s} {'smem':>6s} {'s':>5s}  config"]
    for r in sorted(results, key=lambda r: (r["cc"], r["config"])):
        if r["ok"]:
            lines.append(f"sm_{r['cc']:<4d} {r['registers']:4d} {r['stack']:5d} {r['spill_stores']:5d} "
                         f"{r['shared']:6d} {r['seconds']:5.1f}  {r['config']}")
        else:
            lines.append(f"sm_{r['cc']:<4d} {'ERROR':>4s} {'':5s} {'':5s} {'':6s} {r['seconds']:5.1f}  "
                         f"{r['config']}: {r['error'].splitlines()[0][:200]}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cc", type=int, nargs="+", default=[80, 90])
    p.add_argument("--jobs", type=int, default=None)
    p.add_argument("--json", default=None, help="write the results here")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    results = check(a.cc, a.jobs)
    wall = time.perf_counter() - t0
    print(table(results))
    bad = failures(results)
    print(f"{len(results)} compiles in {wall:.1f} s; {len(bad)} failing")
    for b in bad:
        print("FAIL", b)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"wall_seconds": round(wall, 1), "results": results, "failures": bad}, f, indent=1)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
