"""Irregular sampling (issue 21 item 5; thesis §4.2.4, app. D.1.4): per-step intervals ``dt`` (B, L).

References discretize every interval independently in float64 -- S4D by the matrix exponential of
each channel's dense ``[[A dt, B dt], [0, 0]]`` (ZOH), LinOSS / D-LinOSS by solving the scheme's
implicit equations at that interval's step -- and run an explicit loop. Equal intervals must give
the regular layer at that rate. (S5's irregular path is tested in tests/test_s5.py.)
"""
import pytest
import torch

from statespaces.layers import S4, S4D, S5, DLinOSS, LinOSS
from statespaces.layers.irregular import intervals_from_timestamps

f64, c128 = torch.float64, torch.complex128


def _s4d_reference(layer, u, dt):
    """S4D (zoh) with interval ``dt[b, t] * Delta_h``: dense matrix exponential per channel and step."""
    A = layer.continuous_A().detach().to(c128)                   # (H, M)
    Bc = torch.view_as_complex(layer.B.detach().contiguous())
    C = torch.view_as_complex(layer.C.detach().contiguous())[0]
    Delta = torch.exp(layer.log_dt.detach())
    Bsz, L, H = u.shape
    M = A.shape[-1]
    x = torch.zeros(Bsz, H, M, dtype=c128)
    y = torch.zeros(Bsz, L, H, dtype=f64)
    for b in range(Bsz):
        for t in range(L):
            for h in range(H):
                s = float(dt[b, t] * Delta[h])
                blk = torch.zeros(M + 1, M + 1, dtype=c128)
                blk[:M, :M] = torch.diag(A[h]) * s
                blk[:M, M] = Bc[h] * s
                E = torch.linalg.matrix_exp(blk)
                x[b, h] = E[:M, :M] @ x[b, h] + E[:M, M] * u[b, t, h]
                y[b, t, h] = layer.scale * (C[h] @ x[b, h]).real + layer.D.detach()[h] * u[b, t, h]
    return y, x


def test_s4d_intervals_equal_the_per_interval_matrix_exponential():
    layer = S4D(2, 6, seed=1).double()
    u = torch.randn(2, 10, 2, dtype=f64)
    dt = torch.rand(2, 10, dtype=f64) * 4 + 0.05
    ref, ref_state = _s4d_reference(layer, u, dt)
    y, s = layer(u, dt=dt, return_state=True)
    torch.testing.assert_close(y, ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(s, ref_state, atol=1e-10, rtol=0)
    y1, s1 = layer(u[:, :4], dt=dt[:, :4], return_state=True)              # chunked: state carries over
    y2 = layer(u[:, 4:], dt=dt[:, 4:], state=s1)
    torch.testing.assert_close(torch.cat([y1, y2], 1), ref, atol=1e-10, rtol=0)
    ts = torch.cumsum(dt, 1)                                              # timestamps: first interval 1
    dt1 = torch.cat([torch.ones(2, 1, dtype=f64), dt[:, 1:]], 1)
    torch.testing.assert_close(layer(u, timestamps=ts), _s4d_reference(layer, u, dt1)[0], atol=1e-10, rtol=0)
    torch.testing.assert_close(intervals_from_timestamps(ts, first=0.5)[:, 1:], dt[:, 1:], atol=1e-12, rtol=0)


@pytest.mark.parametrize("kw", [dict(), dict(discretization="bilinear"), dict(init="real"),
                                dict(init="inv", discretization="gbt", alpha=0.3)], ids=["zoh", "bilinear", "real", "gbt"])
def test_s4d_equal_intervals_are_the_regular_layer(kw):
    layer = S4D(3, 8, seed=2, **kw).double()
    u = torch.randn(2, 21, 3, dtype=f64)
    state = torch.randn(2, 3, layer.n_modes, dtype=c128)
    for c in (0.3, 1.0, 2.5):
        y, s = layer(u, dt=torch.full((2, 21), c, dtype=f64), state=state, return_state=True)
        y_r, s_r = layer(u, rate=c, state=state, return_state=True)
        torch.testing.assert_close(y, y_r, atol=1e-10, rtol=1e-12)            # gbt-inv: |y| ~ 1e4
        torch.testing.assert_close(s, s_r, atol=1e-10, rtol=1e-12)
    g_dt = torch.autograd.grad(layer(u, dt=torch.full((2, 21), 1.5, dtype=f64)).square().sum(), layer.log_dt)[0]
    g_r = torch.autograd.grad(layer(u, rate=1.5).square().sum(), layer.log_dt)[0]
    torch.testing.assert_close(g_dt, g_r, atol=1e-9, rtol=1e-9)


def _oscillator_reference(layer, u, dt, damped):
    """Positions by the scheme's implicit equations at each interval's step (float64 loop)."""
    disc = layer.discretization
    Bc = layer.B_complex.detach()
    Bsz, L, _ = u.shape
    P = layer.n_oscillators
    out = torch.zeros(Bsz, L, layer.d_model, dtype=f64)
    for b in range(Bsz):
        z = torch.zeros(P, dtype=c128)
        y = torch.zeros(P, dtype=c128)
        for t in range(L):
            r = float(dt[b, t])
            A, h = layer.stiffness(r).detach(), layer.dt(r).detach()
            G = layer.damping(r).detach() if damped else torch.zeros_like(A)
            bu = u[b, t].to(c128) @ Bc.T
            one = torch.ones_like(A)
            if disc == "imex":      # z' = z + h(-A y - G z' + bu), y' = y + h z'
                lhs = torch.stack([torch.stack([one + h * G, 0 * one], -1), torch.stack([-h, one], -1)], -2)
                rhs0 = z + h * bu - h * A * y
            else:                   # z' = z + h(-A y' - G z' + bu), y' = y + h z'
                lhs = torch.stack([torch.stack([one + h * G, h * A], -1), torch.stack([-h, one], -1)], -2)
                rhs0 = z + h * bu
            sol = torch.linalg.solve(lhs.to(c128), torch.stack([rhs0, y], -1).unsqueeze(-1))
            z, y = sol[:, 0, 0], sol[:, 1, 0]
            out[b, t] = (layer.C_complex.detach() @ y).real + layer.D.detach() * u[b, t]
    return out


@pytest.mark.parametrize("cls", [LinOSS, DLinOSS])
@pytest.mark.parametrize("disc", ["IM", "IMEX"])
def test_oscillators_with_intervals_equal_the_per_interval_scheme(cls, disc):
    layer = cls(3, 5, discretization=disc, seed=3).double()
    u = torch.randn(2, 13, 3, dtype=f64)
    dt = torch.rand(2, 13, dtype=f64) * 2.5 + 0.1
    ref = _oscillator_reference(layer, u, dt, cls is DLinOSS)
    for mode in ("scan", "loop"):
        torch.testing.assert_close(layer(u, dt=dt, mode=mode), ref, atol=1e-10, rtol=0)
    y1, s = layer(u[:, :5], dt=dt[:, :5], return_state=True)
    y2 = layer(u[:, 5:], dt=dt[:, 5:], state=s)
    torch.testing.assert_close(torch.cat([y1, y2], 1), ref, atol=1e-10, rtol=0)
    for c in (0.4, 1.0):
        y, s = layer(u, dt=torch.full((2, 13), c, dtype=f64), return_state=True)
        y_r, s_r = layer(u, rate=c, return_state=True)
        torch.testing.assert_close(y, y_r, atol=1e-10, rtol=0)
        torch.testing.assert_close(s, s_r, atol=1e-10, rtol=0)


def test_irregular_refusals():
    x = torch.randn(2, 6, 3)
    ones = torch.ones(2, 6)
    with pytest.raises(ValueError, match="no irregular-sampling path"):
        S4(3, 8)(x, dt=ones)
    with pytest.raises(ValueError, match="bidirectional"):
        S4D(3, 8, bidirectional=True)(x, dt=ones)
    with pytest.raises(ValueError, match="bidirectional"):
        LinOSS(3, 4, bidirectional=True)(x, dt=ones)
    with pytest.raises(ValueError, match="mode='scan' or 'loop'"):
        LinOSS(3, 4)(x, dt=ones, mode="conv")
    torch.testing.assert_close(LinOSS(3, 4, mode="conv", seed=0)(x, dt=ones), LinOSS(3, 4, seed=0)(x))
    for layer in (S4D(3, 8), LinOSS(3, 4)):
        with pytest.raises(ValueError, match="non-positive"):
            layer(x, dt=torch.zeros(2, 6))
        with pytest.raises(ValueError, match=r"\(batch, length\)"):
            layer(x, dt=torch.ones(2, 7))
        with pytest.raises(ValueError, match="strictly increasing"):
            layer(x, timestamps=torch.zeros(2, 6))
        with pytest.raises(ValueError, match="meta"):
            layer(x, dt=torch.ones(2, 6, device="meta"))


@pytest.mark.parametrize("make", [lambda: S4D(3, 8, seed=4), lambda: S4D(3, 8, discretization="bilinear", seed=4),
                                  lambda: LinOSS(3, 4, discretization="IMEX", seed=4), lambda: DLinOSS(3, 4, seed=4),
                                  lambda: S5(3, 8, seed=4)],
                         ids=["s4d", "s4d-bilinear", "linoss-imex", "dlinoss", "s5"])
def test_streaming_steps_with_rate_equal_the_intervals(make):
    """A stream of one sequence: step t with ``rate=dt[t]`` is the forward pass with ``dt``."""
    layer = make().double()
    u = torch.randn(1, 12, 3, dtype=f64)
    dt = torch.rand(1, 12, dtype=f64) * 2 + 0.2
    state, ys = layer.initial_state(1), []
    for t in range(12):
        y, state = layer.step(u[:, t], state, rate=float(dt[0, t]))
        ys.append(y)
    y_full, s_full = layer(u, dt=dt, return_state=True)
    torch.testing.assert_close(torch.stack(ys, 1), y_full, atol=1e-10, rtol=0)
    torch.testing.assert_close(state, s_full, atol=1e-10, rtol=0)
