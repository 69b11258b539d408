"""The oscillator view of S4 layers (seed 000, notes 6.2; thesis Lemma 6.6): its accuracy is measured and
reported, conjugate pairs are one oscillator as for S4D, and the diagonalized form reads per unit time.

Float64 throughout, each claim checked against a route that does not go through the code under test:
the layer's own Algorithm-1 kernel (accuracy), the S4D twin of a diagonal S4 layer (pairs), and the
S4 layer's own table (the diagonalized form's time unit).
"""
import contextlib
import copy
import json
import warnings

import pytest
import torch
from torch import nn

from statespaces.analysis import oscillators, s4d_from_oscillators
from statespaces.analysis.plots import analyze_module
from statespaces.layers import S4, S4D, DiagonalizedS4
from statespaces.layers.modes import MODES_TOL, ModesAccuracyWarning

pytestmark = pytest.mark.usefixtures("one_thread")
f64 = torch.float64


@contextlib.contextmanager
def _default_dtype(dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def _s4(*args, dtype=f64, **kwargs) -> S4:
    """An S4 layer *built* in ``dtype`` (HiPPO inits exact in float64; a float32 one is rounded, then cast)."""
    with _default_dtype(dtype):
        layer = S4(*args, **kwargs)
    return layer.double()


def _relative_error_per_channel(layer: S4, L: int) -> torch.Tensor:
    """||K_modes - K|| / ||K|| per channel: the explicit powers of ``Modes.kernel`` against ``layer.kernel``."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", ModesAccuracyWarning)
        got, ref = layer.modes(check_length=None).kernel(L), layer.kernel(L)
    return (got - ref).norm(dim=-1) / ref.norm(dim=-1)


def _assert_same_error(err, ref):
    """Both measures above tol in every channel and of one order of magnitude: where the modes' terms cancel
    (the point of the check) two summation routes agree on the size of the error, not on its digits."""
    assert bool((ref > MODES_TOL).all()) and bool((err > MODES_TOL).all()), (err, ref)
    assert float((err.log10() - ref.log10()).abs().max()) < 1.0, (err, ref)


def _records(an):
    """The oscillator records as (channel, w0, zeta, amplitude, phase, dt), sorted by channel and frequency."""
    return sorted((o.channel, o.frequency, o.damping, o.amplitude, o.phase, o.dt) for o in an.to_oscillators())


def _assert_same_records(a, b, tol=1e-9):
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        assert ra[0] == rb[0]
        for x, y in zip(ra[1:], rb[1:]):
            assert abs(x - y) <= tol * max(1.0, abs(y)), (ra, rb)


# ---- bug 1: an ill-conditioned eigenbasis is measured, reported and warned about -----------------------
ILL = [("legs", 32), ("legs", 64), ("legt", 64), ("lagt", 16)]


@pytest.mark.parametrize("init,N", ILL, ids=[f"{i}-{n}" for i, n in ILL])
def test_modes_of_an_ill_conditioned_s4_warn_and_record_their_kernel_error(init, N):
    layer = _s4(3, N, init=init, seed=0)
    with pytest.warns(ModesAccuracyWarning, match=r"ill-conditioned \(cond\(V\) up to .*Lemma 6\.6.*not faithful: "
                                                  r"the kernel they define differs .* relative error of"):
        m = layer.modes()
    ref = _relative_error_per_channel(layer, 256)         # independent: explicit powers vs Algorithm 1
    assert m.kernel_error is not None and m.kernel_error.shape == (3,) and m.kernel_error.dtype == f64
    _assert_same_error(m.kernel_error, ref)


@pytest.mark.parametrize("init", ["rand", "fout"])
def test_modes_of_a_well_conditioned_s4_are_silent_and_exact(init):
    layer = _s4(3, 64, init=init, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ModesAccuracyWarning)
        m = layer.modes()
        an = oscillators(layer)
    assert float(m.kernel_error.max()) < 1e-10
    assert an.summary()["faithful"] is True and an.summary()["kernel_error"] < 1e-10


def test_trained_float32_s4_layers_are_still_analysed_without_warning(tmp_path):
    """Float32 layers (as trained) have a rounded, diagonalizable A: nothing to warn about, analyze works."""
    layer = _s4(3, 64, seed=0, dtype=torch.float32).float()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ModesAccuracyWarning)
        summary = analyze_module(nn.Sequential(layer), tmp_path, plots=False)
    assert summary["layers"][0]["faithful"] is True and summary["layers"][0]["kernel_error"] < 1e-6


def test_oscillators_and_analyze_report_an_unfaithful_s4_table(tmp_path):
    """The analysis view reports (does not refuse): kernel_error per channel, in the summary, the JSON and
    every table row; ``diagonalize``, which would replace the layer, still refuses the same layer."""
    layer = _s4(2, 64, init="legs", seed=0, dt_min=0.01, dt_max=0.01)
    with pytest.warns(ModesAccuracyWarning):
        an = oscillators(layer)
    err = an.extra["kernel_error"]
    _assert_same_error(err, _relative_error_per_channel(layer, 256))
    s = an.summary()
    assert s["faithful"] is False and s["kernel_error"] == float(err.max())
    assert all(r["kernel_error"] == float(err[r["channel"]]) for r in an.table())
    # the made-up frequencies the warning is about: HiPPO-LegS's eigenvalues are real (Im s = 0)
    assert float(an.damped_frequency.max()) > 1.0
    with pytest.warns(ModesAccuracyWarning):
        summary = analyze_module(nn.Sequential(layer), tmp_path, plots=False)
    entry = json.load(open(tmp_path / "analysis.json"))["layers"][0]
    assert summary["skipped"] == [] and entry["faithful"] is False and entry["kernel_error"] > MODES_TOL
    with pytest.raises(ValueError, match="numerically inaccurate"):
        layer.diagonalize()


def test_modes_accuracy_check_can_be_skipped_or_tightened():
    layer = _s4(2, 16, seed=0)                             # LegS N=16: kernel error ~1e-5, under the default tol
    with warnings.catch_warnings():
        warnings.simplefilter("error", ModesAccuracyWarning)
        assert float(layer.modes().kernel_error.max()) < MODES_TOL
        assert layer.modes(check_length=None).kernel_error is None
    with pytest.warns(ModesAccuracyWarning, match="tol=1e-08"):
        layer.modes(tol=1e-8)


# ---- bug 2: one oscillator per conjugate pair, as S4D -------------------------------------------------
def _s4_and_s4d_twin(H=2, N=8):
    """A diagonal S4 layer (P = 0) and the S4D-bilinear layer with the same Lambda, B, C, dt."""
    s4 = _s4(H, N, init="rand", seed=0)
    with torch.no_grad():
        s4.P.zero_()
        Lam, _, B, C = s4.continuous_system()
        s4d = S4D(H, N, init="lin", discretization="bilinear", seed=0).double()
        s4d.log_dt.copy_(s4.log_dt)
        s4d.A_real.copy_(torch.log(-Lam.real))
        s4d.A_imag.copy_(Lam.imag)
        s4d.B.copy_(torch.view_as_real(B))
        s4d.C.copy_(torch.view_as_real(C))
        s4d.D.copy_(s4.D)
    return s4, s4d


def test_s4_lists_each_conjugate_pair_once_as_its_s4d_twin():
    s4, s4d = _s4_and_s4d_twin()
    with torch.no_grad():
        torch.testing.assert_close(s4.kernel(128), s4d.kernel(128), atol=1e-14, rtol=0)
    a4, a4d = oscillators(s4), oscillators(s4d)
    assert a4.summary()["n_oscillators"] == a4d.summary()["n_oscillators"] == 2 * 4
    assert len(a4.table()) == len(a4d.table()) == 8
    _assert_same_records(_records(a4), _records(a4d))
    with torch.no_grad():
        torch.testing.assert_close(a4.kernel(128), s4.kernel(128), atol=1e-13, rtol=0)


def test_merged_s4_oscillators_keep_the_kernel_exact():
    """With a low-rank term (complex eigenvalues), and round trip through the records to an S4D layer."""
    layer = _s4(3, 16, init="rand", rank=2, seed=1)
    an = oscillators(layer)
    with torch.no_grad():                       # count from the dense discrete system: pairs once, reals once
        lam = torch.linalg.eigvals(layer.dense_system()[0])
    assert an.n_oscillators == int((lam.imag > -1e-12).sum()) and an.n_oscillators < 3 * 16
    assert bool((an.eig.imag >= 0).all())
    with torch.no_grad():
        K = layer.kernel(256)
        torch.testing.assert_close(an.kernel(256), K, atol=1e-12 * float(K.abs().max()), rtol=0)
        rebuilt = s4d_from_oscillators(an.to_oscillators(), discretization="bilinear", D=layer.D, dtype=f64)
        torch.testing.assert_close(rebuilt.kernel(256), K, atol=1e-11 * float(K.abs().max()), rtol=0)


def test_real_eigenvalues_stay_single_and_channels_may_differ():
    """Channel 0 real eigenvalues only (LegS N=8: real spectrum), channel 1 S4-Rand: 8 oscillators and
    as many as the dense system has eigenvalues with Im >= 0."""
    layer = _s4(2, 8, init="legs", seed=0)
    rand = _s4(2, 8, init="rand", seed=3)
    with torch.no_grad():
        for name in ("Lambda_real", "Lambda_imag", "B"):
            getattr(layer, name)[1] = getattr(rand, name)[1]
        layer.P[:, 1] = rand.P[:, 1]
    an = oscillators(layer)
    with torch.no_grad():
        lam = torch.linalg.eigvals(layer.dense_system()[0])
    expected = [int((lam[h].imag > -1e-12).sum()) for h in range(2)]
    per_channel = [sum(1 for o in an.to_oscillators() if o.channel == h) for h in range(2)]
    assert per_channel == expected and expected[0] == 8 and expected[1] < 8
    assert an.n_oscillators == len(an.table()) == sum(expected)
    assert an.valid is not None and an.valid.shape == an.log_eig.shape
    real = [o for o in an.to_oscillators() if o.channel == 0]
    assert all(o.damping == pytest.approx(1.0) for o in real)           # overdamped: pure exponentials
    with torch.no_grad():
        K = layer.kernel(256)
        torch.testing.assert_close(an.kernel(256), K, atol=1e-10 * float(K.abs().max()), rtol=0)


# ---- bug 3: the diagonalized form reads per unit time, as the S4 layer ------------------------------------
@pytest.mark.parametrize("rate", [1.0, 2.0])
def test_diagonalized_s4_has_the_s4_layers_oscillator_table(rate):
    s4 = _s4(2, 8, init="rand", seed=0, dt_min=0.01, dt_max=0.05)
    d = s4.diagonalize(rate=rate)
    a, b = oscillators(s4, rate=rate), oscillators(d, rate=rate)
    assert b.time_unit == "time" and b.kind == a.kind == "s4" and b.discretization == "bilinear"
    torch.testing.assert_close(b.dt, torch.exp(s4.log_dt.detach()).unsqueeze(-1).expand_as(b.dt) * rate,
                               rtol=1e-14, atol=0)
    _assert_same_records(_records(b), _records(a))
    for key in ("natural_frequency", "damping_ratio", "decay_time", "nominal_re", "nominal_im", "amplitude"):
        x = sorted((r["channel"], r["natural_frequency"], r[key]) for r in b.table())
        y = sorted((r["channel"], r["natural_frequency"], r[key]) for r in a.table())
        assert [v[2] for v in x] == pytest.approx([v[2] for v in y], rel=1e-9, abs=1e-12), key


def test_diagonalized_s4_keeps_its_step_through_state_dict_and_copies():
    s4 = _s4(2, 8, init="rand", seed=0)
    d = s4.diagonalize(rate=2.0)
    assert "dt" in d.state_dict()
    other = DiagonalizedS4(torch.exp(d.log_dA), d.dB, d.Cd, d.V, d.D, 2.0, torch.ones(2, dtype=f64))
    other.load_state_dict(d.state_dict())
    for form in (other, copy.deepcopy(d)):
        torch.testing.assert_close(form.dt, d.dt, rtol=0, atol=0)
        _assert_same_records(_records(oscillators(form, rate=2.0)), _records(oscillators(d, rate=2.0)), tol=0)


def test_an_unknown_step_is_reported_per_step():
    """A diagonal form built without dt: the analysis says 'step' (dt = 1 step), it does not pass as time."""
    s4 = _s4(2, 8, init="rand", seed=0, dt_min=0.01, dt_max=0.05)
    d = s4.diagonalize()
    bare = DiagonalizedS4(torch.exp(d.log_dA), d.dB, d.Cd, d.V, d.D, 1.0)
    an, ref = oscillators(bare), oscillators(s4)
    assert an.time_unit == "step" and an.summary()["time_unit"] == "step" and ref.summary()["time_unit"] == "time"
    assert all(r["time_unit"] == "step" for r in an.table())
    dt = torch.exp(s4.log_dt.detach())
    w_step = sorted((o.channel, o.frequency) for o in an.to_oscillators())
    w_time = sorted((o.channel, o.frequency * float(dt[o.channel])) for o in ref.to_oscillators())
    assert [w for _, w in w_step] == pytest.approx([w for _, w in w_time], rel=1e-9)
    with pytest.raises(ValueError, match="positive step sizes"):
        DiagonalizedS4(torch.exp(d.log_dA), d.dB, d.Cd, d.V, d.D, 1.0, torch.zeros(2))
