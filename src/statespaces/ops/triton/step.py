r"""Fused recurrent step of a diagonal SSM in Triton (inference only).

The recurrent view of an SSM (thesis §2.3, eq. 2.5; §2.3.2 for the discrete recurrence) advances
a diagonal SSM by one step per channel h and mode m::

    state'[b, h, m] = dA[h, m] * state[b, h, m] + dB[h, m] * u[b, h]
    y[b, h]         = Re sum_m Cc[h, m]^* state'[b, h, m] + D[h] * u[b, h]

with ``Cc = conj(scale * C)`` as cached by :meth:`statespaces.layers.base.DiagonalSSM._step_system`
(so ``sum_m conj(Cc) state'`` is ``torch.linalg.vecdot(Cc, state')``). In PyTorch this is four or
five kernel launches (two multiply-adds, a product, a reduction, an output add) per layer per
token; here it is one. Each program owns BLOCK_R flattened rows ``r = b * H + h`` and walks the M
modes in BLOCK_M tiles: the new state tile is written out and its contribution to ``y`` is
accumulated in registers, reduced over M once at the end. Complex numbers are (re, im) pairs
(``torch.view_as_real``); fp32 inputs (complex64 state) compute in fp32, fp64 inputs (complex128)
in fp64.

There is no backward: this kernel is used only when autograd is off (generation,
``torch.no_grad()`` / ``torch.inference_mode()``), which is when
:meth:`~statespaces.layers.base.DiagonalSSM.step` calls :func:`statespaces.kernels.dispatch.diagonal_step`.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from ._launch import make, pow2_domain, real_view, signature, step_buffers, unique

Tensor = torch.Tensor

__all__ = ["diagonal_step_triton"]

#: Tile sizes: rows (b, h) per program and modes per inner iteration (tests lower MAX_BLOCK_M).
BLOCK_R = 16
MAX_BLOCK_M = 64

_CDTYPE = {torch.float32: torch.complex64, torch.float64: torch.complex128}
_PTRS = ["dA_ptr", "dB_ptr", "C_ptr", "D_ptr", "u_ptr", "s_ptr", "out_s_ptr", "y_ptr"]
_SIG = {torch.float32: signature("*fp32", _PTRS, ["R", "H", "M"]),
        torch.float64: signature("*fp64", _PTRS, ["R", "H", "M"])}


def _config(M: int, real: torch.dtype):
    BLOCK_M = min(MAX_BLOCK_M, max(16, triton.next_power_of_2(M)))
    return make(__name__, _diag_step_kernel, _SIG[real], ACC=tl.float64 if real == torch.float64 else tl.float32,
                BLOCK_R=BLOCK_R, BLOCK_M=BLOCK_M)


def configs():
    """Every launch configuration (fp32 and fp64 steps, each BLOCK_M the mode count can pick)."""
    return unique([_config(M, real) for real in _SIG for M in pow2_domain(MAX_BLOCK_M)])


@triton.jit
def _diag_step_kernel(
    dA_ptr, dB_ptr, C_ptr, D_ptr, u_ptr, s_ptr, out_s_ptr, y_ptr,
    R, H, M,
    ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_M: tl.constexpr,
):
    # complex tensors are contiguous (..., M, 2) real views; r = b * H + h indexes u, y, state rows
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    mr = rows < R
    h = rows % H
    u = tl.load(u_ptr + rows, mask=mr, other=0.0).to(ACC)
    d = tl.load(D_ptr + h, mask=mr, other=0.0).to(ACC)
    acc = tl.zeros([BLOCK_R, BLOCK_M], dtype=ACC)
    cols = tl.arange(0, BLOCK_M)
    for m0 in range(0, M, BLOCK_M):
        offs_m = m0 + cols
        mask = mr[:, None] & (offs_m < M)[None, :]
        p_sys = (h[:, None] * M + offs_m[None, :]) * 2        # (H, M, 2) parameters
        p_st = (rows[:, None] * M + offs_m[None, :]) * 2      # (B, H, M, 2) states
        ar = tl.load(dA_ptr + p_sys, mask=mask, other=0.0).to(ACC)
        ai = tl.load(dA_ptr + p_sys + 1, mask=mask, other=0.0).to(ACC)
        br = tl.load(dB_ptr + p_sys, mask=mask, other=0.0).to(ACC)
        bi = tl.load(dB_ptr + p_sys + 1, mask=mask, other=0.0).to(ACC)
        cr = tl.load(C_ptr + p_sys, mask=mask, other=0.0).to(ACC)
        ci = tl.load(C_ptr + p_sys + 1, mask=mask, other=0.0).to(ACC)
        sr = tl.load(s_ptr + p_st, mask=mask, other=0.0).to(ACC)
        si = tl.load(s_ptr + p_st + 1, mask=mask, other=0.0).to(ACC)
        # state' = dA * state + dB * u
        nr = ar * sr - ai * si + br * u[:, None]
        ni = ar * si + ai * sr + bi * u[:, None]
        tl.store(out_s_ptr + p_st, nr, mask=mask)
        tl.store(out_s_ptr + p_st + 1, ni, mask=mask)
        # Re(conj(Cc) * state') = cr nr + ci ni (masked lanes are zero)
        acc += cr * nr + ci * ni
    y = tl.sum(acc, axis=1) + d * u
    tl.store(y_ptr + rows, y, mask=mr)


def _check(dA: Tensor, dB: Tensor, Cc: Tensor, D: Tensor, u: Tensor, state: Tensor) -> Tuple[int, int, int]:
    if u.dim() != 2 or state.dim() != 3:
        raise ValueError(
            f"diagonal_step_triton: u must be (B, H) and state (B, H, M), got {tuple(u.shape)} and {tuple(state.shape)}"
        )
    B, H = u.shape
    M = state.shape[-1]
    for name, t, shape in (("dA", dA, (H, M)), ("dB", dB, (H, M)), ("Cc", Cc, (H, M)), ("D", D, (H,)),
                           ("state", state, (B, H, M))):
        if tuple(t.shape) != shape:
            raise ValueError(f"diagonal_step_triton: {name} must have shape {shape}, got {tuple(t.shape)}")
    real = u.dtype
    if real not in _CDTYPE or D.dtype != real:
        raise TypeError(
            f"diagonal_step_triton: u and D must both be float32 or both float64, got {u.dtype} and {D.dtype}"
        )
    cdt = _CDTYPE[real]
    for name, t in (("dA", dA), ("dB", dB), ("Cc", Cc), ("state", state)):
        if t.dtype != cdt:
            raise TypeError(f"diagonal_step_triton: {name} must be {cdt} to match u ({real}), got {t.dtype}")
    devs = {t.device for t in (dA, dB, Cc, D, u, state)}
    if len(devs) != 1:
        raise ValueError(f"diagonal_step_triton: all inputs must be on one device, got {sorted(map(str, devs))}")
    return B, H, M


def diagonal_step_triton(dA: Tensor, dB: Tensor, Cc: Tensor, D: Tensor, u: Tensor, state: Tensor,
                         out: Optional[Tuple[Tensor, Tensor]] = None) -> Tuple[Tensor, Tensor]:
    r"""One fused recurrent step of a diagonal SSM (thesis eq. 2.5, §2.3; one launch).

    Computes ``state' = dA * state + dB * u[..., None]`` and
    ``y = Re(vecdot(Cc, state')) + D * u`` (``vecdot`` conjugates ``Cc``), the body of
    :meth:`statespaces.layers.base.DiagonalSSM.step`.

    Args:
        dA: (H, M) complex64 or complex128, discrete eigenvalues.
        dB: (H, M) discrete input vector, same dtype as dA.
        Cc: (H, M) ``conj(scale * C)``, same dtype as dA.
        D: (H,) real skip term.
        u: (B, H) real input, same real dtype as D.
        state: (B, H, M) complex state, same dtype as dA.
        out: optional ``(y, state')`` buffers to write into (contiguous, shapes and dtypes of the
            results); ``state'`` may be ``state`` itself (an in-place step: every program reads a
            state tile before it writes the same tile), as the generation stepper does
            (:mod:`statespaces.layers.stepper`), so a step allocates nothing.

    B is the batch, H the channels, M the (complex) modes per channel.

    Returns:
        ``(y, state')``: y (B, H) real, state' (B, H, M) complex (new tensors, or the ``out``
        buffers; ``state`` is modified only when it is ``out[1]``).

    Inference only: there is no backward. Raises ``RuntimeError`` if gradient mode is on and an
    input requires a gradient (use the PyTorch expression, as ``DiagonalSSM.step`` does then).
    """
    if torch.is_grad_enabled() and any(t.requires_grad for t in (dA, dB, Cc, D, u, state)):
        raise RuntimeError(
            "diagonal_step_triton is inference-only (no backward): call it under torch.no_grad() / "
            "torch.inference_mode(), or use the PyTorch step (statespaces.kernels.dispatch.diagonal_step "
            "does so when autograd is needed)"
        )
    B, H, M = _check(dA, dB, Cc, D, u, state)
    y, out_state = step_buffers("diagonal_step_triton", out, u, state)
    if B == 0 or H == 0:
        return y, out_state
    if M == 0:
        torch.mul(D, u, out=y)
        return y, out_state

    R = B * H
    cfg = _config(M, u.dtype)
    grid = (triton.cdiv(R, BLOCK_R),)
    cfg.launch(
        grid,
        real_view(dA), real_view(dB), real_view(Cc), D.contiguous(), u.contiguous(), real_view(state),
        torch.view_as_real(out_state), y,
        R, H, M,
    )
    return y, out_state
