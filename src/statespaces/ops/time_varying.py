r"""The time-varying diagonal SSM of irregular sampling, forcing, recurrence and readout in one op (thesis §4.2.4,
§3.2.1 eq. 3.2, §7.2.6).

With a per-step discretization (``dA_t, dB_t`` for the interval that step ``t`` covers) a diagonal SSM is no longer
a convolution; each channel ``h`` and mode ``m`` runs

    x_t = dA_t x_{t-1} + dB_t u_t,        y_t = scale * Re sum_m C_m x_{t,m}

and a bidirectional layer adds an anti-causal pass over the reversed sequence in mirrored time, read out one step
later (lags -1..-L, :func:`shift_anticausal`), each sample held over the interval *after* it (:func:`reversed_steps`).

:func:`time_varying_ssm` computes either pass. The composition of elementwise products, the scan of
:mod:`statespaces.ops.scan` and a readout, differentiated op by op, spent most of a bidirectional S4D layer's time
at the ``ucr`` preset's shape in copies: the reversed pass's reordered and flipped tables, transposes, and the
zero-filled full-size gradients of slices. On the CPU, when one step's states are wide enough for a loop over time
to pay (:data:`FUSED_STEP_BYTES`), one autograd Function does it all on the (B, L, H, M) tables
in place: the forcing and the recurrence into one state buffer, the reversed pass by indexing (no reordered copy),
the readout as one contraction, and a hand-written backward (the adjoint recurrence of the scan, then one pass per
gradient). Elsewhere (CUDA, whose scan is the Triton kernel; torch.compile and torch.export tracing; ``torch.func``
transforms; states under :data:`FUSED_STEP_BYTES`; a ``scale`` tensor that needs a gradient) the composition runs,
and :func:`time_varying_ssm_ref` is the reference twin (the sequential scan).
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch

from .. import backend
from .._checks import tracing
from .scan import scan_diagonal, scan_diagonal_ref

Tensor = torch.Tensor

__all__ = ["time_varying_ssm", "time_varying_ssm_ref", "reversed_steps", "shift_anticausal"]

#: Bytes of one step's states (B x H x M complex entries) from which the CPU runs the fused Function: forward+backward,
#: one thread, complex64, against the composition: 4 KiB per step (1, 2048, 16, 32) 38 vs 68 ms, 8 KiB (2, 1024, 16,
#: 32) 26 vs 46 ms; below, the composition's doubling scan wins (2 KiB: 15 vs 11 ms; 64 B: 26 vs 3.2 ms).
FUSED_STEP_BYTES = 1 << 12


def reversed_steps(steps: Tensor) -> Tensor:
    """The step multipliers (B, L) of the anti-causal pass of a bidirectional layer (thesis §7.2.6, §4.2.4), which runs
    the time-reversed sequence: its step ``j`` reads sample ``l = L - 1 - j`` and covers the interval *after* it
    (``steps[:, l + 1]``, between samples l and l + 1), the mirror of the causal convention (step t covers the
    interval before sample t). The last sample, first of the reversed pass, has no interval after it and takes the
    row's first interval, as a right-padded row does (:func:`~statespaces.layers.irregular.intervals_from_timestamps`
    pads with it), so padding changes nothing. All ones stay all ones: the regular layer's anti-causal kernel. Any
    (B, L, ...) per-step table is reordered the same way: a table discretized from ``steps``, reordered, is the table
    of the reversed steps."""
    return torch.cat([steps[:, 1:], steps[:, :1]], 1).flip(1)


def shift_anticausal(back: Tensor) -> Tensor:
    """``back`` (B, L, ...) moved one step earlier, zero at the end: the anti-causal half of a bidirectional
    layer acts on lags -1..-L (``y_t += back_{t+1}``, :func:`~statespaces.ops.fftconv.two_sided_kernel`)."""
    return torch.cat([back[:, 1:], torch.zeros_like(back[:, :1])], 1)


def time_varying_ssm(dA: Tensor, dB: Tensor, u: Tensor, C: Tensor, scale: float, x0: Optional[Tensor] = None,
                     anticausal: bool = False) -> Tuple[Tensor, Tensor]:
    r"""One pass of a time-varying diagonal SSM with its readout (module docstring).

    Args:
        dA, dB: the per-step discretized transitions and input gains (B, L, H, M), complex, L >= 1.
        u: input (B, L, H), real floating.
        C: readout (H, M), complex; ``scale`` (a number, or a real tensor) multiplies the readout.
        x0: state before the pass (B, H, M), or None for zeros.
        anticausal: the anti-causal pass of a bidirectional layer: the recurrence runs from the end over the
            reversed steps, ``z_l = dA_{l+1} z_{l+1} + dB_{l+1} u_l`` (``z_{L-1} = dA_0 x0 + dB_0 u_{L-1}``), and
            is read out one step later, ``y_l = scale Re sum C z_{l+1}`` (``y_{L-1} = 0``): the composition
            ``shift_anticausal(flip(pass over flip(u) with the reversed_steps tables))``.

    Returns:
        ``(y, last)``: y (B, L, H) real (no skip term), the state after the pass's last step (B, H, M): ``x_{L-1}``,
        or ``z_0`` for the anti-causal pass.
    """
    _check_inputs(dA, dB, u, C, x0)
    path = backend.choose("time_varying_ssm", dA, dB, u, C, x0)
    if path == "ref":
        return time_varying_ssm_ref(dA, dB, u, C, scale, x0, anticausal)
    if _fused(dA, dB, u, C, x0) and not (isinstance(scale, Tensor) and scale.requires_grad):
        y, last = _TimeVaryingSSM.apply(dA, dB, u, C, x0, float(scale), bool(anticausal))
        return y, last
    return _composed(dA, dB, u, C, scale, x0, anticausal, scan_diagonal)


def time_varying_ssm_ref(dA: Tensor, dB: Tensor, u: Tensor, C: Tensor, scale: float, x0: Optional[Tensor] = None,
                         anticausal: bool = False) -> Tuple[Tensor, Tensor]:
    """Reference twin of :func:`time_varying_ssm`: the forcing, the sequential scan
    (:func:`~statespaces.ops.scan.scan_diagonal_ref`) and the readout as plain autograd ops, the anti-causal pass on
    reordered tables of the flipped sequence. Same arguments and results."""
    return _composed(dA, dB, u, C, scale, x0, anticausal, scan_diagonal_ref)


def _composed(dA: Tensor, dB: Tensor, u: Tensor, C: Tensor, scale: float, x0: Optional[Tensor], anticausal: bool,
              scan: Callable[[Tensor, Tensor, Optional[Tensor]], Tensor]) -> Tuple[Tensor, Tensor]:
    """:func:`time_varying_ssm` as separate ops: the reordered tables and the flip of the anti-causal pass, a scan
    over (B, H, L, M), the readout."""
    if anticausal:
        dA, dB, u = reversed_steps(dA), reversed_steps(dB), u.flip(1)
    a = dA.transpose(1, 2)                                              # (B, H, L, M)
    b = (dB * u.unsqueeze(-1)).transpose(1, 2)
    X = scan(a, b, x0)                                                  # (B, H, L, M)
    y = scale * (X.real * C.real.unsqueeze(1) - X.imag * C.imag.unsqueeze(1)).sum(-1)   # (B, H, L)
    y = y.transpose(1, 2)
    last = X[:, :, -1].clone()                  # a copy: X is saved for the readout's backward
    return (shift_anticausal(y.flip(1)), last) if anticausal else (y, last)


def _check_inputs(dA: Tensor, dB: Tensor, u: Tensor, C: Tensor, x0: Optional[Tensor]) -> None:
    if u.dim() != 3 or dA.dim() != 4 or tuple(dA.shape[:3]) != tuple(u.shape) or dB.shape != dA.shape:
        raise ValueError(f"time_varying_ssm: dA and dB must have shape (B, L, H, M) and u (B, L, H), got dA "
                         f"{tuple(dA.shape)}, dB {tuple(dB.shape)}, u {tuple(u.shape)}")
    if u.shape[1] < 1:
        raise ValueError(f"time_varying_ssm: the sequences are empty (L = 0, u {tuple(u.shape)}); give L >= 1 steps")
    complex_args = [("dA", dA), ("dB", dB), ("C", C)] + ([] if x0 is None else [("x0", x0)])
    for name, t in complex_args:
        if not t.is_complex():
            raise TypeError(f"time_varying_ssm: {name} must be complex (the discretized modes), got {t.dtype}")
    if not u.is_floating_point():
        raise TypeError(f"time_varying_ssm: u must be a real floating-point tensor, got {u.dtype}"
                        + ("; pass the real input (a complex u has no meaning here)" if u.is_complex() else ""))
    B, _, H, M = dA.shape
    if tuple(C.shape) != (H, M):
        raise ValueError(f"time_varying_ssm: C must have shape (H, M) = {(H, M)}, got {tuple(C.shape)}")
    if x0 is not None and tuple(x0.shape) != (B, H, M):
        raise ValueError(f"time_varying_ssm: the initial state must have shape (B, H, M) = {(B, H, M)}, got "
                         f"{tuple(x0.shape)}")


def _fused(dA: Tensor, dB: Tensor, u: Tensor, C: Tensor, x0: Optional[Tensor]) -> bool:
    """Whether the fused CPU Function runs (module docstring): CPU tensors of one complex dtype and its real
    dtype, outside tracing and ``torch.func`` transforms, with one step's states at least
    :data:`FUSED_STEP_BYTES` (narrower, the doubling scan of the composition wins)."""
    if dA.device.type != "cpu" or tracing() or backend.transforming() or dA.shape[1] < 2:
        return False
    if dB.dtype != dA.dtype or C.dtype != dA.dtype or u.dtype != dA.dtype.to_real():   # complex: _check_inputs
        return False
    if x0 is not None and x0.dtype != dA.dtype:
        return False
    B, _, H, M = dA.shape
    return B * H * M * dA.element_size() >= FUSED_STEP_BYTES


def _readout(X: Tensor, C: Tensor, scale: float) -> Tensor:
    """``scale * Re sum_m C_m X_m``: (B, L, H, M) complex -> (B, L, H) real, contracted over (M, re/im)."""
    w = torch.stack([C.real, -C.imag], -1) * scale                     # (H, M, 2)
    return (torch.view_as_real(X) * w).sum((-1, -2))       # a product and a sum: 7x faster than einsum's permutes


class _TimeVaryingSSM(torch.autograd.Function):
    """The fused CPU pass of :func:`time_varying_ssm`, forward and backward as loops over time on (B, L, H, M)."""

    @staticmethod
    def forward(ctx, dA: Tensor, dB: Tensor, u: Tensor, C: Tensor, x0: Optional[Tensor], scale: float,
                anticausal: bool) -> Tuple[Tensor, Tensor]:
        L = dA.shape[1]
        U = u.unsqueeze(-1)
        X = torch.empty_like(dA)                                          # the states, forcing first
        if anticausal:       # z_l = dA_{l+1} z_{l+1} + dB_{l+1} u_l; the first step of the pass (l = L-1) takes dA_0
            torch.mul(dB[:, 1:], U[:, :-1], out=X[:, :-1])
            torch.mul(dB[:, 0], U[:, -1], out=X[:, -1])
            if x0 is not None:
                X[:, -1].addcmul_(dA[:, 0], x0)
            for t in range(L - 2, -1, -1):
                X[:, t].addcmul_(dA[:, t + 1], X[:, t + 1])
            y = torch.zeros_like(u)
            y[:, :-1] = _readout(X[:, 1:], C, scale)
            last = X[:, 0].clone()
        else:
            torch.mul(dB, U, out=X)
            if x0 is not None:
                X[:, 0].addcmul_(dA[:, 0], x0)
            for t in range(1, L):
                X[:, t].addcmul_(dA[:, t], X[:, t - 1])
            y = _readout(X, C, scale)
            last = X[:, -1].clone()
        ctx.save_for_backward(dA, dB, u, C, x0, X)
        ctx.set_materialize_grads(False)                # an unused output's gradient stays None
        ctx.scale, ctx.anticausal = scale, anticausal
        return y, last

    @staticmethod
    @backend.first_order
    def backward(ctx, gy: Optional[Tensor], glast: Optional[Tensor]):
        dA, dB, u, C, x0, X = ctx.saved_tensors
        scale, anticausal = ctx.scale, ctx.anticausal
        need_dA, need_dB, need_u, need_C, need_x0 = ctx.needs_input_grad[:5]
        L = dA.shape[1]
        # mu: the conjugate adjoint states, conj(dLoss/dx_t) in PyTorch's conjugate-Wirtinger convention, run
        # against the pass: mu_t = gy_t scale C + dA_{t+1} mu_{t+1}. The conjugate form needs no conjugated copy of
        # dA (a conjugation is one in-place pass over each gradient at the end)
        mu = torch.empty_like(X)
        Cs = torch.view_as_real(C * scale)                                  # (H, M, 2)
        if anticausal:                                   # y_l reads z_{l+1}; z_{l+1} feeds z_l through dA_{l+1}
            if gy is None:
                mu[:, 1:] = 0
            else:
                torch.mul(gy[:, :-1, :, None, None], Cs, out=torch.view_as_real(mu[:, 1:]))
            mu[:, 0] = 0 if glast is None else glast.conj()
            for t in range(1, L):
                mu[:, t].addcmul_(dA[:, t], mu[:, t - 1])
            # the pass's step l < L-1 read dA_{l+1} (on z_{l+1}), dB_{l+1} and u_l; its first step (l = L-1) dA_0, dB_0
            mu_rest, mu_first, prev_rest = mu[:, :-1], mu[:, -1], X[:, 1:]
            u_rest, u_first = u[:, :-1], u[:, -1]
        else:
            if gy is None:
                mu.zero_()
            else:
                torch.mul(gy[..., None, None], Cs, out=torch.view_as_real(mu))
            if glast is not None:
                mu[:, -1] += glast.conj()
            for t in range(L - 2, -1, -1):
                mu[:, t].addcmul_(dA[:, t + 1], mu[:, t + 1])
            # step t >= 1 read dA_t (on x_{t-1}), dB_t and u_t; step 0 dA_0 (on x0), dB_0, u_0
            mu_rest, mu_first, prev_rest = mu[:, 1:], mu[:, 0], X[:, :-1]
            u_rest, u_first = u[:, 1:], u[:, 0]
        g_dA = g_dB = g_u = g_C = g_x0 = None
        # each table's gradient: the pass's steps other than its first at [:, 1:], its first at [:, 0] (both
        # directions: the anti-causal first step, l = L-1, reads table 0)
        if need_dA:                                      # conj(mu) conj(x_prev)
            g_dA = torch.empty_like(dA)
            torch.mul(mu_rest, prev_rest, out=g_dA[:, 1:])
            if x0 is None:
                g_dA[:, 0] = 0
            else:
                torch.mul(mu_first, x0, out=g_dA[:, 0])
            g_dA.conj_physical_()
        if need_dB:                                      # conj(mu) u
            g_dB = torch.empty_like(dB)
            torch.mul(torch.view_as_real(mu_rest), u_rest[..., None, None], out=torch.view_as_real(g_dB[:, 1:]))
            torch.mul(torch.view_as_real(mu_first), u_first[..., None, None], out=torch.view_as_real(g_dB[:, 0]))
            g_dB.conj_physical_()
        if need_u:                                       # Re sum_m conj(mu) conj(dB) = Re sum_m mu dB
            if anticausal:
                g_u = torch.empty_like(u)
                g_u[:, :-1] = (mu_rest * dB[:, 1:]).real.sum(-1)
                g_u[:, -1] = (mu_first * dB[:, 0]).real.sum(-1)
            else:
                g_u = (mu * dB).real.sum(-1)
        if need_C and gy is not None:                    # scale * sum_{b, l} gy_l conj(state read at l)
            read, g = (X[:, 1:], gy[:, :-1]) if anticausal else (X, gy)
            g_C = torch.view_as_complex((g[..., None, None] * torch.view_as_real(read)).sum((0, 1))).conj() * scale
        if need_x0 and x0 is not None:                   # conj(dA_0) conj(mu) at the pass's first step
            g_x0 = (dA[:, 0] * mu_first).conj_physical_()
        return g_dA, g_dB, g_u, g_C, g_x0, None, None
