"""Shared SSMs across channels (thesis §7.2.2, ``n_ssm``) for S4D and S4.

Independent route: an explicit dense recurrence built directly from the *stored* (untied) parameters,
with the tying written out by index (channel h uses SSM ``h // (H / n_ssm)``), in float64.
"""
import math

import pytest
import torch

from statespaces import S4, S4D

H, N, L = 4, 6, 40


def _ssm_of(h: int, layer) -> int:
    return h // (layer.d_model // layer.n_ssm)


def _s4d_recurrence(layer, u):
    """y (B, L, H) of an S4D layer (ZOH) by the explicit recurrence over the full conjugate state."""
    Bsz, Lx, Hx = u.shape
    y = torch.empty_like(u)
    for h in range(Hx):
        g = _ssm_of(h, layer)
        A = torch.complex(-torch.exp(layer.A_real[g]), layer.A_imag[g]).detach()
        Bc = torch.view_as_complex(layer.B[g].detach().contiguous())
        C = torch.view_as_complex(layer.C[0, h].detach().contiguous())
        dt = torch.exp(layer.log_dt[h].detach())
        A, Bc, C = (torch.cat([v, v.conj()]) for v in (A, Bc, C))       # full conjugate-symmetric set
        dA = torch.exp(dt * A)
        dB = (dA - 1) / A * Bc
        x = torch.zeros(Bsz, A.shape[0], dtype=torch.complex128)
        for k in range(Lx):
            x = dA * x + dB * u[:, k, h, None]
            y[:, k, h] = (x @ C).real + layer.D[h].detach() * u[:, k, h]
    return y


def _s4_recurrence(layer, u):
    """y (B, L, H) of an S4 layer by the bilinear recurrence on the dense complex N x N
    ``A = diag(Lambda) - P P^*`` over the full conjugate-symmetric set (built here, not by the layer)."""
    Bsz, Lx, Hx = u.shape
    y = torch.empty_like(u)
    for h in range(Hx):
        g = _ssm_of(h, layer)
        lam = torch.complex(-torch.exp(layer.Lambda_real[g]), layer.Lambda_imag[g]).detach()
        P = torch.view_as_complex(layer.P[:, g].detach().contiguous())               # (r, M)
        Bc = torch.view_as_complex(layer.B[g].detach().contiguous())
        C = torch.view_as_complex(layer.C[0, h].detach().contiguous())
        lam, Bc, C = (torch.cat([v, v.conj()]) for v in (lam, Bc, C))
        P = torch.cat([P, P.conj()], -1)
        A = torch.diag(lam) - P.T @ P.conj()
        dt = torch.exp(layer.log_dt[h].detach())
        eye = torch.eye(A.shape[0], dtype=A.dtype)
        inv = torch.linalg.inv(eye - dt / 2 * A)
        dA, dB = inv @ (eye + dt / 2 * A), inv @ (dt * Bc)
        x = torch.zeros(Bsz, A.shape[0], dtype=torch.complex128)
        for k in range(Lx):
            x = x @ dA.T + dB * u[:, k, h, None]
            y[:, k, h] = (x @ C).real + layer.D[h].detach() * u[:, k, h]
    return y


LAYERS = {
    "s4d": (lambda **kw: S4D(H, N, init="rand", dt_max=0.5, **kw), _s4d_recurrence),
    "s4": (lambda **kw: S4(H, N, init="rand", dt_max=0.5, **kw), _s4_recurrence),
}


@pytest.mark.parametrize("name", LAYERS)
def test_n_ssm_equal_H_is_bit_identical_to_default(name):
    make, _ = LAYERS[name]
    a, b = make(seed=3), make(seed=3, n_ssm=H)
    assert a.n_ssm == b.n_ssm == H
    for (ka, pa), (kb, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(pa, pb)
    x = torch.randn(2, 17, H)
    assert torch.equal(a(x), b(x))
    assert torch.equal(a.kernel(17), b.kernel(17))


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("n_ssm", [1, 2, H])
def test_forward_equals_explicit_recurrence_float64(name, n_ssm):
    make, recurrence = LAYERS[name]
    layer = make(seed=5, n_ssm=n_ssm).double()
    with torch.no_grad():   # give every channel a different C so a wrong tying cannot hide
        layer.C.add_(0.3 * torch.randn_like(layer.C))
    u = torch.randn(2, L, H, dtype=torch.float64)
    ref = recurrence(layer, u)
    torch.testing.assert_close(layer(u), ref, atol=1e-10, rtol=1e-10)
    stored = layer.A_real if name == "s4d" else layer.Lambda_real          # one row per shared SSM
    assert stored.shape[0] == n_ssm


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("n_ssm", [1, 2])
def test_step_equals_conv(name, n_ssm):
    make, _ = LAYERS[name]
    layer = make(seed=7, n_ssm=n_ssm).double()
    u = torch.randn(3, 25, H, dtype=torch.float64)
    y = layer(u)
    state = layer.initial_state(3)
    ys = []
    for k in range(u.shape[1]):
        yk, state = layer.step(u[:, k], state)
        ys.append(yk)
    torch.testing.assert_close(torch.stack(ys, 1), y, atol=1e-10, rtol=1e-10)
    # chunked forward carries the same state
    y1, s1 = layer(u[:, :11], return_state=True)
    y2 = layer(u[:, 11:], state=s1)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("name", LAYERS)
def test_gradients_reach_shared_parameters(name):
    make, _ = LAYERS[name]
    layer = make(seed=1, n_ssm=2)
    layer(torch.randn(2, 16, H)).square().sum().backward()
    shared = ("A_real", "A_imag", "B") if name == "s4d" else ("Lambda_real", "Lambda_imag", "P", "B")
    for pname in shared:
        p = getattr(layer, pname)
        assert p.shape[0 if pname != "P" else 1] == 2
        assert p.grad is not None and bool(torch.isfinite(p.grad).all())
        # every shared row receives gradient (from its two channels)
        rows = p.grad.transpose(0, 1) if pname == "P" else p.grad
        assert bool((rows.flatten(1).abs().sum(-1) > 0).all()), pname
    for pname in ("log_dt", "C", "D"):
        assert getattr(layer, pname).shape[1 if pname == "C" else 0] == H


@pytest.mark.parametrize("n_ssm", [1, 2, H])
def test_parameter_counts(n_ssm):
    M = N // 2
    s4d = S4D(H, N, n_ssm=n_ssm)
    # A (re, im), B complex: 4M = 2N reals per SSM; C complex (N reals), log_dt, D per channel
    assert sum(p.numel() for p in s4d.parameters()) == n_ssm * 2 * N + H * (N + 2)
    s4 = S4(H, N, n_ssm=n_ssm, rank=2, init="rand")
    # Lambda (2M), P (2 r M), B (2M) per SSM; C (2M), log_dt, D per channel
    assert sum(p.numel() for p in s4.parameters()) == n_ssm * (2 + 2) * 2 * M + H * (2 * M + 2)
    assert ("n_ssm" in repr(s4d)) == (n_ssm != H)


@pytest.mark.parametrize("cls", [S4D, S4])
@pytest.mark.parametrize("bad,err,match", [(3, ValueError, "n_ssm=3 does not divide d_model=4"),
                                           (0, ValueError, "n_ssm"), (2.0, TypeError, "n_ssm"),
                                           (True, TypeError, "n_ssm")])
def test_bad_n_ssm_raises(cls, bad, err, match):
    with pytest.raises(err, match=match):
        cls(H, N, n_ssm=bad)


def test_tied_channels_share_one_convolution_basis():
    """§7.2.2's reading: with one shared (A, B, dt) the H kernels are combinations of one basis, so the
    (H, L) kernel matrix of n_ssm=1 with equal dt has rank <= N (it is generically H otherwise)."""
    layer = S4D(8, 4, init="rand", n_ssm=1, seed=0).double()
    with torch.no_grad():
        layer.log_dt.fill_(math.log(0.1))
    assert int(torch.linalg.matrix_rank(layer.kernel(64), rtol=1e-9)) <= 4
    untied = S4D(8, 4, init="rand", seed=0).double()
    assert int(torch.linalg.matrix_rank(untied.kernel(64), rtol=1e-9)) > 4


@pytest.mark.parametrize("cls", [S4D, S4])
def test_n_ssm_survives_save_and_load(cls, tmp_path):
    layer = cls(H, N, n_ssm=2, seed=0)
    path = layer.save_pretrained(tmp_path / "m")
    back = cls.from_pretrained(path)
    assert back.n_ssm == 2
    x = torch.randn(1, 9, H)
    torch.testing.assert_close(back(x), layer(x), atol=0, rtol=0)
