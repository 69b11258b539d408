r"""The backward spectral products of the FFT convolution (:class:`statespaces.ops.fftconv._FFTConv`) in one pass.

With ``G = rfft(dy)`` (B, H, F), the saved ``conj(X) = conj(rfft(u))`` (B, H, F) and the kernel spectrum K (H, F),
the backward needs ``G conj(K)`` (for du, by one irfft) and ``P = sum_b G conj(X)`` (for the kernel gradient, by
one more). In PyTorch that is three elementwise passes and a (B, H, F) temporary (``G * Xc``, its batch sum,
``G.mul_(Kc)``) plus the conjugate copy of K; here one program per (channel, block of frequencies) reads G and
``conj(X)`` once, writes ``G conj(K)`` over G and accumulates P over the batch in registers (thesis Prop. 2.8: the
adjoint of a circular convolution is the circular correlation with the same spectra). Complex tensors are read as
their (..., 2) real views; fp32 arithmetic, as the transforms around it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional

import torch
import triton
import triton.language as tl

from ._launch import make, real_view, signature, unique

if TYPE_CHECKING:
    from ._launch import Config

Tensor = torch.Tensor

__all__ = ["spectral_backward_triton", "configs"]

#: frequencies per program
BLOCK_F = 256

_SIG = signature("*fp32", ["g_ptr", "xc_ptr", "k_ptr", "p_ptr"], ["B", "H", "F"])


def _config(need_u: bool, need_k: bool):
    return make(__name__, _spectral_bwd_kernel, _SIG, num_warps=4, BLOCK_F=BLOCK_F, NEED_U=need_u, NEED_K=need_k)


def configs() -> List["Config"]:
    """Every launch configuration: du wanted or not, the kernel gradient wanted or not (at least one)."""
    return unique([_config(u, k) for u in (False, True) for k in (False, True) if u or k])


@triton.jit
def _spectral_bwd_kernel(g_ptr, xc_ptr, k_ptr, p_ptr, B, H, F,
                         BLOCK_F: tl.constexpr, NEED_U: tl.constexpr, NEED_K: tl.constexpr):
    h = tl.program_id(0).to(tl.int64)
    f = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    m = f < F
    ko = (h * F + f) * 2
    kr = tl.load(k_ptr + ko, mask=m, other=0.0)
    ki = tl.load(k_ptr + ko + 1, mask=m, other=0.0)
    pr = tl.zeros([BLOCK_F], tl.float32)
    pi = tl.zeros([BLOCK_F], tl.float32)
    for b in range(B):
        o = ((b * H + h) * F + f) * 2
        gr = tl.load(g_ptr + o, mask=m, other=0.0)
        gi = tl.load(g_ptr + o + 1, mask=m, other=0.0)
        if NEED_K:                                                     # P += G conj(X)
            xr = tl.load(xc_ptr + o, mask=m, other=0.0)
            xi = tl.load(xc_ptr + o + 1, mask=m, other=0.0)
            pr += gr * xr - gi * xi
            pi += gr * xi + gi * xr
        if NEED_U:                                                     # G <- G conj(K)
            tl.store(g_ptr + o, gr * kr + gi * ki, mask=m)
            tl.store(g_ptr + o + 1, gi * kr - gr * ki, mask=m)
    if NEED_K:
        tl.store(p_ptr + ko, pr, mask=m)
        tl.store(p_ptr + ko + 1, pi, mask=m)


def spectral_backward_triton(G: Tensor, Xc: Optional[Tensor], K: Tensor, need_u: bool) -> Optional[Tensor]:
    r"""``G <- G conj(K)`` in place (if ``need_u``) and ``P = sum_b G conj(X)`` (returned, if ``Xc`` is given), in
    one pass.

    Args:
        G: (B, H, F) complex64, contiguous: the spectrum of the output gradient (overwritten when ``need_u``).
        Xc: (B, H, F) complex64 ``conj(rfft(u))``, or None (no kernel gradient).
        K: (H, F) complex64, the kernel spectrum (not conjugated).

    Returns:
        P (H, F) complex64, or None without ``Xc``.
    """
    if G.dim() != 3 or G.dtype != torch.complex64 or K.dtype != torch.complex64 or K.shape != G.shape[1:] \
            or not G.is_contiguous() \
            or (Xc is not None and (Xc.shape != G.shape or Xc.dtype != torch.complex64)):
        raise ValueError(f"spectral_backward_triton: needs contiguous complex64 G (B, H, F), Xc like G or None, and "
                         f"K (H, F); got G {G.dtype} {tuple(G.shape)}, K {K.dtype} {tuple(K.shape)}, "
                         f"Xc {None if Xc is None else (Xc.dtype, tuple(Xc.shape))}")
    Bsz, H, F = G.shape
    need_k = Xc is not None
    if not (need_u or need_k):
        return None
    g = torch.view_as_real(G)
    k = real_view(K)
    xc = g if Xc is None else real_view(Xc)
    P = torch.empty(H, F, dtype=torch.complex64, device=G.device) if need_k else None
    p = torch.view_as_real(P) if P is not None else g
    _config(need_u, need_k).launch((H, triton.cdiv(F, BLOCK_F)), g, xc, k, p, Bsz, H, F)
    return P
