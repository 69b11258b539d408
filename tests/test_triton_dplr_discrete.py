"""S4's dense bilinear discretization in Triton (:mod:`statespaces.ops.triton.dplr_discrete`) under the interpreter.

:func:`~statespaces.ops.triton.dplr_discrete.bilinear_dplr_triton` computes ``dA = 2 (I - s A_R)^{-1} - I`` and
``dB = (dt/2)(b + dA b)`` by Woodbury in one launch (one more for the backward); its twin is
:func:`statespaces.kernels.dplr.bilinear_dplr_real` with the dB formula of :meth:`statespaces.layers.s4.S4.
_real_discrete`, evaluated here in float64 on the same (float32 / complex64) inputs. Odd mode counts exercise the
masking of the padded mode block (BM = 16 or 32).
"""
import os
import warnings

os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

triton = pytest.importorskip("triton", reason="triton is not installed: the Triton kernels are optional")

from conftest import patch_triton_interpreter  # noqa: E402

from statespaces.kernels.dplr import bilinear_dplr_real  # noqa: E402
from statespaces.layers.s4 import S4  # noqa: E402
from statespaces.ops.triton import dplr_discrete as tdd  # noqa: E402

patch_triton_interpreter()

#: max |error| / max |reference| allowed against float64 (float32 outputs: a few 1e-8 measured)
TOL = 1e-6


def _system(H, M, r, seed):
    """Stable Lambda (Re in [-1.1, -0.1], Im a few units), P, B (H, M) complex64, dt in [1e-3, 1e-1]."""
    g = torch.Generator().manual_seed(seed)
    Lam = torch.complex(-0.1 - torch.rand(H, M, generator=g), 3 * torch.randn(H, M, generator=g))
    P = 0.5 * torch.complex(torch.randn(r, H, M, generator=g), torch.randn(r, H, M, generator=g))
    B = torch.complex(torch.randn(H, M, generator=g), torch.randn(H, M, generator=g))
    dt = 10 ** (-3 + 2 * torch.rand(H, generator=g))
    return Lam, P, B, dt


def _reference(Lam, P, B, dt):
    """``(dA, dB)`` of ``S4._real_discrete`` (PyTorch, autograd), in the inputs' precision."""
    dA = bilinear_dplr_real(Lam, P, dt)
    b = torch.cat([B.real, B.imag], -1)
    return dA, (dt / 2)[:, None] * (b + (dA @ b[..., None])[..., 0])


def _wide(t):
    return t.to(torch.complex128) if t.is_complex() else t.double()


def _rel(x, ref):
    x, ref = x.detach(), ref.detach()
    return float((x.to(ref.dtype) - ref).abs().max() / ref.abs().max())


def _grads(fn, inputs, gdA, gdB):
    """Gradients of ``<gdA, dA> + <gdB, dB>`` (a None weight: that output left out of the loss; an input the loss
    does not reach, B for a loss on dA alone, gets zeros)."""
    xs = [t.detach().clone().requires_grad_() for t in inputs]
    dA, dB = fn(*xs)
    loss = 0
    if gdA is not None:
        loss = loss + (dA * gdA.to(dA.dtype)).sum()
    if gdB is not None:
        loss = loss + (dB * gdB.to(dB.dtype)).sum()
    grads = torch.autograd.grad(loss, xs, allow_unused=True)
    return [torch.zeros_like(x) if gx is None else gx for x, gx in zip(xs, grads)]


@pytest.mark.parametrize("r", [1, 2])
@pytest.mark.parametrize("M", [4, 5, 32])
def test_forward_matches_float64_reference(r, M):
    Lam, P, B, dt = _system(3, M, r, seed=10 * r + M)
    dA, dB = tdd.bilinear_dplr_triton(Lam, P, B, dt)
    assert dA.dtype == dB.dtype == torch.float32
    assert dA.shape == (3, 2 * M, 2 * M) and dB.shape == (3, 2 * M)
    rA, rB = _reference(*(_wide(t) for t in (Lam, P, B, dt)))
    assert _rel(dA, rA) < TOL and _rel(dB, rB) < TOL


@pytest.mark.parametrize("r", [1, 2])
@pytest.mark.parametrize("M", [4, 5, 32])
def test_gradients_match_float64_autograd(r, M):
    """All four inputs, random upstream gradients on both outputs."""
    inputs = _system(3, M, r, seed=100 + 10 * r + M)
    g = torch.Generator().manual_seed(7)
    gdA, gdB = torch.randn(3, 2 * M, 2 * M, generator=g), torch.randn(3, 2 * M, generator=g)
    got = _grads(tdd.bilinear_dplr_triton, inputs, gdA, gdB)
    want = _grads(_reference, [_wide(t) for t in inputs], gdA, gdB)
    for name, x, ref in zip(("Lambda", "P", "B", "dt"), got, want):
        assert x.dtype == inputs[["Lambda", "P", "B", "dt"].index(name)].dtype
        assert _rel(x, ref) < TOL, f"grad {name}: {_rel(x, ref):.3g}"


@pytest.mark.parametrize("only", ["dA", "dB"])
@pytest.mark.parametrize("r", [1, 2])
def test_gradients_with_one_output_unused(only, r):
    """A loss on one output only: the other's gradient reaches the backward as None (zeros)."""
    inputs = _system(2, 5, r, seed=3 + r)
    g = torch.Generator().manual_seed(8)
    gdA = torch.randn(2, 10, 10, generator=g) if only == "dA" else None
    gdB = torch.randn(2, 10, generator=g) if only == "dB" else None
    got = _grads(tdd.bilinear_dplr_triton, inputs, gdA, gdB)
    want = _grads(_reference, [_wide(t) for t in inputs], gdA, gdB)
    for x, ref in zip(got, want):
        if ref.abs().max() == 0:
            assert x.abs().max() == 0
        else:
            assert _rel(x, ref) < TOL


def test_gradient_only_for_some_inputs():
    """Inputs that do not require grad get None; the others are unchanged."""
    Lam, P, B, dt = _system(2, 4, 1, seed=5)
    P = P.clone().requires_grad_()
    dA, dB = tdd.bilinear_dplr_triton(Lam, P, B, dt)
    (gP,) = torch.autograd.grad(dA.sum() + dB.sum(), (P,))
    want = _grads(_reference, [_wide(t) for t in (Lam, P, B, dt)], torch.ones(2, 8, 8), torch.ones(2, 8))[1]
    assert _rel(gP, want) < TOL


def test_strided_and_conjugated_inputs():
    """Non-contiguous P and B and a conjugate view B are read correctly (copied once), gradients too."""
    Lam, P, B, dt = _system(3, 6, 2, seed=11)
    P_strided = P.transpose(0, 1).contiguous().transpose(0, 1)          # (r, H, M) with H outermost in memory
    B_strided = torch.stack([B, B], -1)[..., 0]                         # strided along M
    B_view = B.conj()                                                   # a conjugate view: is_conj() True
    assert not P_strided.is_contiguous() and not B_strided.is_contiguous() and B_view.is_conj()
    g = torch.Generator().manual_seed(9)
    gdA, gdB = torch.randn(3, 12, 12, generator=g), torch.randn(3, 12, generator=g)
    for Bx in (B_strided, B_view):
        inputs = (Lam, P_strided, Bx, dt)
        dA, dB = tdd.bilinear_dplr_triton(*inputs)
        rA, rB = _reference(*(_wide(t) for t in inputs))
        assert _rel(dA, rA) < TOL and _rel(dB, rB) < TOL
        got = _grads(tdd.bilinear_dplr_triton, inputs, gdA, gdB)
        want = _grads(_reference, [_wide(t) for t in inputs], gdA, gdB)
        for x, ref in zip(got, want):
            assert _rel(x, ref) < TOL


def _nan_tailed(t):
    """``t`` as the head of a NaN-filled buffer twice its size: contiguous, with NaN right after its last entry."""
    buf = torch.full((2 * t.shape[0], *t.shape[1:]), float("nan"), dtype=t.dtype)
    buf[: t.shape[0]] = t
    return buf[: t.shape[0]]


@pytest.mark.parametrize("r", [1, 2])
def test_reads_stay_in_bounds(r):
    """Every tensor the kernels read (inputs and upstream gradients) is followed by NaN in memory: a read past the
    last channel's modes (the padded rows and columns of the mode block) would turn the results into NaN."""
    Lam, P, B, dt = (_nan_tailed(t) for t in _system(3, 5, r, seed=21))
    g = torch.Generator().manual_seed(4)
    gdA, gdB = _nan_tailed(torch.randn(3, 10, 10, generator=g)), _nan_tailed(torch.randn(3, 10, generator=g))
    xs = [t.detach().requires_grad_() for t in (Lam, P, B, dt)]
    dA, dB = tdd.bilinear_dplr_triton(*xs)
    got = torch.autograd.grad((dA, dB), xs, (gdA, gdB))
    rA, rB = _reference(*(_wide(t) for t in (Lam, P, B, dt)))
    assert _rel(dA, rA) < TOL and _rel(dB, rB) < TOL
    want = _grads(_reference, [_wide(t) for t in (Lam, P, B, dt)], gdA, gdB)
    for x, ref in zip(got, want):
        assert torch.isfinite(x).all() and _rel(x, ref) < TOL


@pytest.mark.parametrize("init", ["legs", "legt"])
def test_s4_layer_system(init):
    """The layer's own parameters (HiPPO-LegS rank 1; LegT rank 2 with Re Lambda = 0, M = 32): the kernel equals
    the float64 reference (values and gradients), and the float32 PyTorch path it replaces to that path's accuracy
    (measured: 2e-7 on dA, 4e-6 on dB)."""
    torch.manual_seed(0)
    layer = S4(4, d_state=64, init=init)
    with torch.no_grad():
        Lam, P, B, _ = layer._raw_system()
        dt = layer._dt(1.0)
        dA, dB = tdd.bilinear_dplr_triton(Lam, P, B, dt)
        rA, rB = _reference(*(_wide(t) for t in (Lam, P, B, dt)))
        assert _rel(dA, rA) < TOL and _rel(dB, rB) < TOL
        tA, tB = layer._real_discrete(1.0, Lam, P, B)
        assert _rel(dA, tA) < 1e-4 and _rel(dB, tB) < 1e-4
    g = torch.Generator().manual_seed(1)
    gdA, gdB = torch.randn(dA.shape, generator=g), torch.randn(dB.shape, generator=g)
    got = _grads(tdd.bilinear_dplr_triton, (Lam, P, B, dt), gdA, gdB)
    want = _grads(_reference, [_wide(t) for t in (Lam, P, B, dt)], gdA, gdB)
    for x, ref in zip(got, want):
        assert _rel(x, ref) < TOL


@pytest.mark.parametrize("case, match", [
    ("rank3", "rank"), ("modes33", "modes"), ("real_lambda", "Lambda must be complex64"),
    ("double_dt", "dt must be float32"), ("cdouble_P", "P must be complex64"), ("shape", "disagree"),
    ("dims", "expected"),
])
def test_bad_input_raises(case, match):
    Lam, P, B, dt = _system(2, 4, 1, seed=0)
    if case == "rank3":
        P = torch.cat([P, P, P])
    elif case == "modes33":
        Lam, P, B, dt = _system(2, 33, 1, seed=0)
    elif case == "real_lambda":
        Lam = Lam.real
    elif case == "double_dt":
        dt = dt.double()
    elif case == "cdouble_P":
        P = P.to(torch.complex128)
    elif case == "shape":
        B = B[:, :3]
    elif case == "dims":
        P = P[0]
    with pytest.raises(ValueError, match=match):
        tdd.bilinear_dplr_triton(Lam, P, B, dt)


def test_configs_cover_the_launch_domain():
    """Every (rank, M) the wrapper accepts launches a listed config (the interpreter checks it per launch too)."""
    cfgs = tdd.configs()
    for r in range(1, tdd.MAX_RANK + 1):
        for M in range(1, tdd.MAX_MODES + 1):
            assert tdd._fwd_config(M, r) in cfgs and tdd._bwd_config(M, r) in cfgs
    for c in cfgs:
        c.check()


def test_the_ops_dispatch_bounds_are_the_kernels():
    """``kernels.dplr`` repeats the kernel's limits (so that its CPU path never imports triton): they must agree."""
    from statespaces.kernels import dplr

    assert (dplr.TRITON_MAX_RANK, dplr.TRITON_MAX_MODES) == (tdd.MAX_RANK, tdd.MAX_MODES)


# ---- the op's dispatch (statespaces.kernels.dplr.bilinear_dplr_system) -----------------------------------------
def test_dispatch_cpu_keeps_pytorch_and_forced_triton_matches_it(monkeypatch):
    """On CPU the op runs its PyTorch twin (no kernel launched); under force_triton the kernel, same values."""
    from statespaces import backend
    from statespaces.kernels import dplr as kdplr

    Lam, P, B, dt = _system(3, 6, 1, seed=3)
    launched = []
    monkeypatch.setattr(kdplr, "_bilinear_dplr_triton", lambda *a: launched.append(1) or tdd.bilinear_dplr_triton(*a))
    ref = kdplr.bilinear_dplr_system(Lam, P, B, dt)
    assert not launched
    assert all(torch.equal(a, b) for a, b in zip(ref, kdplr.bilinear_dplr_system_ref(Lam, P, B, dt)))
    with backend.force_triton():
        out = kdplr.bilinear_dplr_system(Lam, P, B, dt)
        assert launched
        launched.clear()
        kdplr.bilinear_dplr_system(Lam.cdouble(), P.cdouble(), B.cdouble(), dt.double())   # float64: PyTorch
        kdplr.bilinear_dplr_system(Lam, P.repeat(3, 1, 1), B, dt)                           # rank 3: PyTorch
        assert not launched
    for a, b in zip(out, ref):
        assert float((a - b).abs().max() / b.abs().max()) < 1e-5


def test_op_rejects_mismatched_shapes_on_every_path():
    """The op checks shapes before it picks a path: a clear ValueError on CPU too (not an einsum error)."""
    from statespaces.kernels import dplr as kdplr

    Lam, P, B, dt = _system(3, 4, 1, seed=5)
    for args in ((Lam, P, B[:2], dt), (Lam, P, B, dt[:2]), (Lam, P[0], B, dt)):
        with pytest.raises(ValueError, match=r"bilinear_dplr_system: expected Lambda \(H, M\)"):
            kdplr.bilinear_dplr_system(*args)


def test_dispatch_failing_kernel_warns_once_and_falls_back(monkeypatch):
    from statespaces import backend
    from statespaces.kernels import dplr as kdplr

    def broken(*a):
        raise RuntimeError("simulated compile failure")

    Lam, P, B, dt = _system(2, 4, 1, seed=4)
    monkeypatch.setattr(kdplr, "_bilinear_dplr_triton", broken)
    monkeypatch.setattr(backend, "_FAILED", {})
    monkeypatch.setattr(backend, "_WARNED", set())
    monkeypatch.setattr(backend, "choose", lambda op, *t, **k: "triton" if op == "dplr_discrete" else "torch")
    with pytest.warns(backend.TritonFallbackWarning, match="dplr_discrete.*simulated"):
        out = kdplr.bilinear_dplr_system(Lam, P, B, dt)
    ref = kdplr.bilinear_dplr_system_ref(Lam, P, B, dt)
    assert all(torch.equal(a, b) for a, b in zip(out, ref))
    assert "dplr_discrete" in backend.failed_ops()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kdplr.bilinear_dplr_system(Lam, P, B, dt)
