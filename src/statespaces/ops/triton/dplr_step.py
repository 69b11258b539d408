r"""Fused recurrent step of S4 in its low-rank (DPLR) form in Triton (inference only).

The bilinear step of a DPLR system, ``x' = (I - sA)^{-1} ((I + sA) x + dt B u)`` with ``s = dt/2``
and ``A = Lambda - P P^*``, costs O(M r) per channel through Woodbury (thesis Thm 3.5, app. C.1.1;
:class:`statespaces.kernels.dplr.DPLRStep`, whose precomputed tensors this kernel reads)::

    w_a   = 2 Re sum_m x_m Pc[m, a]                      (a < r; Pc = conj(P))
    z_m   = da_m x_m + db_m u - sum_a w_a dsP[a, m]
    q_a   = 2 Re sum_m z_m Pc[m, a]
    x'_m  = z_m - sum_a q_a G[a, m],     G[a, m] = sum_b sG[a, b] E[b, m]
    y     = 2 Re sum_m C_m x'_m + D u

In PyTorch (:func:`statespaces.kernels.dplr.dplr_step`) that is about fifteen launches per layer per
token (batched complex matmuls, conjugations, the output reduction); here it is one. Each program owns
BLOCK_R flattened rows ``b * H + h`` with all M modes of a row in registers (the two reductions over M
are sequential), the rank r unrolled at compile time (``RANK``). Complex numbers are (re, im) pairs;
complex64 inputs compute in fp32, complex128 in fp64.

There is no backward: the kernel runs only when autograd is off (the generation stepper of
:mod:`statespaces.layers.stepper`, ``form="dplr"``).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from ._launch import make, pow2_domain, real_view, signature, step_buffers, unique

Tensor = torch.Tensor

__all__ = ["dplr_step_triton", "launch_step", "fits", "MAX_RANK", "MAX_MODES"]

#: Largest rank unrolled in the kernel and largest mode count held in registers (PyTorch beyond).
MAX_RANK = 4
MAX_MODES = 256
#: Elements (rows x modes) of one program's tile in fp32 at rank <= 2; halved for fp64 and again for rank > 2
#: (register pressure: at 512 the fp64 rank-3 kernel spilled on sm_80).
TILE = 512

_CDTYPE = {torch.float32: torch.complex64, torch.float64: torch.complex128}
_PTRS = ["da_ptr", "db_ptr", "Pc_ptr", "dsP_ptr", "E_ptr", "sG_ptr", "C_ptr", "D_ptr", "u_ptr", "s_ptr",
         "out_s_ptr", "y_ptr"]
_SIG = {torch.float32: signature("*fp32", _PTRS, ["R", "H", "M"]),
        torch.float64: signature("*fp64", _PTRS, ["R", "H", "M"])}


def _blocks(M: int, rank: int, real: torch.dtype) -> Tuple[int, int]:
    BLOCK_M = max(16, triton.next_power_of_2(M))
    tile = TILE // (2 if real == torch.float64 else 1) // (2 if rank > 2 else 1)
    return max(1, tile // BLOCK_M), BLOCK_M


def _config(M: int, rank: int, real: torch.dtype):
    BLOCK_R, BLOCK_M = _blocks(M, rank, real)
    return make(__name__, _dplr_step_kernel, _SIG[real], ACC=tl.float64 if real == torch.float64 else tl.float32,
                RANK=rank, BLOCK_R=BLOCK_R, BLOCK_M=BLOCK_M)


def configs():
    """Every launch configuration: fp32 / fp64, ranks 1..MAX_RANK, each tile the mode count can pick."""
    return unique([_config(M, r, real) for real in _SIG for r in range(1, MAX_RANK + 1)
                   for M in pow2_domain(MAX_MODES // 4) if M <= MAX_MODES])


@triton.jit
def _dplr_step_kernel(
    da_ptr, db_ptr, Pc_ptr, dsP_ptr, E_ptr, sG_ptr, C_ptr, D_ptr, u_ptr, s_ptr, out_s_ptr, y_ptr,
    R, H, M,
    ACC: tl.constexpr, RANK: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_M: tl.constexpr,
):
    # complex tensors are contiguous real views (..., 2): da, db, C (H, M); Pc (H, M, r); dsP, E (H, r, M);
    # sG (H, r, r); state (B*H, M). Rows r = b * H + h index u, y and the state.
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    mr = rows < R
    h = rows % H
    cols = tl.arange(0, BLOCK_M)
    mask = mr[:, None] & (cols < M)[None, :]
    hm = (h[:, None] * M + cols[None, :]) * 2
    st = (rows[:, None] * M + cols[None, :]) * 2
    xr = tl.load(s_ptr + st, mask=mask, other=0.0).to(ACC)
    xi = tl.load(s_ptr + st + 1, mask=mask, other=0.0).to(ACC)
    u1 = tl.load(u_ptr + rows, mask=mr, other=0.0).to(ACC)
    u = u1[:, None]
    dar = tl.load(da_ptr + hm, mask=mask, other=0.0).to(ACC)
    dai = tl.load(da_ptr + hm + 1, mask=mask, other=0.0).to(ACC)
    dbr = tl.load(db_ptr + hm, mask=mask, other=0.0).to(ACC)
    dbi = tl.load(db_ptr + hm + 1, mask=mask, other=0.0).to(ACC)
    # z = da x + db u - sum_a w_a dsP_a, with w_a = 2 Re(x . Pc_a)   (masked lanes stay zero)
    zr = dar * xr - dai * xi + dbr * u
    zi = dar * xi + dai * xr + dbi * u
    for a in tl.static_range(RANK):
        pc = ((h[:, None] * M + cols[None, :]) * RANK + a) * 2
        pr = tl.load(Pc_ptr + pc, mask=mask, other=0.0).to(ACC)
        pi = tl.load(Pc_ptr + pc + 1, mask=mask, other=0.0).to(ACC)
        w = 2.0 * tl.sum(xr * pr - xi * pi, axis=1)[:, None]
        ra = ((h[:, None] * RANK + a) * M + cols[None, :]) * 2
        zr -= w * tl.load(dsP_ptr + ra, mask=mask, other=0.0).to(ACC)
        zi -= w * tl.load(dsP_ptr + ra + 1, mask=mask, other=0.0).to(ACC)
    # x' = z - sum_a q_a G_a, q_a = 2 Re(z . Pc_a), G_a = sum_b sG[a, b] E_b
    nr = zr
    ni = zi
    for a in tl.static_range(RANK):
        pc = ((h[:, None] * M + cols[None, :]) * RANK + a) * 2
        pr = tl.load(Pc_ptr + pc, mask=mask, other=0.0).to(ACC)
        pi = tl.load(Pc_ptr + pc + 1, mask=mask, other=0.0).to(ACC)
        q = 2.0 * tl.sum(zr * pr - zi * pi, axis=1)[:, None]
        for b in tl.static_range(RANK):
            sg = ((h * RANK + a) * RANK + b) * 2
            sgr = tl.load(sG_ptr + sg, mask=mr, other=0.0).to(ACC)[:, None]
            sgi = tl.load(sG_ptr + sg + 1, mask=mr, other=0.0).to(ACC)[:, None]
            rb = ((h[:, None] * RANK + b) * M + cols[None, :]) * 2
            er = tl.load(E_ptr + rb, mask=mask, other=0.0).to(ACC)
            ei = tl.load(E_ptr + rb + 1, mask=mask, other=0.0).to(ACC)
            nr -= q * (sgr * er - sgi * ei)
            ni -= q * (sgr * ei + sgi * er)
    tl.store(out_s_ptr + st, nr, mask=mask)
    tl.store(out_s_ptr + st + 1, ni, mask=mask)
    cr = tl.load(C_ptr + hm, mask=mask, other=0.0).to(ACC)
    ci = tl.load(C_ptr + hm + 1, mask=mask, other=0.0).to(ACC)
    d = tl.load(D_ptr + h, mask=mr, other=0.0).to(ACC)
    y = 2.0 * tl.sum(cr * nr - ci * ni, axis=1) + d * u1
    tl.store(y_ptr + rows, y, mask=mr)


def fits(da: Tensor, db: Tensor, Pc: Tensor, dsP: Tensor, E: Tensor, sG: Tensor, C: Tensor, D: Tensor, u: Tensor,
         state: Tensor) -> bool:
    """Whether these arguments are a case the kernel takes (the PyTorch step handles every other): u (B, H)
    and D (H,) float32 or float64; da, db, C (H, M), Pc (H, M, r), dsP, E (H, r, M), sG (H, r, r) and the
    state (B, H, M) of the matching complex dtype, r <= MAX_RANK, M <= MAX_MODES, one device."""
    if u.dim() != 2 or state.dim() != 3 or Pc.dim() != 3 or u.dtype not in _CDTYPE or D.dtype != u.dtype:
        return False
    (B, H), M, r = u.shape, state.shape[-1], Pc.shape[-1]
    if not (1 <= r <= MAX_RANK and M <= MAX_MODES):
        return False
    cdt = _CDTYPE[u.dtype]
    want = {"da": (da, (H, M)), "db": (db, (H, M)), "C": (C, (H, M)), "Pc": (Pc, (H, M, r)), "dsP": (dsP, (H, r, M)),
            "E": (E, (H, r, M)), "sG": (sG, (H, r, r)), "state": (state, (B, H, M))}
    ok = all(t.dtype == cdt and tuple(t.shape) == shape for t, shape in want.values()) and tuple(D.shape) == (H,)
    return ok and len({t.device for t in (da, db, Pc, dsP, E, sG, C, D, u, state)}) == 1


def dplr_step_triton(da: Tensor, db: Tensor, Pc: Tensor, dsP: Tensor, E: Tensor, sG: Tensor, C: Tensor, D: Tensor,
                     u: Tensor, state: Tensor, out: Optional[Tuple[Tensor, Tensor]] = None) -> Tuple[Tensor, Tensor]:
    r"""One fused bilinear DPLR step (one launch): ``(y (B, H), state' (B, H, M))`` as
    :func:`statespaces.kernels.dplr.dplr_step` with the :class:`~statespaces.kernels.dplr.DPLRStep` tensors
    passed one by one (see :func:`fits` for shapes and dtypes).

    ``out``: optional ``(y, state')`` buffers (contiguous, shapes and dtypes of the results); ``state'`` may
    be ``state`` itself (in place: each program reads its rows before writing them), as the generation
    stepper does. Inference only: raises ``RuntimeError`` when gradient mode is on and an input requires one.
    """
    args = (da, db, Pc, dsP, E, sG, C, D, u, state)
    if torch.is_grad_enabled() and any(t.requires_grad for t in args):
        raise RuntimeError("dplr_step_triton is inference-only (no backward): call it under torch.no_grad(), "
                           "or use statespaces.kernels.dplr.dplr_step, which keeps PyTorch for autograd")
    if not fits(*args):
        raise ValueError(
            "dplr_step_triton: expected u (B, H) and D (H,) float32/float64, da, db, C (H, M), Pc (H, M, r), dsP, "
            f"E (H, r, M), sG (H, r, r) and state (B, H, M) of the matching complex dtype, r <= {MAX_RANK}, "
            f"M <= {MAX_MODES}; got " + ", ".join(f"{n} {t.dtype} {tuple(t.shape)}" for n, t in zip(
                ("da", "db", "Pc", "dsP", "E", "sG", "C", "D", "u", "state"), args)))
    return launch_step(*args, out=out)


def launch_step(da: Tensor, db: Tensor, Pc: Tensor, dsP: Tensor, E: Tensor, sG: Tensor, C: Tensor, D: Tensor,
                u: Tensor, state: Tensor, out: Optional[Tuple[Tensor, Tensor]] = None) -> Tuple[Tensor, Tensor]:
    """:func:`dplr_step_triton` for arguments already checked (:func:`fits`, no gradient needed): what the
    dispatcher :func:`statespaces.kernels.dplr.dplr_step` calls per token, so the checks run once a step."""
    (B, H), M, r = u.shape, state.shape[-1], Pc.shape[-1]
    y, new = step_buffers("dplr_step_triton", out, u, state)
    if B == 0 or H == 0:
        return y, new
    if M == 0:
        torch.mul(D, u, out=y)
        return y, new

    rows = B * H
    cfg = _config(M, r, u.dtype)
    BLOCK_R, _ = _blocks(M, r, u.dtype)
    views = [real_view(t) for t in (da, db, Pc, dsP, E, sG, C)]
    cfg.launch((triton.cdiv(rows, BLOCK_R),), *views, D.contiguous(), u.contiguous(), real_view(state),
               torch.view_as_real(new), y, rows, H, M)
    return y, new
