"""The fused diagonal-SSM step kernel (statespaces.ops.triton.step) behind dispatch.diagonal_step.

Run on CPU by the Triton interpreter, as in tests/test_triton.py: TRITON_INTERPRET=1 is set here,
before anything imports the kernel modules, and CPU tensors reach the kernel only inside
``dispatch.force_triton()``. Checks: the kernel equals the PyTorch step (S4D inits, fp32 / fp64,
odd mode counts, several tiles); stepping a layer and generating from a language model under
the forced kernel match the convolution / the PyTorch path; with autograd on, ``DiagonalSSM.step``
keeps the PyTorch expression (gradients flow); on CPU without force, PyTorch runs. The same
checks compiled for a real GPU run in a subprocess at the end (skipped without CUDA).
"""
import os

os.environ["TRITON_INTERPRET"] = "1"

import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

triton = pytest.importorskip("triton", reason="triton is not installed: the Triton kernels are optional")

from conftest import close_scaled, patch_triton_interpreter, spy_calls  # noqa: E402

from statespaces import S4D  # noqa: E402
from statespaces.kernels import dispatch  # noqa: E402
from statespaces.ops.triton import step as tstep  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

patch_triton_interpreter()   # NumPy >= 2.4 vs the Triton 3.6 interpreter (conftest.py)


@pytest.fixture
def small_tiles(monkeypatch):
    """Tiles of 4 rows x 4 modes, so that tiny shapes span several programs and mode tiles."""
    monkeypatch.setattr(tstep, "BLOCK_R", 4)
    monkeypatch.setattr(tstep, "MAX_BLOCK_M", 4)


@pytest.fixture
def kernel_calls(monkeypatch):
    """Counts the calls that reach the Triton step kernel (the dispatcher imports it per call)."""
    return spy_calls(monkeypatch, tstep, "diagonal_step_triton", 4)


def _layer(init, dtype, H=3):
    d_state = 7 if init == "real" else 10                   # M = 7 or 5 complex modes: odd
    layer = S4D(H, d_state, init=init, seed=5).to(dtype).eval()
    return layer


_close = close_scaled


# ---- the kernel against the PyTorch step ---------------------------------------------------------
@pytest.mark.parametrize("init", ["legs", "lin", "real", "inv"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("B", [1, 3])
def test_triton_step_matches_pytorch_step(small_tiles, kernel_calls, init, dtype, B):
    layer = _layer(init, dtype)
    x = torch.randn(4, B, 3, dtype=dtype)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    with torch.no_grad():
        s_ref = s_tri = layer.initial_state(B)
        for t in range(x.shape[0]):
            y_ref, s_ref = layer.step(x[t], s_ref)
            with dispatch.force_triton():
                y_tri, s_tri = layer.step(x[t], s_tri)
            assert y_tri.dtype == y_ref.dtype == dtype and s_tri.dtype == s_ref.dtype
            assert y_tri.shape == (B, 3) and s_tri.shape == s_ref.shape
            _close(y_tri, y_ref, tol)
            _close(s_tri, s_ref, tol)
    assert len(kernel_calls) == x.shape[0]


def test_triton_step_function_direct(small_tiles):
    """The kernel alone on random complex systems (M = 9: three mode tiles, B*H = 10 rows:
    three row tiles), including a non-contiguous state; the input state is left untouched."""
    g = torch.Generator().manual_seed(2)
    B, H, M = 2, 5, 9

    def c(*shape):
        return torch.complex(torch.randn(*shape, generator=g), torch.randn(*shape, generator=g))

    dA = 0.9 * c(H, M) / 2
    dB, Cc, state = c(H, M), c(H, M), c(H, B, M).transpose(0, 1)   # (B, H, M), not contiguous
    D, u = torch.randn(H, generator=g), torch.randn(B, H, generator=g)
    before = state.clone()
    y, s = tstep.diagonal_step_triton(dA, dB, Cc, D, u, state)
    y_ref, s_ref = dispatch._diagonal_step_torch(*(t.to(torch.complex128) for t in (dA, dB, Cc)),
                                                 D.double(), u.double(), state.to(torch.complex128))
    _close(s, s_ref, 1e-6)
    _close(y, y_ref, 1e-6)
    assert torch.equal(state, before)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_stepper_in_place_kernel_matches_convolution(small_tiles, kernel_calls, dtype):
    """The generation stepper's path: the kernel writes y and the state into the stepper's static
    buffers, the state in place (out=(y, state)); equals the convolution view and the PyTorch stepper."""
    layer = S4D(4, 10, init="legs", seed=3).to(dtype).eval()
    x = torch.randn(3, 12, 4, dtype=dtype)
    st_tri, st_ref = layer.stepper(3), layer.stepper(3)
    y_buf, s_buf = st_tri.y, st_tri.state
    with torch.no_grad():
        with dispatch.force_triton():
            ys = torch.stack([st_tri(x[:, t]).clone() for t in range(x.shape[1])], 1)
        ys_ref = torch.stack([st_ref(x[:, t]).clone() for t in range(x.shape[1])], 1)
        y_conv, s_conv = layer(x, return_state=True)
    assert len(kernel_calls) == x.shape[1] and st_tri.y is y_buf and st_tri.state is s_buf
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    _close(ys, y_conv, tol)
    _close(st_tri.state, s_conv, tol)
    _close(ys, ys_ref, tol)
    with pytest.raises(ValueError, match="out"):            # out buffers must match the results
        tstep.diagonal_step_triton(st_tri.dA, st_tri.dB, st_tri.Cc, st_tri.D, st_tri.x, st_tri.state,
                                   out=(st_tri.y[:1], st_tri.state))


def test_triton_step_rejects_autograd_and_bad_inputs():
    dA = torch.full((2, 3), 0.5 + 0.1j, dtype=torch.complex64)
    u, D, state = torch.randn(1, 2), torch.randn(2), torch.zeros(1, 2, 3, dtype=torch.complex64)
    with pytest.raises(RuntimeError, match="inference-only"):
        tstep.diagonal_step_triton(dA, dA, dA, D.requires_grad_(), u, state)
    with torch.no_grad():                                     # grad mode off: allowed
        tstep.diagonal_step_triton(dA, dA, dA, D, u, state)
    with pytest.raises(ValueError, match="shape"):
        tstep.diagonal_step_triton(dA, dA, dA[:, :2], D.detach(), u, state)
    with pytest.raises(TypeError, match="complex64"):
        tstep.diagonal_step_triton(dA, dA, dA, D.detach(), u, state.to(torch.complex128))


# ---- whole sequences under the forced kernel ----------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_stepped_s4d_matches_convolution_under_forced_triton(small_tiles, kernel_calls, dtype):
    layer = S4D(4, 10, init="legs", seed=3).to(dtype).eval()
    x = torch.randn(3, 12, 4, dtype=dtype)
    with torch.no_grad():
        y_conv = layer(x)
        state, ys = layer.initial_state(3), []
        with dispatch.force_triton():
            for t in range(x.shape[1]):
                yt, state = layer.step(x[:, t], state)
                ys.append(yt)
        _, st_chunk = layer(x, return_state=True)
    _close(torch.stack(ys, 1), y_conv, 1e-5 if dtype == torch.float32 else 1e-10)
    _close(state, st_chunk, 1e-5 if dtype == torch.float32 else 1e-10)
    assert len(kernel_calls) == x.shape[1]


def test_generate_under_forced_triton_matches_pytorch(small_tiles, kernel_calls):
    from statespaces.models.lm import SSMLanguageModel

    torch.manual_seed(1)
    m = SSMLanguageModel(11, d_model=8, n_layers=2, layer=dict(kind="s4d", d_state=6)).double().eval()
    prompt = torch.randint(0, 11, (2, 5))
    kw = dict(return_logits=True)
    toks_ref, logits_ref = m.generate(prompt, 4, generator=torch.Generator().manual_seed(0), **kw)
    assert not kernel_calls, "CPU generation without force must not reach the Triton kernel"
    with dispatch.force_triton():
        toks, logits = m.generate(prompt, 4, generator=torch.Generator().manual_seed(0), **kw)
    assert len(kernel_calls) >= 2 * 3                          # 2 layers x the steps after the prompt
    assert torch.equal(toks, toks_ref)
    _close(logits, logits_ref, 1e-10)


# ---- autograd and dispatch rules ----------------------------------------------------------------
def test_grad_mode_keeps_the_pytorch_step(kernel_calls):
    layer = S4D(3, 8, init="lin", seed=1)
    x = torch.randn(2, 3)
    with dispatch.force_triton():
        y, state = layer.step(x, layer.initial_state(2))
        y2, _ = layer.step(x, state)
    assert not kernel_calls, "with autograd on, DiagonalSSM.step must use the PyTorch expression"
    y2.square().sum().backward()
    for p in (layer.log_dt, layer.C, layer.D):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    # the dispatcher itself also refuses the kernel when a gradient is needed
    dA, dB, Cc, _ = layer._step_system(1.0)
    with dispatch.force_triton():
        y3, _ = dispatch.diagonal_step(dA, dB, Cc, layer.D, x, state.detach())
    assert not kernel_calls and y3.requires_grad


def test_dispatch_step_uses_pytorch_on_cpu_unless_forced(small_tiles, kernel_calls, monkeypatch):
    layer = S4D(3, 8, init="legs", seed=2).eval()
    x = torch.randn(2, 3)
    with torch.no_grad():
        dA, dB, Cc, _ = layer._step_system(1.0)
        args = (dA, dB, Cc, layer.D, x, layer.initial_state(2) + 0.5)
        y_ref, s_ref = dispatch._diagonal_step_torch(*args)
        y, s = dispatch.diagonal_step(*args)                       # CPU, not forced: PyTorch
        assert not kernel_calls
        assert torch.equal(y, y_ref) and torch.equal(s, s_ref)
        with dispatch.force_triton():
            y_t, s_t = dispatch.diagonal_step(*args)
            assert len(kernel_calls) == 1
            dispatch.diagonal_step(dA[None], dB, Cc, layer.D, x, args[5])   # broadcast dA: PyTorch
            dispatch.diagonal_step(dA, dB, Cc, layer.D.double(), x, args[5])  # mixed precision: PyTorch
            assert len(kernel_calls) == 1
        monkeypatch.setenv("STATESPACES_NO_TRITON", "1")
        with dispatch.force_triton():
            dispatch.diagonal_step(*args)
        assert len(kernel_calls) == 1
    _close(y_t, y_ref, 1e-5)
    _close(s_t, s_ref, 1e-5)


# ---- the compiled kernel on a real GPU ----------------------------------------------------------
GPU_SCRIPT = textwrap.dedent(
    """
    import torch
    from statespaces import S4D
    from statespaces.kernels import dispatch
    from statespaces.models.lm import SSMLanguageModel
    from statespaces.ops.triton import step as tstep
    assert dispatch.use_triton(torch.zeros(1, device="cuda"))
    calls = []
    orig = tstep.diagonal_step_triton
    tstep.diagonal_step_triton = lambda *a: (calls.append(1), orig(*a))[1]
    torch.manual_seed(0)

    def close(x, ref, tol, what):
        scale = ref.abs().max().clamp_min(1.0)
        err = float((x.to(ref.dtype) - ref).abs().max() / scale)
        assert err <= tol, f"{what}: relative error {err:.3g} > {tol}"

    for init in ("legs", "lin", "real", "inv"):
        for dtype, tol in ((torch.float32, 1e-5), (torch.float64, 1e-12)):
            for B in (1, 3, 64):
                d_state = 129 if init == "real" else 130         # M odd, > one 64-mode tile
                layer = S4D(96, d_state, init=init, seed=5).to("cuda", dtype).eval()
                x = torch.randn(6, B, 96, dtype=dtype, device="cuda")
                with torch.no_grad():
                    s_ref = s_gpu = layer.initial_state(B)
                    for t in range(x.shape[0]):
                        dA, dB, Cc, _ = layer._step_system(1.0)
                        y_ref, s_ref = dispatch._diagonal_step_torch(dA, dB, Cc, layer.D, x[t], s_ref)
                        y_gpu, s_gpu = layer.step(x[t], s_gpu)
                        close(y_gpu, y_ref, tol, f"y {init} {dtype} B={B}")
                        close(s_gpu, s_ref, tol, f"state {init} {dtype} B={B}")
    assert calls, "CUDA step did not reach the Triton kernel"

    layer = S4D(32, 64, init="legs", seed=3).cuda().eval()
    x = torch.randn(4, 200, 32, device="cuda")
    with torch.no_grad():
        y_conv = layer(x)
        state, ys = layer.initial_state(4), []
        for t in range(x.shape[1]):
            yt, state = layer.step(x[:, t], state)
            ys.append(yt)
    close(torch.stack(ys, 1), y_conv, 1e-4, "stepped S4D vs convolution")

    n = len(calls)
    m = SSMLanguageModel(50, d_model=32, n_layers=2, layer=dict(kind="s4d", d_state=16)).cuda().eval()
    prompt = torch.randint(0, 50, (3, 9), device="cuda")
    toks, logits = m.generate(prompt, 8, generator=torch.Generator("cuda").manual_seed(0), return_logits=True)
    assert len(calls) > n
    seq = torch.cat([prompt, toks], 1)
    with torch.no_grad():
        for i in range(8):
            close(logits[:, i], m(seq[:, : 9 + i])[:, -1], 1e-3, f"generate logits step {i}")

    layer = S4D(8, 16, seed=1).cuda()
    n = len(calls)
    y, st = layer.step(torch.randn(2, 8, device="cuda"), layer.initial_state(2))
    y.sum().backward()
    assert len(calls) == n and layer.C.grad is not None, "grad mode must keep the PyTorch step"
    print("ok")
    """
)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_triton_step_on_gpu():
    """Compiled kernel on CUDA, in a subprocess so TRITON_INTERPRET=1 (set above) does not apply."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", GPU_SCRIPT], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr
