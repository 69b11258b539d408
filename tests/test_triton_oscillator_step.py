"""The fused LinOSS / D-LinOSS step kernels (statespaces.ops.triton.oscillator_step) behind
kernels.oscillator.oscillator_step, run on CPU by the Triton interpreter.

TRITON_INTERPRET=1 is set before anything imports the kernel modules; CPU tensors reach the kernels
only inside ``backend.force_triton()``. Checks: the kernels equal the PyTorch step (fp32 / fp64 states,
odd channel and oscillator counts spanning several tiles, IM / IMEX, D-LinOSS), in place into the
generation stepper's buffers; a stepped layer under the forced kernels equals its convolution view;
autograd keeps the PyTorch step (gradients flow); without force, CPU runs PyTorch; bad arguments
are refused with their shapes named.
"""
import os

os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

triton = pytest.importorskip("triton", reason="triton is not installed: the Triton kernels are optional")

from conftest import close_scaled, patch_triton_interpreter, spy_calls  # noqa: E402

from statespaces import LinOSS, backend  # noqa: E402
from statespaces.kernels import oscillator  # noqa: E402
from statespaces.layers import DLinOSS  # noqa: E402
from statespaces.ops.triton import oscillator_step as tos  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

patch_triton_interpreter()   # NumPy >= 2.4 vs the Triton 3.6 interpreter (conftest.py)


@pytest.fixture
def small_tiles(monkeypatch):
    """Tiles of 4 channels x 4 oscillators, so that tiny shapes span several tiles of both kernels."""
    monkeypatch.setattr(tos, "MAX_BLOCK_H", 4)
    monkeypatch.setattr(tos, "MAX_BLOCK_P", 4)


@pytest.fixture
def kernel_calls(monkeypatch):
    """Counts the calls that reach the Triton step (the dispatcher imports the module per call)."""
    return spy_calls(monkeypatch, tos, "launch_step", 5)


_close = close_scaled


def _system(P, g):
    """A random stable-looking float64 system: M (2, 2, P), f (2, P)."""
    return 0.5 * torch.randn(2, 2, P, generator=g, dtype=torch.float64), torch.randn(2, P, generator=g,
                                                                                     dtype=torch.float64)


def _c(*shape, g, dtype):
    return torch.complex(torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)).to(dtype)


@pytest.mark.parametrize("real", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("B,H,P", [(1, 5, 7), (3, 9, 6), (2, 4, 4)])
def test_kernel_matches_pytorch_step(small_tiles, real, B, H, P):
    """Both kernels against the reference expression, on random systems; the input state is untouched
    (out=None) and a non-contiguous state is read correctly."""
    g = torch.Generator().manual_seed(B * 100 + H * 10 + P)
    cdt = torch.complex64 if real == torch.float32 else torch.complex128
    M, f = _system(P, g)
    Bt, Ct = _c(H, P, g=g, dtype=cdt), _c(P, H, g=g, dtype=cdt)
    D, u = torch.randn(H, generator=g).to(real), torch.randn(B, H, generator=g).to(real)
    state = _c(2, B, P, g=g, dtype=cdt).transpose(0, 1)                # (B, 2, P), not contiguous
    before = state.clone()
    y, s = tos.oscillator_step_triton(M, f, Bt, Ct, D, u, state)
    y_ref, s_ref = oscillator.oscillator_step_ref(M, f, Bt, Ct, D, u, state)
    tol = 1e-5 if real == torch.float32 else 1e-12
    assert y.dtype == real and s.dtype == cdt and y.shape == (B, H) and s.shape == (B, 2, P)
    _close(s, s_ref, tol)
    _close(y, y_ref, tol)
    assert torch.equal(state, before)


def test_kernel_in_place_into_buffers(small_tiles):
    """out=(y, state) with the state itself: the stepper's call; equals the out-of-place result."""
    g = torch.Generator().manual_seed(7)
    B, H, P = 2, 6, 5
    M, f = _system(P, g)
    Bt, Ct = _c(H, P, g=g, dtype=torch.complex64), _c(P, H, g=g, dtype=torch.complex64)
    D, u = torch.randn(H, generator=g), torch.randn(B, H, generator=g)
    state = _c(B, 2, P, g=g, dtype=torch.complex64)
    y_ref, s_ref = tos.oscillator_step_triton(M, f, Bt, Ct, D, u, state)
    y_buf = torch.full((B, H), float("nan"))
    y, s = tos.oscillator_step_triton(M, f, Bt, Ct, D, u, state, out=(y_buf, state))
    assert y is y_buf and s is state
    assert torch.equal(state, s_ref) and torch.equal(y_buf, y_ref)


@pytest.mark.parametrize("cls,kw", [(LinOSS, {"discretization": "IM"}), (LinOSS, {"discretization": "IMEX"}),
                                    (DLinOSS, {})], ids=["linoss-im", "linoss-imex", "dlinoss"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_stepper_under_forced_kernel_matches_convolution(small_tiles, kernel_calls, cls, kw, dtype):
    """The generation stepper of LinOSS / D-LinOSS under the forced kernels: every step reaches the
    kernel, writes into the stepper's own buffers, and the outputs equal the layer's convolution view
    and the PyTorch stepper."""
    layer = cls(5, 6, seed=3, **kw).to(dtype).eval()
    x = torch.randn(2, 10, 5, dtype=dtype)
    st_tri, st_ref = layer.stepper(2), layer.stepper(2)
    y_buf, s_buf = st_tri.y, st_tri.state
    with torch.no_grad():
        with backend.force_triton():
            ys = torch.stack([st_tri(x[:, t]).clone() for t in range(x.shape[1])], 1)
        ys_ref = torch.stack([st_ref(x[:, t]).clone() for t in range(x.shape[1])], 1)
        y_conv = layer(x)
    assert len(kernel_calls) == x.shape[1]
    assert st_tri.y is y_buf and st_tri.state is s_buf
    tol = 2e-5 if dtype == torch.float32 else 1e-10
    _close(ys, ys_ref, tol)
    _close(ys, y_conv, 10 * tol)
    _close(st_tri.state, st_ref.state, tol)


def test_layer_step_under_forced_kernel(small_tiles, kernel_calls):
    """``LinOSS.step`` at inference reaches the kernel (its B^T, C^T are views) and equals the PyTorch step."""
    layer = LinOSS(4, 6, seed=1).eval()
    x = torch.randn(3, 2, 4)
    with torch.no_grad():
        s_ref = s_tri = layer.initial_state(2)
        for t in range(3):
            y_ref, s_ref = layer.step(x[t], s_ref)
            with backend.force_triton():
                y_tri, s_tri = layer.step(x[t], s_tri)
            _close(y_tri, y_ref, 2e-5)
            _close(s_tri, s_ref, 2e-5)
    assert len(kernel_calls) == 3


def test_grad_mode_keeps_the_pytorch_step(kernel_calls):
    """With autograd on, the step stays PyTorch even when forced, and gradients reach the parameters."""
    layer = LinOSS(4, 6, seed=1)
    x = torch.randn(2, 4, requires_grad=True)
    with backend.force_triton():
        y, s = layer.step(x, layer.initial_state(2))
    (y.sum() + s.abs().sum()).backward()
    assert not kernel_calls
    assert x.grad is not None and layer.B.grad is not None and layer.C.grad is not None


def test_cpu_without_force_runs_pytorch(kernel_calls):
    layer = LinOSS(4, 6, seed=1).eval()
    with torch.no_grad():
        layer.stepper(2)(torch.randn(2, 4))
        layer.step(torch.randn(2, 4), layer.initial_state(2))
    assert not kernel_calls


def test_rejects_autograd_and_bad_arguments():
    g = torch.Generator().manual_seed(0)
    M, f = _system(3, g)
    Bt, Ct = _c(4, 3, g=g, dtype=torch.complex64), _c(3, 4, g=g, dtype=torch.complex64)
    D, u, state = torch.randn(4), torch.randn(2, 4), torch.zeros(2, 2, 3, dtype=torch.complex64)
    with pytest.raises(RuntimeError, match="inference-only"):
        tos.oscillator_step_triton(M, f, Bt, Ct, D, u.requires_grad_(), state)
    u = u.detach()
    with pytest.raises(ValueError, match=r"Ct .*\(4, 3\)"):
        tos.oscillator_step_triton(M, f, Bt, Ct.T, D, u, state)                   # C^T of the wrong shape
    with pytest.raises(ValueError, match="float64 M"):
        tos.oscillator_step_triton(M.float(), f, Bt, Ct, D, u, state)            # M must be float64
    with pytest.raises(ValueError, match="out\\[0\\]"):
        tos.oscillator_step_triton(M, f, Bt, Ct, D, u, state, out=(torch.empty(2, 5), state))
    assert not tos.fits(M, f, Bt, Ct, D, u.double(), state)                     # fp64 u with a complex64 state
