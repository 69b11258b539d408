"""The explicit-operator view of every layer: modes(rate) and from_modes (issue #19 item 1d).

Float64 throughout. For each layer the kernel is checked three ways: the layer's own ``kernel(L)``
(Vandermonde / Algorithm 1 / closed-form Green's functions), the sum ``Re sum_m C_m r_m B_m lambda_m^l``
assembled here by repeated multiplication from ``modes()``, and the forward pass on an impulse.
"""
import pytest
import torch

from statespaces.layers import S4, S4D, S5, DLinOSS, LinOSS
from statespaces.layers.modes import Modes

f64 = torch.float64
L = 64
H = 3


def _layers():
    yield "s4d-zoh", S4D(H, 8, seed=0, dt_min=1e-2, dt_max=0.5)
    yield "s4d-bilinear-inv", S4D(H, 8, init="inv", discretization="bilinear", seed=1)
    yield "s4d-gbt", S4D(H, 6, init="lin", discretization="gbt", alpha=0.7, seed=2)
    yield "s4d-real", S4D(H, 4, init="real", seed=3)
    yield "s4d-bi", S4D(H, 8, bidirectional=True, seed=4)
    yield "s4-legs", S4(H, 8, seed=5)
    yield "s4-rand-r2", S4(H, 8, init="rand", rank=2, seed=6)
    yield "s4-bi", S4(H, 6, init="fout", bidirectional=True, seed=7)
    yield "s4-lmax", S4(H, 8, init="rand", l_max=32, seed=13)                    # modes use the recovered C
    yield "linoss-im", LinOSS(H, 4, discretization="IM", seed=8)
    yield "linoss-imex", LinOSS(H, 4, discretization="IMEX", seed=9)
    yield "linoss-sum", LinOSS(H, 4, bidirectional=True, seed=10)
    yield "dlinoss-imex", DLinOSS(H, 4, seed=11)
    yield "dlinoss-im", DLinOSS(H, 4, discretization="IM", init="uniform", seed=12)
    yield "s5-zoh", S5(H, 8, seed=14, dt_min=1e-2, dt_max=0.5)
    yield "s5-bilinear-full", S5(H, 6, discretization="bilinear", conj_sym=False, blocks=2, seed=15)
    yield "s5-bi", S5(H, 8, bidirectional=True, seed=16, dt_min=1e-2, dt_max=0.5)   # lag 0 in both scans


LAYERS = list(_layers())


def _assembled(m: Modes, L: int) -> torch.Tensor:
    """``Re sum_m C r B lambda^l (+ ramp (l+1) lambda^l)`` by repeated multiplication (no exp/log of l)."""
    lam = m.eig
    rB = m.input_weights()
    ramp_B = None if m.ramp is None else m.B * (m.ramp.unsqueeze(-1) if m.mimo else m.ramp)
    power = torch.ones_like(lam)
    out = []
    for l in range(L):
        if m.mimo:
            term = torch.einsum("khm,mj,m->khj", m.C, rB, power)
            if ramp_B is not None:
                term = term + (l + 1) * torch.einsum("khm,mj,m->khj", m.C, ramp_B, power)
        else:
            term = torch.einsum("khm,hm,hm->kh", m.C, rB, power)
        term = term.real.clone()
        if l == 0 and m.feedthrough is not None:                     # bidirectional S5: the backward scan's lag 0
            term[0] += m.feedthrough
        out.append(term)
        power = power * lam
    K = torch.stack(out, -1)
    return K if m.bidirectional == "sum" else K[0]


def _impulse_kernel(layer, L):
    """Causal impulse response of the forward pass minus the skip: (H, L) SISO, (H_out, H_in, L) MIMO."""
    x = torch.zeros(H, L, H, dtype=f64)
    x[torch.arange(H), 0, torch.arange(H)] = 1.0
    r = layer(x).permute(2, 0, 1).clone()                            # (h_out, j_in, l)
    r[torch.arange(H), torch.arange(H), 0] -= layer.D.detach()
    return r


@pytest.mark.parametrize("name,layer", LAYERS, ids=[n for n, _ in LAYERS])
def test_modes_reproduce_kernel_and_forward(name, layer):
    layer = layer.double()
    with torch.no_grad():
        m = layer.modes()
        assert m.log_eig.dtype == torch.complex128 and m.D.dtype == f64
        K = layer.kernel(L)
        scale = float(K.abs().max())
        torch.testing.assert_close(_assembled(m, L), K, atol=1e-10 * max(scale, 1.0), rtol=0)
        torch.testing.assert_close(m.kernel(L), K, atol=1e-10 * max(scale, 1.0), rtol=0)
        if not layer.bidirectional:
            imp = _impulse_kernel(layer, L)
            if not m.mimo:                                           # SISO: the diagonal, nothing off it
                off = ~torch.eye(H, dtype=torch.bool)
                assert float(imp[off].abs().max()) < 1e-12
                imp = torch.diagonal(imp, dim1=0, dim2=1).T
            torch.testing.assert_close(imp, K, atol=1e-10 * max(scale, 1.0), rtol=0)


@pytest.mark.parametrize("name,layer", LAYERS, ids=[n for n, _ in LAYERS])
def test_from_modes_round_trip(name, layer):
    layer = layer.double()
    u = torch.randn(2, 50, H, dtype=f64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        rebuilt = type(layer).from_modes(layer.modes(), dtype=f64)
        assert type(rebuilt) is type(layer) and rebuilt.bidirectional == layer.bidirectional
        torch.testing.assert_close(rebuilt(u), layer(u), atol=1e-10, rtol=0)


def test_modes_at_a_rate_are_the_layer_at_that_rate():
    """modes(rate) folds rate into dt: the layer rebuilt from them runs at rate 1 as the original at that rate."""
    u = torch.randn(1, 40, H, dtype=f64, generator=torch.Generator().manual_seed(1))
    for layer in (S4D(H, 8, seed=0).double(), S4(H, 8, seed=1).double(), LinOSS(H, 4, seed=2).double(),
                  S5(H, 8, seed=3).double()):
        with torch.no_grad():
            m = layer.modes(rate=0.5)
            torch.testing.assert_close(m.kernel(L), layer.kernel(L, rate=0.5), atol=1e-10, rtol=0)
            torch.testing.assert_close(type(layer).from_modes(m, dtype=f64)(u), layer(u, rate=0.5), atol=1e-10, rtol=0)


def test_cross_family_construction():
    """S4 -> S4D through its diagonalised form; LinOSS-IM -> D-LinOSS-IM (G = 0)."""
    u = torch.randn(2, 50, H, dtype=f64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        s4 = S4(H, 8, init="rand", seed=0).double()
        torch.testing.assert_close(S4D.from_modes(s4.modes(), dtype=f64)(u), s4(u), atol=1e-10, rtol=0)
        s4d = S4D(H, 8, discretization="bilinear", seed=1).double()
        torch.testing.assert_close(S4.from_modes(s4d.modes(), dtype=f64)(u), s4d(u), atol=1e-10, rtol=0)
        lin = LinOSS(H, 4, discretization="IM", seed=3).double()
        dl = DLinOSS.from_modes(lin.modes(), dtype=f64)
        torch.testing.assert_close(dl(u), lin(u), atol=1e-10, rtol=0)
        assert float(dl.damping().abs().max()) < 1e-10


def test_linoss_degenerate_oscillator_is_a_jordan_mode():
    layer = LinOSS(H, 5, seed=2).double()
    with torch.no_grad():
        layer.A_hat[2] = -1.0                      # relu -> A = 0: a double eigenvalue 1
        m = layer.modes()
        assert m.ramp is not None and float(m.ramp[2].abs()) > 0 and float(m.ramp[3].abs()) == 0
        torch.testing.assert_close(_assembled(m, L), layer.kernel(L), atol=1e-10, rtol=0)
        torch.testing.assert_close(m.kernel(L), _assembled(m, L), atol=1e-10, rtol=0)   # the documented route
        u = torch.randn(1, 30, H, dtype=f64)
        torch.testing.assert_close(LinOSS.from_modes(m, dtype=f64)(u), layer(u), atol=1e-10, rtol=0)


def test_from_modes_refuses_what_it_cannot_build():
    lin = LinOSS(H, 4, discretization="IMEX", seed=0).double()
    with pytest.raises(TypeError, match="SISO"):
        S4D.from_modes(lin.modes())
    with pytest.raises(TypeError, match="oscillator modes"):
        LinOSS.from_modes(S4D(H, 4).modes())
    with pytest.raises(ValueError, match="cannot reproduce"):      # |lambda| = 1 is no IM oscillator
        LinOSS.from_modes(lin.modes(), discretization="IM")
    with pytest.raises(ValueError, match="concat"):
        LinOSS.from_modes(LinOSS(H, 3, bidirectional="concat", seed=1).modes())
    m = S4D(H, 4, seed=2).double().modes()
    grow = Modes(**{**m.__dict__, "log_eig": m.log_eig.real.abs() + 1j * m.log_eig.imag})    # |lambda| > 1
    with pytest.raises(ValueError, match="Re\\(A\\) < 0"):
        S4D.from_modes(grow)
    with pytest.raises(ValueError, match="lambda"):
        S4.from_modes(grow)
    mixed = Modes(**{**m.__dict__, "dt": m.dt * torch.linspace(1, 2, m.n_modes, dtype=f64)})
    with pytest.raises(ValueError, match="share one dt"):
        S4D.from_modes(mixed)


def test_s5_modes_are_only_built_by_s5():
    """S5's modes are MIMO first-order modes: S4D (per channel) and LinOSS (oscillator pairs) refuse them and
    name S5.from_modes; S5 refuses SISO and oscillator modes, growing modes, and a bidirectional lag 0 that an
    S5 cannot have."""
    s5 = S5(H, 8, seed=0).double()
    with torch.no_grad():
        m = s5.modes()
        assert m.mimo and m.structure == "diagonal" and m.feedthrough is None
        with pytest.raises(TypeError, match="S5.from_modes"):
            S4D.from_modes(m)
        with pytest.raises(TypeError, match="oscillator modes"):
            LinOSS.from_modes(m)
        with pytest.raises(TypeError, match="MIMO diagonal"):
            S5.from_modes(S4D(H, 4).modes())
        with pytest.raises(TypeError, match="MIMO diagonal"):
            S5.from_modes(LinOSS(H, 4).modes())
        grow = Modes(**{**m.__dict__, "log_eig": m.log_eig.real.abs() + 1j * m.log_eig.imag})
        with pytest.raises(ValueError, match="Re\\(Lambda\\) < 0"):
            S5.from_modes(grow)
        bi = S5(H, 8, bidirectional=True, seed=1).double().modes()
        assert bi.feedthrough is not None and float(bi.feedthrough.abs().max()) > 0
        with pytest.raises(ValueError, match="feedthrough"):
            S5.from_modes(Modes(**{**bi.__dict__, "feedthrough": None}))
        with pytest.raises(ValueError, match="feedthrough"):
            S5.from_modes(Modes(**{**bi.__dict__, "feedthrough": 1.5 * bi.feedthrough}))


def test_concat_layer_modes_are_its_causal_half():
    layer = LinOSS(H, 3, bidirectional="concat", seed=4).double()
    with torch.no_grad():
        m = layer.modes()
        assert m.bidirectional == "concat" and m.C.shape[0] == 1
        x = torch.zeros(H, L, H, dtype=f64)
        x[torch.arange(H), 0, torch.arange(H)] = 1.0
        y = layer.reverse.modes().kernel(L)                              # the reverse half is a layer of its own
        torch.testing.assert_close(y, layer.reverse.kernel(L), atol=1e-10, rtol=0)
        torch.testing.assert_close(m.kernel(L), LinOSS.from_modes(
            Modes(**{**m.__dict__, "bidirectional": None}), dtype=f64).kernel(L), atol=1e-10, rtol=0)


@pytest.mark.parametrize("cls", [S4D, S4, LinOSS, DLinOSS, S5])
def test_from_modes_of_a_float32_layer_is_a_float32_layer(cls):
    """modes() is float64 whatever the layer's dtype; from_modes builds (and, for LinOSS, checks) in
    float64 and casts to the requested dtype (default: torch's default dtype)."""
    layer = cls(H, 4, seed=5)
    u = torch.randn(2, 30, H, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        m = layer.modes()
        assert m.log_eig.dtype == torch.complex128
        rebuilt = cls.from_modes(m)
        assert rebuilt.D.dtype == torch.float32
        torch.testing.assert_close(rebuilt(u), layer(u), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("disc", ["IM", "IMEX"])
def test_linoss_modes_near_a_double_eigenvalue_stay_accurate_at_long_lengths(disc):
    """|sin theta| just under the old threshold 1e-6 took the Jordan form, off by (l theta)^2 / 6: modes().kernel
    was 5.5e-6 off the layer's kernel at L = 4096 (the two-residue form is good to ~eps / theta there)."""
    import math

    from statespaces.layers.linoss import LinOSS

    for theta in (0.99e-6, 1e-7, 0.99e-9):
        layer = LinOSS(1, 1, discretization=disc, seed=0).double()
        dt = float(torch.sigmoid(layer.dt_raw.detach())[0])
        A = (math.tan(theta) / dt) ** 2 if disc == "IM" else (2 * math.sin(theta / 2) / dt) ** 2
        with torch.no_grad():
            layer.A_hat.fill_(A)
            K = layer.kernel(4096)
            err = float((layer.modes().kernel(4096) - K).abs().max() / K.abs().max())
        assert err < 1e-8, (theta, err)
