r"""The LinOSS oscillator transition ``(A, dt) -> (M, f)`` and its Jacobian in one Triton launch (and D-LinOSS's,
``(A_hat, G_hat, dt) -> (M, f)`` with its projection into the complex band, the Jacobian by forward mode).

The map of :func:`statespaces.kernels.oscillator.oscillator_transition` (seed 001; notes Part 6.1), per
oscillator p, in float64 (the wide precision of LinOSS's parameter map):

==========  =======================================================  ==========================
scheme      M                                                         f
==========  =======================================================  ==========================
``im``      [[S, -dt a S], [dt S, S]],  S = 1/(1 + dt^2 a)             [dt S, dt^2 S]
``imex``    [[1, -dt a], [dt, 1 - dt^2 a]]                             [dt, dt^2]
==========  =======================================================  ==========================

and the Jacobian J (2, 6, P) of the six outputs ``(M00, M01, M10, M11, f0, f1)`` by ``(a, dt)`` that the
backward of :class:`statespaces.kernels.oscillator.JacobianNode` contracts with (formulas:
:func:`statespaces.kernels.oscillator.transition_with_jacobian`).
In PyTorch this is about 35 small ops per forward (stacks of products, the Jacobian's rows); on a GPU bound by
op dispatch (``benchmarks/host_census.py``) one launch is the point, not the arithmetic (O(P)).
"""
from __future__ import annotations

from typing import Tuple

import torch
import triton
import triton.language as tl

from ._launch import contiguous, make, signature, unique

#: :data:`statespaces.kernels.oscillator.MAX_SHEAR` as a compile-time constant of the kernels (written here, not
#: imported: kernels.oscillator imports this module; tests/test_triton_linoss.py checks that the two agree)
MAX_SHEAR = tl.constexpr(1e3)

Tensor = torch.Tensor

__all__ = ["transition_triton", "damped_transition_triton"]

#: oscillators per program
BLOCK = 128

_SIG = signature("*fp64", ["a_ptr", "dt_ptr", "m_ptr", "f_ptr", "j_ptr"], ["P"])


@triton.jit
def _transition_kernel(a_ptr, dt_ptr, m_ptr, f_ptr, j_ptr, P, IMEX: tl.constexpr, BLOCK: tl.constexpr):
    # M (2, 2, P), f (2, P), J (2, 6, P), all contiguous fp64: entry (i, k) of J at (6 i + k) P + p
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < P
    a = tl.load(a_ptr + offs, mask=m, other=0.0)
    dt = tl.load(dt_ptr + offs, mask=m, other=1.0)
    dt2 = dt * dt
    zero = tl.zeros_like(a)
    if IMEX:
        one = zero + 1.0
        m00, m01, m10, m11, f0, f1 = one, -dt * a, dt, 1.0 - dt2 * a, dt, dt2
        ja = (zero, -dt, zero, -dt2, zero, zero)
        jd = (zero, -a, one, -2.0 * dt * a, one, 2.0 * dt)
    else:
        s = 1.0 / (1.0 + dt2 * a)
        m00, m01, m10, m11, f0, f1 = s, -dt * a * s, dt * s, s, dt * s, dt2 * s
        s2 = s * s
        q = 1.0 - dt2 * a
        ja = (-s2 * dt2, -s2 * dt, -s2 * dt2 * dt, -s2 * dt2, -s2 * dt2 * dt, -s2 * dt2 * dt2)
        jd = (s2 * (-2.0 * dt * a), s2 * (-a * q), s2 * q, s2 * (-2.0 * dt * a), s2 * q, s2 * (2.0 * dt))
    tl.store(m_ptr + offs, m00, mask=m)
    tl.store(m_ptr + P + offs, m01, mask=m)
    tl.store(m_ptr + 2 * P + offs, m10, mask=m)
    tl.store(m_ptr + 3 * P + offs, m11, mask=m)
    tl.store(f_ptr + offs, f0, mask=m)
    tl.store(f_ptr + P + offs, f1, mask=m)
    for k in tl.static_range(6):
        tl.store(j_ptr + k * P + offs, ja[k], mask=m)
        tl.store(j_ptr + (6 + k) * P + offs, jd[k], mask=m)


@triton.jit
def _damped(a, g, dt, ta, tg, tdt, IMEX: tl.constexpr):
    # D-LinOSS (statespaces.layers.dlinoss.damped_system): the projection of (A_hat, G_hat) into the complex
    # band and the discretized (M, f), with their tangents along (ta, tg, tdt) (forward mode; relu' = [x > 0]
    # as autograd takes it). Returns the six outputs (M00, M01, M10, M11, f0, f1) and their six tangents.
    if IMEX:
        pos = g > 0.0
        G = tl.where(pos, g, 0.0)
        tG = tl.where(pos, tg, 0.0)
        s = dt * G
        ts = tdt * G + dt * tG
        sq = tl.sqrt(1.0 + s)
        tsq = ts / (2.0 * sq)
        w = G / (sq + 1.0)
        tw = tG / (sq + 1.0) - G * tsq / ((sq + 1.0) * (sq + 1.0))
        a_lo = w * w
        ta_lo = 2.0 * w * tw
        z = (sq + 1.0) / dt
        tz = tsq / dt - (sq + 1.0) * tdt / (dt * dt)
        # the band's top with LinOSS's margin 3.99 / 4 (damped_system: no Jordan block at -1 when G = 0), never
        # under the bottom; A clamped into [a_lo, a_top]
        top = z * z * 0.9975
        above_lo = top > a_lo
        a_top = tl.where(above_lo, top, a_lo)
        ta_top = tl.where(above_lo, 2.0 * z * tz * 0.9975, ta_lo)
        i1 = a > a_lo
        i2 = a > a_top
        A = tl.where(i2, a_top, tl.where(i1, a, a_lo))
        tA = tl.where(i2, ta_top, tl.where(i1, ta, ta_lo))
        S = 1.0 + s
        tS = ts
        # M11 = 1 - dt^2 A / S
        n11 = 1.0 - dt * dt * A / S
        t11 = -(2.0 * dt * tdt * A + dt * dt * tA) / S + dt * dt * A * tS / (S * S)
    else:
        g_lo = -dt * a
        tg_lo = -(tdt * a + dt * ta)
        i0 = g > g_lo
        G = tl.where(i0, g, g_lo)
        tG = tl.where(i0, tg, tg_lo)
        a_lo = 0.25 * G * G
        ta_lo = 0.5 * G * tG
        i1 = a - a_lo > 0.0
        A = a_lo + tl.where(i1, a - a_lo, 0.0)
        tA = ta_lo + tl.where(i1, ta - ta_lo, 0.0)
        s = dt * G
        ts = tdt * G + dt * tG
        S = 1.0 + s + dt * dt * A
        tS = ts + 2.0 * dt * tdt * A + dt * dt * tA
        # M11 = (1 + s) / S
        n11 = (1.0 + s) / S
        t11 = ts / S - (1.0 + s) * tS / (S * S)
    inv = 1.0 / S
    tinv = -tS / (S * S)
    m00 = inv
    m01 = -dt * A * inv
    t01 = -(tdt * A + dt * tA) * inv - dt * A * tinv
    m10 = dt * inv
    t10 = tdt * inv + dt * tinv
    f1 = dt * dt * inv
    tf1 = 2.0 * dt * tdt * inv + dt * dt * tinv
    return m00, m01, m10, n11, m10, f1, tinv, t01, t10, t11, t10, tf1


@triton.jit
def _normal_form(m00, m01, m10, m11, f0, f1, t00, t01, t10, t11, tf0, tf1):
    # The block in the basis x = T x', T = [[p, q], [0, 1]] (the position coordinate kept), where it is the
    # normal ``[[alpha, -beta], [beta, alpha]]`` (eigenvalues alpha +- i beta): p = beta / M10,
    # q = (M00 - M11) / (2 M10), f' = T^-1 f = ((f0 - q f1) / p, f1). Rounded to fp32 for the scan, a normal
    # block moves its eigenvalues by ~2^-24; the original one, far from normal near a double eigenvalue
    # (theta near 0 or pi), by up to ~2^-12. Where beta / r < 1e-3 the block is only sheared (p = 1, the same q:
    # M' = [[alpha, M01 + q^2 M10], [M10, alpha]], equal diagonal entries), unless |q| > MAX_SHEAR or M10 = 0,
    # where T = I (values and tangents unchanged). Returns 8 values (M'00, M'01, M'10, M'11, f'0, f'1, p, q) and
    # their 8 tangents.
    al = 0.5 * (m00 + m11)
    tal = 0.5 * (t00 + t11)
    det = m00 * m11 - m01 * m10
    tdet = t00 * m11 + m00 * t11 - t01 * m10 - m01 * t10
    b2 = det - al * al
    tb2 = tdet - 2.0 * al * tal
    nz = m10 != 0.0
    d = tl.where(nz, m10, 1.0)
    q = (m00 - m11) / (2.0 * d)
    tq = (t00 - t11) / (2.0 * d) - (m00 - m11) * t10 / (2.0 * d * d)
    ok = (b2 > 1e-6 * det) & nz
    shear = (b2 <= 1e-6 * det) & nz & (tl.abs(q) <= MAX_SHEAR)
    rot = ok | shear                                       # equal diagonal entries, q applied
    be = tl.sqrt(tl.where(ok, b2, 1.0))
    tbe = tb2 / (2.0 * be)
    p = be / d
    tp = tbe / d - be * t10 / (d * d)
    h = f0 - q * f1
    th = tf0 - tq * f1 - q * tf1
    g0 = h / p
    tg0 = th / p - h * tp / (p * p)
    one = tl.zeros_like(m00) + 1.0
    zero = tl.zeros_like(m00)
    m01s = m01 + q * q * m10                           # = -beta^2 / M10, without det - alpha^2's cancellation
    tm01s = t01 + 2.0 * q * tq * m10 + q * q * t10
    return (tl.where(rot, al, m00), tl.where(ok, -be, tl.where(shear, m01s, m01)), tl.where(ok, be, m10),
            tl.where(rot, al, m11), tl.where(ok, g0, tl.where(shear, h, f0)), f1, tl.where(ok, p, one),
            tl.where(rot, q, zero),
            tl.where(rot, tal, t00), tl.where(ok, -tbe, tl.where(shear, tm01s, t01)), tl.where(ok, tbe, t10),
            tl.where(rot, tal, t11), tl.where(ok, tg0, tl.where(shear, th, tf0)), tf1, tl.where(ok, tp, zero),
            tl.where(rot, tq, zero))


@triton.jit
def _damped_normal(a, g, dt, ta, tg, tdt, IMEX: tl.constexpr):
    o = _damped(a, g, dt, ta, tg, tdt, IMEX)
    return _normal_form(o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7], o[8], o[9], o[10], o[11])


@triton.jit
def _damped_kernel(a_ptr, g_ptr, dt_ptr, m_ptr, f_ptr, t_ptr, j_ptr, P, IMEX: tl.constexpr, BLOCK: tl.constexpr):
    # M' (2, 2, P), f' (2, P), T = (p, q) (2, P) of the normal form and the Jacobian J (3, 8, P) of
    # (M'00, M'01, M'10, M'11, f'0, f'1, p, q) by (A_hat, G_hat, dt): the forward mode along each input, entry
    # (i, k) of J at (8 i + k) P + p
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < P
    a = tl.load(a_ptr + offs, mask=m, other=0.0)
    g = tl.load(g_ptr + offs, mask=m, other=0.0)
    dt = tl.load(dt_ptr + offs, mask=m, other=1.0)
    one = tl.zeros_like(a) + 1.0
    zero = tl.zeros_like(a)
    out = _damped_normal(a, g, dt, one, zero, zero, IMEX)
    for k in tl.static_range(4):
        tl.store(m_ptr + k * P + offs, out[k], mask=m)
    tl.store(f_ptr + offs, out[4], mask=m)
    tl.store(f_ptr + P + offs, out[5], mask=m)
    tl.store(t_ptr + offs, out[6], mask=m)
    tl.store(t_ptr + P + offs, out[7], mask=m)
    for k in tl.static_range(8):
        tl.store(j_ptr + k * P + offs, out[8 + k], mask=m)
    out = _damped_normal(a, g, dt, zero, one, zero, IMEX)
    for k in tl.static_range(8):
        tl.store(j_ptr + (8 + k) * P + offs, out[8 + k], mask=m)
    out = _damped_normal(a, g, dt, zero, zero, one, IMEX)
    for k in tl.static_range(8):
        tl.store(j_ptr + (16 + k) * P + offs, out[8 + k], mask=m)


_DAMPED_SIG = signature("*fp64", ["a_ptr", "g_ptr", "dt_ptr", "m_ptr", "f_ptr", "t_ptr", "j_ptr"], ["P"])


def _config(imex: bool):
    return make(__name__, _transition_kernel, _SIG, IMEX=imex, BLOCK=BLOCK)


def _damped_config(imex: bool):
    return make(__name__, _damped_kernel, _DAMPED_SIG, IMEX=imex, BLOCK=BLOCK)


def configs():
    """Every launch configuration (LinOSS and D-LinOSS, IM and IMEX)."""
    return unique([_config(False), _config(True), _damped_config(False), _damped_config(True)])


def damped_transition_triton(A_hat: Tensor, G_hat: Tensor, dt: Tensor,
                             scheme: str) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """D-LinOSS: ``(M', f', T, J)``, the blocks in their normal form (:func:`_normal_form`) for the scan: M'
    (2, 2, P), f' (2, P), T = (p, q) (2, P) with ``x = [[p, q], [0, 1]] x'``, and the Jacobian J (3, 8, P) of
    those eight entries by (A_hat, G_hat, dt), from the raw parameters (projection into the complex band
    included), float64 (P,); scheme ``"im"`` or ``"imex"``. One launch, one output buffer."""
    for name, t in (("A_hat", A_hat), ("G_hat", G_hat), ("dt", dt)):
        if t.dim() != 1 or t.shape != A_hat.shape or t.dtype != torch.float64:
            raise ValueError(f"damped_transition_triton: {name} must be float64 (P,) like A_hat, got {t.dtype} "
                             f"{tuple(t.shape)}")
    P = A_hat.shape[0]
    out = torch.empty(32 * P, device=A_hat.device, dtype=torch.float64)
    M, f, T = out[:4 * P].view(2, 2, P), out[4 * P:6 * P].view(2, P), out[6 * P:8 * P].view(2, P)
    J = out[8 * P:].view(3, 8, P)
    A_hat, G_hat, dt = (contiguous(t) for t in (A_hat, G_hat, dt))
    _damped_config(scheme == "imex").launch((triton.cdiv(P, BLOCK),), A_hat, G_hat, dt, M, f, T, J, P)
    return M, f, T, J


def transition_triton(A: Tensor, dt: Tensor, scheme: str) -> Tuple[Tensor, Tensor, Tensor]:
    """``(M, f, J)``: M (2, 2, P), f (2, P) and the Jacobian J (2, 6, P) from A, dt (P,) float64 (contiguous);
    scheme ``"im"`` or ``"imex"``. One launch, one output buffer."""
    if A.dim() != 1 or A.shape != dt.shape or A.dtype != torch.float64 or dt.dtype != torch.float64:
        raise ValueError(f"transition_triton: A and dt must be float64 (P,), got {A.dtype} {tuple(A.shape)} and "
                         f"{dt.dtype} {tuple(dt.shape)}")
    P = A.shape[0]
    out = torch.empty(18 * P, device=A.device, dtype=torch.float64)
    M, f, J = out[:4 * P].view(2, 2, P), out[4 * P:6 * P].view(2, P), out[6 * P:].view(2, 6, P)
    A, dt = (contiguous(t) for t in (A, dt))
    _config(scheme == "imex").launch((triton.cdiv(P, BLOCK),), A, dt, M, f, J, P)
    return M, f, J
