r"""Fast Vandermonde sums for diagonal SSMs (thesis §3.2.1, eq. 3.2; §3.5.3).

The S4D kernel is ``K_l = Re sum_n c_n a_n^l`` for ``l < L``, a Vandermonde matrix-vector product.
The naive route materializes the (H, N, L) matrix ``a_n^l`` with one complex exponential per
entry. Here we split ``l = J*q + r`` with block size ``J ~ sqrt(L)``:

    K[q*J + r] = Re sum_n (c_n a_n^{qJ}) a_n^r ,

a batched complex matrix product of a (L/J, N) matrix with a (N, J) matrix per channel. So:

* transcendental functions: O(H N sqrt(L)) instead of O(H N L);
* multiply-adds: O(H N L), done by BLAS (``matmul``), not elementwise;
* memory: O(H (L + N sqrt(L))), never the (H, N, L) tensor; autograd stores only the two factors.

:func:`vandermonde_transpose` is the adjoint sum ``sum_l u_l a^l`` used to advance a state over
a whole chunk. Both are checked against the reference twin :func:`vandermonde_ref`
(:func:`statespaces.kernels.reference.vandermonde_naive`).
"""
from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F

from .. import backend
from .._checks import check_length, check_real_float
from ..discretize import check_zoh_system, zoh_kernel_factors
from ..ops._amp import amp_backward, autocast_off, fp32_forward
from .reference import vandermonde_naive

Tensor = torch.Tensor


def _block(L: int) -> int:
    return max(1, int(math.ceil(math.sqrt(L))))


_TWO_PI = 2.0 * math.pi


def _exact_dtype(t: Tensor) -> torch.dtype:
    """float64 where the device has it (everywhere but MPS), else the tensor's own real dtype."""
    return t.real.dtype if t.device.type == "mps" else torch.float64


def _powers(log_a: Tensor, count: int, stride: int) -> Tensor:
    """``exp(stride * j * log_a)`` for j < count: shape (..., N, count).

    The exponents ``l * log_a`` (``l = stride * j`` up to ~L) are formed in float64 and the phase is
    reduced to [-pi, pi] there before rounding to the working precision: formed in float32, the
    product ``l * Im(log_a)`` alone carries an absolute phase error ``~ l |Im log_a| 2^-24`` (about
    1e-3 rad at l = 65536 for |Im log_a| ~ 1), which no later step can undo. The float64 work is
    O(N sqrt(L)) entries, negligible next to the O(N L) multiply-adds.

    Without autograd through ``log_a`` (the kernels' own Functions, inference) the table comes from
    :func:`_power_table` (float64 products, no transcendental per entry). Under autograd, complex
    ``log_a`` goes through ``polar(exp(Re), Im)``: one real exp and one sincos per entry, several
    times faster on CPU than the complex ``exp`` and equal to it to rounding.
    """
    if _tabulate(log_a):
        return _power_table(log_a, count, stride).to(log_a.dtype)
    if not log_a.is_complex():
        j = torch.arange(count, device=log_a.device, dtype=_exact_dtype(log_a)) * stride
        return torch.exp(log_a.to(j.dtype).unsqueeze(-1) * j).to(log_a.dtype)
    return torch.polar(*_reduced_phase(log_a, count, stride))


def _tabulate(log_a: Tensor) -> bool:
    """Whether powers of ``exp(log_a)`` come from :func:`_power_table`: float64 available (not MPS) and no
    autograd through ``log_a`` (under autograd the other route, whose gradient the tests pin down)."""
    return log_a.device.type != "mps" and not (torch.is_grad_enabled() and log_a.requires_grad)


def _power_table(log_a: Tensor, count: int, stride: int) -> Tensor:
    r"""``a^{stride j}`` for j < count, ``a = exp(log_a)``, in float64 (complex128, or float64 for real
    ``log_a``): shape (..., N, count), filled by doubling: with the first n entries known,
    ``a^{stride (n + i)} = a^{stride i} a^{stride n}`` gives the next n in one product, and
    ``a^{stride n}`` is squared along; ``log2(count)`` products in all and two ``exp`` per mode.

    Same values as ``exp(stride j log_a)`` with the exponent in float64 (:func:`_powers`' other route):
    each entry is a product of at most ``log2(count) + 1`` float64 factors, so its relative error is
    ``~ stride j 2^-53`` (the base's rounding, raised to that power), ``1e-11`` at ``stride j = 65536``,
    far below float32 resolution. The transcendental functions were the cost of the blocked sums on
    CPU (one exp and one sincos per entry, ~7 ms of a 55 ms S4D forward+backward at H=128, L=1024);
    products are several times cheaper.
    """
    xdt = torch.complex128 if log_a.is_complex() else torch.float64
    step = torch.exp(log_a.to(xdt) * stride)                  # a^{stride n}, n = entries known
    out = torch.ones(*log_a.shape, 1, dtype=xdt, device=log_a.device)
    while out.shape[-1] < count:                              # no out= writes: traceable by torch.compile
        n = out.shape[-1]
        out = torch.cat([out, out[..., :min(n, count - n)] * step.unsqueeze(-1)], -1)
        if out.shape[-1] < count:
            step = step * step
    return out


def _reduced_phase(log_a: Tensor, count: int, stride: int) -> Tuple[Tensor, Tensor]:
    """Magnitudes ``exp(l Re log_a)`` and phases ``l Im log_a`` reduced to [-pi, pi] for ``l = stride * j``,
    j < count, formed in float64 (see :func:`_powers`) and rounded to the working precision: (..., N, count) each."""
    rdt = log_a.real.dtype
    xdt = _exact_dtype(log_a)
    j = torch.arange(count, device=log_a.device, dtype=xdt) * stride
    mag = torch.exp(log_a.real.to(xdt).unsqueeze(-1) * j)
    phase = log_a.imag.to(xdt).unsqueeze(-1) * j
    phase = phase - _TWO_PI * torch.round(phase / _TWO_PI)   # exact shift by whole turns (zero gradient)
    return mag.to(rdt), phase.to(rdt)


def _powers_real(log_a: Tensor, count: int) -> Tensor:
    """``a^j`` for j < count as real rows: (..., 2N, count), ``Re a^j`` in rows 0..N-1 and ``Im a^j`` in
    rows N..2N-1: the right factor of ``Re(X @ Y) = [Re X, -Im X] @ [Re Y; Im Y]``, built from real parts
    (no complex tensor)."""
    if not log_a.is_complex():
        log_a = torch.complex(log_a, torch.zeros_like(log_a))
    if _tabulate(log_a):
        P = _power_table(log_a, count, 1)                      # (..., N, count)
        out = torch.empty(*P.shape[:-2], 2, *P.shape[-2:], dtype=log_a.real.dtype, device=P.device)
        out.copy_(torch.view_as_real(P).movedim(-1, -3))       # one strided pass: split and round
        return out.flatten(-3, -2)
    mag, phase = _reduced_phase(log_a, count, 1)
    return torch.cat([torch.cos(phase).mul_(mag), torch.sin(phase).mul_(mag)], -2)


def exp_scaled(log_a: Tensor, n: int) -> Tensor:
    """``exp(n * log_a)`` for an integer ``n``, with the exponent formed as in :func:`_powers`
    (float64, phase reduced), so that a whole-chunk power ``a^L`` is as accurate as ``a``.
    Result shaped as ``log_a`` (e.g. (H, N)): the power ``dA^L`` that carries a diagonal state over a chunk
    (thesis §3.2.1)."""
    return _powers(log_a, 2, int(n))[..., 1]


def _blocked_forward(coef: Tensor, low: Tensor, high: Tensor, L: int) -> Tensor:
    """``Re(X @ a^r)`` with ``X = coef a^{qJ}`` (..., H, Q, N) and ``low`` the real rows of :func:`_powers_real`."""
    X = coef.unsqueeze(-2) * high                            # (..., H, Q, N)
    K = torch.cat([X.real, -X.imag], -1) @ low               # (..., H, Q, J)
    return K.flatten(-2)[..., :L]


class _Vandermonde(torch.autograd.Function):
    r"""Blocked Vandermonde sum with a hand-written backward.

    For a real loss, PyTorch's complex gradient is ``dLoss/dRe + i dLoss/dIm``; with
    ``z_nl = exp(l w_n)`` and upstream gradient ``g_l`` this gives

        grad_c[n] = sum_l g_l conj(z_nl),        grad_w[n] = conj(c_n) sum_l l g_l conj(z_nl),

    i.e. two adjoint sums ``S0 = sum_l g_l z_nl`` and ``S1 = sum_l l g_l z_nl``. With ``l = qJ + r``,
    ``S = sum_q a^{qJ} (sum_r g_{qJ+r} a^r)`` and ``l g_l = qJ g_l + r g_l``, so both come out of one
    real matmul of the stacked (g, r g) blocks against the saved small factors ``a^r`` — no
    (N, L) tensor, and autograd stores only the two factors.
    """

    @staticmethod
    @fp32_forward
    def forward(ctx, coef: Tensor, log_a: Tensor, L: int) -> Tensor:
        J = _block(L)
        Q = -(-L // J)
        low = _powers_real(log_a, J)                         # (H, 2N, J):  Re, Im of a^r
        high = _powers(log_a, Q, J).transpose(-1, -2)        # (H, Q, N):   a^{qJ}
        ctx.save_for_backward(coef, low, high)
        ctx.L, ctx.log_a_shape = L, log_a.shape
        return _blocked_forward(coef, low, high, L)

    @staticmethod
    @backend.first_order
    @amp_backward
    def backward(ctx, g: Tensor):
        coef, low, high = ctx.saved_tensors
        L = ctx.L
        Q, J, N = high.shape[-2], low.shape[-1], high.shape[-1]
        need_c, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        g = F.pad(g, (0, Q * J - L)).unflatten(-1, (Q, J))  # (..., H, Q, J)
        rdt = low.dtype
        parts = [g]
        if need_w:
            parts.append(g * torch.arange(J, device=g.device, dtype=rdt))
        G = torch.cat(parts, -2).to(rdt)                     # (..., H, kQ, J)
        P = G @ low.transpose(-1, -2)                        # (..., H, kQ, 2N)
        inner = torch.complex(P[..., :N], P[..., N:])        # (..., H, kQ, N)
        grad_c = grad_w = None
        S0q = inner[..., :Q, :]                              # sum_r g a^r        per block q
        if need_c:
            grad_c = (S0q * high).sum(-2).conj()
        if need_w:
            qJ = (torch.arange(Q, device=g.device, dtype=rdt) * J).unsqueeze(-1)
            S1 = ((qJ * S0q + inner[..., Q:, :]) * high).sum(-2)
            grad_w = (coef * S1).conj()
            grad_w = grad_w.sum_to_size(ctx.log_a_shape) if grad_w.shape != ctx.log_a_shape else grad_w
        return grad_c, grad_w, None


def _vandermonde_torch(coef: Tensor, log_a: Tensor, L: int) -> Tensor:
    """The PyTorch path of :func:`vandermonde` (any device, any float dtype)."""
    if torch.is_grad_enabled() and (coef.requires_grad or log_a.requires_grad):
        return _Vandermonde.apply(coef, log_a, L)
    J = _block(L)
    Q = -(-L // J)
    with autocast_off(coef):                                 # as _Vandermonde: float32 inside autocast
        return _blocked_forward(coef, _powers_real(log_a, J), _powers(log_a, Q, J).transpose(-1, -2), L)


#: The twin of the Triton VandermondeFn (same arguments): its backward falls back to it if its kernels fail.
backend.register_twin("VandermondeFn", _vandermonde_torch)


def _vandermonde_triton(coef: Tensor, log_a: Tensor, L: int) -> Tensor:
    from ..ops.triton.vandermonde import vandermonde_triton

    return vandermonde_triton(coef, log_a, L)


def vandermonde_ref(coef: Tensor, log_a: Tensor, L: int) -> Tensor:
    r"""Reference twin of :func:`vandermonde`: materializes the (..., H, N, L) matrix of powers
    (:func:`statespaces.kernels.reference.vandermonde_naive`); same arguments and result.
    The naive O(NL) route of thesis §3.2.1, eq. 3.2. The powers and their sum are formed in complex128 whatever
    the inputs' precision, as the fast path forms its powers in float64 (``exp(l log_a)`` in complex64 loses
    the phase ``l Im log_a`` at large l, and its gradient in ``log_a`` weighs that error by l); the result has
    ``coef``'s real dtype. Plain differentiable ops (the casts too), so derivatives of any order and
    ``torch.func`` transforms go through it."""
    wide = torch.complex128
    return vandermonde_naive(coef.to(wide), log_a.to(wide), L).to(coef.real.dtype)


def _complex_pair(coef: Tensor, log_a: Tensor) -> Tuple[Tensor, Tensor]:
    """coef and log_a in one complex dtype (the wider of the two): a real one is promoted (its gradient comes back
    real, through the cast; the fused backward took only complex inputs) and the fast path and its twin agree on the
    result's dtype. Integer or bool tensors are refused."""
    for name, t in (("coef", coef), ("log_a", log_a)):
        if not isinstance(t, Tensor) or not (t.is_complex() or t.is_floating_point()):
            raise TypeError(f"vandermonde: {name} must be a complex (or real floating) tensor, got "
                            f"{getattr(t, 'dtype', type(t).__name__)}")
    cd = torch.promote_types(torch.promote_types(coef.dtype, log_a.dtype), torch.complex64)
    return coef.to(cd), log_a.to(cd)


def vandermonde(coef: Tensor, log_a: Tensor, L: int) -> Tensor:
    r"""``K_l = Re sum_n coef_n exp(l * log_a_n)`` for ``l in [0, L)`` (thesis eq. 3.2, §3.5.3).

    The path is chosen by :mod:`statespaces.backend`: on CUDA tensors (complex64) with Triton
    importable, the fused Triton kernel (:mod:`statespaces.ops.triton.vandermonde`); everywhere
    else the blocked PyTorch path below; :func:`vandermonde_ref` under ``backend "ref"``.

    Args:
        coef: complex coefficients, shape (..., H, N) (leading batch dims allowed).
        log_a: complex logarithms of the discrete eigenvalues, shape (H, N).
        L: number of powers.

    Returns:
        Real tensor (..., H, L).
    """
    L = check_length(L, "vandermonde: L")
    coef, log_a = _complex_pair(coef, log_a)
    if coef.shape[-1] != log_a.shape[-1]:
        raise ValueError(f"vandermonde: coef (..., H, N) and log_a (H, N) disagree on N: "
                         f"{tuple(coef.shape)} vs {tuple(log_a.shape)}")
    try:
        torch.broadcast_shapes(coef.shape, log_a.shape)
    except RuntimeError:
        raise ValueError(f"vandermonde: coef (..., H, N) and log_a (H, N) disagree on H (or another dim that must "
                         f"broadcast): {tuple(coef.shape)} vs {tuple(log_a.shape)}") from None
    path = backend.choose("vandermonde", coef, log_a, dtypes=backend.COMPLEX)
    # the fused kernel's layout: rows of coef (..., H, N) broadcast over log_a's H rows, and at least one row
    # (an input it cannot take must not reach attempt(), which would switch Triton off for the process)
    fits = log_a.dim() == 2 and coef.dim() >= 2 and coef.shape[-2] in (1, log_a.shape[0]) and coef.numel() > 0
    if path == "triton" and fits:
        out = backend.attempt("vandermonde", _vandermonde_triton, coef, log_a, L)
        if out is not None:
            return out
    return vandermonde_ref(coef, log_a, L) if path == "ref" else _vandermonde_torch(coef, log_a, L)


def _zoh_vandermonde_triton(dt: Tensor, A: Tensor, B: Tensor, C: Tensor, scale: int, L: int) -> Tensor:
    from ..ops.triton._launch import real_view
    from ..ops.triton.vandermonde import zoh_vandermonde_triton

    return zoh_vandermonde_triton(dt, real_view(A), real_view(B), real_view(C), scale, L)


def _zoh_vandermonde_pairs_torch(dt: Tensor, A: Tensor, B: Tensor, C: Tensor, scale: int, L: int) -> Tensor:
    """The PyTorch path on the arguments of the Triton ZOHVandermondeFn (A, B, C as the (..., 2) real pairs of
    :func:`_zoh_vandermonde_triton`): its twin, to which its backward falls back if its kernels fail."""
    cplx = torch.view_as_complex
    log_dA, coef = zoh_kernel_factors(dt, cplx(A), cplx(B), cplx(C), scale)
    return _vandermonde_torch(coef, log_dA, L)


backend.register_twin("ZOHVandermondeFn", _zoh_vandermonde_pairs_torch)


def zoh_vandermonde_ref(dt: Tensor, A: Tensor, B: Tensor, C: Tensor, scale: float, L: int) -> Tensor:
    r"""Reference twin of :func:`zoh_vandermonde`: :func:`~statespaces.discretize.zoh_kernel_factors`, then
    :func:`vandermonde_ref`; same arguments and result (thesis eq. 3.2 with the ZOH rule of eq. 2.4)."""
    log_dA, coef = zoh_kernel_factors(dt, A, B, C, scale)
    return vandermonde_ref(coef, log_dA, L)


def zoh_vandermonde(dt: Tensor, A: Tensor, B: Tensor, C: Tensor, scale: float, L: int) -> Tensor:
    r"""Kernel of a ZOH-discretized diagonal SSM (thesis eq. 3.2, app. A.1.4):
    ``K[k, h, l] = Re sum_m scale C[k, h, m] dB[h, m] exp(l dt[h] A[h, m])`` with ``dB = (e^{dt A} - 1)/A B``.

    The values of :func:`~statespaces.discretize.zoh_kernel_factors` followed by :func:`vandermonde`, which is
    the path everywhere but CUDA. On CUDA (fp32 / complex64, scale 1 or 2, Triton importable) the
    discretization runs inside the Vandermonde kernels (:func:`statespaces.ops.triton.vandermonde.
    zoh_vandermonde_triton`): one launch forward, two backward, instead of about fifty small ops whose
    dispatch, not their arithmetic, is the cost on a GPU (``benchmarks/host_census.py``).

    Args:
        dt: (H,) real step sizes. A: (H, M) complex eigenvalues. B: (H, M) complex input vector.
        C: (K, H, M) complex output vectors (K = 2 for a bidirectional layer). scale: 2 for conjugate pairs.
        L: number of lags.

    Returns:
        real (K, H, L).
    """
    L = check_length(L, "zoh_vandermonde: L")
    check_zoh_system("zoh_vandermonde", dt, A, B, C)
    path = backend.choose("zoh_vandermonde", dt, A, B, C, dtypes=(torch.float32, torch.complex64))
    if path == "triton" and float(scale) in (1.0, 2.0):
        out = backend.attempt("zoh_vandermonde", _zoh_vandermonde_triton, dt, A, B, C, int(scale), L)
        if out is not None:
            return out
    if path == "ref":
        return zoh_vandermonde_ref(dt, A, B, C, scale, L)
    log_dA, coef = zoh_kernel_factors(dt, A, B, C, scale)
    return vandermonde(coef, log_dA, L)


def vandermonde_transpose(u: Tensor, log_a: Tensor) -> Tensor:
    r"""Adjoint sum ``S_n = sum_l u_l exp(l * log_a_n)``: with ``u`` reversed, the state of the unrolled
    diagonal recurrence (thesis eq. 2.6, §3.2.1) after a chunk, up to the factor ``dB``.

    Args:
        u: real weights, shape (..., H, L).
        log_a: complex, shape (H, N).

    Returns:
        complex tensor (..., H, N).
    """
    check_real_float("vandermonde_transpose: u", u)
    if not isinstance(log_a, Tensor) or not (log_a.is_complex() or log_a.is_floating_point()):
        raise TypeError(f"vandermonde_transpose: log_a must be a complex (or real floating) tensor, got "
                        f"{getattr(log_a, 'dtype', type(log_a).__name__)}")
    if u.dim() < 2 or log_a.dim() != 2 or u.shape[-2] != log_a.shape[0] or u.shape[-1] < 1:
        raise ValueError(f"vandermonde_transpose: u must be (..., H, L>=1) and log_a (H, N) with the same H, got u "
                         f"{tuple(u.shape)}, log_a {tuple(log_a.shape)}")
    wide = torch.promote_types(u.dtype, log_a.real.dtype)          # mixed precisions: the sum in the wider one
    u = u.to(wide)
    if not log_a.is_complex():                                      # a real log_a: real eigenvalues
        log_a = torch.complex(log_a, torch.zeros_like(log_a))
    log_a = log_a.to(torch.promote_types(log_a.dtype, wide))
    L = u.shape[-1]
    J = _block(L)
    Q = -(-L // J)
    u = F.pad(u, (0, Q * J - L)).unflatten(-1, (Q, J))      # (..., H, Q, J)
    low = _powers(log_a, J, 1).transpose(-1, -2)             # (H, J, N)
    high = _powers(log_a, Q, J)                              # (H, N, Q)
    with autocast_off(u):                                    # complex assembly needs float32 parts
        inner = torch.complex(u @ low.real, u @ low.imag)    # (..., H, Q, N)
    return (inner * high.transpose(-1, -2)).sum(-2)
