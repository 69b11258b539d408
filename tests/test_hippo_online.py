"""Online HiPPO (thesis §4.2-4.4, Lemma 4.5/4.6, App. A.1.5, D.3) and plotting."""

import math
import warnings

import pytest
import torch
from torch import nn

from statespaces.hippo import (DISCRETIZATIONS, HiPPO, discretize, legs_matvec, legs_solve, legs_step_dense,
                               legs_step_fast, linear_recurrence, transition)
from statespaces.hippo.legs_fast import legs_gbt_coefficients

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")   # tiny sequential ops (conftest.py)
G = torch.Generator().manual_seed(0)


def smooth(x):
    return 0.25 * torch.sin(x) + 0.5 * torch.sin(x / 3) + torch.sin(x / 7)


def test_linear_recurrence_matches_loop_including_zeros():
    for N in (1, 2, 5, 64, 129):
        r = torch.randn(3, N, dtype=F64, generator=G)
        r[:, ::7] = 0.0  # exact zeros break the cumprod formula of D.3.2, not the scan
        beta = torch.randn(3, N, dtype=F64, generator=G)
        s, ref = torch.zeros(3, dtype=F64), []
        for i in range(N):
            s = r[:, i] * s + beta[:, i]
            ref.append(s)
        assert torch.allclose(linear_recurrence(r, beta), torch.stack(ref, -1), atol=1e-12)


@pytest.mark.parametrize("N", [1, 3, 64, 1000])
def test_fast_legs_primitives_match_dense(N):
    A, _ = transition("legs", N)
    v = torch.randn(2, N, dtype=F64, generator=G)
    eye = torch.eye(N, dtype=F64)
    assert torch.allclose(legs_matvec(v, 0.3), v @ (eye + 0.3 * A).T, rtol=1e-12, atol=1e-10)
    for b in (0.0, 0.5 / 7, 0.25, 1.0):  # b = 1/(2k): r_{2k} = 0 exactly
        x = legs_solve(v, b)
        assert torch.allclose(x @ (eye - b * A).T, v, rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("gain", ["gbt", "thesis"])
def test_fast_step_equals_dense_gbt_step(alpha, gain):
    N = 96
    A, B = transition("legs", N)
    x = torch.randn(4, N, dtype=F64, generator=G)
    u = torch.randn(4, dtype=F64, generator=G)
    for k in (1, 2, 10, 500):
        a, b, g = legs_gbt_coefficients(float(k), float(k + 1), alpha, gain)
        fast = legs_step_fast(x, u, a, b, g)
        dense = legs_step_dense(x, u, a, b, g, A, B)
        assert ((fast - dense).norm() / dense.norm()) < 1e-12


def test_hippo_fast_forward_equals_dense_forward():
    u = torch.randn(2, 300, 3, dtype=F64, generator=G)
    c_fast = HiPPO(32, "legs")(u)
    c_dense = HiPPO(32, "legs", fast=False)(u)
    assert c_fast.shape == (2, 300, 3, 32)
    assert torch.allclose(c_fast, c_dense, rtol=1e-10, atol=1e-12)


def test_constant_input_is_a_fixed_point():
    u = torch.full((1, 200), 1.7, dtype=F64)
    c = HiPPO(16, "legs")(u)
    ref = torch.zeros(16, dtype=F64)
    ref[0] = 1.7
    assert torch.allclose(c[0], ref.expand(200, 16), atol=1e-12)


def test_legs_reconstruction_error_decreases_with_N():
    L = 1000
    x = (torch.arange(L, dtype=F64) + 0.5) * 0.1
    u = smooth(x)[None]
    errs = []
    for N in (8, 16, 32, 64):
        m = HiPPO(N, "legs")
        errs.append(((m.reconstruct(m(u, return_history=False), L) - u) ** 2).mean().item())
    assert errs[0] > errs[1] > errs[2] > errs[3]
    assert errs[-1] < 1e-4  # measured 4.4e-6


def test_polynomial_reconstructed_nearly_exactly():
    """A degree < N polynomial lies in the LegS span: only discretization error remains."""
    L, N = 2000, 8
    y = (torch.arange(L, dtype=F64) + 0.5) / L
    u = (1 - 3 * y + 4 * y**3 - 2 * y**5)[None]
    m = HiPPO(N, "legs")
    rec = m.reconstruct(m(u, return_history=False), L)
    assert (rec - u).abs().max() < 2e-3
    assert ((rec - u) ** 2).mean() < 1e-7


def test_legs_is_timescale_invariant():
    """Lemma 4.5: only the ratios delta/t enter, so scaling all timestamps changes nothing,
    and the default uniform grid equals timestamps (k+1)*dt for any dt."""
    u = torch.randn(2, 150, dtype=F64, generator=G)
    m = HiPPO(24, "legs")
    c0 = m(u)
    for dt in (1e-3, 0.37, 50.0):
        ts = dt * torch.arange(1, 151, dtype=F64)
        assert torch.allclose(m(u, timestamps=ts), c0, rtol=1e-12, atol=1e-12)
    irregular = torch.cumsum(torch.rand(150, dtype=F64, generator=G) + 0.1, 0)
    assert torch.allclose(m(u, timestamps=3.0 * irregular), m(u, timestamps=irregular), rtol=1e-12, atol=1e-12)


def test_legs_sampling_rate_robustness():
    """The same function sampled at 500 or 2000 points on [0, 100] gives nearly the same
    final coefficients (the continuous-time projection)."""
    finals = []
    for L in (500, 1000, 2000):
        x = (torch.arange(L, dtype=F64) + 0.5) * (100.0 / L)
        finals.append(HiPPO(32, "legs")(smooth(x)[None], return_history=False)[0])
    ref = finals[-1]
    assert ((finals[0] - ref).norm() / ref.norm()) < 5e-3
    assert ((finals[1] - ref).norm() / ref.norm()) < ((finals[0] - ref).norm() / ref.norm())


@pytest.mark.parametrize("measure", ["legt", "lmu", "fout"])
def test_windowed_measures_reconstruct_the_window(measure):
    L, dt, theta = 1000, 0.1, 100.0
    u = smooth((torch.arange(L, dtype=F64) + 0.5) * dt)[None]
    m = HiPPO(64 if measure != "fout" else 129, measure, dt=dt, theta=theta)
    rec = m.reconstruct(m(u, return_history=False))
    assert rec.shape == (1, 1000)
    mse = ((rec - u) ** 2).mean().item()
    assert mse < (3e-3 if measure != "fout" else 3e-2), mse


def test_lsi_chebyshev_runs_and_reconstructs():
    L = 800
    u = smooth((torch.arange(L, dtype=F64) + 0.5) * 0.125)[None]
    errs = []
    for N in (12, 48):
        m = HiPPO(N, "chebyshev", mode="lsi")
        rec = m.reconstruct(m(u, return_history=False), L)
        errs.append(((rec - u) ** 2)[:, 50:-50].mean().item())
    # the eta = 0 tilting of Cor E.7 expands u / w, which has sqrt endpoint singularities,
    # so convergence is only algebraic (measured: 0.03 at N=12, 0.008 at N=48)
    assert errs[1] < errs[0] and errs[1] < 2e-2


def test_shapes_dtypes_and_history():
    m = HiPPO(8, "legt", dt=0.01)
    u = torch.randn(3, 20, dtype=torch.float32, generator=G)
    c = m(u)
    assert c.shape == (3, 20, 8) and c.dtype == torch.float32
    assert m(u, return_history=False).shape == (3, 8)
    assert m(u.unsqueeze(-1).repeat(1, 1, 2), return_history=False).shape == (3, 2, 8)
    assert torch.allclose(m(u, return_history=False), c[:, -1])


def test_lti_discretizations():
    A, B = transition("legt", 6)
    Az, Bz = discretize(A, B, 0.01, "zoh")
    assert torch.allclose(Az, torch.linalg.matrix_exp(0.01 * A))
    assert torch.allclose(A @ Bz, (Az - torch.eye(6, dtype=F64)) @ B, atol=1e-12)
    Ab, Bb = discretize(A, B, 0.01, "bilinear")
    Ag, Bg = discretize(A, B, 0.01, 0.5)
    assert torch.equal(Ab, Ag) and torch.equal(Bb, Bg)
    Ae, Be = discretize(A, B, 0.01, "forward_euler")
    assert torch.allclose(Ae, torch.eye(6, dtype=F64) + 0.01 * A) and torch.allclose(Be, 0.01 * B)


def test_bad_inputs():
    m = HiPPO(4)
    with pytest.raises(ValueError, match="non-finite"):
        m(torch.tensor([[1.0, float("nan"), 2.0]]))
    with pytest.raises(ValueError, match="non-finite"):
        m(torch.tensor([[1.0, float("inf")]]))
    with pytest.raises(TypeError, match="floating"):
        m(torch.ones(1, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"\(B, L\)"):
        m(torch.ones(3))
    with pytest.raises(ValueError, match="strictly increasing"):
        m(torch.ones(1, 3), timestamps=torch.tensor([1.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="dt"):
        HiPPO(4, "legt")
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="dt"):
            HiPPO(4, "legt", dt=bad)
        with pytest.raises(ValueError, match="theta"):
            HiPPO(4, "legt", dt=0.1, theta=bad)
    with pytest.raises(ValueError, match="N must be"):
        HiPPO(0)
    with pytest.raises(ValueError) as exc:
        HiPPO(4, discretization="rk4")
    for name in DISCRETIZATIONS:
        assert name in str(exc.value)
    with pytest.raises(ValueError, match="zoh"):
        HiPPO(4, "legs", discretization="zoh")
    with pytest.raises(ValueError, match="lsi"):
        HiPPO(4, "legt", mode="lsi", dt=0.1)
    with pytest.raises(ValueError, match="length is required"):
        m.reconstruct(torch.zeros(4, dtype=F64))


def test_plots_write_png(tmp_path):
    pytest.importorskip("matplotlib")
    from statespaces.hippo.plots import plot_basis, plot_reconstruction

    L = 200
    x = (torch.arange(L, dtype=F64) + 0.5) * 0.5
    u = smooth(x)
    m = HiPPO(16)
    rec = m.reconstruct(m(u[None], return_history=False), L)[0]
    fig = plot_reconstruction(x, u, {"legs N=16": rec}, path=tmp_path / "rec.png")
    fig2 = plot_basis("legs", 4, path=tmp_path / "basis.png")
    assert (tmp_path / "rec.png").stat().st_size > 1000 and (tmp_path / "basis.png").stat().st_size > 1000
    import matplotlib.pyplot as plt

    plt.close(fig)
    plt.close(fig2)


def test_lti_reconstruction_reads_the_sample_midpoints():
    """LegT (N = 64, theta = 100 samples of dt = 0.1) reconstructs a slow sine at the sample midpoints tau_j =
    (j + 1/2) dt to ~1e-6; a lag convention off by half a step costs two orders of magnitude (mutation audit)."""
    L, dt, theta = 1000, 0.1, 100.0
    u = torch.sin((torch.arange(L, dtype=torch.float64) + 0.5) * dt * 0.2)[None]
    m = HiPPO(64, "legt", dt=dt, theta=theta)
    rec = m.reconstruct(m(u, return_history=False))
    assert float(((rec - u) ** 2)[:, 50:-50].mean()) < 5e-6


@pytest.mark.filterwarnings("ignore:.*forward Euler:RuntimeWarning")
@pytest.mark.parametrize("disc", ["bilinear", "backward_euler", "forward_euler", 0.3])
def test_generic_lsi_step_equals_the_legs_step(disc):
    """Jacobi(0, 0) is Legendre: its (A, B) are LegS's, and its LSI projection runs the generic dense GBT step
    (HiPPO._dense_gbt) where LegS runs its own (legs_step_dense). The two implementations agree for every rule."""
    u = torch.sin(torch.linspace(0, 6, 400, dtype=torch.float64))[None]
    legs = HiPPO(6, "legs", fast=False, discretization=disc)(u)
    jac = HiPPO(6, "jacobi", mode="lsi", alpha=0.0, beta=0.0, discretization=disc)(u)
    torch.testing.assert_close(jac, legs, atol=1e-12, rtol=0)


def test_reconstruct_and_basis_refuse_what_they_cannot_read():
    """``reconstruct`` truncated integer coefficients to integers and dropped the imaginary part of complex ones;
    ``basis`` with a string of lags raised torch's own message (found by a HiPPO campaign)."""
    from statespaces.hippo import basis
    from statespaces.hippo.online import HiPPO

    h = HiPPO(4)
    ref = h.reconstruct(torch.tensor([[0.0, 1.0, 0.0, 0.0]]), 6)
    assert ref.dtype == torch.float32 and ref.abs().min() > 0.2          # the values between the integers
    for bad in (torch.tensor([[0, 1, 0, 0]]), torch.zeros(1, 4, dtype=torch.complex64)):
        with pytest.raises(TypeError, match="coeffs must be a real floating tensor"):
            h.reconstruct(bad, 6)
    with pytest.raises(ValueError, match="coeffs contains 1 non-finite"):
        h.reconstruct(torch.tensor([[0.0, float("nan"), 0.0, 0.0]]), 6)
    for t in ("abc", [1, "x"]):
        with pytest.raises(TypeError, match="t must be a tensor, a number or an array-like of numbers"):
            basis("legs", 4, t)


# ---- HiPPO campaign (B1, B2, R6, R11, R13) ----------------------------------------------------------------------
@pytest.mark.parametrize("kw", [dict(measure="legt", dt=0.1), dict(fast=False), dict(),
                                dict(measure="chebyshev", mode="lsi")])
def test_dtype_casts_keep_the_float64_matrices(kw):
    """B1: ``.float()`` / ``.half()`` cast the float64 buffers, so the dense paths failed with a dtype mismatch
    (and the matrices lost precision). The casts now leave A, B, Abar, Bbar float64 and bit-identical, the output
    equals the uncast module's, also inside a container; device moves still apply; state_dict round-trips."""
    x = torch.randn(2, 40, dtype=F64, generator=G)
    ref_module = HiPPO(8, **kw)
    ref = ref_module(x)
    names = [n for n, _ in ref_module.named_buffers()]
    for cast in ("float", "half", "double", "bfloat16"):
        m = getattr(HiPPO(8, **kw), cast)()
        for n in names:
            assert getattr(m, n).dtype == F64 and torch.equal(getattr(m, n), getattr(ref_module, n)), (cast, n)
        assert torch.equal(m(x), ref)
        assert m(x.float()).dtype == torch.float32
        torch.testing.assert_close(m(x.float()), ref.float())
    outer = nn.Sequential(HiPPO(8, **kw)).float()
    assert torch.equal(outer(x), ref)
    moved = HiPPO(8, **kw).to("meta")                          # a device move reaches the buffers
    assert all(t.device.type == "meta" and t.dtype == F64 for t in moved.buffers())
    with pytest.raises(ValueError, match="u is on cpu but the module is on meta"):
        moved(x)
    assert moved(x.to("meta")).device.type == "meta"         # the states are made on the input's device
    state = HiPPO(8, **kw).half().state_dict()
    fresh = HiPPO(8, **kw)
    fresh.load_state_dict(state)
    assert torch.equal(fresh(x), ref)


def test_forward_euler_lsi_warns_and_refuses_to_return_overflow():
    """B2: forward Euler in mode 'lsi' multiplies the state by I + (delta/t) A, eigenvalues down to 1 - N at the
    first step: N = 1024 returned 618 inf/NaN coefficients silently. Construction now warns with the growth, and a
    non-finite result of a finite input raises, naming the discretization."""
    with pytest.warns(RuntimeWarning, match=r"forward Euler.*magnitude 1023 .*first ~512 steps.*'bilinear'"):
        m = HiPPO(1024, discretization="forward_euler")
    u = torch.sin(torch.linspace(0, 60, 600, dtype=F64))[None]
    with pytest.raises(FloatingPointError, match="not finite for a finite input.*forward_euler.*'bilinear'"):
        m(u, return_history=False)
    with pytest.warns(RuntimeWarning, match="magnitude 7 "):
        HiPPO(8, "jacobi", mode="lsi", discretization=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        HiPPO(2, discretization="forward_euler")            # |1 - 2| = 1: no step amplifies
        HiPPO(1024)                                         # bilinear
        HiPPO(64, "legt", dt=0.01, discretization="forward_euler")


def test_lsi_refuses_dt_and_theta():
    """R6: mode 'lsi' ignored theta and dt silently (same output as without them, yet the repr showed them)."""
    for kw in (dict(theta=5.0), dict(dt=0.01), dict(theta=5.0, dt=0.01)):
        with pytest.raises(ValueError, match="dt and theta apply to mode 'lti'"):
            HiPPO(8, **kw)
    assert HiPPO(8, theta=1.0).dt is None                 # the default, spelt out
    HiPPO(8, "legs", mode="lti", dt=0.01, theta=5.0)


def test_discretize_and_closure_refuse_nonfinite_systems():
    """R11: discretize and shift accepted NaN matrices and shift a NaN c (scale checked c only)."""
    from statespaces.hippo import conjugate, scale, shift

    A, B = transition("legs", 3)
    bad_A = A.clone()
    bad_A[1, 0] = float("nan")
    bad_B = B.clone()
    bad_B[0] = float("inf")
    for fn in (lambda a, b: discretize(a, b, 0.1), lambda a, b: shift(a, b, 0.5), lambda a, b: scale(a, b, 2.0),
               lambda a, b: conjugate(a, b, torch.eye(3, dtype=F64))):
        with pytest.raises(ValueError, match="A contains 1 non-finite"):
            fn(bad_A, B)
        with pytest.raises(ValueError, match="B contains 1 non-finite"):
            fn(A, bad_B)
        with pytest.raises(ValueError, match=r"A must have shape \(N, N\) and B shape \(N,\)"):
            fn(A, B[:2])
    for c in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="c must be a finite real number"):
            shift(A, B, c)
    with pytest.raises(TypeError, match="c must be"):
        shift(A, B, "0.5")
    with pytest.raises(ValueError, match="V contains"):
        conjugate(A, B, torch.full((3, 3), float("nan")))
    torch.testing.assert_close(shift(A, B, -0.7)[0], A - 0.7 * torch.eye(3, dtype=F64))


def test_dtype_message_matches_the_accepted_precisions():
    """R13: the message said "(float32 or float64)" while float16/bfloat16 inputs are accepted (and returned in
    their dtype)."""
    m = HiPPO(4)
    for dt in (torch.float16, torch.bfloat16):
        assert m(torch.ones(1, 3, dtype=dt)).dtype == dt
    with pytest.raises(TypeError, match=r"real floating tensor \(any precision"):
        m(torch.ones(1, 3, dtype=torch.int64))
