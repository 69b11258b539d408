r"""Chunked convolution of a time-invariant SSM: exact near-field taps plus a state carried between
chunks (state-space duality specialised to LTI systems; thesis §2.3.2-2.3.3, Prop. 2.8).

An SSM with per-channel state ``x_t = A x_{t-1} + b u_t``, ``y_t = c^T x_t (+ D u_t)`` is the causal
convolution ``y = k * u`` with ``k_l = c^T A^l b`` (eq. 2.6). Cut the sequence into chunks of T steps
(the last one may be partial). Within chunk j (local time t < T)

    y[j, t] = sum_{s<=t} k_{t-s} u[j, s]                  (near field: a T x T Toeplitz product)
            + c^T A^{t+1} x_{j-1}                          (far field: the past, through the state)
    x_j     = A^T x_{j-1} + sum_{t<T} A^{T-1-t} b u[j, t]  (state at the chunk boundary)

with ``x_{-1}`` the initial state. Nothing is truncated: the result equals the full convolution
(tested against :func:`statespaces.ops.fftconv.fftconv` and the explicit recurrence in float64).
Per step and channel the work is T (Toeplitz) + 2 S (state in and out) multiply-adds for a real
state of size S, done as three batched matmuls over the channels; the chunk-to-chunk carry is
``ceil(L / T)`` small elementwise updates of (B, H, S) (for one 2x2 block per channel, as LinOSS has, a blocked
scan, :func:`scan_rows`: a dense product per block of chunks and ``ceil(L / (T K))`` sequential steps).
Against the FFT route (O(L log L), with ~10 passes over the (B, H, 2L) padded tensor) this wins on CPU
for moderate S, and reads the input in its (B, L, H) layout without any length-2L buffer.
A non-finite input value makes every output of its chunk non-finite, the earlier steps included (the
Toeplitz product multiplies it by the zeros above the diagonal: inf * 0 = NaN), where a step-by-step
recurrence would spoil only the later ones; the layers refuse non-finite inputs before they get here.

The algorithm itself (:func:`chunked_conv`) takes five small per-channel tables
(:class:`ChunkTables`) and a real state made of 2-vectors, so one code serves

* diagonal SSMs (S4D, diagonalised S4): each complex mode ``a`` is the 2x2 real block
  ``[[Re a, -Im a], [Im a, Re a]]`` acting on ``(Re x, Im x)`` -- :func:`diagonal_tables`,
  :func:`chunked_conv_diagonal`;
* LinOSS: each oscillator is a real 2x2 block on ``(velocity, position)`` (no diagonalisation, so
  the double eigenvalue at A = 0 is no problem) -- built by :mod:`statespaces.layers.linoss`.

:func:`chunked_conv_diagonal_ref` is the reference twin: the explicit complex recurrence, one step
at a time (readable, slow).
"""
from __future__ import annotations

import numbers
from typing import NamedTuple, Optional, Tuple, Union, cast

import torch
import torch.nn.functional as F

from .. import backend
from ..ops._amp import autocast_off
from .vandermonde import _powers, exp_scaled

Tensor = torch.Tensor

__all__ = ["CARRY_BLOCK", "CHUNK", "WIDE_STATE_CHUNK", "WIDE_STATE_LENGTH", "ChunkTables", "block_tables",
           "carry_adjoint", "carry_rows", "carry_rows_adjoint", "carry_states", "chunk_length", "chunked_conv",
           "chunked_conv_diagonal", "chunked_conv_diagonal_ref", "chunked_conv_torch", "diagonal_tables",
           "prefer_chunked", "prefer_power_kernel", "scan_rows"]

#: Default chunk length T (steps). 64 balances the Toeplitz product (T per step) against the
#: state in/out products (2 S per step) for S4D's S = 64 real state entries (32 complex modes).
CHUNK = 64
#: Chunk length of :func:`chunked_conv_diagonal` on the PyTorch path for sequences of at least
#: :data:`WIDE_STATE_LENGTH` steps with at least 64 real state entries (N >= 64). The chunk-boundary states are
#: B H (L/T) S entries, kept in float32 and float64 copies, and the carry between chunks runs over L/T of them: at
#: long L a fixed T = 64 let them outgrow the (B, L, H) input (N = 256, B=8, H=64, L=8192: T = 64 836 MB, T = 128
#: 476 MB, T = 256 332 MB) and cost time, while at short L the T^2 Toeplitz products dominate. Stateful
#: forward+backward, B=8, H=128, one CPU thread, 2026-12-07, time with T = 128 over time with T = 64 (medians of 5,
#: the two alternated in one process; ``/tmp`` script): N = 64: 2.06 (L = 256), 1.23 (1024), 0.89 (2048), 0.81
#: (4096), 0.77 (8192); N = 128: 0.80 (2048), 0.63 (4096); N = 256: 1.91, 1.05, 0.81, 0.71, 0.69; N = 16: 1.99,
#: 1.38, -, 1.02, 1.01 (kept at 64).
WIDE_STATE_CHUNK = 128
#: The shortest sequence that takes :data:`WIDE_STATE_CHUNK` (with N >= 64; see there).
WIDE_STATE_LENGTH = 2048


#: Chunk length on the Triton path (the kernel's register budget: see :mod:`statespaces.ops.triton.chunked_conv`).
TRITON_CHUNK = 32


def chunk_length(L: int, chunk: Optional[int] = None, u: Optional[Tensor] = None, state_size: int = 0) -> int:
    """The chunk length used for a sequence of length L: ``min(chunk, L)`` (>= 1); by default
    :data:`CHUNK`, :data:`WIDE_STATE_CHUNK` for at least 64 real state entries (``state_size``) and
    :data:`WIDE_STATE_LENGTH` steps, or :data:`TRITON_CHUNK` when ``u`` would take the Triton path."""
    if chunk is None:
        triton = u is not None and backend.choose("chunked_conv", u, dtypes=backend.REAL) == "triton"
        wide = state_size >= 64 and L >= WIDE_STATE_LENGTH
        chunk = TRITON_CHUNK if triton else WIDE_STATE_CHUNK if wide else CHUNK
    T = chunk
    if isinstance(T, bool) or not isinstance(T, numbers.Integral) or T < 1:     # NumPy integers are integers
        raise ValueError(f"chunk must be a positive integer (steps per chunk), got {chunk!r}")
    return max(1, min(int(T), L))


def prefer_chunked(u: Tensor, stateful: bool, modes: Optional[int] = None, dense: bool = False) -> bool:
    r"""The rule by which a layer's forward picks the chunked convolution over the FFT (one place).

    * CPU (backend ``"torch"``/``"auto"``): chunked for a stateful call (``state=`` or
      ``return_state``), where the FFT route needs two more batched Vandermonde sums (zero-input
      response and state advance): 1.0-1.7x faster than it at B=8, H=128, N=64, L=256..8192, fwd and
      fwd+bwd (three runs on a loaded 2-core machine). Stateless calls keep the FFT, 1.2-6x faster on
      one CPU thread (pocketfft against ~192 multiply-adds per step in small batched matmuls).
      Figures: ``benchmarks/bench_chunked.py``.
    * CUDA float32 with the Triton kernels available: chunked for stateful calls only (Triton forward and
      backward, :mod:`statespaces.ops.triton.chunked_conv`; against the FFT plus two state sums: not yet
      measured). Stateless calls, training and inference, keep the FFT route (S4D) or the layer's own fused
      scan (LinOSS). Measured on an H200 (torch 2.11, Triton 3.6; ``benchmarks/gpu_check.py``,
      H=256, N=64, fp32): S4D fwd+bwd 12.3 ms chunked vs 5.6 ms FFT at B=16, L=4096 and 11.3 vs 6.0 ms at B=1,
      L=65,536; forward 6.5 vs 2.1 ms. The chunked kernels themselves took 7.1 ms of GPU time per fwd+bwd at
      B=16, L=4096, against 1.8 ms for every kernel of the FFT route: their per-chunk products are slower than
      the FFTs at these sizes (the prediction of "one pass over u and y" did not hold).
    * ``dense`` (S4 through its real dense transition, :func:`statespaces.kernels.chunked.chunked_conv_dense`).
      CUDA float32 with the Triton kernels available (:mod:`statespaces.ops.triton.chunked_dense`, forward
      and backward): every call whose state fits them, ``modes`` = N (None: unknown, so the FFT) at most
      :data:`~statespaces.ops.triton.chunked_dense.MAX_N`; predicted (one pass over u and y per direction,
      four tensor-core products per chunk of 32 steps, against the Cauchy sums plus ~64 passes of the FFT
      route), not measured: no GPU in the session that wrote it (``benchmarks/gpu_check.py`` times both).
      CPU: stateful calls, at every L. One thread, B=8, H=128, N=64, against the Cauchy/FFT route with its
      two state maps: 3.5-4.0x forward, 2.5-4x forward+backward at L=1024 and 4096 (loaded 2-core machine;
      ``benchmarks/bench_chunked.py``). Stateless CPU calls take the FFT, with the kernel by dense powers
      (:func:`prefer_power_kernel`): 1.3x (L=1024) to 2.4x (L=4096) faster than this chunked form
      forward+backward, 1.1-1.3x without autograd (loaded machine, one run).
    * backend ``"ref"``: never (the FFT route with its reference twins).
    """
    if dense:
        if backend.get_backend() == "ref":
            return False
        if backend.choose("chunked_conv_dense", u, dtypes=backend.REAL) == "triton":
            from ..ops.triton.chunked_dense import MAX_N

            return modes is not None and modes <= MAX_N
        return stateful and u.device.type == "cpu"
    path = backend.choose("chunked_conv", u, dtypes=backend.REAL)
    if path == "triton":
        return stateful
    return path == "torch" and stateful and u.device.type == "cpu"


def prefer_power_kernel(u: Tensor) -> bool:
    r"""Whether a stateless FFT forward of S4 (learning C; causal or bidirectional) takes its kernel from the real
    dense powers (:func:`statespaces.kernels.chunked.power_kernel`: a few batched (N, N) squarings, then row
    products) instead of the Cauchy route of Algorithm 1 (:func:`statespaces.kernels.dplr.dplr_kernel`): on CPU
    (backend ``"torch"``/``"auto"``). One thread, B=8, H=128, N=64, layer forward+backward 1.5x (L=1024) to 1.8x
    (L=8192) faster when it was introduced (loaded 2-core machine, one run); bidirectional since 2026-12-06, 155 ->
    73 ms at L=1024. Elsewhere (CUDA, backend ``"ref"``) the Cauchy kernel.

    Precision trade-off in float32: the dense powers of the non-normal dA amplify the rounding of its float32
    Woodbury form, so this route is less accurate than the Cauchy one. Re-measured on 2026-12-06 (an audit could
    not reproduce the first figures, whose metric was not recorded): the layer's impulse response, H=32, N=64,
    L=1024, seed 0, against the float64 layer, by ``||y32 - y64|| / ||y64||`` (and the worst channel's
    ``max |y32 - y64| / max |y64|``): LegS 3.9e-6 vs 3.1e-6 (5.6e-6 vs 2.0e-6), LegT 3.9e-6 vs 1.3e-6 (9.9e-6 vs
    2.5e-6), FouT 9.6e-6 vs 2.9e-6 (1.0e-5 vs 3.4e-6) at rate 1; at rate 0.5 LegT 6.1e-6 vs 1.1e-6 (2.2e-5 vs
    2.0e-6), FouT 9.7e-6 vs 2.6e-6 (1.5e-5 vs 3.3e-6): 1.3-5.5x by norm, up to 11x on the worst channel. Forming
    dA in float64 and rounding once made the layer's fwd+bwd 6% slower (B=8, H=128, L=1024: 72.6-74.7 vs
    68.7-70.1 ms); not taken. For float32 kernels as accurate as Algorithm 1's, use backend ``"ref"`` or a float64
    layer."""
    return u.device.type == "cpu" and backend.get_backend() != "ref"


class ChunkTables(NamedTuple):
    r"""Per-channel tables of one SSM for chunks of T steps; the real state has S = 2 M entries,
    M blocks of 2 (``x.view(..., M, 2)``).

    * ``taps`` (H, T): ``k_l = c^T A^l b`` for l < T (a skip ``D`` folded into ``k_0``);
    * ``w_in`` (H, T, S): ``A^{T-1-t} b`` -- the chunk-boundary state is ``sum_t w_in[t] u_t``;
    * ``w_out`` (H, T, S): ``(c^T A^{t+1})`` -- the far-field output at step t of a chunk is ``w_out[t] . x``;
    * ``pow_T`` (H, M, 2, 2): ``A^T`` as M blocks of 2x2;
    * ``pow_r`` (H, M, 2, 2): ``A^r``, r the number of steps of the last chunk (for the final state).
    """

    taps: Tensor
    w_in: Tensor
    w_out: Tensor
    pow_T: Tensor
    pow_r: Tensor


def _apply_blocks(G: Tensor, x: Tensor) -> Tensor:
    """``G x`` for 2x2 blocks G (H, M, 2, 2) and states x (H, B, M, 2)."""
    G = G.unsqueeze(1)
    return G[..., 0] * x[..., 0:1] + G[..., 1] * x[..., 1:2]


def _step_blocks(G: Tensor, x: Tensor, out: Tensor) -> None:
    """``out += G x`` for 2x2 blocks G (H, M, 2, 2) and states x, out (H, B, M, 2). With one block per channel
    (M = 1, LinOSS) one batched matmul ``out += x G^T`` over the H channels (a quarter of the small ops of the
    elementwise form, which costs ~4 us each per chunk on one CPU thread); else elementwise."""
    H, B, M, _ = x.shape
    if M == 1:
        o = out.view(H, B, 2)
        o.baddbmm_(x.view(H, B, 2), G.reshape(H, 2, 2).transpose(-1, -2))
    else:
        out += _apply_blocks(G, x)


def carry_states(G: Tensor, s: Tensor, x0: Optional[Tensor] = None) -> Tensor:
    r"""States before each chunk, ``X_0 = x0``, ``X_j = G X_{j-1} + s_{j-1}`` (j < n), chunk index first.

    Args:
        G: 2x2 blocks ``A^T`` (H, M, 2, 2). s: chunk sums (n, H, B, M, 2), contiguous. x0: (H, B, M, 2) or
            None (zeros).

    Returns:
        X (n, H, B, M, 2), a new tensor in the dtype of s (no autograd: :class:`_CarryScan` and
        :mod:`statespaces.kernels.chunked_projected` wrap it with :func:`carry_adjoint`).
    """
    X = torch.empty_like(s)
    if x0 is None:
        X[0].zero_()
    else:
        X[0] = x0
    X[1:] = s[:-1]
    for j in range(1, s.shape[0]):
        _step_blocks(G, X[j - 1], X[j])
    return X


def carry_adjoint(G: Tensor, X: Tensor, dX: Tensor, need_dG: bool = True) -> Tuple[Tensor, Optional[Tensor], Tensor]:
    r"""Adjoint of :func:`carry_states`: ``lam_{n-1} = dX_{n-1}``, ``lam_{j-1} = dX_{j-1} + G^T lam_j``,
    ``ds_{j-1} = lam_j`` (``ds_{n-1} = 0``), ``dx0 = lam_0``, ``dG = sum_{b, j>=1} lam_j X_{j-1}^T`` (one reduction).

    Args:
        G (H, M, 2, 2); X (n, H, B, M, 2) from :func:`carry_states`; dX (n, H, B, M, 2), contiguous, overwritten
        with lam. need_dG: compute dG (else None).

    Returns:
        ``(ds, dG, dx0)``: ds (n, H, B, M, 2) (a view of the padded lam), dG (H, M, 2, 2) or None, dx0 (H, B, M, 2).
    """
    lam = dX
    Gt = G.transpose(-1, -2)
    for j in range(lam.shape[0] - 1, 0, -1):
        _step_blocks(Gt, lam[j], lam[j - 1])
    ds = F.pad(lam[1:], (0, 0, 0, 0, 0, 0, 0, 0, 0, 1))                  # ds_{j-1} = lam_j; s_{n-1} unused
    dG = None
    if need_dG:                 # one bmm over the (h, m) blocks (torch.einsum took 3x longer on CPU here)
        n, H, B, M, _ = X.shape
        lt = lam[1:].permute(1, 3, 4, 0, 2).reshape(H * M, 2, (n - 1) * B)
        dG = torch.bmm(lt, X[:-1].permute(1, 3, 0, 2, 4).reshape(H * M, (n - 1) * B, 2)).view(H, M, 2, 2)
    return ds, dG, lam[0]


#: Chunks per block of :func:`scan_rows`: one dense (2 K, 2 K) product per block of K chunks replaces K of the
#: sequential steps (each a small batched matmul of ~10 us on one CPU thread, whatever its size). 8 was the fastest
#: of 4, 8, 16, 32 at n = 256 chunks and level with 4 at n = 32 (H = 128, B = 8, float64, one CPU thread).
CARRY_BLOCK = 8


def scan_rows(A: Tensor, s: Tensor, reverse: bool = False, block: int = CARRY_BLOCK) -> Tensor:
    r"""The linear scan ``Z_j = A Z_{j-1} + s_j`` (``Z_{-1} = 0``), or with ``reverse`` ``Z_j = A Z_{j+1} + s_j``
    (``Z_n = 0``), for one 2x2 block per row, in the chunk-row layout: A (H, 2, 2), s (H, B, n, 2) -> Z (H, B, n, 2),
    a new tensor in the dtype of s.

    Blocked, so that the sequential part is n / K steps instead of n: within each block of K chunks the scan from
    zero is one product with the (2K, 2K) block-Toeplitz matrix of the powers ``A^0 .. A^{K-1}`` (row form:
    ``Z_i^T = sum_{l <= i} s_l^T (A^{i-l})^T``); the states between blocks are carried by ``A^K`` in a loop of
    ``ceil(n / K) - 1`` steps; each block then adds its entering state through ``A^{i+1}`` (``A^{K-i}`` reversed) in
    one more product. Equal to the step-by-step loop up to rounding (tested in float64 against it); the powers are
    formed in the dtype of A by repeated products. The chunk carry of thesis §2.3.3.
    """
    if A.dim() != 3 or A.shape[1:] != (2, 2) or s.dim() != 4 or s.shape[-1] != 2 or s.shape[0] != A.shape[0] \
            or s.shape[2] < 1:
        raise ValueError(f"scan_rows: expected A (H, 2, 2) and s (H, B, n >= 1, 2) with the same H, got A "
                         f"{tuple(A.shape)} and s {tuple(s.shape)}")
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise ValueError(f"scan_rows: block must be a positive integer (chunks per block), got {block!r}")
    H, B, n, _ = s.shape
    k = max(1, min(block, n))
    q = -(-n // k)
    sp = (s if q * k == n else F.pad(s, (0, 0, 0, q * k - n))).contiguous()   # zero steps past the end
    P = [torch.eye(2, dtype=A.dtype, device=A.device).expand(H, 2, 2)]
    for _ in range(k):
        P.append(torch.bmm(A, P[-1]))
    Pt = torch.stack(P, 1).transpose(-1, -2).to(s.dtype)                       # (H, k + 1, 2, 2): (A^i)^T
    # block (l, i) of the local matrix: (A^{i-l})^T for i >= l, else 0 (transposed blockwise when reversed):
    # windows of the powers left-padded with k - 1 zero blocks, as _toeplitz builds its scalar Toeplitz matrix
    W = F.pad(Pt[:, :k], (0, 0, 0, 0, k - 1, 0)).unfold(1, k, 1).flip(1).permute(0, 1, 4, 2, 3)   # (H, l, i, 2, 2)
    if reverse:
        W = W.transpose(1, 2)
    Z = torch.bmm(sp.view(H, B * q, 2 * k), W.permute(0, 1, 3, 2, 4).reshape(H, 2 * k, 2 * k))
    if q > 1:
        Zb = Z.view(H, B, q, k, 2)
        exit_ = (Zb[:, :, :, 0] if reverse else Zb[:, :, :, -1]).permute(2, 0, 1, 3).contiguous()   # (q, H, B, 2)
        Y = torch.zeros_like(exit_)                                             # state entering each block
        order = range(q - 2, -1, -1) if reverse else range(1, q)
        for p in order:
            src = p + 1 if reverse else p - 1
            torch.baddbmm(exit_[src], Y[src], Pt[:, k], out=Y[p])
        w = Pt[:, 1:].flip(1) if reverse else Pt[:, 1:]                        # block i: (A^{K-i})^T or (A^{i+1})^T
        Z.baddbmm_(Y.permute(1, 2, 0, 3).reshape(H, B * q, 2), w.permute(0, 2, 1, 3).reshape(H, 2, 2 * k))
    Z = Z.view(H, B, q * k, 2)
    return Z if q * k == n else Z[:, :, :n].contiguous()


def carry_rows(G: Tensor, s: Tensor, x0: Optional[Tensor] = None, dtype: Optional[torch.dtype] = None) -> Tensor:
    r""":func:`carry_states` in the chunk-row layout of the chunk products: G (H, M, 2, 2), chunk sums
    s (H, B, n, M, 2), x0 (H, B, M, 2) or None (zeros) -> X (H, B, n, M, 2) in ``dtype`` (default the dtype of s),
    ``X_0 = x0``, ``X_j = G X_{j-1} + s_{j-1}`` (the states before each chunk, thesis §2.3.3).

    One block per channel (M = 1, LinOSS): blocked by :func:`scan_rows`, in this layout, with no transposes of
    (B n)-sized tensors (the chunk-first loop costs four of them per forward+backward), contiguous. M > 1: the
    chunk-first loop :func:`carry_states` (one elementwise step per chunk), returned as a view in this layout."""
    if s.dim() != 5 or s.shape[-1] != 2 or s.shape[2] < 1 or G.shape != (s.shape[0], s.shape[3], 2, 2) or (
            x0 is not None and x0.shape != (s.shape[0], s.shape[1], s.shape[3], 2)):
        raise ValueError(f"carry_rows: expected G (H, M, 2, 2), s (H, B, n >= 1, M, 2) and x0 (H, B, M, 2) or None, "
                         f"got G {tuple(G.shape)}, s {tuple(s.shape)}, x0 {None if x0 is None else tuple(x0.shape)}")
    H, B, n, M, _ = s.shape
    wide = dtype or s.dtype
    if M > 1:
        sc = torch.empty(n, H, B, M, 2, dtype=wide, device=s.device).copy_(s.movedim(2, 0))   # contiguous steps
        return carry_states(G, sc, None if x0 is None else x0.to(wide)).movedim(0, 2)
    sp = torch.empty(H, B, n, 2, dtype=wide, device=s.device)
    if x0 is None:
        sp[:, :, 0].zero_()
    else:
        sp[:, :, 0] = x0.reshape(H, B, 2)
    sp[:, :, 1:] = s[:, :, :-1, 0]                                             # shifted and converted in one copy
    return scan_rows(G.reshape(H, 2, 2).to(wide), sp).view(H, B, n, 1, 2)


def carry_rows_adjoint(G: Tensor, X: Tensor, dX: Tensor,
                       need_dG: bool = True) -> Tuple[Tensor, Optional[Tensor], Tensor]:
    r"""Adjoint of :func:`carry_rows` (as :func:`carry_adjoint` is of :func:`carry_states`): G (H, M, 2, 2), X as
    :func:`carry_rows` returned it and dX, (H, B, n, M, 2) -> ``(ds, dG, dx0)``: ds (H, B, n, M, 2) with
    ``ds_{j-1} = lam_j``, ``ds_{n-1} = 0``, where ``lam_j = dX_j + G^T lam_{j+1}``; dG (H, M, 2, 2)
    ``= sum_{b, j} ds_j X_j^T`` or None; dx0 = lam_0 (H, B, M, 2). dX is not modified.

    M = 1: :func:`scan_rows` reversed, dG one bmm. M > 1: :func:`carry_adjoint` on a chunk-first copy of dX (X is
    the view :func:`carry_rows` made of its chunk-first states)."""
    if X.dim() != 5 or X.shape[-1] != 2 or dX.shape != X.shape or G.shape != (X.shape[0], X.shape[3], 2, 2):
        raise ValueError(f"carry_rows_adjoint: expected G (H, M, 2, 2) and X, dX (H, B, n, M, 2) alike, got G "
                         f"{tuple(G.shape)}, X {tuple(X.shape)}, dX {tuple(dX.shape)}")
    H, B, n, M, _ = X.shape
    if M > 1:
        lam = torch.empty(n, H, B, M, 2, dtype=dX.dtype, device=dX.device).copy_(dX.movedim(2, 0))
        ds, dG, dx0 = carry_adjoint(G, X.movedim(2, 0), lam, need_dG)
        return ds.movedim(0, 2), dG, dx0
    lam = scan_rows(G.reshape(H, 2, 2).transpose(-1, -2).to(dX.dtype), dX.reshape(H, B, n, 2), reverse=True)
    ds = torch.empty_like(lam)
    ds[:, :, :-1] = lam[:, :, 1:]
    ds[:, :, -1].zero_()
    dG = None
    if need_dG:
        dG = torch.bmm(ds.view(H, B * n, 2).transpose(-1, -2), X.reshape(H, B * n, 2)).view(H, 1, 2, 2)
    return ds.view(H, B, n, 1, 2), dG, lam[:, :, 0].unsqueeze(2)


def carry_states_ref(G: Tensor, sums: Tensor, x0: Tensor) -> Tensor:
    r""":func:`carry_states` in plain autograd (backend ``"ref"``: derivatives of any order), in the layout of
    :class:`_CarryScan`: G (H, M, 2, 2), sums (H, B, n, M, 2), x0 (H, B, M, 2) -> X (H, B, n, M, 2)."""
    states = [x0]
    for j in range(1, sums.shape[2]):
        states.append(_apply_blocks(G, states[-1]) + sums[:, :, j - 1])
    return torch.stack(states, 2)


class _CarryScan(torch.autograd.Function):
    r"""States before each chunk (:func:`carry_rows`) for 2x2 blocks G (H, M, 2, 2), chunk sums
    s (H, B, n, M, 2) and x0 (H, B, M, 2): X (H, B, n, M, 2).

    A hand-written adjoint (:func:`carry_rows_adjoint`) instead of autograd through the loop (which spends ~10
    small ops per chunk, zero-filled slice gradients included).
    """

    @staticmethod
    def forward(ctx, G: Tensor, sums: Tensor, x0: Tensor) -> Tensor:
        X = carry_rows(G, sums, x0)
        ctx.save_for_backward(G, X)
        return X

    @staticmethod
    @backend.first_order
    def backward(ctx, dX: Tensor):
        G, X = ctx.saved_tensors
        ds, dG, dx0 = carry_rows_adjoint(G, X, dX, ctx.needs_input_grad[0])
        return dG, ds, dx0


def _toeplitz(taps: Tensor) -> Tensor:
    """(H, T) taps -> (H, T, T) matrix Z with ``Z[h, s, t] = taps[h, t - s]`` for t >= s, else 0
    (so that a row of inputs times Z is the causal convolution within the chunk). The windows of the taps
    left-padded with T - 1 zeros, ``p[i + t] = taps[t - (T - 1 - i)]``, are the rows of Z in reverse order: one
    strided view and one copy (the flip), about 10x faster on a CPU than a gather by a lag index and a mask."""
    T = taps.shape[-1]
    return F.pad(taps, (T - 1, 0)).unfold(-1, T, 1).flip(-2)


def _toeplitz_adjoint(dZ: Tensor) -> Tensor:
    """Adjoint of :func:`_toeplitz`: (H, T, T) -> (H, T), ``dtaps[h, l] = sum_s dZ[h, s, s + l]``: each row of
    dZ right-padded with T zeros, so that row s read from column s on (a view with row stride 2T + 1) holds
    ``dZ[h, s, s + l]`` at l, and zeros past the end."""
    H, T, _ = dZ.shape
    P = F.pad(dZ, (0, T)).contiguous()                                  # (H, T, 2T)
    return P.as_strided((H, T, T), (2 * T * T, 2 * T + 1, 1), P.storage_offset()).sum(1)


def _fits_triton(u: Tensor, tables: ChunkTables) -> bool:
    from ..ops.triton.chunked_conv import CHUNKS, MAX_BLOCK_M

    return (u.dtype == torch.float32 and tables.w_in.shape[-2] in CHUNKS
            and tables.w_in.shape[-1] <= 2 * MAX_BLOCK_M)


def _chunked_conv_triton(u: Tensor, tables: ChunkTables, state: Optional[Tensor], return_state: bool):
    from ..ops.triton.chunked_conv import chunked_conv_triton

    return chunked_conv_triton(u, tables, state, return_state)


def chunked_conv(u: Tensor, tables: ChunkTables, state: Optional[Tensor] = None,
                 return_state: bool = False, channels_first: bool = False) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    r"""Causal convolution of each channel of u with the SSM described by ``tables``, exactly.

    Args:
        u: input (B, L, H), real, any L >= 1 (the last chunk may be partial); (H, B, L) with
            ``channels_first`` (then y is (H, B, L) too: the layout of the chunk products, no transpose).
        tables: :class:`ChunkTables` for chunk length T and this L (``pow_r`` = ``A^r``,
            ``r = L - (ceil(L/T) - 1) T``), in the dtype of u.
        state: real state (B, H, S) before the first step, or None (zeros).
        return_state: also return the state after the last step, (B, H, S), in the dtype of ``pow_T``.

    The chunk-to-chunk carry runs in the dtype of ``pow_T`` (float64 from the table builders here):
    a rounded ``A^T`` applied ``L/T`` times would drift by ``~ (L/T) eps`` when ``|a| ~ 1`` (IMEX, slow
    modes); in float64 it costs one cast of the (B, H, L S / T) chunk sums.

    Returns:
        y (B, L, H), and the final state if ``return_state``.

    Path (:mod:`statespaces.backend`): the Triton kernels (:mod:`statespaces.ops.triton.chunked_conv`)
    for float32 CUDA tensors with T in ``ops.triton.chunked_conv.CHUNKS`` (32) and S <= 2 ``MAX_BLOCK_M`` (64), else
    :func:`chunked_conv_torch`.
    """
    if backend.choose("chunked_conv", u, dtypes=backend.REAL) == "triton" and _fits_triton(u, tables):
        ub = u.permute(1, 2, 0) if channels_first else u
        out = backend.attempt("chunked_conv", _chunked_conv_triton, ub, tables, state, return_state)
        if out is not None:
            if not channels_first:
                return out
            if return_state:
                return out[0].permute(2, 0, 1), out[1]
            return cast(Tensor, out).permute(2, 0, 1)
    return chunked_conv_torch(u, tables, state, return_state, channels_first)


def chunked_conv_torch(u: Tensor, tables: ChunkTables, state: Optional[Tensor] = None, return_state: bool = False,
                       channels_first: bool = False) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    """The PyTorch path of :func:`chunked_conv` (any device, any float dtype; plain autograd). Autocast
    is off inside (as in the FFT route): the products run in the precision of the tables."""
    with autocast_off(u):
        return _chunked_conv_torch(u, tables, state, return_state, channels_first)


def _chunked_conv_fn_torch(u: Tensor, taps: Tensor, win: Tensor, wout: Tensor, pow_T: Tensor, pow_r: Tensor,
                           x0: Optional[Tensor], want_state: bool) -> Tuple[Tensor, Optional[Tensor]]:
    """:func:`chunked_conv_torch` on the arguments of the Triton ChunkedConvFn (tables and states in the kernels'
    layouts, :func:`statespaces.ops.triton.chunked_conv.kernel_layouts`): its twin, to which its backward falls
    back if its kernels fail. Returns y and, with ``want_state``, the final state (B, H, 2, M), else None."""
    from ..ops.triton.chunked_conv import table_layouts

    w_in, w_out, state = table_layouts(win, wout, x0)
    tables = ChunkTables(taps, w_in, w_out, pow_T, pow_r)
    if not want_state:
        return cast(Tensor, chunked_conv_torch(u, tables, state)), None
    y, last = chunked_conv_torch(u, tables, state, True)
    return y, last.reshape(*last.shape[:2], -1, 2).transpose(-1, -2).to(u.dtype)


backend.register_twin("ChunkedConvFn", _chunked_conv_fn_torch)


class _ContiguousGrad(torch.autograd.Function):
    """A copy whose backward makes the gradient contiguous: a (B, L, H) gradient reaches an (H, B, L)-shaped
    tensor as a permuted view (batch stride 1), and a batched CPU ``bmm`` over such a batch loops matrix by matrix
    with a copy of each; one copy of the whole gradient here is cheaper. The forward copies (instead of returning
    a view of x) so that the caller may modify the result, and views of it, in place."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx, g: Tensor) -> Tensor:
        return g.contiguous()


def contiguous_grad(x: Tensor) -> Tensor:
    """A copy of ``x`` whose gradient is made contiguous on the way back (:class:`_ContiguousGrad`): for an
    (H, B, L) chunk-layout result that leaves as a permuted (B, L, H) view (S4's stateful CPU path: fwd+bwd
    153-161 -> 122 ms with the other layout fixes of 2026-12-06, B8 H128 N64 L1024). Backend ``"ref"`` (and
    ``torch.func`` transforms): a plain ``clone``."""
    return x.clone() if backend.get_backend() == "ref" else _ContiguousGrad.apply(x)


def _chunked_conv_torch(u: Tensor, tables: ChunkTables, state: Optional[Tensor], return_state: bool,
                        channels_first: bool = False):
    taps, w_in, w_out, pow_T, pow_r = tables
    if channels_first:
        H, Bsz, L = u.shape
        xp = u
    else:
        Bsz, L, H = u.shape
        xp = u.permute(2, 0, 1)
    T, S = w_in.shape[-2], w_in.shape[-1]
    M = S // 2
    n = -(-L // T)
    r = L - (n - 1) * T
    wide = pow_T.dtype                                                      # the carry's precision
    # (H, B n, T): chunk rows, contiguous. The permuted view of a (B, L, H) input (or its zero-padded copy,
    # which keeps the permuted strides) has matrices that BLAS cannot take, so bmm copied each of the H
    # (B n, T) matrices, forward and backward: 512 copies, ~24 ms of an 86 ms LinOSS forward+backward
    # (B=8, L=1024, H=128, P=64, one CPU thread). A contiguous (H, B, L) input (``channels_first``) is a view.
    x = (xp if n * T == L else F.pad(xp, (0, n * T - L))).reshape(H, Bsz * n, T).contiguous()
    sums = torch.bmm(x, w_in).view(H, Bsz, n, M, 2).to(wide)               # local chunk-boundary states
    cur = (torch.zeros(H, Bsz, M, 2, dtype=wide, device=u.device) if state is None
           else state.to(wide).permute(1, 0, 2).reshape(H, Bsz, M, 2))
    carry = carry_states_ref if backend.get_backend() == "ref" else _CarryScan.apply
    Xw = carry(pow_T, sums, cur)                                            # (H, B, n, M, 2): state before chunk j
    X = Xw.reshape(H, Bsz * n, S).to(u.dtype)
    y = torch.bmm(x, _toeplitz(taps)).baddbmm_(X, w_out.transpose(-1, -2))   # near + far (in place: no copy)
    y = y.view(H, Bsz, n * T)[..., :L]
    if not channels_first:
        y = y.permute(1, 2, 0)
    if not return_state:
        return y
    last = x.view(H, Bsz, n, T)[:, :, -1, :r]                                # (H, B, r)
    fin = _apply_blocks(pow_r, Xw[:, :, -1]).reshape(H, Bsz, S) + torch.bmm(last, w_in[:, T - r:]).to(wide)
    return y, fin.permute(1, 0, 2)


def _blocks(a: Tensor) -> Tensor:
    """Complex (H, M) -> the real 2x2 blocks ``[[Re a, -Im a], [Im a, Re a]]``, (H, M, 2, 2)."""
    return torch.stack([torch.stack([a.real, -a.imag], -1), torch.stack([a.imag, a.real], -1)], -2)


def diagonal_tables(log_dA: Tensor, dB: Tensor, C: Tensor, scale: float, T: int, r: int,
                    D: Optional[Tensor] = None) -> ChunkTables:
    r""":class:`ChunkTables` of a diagonal SSM ``x' = a x + dB u``, ``y = scale Re(C x) (+ D u)`` (eq. 3.2).

    Args:
        log_dA, dB, C: complex (H, M). scale: 2 for conjugate pairs, else 1. T: chunk length.
        r: steps of the last chunk (1..T). D: (H,) real skip, folded into the lag-0 tap, or None.

    The powers ``a^j`` (j <= T) come from float64 exponents with the phase reduced
    (:func:`statespaces.kernels.vandermonde._powers`), then rounded once to the working precision.
    Returns real tables in the real dtype of ``dB`` (``pow_T``, ``pow_r`` in float64, for the carry);
    the state is ``view_as_real`` of the complex one.
    """
    H, M = log_dA.shape
    p = _powers(log_dA, T + 1, 1).to(dB.dtype)                               # (H, M, T+1): a^j
    cb = (scale * C * dB).unsqueeze(-1)
    taps = (cb * p[..., :T]).real.sum(-2)                                    # (H, T)
    if D is not None:
        taps = torch.cat([taps[:, :1] + D[:, None], taps[:, 1:]], -1)
    w_in = torch.view_as_real((p[..., :T].flip(-1) * dB.unsqueeze(-1)).transpose(-1, -2)).reshape(H, T, 2 * M)
    w = (scale * C.unsqueeze(-1) * p[..., 1:]).transpose(-1, -2)            # (H, T, M): scale C a^{t+1}
    w_out = torch.stack([w.real, -w.imag], -1).reshape(H, T, 2 * M)         # Re(w x) = w_r x_r - w_i x_i
    lw = log_dA.to(torch.complex64 if log_dA.device.type == "mps" else torch.complex128)
    return ChunkTables(taps, w_in, w_out, _blocks(exp_scaled(lw, T)), _blocks(exp_scaled(lw, r)))


def block_tables(powers: Tensor, b: Tensor, c: Tensor, r: int) -> ChunkTables:
    r""":class:`ChunkTables` of real 2x2 systems ``x' = G x + b u``, ``y = c^T x`` (one per channel; LinOSS's
    oscillators, thesis-style closed-form powers supplied by the caller).

    Args:
        powers: (H, T+1, 2, 2) real, ``G^j`` for j = 0..T. b, c: (H, 2) real. r: steps of the last chunk.

    Returns:
        :class:`ChunkTables` with S = 2 (one block per channel), in the dtype of ``powers``.
    """
    T = powers.shape[1] - 1
    Gb = (powers[:, :T] * b[:, None, None, :]).sum(-1)                      # (H, T, 2): G^l b
    taps = (c[:, None, :] * Gb).sum(-1)                                     # (H, T): c^T G^l b
    w_in = Gb.flip(1)                                                       # (H, T, 2): G^{T-1-t} b
    w_out = (c[:, None, :, None] * powers[:, 1:]).sum(-2)                   # (H, T, 2): c^T G^{t+1}
    return ChunkTables(taps, w_in, w_out, powers[:, T, None], powers[:, r, None])


def chunked_conv_diagonal(u: Tensor, log_dA: Tensor, dB: Tensor, C: Tensor, scale: float = 1.0,
                          D: Optional[Tensor] = None, state: Optional[Tensor] = None, return_state: bool = False,
                          chunk: Optional[int] = None) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    r"""Output of a diagonal SSM (S4D, thesis §3.2; eq. 3.2) by the chunked convolution.

    ``y = k * u + D u`` with ``k_l = scale Re sum_m C_m dB_m a_m^l``, ``a = exp(log_dA)``; equal to
    ``fftconv(u, k)`` and to the recurrence ``x_t = a x_{t-1} + dB u_t``, ``y_t = scale Re(C x_t) + D u_t``.

    Args:
        u: input (B, L, H), real (float32 or float64).
        log_dA, dB: complex (H, M). C: complex (K, H, M), K = 1 (causal) or 2 (bidirectional:
            ``C[1]`` reads the anti-causal branch on lags -1..-L, as :func:`statespaces.ops.fftconv.two_sided_kernel`).
        scale: 2 when each mode stands for a conjugate pair, else 1. D: (H,) real or None.
        state: complex (B, H, M) state before the first step, or None. Causal only.
        return_state: also return the complex state (B, H, M) after the last step. Causal only.
        chunk: chunk length T (default :data:`CHUNK`, :data:`WIDE_STATE_CHUNK` for at least 32 complex modes and
            :data:`WIDE_STATE_LENGTH` steps, :data:`TRITON_CHUNK` on the Triton path).

    Returns:
        y (B, L, H) in the dtype of u, and the final state if ``return_state``.
    """
    if u.dim() != 3 or log_dA.dim() != 2 or C.dim() != 3 or u.shape[-1] != log_dA.shape[0] \
            or tuple(dB.shape) != tuple(log_dA.shape) or tuple(C.shape[1:]) != tuple(log_dA.shape) \
            or C.shape[0] not in (1, 2) or u.shape[1] < 1:
        raise ValueError(f"chunked_conv_diagonal: u must be (B, L>=1, H), log_dA and dB (H, M), C (1 or 2, H, M); "
                         f"got u {tuple(u.shape)}, log_dA {tuple(log_dA.shape)}, dB {tuple(dB.shape)}, "
                         f"C {tuple(C.shape)}")
    if u.dtype != dB.real.dtype or not (log_dA.is_complex() and dB.is_complex() and C.is_complex()):
        raise TypeError(f"chunked_conv_diagonal: log_dA, dB, C must be complex and u real of the same precision "
                        f"(float32 with complex64, float64 with complex128); got u {u.dtype}, log_dA {log_dA.dtype}, "
                        f"dB {dB.dtype}, C {C.dtype}")
    if state is not None and tuple(state.shape) != (u.shape[0], *log_dA.shape):
        raise ValueError(f"chunked_conv_diagonal: state must be (B, H, M) = {(u.shape[0], *log_dA.shape)}, "
                         f"got {tuple(state.shape)}")
    bidirectional = C.shape[0] == 2
    if bidirectional and (state is not None or return_state):
        raise ValueError("chunked_conv_diagonal: a bidirectional (two-sided) convolution has no recurrent state; "
                         "pass state=None and return_state=False")
    L = u.shape[1]
    T = chunk_length(L, chunk, u, state_size=2 * log_dA.shape[1])
    r = L - (-(-L // T) - 1) * T
    s0 = None if state is None else torch.view_as_real(state.to(dB.dtype)).flatten(-2).to(u.dtype)
    out = chunked_conv(u, diagonal_tables(log_dA, dB, C[0], scale, T, r, D), s0, return_state)
    if bidirectional:
        # anti-causal branch: on the reversed input it is causal with lags 1..L (one step of delay)
        back = chunked_conv(u.flip(1), diagonal_tables(log_dA, dB, C[1], scale, T, r))
        out = cast(Tensor, out) + F.pad(cast(Tensor, back)[:, :-1], (0, 0, 1, 0)).flip(1)   # no state: tensors
    if return_state:
        y, s = out
        return y, torch.view_as_complex(s.unflatten(-1, (-1, 2)).contiguous()).to(dB.dtype)
    return out


def chunked_conv_diagonal_ref(u: Tensor, log_dA: Tensor, dB: Tensor, C: Tensor, scale: float = 1.0,
                              D: Optional[Tensor] = None, state: Optional[Tensor] = None,
                              return_state: bool = False, chunk: Optional[int] = None) -> Union[Tensor, Tuple[Tensor,
                              Tensor]]:
    r"""Reference twin of :func:`chunked_conv_diagonal`: the explicit recurrence (thesis eq. 2.5),
    one step at a time in complex arithmetic; the anti-causal branch by the same recurrence run
    backwards. Same arguments (``chunk`` is ignored) and results."""
    Bsz, L, H = u.shape
    a = torch.exp(log_dA)
    x = torch.zeros(Bsz, H, a.shape[-1], dtype=dB.dtype, device=u.device) if state is None else state
    ys = []
    for t in range(L):
        x = a * x + dB * u[:, t, :, None]
        ys.append(scale * (C[0] * x).real.sum(-1))
    y = torch.stack(ys, 1)
    if D is not None:
        y = y + D * u
    if C.shape[0] == 2:
        z = torch.zeros_like(x)
        back = [torch.zeros_like(ys[0])]
        for t in range(L - 1, 0, -1):                          # out_t += scale Re C1 . (sum_{s>t} a^{s-t-1} dB u_s)
            z = a * z + dB * u[:, t, :, None]
            back.append(scale * (C[1] * z).real.sum(-1))
        y = y + torch.stack(back[::-1], 1)
    return (y, x) if return_state else y

