"""Tier A: computation modes agree (§2.3, Thm 3.5/3.6) and theory checks (Thm 6.9, Lemma 3.8,
Cor 5.16, Cor 5.17, Lemma 6.6)."""
from __future__ import annotations

import math
from pathlib import Path

import torch

from ..discretize import discretize_dense
from ..hippo import basis, legs_eigenvectors, transition
from ..kernels import power_kernel, recurrence
from ..layers import S4, S4D
from ..ops import fftconv
from .registry import Result, claim

F64 = torch.float64


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def _s4d_modes_error(init: str, dtype: torch.dtype, L: int) -> float:
    """Max relative disagreement between the Vandermonde kernel, explicit powers, the recurrence
    and the FFT convolution of one S4D layer."""
    layer = S4D(4, 64, init=init, seed=0, discretization="bilinear").to(dtype)
    sys = layer.diagonal_system()
    dA, dB, C = (torch.cat([v, v.conj()], -1) for v in (torch.exp(sys.log_dA), sys.dB, sys.C[0]))
    with torch.no_grad():
        k = layer.kernel(L)
        k_pow = power_kernel(torch.diag_embed(dA).to(torch.complex128), dB.to(torch.complex128),
                             C.to(torch.complex128), L).real
        u = torch.randn(1, L, 4, dtype=dtype, generator=torch.Generator().manual_seed(1))
        y_conv = layer(u)
        y_rec, _ = recurrence(torch.diag_embed(dA), dB, C, u[:, :256], layer.D)
    return max(_rel(k.double(), k_pow), _rel(y_conv[:, :256].double(), y_rec.real.double()))


@claim("A4", "Computation modes agree: kernel, powers, recurrence, FFT convolution (§2.3, Thm 3.5/3.6)", "A")
def a4(quick: bool, out: Path) -> Result:
    L = 1024
    errs64 = {i: _s4d_modes_error(i, F64, L) for i in ("lin", "inv", "legs")}
    errs32 = {i: _s4d_modes_error(i, torch.float32, L) for i in ("lin", "inv", "legs")}
    parts = [f"S4D fp64 max rel {max(errs64.values()):.1e}, fp32 {max(errs32.values()):.1e}"]
    passed = max(errs64.values()) < 1e-10 and max(errs32.values()) < 1e-4
    worst = 0.0
    for measure in ("legs", "legt", "fout"):
        layer = S4(4, 64, init=measure, seed=0).double()
        dA, dB, C = layer.dense_system()[:3]
        with torch.no_grad():
            worst = max(worst, _rel(layer.kernel(L), power_kernel(dA, dB, C, L).real))
    parts.append(f"S4 (DPLR, legs/legt/fout) fp64 max rel {worst:.1e}")
    passed = passed and worst < 1e-10
    # bidirectional: efficient two-sided kernel == explicit anti-causal form
    g = torch.Generator().manual_seed(2)                     # seeded: the row reads the same on every run
    u = torch.randn(2, 300, 3, dtype=F64, generator=g)
    k = torch.randn(2, 3, 300, dtype=F64, generator=g)
    w = fftconv(u.flip(1), k[1])
    anti = torch.cat([w.flip(1)[:, 1:], torch.zeros_like(w[:, :1])], 1)
    bi = _rel(fftconv(u, k, bidirectional=True), fftconv(u, k[0]) + anti)
    parts.append(f"bidirectional {bi:.1e}")
    return Result(thesis="exact equality", ours="; ".join(parts), passed=passed and bi < 1e-10,
                  criterion="relative error < 1e-10 (fp64), < 1e-4 (fp32)")


@claim("A5", "Theory checks: Thm 6.9, Lemma 3.8, Cor 5.16, Cor 5.17, Lemma 6.6", "A")
def a5(quick: bool, out: Path) -> Result:
    checks, notes = {}, []
    # (i) Thm 6.9: S4D-LegS (normal part, B/2) kernel -> S4-LegS kernel as N grows (bilinear, dt = 1/L)
    dists = []
    for N in (32, 64, 128, 256):
        A, B = transition("legs", N)
        P = torch.sqrt(torch.arange(N, dtype=F64) + 0.5)
        AN = A + P[:, None] * P[None, :]
        C = torch.randn(N, dtype=F64, generator=torch.Generator().manual_seed(0))
        L = 512
        dt = torch.tensor(4.0 / L, dtype=F64)
        k_full = power_kernel(*discretize_dense(A, B, dt), C, L)
        k_diag = power_kernel(*discretize_dense(AN, B / 2, dt), C, L)
        dists.append(float((k_full - k_diag).norm() / k_full.norm()))
    checks["i"] = all(b < a for a, b in zip(dists, dists[1:]))
    notes.append("(i) Thm 6.9 rel. kernel distance N=32..256: " + ", ".join(f"{d:.2f}" for d in dists))
    # (ii) Lemma 3.8: A = Lambda - P P^* with Re Lambda < 0 is Hurwitz: bilinear eigenvalues inside the disk
    g = torch.Generator().manual_seed(1)
    inside = 0
    for _ in range(100):
        N = 16
        lam = torch.complex(-torch.rand(N, dtype=F64, generator=g) - 1e-3, 50 * torch.randn(N, dtype=F64, generator=g))
        P = torch.randn(N, 2, dtype=torch.complex128, generator=g) * 3
        A = torch.diag(lam) - P @ P.conj().T
        dA, _ = discretize_dense(A, torch.ones(N, dtype=torch.complex128), torch.tensor(0.1, dtype=F64))
        inside += int(torch.linalg.eigvals(dA).abs().max() < 1)
    checks["ii"] = inside == 100
    notes.append(f"(ii) Lemma 3.8: {inside}/100 random Hurwitz DPLR draws stable")
    # (iii) Cor 5.16: timescale-normalized LegS, C ~ N(0,1), constant input 1: Var(y) = ||x_inf||^2 = 1
    A, B = transition("legs", 64)
    x_inf = -torch.linalg.solve(A, B)
    Cs = torch.randn(20000, 64, dtype=F64, generator=g)
    ratio = float((Cs @ x_inf).var())
    checks["iii"] = 0.8 <= ratio <= 1.25
    notes.append(f"(iii) Cor 5.16 output/input variance {ratio:.3f}")
    # (iv) Cor 5.17: FouT with C_n = 2 p_n(1), dt = 1/100 (ZOH): kernel spike at lag 1/dt = 100.
    # By (E.33), C x(t) = u(t-1) + u(t), so the feed-through that cancels the lag-0 term is D = -1
    # (Thm 5.13 prints D = 1; with D = +1 the largest entry is at lag 0).
    N = 257
    A, B = transition("fout", N)
    C = 2 * basis("fout", N, torch.tensor([1.0], dtype=F64), kind="reconstruction")[:, 0]
    dA, dB = discretize_dense(A, B, torch.tensor(0.01, dtype=F64), "zoh")
    K = power_kernel(dA, dB, C, 200)
    k0 = float(K[0])
    K[0] -= 1.0
    lag = int(K.abs().argmax())
    checks["iv"] = abs(lag - 100) <= 2
    notes.append(f"(iv) Cor 5.17 FouT delay spike at lag {lag} (expected 100; K[0] = {k0:.2f} before D = -1)")
    # (v) Lemma 6.6: cond of the LegS eigenvector matrix grows exponentially (log2 cond ~ linear in N)
    Ns = (8, 16, 24, 32)
    logc = [math.log2(float(torch.linalg.cond(legs_eigenvectors(n)))) for n in Ns]
    slopes = [(b - a) / 8 for a, b in zip(logc, logc[1:])]
    checks["v"] = all(s > 0.5 for s in slopes)
    notes.append("(v) Lemma 6.6 log2 cond(V) N=8..32: " + ", ".join(f"{c:.0f}" for c in logc))
    failed = [k for k, v in checks.items() if not v]
    return Result(
        thesis="(i) convergence in N, (ii) always Hurwitz, (iii) variance preserved, (iv) delay 1/dt, (v) 2^{4N/3}",
        ours="; ".join(notes),
        passed=not failed,
        criterion="(i) decreasing in N; (ii) 100%; (iii) in [0.8, 1.25]; (iv) +-2%; (v) log2 cond grows linearly"
        + (f" -- failed: {', '.join(failed)}" if failed else ""),
    )
