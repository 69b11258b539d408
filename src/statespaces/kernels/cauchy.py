r"""Cauchy kernel ``out_k = sum_n v_n / (z_k - w_n)`` (thesis Def. C.5, Prop. C.6; app. C.1.2).

The DPLR (S4) kernel evaluates its generating function at K frequencies by four (in general
``(1 + r)^2``) Cauchy matrix-vector products with the N state eigenvalues as poles (Lemma C.3).

Two implementations behind one signature, so that a compiled / GPU path can be dispatched later:

* :func:`cauchy_ref` (alias :func:`cauchy_naive`) -- the reference twin: materializes the (..., K, N) Cauchy matrix
  (O(KN) time and memory per channel) and lets autograd store it. Ground truth for tests.
* :func:`cauchy` -- the same sum computed in chunks of nodes, inside a custom autograd Function
  that saves only its inputs and recomputes the Cauchy matrix chunk by chunk in the backward.

Cost of :func:`cauchy`, with R independent (z, w) pairs ("channels", e.g. R = H), J vectors ``v``
sharing each pair, K nodes and N poles:

* time: O(R K N) complex reciprocals + O(R J K N) multiply-adds (batched ``matmul``) forward,
  twice that backward (the reciprocals are recomputed once);
* memory: inputs and output, O(R (J N + K + J K)), plus one work block of at most
  :data:`CHUNK_ELEMS` complex entries (R x poles x nodes). The (R, K, N) Cauchy matrix never exists.
  The thesis' quasi-linear algorithms (O((K+N) log^2(K+N)), Prop. C.6) are not used: they are not
  competitive in practice.

``conj=True`` adds the mirrored poles, ``sum_n v_n/(z_k - w_n) + conj(v_n)/(z_k - conj(w_n))``:
the sum over a conjugate-symmetric set of 2N modes given by its N-mode half (thesis §3.4.5).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from .. import backend
from .._checks import tracing
from ..ops._amp import amp_backward, fp32_forward
from ..ops._cauchy_args import _check, _complex_dtype, _grouped, _prepare  # noqa: F401  (argument handling)

Tensor = torch.Tensor

#: Default work-block size, in complex entries of the (channels, poles, nodes) Cauchy block: 2^17 (1 MiB
#: in complex64), so that the block's reciprocals, written, read back by the product and (backward)
#: squared, stay in a core's L2 cache. Measured on CPU (one thread, S4 ``l_max`` kernel fwd+bwd, H=128,
#: N=64, L=1024): 89-109 ms with 2^22-entry blocks (32 MiB: every pass goes to memory, and the fresh
#: buffer page-faults), about 2x faster at 2^17 with channel blocks. Tune with the ``chunk_elems`` argument.
CHUNK_ELEMS = 1 << 17


def _chunks(R: int, N: int, K: int, chunk_elems: int) -> Tuple[int, int, int]:
    """Block sizes (channels, poles, nodes) with cr * cn * ck <= chunk_elems (at least 1 each): all poles
    and up to 1024 nodes per block first, the nodes cut into equal blocks (K = L/2 + 1 = 513 is one block of
    513, not 512 and 1: matrix products long enough to run at speed, no near-empty block), then as many
    channels as fit."""
    cn = max(1, min(N, chunk_elems))
    ck = max(1, min(K, chunk_elems // cn))
    if ck > 1024:
        ck = -(-K // -(-K // 1024))                          # equal blocks of at most 1024 nodes
    cr = max(1, min(R, chunk_elems // (cn * ck)))
    return cr, cn, ck


def _blocks(size: int, step: int):
    """``(start, stop)`` of consecutive blocks of ``step`` covering ``range(size)``."""
    return [(i, min(size, i + step)) for i in range(0, size, step)]


def _reciprocal_diff(z: Tensor, w: Tensor, buf: Tensor) -> Tensor:
    """``1 / (z - w)`` written into ``buf`` (no fresh allocation per block); a new tensor while
    torch.compile traces (``out=`` arguments are not traceable, and the compiler plans memory)."""
    if tracing():
        return (z - w).reciprocal()
    torch.sub(z, w, out=buf)
    return buf.reciprocal_()


class _CauchyFn(torch.autograd.Function):
    """``out[r, j, k] = sum_n v[r, j, n] / (z[r, k] - w[r, n])``, recomputing in backward.

    The (R, N, K) Cauchy matrix is visited in (cr, cn, ck) blocks (:func:`_chunks`) written into one
    preallocated buffer (fresh large allocations cost page faults on CPU), never stored whole.
    """

    @staticmethod
    @fp32_forward
    def forward(ctx, v: Tensor, z: Tensor, w: Tensor, chunk_elems: int) -> Tensor:
        R, J, N = v.shape
        K = z.shape[-1]
        cr, cn, ck = _chunks(R, N, K, chunk_elems)
        out = torch.zeros(R, J, K, dtype=v.dtype, device=v.device)
        buf = torch.empty(cr, cn, ck, dtype=v.dtype, device=v.device)
        zT = z[:, None, :]
        for r0, r1 in _blocks(R, cr):
            for n0, n1 in _blocks(N, cn):
                wn = w[r0:r1, n0:n1, None]                               # (cr, cn, 1)
                vn = v[r0:r1, :, n0:n1]
                for k0, k1 in _blocks(K, ck):
                    a = _reciprocal_diff(zT[r0:r1, :, k0:k1], wn, buf[:r1 - r0, :n1 - n0, :k1 - k0])  # (cr, cn, ck)
                    out[r0:r1, :, k0:k1] += vn @ a
        ctx.save_for_backward(v, z, w)
        ctx.chunk_elems = chunk_elems
        return out

    @staticmethod
    @backend.first_order
    @amp_backward
    def backward(ctx, g: Tensor):
        # holomorphic in (v, z, w): grad_x = sum g * conj(d out / d x)  (PyTorch's convention)
        v, z, w = ctx.saved_tensors
        R, J, N = v.shape
        K = z.shape[-1]
        cr, cn, ck = _chunks(R, N, K, ctx.chunk_elems)
        need_v, need_z, need_w = ctx.needs_input_grad[:3]
        gv = torch.zeros_like(v) if need_v else None
        gz = torch.zeros_like(z) if need_z else None
        gw = torch.zeros_like(w) if need_w else None
        vc = v.conj().resolve_conj()
        zc = z.conj().resolve_conj()[:, None, :]
        wc = w.conj().resolve_conj()
        buf = torch.empty(cr, cn, ck, dtype=v.dtype, device=v.device)
        for r0, r1 in _blocks(R, cr):
            for n0, n1 in _blocks(N, cn):
                wn = wc[r0:r1, n0:n1, None]
                vcn = vc[r0:r1, :, n0:n1]
                gw_acc = torch.zeros_like(vcn) if need_w else None
                for k0, k1 in _blocks(K, ck):
                    gc = g[r0:r1, :, k0:k1]                              # (cr, J, ck)
                    ac = _reciprocal_diff(zc[r0:r1, :, k0:k1], wn, buf[:r1 - r0, :n1 - n0, :k1 - k0])  # conj(a)
                    if gv is not None:                                   # need_v
                        gv[r0:r1, :, n0:n1] += gc @ ac.transpose(-1, -2)     # sum_k g conj(a)
                    if need_z or need_w:
                        ac.square_()                                     # conj(a)^2
                        if gw_acc is not None:                           # need_w
                            gw_acc += gc @ ac.transpose(-1, -2)          # sum_k g conj(a)^2
                        if gz is not None:                               # need_z
                            gz[r0:r1, k0:k1] -= (gc * (vcn @ ac)).sum(-2)    # sum_n conj(v a^2)
                if gw is not None and gw_acc is not None:                # need_w
                    gw[r0:r1, n0:n1] = (vcn * gw_acc).sum(-2)
        return gv, gz, gw, None


def cauchy(v: Tensor, z: Tensor, w: Tensor, conj: bool = False, chunk_elems: Optional[int] = None) -> Tensor:
    r"""Memory-efficient Cauchy matrix-vector product ``out_k = sum_n v_n / (z_k - w_n)`` (thesis Def. C.5;
    the naive-sum, linear-memory route of §3.5.3).

    Args:
        v: weights, shape (..., N), complex (real is promoted).
        z: nodes, shape (..., K).
        w: poles, shape (..., N).
        conj: also add the conjugate poles, ``+ conj(v_n) / (z_k - conj(w_n))``.
        chunk_elems: size of the work chunk in complex entries (default :data:`CHUNK_ELEMS`).

    The leading (batch) dims broadcast. Dims along which z and w are constant but v is not
    (e.g. v (H, J, N) with w (H, 1, N)) share their reciprocals: the J sums cost one matmul.

    Returns:
        complex tensor (..., K) (complex128 if any input is float64/complex128).

    Complexity (R = number of distinct (z, w) rows): O(R K N) time for the reciprocals plus
    O(R J K N) multiply-adds; memory O(R (J N + K + J K)) + one chunk O(R N chunk). The backward
    recomputes the Cauchy matrix instead of saving it. The path is chosen by
    :mod:`statespaces.backend`: the Triton kernel for CUDA complex64 inputs when available, this
    chunked PyTorch path otherwise, :func:`cauchy_ref` under backend ``"ref"``.
    """
    if not isinstance(v, Tensor):
        _check(v, z, w)                                          # raises the TypeError
    path = backend.choose("cauchy", v, z, w)
    if path == "ref":
        return cauchy_ref(v, z, w, conj)
    v, z, w = _prepare(v, z, w, conj)
    vg, zg, wg, unshape = _grouped(v, z, w)
    if path == "triton" and v.dtype == torch.complex64:
        out = backend.attempt("cauchy", _cauchy_triton, vg, zg, wg)
        if out is not None:
            return unshape(out)
    return unshape(_CauchyFn.apply(vg, zg, wg, int(chunk_elems or CHUNK_ELEMS)))


def _cauchy_triton(v: Tensor, z: Tensor, w: Tensor) -> Tensor:
    from ..ops.triton.cauchy import cauchy_grouped_triton

    return cauchy_grouped_triton(v, z, w)


def _cauchy_grouped_torch(v: Tensor, z: Tensor, w: Tensor) -> Tensor:
    """The PyTorch path on the grouped form: the twin of the Triton CauchyFn (same arguments), to which its
    backward falls back if its kernels fail."""
    return _CauchyFn.apply(v, z, w, CHUNK_ELEMS)


backend.register_twin("CauchyFn", _cauchy_grouped_torch)


def cauchy_ref(v: Tensor, z: Tensor, w: Tensor, conj: bool = False) -> Tensor:
    r"""Reference twin of :func:`cauchy` (also :func:`cauchy_naive`): materializes the (..., K, N) Cauchy matrix
    (thesis Def. C.5; the naive O(KN) count of Prop. C.6).

    Same arguments and result; O(KN) memory per channel, and autograd keeps the matrix.
    """
    v, z, w = _prepare(v, z, w, conj)
    M = 1.0 / (z.unsqueeze(-1) - w.unsqueeze(-2))               # (..., K, N)
    return (M * v.unsqueeze(-2)).sum(-1)


#: Former name of :func:`cauchy_ref`.
cauchy_naive = cauchy_ref
