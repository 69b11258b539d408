"""Synthetic pen trajectories (a CharacterTrajectories stand-in, thesis §4.4 / Table 7.3 C5) and
resampling of padded sequences to another sampling rate."""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Tuple

import torch
from torch.utils.data import TensorDataset

Tensor = torch.Tensor


def resample(x: Tensor, lengths: Tensor, factor: float) -> Tuple[Tensor, Tensor]:
    """Resample right-padded sequences (B, L, C) to ``factor`` times the sampling rate by linear
    interpolation on the valid part: sample j of the new sequence is the old signal at position
    ``j / factor`` (``factor = 2``: 2n - 1 samples; ``factor = 0.5``: every other sample)."""
    out, new_len = [], []
    for seq, n in zip(x, lengths.tolist()):
        m = int(math.floor((n - 1) * factor + 1e-9)) + 1
        pos = torch.arange(m, dtype=torch.float64) / factor
        lo = pos.floor().long().clamp(max=n - 1)
        hi = (lo + 1).clamp(max=n - 1)
        w = (pos - lo).to(seq.dtype).unsqueeze(-1)
        out.append(seq[lo] * (1 - w) + seq[hi] * w)
        new_len.append(m)
    L = max(new_len)
    padded = x.new_zeros(len(out), L, x.shape[-1])
    for i, s in enumerate(out):
        padded[i, : len(s)] = s
    return padded, torch.tensor(new_len)


#: Design of :func:`synthetic_trajectories` (fixed before any model was trained on it).
TRAJ_DESIGN: Dict[str, Any] = dict(
    classes=12, harmonics=3, length=(90, 150), speed_jitter=0.15, coef_jitter=0.10,
    scale_jitter=0.15, rotation_deg=10.0, warp=0.3, noise=0.05, time_unit=24)


def _traj_prototypes(classes: int, harmonics: int, seed: int) -> Tuple[Tensor, Tensor]:
    """Class strokes (coefficients (classes, 2, 2, harmonics): x/y, cos/sin, j) and nominal lengths."""
    g = torch.Generator().manual_seed(seed)
    coef = torch.randn(classes, 2, 2, harmonics, generator=g, dtype=torch.float64)
    lo, hi = TRAJ_DESIGN["length"]
    nominal = lo + (hi - lo) * torch.rand(classes, generator=g, dtype=torch.float64)
    return coef, nominal


def synthetic_trajectories(n_per_class: int, seed: int = 0, rate: float = 1.0, noise: Optional[float] = None,
                           proto_seed: int = 1234) -> TensorDataset:
    r"""A CharacterTrajectories-like set of single-stroke "letters" (C5 stand-in, deterministic).

    Class c is an open planar stroke ``p_c(s) = sum_{j<=3} (a_cj cos(pi j s) + b_cj sin(pi j s)) / j``,
    ``s in [0, 1]``, with N(0, 1) coefficients drawn once from ``proto_seed``, and a nominal length
    (samples at the base rate) uniform in [90, 150]. Each example (generator ``seed``) jitters the
    coefficients (x(1 + 0.1 e) + 0.1 e / j), scales by U(0.85, 1.15), rotates by U(-10, 10) degrees,
    writes at a speed giving ``n = round(nominal * U(0.85, 1.15))`` base-rate samples, and warps time
    by a smooth monotone map ``s = w(tau)``, ``w' ∝ exp(u_1 sin(pi tau + phi_1) + u_2 sin(2 pi tau + phi_2))``,
    ``u_k ~ U(-0.3, 0.3)``. As in CharacterTrajectories the channels are the pen-tip *velocity* (vx, vy),
    in units of curve length per 24 base samples (std about 1), and the pen force ``U(0.8, 1.2) sqrt(sin(pi tau))``,
    plus N(0, ``noise``^2) noise per sample (default 0.05).

    ``rate`` samples the same continuous trajectories ``rate`` times as densely: sample i is at base
    time ``i / rate``, ``floor((n - 1) rate) + 1`` samples (the length convention of :func:`resample`),
    so ``rate = 2`` is the 2x set without interpolation error. Returns ``TensorDataset(x, y, lengths)``,
    ``x`` right-padded (examples, L, 3) float32, classes balanced and interleaved (y = i mod classes).
    """
    d = TRAJ_DESIGN
    C, J = d["classes"], d["harmonics"]
    noise = d["noise"] if noise is None else noise
    coef, nominal = _traj_prototypes(C, J, proto_seed)
    g = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    j = torch.arange(1, J + 1, dtype=f64)
    grid = torch.linspace(0, 1, 2001, dtype=f64)
    xs, ys, lens = [], [], []
    for i in range(n_per_class * C):
        c = i % C
        u = lambda *shape: torch.rand(*shape, generator=g, dtype=f64)  # noqa: E731
        e = lambda *shape: torch.randn(*shape, generator=g, dtype=f64)  # noqa: E731
        a = coef[c] * (1 + d["coef_jitter"] * e(2, 2, J)) + d["coef_jitter"] * e(2, 2, J) / j
        scale = 1 + d["scale_jitter"] * (2 * u(()) - 1)
        ang = math.radians(d["rotation_deg"]) * (2 * u(()) - 1)
        rot = torch.tensor([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]], dtype=f64)
        n = int(round(float(nominal[c] * (1 + d["speed_jitter"] * (2 * u(()) - 1)))))
        amp, phase = d["warp"] * (2 * u(2) - 1), 2 * math.pi * u(2)
        force_gain = 0.8 + 0.4 * u(())
        m = int(math.floor((n - 1) * rate + 1e-9)) + 1
        tau = torch.arange(m, dtype=f64) / rate / (n - 1)                                  # in [0, 1]
        dens = lambda t, amp=amp, phase=phase: torch.exp(  # noqa: E731
            amp[0] * torch.sin(math.pi * t + phase[0]) + amp[1] * torch.sin(2 * math.pi * t + phase[1]))
        dg = dens(grid)
        cum = torch.cat([grid.new_zeros(1), torch.cumsum((dg[1:] + dg[:-1]) / 2 * (grid[1] - grid[0]), 0)])
        Z = cum[-1]
        pos = tau * (len(grid) - 1)                                                    # uniform grid
        lo = pos.floor().long().clamp(max=len(grid) - 2)
        s_ = (cum[lo] + (pos - lo) * (cum[lo + 1] - cum[lo])) / Z                      # w(tau)
        ws = dens(tau) / Z                                                             # ds / dtau
        ang_j = math.pi * s_.unsqueeze(-1) * j                                          # (m, J)
        dp = math.pi * (-a[:, 0].unsqueeze(1) * torch.sin(ang_j) + a[:, 1].unsqueeze(1) * torch.cos(ang_j)).sum(-1)
        vel = (rot @ dp).T * scale * ws.unsqueeze(-1) * (d["time_unit"] / (n - 1))     # (m, 2)
        force = force_gain * torch.sin(math.pi * tau).clamp(min=0).sqrt()
        feat = torch.cat([vel, force.unsqueeze(-1)], -1)
        if noise:
            feat = feat + noise * e(m, 3)
        xs.append(feat.float())
        ys.append(c)
        lens.append(m)
    x = torch.zeros(len(xs), max(lens), 3)
    for i, f in enumerate(xs):
        x[i, : len(f)] = f
    return TensorDataset(x, torch.tensor(ys), torch.tensor(lens))


def trajectory_positions(x: Tensor, length: int, rate: float = 1.0) -> Tensor:
    """Pen positions (length, 2) of one example of :func:`synthetic_trajectories` sampled at ``rate``:
    the trapezoidal integral of its velocity channels, with the time step ``1 / rate`` base samples."""
    v = x[:length, :2].double() / TRAJ_DESIGN["time_unit"] / rate
    steps = (v[1:] + v[:-1]) / 2
    return torch.cat([v.new_zeros(1, 2), torch.cumsum(steps, 0)])
