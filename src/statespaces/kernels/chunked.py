r"""State maps of a real discrete LTI system by chunks in the time domain (thesis §2.3.2, Prop. 2.8).

For one system per channel, ``xi_{t+1} = dA xi_t + dB u_t``, ``y_t = c^T xi_t`` with real
``dA`` (H, N, N), ``dB`` (H, N), ``c`` (H, N), the two maps that a stateful (chunked) forward
needs are

* the free response of a state, ``y_l = c^T dA^{l+1} xi_0`` for ``l < L``;
* the state after consuming an input, ``xi_L = dA^L xi_0 + sum_{j<L} dA^j dB u_{L-1-j}``.

(:func:`chunked_conv_dense` does the whole stateful forward this way: the output too, by the chunked
convolution of :mod:`statespaces.kernels.chunked_conv` with a dense transition.)

Both are computed with chunks of ``T`` steps (a power of two) and only *forward* products of
``dA`` (the route of state-space duality, specialised to a time-invariant system):

* near powers ``c^T dA^{j+1}`` and ``dA^j dB`` for ``j < T``, by doubling (``log2 T`` batched
  products, each reusing ``dA^m``);
* far powers ``dA^{kT}`` between chunks, by doubling as well (``log2(L/T)`` squarings);
* one batched matmul per map contracts them with the state or the input: O(B H L N) flops.

Unlike the frequency-domain route (:func:`statespaces.kernels.dplr.dplr_zero_input`, which divides
by ``I - dA^L`` and so loses all precision when a mode has not decayed within ``L`` steps:
small ``dt``, ``Re(Lambda) ~ 0`` as for LegT/FouT), nothing here is inverted: every quantity is a
product of powers of a stable matrix, so the float32 error is that of ``~log2 L`` matrix
products. The frequency-domain functions stay as the independent twin in the tests.
"""
from __future__ import annotations

import math
import numbers
from typing import Optional, Tuple, Union, cast

import torch

from .. import backend
from .._checks import check_length
from .chunked_conv import contiguous_grad
from .reference import power_kernel as _reference_power_kernel

Tensor = torch.Tensor

#: Default chunk length (steps); the near-power tables are (H, T, N).
CHUNK = 64


def _chunk(L: int, T: int) -> int:
    """Largest power of two <= min(T, L) (>= 1); ``T`` (the caller's ``chunk``) must be a positive integer."""
    L = check_length(L, "the length L")               # L = 0 failed with 'negative shift count'
    if isinstance(T, bool) or not isinstance(T, numbers.Integral) or T < 1:
        raise ValueError(f"chunk must be a positive integer (steps per chunk), got {T!r}")
    return 1 << (min(int(T), L).bit_length() - 1)


def near_powers(dA: Tensor, T: int, left: Optional[Tensor] = None,
                right: Optional[Tensor] = None) -> Tuple[Optional[Tensor], Optional[Tensor], Tensor]:
    r"""``(left^T dA^{j+1})_{j<T}``, ``(dA^j right)_{j<T}`` and ``dA^T``, by doubling.

    Args:
        dA: (H, N, N). T: a power of two. left, right: (H, N) or None.

    Returns:
        ``(rows (H, T, N) or None, cols (H, T, N) or None, dA^T (H, N, N))``.

    Off the CPU (:func:`prefer_one_node`), one autograd node (:class:`_NearPowers`) with a hand-written
    backward of five kernels per doubling: autograd's graph of the doubling costs about eight, plus the
    views, and a GPU bound by dispatch pays for each (census of S4's CUDA path, ``benchmarks/host_census.py``:
    458 -> 413 ops per fwd+bwd). On the CPU, :func:`near_powers_ref` (plain autograd; the twin in the tests),
    which measured 8% less process time for S4's stateful fwd+bwd (B=8, H=128, N=64, L=1024, one thread).
    """
    if (left is None and right is None) or not prefer_one_node(dA):
        return near_powers_ref(dA, T, left, right)
    sides = "both" if left is not None and right is not None else ("rows" if left is not None else "cols")
    H = dA.shape[0]
    if sides == "both":
        assert left is not None and right is not None
        V0 = torch.cat([(left.unsqueeze(-2) @ dA), right.unsqueeze(-2)], 0)     # (2H, 1, N)
    elif sides == "rows":
        assert left is not None
        V0 = left.unsqueeze(-2) @ dA                                             # c^T dA
    else:
        assert right is not None
        V0 = right.unsqueeze(-2)                                                 # dA^0 b
    V, PT = _NearPowers.apply(dA, V0, T, sides)
    if sides == "both":
        return V[:H], V[H:], PT
    return (V, None, PT) if sides == "rows" else (None, V, PT)


def prefer_one_node(dA: Tensor) -> bool:
    """Whether :func:`near_powers` takes its one-node backward: off the CPU (see there), and never on backend
    ``"ref"`` (nor inside ``torch.func`` transforms), where plain autograd gives derivatives of any order."""
    return dA.device.type != "cpu" and backend.get_backend() != "ref"


def _side_matrix(P: Tensor, sides: str) -> Tensor:
    """What the stacked tables are multiplied by at a doubling: ``P``, ``P^T`` or both stacked (2H)."""
    if sides == "rows":
        return P
    if sides == "cols":
        return P.transpose(-1, -2)
    return torch.cat([P, P.transpose(-1, -2)], 0)


class _NearPowers(torch.autograd.Function):
    r"""``V_{2m} = [V_m ; V_m Q(dA^m)]`` from ``V_1 = V0`` up to ``T`` rows, and ``dA^T``; Q of :func:`_side_matrix`.

    Backward, level by level from the top (``m = T/2 .. 1``), with ``G`` the gradient of ``V_{2m}``:
    ``dV_m = G_{:m} + G_{m:} Q^T``, ``dQ = V_m^T G_{m:}`` (folded onto ``dA^m``), and ``dA^{2m} = dA^m dA^m``
    gives ``d(dA^m) += G_P (dA^m)^T + (dA^m)^T G_P``.
    """

    @staticmethod
    def forward(ctx, dA: Tensor, V0: Tensor, T: int, sides: str):
        Ps, Qs = [dA], []
        V = V0
        while V.shape[-2] < T:
            Qs.append(_side_matrix(Ps[-1], sides))
            V = torch.cat([V, V @ Qs[-1]], -2)
            Ps.append(Ps[-1] @ Ps[-1])
        ctx.sides, ctx.levels = sides, len(Qs)
        ctx.save_for_backward(V, *Ps[:-1], *Qs)
        return V, Ps[-1]

    @staticmethod
    @backend.first_order
    def backward(ctx, gV: Optional[Tensor], gPT: Optional[Tensor]):
        # five kernels per level (what a dispatch-bound GPU pays for), against ~10 for autograd's graph
        V, *saved = ctx.saved_tensors
        Ps, Qs = saved[:ctx.levels], saved[ctx.levels:]
        sides = ctx.sides
        H, N = V.shape[0] // (2 if sides == "both" else 1), V.shape[-1]
        gV = torch.zeros_like(V) if gV is None else gV
        gP = V.new_zeros(H, N, N) if gPT is None else gPT              # gradient of dA^{2m}
        m = V.shape[-2]
        for level in range(ctx.levels - 1, -1, -1):
            m //= 2
            Pt = Ps[level].transpose(-1, -2)                             # (dA^m)^T
            bot = gV[:, m:2 * m]
            gQ = V[:, :m].transpose(-1, -2) @ bot                        # (S, N, N): gradient of Q(dA^m)
            gV = torch.baddbmm(gV[:, :m], bot, Qs[level].transpose(-1, -2))
            if sides == "rows":
                acc = gQ
            elif sides == "cols":
                acc = gQ.transpose(-1, -2)
            else:
                acc = gQ[:H] + gQ[H:].transpose(-1, -2)
            gP = torch.baddbmm(torch.baddbmm(acc, gP, Pt), Pt, gP)      # + through dA^{2m} = dA^m dA^m
        return gP, gV, None, None


def near_powers_ref(dA: Tensor, T: int, left: Optional[Tensor] = None,
                    right: Optional[Tensor] = None) -> Tuple[Optional[Tensor], Optional[Tensor], Tensor]:
    """Twin of :func:`near_powers` by plain autograd through the doubling (same outputs and gradients)."""
    rows = None if left is None else (left.unsqueeze(-2) @ dA)        # (H, 1, N): c^T dA
    cols = None if right is None else right.unsqueeze(-2)              # (H, 1, N): dA^0 b
    Pm = dA                                                            # dA^m, m = current length
    m = 1
    while m < T:
        if rows is not None:
            rows = torch.cat([rows, rows @ Pm], -2)                    # c^T dA^{j+1+m}
        if cols is not None:
            cols = torch.cat([cols, cols @ Pm.transpose(-1, -2)], -2)  # dA^{j+m} b (row-vector form)
        Pm = Pm @ Pm
        m *= 2
    return rows, cols, Pm


def _far_states(x0: Tensor, PT: Tensor, n: int) -> Tensor:
    """``(dA^{kT} x0)_{k<n}`` as (H, n, B, N) by doubling, with x0 (H, B, N), ``PT = dA^T`` (H, N, N)."""
    X = x0.unsqueeze(1)                                                # (H, 1, B, N)
    Pk = PT
    while X.shape[1] < n:
        m, Bsz = X.shape[1], X.shape[2]
        nxt = (X.flatten(1, 2) @ Pk.transpose(-1, -2)).unflatten(1, (m, Bsz))
        X = torch.cat([X, nxt], 1)
        if 2 * m < n:                                                  # the last doubling needs no dA^{2mT}
            Pk = Pk @ Pk
    return X[:, :n]


class _RowPowers(torch.autograd.Function):
    r"""``(V X^i)_{i <= q}`` (H, q + 1, K, N) for rows V (H, K, N) and X (H, N, N), by q sequential products.

    Autograd of the plain loop adds q outer products into X's gradient one at a time, each a pass over an
    (H, N, N) buffer; this backward keeps the q row gradients and forms ``sum_i R_i^T G_{i+1}`` as one batched
    (H, N, qK) @ (H, qK, N) product."""

    @staticmethod
    def forward(ctx, V: Tensor, X: Tensor, q: int) -> Tensor:
        rows = [V]
        for _ in range(q):
            rows.append(torch.bmm(rows[-1], X))
        out = torch.stack(rows, 1)
        ctx.save_for_backward(out, X)
        return out

    @staticmethod
    @backend.first_order
    def backward(ctx, G: Tensor):
        R, X = ctx.saved_tensors
        q = R.shape[1] - 1
        Xt = X.transpose(-1, -2)
        acc = [G[:, q]]                                                # adjoints of R_q, R_{q-1}, ...
        for i in range(q - 1, -1, -1):
            acc.append(G[:, i] + torch.bmm(acc[-1], Xt))
        adj = torch.stack(acc[::-1], 1)                                # (H, q + 1, K, N)
        gX = torch.bmm(R[:, :q].flatten(1, 2).transpose(-1, -2), adj[:, 1:].flatten(1, 2)) if q else None
        return adj[:, 0], gX, None


def _check_rows(what: str, V: Tensor, X: Tensor, power: int) -> None:
    if V.dim() != 3 or X.dim() != 3 or X.shape[-1] != X.shape[-2] or V.shape[0] != X.shape[0] \
            or V.shape[-1] != X.shape[-1]:
        raise ValueError(f"{what}: expected rows V (H, K, N) and X (H, N, N); got V {tuple(V.shape)}, "
                         f"X {tuple(X.shape)}")
    if power < 0:
        raise ValueError(f"{what}: the power must be >= 0, got {power}")


def row_powers(V: Tensor, X: Tensor, q: int) -> Tensor:
    """``(V X^i)_{i <= q}`` as (H, q + 1, K, N) for rows V (H, K, N) and X (H, N, N), q >= 0 (:class:`_RowPowers`;
    the far rows of the chunked form, thesis §2.3.2)."""
    _check_rows("row_powers", V, X, q)
    if backend.get_backend() == "ref":          # plain autograd (derivatives of any order)
        rows = [V]
        for _ in range(q):
            rows.append(torch.bmm(rows[-1], X))
        return torch.stack(rows, 1)
    return _RowPowers.apply(V, X, q)


#: A row product ``V X`` reads all of X (H N^2 entries) for ``H N^2 K`` multiply-adds, so on a CPU it runs far below
#: the rate of a squaring: measured at H128 N64, one thread, about ``(K + ROW_READ) H N^2`` multiply-adds' worth of
#: squaring time (a (128, 1, 64) x (128, 64, 64) product 94 us, a (128, 64, 64) squaring 600 us).
ROW_READ = 9


def row_squarings(L: int, H: int, N: int, K: int, cuda: bool, near: bool = False) -> int:
    r"""How many squarings ``s`` to spend on ``V X^L`` (rows V (H, K, N)) before ``L >> s`` row products with
    ``X^(2^s)``: the s minimising ``s c_sq + (L >> s) c_row`` in multiply-adds' worth, ``c_sq = H N^3`` per
    squaring and ``c_row = H N^2 (K + ROW_READ)`` per row product (:data:`ROW_READ`); on CUDA every product is a
    launch, as dear as a squaring at these sizes, so s is the largest there (plain binary powering). ``near``:
    :func:`power_kernel`'s near columns, whose doubling to ``T = 2^s`` adds about ``T / N`` squarings' worth."""
    L = int(L)         # under torch.compile with dynamic shapes a SymInt: the loop counts below specialise on it
    c_sq = H * N ** 3
    c_row = c_sq if cuda else H * N * N * (K + ROW_READ)

    def cost(s: int) -> float:
        return s * c_sq + (L >> s) * c_row + (c_sq * (1 << s) / N if near else 0.0)

    best = 0                                    # argmin as a loop: dynamo cannot trace min(..., key=) on SymInts
    for s in range(1, max(L.bit_length(), 1)):
        if cost(s) < cost(best):
            best = s
    return best


def rows_times_power(V: Tensor, X: Tensor, L: int) -> Tensor:
    r"""``V X^L`` for rows V (H, K, N) and X (H, N, N) (L >= 0), without forming ``X^L`` where rows are cheaper.

    ``s`` squarings (:func:`row_squarings`) give ``X^(2^j)``, j <= s; the rows take the factors of L's low s bits
    on the way, then ``X^(2^s)`` ``L >> s`` times (:func:`row_powers`). With K = N rows (V = I) the rule picks
    binary powering, ``floor(log2 L)`` squarings."""
    _check_rows("rows_times_power", V, X, L)
    s = row_squarings(L, X.shape[0], X.shape[-1], V.shape[-2], X.is_cuda)
    base = X.contiguous() if s else X                                  # squaring a transposed view: ~1.5x dearer
    for j in range(s):
        if (L >> j) & 1:
            V = torch.bmm(V, base)
        base = torch.bmm(base, base)
    return row_powers(V, base, L >> s)[:, -1] if L >> s else V


def zero_input_response(dA: Tensor, c: Tensor, x0: Tensor, L: int, chunk: int = CHUNK) -> Tensor:
    r"""Free response ``y_l = c^T dA^{l+1} x0``, ``l < L``.

    Args:
        dA: (H, N, N) real. c: (H, N) real. x0: (B, H, N) real state. L: length >= 1.
        chunk: chunk length T (rounded down to a power of two).

    Returns:
        y (B, H, L).
    """
    T = _chunk(L, chunk)
    n = math.ceil(L / T)
    rows, _, PT = near_powers(dA, T, left=c)                           # (H, T, N)
    assert rows is not None                                            # given left=c
    X = _far_states(x0.transpose(0, 1), PT, n)                         # (H, n, B, N)
    y = X.flatten(1, 2) @ rows.transpose(-1, -2)                       # (H, n B, T)
    return y.unflatten(1, (n, -1)).permute(2, 0, 1, 3).flatten(-2)[..., :L]


def advance(dA: Tensor, dB: Tensor, u: Tensor, x0: Optional[Tensor] = None, chunk: int = CHUNK) -> Tensor:
    r"""State after consuming ``u``: ``dA^L x0 + sum_{j<L} dA^j dB u_{L-1-j}``.

    Args:
        dA: (H, N, N) real. dB: (H, N) real. u: (B, H, L) real. x0: (B, H, N) or None (zeros).
        chunk: chunk length T (rounded down to a power of two).

    Returns:
        xi_L (B, H, N).
    """
    Bsz, H, L = u.shape
    T = _chunk(L, chunk)
    n = math.ceil(L / T)
    _, cols, PT = near_powers(dA, T, right=dB)                         # (H, T, N): dA^j dB
    pad = n * T - L                                                    # zeros before the input
    v = torch.nn.functional.pad(u, (pad, 0)).unflatten(-1, (n, T)).flip(-1)   # v[b,h,k,j] = u'_{kT+T-1-j}
    S = (v.transpose(0, 1).flatten(1, 2) @ cols).unflatten(1, (Bsz, n))  # (H, B, n, N) per-chunk sums
    Pk = PT
    while S.shape[2] > 1:                                              # pairwise: older -> dA^(mT) older + newer
        if S.shape[2] % 2:
            S = torch.nn.functional.pad(S, (0, 0, 1, 0))               # a zero chunk in the far past
        S = S.unflatten(2, (-1, 2))
        old = S[..., 0, :]
        S = (old.flatten(1, 2) @ Pk.transpose(-1, -2)).view_as(old) + S[..., 1, :]
        Pk = Pk @ Pk
    x = S[:, :, 0]                                                     # (H, B, N)
    if x0 is not None:
        x = x + _power_apply(dA, L, x0.transpose(0, 1))
    return x.transpose(0, 1)


def power_kernel(dA: Tensor, dB: Tensor, c: Tensor, L: int, chunk: Optional[int] = None) -> Tensor:
    r"""Convolution kernel ``K_l = c^T dA^l dB``, ``l < L``, of a real dense LTI system (eq. 2.6), by chunks:
    ``K_{kT + j} = (c^T dA^{kT}) (dA^j dB)``, the near columns ``dA^j dB`` (j < T) by doubling
    (:func:`near_powers`, ``log2 T`` squarings), the far rows ``c^T dA^{kT}`` (k < n = ceil(L/T)) by n - 1
    row products with ``dA^T`` (:func:`row_powers`), and one batched (n, N) x (N, T) product; nothing inverted.

    The chunk T trades squarings (``H N^3`` each) against row products (:func:`row_squarings`). At H128 N64 on
    one CPU thread: T = 64 at L = 1024 (6 squarings and 15 rows instead of 9 squarings, with the far rows by
    doubling: fwd+bwd 50 -> 40 ms), T = 256 at L = 8192 (154 -> 99 ms).

    Args:
        dA: (H, N, N) real. dB: (H, N) real. c: (H, N), or (K, H, N) for K output vectors sharing the system
            (a bidirectional layer's two directions): the near columns are shared, the far rows are K per
            chunk. L: length >= 1. chunk: T (rounded down to a power of two); None: the rule above.

    Returns:
        K (H, L), or (K, H, L) for c (K, H, N), in the dtype of dA. Twin: the explicit powers
        (:func:`power_kernel_ref`).
    """
    L = check_length(L, "power_kernel: L")
    rows = c.unsqueeze(1) if c.dim() == 2 else c.transpose(0, 1)       # (H, K, N)
    H, K = rows.shape[:2]
    if chunk is None:
        chunk = 1 << row_squarings(L, H, dA.shape[-1], K, dA.is_cuda, near=True)
    T = _chunk(L, chunk)
    n = math.ceil(L / T)
    _, cols, PT = near_powers(dA, T, right=dB)                         # (H, T, N): dA^j dB
    assert cols is not None                                            # given right=dB
    far = row_powers(rows, PT, n - 1)                                  # (H, n, K, N): c^T dA^{kT}
    out = (far.flatten(1, 2) @ cols.transpose(-1, -2)).view(H, n, K, T)   # (H, n, K, T)
    out = out.permute(2, 0, 1, 3).flatten(2)[..., :L]                  # (K, H, L)
    return out[0] if c.dim() == 2 else out


def power_kernel_ref(dA: Tensor, dB: Tensor, c: Tensor, L: int) -> Tensor:
    """Reference twin of :func:`power_kernel`: one matrix-vector product per lag (readable, slow); the loop of
    :func:`statespaces.kernels.reference.power_kernel` (eq. 2.8)."""
    return _reference_power_kernel(dA, dB, c, L)


def _power_apply(dA: Tensor, L: int, x: Tensor) -> Tensor:
    """``dA^L x`` for x (H, B, N) (:func:`rows_times_power` of the rows x with ``dA^T``)."""
    return rows_times_power(x, dA.transpose(-1, -2), L)


def chunked_conv_dense(u: Tensor, dA: Tensor, dB: Tensor, c: Tensor, D: Optional[Tensor] = None,
                       x0: Optional[Tensor] = None, return_state: bool = False,
                       chunk: Optional[int] = None) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    r"""Output (and final state) of ``xi_t = dA xi_{t-1} + dB u_t``, ``y_t = c^T xi_t (+ D u_t)`` from ``xi_{-1} = x0``,
    by chunks of T steps (the chunked LTI convolution of :mod:`statespaces.kernels.chunked_conv` with a dense
    transition; S4 through its real dense form, thesis §2.3.2-2.3.3, app. C.1.1).

    Per chunk: the near field ``U Z`` with the Toeplitz matrix of the taps ``c^T dA^j dB`` (j < T), the
    chunk's input sums ``sum_t dA^{T-1-t} dB u_t`` and the far field ``c^T dA^{t+1} X`` of the state X
    before the chunk; X is carried between chunks by ``X_j = dA^T X_{j-1} + S_{j-1}`` (a batched matvec
    per chunk, in the dtype of dA). Near powers by doubling (:func:`near_powers`). Plain autograd.

    Args:
        u: (B, L, H) real. dA: (H, N, N), dB, c: (H, N) real. D: (H,) or None. x0: (B, H, N) or None.
        return_state: also return xi_L (B, H, N). chunk: T (rounded down to a power of two); None: the
            default, :data:`CHUNK` here, the kernel's own on the Triton path.

    Returns:
        y (B, L, H), and xi_L if ``return_state``.

    Path (:mod:`statespaces.backend`, op ``"chunked_conv_dense"``): the Triton kernels of
    :mod:`statespaces.ops.triton.chunked_dense` (forward and backward) for float32 CUDA tensors with
    ``N <= MAX_N`` and the default chunk; else this PyTorch code (CPU, float64, wider states). A Triton
    failure warns once and falls back here.
    """
    check_dense_system("chunked_conv_dense", u, dA, dB, c, D, x0)
    if chunk is None and backend.choose("chunked_conv_dense", u, dA, dtypes=backend.REAL) == "triton" \
            and dA.shape[-1] <= _triton_max_n():
        out = backend.attempt("chunked_conv_dense", _chunked_conv_dense_triton, u, dA, dB, c, D, x0, return_state)
        if out is not None:
            return out
    return _chunked_conv_dense_torch(u, dA, dB, c, D, x0, return_state, CHUNK if chunk is None else chunk)


def chunked_conv_dense_bidirectional(u: Tensor, dA: Tensor, dB: Tensor, c: Tensor,
                                     D: Optional[Tensor] = None) -> Tensor:
    r"""Two-sided (bidirectional) output ``y_t = sum_{s<=t} k0[t-s] u_s + sum_{s>t} k1[s-t-1] u_s + D u_t``, with
    ``k_i[l] = c_i^T dA^l dB`` (the convention of :func:`statespaces.ops.fftconv.two_sided_kernel`), by one
    :func:`chunked_conv_dense` pass over 2H channels: the causal half on u, and the anti-causal half as the causal
    convolution of the time-reversed input, reversed back and delayed by one step (thesis §7.2.6).

    Args:
        u: (B, L, H) real. dA: (H, N, N), dB: (H, N) real. c: (2, H, N) real, the causal then the anti-causal
            output vector. D: (H,) or None.

    Returns:
        y (B, L, H).
    """
    check_dense_system("chunked_conv_dense_bidirectional", u, dA, dB, c, D, directions=2)
    H = u.shape[-1]
    D2 = None if D is None else torch.cat([D, torch.zeros_like(D)])
    z = cast(Tensor, chunked_conv_dense(torch.cat([u, u.flip(1)], -1), dA.repeat(2, 1, 1), dB.repeat(2, 1),
                                        c.flatten(0, 1), D2))
    back = z[..., H:].flip(1)                                          # back[t] = (causal conv of flip(u))[L-1-t]
    return z[..., :H] + torch.nn.functional.pad(back[:, 1:], (0, 0, 0, 1))


def check_dense_system(op: str, u: Tensor, dA: Tensor, dB: Tensor, c: Tensor, D: Optional[Tensor] = None,
                       x0: Optional[Tensor] = None, directions: int = 1) -> None:
    """ValueError naming ``op`` unless u is (B, L, H), dA (H, N, N), dB (H, N), c (H, N) (``directions`` = 2:
    (2, H, N)), D (H,) and x0 (B, H, N) or None."""
    want_c = "(2, H, N)" if directions == 2 else "(H, N)"
    ok = u.dim() == 3 and dA.dim() == 3 and dA.shape[-1] == dA.shape[-2] and dA.shape[0] == u.shape[-1] \
        and dB.shape == dA.shape[:2] and c.shape == ((2,) if directions == 2 else ()) + tuple(dB.shape) \
        and (D is None or D.shape == dA.shape[:1]) and (x0 is None or x0.shape == (u.shape[0], *dB.shape))
    if not ok:
        raise ValueError(f"{op}: expected u (B, L, H), dA (H, N, N), dB (H, N), c {want_c}, D (H,) or None, "
                         f"x0 (B, H, N) or None; got u {tuple(u.shape)}, dA {tuple(dA.shape)}, dB {tuple(dB.shape)}, "
                         f"c {tuple(c.shape)}, D {None if D is None else tuple(D.shape)}, "
                         f"x0 {None if x0 is None else tuple(x0.shape)}")


def _triton_max_n() -> int:
    from ..ops.triton.chunked_dense import MAX_N

    return MAX_N


def dense_tables(dA: Tensor, dB: Tensor, c: Tensor, D: Optional[Tensor], T: int,
                 r: int) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    r"""The per-channel tables of the dense chunked convolution for chunks of T steps (differentiable):
    ``taps`` (H, T) ``c^T dA^j dB`` (``D`` folded into lag 0), ``w_in`` (H, T, N) ``dA^{T-1-t} dB``,
    ``w_out`` (H, T, N) ``c^T dA^{t+1}``, ``dA^T`` and ``dA^r`` (H, N, N), r the steps of the last chunk."""
    rows, cols, PT = near_powers(dA, T, left=c, right=dB)              # c^T dA^{t+1}, dA^j dB: (H, T, N)
    assert rows is not None and cols is not None
    taps = (cols * c[:, None, :]).sum(-1)                              # (H, T): c^T dA^j dB
    if D is not None:
        taps = torch.cat([taps[:, :1] + D[:, None], taps[:, 1:]], -1)
    eye = torch.eye(dA.shape[-1], dtype=dA.dtype, device=dA.device).expand_as(dA)
    Pr = PT if r == T else _power_apply(dA, r, eye).transpose(-1, -2)  # dA^r: (dA^r)^T from the rows of I
    return taps, cols.flip(1), rows, PT, Pr


def _chunked_conv_dense_triton(u: Tensor, dA: Tensor, dB: Tensor, c: Tensor, D: Optional[Tensor],
                               x0: Optional[Tensor], return_state: bool):
    from ..ops.triton.chunked_dense import CHUNK as T
    from ..ops.triton.chunked_dense import chunked_conv_dense_triton
    from .chunked_conv import _toeplitz

    L = u.shape[1]
    r = L - (math.ceil(L / T) - 1) * T
    tables = None
    Pr: Optional[Tensor] = None
    if backend.choose("dense_tables", dA, dB, c, D, dtypes=(torch.float32,)) == "triton":
        tables = backend.attempt("dense_tables", _dense_tables_triton, dA, dB, c, D)
    if tables is None:
        taps, w_in, w_out, PT, Pr = dense_tables(dA, dB, c, D, T, r)
        Z = _toeplitz(taps)
    else:                                                              # one launch (and one for the backward)
        Z, w_in, w_out, PT = tables
        Pr = PT if r == T else None                                    # dA^r for r < T: only if the state is asked

    def last_power() -> Tensor:                                        # dA^r, r the steps of the last chunk
        if Pr is not None:
            return Pr
        eye = torch.eye(dA.shape[-1], dtype=dA.dtype, device=dA.device).expand_as(dA)
        return _power_apply(dA, r, eye).transpose(-1, -2)

    return chunked_conv_dense_triton(u, Z, w_in, w_out, PT, last_power if return_state else None, x0)


def _dense_tables_triton(dA: Tensor, dB: Tensor, c: Tensor, D: Optional[Tensor]):
    from ..ops.triton.dense_tables import dense_tables_triton

    return dense_tables_triton(dA, dB, c, D)


def _chunked_conv_dense_torch(u: Tensor, dA: Tensor, dB: Tensor, c: Tensor, D: Optional[Tensor],
                              x0: Optional[Tensor], return_state: bool, chunk: int):
    """The PyTorch path of :func:`chunked_conv_dense` (any device and float dtype; plain autograd)."""
    from .chunked_conv import _toeplitz

    L = u.shape[1]
    T = _chunk(L, chunk)
    n = math.ceil(L / T)
    r = L - (n - 1) * T
    rows, cols, PT = near_powers(dA, T, left=c, right=dB)              # c^T dA^{t+1}, dA^j dB: (H, T, N)
    assert rows is not None and cols is not None
    taps = (cols * c[:, None, :]).sum(-1)                              # (H, T): c^T dA^j dB
    if D is not None:
        taps = torch.cat([taps[:, :1] + D[:, None], taps[:, 1:]], -1)
    w_in = cols.flip(1)                                                # (H, T, N): dA^{T-1-t} dB
    y, Xs, x = _dense_chunks(u, _toeplitz(taps), w_in, rows, PT, x0)
    if not return_state:
        return y
    last = x[:, :, -1, :r]                                             # (H, B, r)
    fin = _power_apply(dA, r, Xs[:, :, -1]) + torch.bmm(last, w_in[:, T - r:])
    return y, fin.transpose(0, 1)


def _dense_chunks(u: Tensor, Z: Tensor, w_in: Tensor, w_out: Tensor, G: Tensor,
                 x0: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
    r"""The dense chunked convolution from its tables (the PyTorch twin of
    :class:`statespaces.ops.triton.chunked_dense.ChunkedDenseFn` too; plain autograd).

    Args:
        u: (B, L, H). Z: (H, T, T) the taps' Toeplitz matrix. w_in, w_out: (H, T, N). G: ``dA^T`` (H, N, N), the
            carry's dtype. x0: (B, H, N) or None.

    Returns:
        y (B, L, H); the states before each chunk Xs (H, B, n, N); the input by chunks (H, B, n, T), zero-padded.
    """
    Bsz, L, H = u.shape
    T, N = w_in.shape[-2], w_in.shape[-1]
    n = math.ceil(L / T)
    # (H, B, n T) rows: contiguous, or bmm over the H batch of a (B, L, H)-strided view loops matrix by matrix
    x = torch.nn.functional.pad(u.permute(2, 0, 1), (0, n * T - L)).contiguous().view(H, Bsz * n, T)
    # per-chunk sums, one tensor per chunk by unbind: its backward stacks the n gradients once, where a slice per
    # chunk would zero-fill an (H, B, n, N) gradient for each and add them up
    sums = torch.bmm(x, w_in).view(H, Bsz, n, N).unbind(2)
    X = [torch.zeros(H, Bsz, N, dtype=G.dtype, device=G.device) if x0 is None else x0.transpose(0, 1).to(G.dtype)]
    Gt = G.transpose(-1, -2).contiguous()                              # a transposed operand costs bmm ~1.7x
    for j in range(1, n):
        X.append(torch.bmm(X[-1], Gt) + sums[j - 1])
    Xs = torch.stack(X, 2)                                             # (H, B, n, N): state before chunk j
    y = torch.baddbmm(torch.bmm(x, Z), Xs.reshape(H, Bsz * n, N), w_out.transpose(-1, -2))
    y = contiguous_grad(y).view(H, Bsz, n * T)[..., :L].permute(1, 2, 0)
    return y, Xs, x.view(H, Bsz, n, T)


def _chunked_dense_fn_torch(u: Tensor, Z: Tensor, w_in: Tensor, w_out: Tensor, G: Tensor,
                            x0: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    """``(y, X_{n-1})`` (the state before the last chunk, (B, H, N)) by :func:`_dense_chunks`: the twin of the Triton
    ChunkedDenseFn (same arguments), to which its backward falls back if its kernels fail."""
    y, Xs, _ = _dense_chunks(u, Z, w_in, w_out, G, x0)
    return y, Xs[:, :, -1].transpose(0, 1)


def _dense_tables_fn_torch(dA: Tensor, dB: Tensor, c: Tensor, D: Optional[Tensor]):
    """``(Z, W_in, W_out, dA^T)`` for the Triton chunk length by :func:`dense_tables`: the twin of the Triton
    DenseTablesFn (same arguments), to which its backward falls back if its kernels fail."""
    from ..ops.triton.chunked_dense import CHUNK as T
    from .chunked_conv import _toeplitz

    taps, w_in, w_out, G, _ = dense_tables(dA, dB, c, D, T, T)
    return _toeplitz(taps), w_in, w_out, G


backend.register_twin("ChunkedDenseFn", _chunked_dense_fn_torch)
backend.register_twin("DenseTablesFn", _dense_tables_fn_torch)
