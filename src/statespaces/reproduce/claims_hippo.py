"""Tier A claims about HiPPO (thesis ch. 4, Table 4.1, Figs 4.3-4.4)."""
from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Dict, Optional

import torch

from ..data.signals import bandlimited_noise, benchmark_function
from ..hippo import HiPPO, legs_step_dense, legs_step_fast, transition
from ..hippo.legs_fast import legs_gbt_coefficients
from .registry import Result, claim


def _mse(a, b) -> float:
    return float(((a - b) ** 2).mean())


def _reconstruct(measure: str, N: int, u: torch.Tensor, dt: float, theta: Optional[float] = None, **kw) -> torch.Tensor:
    L = u.shape[-1]
    if measure == "legs":
        m = HiPPO(N, "legs", mode="lsi", **kw)
    else:
        assert theta is not None, "theta is required for the LTI measures"
        m = HiPPO(N, measure, mode="lti", dt=dt, theta=theta, **kw)
    return m.reconstruct(m(u, return_history=False), L)


@claim("A1", "HiPPO-LegS online reconstruction of band-limited noise (Table 4.1)", "A")
def a1(quick: bool, out: Path) -> Result:
    dt = 1e-2 if quick else 2e-3
    T = 100.0
    L = int(round(T / dt))
    u = bandlimited_noise(L, dt)
    legs = _mse(_reconstruct("legs", 256, u, dt), u)
    lmu = _mse(_reconstruct("lmu", 256, u, dt, theta=T), u)
    legt = _mse(_reconstruct("legt", 256, u, dt, theta=T), u)
    return Result(
        thesis="LegS MSE 0.02, LMU 0.05 (N=256, dt=1e-4, L=1e6)",
        ours=f"LegS {legs:.4f}, LMU {lmu:.4f}, LegT {legt:.4f} (N=256, dt={dt:g}, L={L})",
        passed=legs <= 0.04 and legs < min(lmu, legt),
        criterion="LegS MSE <= 0.04 and below LegT/LMU",
    )


@claim("A2", "O(N) HiPPO-LegS update: linear cost in N (Table 4.1, Lemma 4.6)", "A", timed=True)
def a2(quick: bool, out: Path) -> Result:
    Ns = (256, 1024, 4096) if not quick else (256, 1024, 2048)
    fast: Dict[int, float] = {}
    dense: Dict[int, float] = {}
    for N in Ns:
        x = torch.randn(N, dtype=torch.float64)
        u = torch.tensor(0.3, dtype=torch.float64)
        a, b, g = legs_gbt_coefficients(10.0, 11.0, 0.5)
        A, B = transition("legs", N)
        steps = ((fast, lambda x=x, u=u, a=a, b=b, g=g: legs_step_fast(x, u, a, b, g), 200),
                 (dense, lambda x=x, u=u, a=a, b=b, g=g, A=A, B=B: legs_step_dense(x, u, a, b, g, A, B),
                  3 if N > 1024 else 20))
        for table, fn, reps in steps:
            fn()
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            table[N] = (time.perf_counter() - t0) / reps
    # one state per step is dominated by Python's per-call overhead (an O(N^2) step grew as little), so the growth
    # is judged on 256 states per step, where the arithmetic dominates: O(N) grows ~x16 over N x16, O(N^2) ~x256
    batched: Dict[int, float] = {}
    for N in Ns:
        xb = torch.randn(256, N, dtype=torch.float64, generator=torch.Generator().manual_seed(N))
        ub = torch.full((256,), 0.3, dtype=torch.float64)
        a, b, g = legs_gbt_coefficients(10.0, 11.0, 0.5)
        legs_step_fast(xb, ub, a, b, g)
        t0 = time.perf_counter()
        for _ in range(10):
            legs_step_fast(xb, ub, a, b, g)
        batched[N] = (time.perf_counter() - t0) / 10
    grow_fast = fast[Ns[-1]] / fast[Ns[0]]
    grow_batched = batched[Ns[-1]] / batched[Ns[0]]
    grow_dense = dense[Ns[-1]] / dense[Ns[0]]
    ratio_n = Ns[-1] / Ns[0]
    return Result(
        thesis="470,000 steps/s (C++, N=256); O(N) per step",
        ours=f"{1 / fast[Ns[0]]:,.0f} steps/s at N={Ns[0]} (Python, one state); cost of a step of 256 states "
             f"x{grow_batched:.1f} from N={Ns[0]} to {Ns[-1]}, N grew x{ratio_n:.0f} (one state: x{grow_fast:.1f}; "
             f"dense step: x{grow_dense:.0f})",
        passed=grow_batched <= ratio_n * 2 and grow_dense > grow_batched,
        criterion="the cost of a step of 256 states (arithmetic-bound) grows at most 2x as fast as N (caches "
                  "included; an O(N^2) step would grow ~N-fold faster), and slower than the dense step's",
    )


@claim("A3", "Function approximation orderings (Figs 4.3, 4.4)", "A")
def a3(quick: bool, out: Path) -> Result:
    L, T = 1000, 100.0
    dt = T / L
    x = (torch.arange(L, dtype=torch.float64) + 0.5) * dt
    u = benchmark_function(x)[None]
    legs = _mse(_reconstruct("legs", 64, u, dt), u)
    legt = _mse(_reconstruct("legt", 64, u, dt, theta=T), u)
    with warnings.catch_warnings():       # forward Euler's amplification warning: the very thing measured here
        warnings.simplefilter("ignore", RuntimeWarning)
        euler = _mse(_reconstruct("legs", 64, u, dt, discretization="forward_euler"), u)
    legt_small = _mse(_reconstruct("legt", 64, u, dt, theta=0.995 * T), u)
    return Result(
        thesis="LegS < LegT error; bilinear << Euler; LegT blows up with theta 0.5% too small",
        ours=(f"LegS {legs:.1e} vs LegT {legt:.1e}; Euler {euler:.1e}; LegT(0.995T) {legt_small:.1e} = "
              f"{legt_small / legt:.1f}x LegT's" + ("" if legt_small > 10 * legt else
                                                    " (the blow-up is not reproduced here)")),
        passed=legs < legt and legs * 100 < euler,
        criterion="LegS < LegT and bilinear 100x below forward Euler (the theta blow-up is reported, not asserted)",
        details={"legt_theta_blowup_reproduced": legt_small > 10 * legt},
    )
