"""Defects of the low-level public API found by a campaign using the kernels directly (2026-12-07): a shared input
matrix misread, a two-sided kernel of the wrong length merged silently, and arguments checked too late or not at
all (errors from inside einsum/matmul/MKL, or blaming the wrong argument)."""
import pytest
import torch

from statespaces.discretize import discretize_dense
from statespaces.kernels.dplr import dplr_advance, dplr_zero_input
from statespaces.kernels.oscillator import oscillator_kernel, oscillator_transition
from statespaces.kernels.vandermonde import vandermonde_transpose
from statespaces.ops.fftconv import fftconv, two_sided_kernel

f64 = torch.float64


def _textbook_bilinear(A, B, dt):
    eye = torch.eye(A.shape[-1], dtype=f64)
    lhs = eye - dt / 2 * A
    return torch.linalg.solve(lhs, eye + dt / 2 * A), torch.linalg.solve(lhs, dt * B)


def test_discretize_dense_reads_a_shared_input_matrix_for_a_batch_of_systems():
    """B (N, M) with A (H, N, N) was read as H input vectors: a wrong dB when H = N, a false 'B has 1 rows' else."""
    g = torch.Generator().manual_seed(0)
    A = torch.randn(2, 3, 3, dtype=f64, generator=g) - 3 * torch.eye(3, dtype=f64)
    B = torch.randn(3, 4, dtype=f64, generator=g)                   # one (N, M) matrix, M != N
    dA, dB = discretize_dense(A, B, 0.1)
    assert dB.shape == (2, 3, 4)
    for h in range(2):
        torch.testing.assert_close(dB[h], _textbook_bilinear(A[h], B, 0.1)[1])
    Bv = torch.randn(2, 3, dtype=f64, generator=g)                  # one vector per system, as documented
    dBv = discretize_dense(A, Bv, 0.1)[1]
    torch.testing.assert_close(dBv[1], _textbook_bilinear(A[1], Bv[1, :, None], 0.1)[1][:, 0])
    with pytest.raises(TypeError, match="A must be a floating-point or complex tensor"):
        discretize_dense(torch.eye(2, dtype=torch.int64), torch.ones(2), 0.1)


def test_two_sided_kernel_refuses_a_kernel_of_another_length():
    with pytest.raises(ValueError, match=r"k must be \(2, \.\.\., L=2\)"):
        two_sided_kernel(torch.randn(2, 1, 4), 2)
    assert two_sided_kernel(torch.randn(2, 1, 4), 4).shape == (1, 8)


def test_state_maps_and_kernels_check_their_arguments():
    H, M, r = 1, 2, 1
    Lam = torch.complex(-torch.ones(H, M, dtype=f64), torch.arange(M, dtype=f64))
    P = torch.zeros(r, H, M, dtype=torch.complex128)
    Bc = torch.ones(H, M, dtype=torch.complex128)
    dt = torch.full((H,), 0.1, dtype=f64)
    with pytest.raises(ValueError, match=r"dplr_advance: u must be \(B, 1, L\)"):
        dplr_advance(Lam, P, Bc, dt, torch.randn(2, 3, 5, dtype=f64))        # H = 3 was broadcast silently
    with pytest.raises(ValueError, match="dplr_advance: u must be"):
        dplr_advance(Lam, P, Bc, dt, torch.randn(3, 5, dtype=f64))
    with pytest.raises(ValueError, match="dplr_zero_input: x0 must be"):
        dplr_zero_input(Lam, P, Bc, dt, torch.zeros(2, H, M + 1, dtype=torch.complex128), 4)
    with pytest.raises(ValueError, match="dplr_zero_input: L"):
        dplr_zero_input(Lam, P, Bc, dt, torch.zeros(2, H, M, dtype=torch.complex128), 0)
    with pytest.raises(ValueError, match="oscillator_responses: L"):
        oscillator_kernel(torch.ones(3, dtype=f64), torch.full((3,), 0.1, dtype=f64), "IM", 0)
    with pytest.raises(TypeError, match="integer A made it 0"):
        oscillator_transition(torch.ones(3, dtype=torch.int64), torch.full((3,), 0.1), "IM")
    with pytest.raises(ValueError, match=r"LinOSS-IMEX needs dt\^2 A <= 3.99"):    # the closed form of another system
        oscillator_kernel(torch.full((1,), 100.0, dtype=f64), torch.full((1,), 0.5, dtype=f64), "IMEX", 5)
    with pytest.raises(ValueError, match="L, H >= 1"):
        fftconv(torch.randn(1, 5, 0), torch.randn(0, 5))
    with pytest.raises(TypeError, match="vandermonde_transpose: u must be a real floating-point tensor"):
        vandermonde_transpose(torch.ones(1, 4, dtype=torch.int64), torch.zeros(1, 2, dtype=torch.complex64))


def test_vandermonde_transpose_takes_mixed_precisions():
    """float32 u with a complex128 log_a failed inside matmul ('expected scalar type Float but found Double')."""
    g = torch.Generator().manual_seed(0)
    u = torch.randn(2, 1, 6, generator=g)
    log_a = torch.complex(-torch.rand(1, 3, dtype=f64, generator=g), torch.rand(1, 3, dtype=f64, generator=g))
    got = vandermonde_transpose(u, log_a)
    want = (u.double()[..., None] * torch.exp(torch.arange(6, dtype=f64)[:, None] * log_a[0])).sum(-2)
    assert got.dtype == torch.complex128
    torch.testing.assert_close(got, want)


def test_chunked_kernels_name_an_empty_length_and_accept_numpy_chunks():
    """L = 0 gave 'negative shift count' (power_kernel at L = -1: an error of row_powers, 'got -2'); a NumPy
    chunk was refused as 'not a positive integer'; linear_recurrence on an empty axis recursed forever."""
    import numpy as np

    from statespaces.hippo.legs_fast import linear_recurrence
    from statespaces.kernels.chunked import advance, power_kernel, zero_input_response
    from statespaces.kernels.chunked_conv import chunked_conv_diagonal

    dA = 0.5 * torch.eye(2, dtype=f64).expand(1, 2, 2)
    b = torch.ones(1, 2, dtype=f64)
    with pytest.raises(ValueError, match="the length L must be a positive integer"):
        zero_input_response(dA, b, torch.zeros(1, 1, 2, dtype=f64), 0)
    with pytest.raises(ValueError, match="the length L must be a positive integer"):
        advance(dA, b, torch.zeros(1, 1, 0, dtype=f64))
    with pytest.raises(ValueError, match="power_kernel: L must be a positive integer"):
        power_kernel(dA, b, b, -1)
    u = torch.randn(1, 5, 1, dtype=f64)
    log_a = torch.full((1, 1), -0.1 + 0.3j, dtype=torch.complex128)
    one = torch.ones(1, 1, dtype=torch.complex128)
    torch.testing.assert_close(chunked_conv_diagonal(u, log_a, one, one[None], chunk=np.int64(2)),
                               chunked_conv_diagonal(u, log_a, one, one[None], chunk=2))
    assert linear_recurrence(torch.ones(3, 0), torch.ones(3, 0)).shape == (3, 0)


def test_oscillator_kernel_under_vmap_and_vandermonde_transpose_with_a_real_log():
    """The validation added to oscillator_kernel read tensor values, which vmap has not (a regression found by the
    verification round); a real log_a reached torch's 'imag is not implemented'."""
    A = torch.rand(3, 4, dtype=f64)
    dt = torch.full((4,), 0.1, dtype=f64)
    got = torch.func.vmap(lambda a: oscillator_kernel(a, dt, "IM", 5))(A)
    torch.testing.assert_close(got, torch.stack([oscillator_kernel(a, dt, "IM", 5) for a in A]))
    u = torch.randn(1, 6, dtype=f64)
    log_a = -torch.rand(1, 2, dtype=f64)
    want = (u[..., None] * torch.exp(torch.arange(6, dtype=f64)[:, None] * log_a[0])).sum(-2)
    torch.testing.assert_close(vandermonde_transpose(u, log_a).real, want)
