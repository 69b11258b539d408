"""The fused S4 low-rank step kernel (statespaces.ops.triton.dplr_step) behind kernels.dplr.dplr_step, run on
CPU by the Triton interpreter.

TRITON_INTERPRET=1 is set before anything imports the kernel modules; CPU tensors reach the kernel only
inside ``backend.force_triton()``. Checks: the kernel equals the PyTorch Woodbury step on S4 systems of
ranks 1-3 (LegS, LegT, a padded rank), fp32 / fp64, odd mode counts and several row tiles; in place into
the generation stepper's buffers; the stepper under the forced kernel equals the layer's convolution view;
autograd keeps the PyTorch step; without force, CPU runs PyTorch; bad arguments are refused.
"""
import os

os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

triton = pytest.importorskip("triton", reason="triton is not installed: the Triton kernels are optional")

from conftest import close_scaled, patch_triton_interpreter, spy_calls  # noqa: E402

from statespaces import S4, backend  # noqa: E402
from statespaces.kernels import dplr  # noqa: E402
from statespaces.ops.triton import dplr_step as tds  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

patch_triton_interpreter()   # NumPy >= 2.4 vs the Triton 3.6 interpreter (conftest.py)


@pytest.fixture
def small_tiles(monkeypatch):
    """Tiles of 32 elements: 2 rows of 16 modes, so that tiny shapes span several programs."""
    monkeypatch.setattr(tds, "TILE", 32)


@pytest.fixture
def kernel_calls(monkeypatch):
    return spy_calls(monkeypatch, tds, "launch_step", 8)


_close = close_scaled


def _layer(init, rank, dtype, H=3, N=14):
    return S4(H, N, init=init, rank=rank, seed=4).to(dtype).eval()     # N = 14: M = 7 modes (odd)


def _system(layer):
    with torch.no_grad():
        return layer._step_system(1.0)


@pytest.mark.parametrize("init,rank", [("legs", 1), ("legt", 2), ("legs", 3)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_kernel_matches_pytorch_step(small_tiles, init, rank, dtype):
    """The kernel against the reference step on the layer's own precomputed system, with a random
    non-contiguous state; the input state is untouched."""
    layer = _layer(init, rank, dtype)
    st, C = _system(layer)
    g = torch.Generator().manual_seed(rank)
    B, H, M = 3, layer.d_model, layer.n_modes
    cdt = C.dtype
    state = torch.complex(torch.randn(H, B, M, generator=g), torch.randn(H, B, M, generator=g)).to(cdt).transpose(0, 1)
    u = torch.randn(B, H, generator=g).to(dtype)
    before = state.clone()
    args = (st.da, st.db, st.Pc, st.dsP, st.E, st.sG, C, layer.D.detach(), u, state)
    assert tds.fits(*args)
    with torch.no_grad():
        y, s = tds.dplr_step_triton(*args)
        y_ref, s_ref = dplr.dplr_step_ref(st, C, layer.D, u, state)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    _close(s, s_ref, tol)
    _close(y, y_ref, tol)
    assert torch.equal(state, before)


@pytest.mark.parametrize("rank", [1, 2, 4])
def test_kernel_on_random_complex_systems(small_tiles, rank):
    """Every tensor random and complex (the layer's sG is real: this covers its imaginary part too), M = 9
    modes over three row tiles, against the reference expression in float64."""
    g = torch.Generator().manual_seed(10 + rank)
    B, H, M = 2, 5, 9

    def c(*shape):
        return torch.complex(torch.randn(*shape, generator=g, dtype=torch.float64),
                             torch.randn(*shape, generator=g, dtype=torch.float64))

    st = dplr.DPLRStep(da=0.5 * c(H, M), db=c(H, M), Pc=c(H, M, rank), dsP=c(H, rank, M), E=c(H, rank, M),
                       sG=0.3 * c(H, rank, rank))
    C, D, u, state = c(H, M), torch.randn(H, generator=g).double(), torch.randn(B, H, generator=g).double(), c(B, H, M)
    y, s = tds.dplr_step_triton(st.da, st.db, st.Pc, st.dsP, st.E, st.sG, C, D, u, state)
    y_ref, s_ref = dplr.dplr_step_ref(st, C, D, u, state)
    _close(s, s_ref, 1e-12)
    _close(y, y_ref, 1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_stepper_under_forced_kernel_matches_convolution(small_tiles, kernel_calls, dtype):
    """The default S4 stepper (form 'dplr') under the forced kernel: every step reaches it, writes into the
    stepper's own buffers, and equals the PyTorch stepper and the layer's convolution view."""
    layer = _layer("legs", 1, dtype, H=4, N=10)
    x = torch.randn(2, 12, 4, dtype=dtype)
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
    layer = _layer("legt", 2, torch.float32)
    x = torch.randn(3, 2, 3)
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
    layer = _layer("legs", 1, torch.float32)
    x = torch.randn(2, 3, requires_grad=True)
    with backend.force_triton():
        y, s = layer.step(x, layer.initial_state(2))
    (y.sum() + s.abs().sum()).backward()
    assert not kernel_calls
    assert x.grad is not None and layer.C.grad is not None


def test_cpu_without_force_and_large_rank_run_pytorch(kernel_calls):
    with torch.no_grad():
        _layer("legs", 1, torch.float32).stepper(2)(torch.randn(2, 3))
        layer = _layer("legs", tds.MAX_RANK + 1, torch.float32)
        with backend.force_triton():
            y, _ = layer.step(torch.randn(2, 3), layer.initial_state(2))    # rank 5: PyTorch, same result
    assert not kernel_calls and torch.isfinite(y).all()


def test_rejects_autograd_and_bad_arguments():
    layer = _layer("legs", 1, torch.float32)
    st, C = _system(layer)
    D, u, state = layer.D.detach(), torch.randn(2, 3), layer.initial_state(2)
    with pytest.raises(RuntimeError, match="inference-only"):
        tds.dplr_step_triton(st.da, st.db, st.Pc, st.dsP, st.E, st.sG, C, D, u.requires_grad_(), state)
    u = u.detach()
    with torch.no_grad(), pytest.raises(ValueError, match=r"sG .*\(3, 1, 2\)"):
        tds.dplr_step_triton(st.da, st.db, st.Pc, st.dsP, st.E, st.sG.expand(3, 1, 2), C, D, u, state)
    with torch.no_grad(), pytest.raises(ValueError, match="out\\[1\\]"):
        tds.dplr_step_triton(st.da, st.db, st.Pc, st.dsP, st.E, st.sG, C, D, u, state,
                             out=(torch.empty(2, 3), state.transpose(0, 1)))
