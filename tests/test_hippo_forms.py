"""NPLR / DPLR / diagonal forms of HiPPO matrices (thesis §6.2-6.3, Thm 6.7, Cor 6.8, Lemma 6.6)."""

import math

import numpy as np
import pytest
import torch

from statespaces.hippo import (NPLR_MEASURES, diagonal_init, dplr, legs_eigenvectors, legs_eigenvectors_exact,
                               legs_tilde, legs_tilde_exact, low_rank, nplr, transition)

C128 = torch.complex128
F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")   # tiny sequential ops (conftest.py)
RE = {"legs": -0.5, "legt": 0.0, "fout": 0.0, "lagt": -0.5}
RANK = {"legs": 1, "legt": 2, "fout": 1, "lagt": 1}


@pytest.mark.parametrize("measure", NPLR_MEASURES)
@pytest.mark.parametrize("N", [1, 7, 16, 64])
def test_nplr_identity(measure, N):
    A, B0 = transition(measure, N, theta=1.3)
    Lam, P, B, V = nplr(measure, N, theta=1.3)
    assert Lam.dtype == P.dtype == B.dtype == V.dtype == C128
    assert Lam.shape == (N,) and P.shape == (RANK[measure], N) and V.shape == (N, N)
    rec = V @ (torch.diag(Lam) - P.T @ P.conj()) @ V.conj().T
    assert (rec - A).abs().max() <= 1e-10 * max(1.0, A.abs().max().item())
    assert (V.conj().T @ V - torch.eye(N, dtype=C128)).abs().max() < 1e-12
    assert (V @ B - B0).abs().max() < 1e-10
    assert (B.imag.abs() < 1e-10).all() and (B.real > -1e-10).all()  # phase gauge
    np.testing.assert_allclose(Lam.real.numpy(), RE[measure] / 1.3, atol=1e-10)


@pytest.mark.parametrize("measure", NPLR_MEASURES)
def test_normal_part_is_normal(measure):
    N = 32
    A, _ = transition(measure, N)
    P = low_rank(measure, N)
    S = A + P.T @ P
    assert (S @ S.T - S.T @ S).abs().max() < 1e-9 * S.abs().max() ** 2
    K = S - torch.diagonal(S).mean() * torch.eye(N, dtype=F64)
    assert torch.allclose(K, -K.T, atol=1e-12)  # multiple of I + skew


def test_legs_low_rank_values():
    """Cor 6.8: P_n = sqrt(n + 1/2), so P P^T = B B^T / 2."""
    P = low_rank("legs", 10)
    _, B = transition("legs", 10)
    assert torch.allclose(P[0], torch.sqrt(torch.arange(10, dtype=F64) + 0.5))
    assert torch.allclose(P.T @ P, torch.outer(B, B) / 2)
    assert torch.allclose(low_rank("fout", 5)[0], torch.tensor([math.sqrt(2), 2, 0, 2, 0], dtype=F64))
    # even N: the last slot is the decoupled dummy (measures.fourier_active)
    assert torch.allclose(low_rank("fout", 6)[0], torch.tensor([math.sqrt(2), 2, 0, 2, 0, 0], dtype=F64))


def test_nplr_rank_padding_and_errors():
    Lam, P, B, V = nplr("legs", 8, rank=3)
    assert P.shape == (3, 8) and torch.all(P[1:] == 0)
    with pytest.raises(ValueError, match="rank >= 2"):
        nplr("legt", 8, rank=1)
    with pytest.raises(ValueError) as exc:
        nplr("lmu", 8)
    for m in NPLR_MEASURES:
        assert m in str(exc.value)
    with pytest.raises(ValueError, match="even"):
        dplr("legs", 7)


@pytest.mark.parametrize("measure", NPLR_MEASURES)
@pytest.mark.parametrize("N", [2, 16, 64])
def test_dplr_half_reconstructs(measure, N):
    A, B0 = transition(measure, N)
    Lam, P, B, V = dplr(measure, N)
    assert Lam.shape == (N // 2,) and V.shape == (N, N // 2) and B.shape == (N // 2,)
    assert (Lam.imag >= 0).all()
    Vf = torch.cat([V, V.conj()], 1)
    Lf = torch.cat([Lam, Lam.conj()])
    Pf = torch.cat([P, P.conj()], 1)
    assert (Vf.conj().T @ Vf - torch.eye(N, dtype=C128)).abs().max() < 1e-10
    rec = Vf @ (torch.diag(Lf) - Pf.T @ Pf.conj()) @ Vf.conj().T
    assert (rec - A).abs().max() <= 1e-10 * max(1.0, A.abs().max().item())
    assert (Vf @ torch.cat([B, B.conj()]) - B0).abs().max() < 1e-10


@pytest.mark.parametrize("measure", NPLR_MEASURES)
def test_hurwitz_form_is_stable_and_same_kernel(measure):
    """Lemma 3.8 / Cor 6.8: diag(Lambda) - PP^* with Re(Lambda) <= 0 has its spectrum in the
    closed left half-plane, and the unitary change of basis preserves the SSM kernel."""
    N = 12
    A, B0 = transition(measure, N)
    Lam, P, B, V = nplr(measure, N)
    Ah = torch.diag(Lam) - P.T @ P.conj()
    ev = torch.linalg.eigvals(Ah)
    assert ev.real.max() < 1e-8
    C = torch.randn(N, dtype=F64, generator=torch.Generator().manual_seed(1))
    for t in (0.1, 0.9):
        k_dense = C @ torch.linalg.matrix_exp(t * A) @ B0
        k_dplr = (C.to(C128) @ V) @ torch.linalg.matrix_exp(t * Ah) @ B
        assert abs(k_dense - k_dplr.real) < 1e-10 and abs(k_dplr.imag) < 1e-10
    if measure == "legs":
        np.testing.assert_allclose(np.sort(ev.real.numpy()), -np.arange(N, 0, -1.0), atol=1e-6)


def test_diagonal_init_legs():
    N = 64
    A, B = diagonal_init("legs", N)
    assert A.dtype == B.dtype == C128 and A.shape == B.shape == (N // 2,)
    np.testing.assert_allclose(A.real.numpy(), -0.5, atol=1e-10)
    assert (A.imag > 0).all()
    # Conjecture 6.11 (sign corrected, see docs): max Im -> N^2/pi - 0.5236
    assert abs(A.imag.max().item() - (N**2 / math.pi - math.pi / 6)) < 0.01
    # B_diag = V^*(B/2)
    Lam, _, Bd, V = dplr("legs", N)
    _, B0 = transition("legs", N)
    assert torch.allclose(B, (V.conj().T @ B0.to(C128)) / 2)
    with pytest.raises(ValueError, match="legs"):
        diagonal_init("legt", N)


def test_lemma_6_6_exact():
    """A~ V = V diag(1..N) in exact integer arithmetic; A~ = -D^-1 A_legs D."""
    N = 10
    At, V = legs_tilde_exact(N), legs_eigenvectors_exact(N)
    for i in range(N):
        for j in range(N):
            lhs = sum(At[i][k] * V[k][j] for k in range(N))
            assert lhs == V[i][j] * (j + 1)
    assert V[9][3] == math.comb(12, 6)
    A, _ = transition("legs", N)
    d = torch.sqrt(2 * torch.arange(N, dtype=F64) + 1) * (-1.0) ** torch.arange(N)
    assert torch.allclose(-(A * d[None, :]) / d[:, None], legs_tilde(N), atol=1e-12)


def test_lemma_6_6_condition_number_grows_exponentially():
    Ns = [4, 8, 12, 16, 20]
    logc = [math.log2(torch.linalg.cond(legs_eigenvectors(N)).item()) for N in Ns]
    slopes = np.diff(logc) / 4
    assert (slopes > 2.0).all(), logc  # ~ 2^{cN}, c ~ 3 bits per state dimension
    assert max(abs(legs_eigenvectors(40)).max().item(), 0) > 2 ** 40


@pytest.mark.parametrize("alpha", [0.5, -0.4])
def test_nplr_and_dplr_of_laguerre_with_alpha(alpha):
    """R10: ``nplr("lagt", N, alpha=...)`` failed with Python's "unexpected keyword argument". LagT's A = -tril(1)
    does not depend on alpha (only B does), so every alpha has the NPLR/DPLR form: both forms take it, and refuse
    clearly a parameter the measure does not have."""
    N = 8
    A, B0 = transition("lagt", N, alpha=alpha)
    Lam, P, B, V = nplr("lagt", N, alpha=alpha)
    torch.testing.assert_close(V @ (torch.diag(Lam) - P.T @ P.conj()) @ V.conj().T, A.to(C128), atol=1e-12, rtol=0)
    torch.testing.assert_close(V @ B, B0.to(C128), atol=1e-12, rtol=0)
    assert float(B.imag.abs().max()) < 1e-12 and float(B.real.min()) >= -1e-12
    torch.testing.assert_close(Lam, nplr("lagt", N)[0])                 # the spectrum is alpha-free
    Lh, Ph, Bh, Vh = dplr("lagt", N, alpha=alpha)
    Vf, Lf, Pf = torch.cat([Vh, Vh.conj()], 1), torch.cat([Lh, Lh.conj()]), torch.cat([Ph, Ph.conj()], 1)
    torch.testing.assert_close(Vf @ (torch.diag(Lf) - Pf.T @ Pf.conj()) @ Vf.conj().T, A.to(C128), atol=1e-12, rtol=0)
    torch.testing.assert_close(Vf @ torch.cat([Bh, Bh.conj()]), B0.to(C128), atol=1e-12, rtol=0)
    for fn in (nplr, dplr):
        with pytest.raises(TypeError, match=r"measure 'legs' got unexpected parameter\(s\) \['alpha'\]"):
            fn("legs", 4, alpha=0.5)
