r"""N-dimensional FFT convolution with separable (outer-product) kernels (thesis §9.3.1, app. I.1).

S4ND's kernel is a rank-1 tensor product of one 1-D kernel per axis (Cor. 9.3):
``K(t_1, ..., t_D) = k_1(t_1) k_2(t_2) ... k_D(t_D)``. The D-dimensional DFT of an outer product
is the outer product of the 1-D DFTs, so the convolution never needs the (H, L_1, ..., L_D)
kernel in space: each factor is transformed on its own axis (memory O(H Σ n_τ)) and the
spectra are multiplied into the input's spectrum by broadcasting.

Per-axis kernel layout (the :func:`statespaces.ops.fftconv.two_sided_kernel` convention):

* **causal axis**: factor of length L, lag ``j`` at index ``j`` (``y_t = Σ_{s<=t} k[t-s] u_s``);
* **two-sided axis**: factor of length 2L, circular: index ``j < L`` holds lag ``j`` (the
  causal half, lag 0 included) and index ``2L - m`` holds lag ``-m`` for ``m = 1..L`` (the
  anti-causal half), so ``y_t = Σ_s k[(t - s) mod 2L] u_s``.

Either way every axis is zero-padded to ``n_τ = 2 L_τ`` so the circular FFT convolution equals
the linear (non-circular) one (Prop. 2.9 per axis). :func:`direct_conv_nd` is the O((Π L)^2)
reference twin used by the tests.

:func:`toeplitz_conv_nd` computes the same linear convolution exactly, axis by axis, with one
dense (H, L_τ, L_τ) Toeplitz matrix per axis (rank-1 kernels are separable). Its cost is
O(B H Π L · Σ L_τ) multiply-adds done by batched matmul; on a CPU it beats the FFT for the small
grids of the image experiments (L <= 64), while the FFT (O(B H Π L · Σ log L)) wins for large
grids. Its extra memory is O(H Σ L_τ^2), still never O(H Π L_τ). :func:`conv_nd` dispatches.
"""
from __future__ import annotations

import itertools
from typing import Sequence

import torch

from .. import backend
from ._amp import amp_backward, autocast_forward

Tensor = torch.Tensor


def _check_factors(u: Tensor, factors: Sequence[Tensor], two_sided: Sequence[bool]) -> None:
    D = len(factors)
    if len(two_sided) != D:
        raise ValueError(f"two_sided has {len(two_sided)} entries for {D} kernel factors")
    if u.dim() < D + 1:
        raise ValueError(f"input of shape {tuple(u.shape)} has fewer than {D} spatial axes after the channel axis")
    H = u.shape[-D - 1]
    spatial = u.shape[-D:]
    for ax, (k, ts, L) in enumerate(zip(factors, two_sided, spatial)):
        want = 2 * L if ts else L
        if k.dim() != 2 or k.shape[0] != H or k.shape[1] < want:
            raise ValueError(
                f"factor {ax} must have shape (H={H}, {'2L' if ts else 'L'}>={want}) for axis length {L}, "
                f"got {tuple(k.shape)}"
            )


def fftconv_nd(u: Tensor, factors: Sequence[Tensor], two_sided: Sequence[bool]) -> Tensor:
    r"""Convolve every channel of ``u`` with the outer product of per-axis 1-D kernels (thesis Thm 9.2,
    Cor. 9.3; Prop. 2.9 per axis).

    Args:
        u: real input (..., H, L_1, ..., L_D), channels before the D spatial axes.
        factors: D real tensors; factor τ has shape (H, L_τ) for a causal axis or (H, 2L_τ) for
            a two-sided axis (layout in the module docstring; longer factors are truncated).
        two_sided: D booleans, which axes are two-sided.

    Returns:
        y: (..., H, L_1, ..., L_D), ``y[t] = Σ_s Π_τ k_τ(t_τ - s_τ) u[s]`` (linear, not circular).
    """
    D = len(factors)
    _check_factors(u, factors, two_sided)
    spatial = u.shape[-D:]
    n = [2 * L for L in spatial]
    dims = list(range(-D, 0))
    spec = torch.fft.rfftn(u, s=n, dim=dims)                       # (..., H, n_1, ..., n_D//2+1)
    for ax, (k, ts, L) in enumerate(zip(factors, two_sided, spatial)):
        k = k[:, : 2 * L] if ts else k[:, :L]
        last = ax == D - 1
        kf = torch.fft.rfft(k, n=n[ax]) if last else torch.fft.fft(k, n=n[ax])   # (H, n_τ')
        shape = [k.shape[0]] + [1] * D
        shape[1 + ax] = kf.shape[-1]
        spec = spec * kf.reshape(shape)
    y = torch.fft.irfftn(spec, s=n, dim=dims)
    index = (Ellipsis,) + tuple(slice(0, L) for L in spatial)
    return y[index]


def toeplitz_matrix(k: Tensor, L: int, two_sided: bool) -> Tensor:
    r"""Dense (H, L, L) matrix ``T[h, t, s] = k_h(t - s)`` of one axis factor (layout of :func:`fftconv_nd`):
    the convolution (thesis eq. 2.6-2.7) along one axis of Cor. 9.3 as a Toeplitz matrix; k (H, L or 2L)."""
    t = torch.arange(L, device=k.device)
    lag = t[:, None] - t[None, :]                                   # (L, L): t - s
    if two_sided:
        return k[:, lag % (2 * L)]
    T = k[:, lag.clamp(min=0)]
    return T * (lag >= 0).to(T.dtype)


class _BatchedMatmul(torch.autograd.Function):
    """``torch.bmm`` whose backward makes the incoming gradient contiguous first: the gradient that
    reaches it through ``movedim`` views is strided so that the CPU ``bmm`` falls back to a
    per-matrix loop (about 50x slower on the image sizes used here)."""

    @staticmethod
    @autocast_forward
    def forward(ctx, x: Tensor, w: Tensor) -> Tensor:
        ctx.save_for_backward(x, w)
        return torch.bmm(x, w)

    @staticmethod
    @amp_backward
    def backward(ctx, g: Tensor):
        x, w = ctx.saved_tensors
        g = g.contiguous()
        gx = torch.bmm(g, w.transpose(1, 2)) if ctx.needs_input_grad[0] else None
        gw = torch.bmm(x.transpose(1, 2), g) if ctx.needs_input_grad[1] else None
        return gx, gw


def toeplitz_conv_nd(u: Tensor, factors: Sequence[Tensor], two_sided: Sequence[bool]) -> Tensor:
    r"""Same result as :func:`fftconv_nd` (same arguments and shapes), by one Toeplitz matmul per axis: the
    separable kernel of thesis Cor. 9.3, the dense O(LK) route of Cor. 2.10 per axis."""
    D = len(factors)
    _check_factors(u, factors, two_sided)
    spatial = u.shape[-D:]
    h_dim = u.dim() - D - 1
    y = u.movedim(h_dim, 0)                                         # (H, ..., L_1, ..., L_D)
    for ax, (k, ts, L) in enumerate(zip(factors, two_sided, spatial)):
        T = toeplitz_matrix(k, L, ts).transpose(-1, -2).contiguous()   # (H, L_in, L_out)
        dim = y.dim() - D + ax
        z = y.movedim(dim, -1)
        shape = z.shape
        z = z.reshape(shape[0], -1, L)
        # (H, M, L) @ (H, L, L); backend "ref" (and torch.func transforms): plain torch.bmm, any derivative
        z = torch.bmm(z, T) if backend.get_backend() == "ref" else _BatchedMatmul.apply(z, T)
        y = z.reshape(shape).movedim(-1, dim)
    return y.movedim(0, h_dim)


#: Convolution methods of :func:`conv_nd`.
CONV_METHODS = ("fft", "toeplitz", "auto")


def conv_nd(u: Tensor, factors: Sequence[Tensor], two_sided: Sequence[bool], method: str = "fft") -> Tensor:
    r"""Separable N-D convolution by ``"fft"`` (:func:`fftconv_nd`), ``"toeplitz"``
    (:func:`toeplitz_conv_nd`) or ``"auto"`` (Toeplitz when every axis has L <= 64, else FFT). Shapes as
    :func:`fftconv_nd`; thesis §9.3.1, Cor. 9.3."""
    if method == "auto":
        method = "toeplitz" if max(u.shape[-len(factors):]) <= 64 else "fft"
    if method == "fft":
        return fftconv_nd(u, factors, two_sided)
    if method == "toeplitz":
        return toeplitz_conv_nd(u, factors, two_sided)
    raise ValueError(f"unknown convolution method {method!r}; valid choices are: {', '.join(CONV_METHODS)}")


def outer_kernel(factors: Sequence[Tensor]) -> Tensor:
    r"""Materialize the full kernel ``K[h, i_1, ..., i_D] = Π_τ factors[τ][h, i_τ]`` (H, n_1, ..., n_D): the
    rank-1 kernel of thesis Cor. 9.3.

    For inspection and tests only: the layer never builds it (memory O(H Π n_τ)).
    """
    K = factors[0]
    for k in factors[1:]:
        K = K.unsqueeze(-1) * k.reshape(k.shape[0], *([1] * (K.dim() - 1)), k.shape[-1])
    return K


def direct_conv_nd(u: Tensor, kernel: Tensor, two_sided: Sequence[bool]) -> Tensor:
    r"""Reference N-D convolution by its definition, O((Π L_τ)^2): loops over every output/input pair
    (``y = K * u`` of thesis Thm 9.2).

    Args:
        u: (B, H, L_1, ..., L_D).
        kernel: full kernel (H, n_1, ..., n_D) in the per-axis layout of :func:`fftconv_nd`
            (n_τ >= 2L_τ for two-sided axes, >= L_τ for causal ones).
        two_sided: D booleans.

    Returns:
        y: (B, H, L_1, ..., L_D) with ``y[t] = Σ_s K(t - s) u[s]``; a causal axis contributes 0 for
        negative lags, a two-sided axis looks lag ``d`` up at index ``d mod n_τ``.
    """
    D = len(two_sided)
    spatial = u.shape[2:]
    if len(spatial) != D or kernel.dim() != D + 1:
        raise ValueError("u must be (B, H, *spatial) and kernel (H, *n) with len(two_sided) spatial axes")
    y = torch.zeros_like(u, dtype=torch.promote_types(u.dtype, kernel.dtype))
    grid = [range(L) for L in spatial]
    for t in itertools.product(*grid):
        acc: Tensor | float = 0.0
        for s in itertools.product(*grid):
            idx = []
            for lag_t, lag_s, ts, n in zip(t, s, two_sided, kernel.shape[1:]):
                d = lag_t - lag_s
                if d < 0 and not ts:
                    break
                idx.append(d % n)
            else:
                acc = acc + kernel[(slice(None),) + tuple(idx)] * u[(slice(None), slice(None)) + s]
        y[(slice(None), slice(None)) + t] = acc
    return y
