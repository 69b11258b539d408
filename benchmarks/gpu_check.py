#!/usr/bin/env python3
"""One GPU command (issue 17 item 8): correctness, host syncs, op counts, timings and kernel
resources of every GPU path, as JSON. Prepared without a GPU; run it when one is lent.

    PYTHONPATH=src python benchmarks/gpu_check.py [--out gpu_check.json] [--quick] [--no-resources]
        [--sections kernels layers timing syncs ops resources] [--device cpu]

From a fresh checkout with only ``PYTHONPATH=src`` (no install). Sections, each recorded in the
JSON even when it fails (``"error"``), so one broken path does not hide the others; the JSON is
rewritten after every section and each section's records are printed as it ends, so a run stopped
by a time limit keeps what it measured. Default order: kernels, layers, timing, syncs, ops, resources.

1. **kernels** vs float64: Vandermonde (L up to 65,536), diagonal scan (real / complex / x0),
   DPLR Cauchy, fused LinOSS scan (IM / IMEX, state in and out, all five gradients), the chunked
   convolution's Triton forward and backward (stateless / stateful / bidirectional), the dense (S4)
   chunked convolution's Triton kernels (stateless / stateful), fused step --
   the CUDA path the policy picks ("auto": Triton when it imports) against the float64 reference
   twin ``<op>_ref``, forward and gradients, max relative error.
2. **layers** S4D, S4, LinOSS (fp32 on CUDA) vs the same weights in float64: output and every
   parameter gradient, L up to 65,536 for S4D.
3. **syncs**: host synchronisations per forward, backward and step, counted with
   ``torch.cuda.set_sync_debug_mode("warn")`` (target: 0).
4. **ops**: CUDA kernel launches and aten ops per forward+backward from ``torch.profiler``.
5. **timing**: the goal shapes (H=256, N=64; S4D B16 L4096, S4D B1 L65536, S4 B16 L4096,
   LinOSS B16 L4096) fwd and fwd+bwd with CUDA events (median), fwd+bwd again with the layer captured by
   ``torch.cuda.make_graphed_callables`` (no host dispatch), beside the fp32 copy floor of
   the (B, L, H) activation (one read + one write), and the eager step rate (steps/s); the Triton
   Vandermonde and LinOSS paths and the S4D and S4 layers (Triton chunked convolutions, diagonal and
   dense, forward and backward) beside their PyTorch paths (``backend "auto"`` vs ``"torch"``, one run).
6. **resources**: registers / stack / spills of every Triton launch configuration compiled for
   this card's compute capability and sm_80 / sm_90 (``statespaces.ops.triton._resources``).
7. **fallbacks**: ``statespaces.backend.failed_ops()`` -- any Triton path that failed and fell back.

On a machine without CUDA it prints a message and exits 2 (nothing checked; not a pass). It exits 1 when a section
raised or the layers found a NaN error or a gradient missing on one side, 0 otherwise.

``--device cpu`` is a dry run of the harness before a GPU lease, on any machine: the same sections at the
``--quick`` sizes, on the CPU, where the library takes its PyTorch paths. kernels and layers really run against
float64 (the Triton-only fused LinOSS scan is recorded as skipped), ops counts aten ops with the CPU profiler;
what needs CUDA by nature (CUDA events and graphs in timing, ``set_sync_debug_mode`` in syncs, the kernel count
in ops, resources compiled for the card) is recorded as ``"skipped: needs CUDA"``. The JSON says
``"device": "cpu", "dry_run": true``: its numbers are not GPU results.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import traceback
import warnings
from typing import Callable, Dict, List, Optional, Tuple

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "src"))


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    x, ref = x.detach().to(torch.complex128 if ref.is_complex() or x.is_complex() else torch.float64).cpu(), \
        ref.detach().to(torch.complex128 if ref.is_complex() or x.is_complex() else torch.float64).cpu()
    return float((x - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def worst(values) -> Optional[float]:
    """The largest error, NaN if any is NaN (Python's ``max`` skips a NaN that is not first); None if empty."""
    values = list(values)
    if not values:
        return None
    return float("nan") if any(math.isnan(v) for v in values) else max(values)


def grad_errors(names, got, ref) -> Tuple[Dict[str, float], List[str]]:
    """Per-parameter relative errors of the gradients ``got`` against ``ref``, and the names whose gradient is None
    on one side only (a path that dropped a gradient)."""
    errs, missing = {}, []
    for n, p, q in zip(names, got, ref):
        if p is not None and q is not None:
            errs[n] = rel_err(p, q)
        elif (p is None) != (q is None):
            missing.append(f"{n}: {'none on the device path' if p is None else 'none in the float64 reference'}")
    return errs, missing


def failed_sections(results: Dict) -> List[str]:
    """The sections that raised (``{"error": ...}``) or that found a NaN error or a missing gradient."""
    bad = []
    for name in SECTIONS:
        r = results.get(name)
        if isinstance(r, dict) and "error" in r:
            bad.append(f"{name} (raised: {r['error'][:200]})")
        elif isinstance(r, list) and any(isinstance(x, dict) and (x.get("missing_grads") or any(
                isinstance(v, float) and math.isnan(v) for v in (x.get("fwd"), x.get("grad_max")))) for x in r):
            bad.append(f"{name} (a NaN error or a missing gradient)")
    return bad


#: The sections, in their default order (``--sections`` picks and orders them).
SECTIONS = ("kernels", "layers", "timing", "syncs", "ops", "resources")


def section(results: Dict, name: str, fn: Callable[[], object]) -> None:
    """Run one section into ``results[name]``; print it at once (a run cut short still shows it)."""
    t0 = time.perf_counter()
    try:
        results[name] = fn()
    except Exception as e:  # recorded, the other sections still run
        results[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-4000:]}
    print(f"[{name}] {time.perf_counter() - t0:.1f} s", flush=True)
    if name != "resources":
        print(json.dumps(results[name], default=str)[:6000], flush=True)


# ---- 1. kernels ------------------------------------------------------------------------------------
#: Why a check that needs CUDA by nature is skipped in a ``--device cpu`` dry run (recorded as ``"skipped": ...``).
NEEDS_CUDA = "needs CUDA"


def check_kernels(quick: bool, device: str = "cuda") -> List[Dict]:
    from statespaces.kernels.cauchy import cauchy, cauchy_ref
    from statespaces.kernels.vandermonde import vandermonde, vandermonde_ref
    from statespaces.ops.scan import scan_diagonal, scan_diagonal_ref

    dev, out = device, []
    g = torch.Generator().manual_seed(0)

    def grads(y, xs, G):
        return torch.autograd.grad(y, xs, G)

    # Vandermonde: ref in float64 materializes (H, N, L): keep H * N * L moderate
    for H, N, L in [(8, 32, 64), (8, 32, 4096), (4, 32, 65536)][: 2 if quick else 3]:
        log_a = torch.complex(-0.5 * torch.rand(H, N, generator=g) / L * 64, math.pi * torch.rand(H, N, generator=g))
        coef = torch.randn(H, N, dtype=torch.complex64, generator=g)
        x = [coef.to(dev).requires_grad_(), log_a.to(dev).requires_grad_()]
        r = [coef.cdouble().requires_grad_(), log_a.cdouble().requires_grad_()]
        y, yr = vandermonde(x[0], x[1], L), vandermonde_ref(r[0], r[1], L)
        G = torch.randn(yr.shape, dtype=torch.float64, generator=g)
        gx, gr = grads(y, x, G.float().to(dev)), grads(yr, r, G)
        out.append({"op": "vandermonde", "H": H, "N": N, "L": L, "fwd": rel_err(y, yr),
                    "grad_coef": rel_err(gx[0], gr[0]), "grad_log_a": rel_err(gx[1], gr[1])})
    # ZOH discretization fused into the Vandermonde kernels (S4D's default kernel path), bidirectional rows
    from statespaces.kernels.vandermonde import zoh_vandermonde, zoh_vandermonde_ref
    for H, N, L in [(8, 32, 4096), (4, 32, 65536)][: 1 if quick else 2]:
        dt = torch.exp(torch.empty(H).uniform_(math.log(1e-3), math.log(1e-1), generator=g))
        A = torch.complex(-0.5 * torch.ones(H, N), math.pi * torch.arange(N).float().expand(H, N))   # S4D-Lin
        B = torch.randn(H, N, dtype=torch.complex64, generator=g)
        C = torch.randn(2, H, N, dtype=torch.complex64, generator=g)
        ins = (dt, A, B, C)
        x = [t.to(dev).requires_grad_() for t in ins]
        r = [(t.cdouble() if t.is_complex() else t.double()).requires_grad_() for t in ins]
        y, yr = zoh_vandermonde(*x, 2.0, L), zoh_vandermonde_ref(*r, 2.0, L)
        G = torch.randn(yr.shape, dtype=torch.float64, generator=g)
        gx, gr = grads(y, x, G.float().to(dev)), grads(yr, r, G)
        out.append({"op": "zoh_vandermonde", "H": H, "N": N, "L": L, "fwd": rel_err(y, yr),
                    **{f"grad_{n}": rel_err(p, q) for n, p, q in zip(("dt", "A", "B", "C"), gx, gr)}})
    # S4's real bilinear (dA, dB) from (Lambda, P, B, dt) in one launch (the dense chunked path's discretization):
    # LegS (rank 1) and LegT (rank 2, Re Lambda = 0) parameters of a layer, against float64 autograd
    from statespaces import S4
    from statespaces.kernels.dplr import bilinear_dplr_system, bilinear_dplr_system_ref
    for init in ("legs", "legt"):
        Lam, P, B, _ = (t.detach() for t in S4(64, 64, init=init, seed=0)._raw_system())
        dt = torch.exp(torch.empty(64).uniform_(math.log(1e-3), math.log(1e-1), generator=g))
        ins = (Lam, P, B, dt)
        x = [t.to(dev).requires_grad_() for t in ins]
        r = [(t.cdouble() if t.is_complex() else t.double()).requires_grad_() for t in ins]
        y, yr = bilinear_dplr_system(*x), bilinear_dplr_system_ref(*r)
        Gs = [torch.randn(t.shape, dtype=torch.float64, generator=g) for t in yr]
        gx = torch.autograd.grad(y, x, [G.float().to(dev) for G in Gs])
        gr = torch.autograd.grad(yr, r, Gs)
        out.append({"op": "bilinear_dplr_system", "init": init, "H": 64, "N": 64, "out_dA": rel_err(y[0], yr[0]),
                    "out_dB": rel_err(y[1], yr[1]),
                    **{f"grad_{n}": rel_err(p, q) for n, p, q in zip(("Lambda", "P", "B", "dt"), gx, gr)}})
    # diagonal scan
    for kind in ("real", "complex", "complex_x0"):
        B, L, N = 2, (1024 if quick else 16384), 48
        if kind == "real":
            a, b, x0 = torch.rand(B, L, N, generator=g) * 0.2 + 0.8, torch.randn(B, L, N, generator=g), None
        else:
            a = torch.polar(torch.rand(B, L, N, generator=g) * 0.2 + 0.8, torch.randn(B, L, N, generator=g))
            b = torch.randn(B, L, N, dtype=torch.complex64, generator=g)
            x0 = torch.randn(B, N, dtype=torch.complex64, generator=g) if kind == "complex_x0" else None
        ins = [a, b] + ([x0] if x0 is not None else [])
        x = [t.to(dev).requires_grad_() for t in ins]
        r = [(t.cdouble() if t.is_complex() else t.double()).requires_grad_() for t in ins]
        y, yr = scan_diagonal(*x), scan_diagonal_ref(*r)
        G = torch.randn(yr.shape, dtype=yr.dtype, generator=g)
        gx, gr = grads(y, x, G.to(y.dtype).to(dev)), grads(yr, r, G)
        out.append({"op": "scan_diagonal", "kind": kind, "B": B, "L": L, "N": N, "fwd": rel_err(y, yr),
                    **{f"grad_{i}": rel_err(p, q) for i, p, q in zip("abx", gx, gr)}})
    # Cauchy (DPLR shapes: H channels, 4 vectors sharing nodes, K frequencies)
    H, J, N, K = 16, 4, 32, 2048
    v = torch.randn(H, J, N, dtype=torch.complex64, generator=g)
    w = torch.complex(-0.5 - torch.rand(H, 1, N, generator=g), 10 * torch.randn(H, 1, N, generator=g))
    z = torch.complex(torch.full((K,), 0.1), torch.linspace(-50, 50, K)).expand(H, 1, K).contiguous()
    x = [t.to(dev).requires_grad_() for t in (v, z, w)]
    r = [t.cdouble().requires_grad_() for t in (v, z, w)]
    y, yr = cauchy(*x, conj=True), cauchy_ref(*r, conj=True)
    G = torch.randn(yr.shape, dtype=yr.dtype, generator=g)
    gx, gr = grads(y, x, G.to(y.dtype).to(dev)), grads(yr, r, G)
    out.append({"op": "cauchy", "H": H, "J": J, "N": N, "K": K, "fwd": rel_err(y, yr),
                **{f"grad_{n}": rel_err(p, q) for n, p, q in zip("vzw", gx, gr)}})
    # fused LinOSS scan (forcing built in-kernel from u) vs the float64 loop, IM and IMEX, state in/out
    if dev == "cuda":
        out += check_linoss_scan(quick, g)
    else:
        out.append({"op": "linoss_scan", "skipped": f"{NEEDS_CUDA} (the fused scan is a Triton kernel only)"})
    out += check_chunked_conv(quick, g, device=dev)
    out += check_chunked_dense(quick, g, device=dev)
    out += check_steps(g, device=dev)
    return out


def check_steps(g: torch.Generator, device: str = "cuda") -> List[Dict]:
    """The fused recurrent steps (inference) against their float64 PyTorch twins: the diagonal step (S4D), the
    oscillator step (LinOSS / D-LinOSS) and the low-rank step (S4), fp32 and fp64 states. On CPU the float32 side is the PyTorch step."""
    from statespaces.kernels import dispatch, oscillator

    dev, out = device, []
    for real in (torch.float32, torch.float64):
        cd = torch.complex64 if real == torch.float32 else torch.complex128
        B, H, M = 16, 256, 32
        dA = torch.polar(torch.rand(H, M, generator=g, dtype=torch.float64) * 0.1 + 0.9, torch.randn(H, M, generator=g, dtype=torch.float64))
        args = [dA, torch.randn(H, M, dtype=torch.complex128, generator=g), torch.randn(H, M, dtype=torch.complex128, generator=g),
                torch.randn(H, dtype=torch.float64, generator=g), torch.randn(B, H, dtype=torch.float64, generator=g),
                torch.randn(B, H, M, dtype=torch.complex128, generator=g)]
        cast = [t.to(cd if t.is_complex() else real).to(dev) for t in args]
        with torch.no_grad():
            y, s = dispatch.diagonal_step(*cast)
            yr, sr = dispatch.diagonal_step_ref(*args)
        out.append({"op": "diagonal_step", "dtype": str(real), "y": rel_err(y, yr), "state": rel_err(s, sr)})
    # fused LinOSS / D-LinOSS step (inference, two launches): float64 M, f; fp32 or fp64 state
    for real in (torch.float32, torch.float64):
        cd = torch.complex64 if real == torch.float32 else torch.complex128
        B, H, P = 16, 256, 64
        M = 0.5 * torch.randn(2, 2, P, generator=g, dtype=torch.float64)
        f = torch.randn(2, P, generator=g, dtype=torch.float64)
        args = [torch.randn(H, P, dtype=torch.complex128, generator=g), torch.randn(P, H, dtype=torch.complex128, generator=g),
                torch.randn(H, dtype=torch.float64, generator=g), torch.randn(B, H, dtype=torch.float64, generator=g),
                torch.randn(B, 2, P, dtype=torch.complex128, generator=g)]
        cast = [t.to(cd if t.is_complex() else real).to(dev) for t in args]
        with torch.no_grad():
            y, s = oscillator.oscillator_step(M.to(dev), f.to(dev), *cast)
            yr, sr = oscillator.oscillator_step_ref(M, f, *args)
        out.append({"op": "oscillator_step", "dtype": str(real), "y": rel_err(y, yr), "state": rel_err(s, sr)})
    # fused S4 low-rank (Woodbury) step: the precomputed system of an S4 layer (LegT: rank 2), float64 twin
    from statespaces import S4
    from statespaces.kernels import dplr

    layer = S4(256, 64, init="legt", seed=0).double()
    with torch.no_grad():
        st, C = layer._step_system(1.0)
        st = dplr.DPLRStep(**{k: getattr(st, k).detach() for k in ("da", "db", "Pc", "dsP", "E", "sG")})
        C, D = C.detach(), layer.D.detach()
        B, H, M = 16, 256, layer.n_modes
        x = torch.randn(B, H, dtype=torch.float64, generator=g)
        state = torch.randn(B, H, M, dtype=torch.complex128, generator=g)
        yr, sr = dplr.dplr_step_ref(st, C, D, x, state)
        for real in (torch.float32, torch.float64):
            cd = torch.complex64 if real == torch.float32 else torch.complex128
            st_d = dplr.DPLRStep(**{k: getattr(st, k).to(dev, cd) for k in ("da", "db", "Pc", "dsP", "E", "sG")})
            y, s = dplr.dplr_step(st_d, C.to(dev, cd), D.to(dev, real), x.to(dev, real), state.to(dev, cd))
            out.append({"op": "dplr_step", "dtype": str(real), "y": rel_err(y, yr), "state": rel_err(s, sr)})
    return out


def linoss_scan_case(scheme: str, B: int, L: int, H: int, P: int, g: torch.Generator):
    """(u, W, M, f, x0) in float64 for the fused LinOSS scan: M, f from the oscillator discretization."""
    from statespaces.kernels.oscillator import oscillator_transition

    A = torch.rand(P, dtype=torch.float64, generator=g)
    dt = 0.2 + 0.7 * torch.rand(P, dtype=torch.float64, generator=g)
    M, f = oscillator_transition(A, dt, scheme, validate=False)
    W = torch.randn(2 * P, H, dtype=torch.float64, generator=g) / math.sqrt(H)
    u = torch.randn(B, L, H, dtype=torch.float64, generator=g)
    x0 = torch.randn(B, 2, 2 * P, dtype=torch.float64, generator=g)
    return u, W, M, f, x0


def linoss_scan_loop(u, W, M, f, x0):
    """Float64 twin of the fused LinOSS scan: (positions (B, L, 2P), final state (B, 2, 2P))."""
    from statespaces.ops.scan import scan_loop

    v = u @ W.T
    M2, f2 = torch.cat([M, M], -1), torch.cat([f, f], -1)
    X = scan_loop(M2.unsqueeze(0).expand(u.shape[1], *M2.shape), torch.stack([f2[0] * v, f2[1] * v], -2), x0,
                  block=True)
    return X[:, :, 1], X[:, -1]


def check_chunked_conv(quick: bool, g: torch.Generator, device: str = "cuda", size=(2, 64, 32),
                       lengths=None) -> List[Dict]:
    """The Triton chunked convolution (forward and backward kernels) against float64 autograd through the
    PyTorch chunked convolution (itself tested against the recurrence and the FFT): output, final state,
    du, d(state) and the gradients of log dA, dB, C, D; stateless, stateful and bidirectional."""
    from statespaces.kernels.chunked_conv import chunked_conv_diagonal

    out = []
    B, H, M = size
    for L in lengths or ((1000,) if quick else (1000, 16384)):
        for kind in ("stateless", "stateful", "bidirectional"):
            K = 2 if kind == "bidirectional" else 1
            log_dA = torch.complex(-torch.rand(H, M, generator=g) * 0.05, torch.randn(H, M, generator=g))
            ins = [log_dA, torch.randn(H, M, dtype=torch.complex64, generator=g),
                   torch.randn(K, H, M, dtype=torch.complex64, generator=g), torch.randn(H, generator=g),
                   torch.randn(B, L, H, generator=g)]
            if kind == "stateful":
                ins.append(torch.randn(B, H, M, dtype=torch.complex64, generator=g))
            x = [t.to(device).requires_grad_() for t in ins]
            r = [(t.cdouble() if t.is_complex() else t.double()).requires_grad_() for t in ins]

            def run(a, chunk):
                st = a[5] if len(a) > 5 else None
                return chunked_conv_diagonal(a[4], a[0], a[1], a[2], 2.0, a[3], st, st is not None, chunk=chunk)

            y, yr = run(x, None), run(r, 64)
            outs, refs = (list(y), list(yr)) if kind == "stateful" else ([y], [yr])
            Gs = [torch.randn(t.shape, dtype=t.dtype, generator=g) for t in refs]
            gx = torch.autograd.grad(outs, x, [G.to(o.dtype).to(device) for G, o in zip(Gs, outs)])
            gr = torch.autograd.grad(refs, r, Gs)
            names = ["log_dA", "dB", "C", "D", "u", "state"]
            out.append({"op": "chunked_conv", "kind": kind, "B": B, "L": L, "H": H, "M": M,
                        **{f"out_{i}": rel_err(p, q) for i, (p, q) in enumerate(zip(outs, refs))},
                        **{f"grad_{n}": rel_err(p, q) for n, p, q in zip(names, gx, gr)}})
    return out


def check_chunked_dense(quick: bool, g: torch.Generator, device: str = "cuda", size=(4, 16, 64),
                        lengths=None) -> List[Dict]:
    """The Triton dense chunked convolution (S4's real N x N transition; five kernels, forward and backward)
    against float64 autograd through the PyTorch dense chunked path (itself tested against the recurrence and
    the FFT route): output, final state, du, d(state) and the gradients of dA, dB, c, D, with an S4 (LegS)
    layer's discrete system; stateless and stateful."""
    from statespaces import S4
    from statespaces.kernels.chunked import chunked_conv_dense

    out = []
    B, H, N = size
    dA, dB, c, _ = (t.detach() for t in S4(H, N, seed=0).double().dense_system())
    for L in lengths or ((1000,) if quick else (1000, 16384)):
        for kind in ("stateless", "stateful"):
            ins = [dA, dB, c, torch.randn(H, dtype=torch.float64, generator=g),
                   torch.randn(B, L, H, dtype=torch.float64, generator=g)]
            if kind == "stateful":
                ins.append(torch.randn(B, H, N, dtype=torch.float64, generator=g))
            x = [t.float().to(device).requires_grad_() for t in ins]
            r = [t.clone().requires_grad_() for t in ins]

            def run(a):
                st = a[5] if len(a) > 5 else None
                return chunked_conv_dense(a[4], a[0], a[1], a[2], a[3], st, st is not None)

            y, yr = run(x), run(r)
            outs, refs = (list(y), list(yr)) if kind == "stateful" else ([y], [yr])
            Gs = [torch.randn(t.shape, dtype=t.dtype, generator=g) for t in refs]
            gx = torch.autograd.grad(outs, x, [G.float().to(device) for G in Gs])
            gr = torch.autograd.grad(refs, r, Gs)
            names = ["dA", "dB", "c", "D", "u", "state"]
            out.append({"op": "chunked_conv_dense", "kind": kind, "B": B, "L": L, "H": H, "N": N,
                        **{f"out_{i}": rel_err(p, q) for i, (p, q) in enumerate(zip(outs, refs))},
                        **{f"grad_{n}": rel_err(p, q) for n, p, q in zip(names, gx, gr)}})
    return out


def check_linoss_scan(quick: bool, g: torch.Generator) -> List[Dict]:
    from statespaces.ops.triton.linoss import linoss_scan_triton

    out = []
    for scheme in ("im", "imex"):
        for B, L, H, P in [(2, 1000, 32, 16), (1, 4096 if quick else 16384, 16, 8)]:
            u, W, M, f, x0 = linoss_scan_case(scheme, B, L, H, P, g)
            x = [u.float().cuda(), W.float().cuda(), M.cuda(), f.cuda(), x0.float().cuda()]
            x = [t.requires_grad_() for t in x]
            r = [t.clone().requires_grad_() for t in (u, W, M, f, x0)]
            y, fin = linoss_scan_triton(*x)
            yr, finr = linoss_scan_loop(*r)
            Gy = torch.randn(yr.shape, dtype=torch.float64, generator=g)
            Gf = torch.randn(finr.shape, dtype=torch.float64, generator=g)
            gx = torch.autograd.grad((y * Gy.float().cuda()).sum() + (fin * Gf.float().cuda()).sum(), x)
            gr = torch.autograd.grad((yr * Gy).sum() + (finr * Gf).sum(), r)
            out.append({"op": "linoss_scan", "scheme": scheme, "B": B, "L": L, "H": H, "P": P, "fwd": rel_err(y, yr),
                        "final_state": rel_err(fin, finr),
                        **{f"grad_{n}": rel_err(p, q) for n, p, q in zip(("u", "W", "M", "f", "x0"), gx, gr)}})
    return out


# ---- 2. layers -------------------------------------------------------------------------------------
def _layers(H=256, N=64):
    from statespaces import S4, S4D, LinOSS

    return {"S4D": lambda: S4D(H, N), "S4": lambda: S4(H, N), "LinOSS": lambda: LinOSS(H, N)}


def check_layers(quick: bool, device: str = "cuda") -> List[Dict]:
    out = []
    from statespaces.layers import DLinOSS

    from statespaces import S4

    shapes = {"S4D": [(2, 1024), (1, 65536)], "S4": [(2, 1024), (1, 16384)], "LinOSS": [(2, 1024), (1, 16384)],
              "DLinOSS": [(2, 1024), (1, 16384)], "S4-bidirectional": [(2, 1024), (1, 16384)]}
    makers = {**_layers(H=32, N=32), "DLinOSS": lambda: DLinOSS(32, 32),           # correctness only
              "S4-bidirectional": lambda: S4(32, 32, bidirectional=True)}
    for name, make in makers.items():
        for B, L in shapes[name][: 1 if quick else 2]:
            torch.manual_seed(0)
            layer = make()
            ref = make()
            ref.load_state_dict(layer.state_dict())
            layer, ref = layer.to(device), ref.double()
            x = torch.randn(B, L, 32, dtype=torch.float64)
            y = layer(x.float().to(device))
            yr = ref(x)
            y, yr = (y[0], yr[0]) if isinstance(y, tuple) else (y, yr)
            G = torch.randn(yr.shape, dtype=torch.float64)
            gx = torch.autograd.grad(y, list(layer.parameters()), G.float().to(device), allow_unused=True)
            gr = torch.autograd.grad(yr, list(ref.parameters()), G, allow_unused=True)
            errs, missing = grad_errors([n for n, _ in layer.named_parameters()], gx, gr)
            out.append({"layer": name, "B": B, "L": L, "fwd": rel_err(y, yr), "grad_max": worst(errs.values()),
                        "grads": errs, **({"missing_grads": missing} if missing else {})})
    return out


# ---- 3. syncs --------------------------------------------------------------------------------------
#: The texts of the warnings :func:`_count_syncs` counted (the first few), written to the JSON: in the first
#: H200 run one S4D-stepper call counted 1 while ``set_sync_debug_mode("error")`` raised nothing.
SYNC_MESSAGES: List[str] = []


def _count_syncs(fn: Callable[[], object]) -> int:
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    hits = [f"{x.category.__name__}: {str(x.message)[:200]} ({os.path.basename(x.filename)}:{x.lineno})"
            for x in w if "synchroniz" in str(x.message).lower()]
    SYNC_MESSAGES.extend(hits[: max(0, 8 - len(SYNC_MESSAGES))])
    return len(hits)


def check_syncs() -> List[Dict]:
    out = []
    for name, make in _layers(H=64, N=32).items():
        layer = make().cuda()
        x = torch.randn(4, 1024, 64, device="cuda")
        layer(x)                                                       # warm-up (first-call validation, compiles)
        rec = {"layer": name}
        holder = {}

        def fwd():
            holder["y"] = layer(x)

        rec["forward"] = _count_syncs(fwd)
        y = holder["y"][0] if isinstance(holder["y"], tuple) else holder["y"]
        rec["backward"] = _count_syncs(lambda: y.sum().backward())
        try:
            with torch.no_grad():
                state = layer.initial_state(4)
                layer.step(x[:, 0], state)
                rec["step"] = _count_syncs(lambda: layer.step(x[:, 0], state))
        except Exception as e:
            rec["step"] = f"{type(e).__name__}: {e}"
        out.append(rec)
    return out


# ---- 4. op / kernel counts -------------------------------------------------------------------------
def check_ops(device: str = "cuda") -> List[Dict]:
    """On the CPU (dry run): aten ops by the CPU profiler at a small shape; no kernel count."""
    from torch.profiler import ProfilerActivity, profile

    out = []
    cuda = device == "cuda"
    H, B, L = (256, 4, 4096) if cuda else (32, 2, 256)
    activities = [ProfilerActivity.CPU, ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]
    for name, make in _layers(H=H, N=64 if cuda else 16).items():
        layer = make().to(device)
        x = torch.randn(B, L, H, device=device)
        y = layer(x)
        (y[0] if isinstance(y, tuple) else y).sum().backward()
        if cuda:
            torch.cuda.synchronize()
        with profile(activities=activities) as prof:
            y = layer(x)
            (y[0] if isinstance(y, tuple) else y).sum().backward()
            if cuda:
                torch.cuda.synchronize()
        events = prof.events()
        kernels = [e for e in events if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA]
        aten = [e for e in events if e.name.startswith("aten::")]
        top: Dict[str, int] = {}
        for e in kernels:
            top[e.name[:80]] = top.get(e.name[:80], 0) + 1
        if not cuda:
            out.append({"layer": name, "B": B, "L": L, "H": H, "aten_ops": len(aten),
                        "cuda_kernels": f"skipped: {NEEDS_CUDA}"})
            continue
        out.append({"layer": name, "cuda_kernels": len(kernels), "aten_ops": len(aten),
                    "top_kernels": sorted(top.items(), key=lambda kv: -kv[1])[:15]})
    return out


# ---- 5. timing ---------------------------------------------------------------------------------------
def cuda_time(fn: Callable[[], object], repeat: int = 20, warmup: int = 3) -> float:
    """Median milliseconds of fn() by CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e))
    times.sort()
    return times[len(times) // 2]


def steps_per_s(fn: Callable[[], object], steps: int, warmup: int = 20) -> float:
    """Calls of fn() per second over ``steps`` calls, timed by CUDA events around the whole loop (one
    function for the eager step, the eager and graphed steppers and the graphed model stepper)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(steps):
        fn()
    e.record()
    e.synchronize()
    return steps / (s.elapsed_time(e) / 1e3)


GOALS = [("S4D", 16, 4096), ("S4D", 1, 65536), ("S4", 16, 4096), ("LinOSS", 16, 4096)]


def check_timing(quick: bool) -> List[Dict]:
    out = []
    H, N = 256, 64
    makers = _layers(H, N)
    for name, B, L in GOALS:
        layer = makers[name]().cuda()
        x = torch.randn(B, L, H, device="cuda", requires_grad=True)
        floor_src = torch.randn(B, L, H, device="cuda")
        floor_dst = torch.empty_like(floor_src)          # a copy into a buffer, as common.copy_floor (no allocation)

        def fwd():
            with torch.no_grad():
                return layer(x)

        def fwd_bwd():
            y = layer(x)
            (y[0] if isinstance(y, tuple) else y).sum().backward()

        rep = 5 if quick else 20
        rec = {"layer": name, "B": B, "L": L, "H": H, "N": N,
               "fwd_ms": cuda_time(fwd, rep), "fwd_bwd_ms": cuda_time(fwd_bwd, rep),
               "copy_floor_ms": cuda_time(lambda: floor_dst.copy_(floor_src), rep)}
        rec["fwd_over_floor"] = rec["fwd_ms"] / rec["copy_floor_ms"]
        rec.update(_graphed_fwd_bwd(layer, x, rep))
        out.append(rec)
    out += time_paths(quick)
    out += time_dense_variants(quick)
    # recurrent step rate: eager layer.step, then the stepper eager / graphed and the graphed model stepper
    from statespaces.layers.s5 import S5

    makers["S5"] = lambda: S5(H, N)                       # the MIMO stepper: complex GEMMs, no Triton kernel
    for name in ("S4D", "S4", "LinOSS", "S5"):
        layer = makers[name]().cuda().eval()
        try:
            with torch.no_grad():
                box = [layer.initial_state(1)]
                u = torch.randn(1, H, device="cuda")

                def step():
                    box[0] = layer.step(u, box[0])[1]

                out.append({"layer": name, "step": "eager", "steps_per_s": steps_per_s(step, 200 if quick else 2000)})
        except Exception as e:
            out.append({"layer": name, "step": "eager", "error": f"{type(e).__name__}: {e}"})
        out.append(_stepper_rate(name, layer, H, 200 if quick else 2000))
    return out


def time_dense_variants(quick: bool) -> List[Dict]:
    """S4's dense chunked path with each of the 2026-12-06 changes undone in turn, in the same run (they were
    written without a GPU): segments of the sequential kernels off (``SEGMENT_PROGRAMS = 0``), one program per
    block of chunk rows in the output / du kernels (``ROW_PROGRAMS`` unbounded), and a bidirectional layer on its
    former Cauchy/FFT route; S4D's FFT backward with its spectral products in PyTorch instead of the fused
    pass (:mod:`statespaces.ops.triton.spectral`); and a stateful S4D call (``state=``, ``return_state``) on the
    Triton chunked kernels, as shipped, against the FFT route with its two state sums, which
    :func:`~statespaces.kernels.chunked_conv.prefer_chunked` has never had timed. fwd+bwd ms, eager and graphed."""
    from contextlib import nullcontext
    from unittest import mock

    from statespaces import S4, S4D, backend
    from statespaces.ops.triton import chunked_dense

    H, N, out = 256, 64, []
    cases = [("S4", 16, 4096, False), ("S4D", 16, 4096, False), ("S4D-stateful", 16, 4096, False),
             ("S4", 1, 65536, False), ("S4-bidirectional", 16, 4096, True), ("S4D-stateful", 1, 65536, False)]
    for name, B, L, bi in cases[: 3 if quick else 6]:
        layer = (S4D(H, N) if name.startswith("S4D") else S4(H, N, bidirectional=bi)).cuda()
        x = torch.randn(B, L, H, device="cuda", requires_grad=True)
        model = _StatefulSum(layer, B) if name == "S4D-stateful" else layer

        def fwd_bwd():
            model(x).sum().backward()

        def fft_route(layer=layer):                                        # the layer's FFT route, forced
            return mock.patch.object(layer, "_use_chunked", lambda u, stateful: False)

        if name == "S4D-stateful":                                         # prefer_chunked's stateful rule
            undone = {"FFT route with state sums": fft_route}
        elif name == "S4D":                                                # its FFT backward's spectral products
            undone = {"PyTorch spectral products": lambda: mock.patch.dict(
                backend._FAILED, {"fftconv_spectral": "disabled by gpu_check for the comparison"})}
        elif bi:                                                           # the route before 2026-12-06
            undone = {"Cauchy/FFT route": fft_route}
        else:
            undone = {"no segments": lambda: mock.patch.object(chunked_dense, "SEGMENT_PROGRAMS", 0),
                      "one program per row block": lambda: mock.patch.object(chunked_dense, "ROW_PROGRAMS", 1 << 30)}
        for label, patch in {"as shipped": nullcontext, **undone}.items():
            rec: Dict = {"layer": name, "B": B, "L": L, "variant": label}
            try:
                with patch():
                    rec["fwd_bwd_ms"] = cuda_time(fwd_bwd, 5 if quick else 20)
                    rec.update(_graphed_fwd_bwd(model, x, 5 if quick else 20))
            except Exception as e:
                rec["error"] = f"{type(e).__name__}: {str(e)[:300]}"
            out.append(rec)
    return out


class _StatefulSum(torch.nn.Module):
    """A stateful call of ``layer`` as one module (for timing and graph capture): from a fixed random initial
    state, ``forward(x)`` returns the sum of the output and of the final state (real and imaginary parts), so
    that a backward goes through both."""

    def __init__(self, layer: torch.nn.Module, batch: int) -> None:
        super().__init__()
        self.layer = layer
        s0 = layer.initial_state(batch)
        self.register_buffer("s0", torch.randn(s0.shape, dtype=s0.dtype, device=s0.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, s = self.layer(x, state=self.s0, return_state=True)
        return y.sum() + (torch.view_as_real(s) if s.is_complex() else s).sum()


def _graphed_fwd_bwd(layer, x: torch.Tensor, rep: int) -> Dict:
    """fwd+bwd of the layer under ``torch.cuda.make_graphed_callables`` (PyTorch's own capture of a module's
    forward and backward as two CUDA graphs): the time without host-side dispatch, which the eager layers
    are bound by (benchmarks/README.md, "Where the time goes"). Needs no host sync inside the layer."""
    try:
        graphed = torch.cuda.make_graphed_callables(layer, (x,))

        def run():
            y = graphed(x)
            (y[0] if isinstance(y, tuple) else y).sum().backward()

        return {"graphed_fwd_bwd_ms": cuda_time(run, rep)}
    except Exception as e:  # recorded: what stops a capture is itself a finding
        return {"graphed_error": f"{type(e).__name__}: {str(e)[:300]}"}


def _graph(fn: Callable[[], object]):
    """fn captured in a CUDA graph after a warm-up on a side stream."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return g


def _stepper_rate(name: str, layer, H: int, steps: int) -> Dict:
    """Steps/s of the layer's stepper (statespaces.layers.stepper), eager and CUDA-graphed, its host
    syncs per call, and the graphed whole-model stepper of a 4-block LM (statespaces.models.stepper)."""
    rec: Dict = {"layer": name, "step": "stepper"}
    try:
        with torch.no_grad():
            st = layer.stepper(1)
            u = torch.randn(1, H, device="cuda")
            for _ in range(20):
                st(u)
            rec["syncs_per_call"] = _count_syncs(lambda: st(u))
            rec["eager_steps_per_s"] = steps_per_s(lambda: st(u), steps)
            rec["graphed_steps_per_s"] = steps_per_s(_graph(st.advance).replay, steps)
            from statespaces.models.lm import SSMLanguageModel

            lm = SSMLanguageModel(256, d_model=H, n_layers=4, layer={"kind": name.lower(),
                                  **{k: v for k, v in layer.config_dict()["config"].items() if k != "d_model"}}).cuda().eval()
            mst = lm.stepper(1)
            x = torch.randn(1, H, device="cuda")
            for _ in range(20):
                mst(x)
            rec["model_syncs_per_call"] = _count_syncs(lambda: mst(x))
            rec["model_graphed_steps_per_s"] = steps_per_s(lambda: mst(x), steps)
    except Exception as e:
        rec["error"] = f"{type(e).__name__}: {e}"
    return rec


#: (op, shape) pairs timed on the Triton path ("auto") beside the PyTorch path ("torch") in one run.
PATH_SHAPES = [("vandermonde", dict(H=256, N=64, L=4096)), ("vandermonde", dict(H=256, N=64, L=65536)),
               ("linoss_layer", dict(B=16, L=4096, H=256, N=64)), ("linoss_layer", dict(B=1, L=65536, H=256, N=64)),
               ("s4d_layer", dict(B=16, L=4096, H=256, N=64)), ("s4d_layer", dict(B=1, L=65536, H=256, N=64)),
               ("s4_layer", dict(B=16, L=4096, H=256, N=64)), ("s4_layer", dict(B=1, L=65536, H=256, N=64))]


def path_workload(op: str, shape: Dict, device: str = "cuda"):
    """(fwd, fwd_bwd) closures for one (op, shape) of :data:`PATH_SHAPES` (any device)."""
    g = torch.Generator().manual_seed(0)
    if op == "vandermonde":
        from statespaces.kernels.vandermonde import vandermonde

        H, N, L = shape["H"], shape["N"], shape["L"]
        log_a = torch.complex(-0.5 * torch.rand(H, N, generator=g), math.pi * torch.rand(H, N, generator=g))
        coef = torch.randn(H, N, dtype=torch.complex64, generator=g)
        c, w = coef.to(device).requires_grad_(), log_a.to(device).requires_grad_()

        def fwd():
            with torch.no_grad():
                return vandermonde(c, w, L)

        def fwd_bwd():
            vandermonde(c, w, L).sum().backward()

        return fwd, fwd_bwd
    if op in ("linoss_layer", "s4d_layer", "s4_layer"):
        from statespaces import S4, S4D, LinOSS

        kind = {"linoss_layer": LinOSS, "s4d_layer": S4D, "s4_layer": S4}[op]
        layer = kind(shape["H"], shape["N"], seed=0).to(device)
        x = torch.randn(shape["B"], shape["L"], shape["H"], generator=g).to(device).requires_grad_()

        def fwd():
            with torch.no_grad():
                return layer(x)

        def fwd_bwd():
            layer(x).sum().backward()

        return fwd, fwd_bwd
    raise ValueError(f"unknown op {op!r}; expected one of {sorted({o for o, _ in PATH_SHAPES})}")


def time_paths(quick: bool) -> List[Dict]:
    """The Triton kernels of issue 17 items 1, 4, 5 against the PyTorch path of the same op, ratios measured
    in one run: Vandermonde by powers, the fused LinOSS scan, and the S4D and S4 layers, whose "auto" path on
    CUDA is the Triton chunked convolution (diagonal 2x2 blocks for S4D, the dense N x N transition for S4),
    forward and backward (``prefer_chunked``), against the FFT route ("torch")."""
    from statespaces import backend

    out = []
    rep = 5 if quick else 20
    for op, shape in PATH_SHAPES:
        rec: Dict = {"paths": op, **shape}
        for path in ("auto", "torch"):
            with backend.use_backend(path):
                fwd, fwd_bwd = path_workload(op, shape)
                rec[f"{path}_fwd_ms"] = cuda_time(fwd, rep)
                rec[f"{path}_fwd_bwd_ms"] = cuda_time(fwd_bwd, rep)
        rec["speedup_fwd"] = rec["torch_fwd_ms"] / rec["auto_fwd_ms"]
        rec["speedup_fwd_bwd"] = rec["torch_fwd_bwd_ms"] / rec["auto_fwd_bwd_ms"]
        out.append(rec)
    return out


# ---- 6. resources ------------------------------------------------------------------------------------
def check_resources() -> Dict:
    from statespaces.ops.triton import _resources

    cc = torch.cuda.get_device_capability()
    ccs = sorted({80, 90, cc[0] * 10 + cc[1]})
    res = _resources.check(ccs)
    return {"targets": ccs, "failures": _resources.failures(res), "results": res}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="gpu_check.json")
    p.add_argument("--quick", action="store_true", help="smaller shapes and fewer repeats")
    p.add_argument("--no-resources", action="store_true", help="skip compiling the register/spill table")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                   help="which sections to run, in this order (default: all)")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="cpu: dry run of the harness at --quick sizes (JSON marked dry_run; not GPU results)")
    a = p.parse_args(argv)
    dry = a.device == "cpu"
    if not dry and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False): nothing checked. "
              "Run it on a machine with an NVIDIA GPU.")
        return 2              # not 0: a lease whose GPU is missing must not look like a passing check
    from statespaces import backend

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    results: Dict = {
        "device": "cpu" if dry else torch.cuda.get_device_name(), "dry_run": dry,
        "capability": None if dry else list(torch.cuda.get_device_capability()),
        "torch": torch.__version__, "python": platform.python_version(), "backend": backend.get_backend(),
        "triton": None,
    }
    if dry:
        a.quick = True
        results["note"] = "--device cpu: a rehearsal of the harness on the CPU (PyTorch paths), not GPU results"
    try:
        import triton

        results["triton"] = triton.__version__
    except Exception as e:
        results["triton"] = f"unavailable: {e}"
    t0 = time.perf_counter()
    runners = {"kernels": lambda: check_kernels(a.quick, a.device), "layers": lambda: check_layers(a.quick, a.device),
               "timing": lambda: check_timing(a.quick), "syncs": check_syncs, "ops": lambda: check_ops(a.device),
               "resources": check_resources}
    if dry:                               # CUDA by nature: recorded as skipped, never faked
        runners.update({
            "timing": lambda: {"skipped": f"{NEEDS_CUDA} (CUDA events, CUDA graphs, CUDA copy floor)"},
            "syncs": lambda: {"skipped": f"{NEEDS_CUDA} (torch.cuda.set_sync_debug_mode)"},
            "resources": lambda: {"skipped": f"{NEEDS_CUDA} (compiles for the card's compute capability; without "
                                             "one: python -m statespaces.ops.triton._resources --cc 80 90)"}})
    for name in a.sections:
        if name == "resources" and a.no_resources:
            continue
        section(results, name, runners[name])
        results["fallbacks"] = backend.failed_ops()
        results["sync_messages"] = list(SYNC_MESSAGES)
        results["wall_seconds"] = round(time.perf_counter() - t0, 1)
        with open(a.out, "w") as f:      # after every section: a run cut short keeps what it measured
            json.dump(results, f, indent=1, default=str)
    print("fallbacks:", results["fallbacks"])
    if isinstance(results.get("resources"), dict) and "failures" in results["resources"]:
        print("resource failures:", results["resources"].get("failures"))
    print(f"wrote {a.out} ({results['wall_seconds']} s)")
    bad = failed_sections(results)
    if bad:                 # exit 1: a broken check must not read as a passing one (gpu_session.sh passes it on)
        print("gpu_check: FAILED sections: " + "; ".join(bad))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
