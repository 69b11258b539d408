"""Low-level op defects found by a campaign calling the kernels directly (2026-12-07): silent wrong answers,
a fast path disagreeing with its ``_ref`` twin, and crashes that did not name the mistake. Each test checks
the fixed behaviour against the twin or an independent computation."""
import numpy as np
import pytest
import torch

from statespaces.discretize import discretize_dense, discretize_diagonal
from statespaces.kernels.chunked import power_kernel
from statespaces.kernels.dplr import dplr_kernel
from statespaces.kernels.vandermonde import vandermonde, vandermonde_ref
from statespaces.ops.fftconv import fftconv
from statespaces.ops.scan import scan_block2, scan_block2_ref, scan_diagonal, scan_diagonal_ref

pytestmark = pytest.mark.usefixtures("one_thread")
C128 = torch.complex128


def test_vandermonde_takes_real_inputs_with_gradients_and_one_dtype():
    """A real coef or log_a that requires grad crashed the fast backward with a PyTorch-internal message; mixed
    precisions gave float64 on the fast path and float32 from the twin."""
    g = torch.Generator().manual_seed(0)
    log_a = torch.complex(-torch.rand(2, 3, generator=g, dtype=torch.float64),
                          torch.randn(2, 3, generator=g, dtype=torch.float64))
    c = torch.randn(2, 3, dtype=torch.float64, generator=g, requires_grad=True)
    vandermonde(c, log_a, 5).sum().backward()
    c2 = c.detach().clone().requires_grad_()
    vandermonde_ref(c2.to(C128), log_a, 5).sum().backward()
    assert c.grad.dtype == torch.float64 and torch.allclose(c.grad, c2.grad, atol=1e-14)
    lr = (-torch.rand(2, 3, dtype=torch.float64, generator=g)).requires_grad_()
    vandermonde(torch.randn(2, 3, dtype=C128, generator=g), lr, 4).sum().backward()
    assert lr.grad.dtype == torch.float64
    coef64 = torch.randn(2, 3, dtype=torch.complex64, generator=g)
    assert vandermonde(coef64, log_a, 4).dtype == torch.float64
    with pytest.raises(ValueError, match="disagree on H"):
        vandermonde(torch.randn(3, 4, dtype=torch.complex64), torch.randn(2, 4, dtype=torch.complex64), 5)
    with pytest.raises(TypeError, match="coef must be a complex"):
        vandermonde(torch.ones(2, 3, dtype=torch.long), log_a, 5)


def test_fftconv_refuses_integers_and_handles_mixed_precisions():
    """Integer u was convolved in integers (the torch path truncated, the ref path cast k to int64: zeros); mixed
    float32/float64 crashed in the backward."""
    k = torch.tensor([[0.5, 0.25, 0.0, 0.0]], dtype=torch.float64)
    for u in (torch.tensor([[[1], [2], [3], [4]]]), torch.tensor([[[1], [2], [3], [4]]]) > 2):
        with pytest.raises(TypeError, match="fftconv: u must be a real floating-point tensor"):
            fftconv(u, k)
    with pytest.raises(TypeError, match="fftconv: k must be a real floating-point tensor"):
        fftconv(torch.randn(1, 4, 1), k.to(C128))
    with pytest.raises(TypeError, match="under torch.autocast"):
        fftconv(torch.randn(1, 4, 1).half(), k)
    with pytest.raises(TypeError, match="bidirectional must be True or False"):
        fftconv(torch.randn(1, 4, 1), k, bidirectional="no")
    u = torch.tensor([[[1.0], [2.0], [3.0], [4.0]]])
    direct = np.convolve([1, 2, 3, 4], [0.5, 0.25])[:4]
    assert np.allclose(fftconv(u, k)[0, :, 0].numpy(), direct, atol=1e-6)
    for du, dk in ((torch.float32, torch.float64), (torch.float64, torch.float32)):
        uu = torch.randn(2, 6, 3, dtype=du, requires_grad=True)
        kk = torch.randn(3, 6, dtype=dk, requires_grad=True)
        y = fftconv(uu, kk)
        y.sum().backward()
        assert y.dtype == du and uu.grad.dtype == du and kk.grad.dtype == dk


def test_scans_of_one_step_have_the_broadcast_shape_and_dtype():
    """At L = 1 without x0 the scan returned b itself: a's batch dims and dtype were dropped."""
    a = torch.full((4, 1, 3), 0.5, dtype=C128)
    b = torch.ones(1, 1, 3)
    for x0 in (None, torch.ones(4, 3, dtype=C128)):
        got, ref = scan_diagonal(a, b, x0), scan_diagonal_ref(a, b, x0)
        assert got.shape == ref.shape == (4, 1, 3) and got.dtype == ref.dtype == C128
        assert torch.equal(got, ref)
    A = torch.randn(4, 1, 2, 2, 3, dtype=C128)
    B = torch.ones(1, 1, 2, 3)
    got, ref = scan_block2(A, B), scan_block2_ref(A, B)
    assert got.shape == ref.shape == (4, 1, 2, 3) and got.dtype == ref.dtype == C128 and torch.allclose(got, ref)


def test_discretization_refuses_integer_matrices_and_takes_a_shared_input_vector():
    """An integer A made dt integer (0): dA = 1, dB = 0 without a word; a (N,) B for a batch of A raised an
    IndexError."""
    with pytest.raises(TypeError, match="A must be a real floating or complex tensor"):
        discretize_diagonal(torch.tensor([[-1, -2]]), torch.tensor([[1.0, 1.0]]), torch.tensor([0.1]), "zoh")
    dA, dB = discretize_diagonal(torch.tensor([[-1.0, -2.0]], dtype=torch.float64), torch.ones(1, 2,
                                 dtype=torch.float64), torch.tensor([0.1], dtype=torch.float64), "zoh")
    assert torch.allclose(dA, torch.exp(torch.tensor([[-0.1, -0.2]], dtype=torch.float64)))
    A = -torch.eye(3, dtype=torch.float64).expand(4, 3, 3) * torch.arange(1, 5, dtype=torch.float64)[:, None, None]
    B = torch.ones(3, dtype=torch.float64)
    dt = torch.full((4,), 0.1, dtype=torch.float64)
    dA, dB = discretize_dense(A, B, dt, "zoh")
    dA2, dB2 = discretize_dense(A, B.expand(4, 3), dt, "zoh")
    assert dB.shape == (4, 3) and torch.allclose(dB, dB2) and torch.allclose(dA, dA2)


def test_kernels_name_bad_chunks_and_shapes():
    dA = torch.eye(3).expand(2, 3, 3) * 0.5
    for ch in (0, -4, 2.5, True):
        with pytest.raises(ValueError, match="chunk must be a positive integer"):
            power_kernel(dA, torch.ones(2, 3), torch.ones(2, 3), 8, chunk=ch)
    H, M = 3, 4
    Lam = torch.complex(-torch.rand(H, M), torch.randn(H, M))
    P = torch.randn(1, H, M, dtype=torch.complex64)
    B = torch.randn(H, M, dtype=torch.complex64)
    C = torch.randn(1, H, M, dtype=torch.complex64)
    for args, name in (((Lam, P, B, C, torch.tensor(0.1)), "dt"), ((Lam, P[0], B, C, torch.full((H,), 0.1)), "P"),
                       ((Lam, P, B[:2], C, torch.full((H,), 0.1)), "B")):
        with pytest.raises(ValueError, match=rf"dplr_kernel: {name} must be"):
            dplr_kernel(*args, 8)
    assert dplr_kernel(Lam, P, B, C, torch.full((H,), 0.1), 8).shape == (1, H, 8)


@pytest.mark.parametrize("value, off", [("", False), ("0", False), ("false", False), ("No", False), (" off ", False),
                                        ("1", True), ("TRUE", True), ("yes", True), ("on", True)])
def test_no_triton_variable_reads_the_usual_spellings(monkeypatch, value, off):
    """STATESPACES_NO_TRITON=false switched Triton off (every value but "" and "0" did)."""
    from statespaces import backend

    monkeypatch.setenv("STATESPACES_NO_TRITON", value)
    assert backend._no_triton_env() is off


def test_no_triton_variable_warns_on_another_value(monkeypatch):
    from statespaces import backend

    monkeypatch.setenv("STATESPACES_NO_TRITON", "maybe")
    monkeypatch.setattr(backend, "_WARNED", set(), raising=False)
    with pytest.warns(RuntimeWarning, match="STATESPACES_NO_TRITON=.maybe. is not one of"):
        assert backend._no_triton_env() is True


def test_set_backend_reads_names_as_the_environment_variable_does():
    from statespaces import backend

    before = backend.set_backend(" TORCH ")
    try:
        assert backend.get_backend() == "torch"
    finally:
        backend.set_backend(before)
    with pytest.raises(ValueError, match="backend must be one of"):
        backend.set_backend("fast")


def test_from_modes_refuses_modes_the_relu_floor_would_change():
    """real_transform='relu' floors -Re(A) at 1e-4: from_modes with slower modes built another layer (kernel 1%
    off at L = 2000) without a word (found by a layer-options campaign); exp reproduces them."""
    import math

    from statespaces import S4, S4D

    torch.set_default_dtype(torch.float64)
    try:
        lay = S4D(3, 8, init="lin", seed=0)
        with torch.no_grad():
            lay.A_real.fill_(math.log(1e-6))
        m = lay.modes()
        for cls in (S4D, S4):
            with pytest.raises(ValueError, match=r"real_transform='relu' floors the decay rate -Re\(A\) at 0.0001"):
                cls.from_modes(m, real_transform="relu")
        again = S4D.from_modes(m, real_transform="exp")
        k0 = lay.kernel(500)
        assert float((again.kernel(500) - k0).abs().max()) <= 1e-10 * float(k0.abs().max())
    finally:
        torch.set_default_dtype(torch.float32)


def test_s4d_options_of_the_wrong_type_are_named():
    from statespaces import S4, S4D

    for kw, err, match in ((dict(discretization="gbt", alpha="0.5"), TypeError, "alpha must be a number in"),
                           (dict(discretization="gbt", alpha=True), TypeError, "bools are not accepted"),
                           (dict(dt_min="0.01"), TypeError, "dt_min must be a positive finite number"),
                           (dict(dt_max=True), TypeError, "dt_max must be"),
                           (dict(init="real", imag_scale=5.0), ValueError, "init='real' does not have")):
        with pytest.raises(err, match=match):
            S4D(4, 8, **kw)
    with pytest.raises(TypeError, match="dt_min must be"):
        S4(4, 8, dt_min="0.01")
    assert S4D(4, 8, discretization="gbt", alpha=1).alpha == 1.0
