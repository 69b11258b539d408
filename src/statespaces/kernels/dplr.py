r"""Diagonal plus low-rank (DPLR) SSMs: kernel, state maps and step (thesis §3.3, Alg. 1, app. C.1).

Conventions (one per-channel SISO system; H channels, M = N/2 conjugate-pair modes, rank r):

* Hurwitz DPLR (§3.3.3, Lemma 3.8): ``A = diag(Lambda) - sum_r p_r p_r^*`` over the *full*
  conjugate-symmetric set of N modes, given by its half: ``Lambda`` (H, M), ``P`` (r, H, M), with
  the full vectors ``[Lambda, conj Lambda]``, ``[P_r, conj P_r]``, ``[B, conj B]``, ``[C, conj C]``.
  The low-rank term couples the two halves, so the output is *not* ``2 Re`` of an M-mode system:
  every sum over modes below runs over all N (the Cauchy op's ``conj=True``).
* Output ``y = sum_n C_n x_n`` over the full set (transpose convention, as S4D: ``2 Re(C . x)`` on
  the half state). The thesis writes ``C^* x`` (Remark C.1); our C is the conjugate of its C.
* Real form: with ``xi = [Re x; Im x]`` (the half state), the system is the real N-dim SSM
  ``A_R = [[Re L, -Im L], [Im L, Re L]] - 2 sum_r q_r q_r^T``, ``q_r = [Re P_r; Im P_r]``,
  ``b_R = [Re B; Im B]``, ``c_R = 2 [Re C; -Im C]`` (:func:`dplr_real_system`).
* Bilinear discretization only (§3.4.1: the inverse of a DPLR matrix is DPLR; its exponential is
  not). ``dA = (I - dt/2 A)^{-1} (I + dt/2 A)``, ``dB = (I - dt/2 A)^{-1} dt B``.

Kernel algorithm (app. C.1.2, Thm 3.6, Algorithm 1 with the notes' sign resolutions):

1. truncation correction ``C~^T = C^T (I - dA^L)`` (eq. C.4): the rows ``c_R^T dA^L`` of the real (H, N, N)
   form by squarings, then row products (:func:`truncated_C_rows`), O(H N^3 log L) time at most, O(H N^2)
   memory, independent of batch;
2. nodes ``omega_k = exp(-2 pi i k / L)``, ``k = 0 .. L//2`` (the spectrum of a real kernel is
   Hermitian, so half the nodes suffice and ``irfft`` inverts it, Lemma C.2);
3. ``K^(omega) = 2/(1+omega) [k00 - k01 (I + k11)^{-1} k10]`` (Lemmas C.3-C.4, Woodbury), where
   ``k_ab = a^T R(g) b`` over the full set, ``R(g) = (g - Lambda)^{-1}``,
   ``g(omega) = (2/dt)(1-omega)/(1+omega) = (2/dt) i tan(pi k/L)``: (1+r)^2 Cauchy sums sharing
   one Cauchy matrix (:func:`statespaces.kernels.cauchy.cauchy`);
4. the removable singularity at ``omega = -1`` (k = L/2, L even): there
   ``(I - dA omega)^{-1} dB = (dt/2) B`` exactly, so ``K^(-1) = (dt/2) C~^T B`` (full set);
5. ``K = irfft(K^, n=L)``.

Total: O(H (N + L) log L + H N^3 log L) time in exact arithmetic terms; the Cauchy sums are
O(H N L) multiply-adds done in chunks; memory O(H (r^2 L + N^2)), never O(H N L).
Alternative considered: evaluating at the 2L-th roots of unity would give the FFT convolution's
spectrum directly, but doubles the Cauchy work to save two O(H L log L) FFTs; not worth it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import torch

from .. import backend
from .._checks import check_length, tracing
from .._linalg import solve
from .cauchy import cauchy, cauchy_naive
from .chunked import rows_times_power

Tensor = torch.Tensor

#: Cauchy backends selectable by name (``"chunked"`` is the memory-efficient default).
CAUCHY_BACKENDS = {"chunked": cauchy, "naive": cauchy_naive}


def _backend(name: str) -> Callable:
    if name not in CAUCHY_BACKENDS:
        raise ValueError(f"unknown Cauchy backend {name!r}; valid: {', '.join(CAUCHY_BACKENDS)}")
    return CAUCHY_BACKENDS[name]


# ---- dense forms (reference, O(N^2) per channel) ------------------------------------------------
_WOODBURY = "Woodbury resolvent: I + P^* R P"


def _solve(A: Tensor, B: Tensor, what: str) -> Tensor:
    """``torch.linalg.solve(A, B)`` without its host sync (on CUDA it reads the LU pivots' status on the
    host at every call): ``solve_ex``, and a singular system refused by :func:`~statespaces._checks.refuse_if`
    (``ValueError`` on CPU, ``torch._assert_async`` on CUDA; issue 17 item 2): :func:`statespaces._linalg.solve`
    with this module's message, which folds B's leading batch dimensions into its columns (right under
    ``torch.func.vmap``)."""
    return solve(A, B, f"{what}: {{n}} singular linear system(s); the SSM parameters make it non-invertible (a "
                       "pole on a node of the frequency grid, or a diverged run): re-initialize or reload them",
                 ValueError)


def dplr_full(Lambda: Tensor, P: Tensor) -> Tensor:
    r"""Full complex state matrix ``diag([L, conj L]) - sum_r [p; conj p][p; conj p]^*``
    (Hurwitz DPLR, thesis §3.3.3, Lemma 3.8; conjugate pairs, §3.4.5).

    Args: Lambda (..., M), P (r, ..., M). Returns (..., 2M, 2M) complex.
    """
    Lf = torch.cat([Lambda, Lambda.conj()], -1)
    Pf = torch.cat([P, P.conj()], -1)                                   # (r, ..., N)
    return torch.diag_embed(Lf) - torch.einsum("r...n,r...m->...nm", Pf, Pf.conj())


def dplr_real_system(Lambda: Tensor, P: Tensor, B: Tensor, C: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    r"""Real N-dim form ``(A_R, b_R, c_R)`` of the conjugate-symmetric DPLR system (see module doc): the same
    SSM in another state basis (thesis Lemma 3.3, §3.4.5).

    Args: Lambda (H, M), P (r, H, M), B (H, M), C (..., H, M).
    Returns: A_R (H, N, N), b_R (H, N), c_R (..., H, N), real, N = 2M.
    """
    A = real_A(Lambda, P)
    b = torch.cat([B.real, B.imag], -1)
    c = 2 * torch.cat([C.real, -C.imag], -1)
    return A, b, c


def real_A(Lambda: Tensor, P: Tensor) -> Tensor:
    """Real (H, N, N) state matrix of the half parameterization (see :func:`dplr_real_system`)."""
    lr, li = Lambda.real, Lambda.imag
    top = torch.cat([torch.diag_embed(lr), -torch.diag_embed(li)], -1)
    bot = torch.cat([torch.diag_embed(li), torch.diag_embed(lr)], -1)
    q = torch.cat([P.real, P.imag], -1)                                 # (r, H, N)
    return torch.cat([top, bot], -2) - 2 * torch.einsum("rhn,rhm->hnm", q, q)


def bilinear_real(A: Tensor, dt: Tensor) -> Tensor:
    r"""``dA = (I - dt/2 A)^{-1} (I + dt/2 A)`` for real A (H, N, N), dt (H,) (bilinear, thesis eq. 2.4)."""
    s = (dt / 2)[:, None, None]
    eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
    return _solve(eye - s * A, eye + s * A, "bilinear_real: I - (dt/2) A")


def matrix_power(X: Tensor, L: int) -> Tensor:
    r"""``X^L`` by repeated squaring: ``floor(log2 L)`` squarings + ``popcount(L) - 1`` products.

    ``X`` (..., N, N), ``L >= 0`` (``X^0 = I``). The squaring of thesis §3.1.2, used here only for ``dA^L``
    (eq. C.4)."""
    if L < 0:
        raise ValueError(f"matrix_power needs a power L >= 0, got L={L}")
    if L == 0:
        return torch.eye(X.shape[-1], dtype=X.dtype, device=X.device).expand_as(X).clone()
    result: Optional[Tensor] = None
    base = X
    while True:
        if L & 1:
            result = base if result is None else result @ base
        L >>= 1
        if not L:
            assert result is not None                                  # L >= 1 had a set bit
            return result
        base = base @ base


def _bilinear_factors(Lambda: Tensor, P: Tensor, dt: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    r"""The Woodbury factors of ``(I - sA_R)^{-1} = D^{-1} - D^{-1} q K^{-1} q^T D^{-1}``, ``s = dt/2``,
    ``K = I/(2s) + q^T D^{-1} q``, with D the real form of ``diag(1 - s Lambda)`` (its inverse acts on a real-form
    vector as the complex product with ``d = 1/(1 - s Lambda)``, its transpose as that with ``conj d``).

    Returns ``d`` (H, M) complex, ``Dq = D^{-1} q`` (H, N, r) and ``S = K^{-1} q^T D^{-1}`` (H, r, N): O(H N r),
    nothing (H, N, N)."""
    s = (dt / 2)[:, None]
    d = 1 / (1 - s * Lambda)                                            # (H, M)
    q = _to_real(P)                                                     # (r, H, N)
    Dq = _to_real(d * P)                                                # D^{-1} q_r, (r, H, N)
    DqT = _to_real(d.conj() * P)                                        # D^{-T} q_r
    r = P.shape[0]
    eye = torch.eye(r, dtype=q.dtype, device=q.device)
    core = eye / (2 * s[..., None]) + torch.einsum("ahn,bhn->hab", q, Dq)          # (H, r, r)
    S = _solve(core, DqT.transpose(0, 1), "bilinear_dplr_real: the Woodbury core")   # (H, r, N)
    return d, Dq.permute(1, 2, 0), S


def bilinear_dplr_real(Lambda: Tensor, P: Tensor, dt: Tensor) -> Tensor:
    r"""Real (H, N, N) bilinear ``dA = 2 (I - sA)^{-1} - I`` without a dense solve (Woodbury,
    :func:`_bilinear_factors`): ``dA = (2 D^{-1} - I) - 2 Dq S``, one (H, N, r) x (H, r, N) product plus the
    three diagonals of the block-diagonal ``2 D^{-1} - I`` (``2 Re d - 1`` on the main one, ``-/+ 2 Im d`` at
    offsets ``+/- M``). O(H N^2 r); the dense form (:func:`bilinear_real` of :func:`real_A`) is its twin in
    the tests. Thesis app. C.1.1 (Thm 3.5): ``(I - dt/2 A)^{-1}`` by Woodbury."""
    return _dense_dA(*_bilinear_factors(Lambda, P, dt))


def _dense_dA(d: Tensor, Dq: Tensor, S: Tensor) -> Tensor:
    """``dA = (2 D^{-1} - I) - 2 Dq S`` (H, N, N) from the factors of :func:`_bilinear_factors`."""
    M = d.shape[-1]
    dA = torch.bmm(Dq, -2 * S)
    main = 2 * d.real - 1
    dA.diagonal(dim1=-2, dim2=-1).add_(torch.cat([main, main], -1))
    dA.diagonal(M, dim1=-2, dim2=-1).sub_(2 * d.imag)
    dA.diagonal(-M, dim1=-2, dim2=-1).add_(2 * d.imag)
    return dA


#: Largest rank r and mode count M that :func:`bilinear_dplr_system` sends to its Triton kernel: the kernel's own
#: ``MAX_RANK`` and ``MAX_MODES`` (:mod:`statespaces.ops.triton.dplr_discrete`), repeated here so that the CPU path
#: never imports triton; a test checks that the two agree.
TRITON_MAX_RANK, TRITON_MAX_MODES = 2, 32


def bilinear_dplr_system(Lambda: Tensor, P: Tensor, B: Tensor, dt: Tensor) -> Tuple[Tensor, Tensor]:
    r"""Real bilinear ``dA`` (H, N, N) (:func:`bilinear_dplr_real`) and ``dB = (dt/2)(b + dA b)`` (H, N),
    ``b = [Re B; Im B]`` (thesis app. C.1.1, Thm 3.5): S4's dense real discrete system.

    Args:
        Lambda: (H, M) complex. P: (r, H, M) complex. B: (H, M) complex. dt: (H,) real.

    Path (:mod:`statespaces.backend`, op ``"dplr_discrete"``): on CUDA in complex64 with r <= 2 and M <= 32,
    one Triton launch forward and one backward (:mod:`statespaces.ops.triton.dplr_discrete`, float64 inside);
    else :func:`bilinear_dplr_system_ref`, its twin. A Triton failure warns once and falls back.
    """
    if Lambda.dim() != 2 or P.dim() != 3 or P.shape[1:] != Lambda.shape or B.shape != Lambda.shape \
            or dt.shape != Lambda.shape[:1]:
        raise ValueError(f"bilinear_dplr_system: expected Lambda (H, M), P (r, H, M), B (H, M), dt (H,); got Lambda "
                         f"{tuple(Lambda.shape)}, P {tuple(P.shape)}, B {tuple(B.shape)}, dt {tuple(dt.shape)}")
    if backend.choose("dplr_discrete", Lambda, P, B, dt) == "triton" and Lambda.dtype == torch.complex64 \
            and dt.dtype == torch.float32 and P.shape[0] <= TRITON_MAX_RANK and Lambda.shape[-1] <= TRITON_MAX_MODES:
        out = backend.attempt("dplr_discrete", _bilinear_dplr_triton, Lambda, P, B, dt)
        if out is not None:
            return out
    return bilinear_dplr_system_ref(Lambda, P, B, dt)


def bilinear_dplr_system_ref(Lambda: Tensor, P: Tensor, B: Tensor, dt: Tensor) -> Tuple[Tensor, Tensor]:
    """The PyTorch twin of :func:`bilinear_dplr_system` (any device and dtype; plain autograd). Same shapes;
    thesis app. C.1.1 (Woodbury)."""
    d, Dq, S = _bilinear_factors(Lambda, P, dt)
    dA = _dense_dA(d, Dq, S)
    # dB = (dt/2)(b + dA b) = dt (I - sA)^{-1} b = dt (D^{-1} b - Dq (S b)): O(H N r), no pass over dA
    Sb = (S * _to_real(B)[:, None, :]).sum(-1)                          # (H, r)
    dB = _to_real(d * B) - (Dq * Sb[:, None, :]).sum(-1)
    return dA, dt[:, None] * dB


#: The twin of the Triton BilinearDPLRFn (same arguments): its backward falls back to it if its kernels fail.
backend.register_twin("BilinearDPLRFn", bilinear_dplr_system_ref)


def _bilinear_dplr_triton(Lambda: Tensor, P: Tensor, B: Tensor, dt: Tensor) -> Tuple[Tensor, Tensor]:
    from ..ops.triton.dplr_discrete import bilinear_dplr_triton

    return bilinear_dplr_triton(Lambda, P, B, dt)


def discrete_power(Lambda: Tensor, P: Tensor, dt: Tensor, L: int) -> Tensor:
    """``dA^L`` in real form, (H, N, N): for the truncation ``I - dA^L`` (thesis eq. C.4, Alg. 1 step 1)."""
    return matrix_power(bilinear_dplr_real(Lambda, P, dt), L)


def _to_real(x: Tensor) -> Tensor:
    return torch.cat([x.real, x.imag], -1)


def _from_real(x: Tensor) -> Tensor:
    M = x.shape[-1] // 2
    return torch.complex(x[..., :M], x[..., M:])


def truncated_C(C: Tensor, dA_L: Tensor) -> Tensor:
    r"""``C~`` with ``C~^T = C^T (I - dA^L)`` (eq. C.4), on the half: C (..., H, M), dA_L (H, N, N)."""
    cR = 2 * torch.cat([C.real, -C.imag], -1)                           # (..., H, N)
    return _minus_rows(C, torch.einsum("...hn,hnm->...hm", cR, dA_L))   # c_R^T dA^L


def _minus_rows(C: Tensor, w: Tensor) -> Tensor:
    """``C - (w in the half's complex form) / 2``: the last step of eq. C.4 given the rows ``w = c_R^T dA^L``."""
    M = C.shape[-1]
    return C - torch.complex(w[..., :M], -w[..., M:]) / 2


def truncated_C_rows(C: Tensor, Lambda: Tensor, P: Tensor, dt: Tensor, L: int) -> Tensor:
    r""":func:`truncated_C` of :func:`discrete_power` without forming ``dA^L``: the K rows ``c_R^T dA^L`` by
    :func:`~statespaces.kernels.chunked.rows_times_power` (fewer squarings where row products are cheaper).
    C (K, H, M); Lambda (H, M), P (r, H, M), dt (H,). Thesis eq. C.4, Alg. 1 step 1."""
    cR = 2 * torch.cat([C.real, -C.imag], -1)                           # (K, H, N)
    w = rows_times_power(cR.transpose(0, 1), bilinear_dplr_real(Lambda, P, dt), L)   # (H, K, N)
    return _minus_rows(C, w.transpose(0, 1))


def truncated_C_wide(C: Tensor, Lambda: Tensor, P: Tensor, dt: Tensor, L: int) -> Tensor:
    r""":func:`truncated_C_rows` (``C~^T = C^T (I - dA^L)``, thesis eq. C.4) computed in float64 (every input widened),
    returned in C's dtype; C (K, H, M), Lambda (H, M), P (r, H, M), dt (H,), as there. ``C^T (I - dA^L)``
    cancels for a slow mode (``|lambda|^L`` near 1: FouT's Re Lambda is floored at -1e-4); in float32 the value
    kept its digits but the gradients through it did not: 2e-2 relative error in Lambda, P and B for a FouT layer
    (N = 64, L = 1024; up to 57x off at N = 2), against 1e-5 on every other route. In float64 and rounded once:
    8.5e-6. The powers are ``(H, N, N)`` squarings, as in :func:`truncated_C_rows` itself."""
    c64 = torch.complex128
    return truncated_C_rows(C.to(c64), Lambda.to(c64), P.to(c64), dt.to(torch.float64), L).to(C.dtype)


def untruncated_C(Ct: Tensor, dA_L: Tensor) -> Tensor:
    r"""Inverse of :func:`truncated_C`: C from ``C~^T = C^T (I - dA^L)`` by one (H, N, N) solve (thesis
    eq. C.4 inverted: app. C.1.2 may learn ``C~`` directly, the recurrent view needs C).

    Ill-conditioned when ``dA`` has an eigenvalue with ``|lambda|^L`` close to 1 (an undamped mode
    whose kernel has not decayed within L steps): the kernel then does not determine C well.
    Ct (..., H, M), dA_L (H, N, N). Returns C (..., H, M).
    """
    M = Ct.shape[-1]
    ct = 2 * torch.cat([Ct.real, -Ct.imag], -1)                        # (..., H, N) real form
    eye = torch.eye(dA_L.shape[-1], dtype=dA_L.dtype, device=dA_L.device)
    c = _solve((eye - dA_L).transpose(-1, -2), ct.unsqueeze(-1), "untruncated_C: I - dA^L").squeeze(-1)
    return torch.complex(c[..., :M], -c[..., M:]) / 2


# ---- frequency-domain core ----------------------------------------------------------------------
def _nodes(L: int, count: int, sign: float, dtype: torch.dtype, device) -> Tuple[Tensor, Optional[int]]:
    """``tan(pi k / L)`` for k < count (float64 math), and the index of omega = -1 if present."""
    k = torch.arange(count, dtype=torch.float64)
    nyq = L // 2 if (L % 2 == 0 and L // 2 < count) else None
    t = torch.tan(math.pi * k / L)
    if nyq is not None:
        t[nyq] = 0.0                                                    # dummy, overwritten later
    return (sign * t).to(dtype=dtype, device=device), nyq


def resolvent_sums(left: Tensor, right: Tensor, Lambda: Tensor, P: Tensor, g: Tensor,
                   backend: str = "chunked") -> Tensor:
    r"""``left_f^T (g_k - A_f)^{-1} right_f`` for conjugate-symmetric full vectors (Lemma C.3).

    Woodbury: ``(g - L + P P^*)^{-1} = R - R P (I + P^* R P)^{-1} P^* R`` with ``R = (g - L)^{-1}``;
    all ``(Jl + r) (Jr + r)`` inner products are Cauchy sums sharing one Cauchy matrix.

    Args:
        left: (Jl, H, M). right: (Jr, H, M). Lambda: (H, M). P: (r, H, M). g: (H, K) nodes.

    Returns:
        (Jl, Jr, H, K) complex.
    """
    Jl, Jr, r = left.shape[0], right.shape[0], P.shape[0]
    lft = torch.cat([left, P.conj()], 0)                                # (Jl + r, H, M)
    rgt = torch.cat([right, P], 0)                                      # (Jr + r, H, M)
    v = (lft[:, None] * rgt[None]).flatten(0, 1).transpose(0, 1)         # (H, J, M)
    S = _backend(backend)(v, g[:, None, :], Lambda[:, None, :], conj=True)   # (H, J, K)
    S = S.unflatten(1, (Jl + r, Jr + r))
    # split, not four slices: the backward of a split is one concatenation, that of a slice a zero-filled
    # (H, Jl + r, Jr + r, K) gradient per slice, summed (~5 ms of an S4 l_max fwd+bwd, H128 L1024, CPU)
    top, bottom = S.split([Jl, r], 1)
    (k00, k01), (k10, k11) = top.split([Jr, r], 2), bottom.split([Jr, r], 2)
    if r == 1:
        out = k00 - k01 * k10 / (1 + k11)
    else:
        eye = torch.eye(r, dtype=S.dtype, device=S.device)
        X = _solve(eye + k11.permute(0, 3, 1, 2), k10.permute(0, 3, 1, 2), _WOODBURY)   # (H, K, r, Jr)
        out = k00 - (k01.permute(0, 3, 1, 2) @ X).permute(0, 2, 3, 1)
    return out.permute(1, 2, 0, 3)


#: A pole whose discrete decay per step ``|Re lambda| dt`` is below this gets its nearest nodes
#: recomputed in complex128 (:func:`_risky_nodes`). Above it, float32 Woodbury loses no accuracy
#: (measured: the LegS init, decay >= 5e-4, gives the same 2e-5 kernel error with or without).
RISKY_DECAY = 1e-3


def _risky_candidates(Lambda: Tensor, dt: Tensor, L: int, count: int, mirrored: bool) -> Tensor:
    """Long (H, 1 + c M) node indices: node 0 and, for every weakly damped pole, the two nearest nodes
    (c = 2, or 4 with their mirrors); a strongly damped pole points at node 0 (see :func:`_risky_nodes`)."""
    lam = Lambda.detach().to(torch.complex128)
    dtd = dt.detach().double()[:, None]
    kstar = (L / math.pi) * torch.atan(dtd * lam.imag.abs() / 2)
    weak = lam.real.abs() * dtd < RISKY_DECAY                            # (H, M)
    cands = [kstar.floor(), kstar.ceil()]
    if mirrored:
        cands += [L - c for c in cands]
    cands = [torch.zeros_like(kstar[:, :1])] + [torch.where(weak, c, torch.zeros_like(c)) for c in cands]
    return torch.cat(cands, -1).long().clamp(0, count - 1).to(Lambda.device)


def _risky_nodes(Lambda: Tensor, dt: Tensor, L: int, count: int, mirrored: bool) -> Tensor:
    """Boolean (H, count): node 0 and, for every weakly damped pole, the two nearest nodes.

    Nodes are ``g_k = -/+ (2/dt) i tan(pi k / L)`` on the imaginary axis; a pole with small
    ``Re(lambda)`` next to a node makes Woodbury cancel ~log10(|lambda| / dist) digits (e.g. the
    LegT/FouT inits, ``Re Lambda = -1e-4``). Those few nodes are recomputed in complex128; poles
    with ``|Re lambda| dt >= RISKY_DECAY`` are never close enough to a node to need it.
    """
    idx = _risky_candidates(Lambda, dt, L, count, mirrored)
    mask = torch.zeros(Lambda.shape[0], count, dtype=torch.bool, device=Lambda.device)
    return mask.scatter_(1, idx, True)


def _risky_list(Lambda: Tensor, dt: Tensor, L: int, count: int, mirrored: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """The nodes of :func:`_risky_nodes` as rows hs, nodes ks (Q,) and ``first`` (Q,) bool, False on the
    repeats of a (row, node) pair. On CUDA and while tracing: :func:`_risky_list_fixed`, without a host
    sync. On CPU eager there is no device to sync with: the distinct nodes only (``nonzero`` of the mask),
    each once; the fixed-size list evaluates H (1 + c M) nodes in complex128, which made the whole S4
    kernel 1.8-3.8x slower on CPU (B8 H128 N64, L = 1024)."""
    if Lambda.device.type == "cpu" and not tracing():
        hs, ks = _risky_nodes(Lambda, dt, L, count, mirrored).nonzero(as_tuple=True)
        return hs, ks, torch.ones_like(hs, dtype=torch.bool)
    return _risky_list_fixed(Lambda, dt, L, count, mirrored)


def _risky_list_fixed(Lambda: Tensor, dt: Tensor, L: int, count: int,
                      mirrored: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """The nodes of :func:`_risky_nodes` as a list of fixed size Q = H (1 + c M), without ``nonzero``
    (whose data-dependent size is a host sync): rows hs, nodes ks (Q,) and ``first`` (Q,) bool, False
    on the repeats of a (row, node) pair (a strongly damped pole repeats node 0)."""
    idx = _risky_candidates(Lambda, dt, L, count, mirrored).sort(-1).values
    first = torch.ones_like(idx, dtype=torch.bool)
    first[:, 1:] = idx[:, 1:] != idx[:, :-1]
    hs = torch.arange(idx.shape[0], device=idx.device)[:, None].expand_as(idx)
    return hs.reshape(-1), idx.reshape(-1), first.reshape(-1)


def _refine_fp64(left: Tensor, right: Tensor, Lambda: Tensor, P: Tensor, g: Tensor, W: Tensor,
                 risky: Tuple[Tensor, Tensor, Tensor]) -> Tensor:
    """Replace W[..., h, k] (Jl, Jr, H, K) at the risky nodes (:func:`_risky_list`) by a complex128
    evaluation. A repeated (row, node) pair is evaluated again but enters with weight 0 (the node is zeroed,
    then the first copy added): a plain ``index_put`` would send the gradient to every copy."""
    c = torch.complex128
    hs, ks, first = risky
    vals = resolvent_sums(left[:, hs].to(c), right[:, hs].to(c), Lambda[hs].to(c), P[:, hs].to(c),
                          g[hs, ks][:, None].to(c), "naive")[..., 0]       # (Jl, Jr, Q)
    vals = (vals * first).permute(2, 0, 1).to(W.dtype)                  # (Q, Jl, Jr)
    hit = torch.zeros(W.shape[2:], dtype=torch.bool, device=W.device).index_put((hs, ks), torch.ones_like(first))
    Wp = W.permute(2, 3, 0, 1).masked_fill(hit[..., None, None], 0.0).index_put((hs, ks), vals, accumulate=True)
    return Wp.permute(2, 3, 0, 1)


def _resolvent_vector(Lambda: Tensor, P: Tensor, B: Tensor, g: Tensor) -> Tensor:
    """Half of ``(g_k - A_f)^{-1} B_f`` by Woodbury, (H, K, M); reference-sized K only."""
    r = P.shape[0]
    v = (P.conj()[:, None] * torch.cat([B[None], P], 0)[None]).flatten(0, 1).transpose(0, 1)
    S = cauchy_naive(v, g[:, None, :], Lambda[:, None, :], conj=True).unflatten(1, (r, 1 + r))
    k10, k11 = S[:, :, 0], S[:, :, 1:]                                  # (H, r, K), (H, r, r, K)
    eye = torch.eye(r, dtype=S.dtype, device=S.device)
    alpha = _solve(eye + k11.permute(0, 3, 1, 2), k10.permute(0, 2, 1).unsqueeze(-1), _WOODBURY).squeeze(-1)
    Rm = 1.0 / (g[:, :, None] - Lambda[:, None, :])                       # (H, K, M)
    return Rm * (B[:, None, :] - torch.einsum("hkr,rhm->hkm", alpha, P))


def _check_dplr_shapes(Lambda: Tensor, P: Tensor, B: Tensor, C: Tensor, dt: Tensor) -> None:
    """The documented shapes of :func:`dplr_kernel`'s arguments (a mismatch failed inside an einsum or indexing)."""
    if not isinstance(Lambda, Tensor) or Lambda.dim() != 2:
        raise ValueError(f"dplr_kernel: Lambda must be (H, M), got {tuple(getattr(Lambda, 'shape', ()))}")
    H, M = Lambda.shape
    want = {"P": (P, 3, f"(r, {H}, {M})"), "B": (B, 2, f"({H}, {M})"), "C": (C, 3, f"(K, {H}, {M})"),
            "dt": (dt, 1, f"({H},)")}
    for name, (t, dims, shape) in want.items():
        ok = isinstance(t, Tensor) and t.dim() == dims and tuple(t.shape[-2:] if dims > 1 else t.shape) == (
            (H, M) if dims > 1 else (H,))
        if not ok:
            raise ValueError(f"dplr_kernel: {name} must be {shape} for Lambda (H, M) = ({H}, {M}), got "
                             f"{tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__}")


def _check_state_maps(fn: str, Lambda: Tensor, P: Tensor, dt: Tensor, **shaped: Tuple[Optional[Tensor], str]) -> None:
    """Shapes of :func:`dplr_zero_input` / :func:`dplr_advance` (a mismatch was broadcast silently or failed inside
    an einsum): Lambda (H, M), P (r, H, M), dt (H,), and each ``name: (tensor or None, pattern)`` with the pattern
    over "B", "H", "M", "L" ("B" and "L" any size >= 1, the same across tensors)."""
    if not isinstance(Lambda, Tensor) or Lambda.dim() != 2:
        raise ValueError(f"{fn}: Lambda must be (H, M), got {tuple(getattr(Lambda, 'shape', ()))}")
    H, M = Lambda.shape
    sizes: Dict[str, int] = {"H": H, "M": M}
    for name, (t, pattern) in {"P": (P, "rHM"), "dt": (dt, "H"), **shaped}.items():
        if t is None:
            continue
        ok = isinstance(t, Tensor) and t.dim() == len(pattern)
        for axis, key in enumerate(pattern if ok else ""):
            size = t.shape[axis]
            if key == "r":
                continue
            if sizes.setdefault(key, size) != size or size < 1:
                ok = False
        if not ok:
            want = "(" + ", ".join(str(sizes[k]) if k in ("H", "M") else k for k in pattern) + ")"
            raise ValueError(f"{fn}: {name} must be {want} for Lambda (H, M) = ({H}, {M}) (B, L >= 1 and the same "
                             f"everywhere), got {tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__}")


def dplr_kernel(Lambda: Tensor, P: Tensor, B: Tensor, C: Tensor, dt: Tensor, L: int,
                truncation_correction: bool = True, backend: str = "chunked") -> Tensor:
    r"""Convolution kernel of the bilinear-discretized DPLR SSM by Algorithm 1 (app. C.1.2).

    Args:
        Lambda: (H, M) complex diagonal (half). P: (r, H, M) complex low-rank factors.
        B: (H, M). C: (K, H, M) output vectors (K = 1, or 2 for two directions). dt: (H,) > 0.
        L: kernel length.
        truncation_correction: use ``C~ = (I - dA^L)^T C`` (eq. C.4). Without it the result is the
            infinite kernel aliased onto length L, ``sum_m K_{l + mL}`` (kept for the tests).
        backend: ``"chunked"`` (default, O(H(N+L)) memory) or ``"naive"`` (materialized Cauchy).

    Returns:
        Real kernel (K, H, L), equal to ``(c^T dA^l dB)_{l<L}`` of the dense system.
    """
    L = check_length(L)
    _check_dplr_shapes(Lambda, P, B, C, dt)
    Ct = truncated_C_wide(C, Lambda, P, dt, L) if truncation_correction else C
    nk = L // 2 + 1
    t, nyq = _nodes(L, nk, 1.0, Lambda.real.dtype, Lambda.device)      # omega_k = exp(-2 pi i k/L)
    g = torch.complex(torch.zeros_like(t), t)[None] * (2 / dt)[:, None]     # (H, nk) = (2/dt) i tan
    if nyq is not None:
        g = g.clone()
        g[:, nyq] = 1.0                                                  # finite dummy
    W = resolvent_sums(Ct, B[None], Lambda, P, g, backend)              # (K, 1, H, nk)
    W = _refine_fp64(Ct, B[None], Lambda, P, g, W, _risky_list(Lambda, dt, L, nk, False))[:, 0]
    Kf = W * torch.complex(torch.ones_like(t), t)                       # 2/(1+omega) = 1 + i tan
    if nyq is not None:
        lim = dt * (Ct * B).sum(-1).real                                # (dt/2) * full sum
        Kf = torch.cat([Kf[..., :nyq], lim.to(Kf.dtype)[..., None], Kf[..., nyq + 1:]], -1)
    return torch.fft.irfft(Kf, n=L)


def apply_A_half(x: Tensor, Lambda: Tensor, P: Tensor) -> Tensor:
    r"""First half of ``A_f x_f`` for a conjugate-symmetric x: ``L x - sum_r p_r 2 Re(p_r^* x)``
    (``A = Lambda - P P^*``, thesis §3.3.3; the O(N) product of Thm 3.5).

    x: (..., H, M). Returns (..., H, M).
    """
    w = 2 * torch.einsum("rhm,...hm->...rh", P.conj(), x).real
    return Lambda * x - torch.einsum("...rh,rhm->...hm", w.to(x.dtype), P)


def dplr_zero_input(Lambda: Tensor, P: Tensor, C: Tensor, dt: Tensor, x0: Tensor, L: int,
                    dA_L: Optional[Tensor] = None, backend: str = "chunked") -> Tensor:
    r"""Free response ``y_l = c^T dA^{l+1} x0`` for l < L (no input), by the same Cauchy route
    (thesis app. C.1.2, Lemmas C.3-C.4, with ``(I + dt/2 A) x0 / dt`` in place of ``B``).

    ``sum_{l<L} y_l z^l = C~^T (I - dA z)^{-1} dA x0 = (2/(dt(1+z))) C~^T (g - A)^{-1} (I + dt/2 A) x0``;
    at z = -1 it is ``C~^T (I + dt/2 A) x0 / 2``.

    Args: Lambda (H, M), P (r, H, M), C (H, M), dt (H,), x0 (B, H, M) half state, L.
    Returns: y (B, H, L) real.
    """
    L = check_length(L, "dplr_zero_input: L")
    _check_state_maps("dplr_zero_input", Lambda, P, dt, C=(C, "HM"), x0=(x0, "BHM"))
    if dA_L is None:
        dA_L = discrete_power(Lambda, P, dt, L)
    Ct = truncated_C(C, dA_L)
    s = (dt / 2)[:, None]
    x1 = x0 + s * apply_A_half(x0, Lambda, P)                           # (I + dt/2 A) x0
    nk = L // 2 + 1
    t, nyq = _nodes(L, nk, 1.0, Lambda.real.dtype, Lambda.device)
    g = torch.complex(torch.zeros_like(t), t)[None] * (2 / dt)[:, None]
    if nyq is not None:
        g = g.clone()
        g[:, nyq] = 1.0
    W = resolvent_sums(Ct[None], x1, Lambda, P, g, backend)            # (1, B, H, nk)
    W = _refine_fp64(Ct[None], x1, Lambda, P, g, W, _risky_list(Lambda, dt, L, nk, False))[0]
    Yf = W * (torch.complex(torch.ones_like(t), t)[None] / dt[:, None])
    if nyq is not None:
        lim = (Ct * x1).sum(-1).real                                    # (1/2) * full sum
        Yf = torch.cat([Yf[..., :nyq], lim.to(Yf.dtype)[..., None], Yf[..., nyq + 1:]], -1)
    return torch.fft.irfft(Yf, n=L)


def dplr_advance(Lambda: Tensor, P: Tensor, B: Tensor, dt: Tensor, u: Tensor, x0: Optional[Tensor] = None,
                 dA_L: Optional[Tensor] = None, backend: str = "chunked") -> Tensor:
    r"""State after consuming ``u`` (B, H, L) from ``x0`` (B, H, M) (zeros if None), O(B H N L): the state
    of the unrolled recurrence (thesis eq. 2.6) by the resolvent route of app. C.1.2 (Lemmas C.2-C.4).

    ``x_L = dA^L x0 + S``, ``S = sum_j dA^j dB v_j`` with ``v_j = u_{L-1-j}``. With the DFT
    ``V_k = sum_j v_j omega_k^j`` and ``zeta_k = conj(omega_k)``:
    ``S = (I - dA^L) (1/L) sum_k V_k (I - zeta_k dA)^{-1} dB``, and
    ``(I - zeta dA)^{-1} dB = (2/(1+zeta)) (g(zeta) - A)^{-1} B`` (``= dt B / 2`` at zeta = -1).
    The resolvent is Woodbury: per node one r-vector ``alpha_k = (I + P^*RP)^{-1} P^*RB`` (full
    sums), then a transposed Cauchy sum over the L nodes for each mode.

    Returns the new half state (B, H, M).
    """
    _check_state_maps("dplr_advance", Lambda, P, dt, B=(B, "HM"), u=(u, "BHL"), x0=(x0, "BHM"))
    Bsz, H, L = u.shape
    r = P.shape[0]
    if dA_L is None:
        dA_L = discrete_power(Lambda, P, dt, L)
    cd = Lambda.dtype
    V = torch.fft.fft(u.flip(-1).to(Lambda.real.dtype), dim=-1)         # (B, H, L)
    t, nyq = _nodes(L, L, -1.0, Lambda.real.dtype, Lambda.device)        # zeta_k = exp(+2 pi i k/L)
    g = torch.complex(torch.zeros_like(t), t)[None] * (2 / dt)[:, None]    # (H, L)
    fac = torch.complex(torch.ones_like(t), t)                           # 2/(1+zeta) = 1 - i tan
    risky = _risky_nodes(Lambda, dt, L, L, True)
    if nyq is not None:
        risky[:, nyq] = False
        g = g.clone()
        g[:, nyq] = 1.0
        fac = fac.clone()
        fac[nyq] = 0.0
    # alpha_k = (I + k11)^{-1} k10 with k11 = P^* R P, k10 = P^* R B (full sums)
    lft = P.conj()
    rgt = torch.cat([B[None], P], 0)
    v = (lft[:, None] * rgt[None]).flatten(0, 1).transpose(0, 1)        # (H, r(1+r), M)
    S = _backend(backend)(v, g[:, None, :], Lambda[:, None, :], conj=True).unflatten(1, (r, 1 + r))
    k10, k11 = S[:, :, 0], S[:, :, 1:]                                  # (H, r, L), (H, r, r, L)
    if r == 1:
        alpha = k10 / (1 + k11[:, :, 0])                                # (H, 1, L)
    else:
        eye = torch.eye(r, dtype=cd, device=Lambda.device)
        alpha = _solve(eye + k11.permute(0, 3, 1, 2), k10.permute(0, 2, 1).unsqueeze(-1), _WOODBURY)
        alpha = alpha.squeeze(-1).permute(0, 2, 1)                      # (H, r, L)
    c = (V.to(cd) * (fac / L)).masked_fill(risky, 0.0)                 # (B, H, L); risky nodes below
    coef = torch.cat([c[:, :, None], c[:, :, None] * alpha[None]], 2)    # (B, H, 1 + r, L)
    coef = coef.permute(1, 0, 2, 3).flatten(1, 2)                       # (H, B(1+r), L)
    # sum_k coef_k / (g_k - lambda_n) = -cauchy(coef, z=lambda, w=g)
    T = -_backend(backend)(coef, Lambda[:, None, :], g[:, None, :])     # (H, B(1+r), M)
    T = T.unflatten(1, (Bsz, 1 + r)).transpose(0, 1)                    # (B, H, 1+r, M)
    Sv = B * T[:, :, 0] - torch.einsum("bhrm,rhm->bhm", T[:, :, 1:], P)
    if nyq is not None:
        Sv = Sv + (V[..., nyq].to(cd) / L)[..., None] * (dt / 2)[:, None] * B
    c128 = torch.complex128
    hs, ks, first = _risky_list(Lambda, dt, L, L, True)                # fixed size: no host sync
    if nyq is not None:
        first = first & (ks != nyq)
    res = _resolvent_vector(Lambda[hs].to(c128), P[:, hs].to(c128), B[hs].to(c128),
                            g[hs, ks][:, None].to(c128))[:, 0]          # (Q, M): (g - A)^{-1} B
    weight = (fac[ks].to(c128) / L) * first                             # each (row, node) once
    terms = (V[:, hs, ks].to(c128) * weight)[..., None] * res          # (B, Q, M)
    Sv = Sv.index_add(1, hs, terms.to(cd))
    SR = _to_real(Sv)                                                   # S' (before I - dA^L)
    x = SR - torch.einsum("hnm,bhm->bhn", dA_L, SR)
    if x0 is not None:
        x = x + torch.einsum("hnm,bhm->bhn", dA_L, _to_real(x0))
    return _from_real(x)


# ---- recurrent step (Thm 3.5, app. C.1.1) --------------------------------------------------------
@dataclass
class DPLRStep:
    r"""Precomputed bilinear step ``x' = (I - sA)^{-1} ((I + sA) x + dt B u)``, s = dt/2, in O(N r).

    ``(I - sA)^{-1} = D - s D P (I + s P^* D P)^{-1} P^* D`` with ``D = diag(1/(1 - s Lambda))``
    (Woodbury, Thm 3.5 / app. C.1.1; full-set sums make ``P^* D P = 2 Re(sum_half conj(p_a) d p_b)``
    a real r x r matrix). With ``z = D((I + sA) x + dt B u)``:
    ``z = da x + db u - dsP w(x)``, ``x' = z - E (s G) w(z)``, ``w(x) = P_f^* x_f = 2 Re(P^* x)``.
    Shapes: da, db (H, M); Pc (H, M, r); dsP, E (H, r, M); sG (H, r, r); all complex.
    """

    da: Tensor
    db: Tensor
    Pc: Tensor
    dsP: Tensor
    E: Tensor
    sG: Tensor

    @staticmethod
    def build(Lambda: Tensor, P: Tensor, B: Tensor, dt: Tensor) -> "DPLRStep":
        s = (dt / 2)[:, None]
        d = 1 / (1 - s * Lambda)                                          # (H, M)
        E = d * P                                                         # (r, H, M)
        core = 2 * torch.einsum("ahm,bhm->hab", P.conj(), E).real       # P_f^* D_f P_f (H, r, r)
        r = P.shape[0]
        eye = torch.eye(r, dtype=core.dtype, device=core.device)
        sG = s[..., None] * torch.linalg.inv(eye + s[..., None] * core)
        # q = (P_f^* z_f) row vector; x' = z - q (sG)^T E   (sG acts on the r-vector)
        return DPLRStep(
            da=d * (1 + s * Lambda), db=d * dt[:, None] * B, Pc=P.conj().permute(1, 2, 0),
            dsP=(s * d * P).transpose(0, 1), E=E.transpose(0, 1), sG=sG.transpose(-1, -2).to(Lambda.dtype),
        )

    def __call__(self, x: Tensor, u: Tensor) -> Tensor:
        """x (B, H, M) complex, u (B, H) real -> new half state (B, H, M)."""
        w = _per_channel(x, self.Pc)                                     # (B, H, r)
        z = self.da * x + self.db * u[..., None].to(x.dtype) - _per_channel(w + w.conj(), self.dsP)
        q = _per_channel(z, self.Pc)
        return z - _per_channel(_per_channel(q + q.conj(), self.sG), self.E)


def _per_channel(x: Tensor, T: Tensor) -> Tensor:
    """``x[b, h] @ T[h]`` for x (B, H, K) and T (H, K, J): (B, H, J), the H channels' own small matrices.

    At B = 1, H products of one row (a broadcast matmul); above, H products of B rows (einsum batches over h). The
    broadcast matmul at B > 1 expanded T to (B, H, K, J) and ran B H one-row products: 2-3.5x slower per S4 step
    at B = 64, H = 64, N = 64 (one CPU thread; the speed-cliff campaign of 2026-12-07)."""
    if x.shape[0] == 1:
        return (x.unsqueeze(-2) @ T).squeeze(-2)
    return torch.einsum("bhk,hkj->bhj", x, T)


def dplr_step_ref(st: DPLRStep, C: Tensor, D: Tensor, u: Tensor, state: Tensor) -> Tuple[Tensor, Tensor]:
    r"""Reference twin of :func:`dplr_step`, also its PyTorch path (autograd, CPU, any rank): one bilinear
    DPLR step ``state' = dA state + dB u`` by Woodbury (Thm 3.5), ``y = 2 Re(C . state') + D u``."""
    new_state = st(state, u)
    return 2 * (C * new_state).sum(-1).real + D * u, new_state


def dplr_step(st: DPLRStep, C: Tensor, D: Tensor, u: Tensor, state: Tensor,
              out: Optional[Tuple[Tensor, Tensor]] = None) -> Tuple[Tensor, Tensor]:
    r"""One bilinear DPLR step (the body of :meth:`statespaces.layers.s4.S4.step` and of its generation stepper):
    ``state' = dA state + dB u`` by Woodbury (Thm 3.5), ``y = 2 Re(C . state') + D u``.

    st: the precomputed step; C (H, M) complex; D (H,) and u (B, H) real; state (B, H, M) complex.
    Returns ``(y (B, H), state')``. On CUDA tensors (or under :func:`statespaces.backend.force_triton`)
    with no gradient needed, one fused Triton launch (:mod:`statespaces.ops.triton.dplr_step`, rank <= 4);
    otherwise :func:`dplr_step_ref`. With ``out`` (``(y, state')`` buffers; ``state'`` may be ``state``)
    the results are written there.
    """
    if u.is_cuda or backend.FORCE_TRITON:
        args = (st.da, st.db, st.Pc, st.dsP, st.E, st.sG, C, D, u, state)
        needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in args)
        path = backend.choose("dplr_step", u, D, dtypes=backend.REAL + (torch.float64,))
        if not needs_grad and path == "triton":
            from ..ops.triton import dplr_step as tds

            if tds.fits(*args):
                res = backend.attempt("dplr_step", tds.launch_step, *args, out=out)
                if res is not None:
                    return res
    y, new = dplr_step_ref(st, C, D, u, state)
    if out is None:
        return y, new
    out[1].copy_(new)
    out[0].copy_(y)
    return out[0], out[1]
