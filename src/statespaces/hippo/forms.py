"""Normal-plus-low-rank (NPLR), DPLR and diagonal forms of HiPPO matrices
(thesis §6.2, Thm 6.7, Cor 6.8, eq. 6.2-6.4, App. F.2.2).

Every supported HiPPO matrix is ``A = S_N - P P^T`` with ``S_N`` *normal* (a
multiple of ``I`` plus a real skew-symmetric matrix) and ``P`` real of rank ``r``:

==========  ====  ==========================================  ===========
measure     r     ``P`` (column(s), before ``/sqrt(theta)``)   ``Re(Lambda)``
==========  ====  ==========================================  ===========
legs        1     ``sqrt(n + 1/2)``                            ``-1/2``
legt        2     ``sqrt(2n+1)`` on even n; on odd n           ``0``
fout        1     ``(sqrt2, 2, 0, 2, 0, ...)``                 ``0``
lagt        1     ``1/sqrt2`` (all n)                          ``-1/2``
==========  ====  ==========================================  ===========

(``lagt``: ``-tril(1) = -I/2 - (1 1^T)/2 - K/2`` with ``K`` the skew sign matrix;
not in the thesis, derived here. ``A`` does not depend on the Laguerre ``alpha``, only ``B`` does, so
every ``alpha`` has this form: :func:`nplr` and :func:`dplr` take ``alpha=`` for ``lagt``.)
The normal part is diagonalized by a unitary ``V`` computed with ``eigh`` of the Hermitian
matrix ``i K`` (``K`` = skew part), so ``V`` is unitary to machine precision even though ``A`` itself (for LegS) has an
exponentially ill-conditioned eigenbasis (Lemma 6.6, see :mod:`.eigen`).
Then (Hurwitz DPLR, Cor. 6.8)

    ``A = V (diag(Lambda) - P~ P~^*) V^*``,  ``P~ = V^* P``.
"""

from __future__ import annotations

import math
from typing import Tuple

import torch

from ._checks import check_measure, check_positive, check_state_size
from .measures import fourier_low_rank, transition

__all__ = ["NPLR_MEASURES", "low_rank", "nplr", "dplr", "diagonal_init", "DIAGONAL_INIT_MEASURES"]

NPLR_MEASURES: tuple[str, ...] = ("legs", "legt", "fout", "lagt")
DIAGONAL_INIT_MEASURES: tuple[str, ...] = ("legs",)
_F64 = torch.float64
_C128 = torch.complex128


def low_rank(measure: str, N: int, theta: float = 1.0) -> torch.Tensor:
    """Real low-rank factor ``P`` of shape ``(r, N)`` with ``A + P^T P`` normal (thesis Thm 6.7, Cor. 6.8,
    App. F.2.2; ``lagt`` not in the thesis).

    (Rows are the rank components: ``A + sum_r outer(P[r], P[r])`` is normal.)
    """
    name = check_measure(measure, NPLR_MEASURES, what="NPLR measure")
    N = check_state_size(N)
    theta = check_positive(theta, "theta")
    n = torch.arange(N, dtype=_F64)
    if name == "legs":
        P = torch.sqrt(n + 0.5)[None]
    elif name == "legt":
        q = torch.sqrt(2 * n + 1)
        even = (torch.arange(N) % 2 == 0).to(_F64)
        P = torch.stack([q * even, q * (1 - even)])
    elif name == "fout":
        P = (math.sqrt(2.0) * fourier_low_rank(N))[None]
    else:  # lagt
        P = torch.full((1, N), 1.0 / math.sqrt(2.0), dtype=_F64)
    return P / math.sqrt(theta)


def nplr(measure: str, N: int, rank: int | None = None, theta: float = 1.0, **params) -> Tuple[torch.Tensor,
         torch.Tensor, torch.Tensor, torch.Tensor]:
    """NPLR / Hurwitz-DPLR factorization of the HiPPO matrix (Thm 6.7, Cor 6.8).

    Args:
        measure: one of :data:`NPLR_MEASURES`.
        N: state size.
        rank: number of low-rank columns returned; ``None`` = the minimal rank
            (1 for legs/fout/lagt, 2 for legt). A larger rank pads with zeros.
        theta: timescale, as in :func:`transition`.
        **params (float): measure parameters, as in :func:`transition`: only ``alpha`` of ``lagt``
            (it changes ``B`` alone); any other raises ``TypeError``.

    Returns:
        (tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]): ``(Lambda, P, B, V)``
            complex128 with shapes ``(N,)``, ``(rank, N)``, ``(N,)``, ``(N, N)`` (eigenvector phases
            fixed so that ``B`` is real >= 0) such that, with ``A, B0 = transition(measure, N, theta, **params)``,
            ``A = V (diag(Lambda) - P^T conj(P)) V^*`` (i.e. ``V(Lambda - sum_r p_r p_r^*)V^*``
            with ``p_r = P[r]``), ``B = V^* B0``, ``V`` unitary. ``Lambda`` is sorted by
            imaginary part (descending).
    """
    name = check_measure(measure, NPLR_MEASURES, what="NPLR measure")
    N = check_state_size(N)
    A, B = transition(name, N, theta=theta, **params)
    Pr = low_rank(name, N, theta=theta)
    r_min = Pr.shape[0]
    if rank is None:
        rank = r_min
    if isinstance(rank, bool) or not isinstance(rank, int):
        raise TypeError(f"rank must be an int or None, got {rank!r}")
    if rank < r_min:
        raise ValueError(f"measure {name!r} needs rank >= {r_min}, got rank={rank}")
    S = A + Pr.T @ Pr
    diag_val = torch.diagonal(S).mean()
    K = S - diag_val * torch.eye(N, dtype=_F64)  # real skew-symmetric
    # eigh of the Hermitian matrix iK: iK = V diag(mu) V^*  =>  K = V diag(-i mu) V^*
    mu, V = torch.linalg.eigh(1j * K.to(_C128))
    Lam = diag_val.to(_C128) - 1j * mu.to(_C128)
    order = torch.argsort(Lam.imag, descending=True, stable=True)
    Lam, V = Lam[order], V[:, order]
    # gauge: rotate each eigenvector's phase so that (V^* B)_j is real >= 0
    VB = V.conj().T @ B.to(_C128)
    mag = VB.abs()
    phase = torch.where(mag > 1e-300, VB / mag.clamp(min=1e-300), torch.ones_like(VB))
    V = V * phase[None, :]
    Vh = V.conj().T
    P = (Pr.to(_C128) @ V.conj())  # rows: V^* p_r  (p_r real)
    if rank > r_min:
        P = torch.cat([P, torch.zeros(rank - r_min, N, dtype=_C128)])
    return Lam, P, Vh @ B.to(_C128), V


def _pair_real_eigenspace(Vz: torch.Tensor) -> torch.Tensor:
    """Given an orthonormal basis ``Vz`` (N, 2k) of a *real* invariant subspace,
    return ``k`` vectors ``v_j`` such that ``{v_j, conj(v_j)}`` is an orthonormal basis
    of the same subspace (``v = (r1 + i r2)/sqrt2`` for a real orthonormal pair)."""
    R = torch.cat([Vz.real, Vz.imag], dim=1)
    U, s, _ = torch.linalg.svd(R, full_matrices=False)
    k2 = Vz.shape[1]
    Q = U[:, :k2]  # real orthonormal basis of the subspace
    return (Q[:, 0::2] + 1j * Q[:, 1::2]).to(_C128) / math.sqrt(2.0)


def dplr(measure: str, N: int, rank: int | None = None, theta: float = 1.0, tol: float = 1e-9,
         **params) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Conjugate-symmetric half of :func:`nplr` (the S4 parameterization, kernel = 2 Re; thesis eq. 6.2,
    Cor. 6.8, §3.4.5).

    Keeps the ``N//2`` modes with ``Im(Lambda) > 0``; eigenvalues on the real axis
    (e.g. FouT's constant mode) are grouped into pairs ``(v, conj v)`` of the same
    real eigenspace. With ``Vf = [V, conj V]``, ``Lf = [Lambda, conj Lambda]``,
    ``Pf = [P, conj P]``:  ``A = Vf (diag(Lf) - Pf^T conj(Pf)) Vf^*`` and
    ``B0 = Vf [B; conj B]``. ``**params``: as in :func:`nplr` (``alpha`` of ``lagt``).

    Returns:
        (tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]): ``(Lambda, P, B, V)``
            complex128, shapes ``(N//2,)``, ``(rank, N//2)``, ``(N//2,)``, ``(N, N//2)``.

    Raises ValueError for odd ``N`` (a real mode cannot be paired) or when the
    spectrum is not conjugate-symmetric within ``tol``.
    """
    name = check_measure(measure, NPLR_MEASURES, what="NPLR measure")
    N = check_state_size(N)
    if N % 2:
        raise ValueError(f"dplr needs an even state size N (conjugate pairs), got N={N}")
    Lam, _, _, V = nplr(name, N, rank=rank, theta=theta, **params)
    scale = max(1.0, float(Lam.abs().max()))
    pos = Lam.imag > tol * scale
    zero = Lam.imag.abs() <= tol * scale
    n_pos, n_zero = int(pos.sum()), int(zero.sum())
    if 2 * n_pos + n_zero != N or n_zero % 2:
        raise ValueError(
            f"spectrum of the normal part of {name!r} (N={N}) is not conjugate-symmetric "
            f"({n_pos} modes with Im>0, {n_zero} real); cannot halve it"
        )
    Vh = V[:, pos]
    Lh = Lam[pos]
    if n_zero:
        Vh = torch.cat([Vh, _pair_real_eigenspace(V[:, zero])], dim=1)
        Lh = torch.cat([Lh, Lam[zero][: n_zero // 2].real.to(_C128)])
    A, B = transition(name, N, theta=theta, **params)
    Pr = low_rank(name, N, theta=theta)
    r_min = Pr.shape[0]
    rank = r_min if rank is None else rank
    P = Pr.to(_C128) @ Vh.conj()
    if rank > r_min:
        P = torch.cat([P, torch.zeros(rank - r_min, N // 2, dtype=_C128)])
    return Lh, P, Vh.conj().T @ B.to(_C128), Vh


def diagonal_init(measure: str, N: int) -> tuple[torch.Tensor, torch.Tensor]:
    """S4D-LegS initialization (eq. 6.4, Thm 6.9): diagonal of the normal part of LegS.

    ``A^(D) = eig(A + P P^T)`` (``Re = -1/2``) and ``B_diag = V^* (B / 2)`` with
    ``B_n = sqrt(2n+1)``; the factor 1/2 comes from Thm 6.9 (``P P^T = B B^T / 2``):
    the SSM ``(A^(N), B/2)`` approximates ``(A, B)`` as ``N -> inf``.

    Args:
        measure: ``"legs"`` (the only measure with this justification).
        N: full state size (even); ``N//2`` conjugate-pair modes are returned.

    Returns:
        ``(A, B)`` complex128 of shape ``(N//2,)``: the ``Im(A) > 0`` half, sorted by
        decreasing ``Im(A)``.
    """
    name = check_measure(measure, DIAGONAL_INIT_MEASURES, what="diagonal_init measure")
    Lam, _, B, _ = dplr(name, N)
    return Lam, B / 2
