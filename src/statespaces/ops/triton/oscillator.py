r"""The LinOSS oscillator transition ``(A, dt) -> (M, f)`` and its Jacobian in one Triton launch.

The map of :func:`statespaces.kernels.oscillator.oscillator_transition` (seed 001; notes Part 6.1), per
oscillator p, in float64 (the wide precision of LinOSS's parameter map):

==========  =======================================================  ==========================
scheme      M                                                         f
==========  =======================================================  ==========================
``im``      [[S, -dt a S], [dt S, S]],  S = 1/(1 + dt^2 a)             [dt S, dt^2 S]
``imex``    [[1, -dt a], [dt, 1 - dt^2 a]]                             [dt, dt^2]
==========  =======================================================  ==========================

and the Jacobian J (2, 6, P) of the six outputs ``(M00, M01, M10, M11, f0, f1)`` by ``(a, dt)`` that the
backward of :class:`statespaces.kernels.oscillator._Transition` contracts with (formulas in its docstring).
In PyTorch this is about 35 small ops per forward (stacks of products, the Jacobian's rows); on a GPU bound by
op dispatch (``benchmarks/host_census.py``) one launch is the point, not the arithmetic (O(P)).
"""
from __future__ import annotations

from typing import Tuple

import torch
import triton
import triton.language as tl

from ._launch import make, signature, unique

Tensor = torch.Tensor

__all__ = ["transition_triton"]

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


def _config(imex: bool):
    return make(__name__, _transition_kernel, _SIG, IMEX=imex, BLOCK=BLOCK)


def configs():
    """Every launch configuration (IM and IMEX)."""
    return unique([_config(False), _config(True)])


def transition_triton(A: Tensor, dt: Tensor, scheme: str) -> Tuple[Tensor, Tensor, Tensor]:
    """``(M, f, J)``: M (2, 2, P), f (2, P) and the Jacobian J (2, 6, P) from A, dt (P,) float64 (contiguous);
    scheme ``"im"`` or ``"imex"``. One launch, one output buffer."""
    if A.dim() != 1 or A.shape != dt.shape or A.dtype != torch.float64 or dt.dtype != torch.float64:
        raise ValueError(f"transition_triton: A and dt must be float64 (P,), got {A.dtype} {tuple(A.shape)} and "
                         f"{dt.dtype} {tuple(dt.shape)}")
    P = A.shape[0]
    out = torch.empty(18 * P, device=A.device, dtype=torch.float64)
    M, f, J = out[:4 * P].view(2, 2, P), out[4 * P:6 * P].view(2, P), out[6 * P:].view(2, 6, P)
    A, dt = (t if t.is_contiguous() else t.contiguous() for t in (A, dt))
    _config(scheme == "imex").launch((triton.cdiv(P, BLOCK),), A, dt, M, f, J, P)
    return M, f, J
