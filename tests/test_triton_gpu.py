"""The Triton kernels compiled for a real GPU (skipped without CUDA + triton).

Runs in a subprocess so that a TRITON_INTERPRET=1 set by tests/test_triton.py in this pytest
process cannot turn these kernels into interpreted ones. Realistic shapes, fp32 vs fp64 references.
"""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

SCRIPT = textwrap.dedent(
    """
    import torch
    from statespaces.kernels import dispatch, vandermonde_naive
    from statespaces.ops.scan import scan_diagonal
    from statespaces.ops.triton.vandermonde import vandermonde_triton
    from statespaces.ops.triton.scan import scan_diagonal_triton
    assert dispatch.use_triton(torch.zeros(1, device="cuda"))
    torch.manual_seed(0)
    dev = "cuda"

    def close(x, ref, tol, what):
        scale = ref.abs().max().clamp_min(1.0)
        err = float((x.to(ref.dtype) - ref).abs().max() / scale)
        assert err <= tol, f"{what}: relative error {err:.3g} > {tol}"

    H, N, L = 64, 32, 4096
    log_a = torch.complex(-torch.rand(H, N, device=dev) * 0.05, torch.randn(H, N, device=dev))
    coef = torch.randn(2, H, N, dtype=torch.complex64, device=dev)
    c, w = coef.clone().requires_grad_(), log_a.clone().requires_grad_()
    out = vandermonde_triton(c, w, L)
    c64, w64 = coef.cdouble().requires_grad_(), log_a.cdouble().requires_grad_()
    ref = vandermonde_naive(c64, w64, L)
    close(out, ref, 1e-4, "vandermonde fwd")
    g = torch.randn(2, H, L, device=dev)
    gc, gw = torch.autograd.grad(out, (c, w), g)
    rc, rw = torch.autograd.grad(ref, (c64, w64), g.double())
    close(gc, rc, 1e-4, "vandermonde grad c")
    close(gw, rw, 1e-4, "vandermonde grad w")

    for cplx in (True, False):
        dt = torch.complex64 if cplx else torch.float32
        a = (0.999 * torch.rand(4, 1, 64, device=dev)).to(dt)
        a = (a * torch.exp(1j * torch.rand(4, 1, 64, device=dev))) if cplx else a
        b = torch.randn(2, 4, 3000, 64, dtype=dt, device=dev)
        x0 = torch.randn(2, 4, 64, dtype=dt, device=dev)
        leaves = [t.clone().requires_grad_() for t in (a, b, x0)]
        out = scan_diagonal_triton(*leaves)
        rin = [t.to(torch.complex128 if cplx else torch.float64).requires_grad_() for t in (a, b, x0)]
        ref = scan_diagonal(*rin)
        close(out, ref, 1e-4, f"scan fwd complex={cplx}")
        G = torch.randn_like(out)
        for x, r, name in zip(torch.autograd.grad(out, leaves, G), torch.autograd.grad(ref, rin, G.to(ref.dtype)), "abx"):
            close(x, r, 1e-3, f"scan grad {name} complex={cplx}")
    print("ok")
    """
)


def test_triton_kernels_on_gpu():
    pytest.importorskip("triton", reason="triton is not installed")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr
