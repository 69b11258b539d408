"""Defects a new-user campaign found in the layer API (2026-12-07), each pinned by a test that fails without its fix."""
from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

from statespaces.blocks import ResidualBlock, length_mask
from statespaces.layers import S4D, S4ND, S5, DLinOSS, LinOSS


@pytest.mark.parametrize("cls", [LinOSS, DLinOSS])
def test_from_modes_names_a_step_the_layer_cannot_hold(cls):
    """modes(rate) folds the rate into dt; these layers' dt = sigmoid(.) < 1, so rate x dt >= 1 cannot be rebuilt:
    the error said 'relative mismatch nan' and blamed the eigenvalues."""
    layer = cls(3, 4, seed=0).double()
    with pytest.raises(ValueError, match=r"dt = sigmoid\(dt_raw\) lies in \(0, 1\).*forward\(x, rate=R\)"):
        cls.from_modes(layer.modes(rate=2.0), dtype=torch.float64)
    # below 1 it still works, and equals the original at that rate
    rebuilt = cls.from_modes(layer.modes(rate=1.2), dtype=torch.float64)
    x = torch.randn(1, 20, 3, dtype=torch.float64)
    torch.testing.assert_close(rebuilt(x), layer(x, rate=1.2), rtol=1e-10, atol=1e-10)


def test_dlinoss_from_modes_error_describes_its_own_scheme():
    modes = DLinOSS(2, 2, seed=0).double().modes()
    bad = dataclasses.replace(modes, log_eig=modes.log_eig + 0.5)      # |lambda| > 1: no D-LinOSS has these
    with pytest.raises(ValueError) as err:
        DLinOSS.from_modes(bad, dtype=torch.float64)
    assert "IMEX: |lambda| = 1" not in str(err.value) and "DLinOSS.modes" in str(err.value)


def test_s4d_scales_must_be_positive_and_real_init_is_case_blind():
    for kw in ({"c_scale": 0.0}, {"c_scale": -1.0}, {"imag_scale": -1.0}, {"imag_scale": 0.0}):
        with pytest.raises(ValueError, match="> 0"):
            S4D(4, 4, **kw)
    with pytest.raises(ValueError, match="imag_scale scales Im A"):
        S4D(2, 4, init="REAL", imag_scale=2.0)


def test_dlinoss_refuses_the_other_inits_ranges():
    with pytest.raises(ValueError, match=r"A_min=5.0, A_max=6.0: these ranges are read by init='uniform' only"):
        DLinOSS(2, 2, A_min=5.0, A_max=6.0)
    with pytest.raises(ValueError, match=r"r_min=0.5: this range is read by init='ring' only"):
        DLinOSS(2, 2, init="uniform", r_min=0.5)
    DLinOSS(2, 2, init="uniform", A_max=2.0)
    DLinOSS(2, 2, r_min=0.5)


def test_s5_from_bidirectional_modes_warns_nothing():
    modes = S5(3, 8, seed=0, bidirectional=True).double().modes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        S5.from_modes(modes, dtype=torch.float64)


@pytest.mark.parametrize("use_timestamps", [False, True])
def test_block_takes_padded_intervals_with_its_mask(use_timestamps):
    """SequenceClassifier accepted zero intervals on padding; the block alone refused them."""
    torch.manual_seed(0)
    block = ResidualBlock(S4D(4, 8)).double().eval()
    x = torch.randn(2, 10, 4, dtype=torch.float64)
    mask = length_mask(torch.tensor([10, 6]), 2, 10, x.device)
    dt = torch.rand(2, 10, dtype=torch.float64) + 0.5
    dt[1, 6:] = 0
    if use_timestamps:
        t = torch.cumsum(dt, 1)
        t[1, 6:] = 0
        got, alone = block(x, mask=mask, timestamps=t)[1, :6], block(x[1:, :6], timestamps=t[1:, :6])[0]
    else:
        got, alone = block(x, mask=mask, dt=dt)[1, :6], block(x[1:, :6], dt=dt[1:, :6])[0]
    torch.testing.assert_close(got, alone, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="non-positive"):
        block(x, dt=dt)                                    # without the mask the zeros are still refused


def test_s4nd_step_names_a_frame_that_does_not_fit_its_state():
    layer = S4ND(2, dims=2, d_state=4, bidirectional=[False, True])
    state = layer.initial_state(1, (6,))
    with pytest.raises(ValueError, match=r"frame's spatial shape \(7,\) and the state's \(6,\) differ.*spatial_shape"):
        layer.step(torch.randn(1, 7, 2), state)
    y, _ = layer.step(torch.randn(1, 6, 2), state)
    assert y.shape == (1, 6, 2)


def test_s4_modes_warns_only_its_own_warning():
    """An ill-conditioned S4 warned ModesAccuracyWarning and also torch's 'requires_grad=True to a scalar'."""
    from statespaces.layers import S4
    from statespaces.layers.modes import ModesAccuracyWarning

    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            S4(d_model=4, d_state=32, init="legs", seed=0).modes()
    finally:
        torch.set_default_dtype(default)
    kinds = {type(w.message) for w in caught if issubclass(w.category, UserWarning)}
    assert kinds == {ModesAccuracyWarning}, [str(w.message)[:80] for w in caught]


def test_s4d_from_modes_does_not_suggest_the_rule_in_use():
    modes = S4D(2, 4).double().modes()
    growing = dataclasses.replace(modes, log_eig=modes.log_eig + 3.0)         # |lambda| > 1
    with pytest.raises(ValueError, match="only decaying modes") as err:
        S4D.from_modes(growing)
    assert "use 'zoh'" not in str(err.value)


def test_s5_from_bidirectional_modes_of_a_float32_layer():
    """The feedthrough came from complex64 products, 7e-8 off the lag 0 from_modes recomputes: refused at tol 1e-8."""
    for seed in range(3):
        layer = S5(4, 8, seed=seed, bidirectional=True)
        x = torch.randn(2, 16, 4)
        torch.testing.assert_close(S5.from_modes(layer.modes())(x), layer(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("disc", ["bilinear", "backward_euler"])
def test_s4d_non_zoh_kernel_does_not_drift_in_float32(disc):
    """A float32 log of a mode near -1 (bilinear: the fast LegS modes at |lambda| ~ 1 - 1e-5) carried a phase error
    that the powers multiplied by l: 2e-4 relative at L = 16384 (ZOH, whose log is float64, 1e-6)."""
    import math

    layer = S4D(1, 64, seed=1, discretization=disc)
    with torch.no_grad():
        layer.log_dt.fill_(math.log(0.1))
    wide = S4D(1, 64, seed=1, discretization=disc).double()
    wide.load_state_dict(layer.state_dict())
    x = torch.randn(1, 16384, 1, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = wide(x.double())
        err = float((layer(x).double() - ref).abs().max() / ref.abs().max())
    assert err < 1e-5, err


def _bilinear_pair(H: int = 2):
    """A float32 bilinear S4D with modes near -1 (dt = 0.1 sends the fast LegS modes to |lambda| ~ 1 - 1e-5) and
    its float64 twin."""
    import math

    layer = S4D(H, 64, seed=1, discretization="bilinear")
    with torch.no_grad():
        layer.log_dt.fill_(math.log(0.1))
    wide = S4D(H, 64, seed=1, discretization="bilinear").double()
    wide.load_state_dict(layer.state_dict())
    return layer, wide


def _rel(a, b) -> float:
    return float((a.to(b.dtype) - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("route", ["chunked", "ref"])
def test_s4d_bilinear_stateful_call_does_not_drift_in_float32(route):
    """The stateful views (the chunked convolution on CPU; the FFT route's zero-input response and state advance
    under backend "ref") took the float32 log dA: 7.9e-4 (chunked) and 1.9e-4 (ref) off the float64 output at
    L = 16384, 1.5e-3 off its state, where the stateless kernel was 3e-7. They now read the float64 exponent
    (DiagonalSystem.exponent), and the output and state keep the layer's dtypes."""
    from statespaces.backend import use_backend

    layer, wide = _bilinear_pair()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16384, 2, generator=g)
    s0 = torch.randn(2, 2, layer.n_modes, dtype=torch.complex64, generator=g)
    with torch.no_grad():
        ref, ref_state = wide(x.double(), state=s0.to(torch.complex128), return_state=True)
        with use_backend("ref" if route == "ref" else "auto"):
            y, state = layer(x, state=s0, return_state=True)
    assert y.dtype == torch.float32 and state.dtype == torch.complex64
    assert _rel(y, ref) < 1e-5 and _rel(state, ref_state) < 1e-5, (_rel(y, ref), _rel(state, ref_state))


def test_s4d_bilinear_modes_and_stepper_take_the_float64_exponent():
    """modes() and the stepper formed dA from the float32 log (relative error 7e-8 in log_eig, which the
    explicit-operator view then raised to high powers)."""
    layer, wide = _bilinear_pair()
    with torch.no_grad():
        assert _rel(layer.modes().log_eig, wide.modes().log_eig) < 1e-9
        dA = layer.stepper(1, dtype=torch.float64).dA
        assert _rel(dA, torch.exp(wide.diagonal_system().log_dA)) < 1e-9


def test_s4nd_bilinear_one_axis_does_not_drift_in_float32():
    """S4ND's axis kernel and its stateful view summed with the float32 log dA of its S4D: 2.4e-4 off float64 at
    L = 16384."""
    layer = S4ND(2, 1, 64, discretization="bilinear", bidirectional=False, seed=1)
    wide = S4ND(2, 1, 64, discretization="bilinear", bidirectional=False, seed=1).double()
    wide.load_state_dict(layer.state_dict())
    x = torch.randn(2, 16384, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref, ref_state = wide(x.double(), state=wide.initial_state(2), return_state=True)
        y, state = layer(x, state=layer.initial_state(2), return_state=True)
        assert _rel(layer(x), ref) < 1e-5
    assert y.dtype == torch.float32 and state.dtype == torch.complex64
    assert _rel(y, ref) < 1e-5 and _rel(state, ref_state) < 1e-5, (_rel(y, ref), _rel(state, ref_state))


def test_diagonal_system_checks_its_wide_exponent():
    from statespaces.layers.base import DiagonalSystem

    lg = torch.zeros(2, 3, dtype=torch.complex64)
    C = torch.zeros(1, 2, 3, dtype=torch.complex64)
    assert DiagonalSystem(lg, lg, C, 1.0).exponent is lg
    wide = lg.to(torch.complex128)
    assert DiagonalSystem(lg, lg, C, 1.0, log_dA_wide=wide).exponent is wide
    with pytest.raises(ValueError, match="log_dA_wide must be complex128"):
        DiagonalSystem(lg, lg, C, 1.0, log_dA_wide=lg)
    with pytest.raises(ValueError, match="log_dA_wide must be complex128"):
        DiagonalSystem(lg, lg, C, 1.0, log_dA_wide=wide[:1])
