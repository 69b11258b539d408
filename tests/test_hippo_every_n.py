"""Every HiPPO measure at every state size, even and odd (issue 16 item 1: FouT at even N).

Independent routes: the matrix exponential of ``transition`` against the closed-form basis of
:mod:`statespaces.hippo.basis`, and the NPLR/DPLR factorizations reassembled into ``A``.
"""

import pytest
import torch

from statespaces.hippo import HiPPO, basis, dplr, nplr, transition
from statespaces.hippo.measures import fourier_active

F64 = torch.float64
SIZES = list(range(1, 13)) + [31, 32, 64, 65]
EXACT = {"legs": {}, "lagt": {"alpha": 0.5}, "jacobi": {"alpha": 0.5, "beta": 1.0}, "chebyshev": {}}
WINDOWED = ("legt", "lmu", "fout")


def _kernel(measure, N, t, **params):
    A, B = transition(measure, N, **params)
    return torch.stack([torch.linalg.matrix_exp(A * ti) @ B for ti in t], 1)


@pytest.mark.parametrize("measure", sorted(EXACT))
@pytest.mark.parametrize("N", [n for n in SIZES if n <= 32])
def test_exact_measures_follow_their_basis_at_every_N(measure, N):
    t = torch.linspace(0.0, 3.0, 13, dtype=F64)
    K = _kernel(measure, N, t, **EXACT[measure])
    ref = basis(measure, N, t, **EXACT[measure])
    assert torch.allclose(K, ref, rtol=1e-8, atol=1e-8 * float(ref.abs().max()))


@pytest.mark.parametrize("measure", WINDOWED)
@pytest.mark.parametrize("N", [8, 32, 64, 128])
def test_windowed_measures_no_worse_at_even_N(measure, N):
    """The window approximation error at N is within 10% of the error at N - 1 (it only improves
    with N); before the fix FouT at even N was 0.41 off the basis against 0.014 at odd N."""
    t = torch.linspace(0.1, 0.9, 41, dtype=F64)

    def err(n):
        ref = basis(measure, n, t)
        return float((_kernel(measure, n, t) - ref).norm() / ref.norm())

    assert err(N) <= 1.1 * err(N - 1)


@pytest.mark.parametrize("N", [2, 4, 8, 64])
def test_fout_even_N_is_odd_system_plus_decoupled_dummy(N):
    A, B = transition("fout", N)
    A1, B1 = transition("fout", N - 1)
    assert fourier_active(N).tolist() == [True] * (N - 1) + [False]
    assert torch.equal(A[: N - 1, : N - 1], A1) and torch.equal(B[: N - 1], B1)
    assert torch.count_nonzero(A[-1]) == 0 and torch.count_nonzero(A[:, -1]) == 0 and B[-1] == 0
    # every mode the input reaches decays or oscillates: the active block has no zero eigenvalue
    ev = torch.linalg.eigvals(A1)
    assert float(ev.abs().min()) > 1.0 and float(ev.real.max()) < 0


@pytest.mark.parametrize("N", [64, 65])
def test_fout_online_memory_of_a_constant(N):
    """Reconstruction of a constant signal over the window (0.87 error at N = 64 before the fix)."""
    mem = HiPPO(N, "fout", mode="lti", dt=1 / 200)
    c = mem(torch.ones(1, 1000, dtype=F64), return_history=False)
    rec = mem.reconstruct(c)
    assert float((rec - 1).abs().mean()) < 5e-3


@pytest.mark.parametrize("measure", ["legs", "legt", "fout", "lagt"])
@pytest.mark.parametrize("N", [1, 2, 3, 4, 7, 8, 33, 64])
def test_nplr_reassembles_A_at_every_N(measure, N):
    A, B = transition(measure, N)
    Lam, P, Bt, V = nplr(measure, N)
    A2 = V @ (torch.diag(Lam) - P.T @ P.conj()) @ V.conj().T
    assert torch.allclose(A2.real, A, atol=1e-9 * max(1.0, float(A.abs().max())))
    assert float(A2.imag.abs().max()) < 1e-9 * max(1.0, float(A.abs().max()))
    assert torch.allclose((V @ Bt).real, B, atol=1e-10 * max(1.0, float(B.abs().max())))


@pytest.mark.parametrize("measure", ["legs", "legt", "fout", "lagt"])
@pytest.mark.parametrize("N", [2, 4, 8, 64])
def test_dplr_half_reassembles_A_at_every_even_N(measure, N):
    A, B = transition(measure, N)
    Lam, P, Bt, V = dplr(measure, N)
    Vf, Lf, Pf = torch.cat([V, V.conj()], 1), torch.cat([Lam, Lam.conj()]), torch.cat([P, P.conj()], 1)
    A2 = Vf @ (torch.diag(Lf) - Pf.T @ Pf.conj()) @ Vf.conj().T
    scale = max(1.0, float(A.abs().max()))
    assert float((A2 - A).abs().max()) < 1e-9 * scale
    assert float((Vf @ torch.cat([Bt, Bt.conj()]) - B).abs().max()) < 1e-9 * max(1.0, float(B.abs().max()))


@pytest.mark.parametrize("N", [8, 64])
def test_s4_fout_kernel_matches_the_hippo_system(N):
    """S4(init='fout') with even d_state starts from the FouT system: its dense real form has the
    spectrum of the HiPPO matrix (up to the documented -1e-4 floor of Re Lambda)."""
    from statespaces import S4

    layer = S4(d_model=1, d_state=N, init="fout", real_transform="exp").double()
    dA, dB, c, dt = layer.dense_system()
    A, _ = transition("fout", N)
    s = float(dt[0].detach()) / 2
    eye = torch.eye(N, dtype=F64)
    ref = torch.linalg.solve(eye - s * A, eye + s * A)
    ev = torch.sort(torch.linalg.eigvals(dA[0]).abs()).values
    ev_ref = torch.sort(torch.linalg.eigvals(ref).abs()).values
    assert torch.allclose(ev, ev_ref, atol=1e-3 * 2 * s + 1e-9)
