r"""Fused recurrent step of P damped oscillators (LinOSS / D-LinOSS) in Triton (inference only).

The recurrent view of LinOSS (seed 001, eqs. IM / IMEX; thesis §2.3 for the discrete recurrence)
advances each oscillator p by its 2x2 block ``M_p`` (velocity z, position y) and the forcing
``f_p`` of the projected input ``v = B u``::

    v[b, p]      = sum_h u[b, h] B[p, h]                               (complex, B (P, H))
    z'[b, p]     = M00[p] z[b, p] + M01[p] y[b, p] + f0[p] v[b, p]
    y'[b, p]     = M10[p] z[b, p] + M11[p] y[b, p] + f1[p] v[b, p]
    out[b, h]    = Re sum_p C[h, p] y'[b, p] + D[h] u[b, h]

the body of :func:`statespaces.kernels.oscillator.oscillator_step_ref`. In PyTorch that is about
fifteen launches per layer per token (two complex matrix products, casts, the 2x2 update, a stack,
the skip); here it is two: :func:`_osc_state_kernel` (grid batch x oscillator tiles: the input
projection reduced over H in BLOCK_H tiles, then the 2x2 update in float64 -- the wide precision of
``M`` and ``f``, rounded once into the state, as the PyTorch step does) and :func:`_osc_out_kernel`
(grid batch x channel tiles: the output projection reduced over P from the new state). Complex
numbers are (re, im) pairs (``torch.view_as_real``); the projections accumulate in the state's real
precision (fp32 for a complex64 state, fp64 for complex128), as the complex matrix products of the
PyTorch step do.

There is no backward: the kernels run only when autograd is off (generation; the stepper of
:mod:`statespaces.layers.stepper` and ``LinOSS.step`` under ``torch.no_grad()``).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from ._launch import make, pow2_domain, real_view, step_buffers, unique

Tensor = torch.Tensor

__all__ = ["oscillator_step_triton", "launch_step", "fits"]

#: Largest tiles over channels and oscillators (tests lower them to span several tiles).
MAX_BLOCK_H = 64
MAX_BLOCK_P = 32

_CDTYPE = {torch.float32: torch.complex64, torch.float64: torch.complex128}
_TYPE = {torch.float32: "*fp32", torch.float64: "*fp64"}


def _state_sig(real: torch.dtype):
    t = _TYPE[real]
    return (("M_ptr", "*fp64"), ("f_ptr", "*fp64"), ("Bt_ptr", t), ("u_ptr", t), ("s_ptr", t),
            ("out_s_ptr", t), ("H", "i32"), ("P", "i32"))


def _out_sig(real: torch.dtype):
    t = _TYPE[real]
    return (("Ct_ptr", t), ("D_ptr", t), ("u_ptr", t), ("s_ptr", t), ("y_ptr", t), ("H", "i32"), ("P", "i32"))


def _blocks(H: int, P: int) -> Tuple[int, int]:
    return (min(MAX_BLOCK_H, max(16, triton.next_power_of_2(H))),
            min(MAX_BLOCK_P, max(16, triton.next_power_of_2(P))))


def _config(kernel, sig, H: int, P: int, real: torch.dtype):
    BH, BP = _blocks(H, P)
    return make(__name__, kernel, sig(real), ACC=tl.float64 if real == torch.float64 else tl.float32,
                BLOCK_H=BH, BLOCK_P=BP)


def _state_config(H: int, P: int, real: torch.dtype):
    return _config(_osc_state_kernel, _state_sig, H, P, real)


def _out_config(H: int, P: int, real: torch.dtype):
    return _config(_osc_out_kernel, _out_sig, H, P, real)


def configs():
    """Every launch configuration: both kernels, fp32 and fp64 states, each tile pair the sizes can pick."""
    dom_h, dom_p = pow2_domain(MAX_BLOCK_H), pow2_domain(MAX_BLOCK_P)
    return unique([cfg(H, P, real) for cfg in (_state_config, _out_config) for real in _CDTYPE
                   for H in dom_h for P in dom_p])


@triton.jit
def _osc_state_kernel(
    M_ptr, f_ptr, Bt_ptr, u_ptr, s_ptr, out_s_ptr,
    H, P,
    ACC: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_P: tl.constexpr,
):
    # program (b, oscillator tile): v = u[b] @ Bt over H, then the 2x2 update of its oscillators.
    # Bt (H, P, 2), state (B, 2, P, 2) as real views; M (2, 2, P) and f (2, P) float64
    b = tl.program_id(0).to(tl.int64)
    offs_p = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    mp = offs_p < P
    vr = tl.zeros([BLOCK_P], dtype=ACC)
    vi = tl.zeros([BLOCK_P], dtype=ACC)
    for h0 in range(0, H, BLOCK_H):
        offs_h = h0 + tl.arange(0, BLOCK_H)
        mh = offs_h < H
        u = tl.load(u_ptr + b * H + offs_h, mask=mh, other=0.0).to(ACC)
        p_bt = (offs_h[:, None] * P + offs_p[None, :]) * 2
        m2 = mh[:, None] & mp[None, :]
        btr = tl.load(Bt_ptr + p_bt, mask=m2, other=0.0).to(ACC)
        bti = tl.load(Bt_ptr + p_bt + 1, mask=m2, other=0.0).to(ACC)
        vr += tl.sum(u[:, None] * btr, axis=0)
        vi += tl.sum(u[:, None] * bti, axis=0)
    vr64 = vr.to(tl.float64)
    vi64 = vi.to(tl.float64)
    pz = ((b * 2) * P + offs_p) * 2                               # velocity z[b, p]
    py = ((b * 2 + 1) * P + offs_p) * 2                           # position y[b, p]
    zr = tl.load(s_ptr + pz, mask=mp, other=0.0).to(tl.float64)
    zi = tl.load(s_ptr + pz + 1, mask=mp, other=0.0).to(tl.float64)
    yr = tl.load(s_ptr + py, mask=mp, other=0.0).to(tl.float64)
    yi = tl.load(s_ptr + py + 1, mask=mp, other=0.0).to(tl.float64)
    m00 = tl.load(M_ptr + offs_p, mask=mp, other=0.0)
    m01 = tl.load(M_ptr + P + offs_p, mask=mp, other=0.0)
    m10 = tl.load(M_ptr + 2 * P + offs_p, mask=mp, other=0.0)
    m11 = tl.load(M_ptr + 3 * P + offs_p, mask=mp, other=0.0)
    f0 = tl.load(f_ptr + offs_p, mask=mp, other=0.0)
    f1 = tl.load(f_ptr + P + offs_p, mask=mp, other=0.0)
    out_t = out_s_ptr.dtype.element_ty
    tl.store(out_s_ptr + pz, (m00 * zr + m01 * yr + f0 * vr64).to(out_t), mask=mp)
    tl.store(out_s_ptr + pz + 1, (m00 * zi + m01 * yi + f0 * vi64).to(out_t), mask=mp)
    tl.store(out_s_ptr + py, (m10 * zr + m11 * yr + f1 * vr64).to(out_t), mask=mp)
    tl.store(out_s_ptr + py + 1, (m10 * zi + m11 * yi + f1 * vi64).to(out_t), mask=mp)


@triton.jit
def _osc_out_kernel(
    Ct_ptr, D_ptr, u_ptr, s_ptr, y_ptr,
    H, P,
    ACC: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_P: tl.constexpr,
):
    # program (b, channel tile): out[b, h] = Re(y'[b] @ Ct)[h] + D[h] u[b, h], y' the new positions
    b = tl.program_id(0).to(tl.int64)
    offs_h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    mh = offs_h < H
    acc = tl.zeros([BLOCK_H], dtype=ACC)
    for p0 in range(0, P, BLOCK_P):
        offs_p = p0 + tl.arange(0, BLOCK_P)
        mp = offs_p < P
        py = ((b * 2 + 1) * P + offs_p) * 2
        yr = tl.load(s_ptr + py, mask=mp, other=0.0).to(ACC)
        yi = tl.load(s_ptr + py + 1, mask=mp, other=0.0).to(ACC)
        p_ct = (offs_p[:, None] * H + offs_h[None, :]) * 2
        m2 = mp[:, None] & mh[None, :]
        ctr = tl.load(Ct_ptr + p_ct, mask=m2, other=0.0).to(ACC)
        cti = tl.load(Ct_ptr + p_ct + 1, mask=m2, other=0.0).to(ACC)
        acc += tl.sum(yr[:, None] * ctr - yi[:, None] * cti, axis=0)
    u = tl.load(u_ptr + b * H + offs_h, mask=mh, other=0.0).to(ACC)
    d = tl.load(D_ptr + offs_h, mask=mh, other=0.0).to(ACC)
    tl.store(y_ptr + b * H + offs_h, acc + d * u, mask=mh)


def fits(M: Tensor, f: Tensor, Bt: Tensor, Ct: Tensor, D: Tensor, u: Tensor, state: Tensor) -> bool:
    """Whether these arguments are a case the kernels take (the PyTorch step handles every other):
    u (B, H) and D (H,) float32 or float64, Bt (H, P), Ct (P, H) and state (B, 2, P) of the matching
    complex dtype, real float64 M (2, 2, P) and f (2, P), one device."""
    if u.dim() != 2 or state.dim() != 3 or u.dtype not in _CDTYPE or D.dtype != u.dtype:
        return False
    (B, H), P = u.shape, state.shape[-1]
    cdt = _CDTYPE[u.dtype]
    shapes_ok = (tuple(Bt.shape) == (H, P) and tuple(Ct.shape) == (P, H) and tuple(state.shape) == (B, 2, P)
                 and tuple(D.shape) == (H,) and tuple(M.shape) == (2, 2, P) and tuple(f.shape) == (2, P))
    dtypes_ok = (Bt.dtype == cdt and Ct.dtype == cdt and state.dtype == cdt
                 and M.dtype == torch.float64 and f.dtype == torch.float64)
    return shapes_ok and dtypes_ok and len({t.device for t in (M, f, Bt, Ct, D, u, state)}) == 1


def oscillator_step_triton(M: Tensor, f: Tensor, Bt: Tensor, Ct: Tensor, D: Tensor, u: Tensor, state: Tensor,
                           out: Optional[Tuple[Tensor, Tensor]] = None) -> Tuple[Tensor, Tensor]:
    r"""One fused step of P oscillators (two launches); same arguments and result as
    :func:`statespaces.kernels.oscillator.oscillator_step_ref`.

    Args:
        M: (2, 2, P) float64 blocks; f: (2, P) float64 forcing.
        Bt: (H, P) complex ``B^T``; Ct: (P, H) complex ``C^T`` (complex64 with float32 u, complex128
            with float64 u).
        D: (H,) real skip; u: (B, H) real input; state: (B, 2, P) complex (velocity, position).
        out: optional ``(out, state')`` buffers (contiguous, shapes and dtypes of the results);
            ``state'`` may be ``state`` itself (in place: each program reads its oscillator tile
            before writing it, and the output kernel runs after the state kernel), as the generation
            stepper does, so a step allocates nothing.

    Returns:
        ``(out (B, H), state' (B, 2, P))``.

    Inference only: raises ``RuntimeError`` when gradient mode is on and an input requires a gradient.
    """
    if torch.is_grad_enabled() and any(t.requires_grad for t in (M, f, Bt, Ct, D, u, state)):
        raise RuntimeError("oscillator_step_triton is inference-only (no backward): call it under torch.no_grad(), "
                           "or use statespaces.kernels.oscillator.oscillator_step, which keeps PyTorch for autograd")
    if not fits(M, f, Bt, Ct, D, u, state):
        raise ValueError(
            "oscillator_step_triton: expected u (B, H) and D (H,) float32/float64, Bt (H, P), Ct (P, H) and state "
            "(B, 2, P) of the matching complex dtype, float64 M (2, 2, P) and f (2, P) on one device; got "
            + ", ".join(f"{n} {t.dtype} {tuple(t.shape)}" for n, t in
                        (("M", M), ("f", f), ("Bt", Bt), ("Ct", Ct), ("D", D), ("u", u), ("state", state))))
    return launch_step(M, f, Bt, Ct, D, u, state, out=out)


def launch_step(M: Tensor, f: Tensor, Bt: Tensor, Ct: Tensor, D: Tensor, u: Tensor, state: Tensor,
                out: Optional[Tuple[Tensor, Tensor]] = None) -> Tuple[Tensor, Tensor]:
    """:func:`oscillator_step_triton` for arguments already checked (:func:`fits`, no gradient needed): what
    the dispatcher :func:`statespaces.kernels.oscillator.oscillator_step` calls per token, so the checks run
    once a step."""
    (B, H), P = u.shape, state.shape[-1]
    y, new = step_buffers("oscillator_step_triton", out, u, state)
    if B == 0 or H == 0:
        return y, new
    if P == 0:
        torch.mul(D, u, out=y)
        return y, new

    u = u.contiguous()
    BH, BP = _blocks(H, P)
    _state_config(H, P, u.dtype).launch((B, triton.cdiv(P, BP)), M.contiguous(), f.contiguous(), real_view(Bt), u,
                                        real_view(state), torch.view_as_real(new), H, P)
    _out_config(H, P, u.dtype).launch((B, triton.cdiv(H, BH)), real_view(Ct), D.contiguous(), u,
                                      torch.view_as_real(new), y, H, P)
    return y, new
