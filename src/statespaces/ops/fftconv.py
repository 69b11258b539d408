r"""Causal (and two-sided) long convolution by FFT (thesis Prop. 2.8/2.9, Cor. 2.10).

``y_t = sum_{s<=t} k_{t-s} u_s`` costs O(L^2) directly; padding both sequences to length 2L
turns the circular FFT convolution into the linear one in O(L log L).

Forward and backward are one autograd node (:class:`_FFTConv`) with real FFTs only. Per call,
the (B, H)-sized transforms are: forward ``rfft(u)`` and one ``irfft``; backward ``rfft(dy)`` and
one ``irfft`` for ``du``. The kernel's spectrum is computed once in the forward and reused by the
backward, and the kernel gradient is a batch-summed spectrum followed by an (H)-sized ``irfft``.
Plain autograd would instead differentiate ``rfft`` with a zero-filled full-length complex FFT
(twice: for u and for k) and spend extra elementwise passes on the complex products. On CPU the
transforms run one batch entry and one cache-sized block of channel rows at a time, reading and
writing the (B, L, H) layout directly (:class:`_FFTConv`).
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F

from .. import backend
from .._checks import check_flag, tracing
from ._amp import amp_backward, autocast_off, fp32_forward, upcast_half

Tensor = torch.Tensor


def _fft_len(n: int) -> int:
    """Smallest FFT-friendly length >= n (a product of 2, 3 and 5), which pocketfft/cuFFT run fast."""
    if n < 1:
        raise ValueError(f"FFT length must be >= 1, got {n}")
    m = n
    while True:
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


def two_sided_kernel(k: Tensor, L: int) -> Tensor:
    r"""Merge a bidirectional kernel pair into one length-2L circular kernel (thesis §7.2.6:
    ``K_1 + reverse(K_2)``, one convolution instead of two; here ``K_2`` starts at lag -1, not 0).

    ``k`` has shape (2, H, L): ``k[0]`` acts causally (lags 0..L-1) and ``k[1]`` anti-causally
    on lags -1..-L, so ``y_t = sum_{s<=t} k0[t-s] u_s + sum_{s>t} k1[s-t-1] u_s``. Returns (H, 2L).
    """
    if k.dim() < 2 or k.shape[0] != 2 or k.shape[-1] != L:
        raise ValueError(f"two_sided_kernel: k must be (2, ..., L={L}) (causal and anti-causal halves of length L; "
                         f"fftconv trims or pads a kernel of another length), got {tuple(k.shape)}")
    return F.pad(k[0], (0, L)) + F.pad(k[1].flip(-1), (L, 0))


#: Bytes of one row group's buffers on the CPU path (:func:`_row_blocks`): about one core's L2
#: cache, so that the rfft, the spectral product and the irfft of a group work in cache.
GROUP_BYTES = 1 << 22


def _grouped(u: Tensor) -> bool:
    """Whether :class:`_FFTConv` runs row group by row group: CPU tensors in eager mode (not traced)."""
    return u.device.type == "cpu" and not tracing()


def _row_blocks(H: int, n: int, itemsize: int) -> List[slice]:
    """Slices of the H channel rows of a length-n transform, each about :data:`GROUP_BYTES` of padded
    input and spectrum (2 n items a row), at most H rows (the first slice sizes the zero-tailed buffer of
    :class:`_Padded`: uncapped, a short sequence of few channels zero-filled thousands of rows per call)."""
    rows = min(H, max(1, GROUP_BYTES // (2 * n * itemsize)))
    return [slice(h, h + rows) for h in range(0, H, rows)]


def _rows(u: Tensor, b: int) -> Tensor:
    """Batch entry b of u (B, L, H) as contiguous (H, L) rows; a 2-D transpose, which torch copies
    in cache blocks (several times faster than a strided 3-D transposing copy at large L)."""
    return u[b].t().contiguous()


class _Padded:
    """rfft of length n of row blocks of length L through one zero-tailed (rows, n) buffer: the copy of
    a block into its head replaces ``rfft(x, n=n)``'s allocate, zero-fill and copy per call."""

    def __init__(self, rows: int, L: int, n: int, like: Tensor) -> None:
        self.buf = torch.zeros(rows, n, dtype=like.dtype, device=like.device)
        self.L = L

    def rfft(self, x: Tensor) -> Tensor:
        buf = self.buf[: x.shape[0]]
        buf[:, : self.L] = x
        return torch.fft.rfft(buf)


def _grouped_conv(u: Tensor, K: Tensor, n: int, L: int, keep: Optional[Tensor] = None) -> Tensor:
    """``irfft(rfft(u, n) * K, n)[:L]`` along the L axis of u (B, L, H), K (H, n/2+1): one batch entry
    at a time, its rows in cache-sized blocks (:func:`_row_blocks`); y (B, L, H) contiguous. With
    ``keep`` (B, H, n/2+1) complex, ``conj(rfft(u, n))`` is written there too."""
    B, _, H = u.shape
    y = torch.empty(u.shape, dtype=u.dtype, device=u.device)
    blocks = _row_blocks(H, n, u.element_size())
    pad = _Padded(blocks[0].stop, L, n, u)
    for b in range(B):
        ub = _rows(u, b)
        for h in blocks:
            X = pad.rfft(ub[h])
            if keep is not None:                               # conj(X), saved for the kernel gradient
                torch.conj_physical(X, out=keep[b, h])
            _put_rows(y[b], h, torch.fft.irfft(X.mul_(K[h]), n=n), L)
    return y


def _put_rows(yb: Tensor, h: slice, rows: Tensor, L: int) -> None:
    """``yb[:, h] = rows[:, :L].T``: a row group's result, (rows, n) in cache, written transposed straight into
    its columns of the (L, H) output: no (H, L) staging buffer and no whole-entry transpose out of cache (the
    writes 10 vs 16 ms for B=8, L=8192, H=128 in isolation, one CPU thread; within the noise of a whole
    forward+backward, where the first touch of the fresh output pages dominates them)."""
    yb[:, h] = rows[:, :L].t()


class _FFTConv(torch.autograd.Function):
    r"""``y = (irfft(rfft(x, n) * rfft(k, n), n))[..., :L]`` per channel: circular convolution of length n
    of the zero-padded input u (B, L, H) (each (b, h) row) with the zero-padded kernel k (H, m), m <= n,
    truncated to L; y (B, L, H).

    Its adjoint is the circular correlation with the same spectra, so (with G = rfft(dy, n))
    ``dx = irfft(G * conj(K))[:L]`` and ``dk = irfft(sum_batch G * conj(X))[:m]``; exact, real, and
    with no wrap-around assumption beyond the forward's own.

    Two schedules of the same arithmetic (:func:`_grouped`): on CPU in eager mode, one batch entry at a
    time (a blocked 2-D transpose to (H, L) rows), its rows through rfft, product and irfft in blocks
    that stay in cache (:func:`_row_blocks`), written straight into the (B, L, H) result: no (B, H, n)
    real tensor is allocated and no strided 3-D transpose is copied (on one CPU thread such passes are
    memory bound, and a fresh large allocation page-faults); 1.2-1.5x faster forward+backward at B=8,
    H=128, L=8192 (``benchmarks/bench_peers.py``). On CUDA and while tracing, whole-tensor transforms.
    Both save ``conj(X)`` for the kernel gradient.
    """

    @staticmethod
    @fp32_forward
    def forward(ctx, u: Tensor, k: Tensor, n: int) -> Tensor:
        L, m = u.shape[1], k.shape[-1]
        K = torch.fft.rfft(k, n=n)
        ctx.n, ctx.L, ctx.m = n, L, m
        ctx.grouped = _grouped(u)
        if ctx.grouped:
            Xc = None                                          # conj(X) (B, H, n/2+1), for the kernel gradient
            if ctx.needs_input_grad[1]:
                Xc = torch.empty(u.shape[0], u.shape[2], n // 2 + 1, dtype=K.dtype, device=u.device)
            y = _grouped_conv(u, K, n, L, Xc)
            ctx.save_for_backward(Xc, K)
            return y
        X = torch.fft.rfft(u.transpose(1, 2), n=n)
        y = torch.empty(u.shape, dtype=u.dtype, device=u.device)   # returned itself: a view made inside a Function
        y.copy_(torch.fft.irfft(X * K, n=n)[..., :L].transpose(1, 2))   # could not be edited in place by the caller
        if ctx.needs_input_grad[1]:
            X.imag.neg_()                                      # keep conj(X), conjugated in place
        ctx.save_for_backward(X if ctx.needs_input_grad[1] else None, K)
        return y

    @staticmethod
    @backend.first_order
    @amp_backward
    def backward(ctx, dy: Tensor):
        saved, K = ctx.saved_tensors
        n, L, m = ctx.n, ctx.L, ctx.m
        need_u, need_k = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        du = dk = None
        Xc = saved
        if not ctx.grouped:
            G = torch.fft.rfft(dy.transpose(1, 2), n=n)
            ran, P = _spectral_fused(G, Xc if need_k else None, K, need_u)
            if not ran:                                                 # the same products in PyTorch
                P = (G * Xc).sum(0) if need_k else None                 # sum_b G conj(X)
                if need_u:
                    G.mul_(K.conj())                                    # G conj(K): G is not needed after
            if need_k:
                dk = torch.fft.irfft(P, n=n)[..., :m]
            if need_u:
                du = torch.fft.irfft(G, n=n)[..., :L].transpose(1, 2)
            return du, dk, None
        # CPU, eager: one batch entry and one cache-sized group of channel rows at a time (class notes)
        Kc = K.conj().resolve_conj()
        B, _, H = dy.shape
        dx = torch.empty(dy.shape if need_u else (0,), dtype=dy.dtype, device=dy.device)
        P = torch.zeros((H, n // 2 + 1) if need_k else (0,), dtype=K.dtype, device=dy.device)
        blocks = _row_blocks(H, n, dy.element_size())
        pad = _Padded(blocks[0].stop, L, n, dy)
        for b in range(B):
            gb = _rows(dy, b)
            for h in blocks:
                G = pad.rfft(gb[h])                                         # (rows, n/2+1)
                if need_k:
                    P[h].addcmul_(Xc[b, h], G)                                  # sum_b G conj(X)
                if need_u:
                    _put_rows(dx[b], h, torch.fft.irfft(G.mul_(Kc[h]), n=n), L)
        if need_k:
            dk = torch.fft.irfft(P, n=n)[..., :m]
        return (dx if need_u else None), dk, None


def _spectral_fused(G: Tensor, Xc: Optional[Tensor], K: Tensor, need_u: bool) -> Tuple[bool, Optional[Tensor]]:
    """The backward's two spectral products in one Triton pass (:mod:`statespaces.ops.triton.spectral`; op
    ``"fftconv_spectral"``, CUDA complex64): ``(True, P)`` with ``P = sum_b G conj(X)`` (None without ``Xc``) and
    ``G <- G conj(K)`` in place when ``need_u``; ``(False, None)`` where the PyTorch products run instead (other
    devices and dtypes; a kernel that fails warns once and falls back, G untouched)."""
    from .. import backend

    if (Xc is None and not need_u) or G.dtype != torch.complex64 or K.dtype != torch.complex64 \
            or backend.choose("fftconv_spectral", G, Xc, K, dtypes=backend.COMPLEX) != "triton":
        return False, None
    done = backend.attempt("fftconv_spectral", _spectral_triton, G, Xc, K, need_u)
    return (True, done[0]) if done is not None else (False, None)


def _spectral_triton(G: Tensor, Xc: Optional[Tensor], K: Tensor, need_u: bool) -> Tuple[Optional[Tensor]]:
    from .triton.spectral import spectral_backward_triton

    return (spectral_backward_triton(G, Xc, K, need_u),)                # a tuple: None is a result here


def fftconv_ref(u: Tensor, kc: Tensor, n: int) -> Tensor:
    """The reference twin of :func:`fftconv`'s circular product: ``irfft(rfft(u, n) rfft(kc, n), n)[:L]`` per channel,
    u (B, L, H), kc (H, m <= n), in plain differentiable torch ops (autograd's own backward, so derivatives of any
    order: the ``"ref"`` backend, :mod:`statespaces.backend`), float32 inside autocast. Thesis Prop. 2.8-2.9."""
    with autocast_off(u):
        u = upcast_half(u)
        K = torch.fft.rfft(kc.to(u.dtype), n=n)
        return torch.fft.irfft(torch.fft.rfft(u.transpose(1, 2), n=n) * K, n=n)[..., :u.shape[1]].transpose(1, 2)


def _real_pair(u: Tensor, k: Tensor) -> Tuple[Tensor, Tensor]:
    """u and k as real floating tensors, k in u's dtype (the result's): integer or bool inputs were convolved in
    integers (truncated), complex ones failed inside the FFT, and mixed precisions failed in the backward. Half
    precision is taken under torch.autocast (computed in float32 there) and refused outside it."""
    for name, t in (("u", u), ("k", k)):
        if not isinstance(t, Tensor) or t.is_complex() or not t.is_floating_point():
            raise TypeError(f"fftconv: {name} must be a real floating-point tensor, got "
                            f"{getattr(t, 'dtype', type(t).__name__)}")
    half = (torch.float16, torch.bfloat16)
    if u.dtype in half and not torch.is_autocast_enabled(u.device.type):
        raise TypeError(f"fftconv: u is {u.dtype}; the FFT runs in float32 or float64: cast u (u.float()) or call "
                        "it under torch.autocast, which computes in float32")
    if k.dtype != u.dtype and u.dtype not in half:
        k = k.to(u.dtype)                      # differentiable: k's gradient comes back in its own dtype
    return u, k


def fftconv(u: Tensor, k: Tensor, bidirectional: bool = False) -> Tensor:
    r"""Convolve each channel of ``u`` with its kernel.

    Args:
        u: input (B, L, H), real.
        k: kernel (H, Lk) with Lk >= 1 (truncated/zero-padded to L), or (2, H, Lk) when
            ``bidirectional`` (see :func:`two_sided_kernel`; also truncated/zero-padded to L).
        bidirectional: use the two-sided kernel.

    Returns:
        y: (B, L, H), same dtype as ``u``.
    """
    u, k = _real_pair(u, k)
    bidirectional = check_flag("bidirectional", bidirectional)
    want = (2, u.shape[-1]) if bidirectional else (u.shape[-1],)
    if u.dim() != 3 or k.dim() != len(want) + 1 or tuple(k.shape[:-1]) != want or k.shape[-1] < 1 or u.shape[1] < 1 \
            or u.shape[2] < 1:
        shape = "(2, H, Lk)" if bidirectional else "(H, Lk)"
        raise ValueError(f"fftconv: u must be (B, L, H) with L, H >= 1 and k {shape} with Lk >= 1; "
                         f"got u {tuple(u.shape)}, k {tuple(k.shape)}")
    L = u.shape[1]
    if bidirectional:
        n = 2 * L
        kb = k[..., :L]
        if kb.shape[-1] < L:         # a shorter pair: zero taps beyond it (two_sided_kernel places by length L)
            kb = F.pad(kb, (0, L - kb.shape[-1]))
        kc = two_sided_kernel(kb, L)
    else:
        kc = k[..., :L]
        n = _fft_len(L + kc.shape[-1])
    if backend.get_backend() == "ref":
        return fftconv_ref(u, kc, n)
    if torch.is_grad_enabled() and (u.requires_grad or k.requires_grad):
        return _FFTConv.apply(u, kc, n)
    with autocast_off(u):                                      # as _FFTConv: float32 inside autocast
        K = torch.fft.rfft(kc, n=n)
        if _grouped(u):
            return _grouped_conv(u, K, n, L)
        return torch.fft.irfft(torch.fft.rfft(u.transpose(1, 2), n=n) * K, n=n)[..., :L].transpose(1, 2)
