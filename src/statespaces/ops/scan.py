r"""Parallel associative scans for linear recurrences ``x_n = M_n x_{n-1} + F_n`` (pure PyTorch).

Two kinds of transition are supported:

* **diagonal**: ``M_n = diag(a_n)``, real or complex, tensors of shape (..., L, N);
* **2x2 block of diagonals** (LinOSS, notes Part 6.1 / seed 001): ``M_n = [[m11, m12], [m21, m22]]``
  where each ``m_ij`` is a diagonal (N,) matrix, so the state is ``x_n = [x1_n; x2_n]`` with
  ``x1_n, x2_n`` in C^N. Here ``M`` is given as a tensor (..., L, 2, 2, N) (the four diagonal
  vectors) and ``F`` as (..., L, 2, N).

A pair ``(a, b)`` stands for the affine map ``x -> a x + b``. The combine rule composes two steps,
with an explicit order (the seed writes ``(a1, b1) • (a2, b2) = (a1 a2, a1 b2 + b1)``, where element
1 is the *later* step; here the arguments are named to make that unambiguous)::

    combine(earlier=(a_i, b_i), later=(a_j, b_j)) = (a_j a_i, a_j b_i + b_j)      # later ∘ earlier

It is associative, so the prefix compositions ``(M_n ... M_0, x_n)`` can be computed by a parallel
scan. :func:`scan_diagonal` / :func:`scan_block2` use the odd/even recursive-doubling scheme
(Blelloch-style, work-efficient): pair neighbours, scan the half-length sequence recursively,
then fix up the even positions. Depth O(log L) (two tensor ops per level, Python recursion over
the ``ceil(log2 L)`` levels only, never a loop over L); work and memory O(L N) per batch row. On the CPU,
:func:`scan_diagonal` loops over time instead when one step's states are wide (:data:`LOOP_STEP_BYTES`: each entry
read and written once beats the doubling's ~10 passes), and it is differentiated by its adjoint scan, run from the
end (:class:`_ScanDiagonal`), not by autograd through the levels.

``scan_loop`` is the sequential reference twin (a Python loop over L) used in tests and benchmarks.

Broadcasting: the transitions may have fewer leading (batch) dims than ``F``, and for a
time-invariant (LTI) system they may have length 1 along L, or be expanded along L (stride 0, e.g.
``m.expand(L, 2, 2, N)``): the level-k transition is then the single matrix ``M^(2^k)`` and only
O(N log L) work is spent on transitions.

When the transitions are real and the forcing complex (LinOSS: real M, complex B u), the forcing is
processed as a real tensor with interleaved (re, im) so that every product is real x real.
"""
from __future__ import annotations

import math
from typing import Callable, List, Optional, Tuple

import torch

from .. import backend
from .._checks import tracing
from ._grad import reduce_to

Tensor = torch.Tensor
_List = List[Tensor]

__all__ = [
    "combine_diagonal",
    "combine_block2",
    "scan_diagonal",
    "scan_block2",
    "scan_loop",
    "scan_diagonal_ref",
    "scan_block2_ref",
]


# ---- combine rules (explicit order: later ∘ earlier) ------------------------------------------
def combine_diagonal(earlier: Tuple[Tensor, Tensor], later: Tuple[Tensor, Tensor]) -> Tuple[Tensor, Tensor]:
    """Compose two diagonal affine steps: apply ``earlier`` first, then ``later`` (the scan operator of
    seed 001, with the argument order made explicit; notes Part 6.1).

    ``(a_i, b_i), (a_j, b_j) -> (a_j a_i, a_j b_i + b_j)``. Shapes broadcast elementwise.
    """
    (ai, bi), (aj, bj) = earlier, later
    return aj * ai, aj * bi + bj


def combine_block2(earlier: Tuple[Tensor, Tensor], later: Tuple[Tensor, Tensor]) -> Tuple[Tensor, Tensor]:
    """Compose two 2x2-block-diagonal affine steps: apply ``earlier`` first, then ``later`` (seed 001's
    scan operator on LinOSS blocks; notes Part 6.1).

    Each step is ``(M, F)`` with M (..., 2, 2, N) and F (..., 2, N); returns
    ``(M_j M_i, M_j F_i + F_j)`` in the same layout (O(N) work: 2x2 products of diagonals).
    """
    (Mi, Fi), (Mj, Fj) = earlier, later
    a = _block_a(_unbind_block(Mi), _unbind_block(Mj))
    b = _block_b(_unbind_block(Mj), list(Fi.unbind(-2)), list(Fj.unbind(-2)))
    return _stack_block(a), torch.stack(b, -2)


# ---- internal representation: lists of tensors with the length axis at dim -2 ---------------
def _diag_a(ae: _List, al: _List) -> _List:
    return [al[0] * ae[0]]


def _diag_b(al: _List, be: _List, bl: _List) -> _List:
    return [al[0] * be[0] + bl[0]]


def _block_a(e: _List, l: _List) -> _List:
    e11, e12, e21, e22 = e
    l11, l12, l21, l22 = l
    return [l11 * e11 + l12 * e21, l11 * e12 + l12 * e22, l21 * e11 + l22 * e21, l21 * e12 + l22 * e22]


def _block_b(l: _List, be: _List, bl: _List) -> _List:
    l11, l12, l21, l22 = l
    return [l11 * be[0] + l12 * be[1] + bl[0], l21 * be[0] + l22 * be[1] + bl[1]]


def _unbind_block(M: Tensor) -> _List:
    r0, r1 = M.unbind(-3)
    return [*r0.unbind(-2), *r1.unbind(-2)]


def _stack_block(a: _List) -> Tensor:
    return torch.stack([torch.stack(a[:2], -2), torch.stack(a[2:], -2)], -3)


def _sl(ts: _List, s: slice) -> _List:
    return [t[..., s, :] for t in ts]


def _interleave(first: Tensor, rest_even: Optional[Tensor], odd: Tensor, L: int) -> Tensor:
    """Tensor of length L with position 0 = first, positions 2, 4, ... = rest_even (None: there are none, L = 2),
    1, 3, ... = odd."""
    parts = [first, odd] if rest_even is None else [first, rest_even, odd]
    shape = torch.broadcast_shapes(*(t.shape[:-2] for t in parts))
    dtype = first.dtype
    for t in parts:
        dtype = torch.promote_types(dtype, t.dtype)
    out = torch.empty(*shape, L, first.shape[-1], dtype=dtype, device=first.device)
    out[..., 0:1, :] = first
    if rest_even is not None:
        out[..., 2::2, :] = rest_even
    out[..., 1::2, :] = odd
    return out


_CombineA = Callable[[_List, _List], _List]
_CombineB = Callable[[_List, _List, _List], _List]


def _assoc_scan(a: _List, b: _List, comb_a: _CombineA, comb_b: _CombineB, invariant: bool) -> _List:
    """Inclusive scan of (a, b) pairs along dim -2 by odd/even recursive doubling; returns the
    forcing part of the prefix compositions (= the states started from zero).

    The b-part of a composition needs only the later step's transition, so prefix transitions are
    never formed. With ``invariant`` (time-invariant transitions, a of length 1 along dim -2) every
    element of a level has the same transition ``M^(2^k)``, so the a-work is O(N log L).
    """
    L = b[0].shape[-2]
    if L == 1:
        return b
    m = L // 2

    def part(ts: _List, s: slice) -> _List:
        return ts if invariant else _sl(ts, s)

    ae, al = part(a, slice(0, 2 * m, 2)), part(a, slice(1, 2 * m, 2))
    be, bl = _sl(b, slice(0, 2 * m, 2)), _sl(b, slice(1, 2 * m, 2))
    # the level below scans the m pair-compositions; its outputs are the prefixes at odd positions
    odd_b = _assoc_scan(comb_a(ae, al), comb_b(al, be, bl), comb_a, comb_b, invariant)
    e = (L - 1) // 2                                            # even positions 2, 4, ... < L
    if e == 0:          # L = 2: no even position past 0 (complex ops on empty slices broke inductor's lowering)
        return [_interleave(b0[..., 0:1, :], None, o, L) for b0, o in zip(b, odd_b)]
    ev_b = comb_b(part(a, slice(2, None, 2)), _sl(odd_b, slice(0, e)), _sl(b, slice(2, None, 2)))
    return [_interleave(b0[..., 0:1, :], x, o, L) for b0, x, o in zip(b, ev_b, odd_b)]


def _fold_initial(a: _List, b: _List, x0: Optional[_List], comb_b: _CombineB) -> _List:
    """Replace F_0 by M_0 x0 + F_0 so the zero-start scan yields the states from x0."""
    if x0 is None:
        return b
    first = comb_b(_sl(a, slice(0, 1)), [x.unsqueeze(-2) for x in x0], _sl(b, slice(0, 1)))
    out = []
    for f, t in zip(first, b):
        shape = torch.broadcast_shapes(f.shape[:-2], t.shape[:-2])
        out.append(torch.cat([f.expand(*shape, 1, t.shape[-1]), t[..., 1:, :].expand(*shape, -1, -1)], -2))
    return out


def _realify(a: _List, b: _List, x0: Optional[_List]):
    """Real transitions with complex forcing: view the forcing as real with (re, im) interleaved."""
    if any(t.is_complex() for t in a) or not any(t.is_complex() for t in b):
        return a, b, x0, False
    rdt = a[0].dtype if a[0].is_floating_point() else torch.get_default_dtype()
    cdt = torch.promote_types(b[0].dtype, torch.complex64 if rdt == torch.float32 else torch.complex128)
    for t in x0 or []:                        # x0 takes part in the promotion (as in the loop and scan_loop)
        cdt = torch.promote_types(cdt, t.dtype)

    def rv(t: Tensor) -> Tensor:
        return torch.view_as_real(t.to(cdt).contiguous()).flatten(-2)

    def dup(t: Tensor) -> Tensor:
        return t.unsqueeze(-1).expand(*t.shape, 2).flatten(-2)

    a = [dup(t) for t in a]
    b = [rv(t) for t in b]
    x0 = None if x0 is None else [rv(t) for t in x0]
    return a, b, x0, True


def _unrealify(t: Tensor) -> Tensor:
    return torch.view_as_complex(t.unflatten(-1, (t.shape[-1] // 2, 2)).contiguous())


def _check_lengths(a_shape: torch.Size, b_shape: torch.Size, what: str) -> int:
    if len(b_shape) < 2 or b_shape[-2] < 1:
        raise ValueError(f"{what}: forcing must have shape (..., L, N) with L >= 1, got {tuple(b_shape)}")
    if len(a_shape) < 2 or a_shape[-2] not in (1, b_shape[-2]) or a_shape[-1] != b_shape[-1]:
        raise ValueError(
            f"{what}: transitions must have shape (..., L={b_shape[-2]}, N={b_shape[-1]}) matching the "
            f"forcing (or length 1 for a time-invariant system), got {tuple(a_shape)}"
        )
    return b_shape[-2]


def _check_initial(x0_shape: torch.Size, batch: Tuple[torch.Size, ...], state: Tuple[int, ...], what: str,
                   form: str) -> None:
    """``x0`` must broadcast to the shape of one state, ``broadcast(*batch) + state``, without enlarging it."""
    want = tuple(torch.broadcast_shapes(*batch)) + tuple(state)       # the forcing and transitions are checked
    try:
        ok = len(x0_shape) >= len(state) and tuple(torch.broadcast_shapes(tuple(x0_shape), want)) == want
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(f"{what}: x0 must have shape {form}, broadcastable to one state of shape {want}; "
                         f"got {tuple(x0_shape)}")


def _time_invariant(a: _List) -> Tuple[_List, bool]:
    """Transitions given with length 1, or expanded along L (stride 0), are time-invariant."""
    if all(t.shape[-2] == 1 or t.stride(-2) == 0 for t in a):
        return [t[..., :1, :] for t in a], True
    L = max(t.shape[-2] for t in a)
    return [t.expand(*t.shape[:-2], L, t.shape[-1]) for t in a], False


def _run(a: _List, b: _List, x0: Optional[_List], comb_a: _CombineA, comb_b: _CombineB) -> _List:
    a, invariant = _time_invariant(a)
    a, b, x0, real_view = _realify(a, b, x0)
    b = _fold_initial(a, b, x0, comb_b)
    if b[0].shape[-2] == 1:      # one step: x_0 = a_0 * 0 + b_0, in the batch shape and dtype a longer scan has
        out = comb_b(a, [torch.zeros_like(t) for t in b], b)
    else:
        out = _assoc_scan(a, b, comb_a, comb_b, invariant)
    return [_unrealify(t) for t in out] if real_view else out


# ---- public scans ------------------------------------------------------------------------------
def scan_diagonal(a: Tensor, b: Tensor, x0: Optional[Tensor] = None) -> Tensor:
    r"""All states of ``x_n = a_n * x_{n-1} + b_n`` (n = 0..L-1, ``x_{-1} = x0`` or 0) by a parallel scan:
    the diagonal recurrence (thesis eq. 2.5, §3.2.1) with the associative operator of seed 001.

    Args:
        a: diagonal transitions (..., L, N), real or complex; leading dims broadcast against ``b``.
        b: forcing (..., L, N), real or complex.
        x0: state before the first step (..., N), or None for zeros.

    Returns:
        x: (..., L, N) with the broadcast batch shape.

    The path is chosen by :mod:`statespaces.backend`: the Triton chunked scan for CUDA fp32 /
    complex64 inputs when available, this parallel scan otherwise, :func:`scan_diagonal_ref`
    under backend ``"ref"``.
    """
    _check_lengths(a.shape, b.shape, "scan_diagonal")
    if x0 is not None:
        _check_initial(x0.shape, (a.shape[:-2], b.shape[:-2]), (b.shape[-1],), "scan_diagonal", "(..., N)")
    path = backend.choose("scan_diagonal", a, b, x0)
    if path == "triton":
        out = backend.attempt("scan_diagonal", _scan_diagonal_triton, a, b, x0)
        if out is not None:
            return out
    return scan_diagonal_ref(a, b, x0) if path == "ref" else _scan_diagonal_torch(a, b, x0)


def _scan_diagonal_triton(a: Tensor, b: Tensor, x0: Optional[Tensor] = None) -> Tensor:
    from .triton.scan import scan_diagonal_triton

    return scan_diagonal_triton(a, b, x0)


def _scan_diagonal_torch(a: Tensor, b: Tensor, x0: Optional[Tensor] = None) -> Tensor:
    """The PyTorch parallel scan of :func:`scan_diagonal` (any device, any dtype), differentiated by its adjoint
    scan (:class:`_ScanDiagonal`)."""
    if backend.transforming():      # torch.func / forward-mode AD: no tangent rule in the Function (plain autograd)
        return _doubling(a, b, x0)
    return _ScanDiagonal.apply(a, b, x0)


def _doubling(a: Tensor, b: Tensor, x0: Optional[Tensor]) -> Tensor:
    """The odd/even doubling scan of ``x_l = a_l x_{l-1} + b_l`` (plain ops, differentiable by autograd)."""
    return _run([a], [b], None if x0 is None else [x0], _diag_a, _diag_b)[0]


class _ScanDiagonal(torch.autograd.Function):
    r"""The PyTorch scan of :func:`scan_diagonal` with the adjoint recurrence as its backward.

    Autograd through the odd/even scan itself recorded every slice, product and interleave of every level, and its
    backward allocated a zero-filled full-size gradient for each strided slice: 10x the forward's time (fwd+bwd
    1.1 s against a 0.11 s forward at (4, 64, 1024, 32) complex64, one CPU thread). The gradient of a linear
    recurrence is another one, run from the end: the adjoint ``lam_l = dLoss/dx_l`` obeys
    ``lam_l = conj(a_{l+1}) lam_{l+1} + g_l``, then ``grad_b = lam``, ``grad_a_l = lam_l conj(x_{l-1})``
    (``x_{-1} = x0``) and ``grad_x0 = conj(a_0) lam_0``, each summed over the dims its input was broadcast along
    (the Triton :class:`~statespaces.ops.triton.scan.ScanDiagonalFn` computes the same). The backward is one more
    scan, so it costs about what the forward does, and it is built of differentiable ops (this scan again), so
    second derivatives work. Inside ``torch.func`` transforms and forward-mode AD the plain scan runs instead."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, x0: Optional[Tensor]) -> Tensor:
        out = _loop(a, b, x0) if _loops(a, b) else _doubling(a, b, x0)
        ctx.save_for_backward(a, x0, out)
        ctx.b_meta = (b.shape, b.dtype)
        return out

    @staticmethod
    def backward(ctx, g: Tensor):
        a, x0, x = ctx.saved_tensors
        need_a, need_b, need_x0 = ctx.needs_input_grad
        lam = _adjoint(a, g)
        b_shape, b_dtype = ctx.b_meta
        grad_b = reduce_to(lam, b_shape, b_dtype) if need_b else None
        grad_a = reduce_to(lam * _previous(x, x0).conj(), a.shape, a.dtype) if need_a else None
        grad_x0 = reduce_to(a[..., 0, :].conj() * lam[..., 0, :], x0.shape, x0.dtype) if need_x0 else None
        return grad_a, grad_b, grad_x0


#: Bytes of one step's states (batch x N) from which the CPU scan runs a loop over time into a preallocated output
#: instead of the odd/even doubling: past about 2,048 complex64 entries per step the loop's ~5 us per step is paid
#: back, and it reads and writes each entry once where the doubling passes over the sequence ~10 times. One CPU
#: thread, complex64, forward: (4 x 64 x 32) per step, L = 1024: 67 vs 155 ms; 1,024 per step, L = 2048: 21 vs
#: 46 ms; 256 per step: 15 vs 10 ms (the doubling wins). Rows of the state narrower than :data:`LOOP_ROW_BYTES`
#: stay with the doubling: a step's slice is then scattered (strided by L N), and the loop lost (N = 1, 2,048 or
#: 4,096 rows, L = 2048: 1.7x-4x the doubling's time; N = 4 complex64: 0.45x).
LOOP_STEP_BYTES = 1 << 14
LOOP_ROW_BYTES = 32


def _loops(a: Tensor, b: Tensor) -> bool:
    """Whether the CPU scan of ``(a, b)`` loops over time (:data:`LOOP_STEP_BYTES`; never while a compiler or a
    ``torch.func`` transform traces: a loop would be unrolled L times)."""
    if b.device.type != "cpu" or b.shape[-2] < 2 or tracing():
        return False
    row = b.shape[-1] * torch.promote_types(a.dtype, b.dtype).itemsize
    batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    return row >= LOOP_ROW_BYTES and math.prod(batch) * row >= LOOP_STEP_BYTES


def _loop(a: Tensor, b: Tensor, x0: Optional[Tensor], adjoint: bool = False) -> Tensor:
    """``x_l = a_l x_{l-1} + b_l`` from ``x_{-1} = x0`` (zeros if None), one step at a time into a preallocated
    (..., L, N) output; with ``adjoint`` the adjoint recurrence ``x_l = conj(a_{l+1}) x_{l+1} + b_l`` from the end
    (``x_{L-1} = b_{L-1}``; x0 unused). Real transitions with complex forcing multiply the (re, im) pairs."""
    L, N = b.shape[-2], b.shape[-1]
    dtype = torch.promote_types(a.dtype, b.dtype)
    batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    if x0 is not None:                                           # as the doubling: x0 takes part in the promotion
        dtype = torch.promote_types(dtype, x0.dtype)
        batch = torch.broadcast_shapes(batch, x0.shape[:-1])
    out = torch.empty(*batch, L, N, dtype=dtype, device=b.device)
    pairs = dtype.is_complex and not a.is_complex()              # real a, complex forcing: (re, im) pairs
    o = torch.view_as_real(out) if pairs else out
    f = b if b.dtype == dtype else b.to(dtype)
    f = torch.view_as_real(f) if pairs else f
    a = a if a.dtype in (dtype, dtype.to_real()) else a.to(dtype.to_real() if pairs else dtype)
    a = a.conj() if adjoint else a                               # a lazy view (conjugate bit)
    steps = [t.unsqueeze(-1) if pairs else t for t in a.unbind(-2)]
    one = _invariant(a)
    time_dim = -3 if pairs else -2
    fs, os = f.unbind(time_dim), o.unbind(time_dim)
    if adjoint:
        x = os[L - 1]
        x.copy_(fs[L - 1])
        for n in range(L - 2, -1, -1):
            x = torch.addcmul(fs[n], steps[0 if one else n + 1], x, out=os[n])
        return out
    x = torch.zeros_like(os[0]) if x0 is None else (torch.view_as_real(x0.to(dtype)) if pairs else x0.to(dtype))
    for n in range(L):
        x = torch.addcmul(fs[n], steps[0 if one else n], x, out=os[n])
    return out


def _adjoint(a: Tensor, g: Tensor) -> Tensor:
    """``lam_l = conj(a_{l+1}) lam_{l+1} + g_l`` from ``lam_{L-1} = g_{L-1}``: the adjoint of the scan of
    :class:`_ScanDiagonal` for output gradient g. Differentiable (the scan run from the end, through this
    Function) when the backward itself is recorded (second derivatives), else the loop or the doubling. A backward
    run under ``vmap`` (``autograd.grad(..., is_grads_batched=True)``, ``jacobian(vectorize=True)``) or with
    forward-mode tangents (forward-over-reverse) takes the sequential twin :func:`scan_loop`, out of place and with
    plain autograd (the doubling's interleave and the loop write in place; the Function has no tangent rule)."""
    plain = backend.transforming() or (not tracing() and _batched(g))      # (Dynamo cannot trace the test)
    if not plain and not torch.is_grad_enabled() and _loops(a, g):
        return _loop(a, g, None, adjoint=True)
    if _invariant(a):                            # lam_l = conj(a) lam_{l+1} + g_l: one transition
        a_rev = a[..., :1, :].conj()
    else:                                        # run from the end; the last transition meets a zero state
        a_rev = torch.cat([a[..., 1:, :], a[..., :1, :]], -2).conj().flip(-2)
    if plain:
        return scan_loop(a_rev, g.flip(-2)).flip(-2)
    if torch.is_grad_enabled():
        return _ScanDiagonal.apply(a_rev, g.flip(-2), None).flip(-2)
    return _doubling(a_rev, g.flip(-2), None).flip(-2)


def _batched(t: Tensor) -> bool:
    """A tensor of a ``vmap`` (the autograd engine's own, ``is_grads_batched``, or ``torch.func``'s), whose
    operations must be out of place."""
    fn = torch._C._functorch
    return bool(fn.is_legacy_batchedtensor(t) or fn.is_batchedtensor(t))


def _invariant(a: Tensor) -> bool:
    """Transitions of one step for all (length 1, or expanded along L with stride 0): a time-invariant system."""
    return a.shape[-2] == 1 or a.stride(-2) == 0


def _previous(x: Tensor, x0: Optional[Tensor]) -> Tensor:
    """The states one step earlier, ``x_{l-1}`` (..., L, N), with ``x_{-1} = x0`` (zeros if None)."""
    first = torch.zeros_like(x[..., :1, :]) if x0 is None else x0.unsqueeze(-2).expand_as(x[..., :1, :])
    return torch.cat([first.to(x.dtype), x[..., :-1, :]], -2)


#: The twin of the Triton ScanDiagonalFn (same arguments): its backward falls back to it if its kernels fail.
backend.register_twin("ScanDiagonalFn", _scan_diagonal_torch)


def scan_diagonal_ref(a: Tensor, b: Tensor, x0: Optional[Tensor] = None) -> Tensor:
    """Reference twin of :func:`scan_diagonal`: the sequential loop :func:`scan_loop` (thesis eq. 2.5, one step
    at a time). Same shapes."""
    return scan_loop(a, b, x0)


def scan_block2(M: Tensor, F: Tensor, x0: Optional[Tensor] = None) -> Tensor:
    r"""All states of ``x_n = M_n x_{n-1} + F_n`` for 2x2 blocks of diagonals, by a parallel scan.

    This is the LinOSS recurrence (seed 001, ``x_n = M x_{n-1} + F_n`` with ``x = [z; y]``).

    Args:
        M: transitions (..., L, 2, 2, N): ``M[..., i, j, :]`` is the diagonal of block (i, j).
        F: forcing (..., L, 2, N).
        x0: state before the first step (..., 2, N), or None for zeros.

    Returns:
        x: (..., L, 2, N).
    """
    if M.dim() < 4 or M.shape[-3:-1] != (2, 2):
        raise ValueError(f"scan_block2: M must have shape (..., L, 2, 2, N), got {tuple(M.shape)}")
    if F.dim() < 3 or F.shape[-2] != 2:
        raise ValueError(f"scan_block2: F must have shape (..., L, 2, N), got {tuple(F.shape)}")
    _check_lengths(M.shape[:-3] + M.shape[-1:], F.shape[:-2] + F.shape[-1:], "scan_block2")
    if x0 is not None:
        _check_initial(x0.shape, (M.shape[:-4], F.shape[:-3]), (2, F.shape[-1]), "scan_block2", "(..., 2, N)")
    if backend.choose("scan_block2") == "ref":
        return scan_block2_ref(M, F, x0)
    a = _unbind_block(M)
    b = list(F.unbind(-2))
    x = None if x0 is None else list(x0.unbind(-2))
    out = _run(a, b, x, _block_a, _block_b)
    return torch.stack(out, -2)


def scan_block2_ref(M: Tensor, F: Tensor, x0: Optional[Tensor] = None) -> Tensor:
    """Reference twin of :func:`scan_block2`: the sequential loop :func:`scan_loop` (``block=True``): the
    seed 001 recurrence one step at a time. Same shapes."""
    return scan_loop(M, F, x0, block=True)


def scan_loop(M: Tensor, F: Tensor, x0: Optional[Tensor] = None, block: bool = False) -> Tensor:
    r"""Sequential reference twin of :func:`scan_diagonal` (``block=False``) and
    :func:`scan_block2` (``block=True``): a Python loop over L applying ``x = M_n x + F_n``
    (the recurrent view, thesis eq. 2.5, §2.3.2).

    Same shapes and conventions as the parallel scans.
    """
    if block:
        L = F.shape[-3]
        a = _unbind_block(M.expand(*M.shape[:-4], L, 2, 2, M.shape[-1]))
        dtype = torch.promote_types(M.dtype, F.dtype)
        shape = torch.broadcast_shapes(M.shape[:-4], F.shape[:-3])
        x1 = torch.zeros(*shape, F.shape[-1], dtype=dtype, device=F.device)
        x2 = torch.zeros_like(x1)
        if x0 is not None:
            x1, x2 = x1 + x0[..., 0, :], x2 + x0[..., 1, :]
        # unbind once (not t[..., n, :] per step: its backward would allocate a full-size gradient per step)
        steps = list(zip(*(t.unbind(-2) for t in a)))
        f1s, f2s = F[..., 0, :].unbind(-2), F[..., 1, :].unbind(-2)
        out1, out2 = [], []
        for n in range(L):
            m11, m12, m21, m22 = steps[n]
            x1, x2 = m11 * x1 + m12 * x2 + f1s[n], m21 * x1 + m22 * x2 + f2s[n]
            out1.append(x1)
            out2.append(x2)
        return torch.stack([torch.stack(out1, -2), torch.stack(out2, -2)], -2)
    L = F.shape[-2]
    M = M.expand(*M.shape[:-2], L, M.shape[-1])
    shape = torch.broadcast_shapes(M.shape[:-2], F.shape[:-2])
    x = torch.zeros(*shape, F.shape[-1], dtype=torch.promote_types(M.dtype, F.dtype), device=F.device)
    if x0 is not None:
        x = x + x0
    out = []
    for m, f in zip(M.unbind(-2), F.unbind(-2)):
        x = m * x + f
        out.append(x)
    return torch.stack(out, -2)
