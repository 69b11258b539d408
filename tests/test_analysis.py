"""Explicit operator (statespaces.analysis): oscillators, Green's function, round trip, plots."""
import copy
import csv
import json
import math

import numpy as np
import pytest

import torch
from torch import nn

from statespaces.analysis.oscillators import Oscillator, oscillators, s4d_from_oscillators
from statespaces.layers import S4D, S5
from statespaces.layers.init import S4D_INITS
from statespaces.layers.linoss import LinOSS

f64 = torch.float64
L = 160


def _s4d(init, disc, H=3, N=12, seed=0):
    return S4D(H, N, init=init, discretization=disc, seed=seed, dt_min=1e-2, dt_max=0.5).double()


def _impulse_kernel(layer, L):
    """Impulse response of the forward pass, minus the D skip: (H, L) for SISO, (H_out, H_in, L) for MIMO."""
    H = layer.d_model
    imp = torch.zeros(H, L, H, dtype=f64)
    imp[torch.arange(H), 0, torch.arange(H)] = 1.0
    with torch.no_grad():
        r = layer(imp).permute(2, 0, 1).clone()                         # (h_out, k_in, l)
    r[torch.arange(H), torch.arange(H), 0] -= layer.D.detach()
    return r


@pytest.mark.parametrize("init", S4D_INITS)
@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
def test_s4d_operator_kernel(init, disc):
    layer = _s4d(init, disc)
    an = oscillators(layer)
    K = an.kernel(L)
    with torch.no_grad():
        assert torch.allclose(K, layer.kernel(L), atol=1e-10, rtol=0)
    imp = _impulse_kernel(layer, L)
    assert torch.allclose(torch.diagonal(imp, dim1=0, dim2=1).T, K, atol=1e-10)      # own channel
    off = ~torch.eye(3, dtype=torch.bool)
    assert float(imp[off].abs().max()) < 1e-12                                        # SISO: no mixing
    u = torch.randn(2, 40, 3, dtype=f64)
    with torch.no_grad():
        assert torch.allclose(an.apply(u), layer(u), atol=1e-10)
    assert bool((an.eig.imag >= 0).all())
    assert bool((an.eig.abs() < 1).all())
    assert bool(((an.damping_ratio >= 0) & (an.damping_ratio <= 1 + 1e-12)).all())


def test_s4d_frequency_meaning_zoh_vs_bilinear():
    for disc in ("zoh", "bilinear"):
        layer = S4D(3, 8, init="lin", discretization=disc, seed=0, dt_min=1e-2, dt_max=0.1).double()  # dt Im A < pi
        an = oscillators(layer)
        A = layer.continuous_A().detach()
        dt = torch.exp(layer.log_dt.detach()).unsqueeze(-1)
        s = an.eig_continuous
        assert torch.allclose(an.eig_nominal, A.to(torch.complex128))
        if disc == "zoh":                      # exact: s = A (no aliasing here: dt Im A < pi)
            assert torch.allclose(s, A, atol=1e-10)
        else:                                  # warped: s = log((1 + dt A/2)/(1 - dt A/2))/dt != A
            assert torch.allclose(s, torch.log((1 + dt * A / 2) / (1 - dt * A / 2)) / dt, atol=1e-10)
            assert float((s - A).abs().max()) > 1e-3
        # per-oscillator continuous form: 2 Re(c lambda^l) = amp e^{-zeta w0 t} cos(w_d t + phase)
        t = torch.arange(30, dtype=f64) * dt[0, 0]
        w0, z = an.natural_frequency[0, 3], an.damping_ratio[0, 3]
        amp, ph = an.amplitude[0, 3], an.phase[0, 3]
        cont = amp * torch.exp(-z * w0 * t) * torch.cos(w0 * torch.sqrt(1 - z * z) * t + ph)
        disc_k = 2 * (an.residue[0, 3] * an.eig[0, 3] ** torch.arange(30)).real
        assert torch.allclose(cont, disc_k, atol=1e-10)


@pytest.mark.parametrize("disc", ["IM", "IMEX"])
def test_linoss_operator_kernel(disc):
    layer = LinOSS(4, 6, discretization=disc, seed=1).double()
    an = oscillators(layer)
    K = an.kernel(L)
    with torch.no_grad():
        assert torch.allclose(K, layer.kernel(L), atol=1e-10, rtol=0)
    assert torch.allclose(_impulse_kernel(layer, L), K, atol=1e-10)
    u = torch.randn(2, 30, 4, dtype=f64)
    with torch.no_grad():
        assert torch.allclose(an.apply(u), layer(u), atol=1e-10)
    # Prop. 3.1 and the undamped nominal oscillator i sqrt(A)
    A, dt = layer.stiffness().detach(), layer.dt().detach()
    if disc == "IM":
        S = 1 / (1 + dt**2 * A)
        assert torch.allclose(an.eig, S * torch.complex(torch.ones_like(A), dt * A.sqrt()), atol=1e-12)
        assert bool((an.damping_ratio > 0).all())
    else:
        assert torch.allclose(an.eig.abs(), torch.ones_like(A), atol=1e-12)
        assert torch.allclose(an.damping_ratio, torch.zeros_like(A), atol=1e-12)
        assert bool(torch.isinf(an.decay_time).all())
    assert torch.allclose(an.eig_nominal.imag, A.sqrt())
    rows = an.table()
    assert len(rows) == 6 and {"natural_frequency", "damping_ratio", "amplitude", "phase", "gain"} <= set(rows[0])


def test_linoss_degenerate_oscillator_ramp():
    layer = LinOSS(3, 5, seed=2).double()
    with torch.no_grad():
        layer.A_hat[2] = -1.0                      # relu -> A = 0: Jordan block, not a sum of exponentials
    an = oscillators(layer)
    assert bool(an.extra["degenerate"][2]) and float(an.ramp[..., 2].abs().max()) > 0
    with torch.no_grad():
        assert torch.allclose(an.kernel(L), layer.kernel(L), atol=1e-10, rtol=0)


@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
def test_round_trip_s4d_from_oscillators(disc):
    for init in ("inv", "rand", "real"):
        layer = _s4d(init, disc)
        an = oscillators(layer)
        rebuilt = s4d_from_oscillators(an.to_oscillators(), discretization=disc, D=layer.D.detach(), dtype=f64)
        with torch.no_grad():
            assert torch.allclose(rebuilt.kernel(L), layer.kernel(L), atol=1e-10, rtol=0)
            u = torch.randn(1, 50, 3, dtype=f64)
            assert torch.allclose(rebuilt(u), layer(u), atol=1e-10)
        an2 = oscillators(rebuilt)
        key = lambda r: (r["channel"], round(r["natural_frequency"], 6), round(r["amplitude"], 9))  # noqa: E731
        for r1, r2 in zip(sorted(an.table(), key=key), sorted(an2.table(), key=key)):
            for k in ("natural_frequency", "damping_ratio", "amplitude", "eig_abs"):
                assert math.isclose(r1[k], r2[k], rel_tol=1e-8, abs_tol=1e-10), (k, r1[k], r2[k])


def test_s4d_from_handmade_oscillators():
    oscs = [Oscillator(0, 2.0, 0.1, 1.5, 0.3, 0.05), Oscillator(0, 7.0, 0.05, 0.5, -1.0, 0.05),
            Oscillator(1, 1.0, 1.0, 2.0, 0.0, 0.1)]
    layer = s4d_from_oscillators(oscs, d_model=3).double()
    K = layer.kernel(100)
    t = torch.arange(100, dtype=f64)
    for h, group in ((0, oscs[:2]), (1, oscs[2:])):
        expect = sum(o.amplitude * torch.exp(-o.damping * o.frequency * t * o.dt)
                     * torch.cos(o.frequency * math.sqrt(1 - o.damping**2) * t * o.dt + o.phase) for o in group)
        assert torch.allclose(K[h], expect, atol=1e-6)      # layer is built in the default dtype (float32)
    assert float(K[2].detach().abs().max()) == 0.0                   # empty channel
    with pytest.raises(ValueError, match="damping"):
        s4d_from_oscillators([Oscillator(0, 1.0, 0.0, 1.0, 0.0, 0.1)])          # undamped
    with pytest.raises(ValueError, match="dt"):
        s4d_from_oscillators([Oscillator(0, 1.0, 0.5, 1.0, 0.0, 0.1), Oscillator(0, 2.0, 0.5, 1.0, 0.0, 0.2)])
    with pytest.raises(ValueError):
        s4d_from_oscillators([])


def test_unsupported_inputs():
    with pytest.raises(TypeError, match="unsupported"):
        oscillators(nn.Linear(3, 3))
    with pytest.raises(TypeError):
        oscillators("s4d")
    with pytest.raises(ValueError, match="bidirectional"):
        oscillators(S4D(2, 4, bidirectional=True))
    with pytest.raises(TypeError):
        oscillators(LinOSS(2, 3)).to_oscillators()
    from statespaces.analysis.plots import analyze_module

    with pytest.raises(TypeError, match="no supported"):
        analyze_module(nn.Sequential(nn.Linear(2, 2)), "/tmp/unused")


def test_s4_operator_kernel():
    from statespaces.layers.s4 import S4

    layer = S4(3, 8).double()
    an = oscillators(layer)
    with torch.no_grad():
        assert torch.allclose(an.kernel(64), layer.kernel(64), atol=1e-8)


def test_analyze_checkpoint_and_module(tmp_path):
    from statespaces.analysis.plots import analyze_checkpoint
    from statespaces.models import SequenceClassifier
    from statespaces.train import build_config, build_model, save_checkpoint

    cfg = build_config(overrides=[("model.d_model", "4"), ("model.n_layers", "1"), ("model.layer.d_state", "6"),
                                  ("model.layer.init", "inv")])
    model = build_model(cfg, 1, 3)
    save_checkpoint(tmp_path / "ck", {f"model.{k}": v for k, v in model.state_dict().items()},
                    {"config": cfg.to_dict(), "d_input": 1, "n_classes": 3})
    summary = analyze_checkpoint(tmp_path / "ck", tmp_path / "out", L=128)
    files = summary["layers"][0]["files"]
    assert len(files) == 6 and all((tmp_path / "out" / f.split("/")[-1]).exists() for f in files)
    with open(tmp_path / "out" / "blocks.0.layer_oscillators.csv") as f:
        assert len(list(csv.DictReader(f))) == 4 * 3
    assert json.load(open(tmp_path / "out" / "analysis.json"))["layers"][0]["kind"] == "s4d"
    # a plain module with a LinOSS layer, tables only
    m = SequenceClassifier(2, 3, d_model=4, n_layers=2, layer=dict(kind="linoss", n_oscillators=5, discretization="IMEX"))
    summary = analyze_checkpoint(m, tmp_path / "lin", plots=False)
    assert [e["kind"] for e in summary["layers"]] == ["linoss", "linoss"]
    assert abs(summary["layers"][0]["max_abs_eig"] - 1) < 1e-6
    with pytest.raises(FileNotFoundError, match="checkpoint directory"):
        analyze_checkpoint(tmp_path / "bad.pt", tmp_path / "bad")


def test_analyze_trainer_checkpoint_directory(tmp_path):
    """The trainer's directory checkpoints (safetensors + meta.json), if this version writes them."""
    from statespaces.analysis.plots import analyze_checkpoint

    ckmod = pytest.importorskip("statespaces.train.checkpoint")
    loop = pytest.importorskip("statespaces.train.loop")
    evaluation = pytest.importorskip("statespaces.train.evaluation")
    from statespaces.train.config import TrainConfig

    if not hasattr(evaluation, "load_trained"):
        pytest.skip("trainer has no directory checkpoints")
    cfg = TrainConfig.from_dict({"model": {"layer": {"kind": "linoss", "n_oscillators": 3, "dt_min": 0.3, "dt_max": 0.9},
                                           "d_model": 4, "n_layers": 1}})
    model = loop.build_model(cfg, 2, 3)
    tensors = {f"model.{k}": v.contiguous() for k, v in model.state_dict().items()}
    try:
        ckmod.save_checkpoint(tmp_path / "ck", tensors, {"config": cfg.to_dict(), "d_input": 2, "n_classes": 3})
    except TypeError:
        pytest.skip("different save_checkpoint API")
    summary = analyze_checkpoint(tmp_path / "ck", tmp_path / "out", plots=False)
    assert summary["layers"][0]["kind"] == "linoss"


# --- bidirectional layers and every checkpoint (issue #18 item 5) ---------------------------------
def _bidirectional_layers():
    from statespaces.layers.s4 import S4

    yield "s4d-zoh", S4D(3, 8, bidirectional=True, seed=0)
    yield "s4d-bilinear", S4D(3, 8, bidirectional=True, discretization="bilinear", seed=1)
    yield "s4", S4(3, 8, bidirectional=True)
    yield "s5", S5(3, 8, bidirectional=True, seed=4)           # its backward scan's lag 0 is the forward's lag0
    yield "s5-causal", S5(3, 6, discretization="bilinear", seed=5)
    for mode in (True, "concat"):
        try:
            yield f"linoss-{mode}", LinOSS(3, 5, bidirectional=mode, seed=2)
        except (TypeError, ValueError):    # a LinOSS without bidirectional forms
            pass
    try:
        from statespaces.layers.dlinoss import DLinOSS
    except ImportError:
        return
    yield "dlinoss", DLinOSS(3, 5, seed=3)
    try:
        yield "dlinoss-bi", DLinOSS(3, 5, bidirectional=True, seed=3)
    except (TypeError, ValueError):
        pass


@pytest.mark.parametrize("name,layer", list(_bidirectional_layers()), ids=lambda x: x if isinstance(x, str) else "")
def test_each_direction_of_a_bidirectional_layer_is_its_own_operator(name, layer):
    """forward (causal, with D) + backward (anti-causal) explicit operators rebuild the layer's output;
    a concat LinOSS mixes them with its projection, so each half is checked on its own."""
    from statespaces.analysis import layer_analyses

    layer = layer.double()
    u = torch.randn(2, 40, 3, dtype=f64, generator=torch.Generator().manual_seed(0))
    ans = layer_analyses(layer, name="x")
    with torch.no_grad():
        y = layer(u)
        if getattr(layer, "bidirectional_mode", None) == "concat":
            assert [a.direction for a in ans] == ["forward", "backward"] and ans[1].lag_offset == 0
            torch.testing.assert_close(ans[1].apply(u), layer.reverse(u.flip(1)).flip(1), atol=1e-10, rtol=0)
            return
    if not getattr(layer, "bidirectional", False):
        assert [a.direction for a in ans] == ["causal"]
    else:
        assert [a.name for a in ans] == ["x.forward", "x.backward"] and float(ans[1].D.abs().max()) == 0
        # the backward kernel touches only later steps: an impulse at t leaves y[:t+1] alone
        imp = torch.zeros(1, 40, 3, dtype=f64)
        imp[0, 20] = 1.0
        assert float(ans[1].apply(imp)[0, 20:].abs().max()) == 0 and float(ans[1].apply(imp)[0, :20].abs().max()) > 0
    torch.testing.assert_close(sum(a.apply(u) for a in ans), y, atol=1e-9, rtol=1e-9)
    for a in ans:
        w, Hf = a.frequency_response(L=256, n_freq=16)
        assert torch.isfinite(Hf.abs()).all()


def test_s5_oscillators_and_their_tables(tmp_path):
    """S5 (MIMO first-order modes): one oscillator per stored mode at its continuous eigenvalue (ZOH: s = Lambda),
    complex mixing residues C B / 2, the closed-form kernel equal to the layer's, tables and plots written."""
    from statespaces.analysis.plots import analyze_module

    layer = S5(3, 8, seed=6, dt_min=0.05, dt_max=0.5).double()
    an = oscillators(layer, rate=0.5, name="s5")
    with torch.no_grad():
        torch.testing.assert_close(an.kernel(80), layer.kernel(80, rate=0.5), atol=1e-12, rtol=0)
        lam = layer.continuous_A()
        lam = torch.where(lam.imag < 0, lam.conj(), lam)
        torch.testing.assert_close(an.eig_continuous, lam.to(torch.complex128), atol=1e-12, rtol=0)
        torch.testing.assert_close(an.dt, layer.step_sizes(0.5), atol=1e-15, rtol=0)
    assert an.kind == "s5" and an.mimo and an.n_oscillators == 4 and an.lag0 is None
    rows = an.table()
    assert len(rows) == 4 and {r["amplitude"] for r in rows} == {1.0} and all(r["gain"] > 0 for r in rows)
    assert "A" not in rows[0] and "degenerate" not in rows[0]
    with pytest.raises(TypeError, match="s5 mixes channels"):
        an.to_oscillators()
    summary = analyze_module(nn.ModuleList([S5(3, 8, seed=7), S5(3, 8, bidirectional=True, seed=8)]), tmp_path / "a")
    assert [e["kind"] for e in summary["layers"]] == ["s5"] * 3 and summary["skipped"] == []
    assert (tmp_path / "a" / "1.forward_oscillators.png").exists()


def test_direction_argument_is_checked():
    with pytest.raises(ValueError, match="pass direction='forward' or 'backward'"):
        oscillators(S4D(2, 4, bidirectional=True))
    with pytest.raises(ValueError, match="causal; it has no backward direction"):
        oscillators(S4D(2, 4), direction="backward")
    with pytest.raises(ValueError, match="direction: got 'up'"):
        oscillators(S4D(2, 4, bidirectional=True), direction="up")
    assert oscillators(S4D(2, 4, bidirectional=True), direction="backward").direction == "backward"


def _bidirectional_run(tmp_path, layer="s4d"):
    from statespaces.train import build_config, train

    cfg = build_config(overrides=[("model.layer", layer), ("model.d_model", "4"), ("model.n_layers", "2"),
                                  ("model.layer.d_state", "4"), ("model.layer.init", "lin" if layer == "s4d" else "legs"),
                                  ("model.layer.bidirectional", "true"), ("trainer.epochs", "1"),
                                  ("trainer.batch_size", "256"), ("trainer.out", str(tmp_path / "run")),
                                  ("trainer.tensorboard", "off")])
    train(cfg, progress=False)
    return tmp_path / "run"


@pytest.mark.slow   # fast tier: a training run / build / reproduction
def test_analyze_a_trained_bidirectional_checkpoint(tmp_path, capsys):
    """`statespaces analyze RUN` on a bidirectional model (before: 'no supported SSM layer')."""
    from statespaces.cli import main

    run = _bidirectional_run(tmp_path)
    assert main(["analyze", str(run), str(tmp_path / "an"), "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "blocks.0.layer.forward: 8 oscillators (s4d, forward direction)" in out
    assert "blocks.1.layer.backward" in out and str(run / "best") in out
    info = json.load(open(tmp_path / "an" / "analysis.json"))
    assert [e["direction"] for e in info["layers"]] == ["forward", "backward"] * 2 and info["skipped"] == []
    for stem in ("blocks.0.layer.forward", "blocks.0.layer.backward"):
        with open(tmp_path / "an" / f"{stem}_oscillators.csv") as f:
            assert len(list(csv.DictReader(f))) == 4 * 2


@pytest.mark.slow
def test_analyze_plots_a_bidirectional_s4_checkpoint(tmp_path):
    from statespaces.cli import main

    run = _bidirectional_run(tmp_path, "s4")
    assert main(["analyze", str(run)]) == 0
    for stem in ("blocks.1.layer.forward", "blocks.1.layer.backward"):
        for kind in ("eigenvalues", "kernel", "frequency_response", "oscillators"):
            assert (run / "analysis" / f"{stem}_{kind}.png").exists()       # beside best/, not inside it


def test_layers_that_cannot_be_analyzed_are_named(tmp_path):
    from statespaces.analysis.plots import analyze_module
    from statespaces.layers.base import SSMLayer

    class Opaque(SSMLayer):
        def __init__(self):
            super().__init__()
            self.d_model, self.bidirectional = 2, False
            self.w = nn.Parameter(torch.ones(2))

    summary = analyze_module(nn.ModuleList([S4D(2, 4), Opaque()]), tmp_path / "a", plots=False)
    assert [s["layer"] for s in summary["skipped"]] == ["1"]
    assert "Opaque has no oscillator form" in summary["skipped"][0]["reason"]
    with pytest.raises(ValueError, match="no SSM layer of the model could be analyzed: 0: Opaque has no oscillator"):
        analyze_module(nn.ModuleList([Opaque()]), tmp_path / "b", plots=False)


def test_analyze_prints_when_the_oscillators_are_not_faithful(monkeypatch, tmp_path, capsys):
    """`statespaces analyze` names a layer whose oscillators do not reproduce its kernel (an S4 eigenbasis too
    ill-conditioned, Lemma 6.6) and a table in rad per step (no dt); before, only analysis.json said so."""
    import statespaces.analysis as analysis_module
    import statespaces.train.loop as loop_module
    from statespaces.cli import main

    summary = {"layers": [
        {"layer": "blocks.0.layer", "n_oscillators": 32, "kind": "dplr", "faithful": False, "kernel_error": 0.012,
         "time_unit": "time"},
        {"layer": "blocks.1.layer", "n_oscillators": 32, "kind": "dplr", "faithful": True, "kernel_error": 1e-9,
         "time_unit": "step"}]}
    monkeypatch.setattr(loop_module, "checkpoint_dir", lambda path: tmp_path)
    monkeypatch.setattr(analysis_module, "analyze_checkpoint", lambda folder, out, plots=True: summary)
    assert main(["analyze", str(tmp_path), "--no-plots"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "NOT faithful" in out[0] and "1.2e-02" in out[0] and "per step" not in out[0]
    assert "NOT faithful" not in out[1] and "frequencies per step" in out[1]


def test_tables_of_float32_layers_are_computed_in_float64():
    """The table promised float64 but read a float32 layer's modes in float32 (natural frequencies 4e-8 relative
    off the parameters' own system); it is now computed from a float64 copy, equal to the float64 layer's table."""
    from statespaces import S4D, LinOSS
    from statespaces.analysis.oscillators import oscillators

    for layer in (S4D(3, 8, init="inv", seed=0), LinOSS(3, 4, discretization="IMEX", seed=0)):
        wide = copy.deepcopy(layer).double()
        a, b = oscillators(layer), oscillators(wide)
        torch.testing.assert_close(a.kernel(64), b.kernel(64), rtol=1e-14, atol=0)
        assert next(layer.parameters()).dtype == torch.float32       # the layer itself is left as it was


# ---- HiPPO/analysis campaign (R3-R5, R8, R9, R12) ------------------------------------------------------------
def test_green_kernel_checks_its_arguments():
    """R3: green_kernel validated nothing: L = 2.5 gave 3 samples, L = -1 torch's arange error, a NaN eigenvalue a
    NaN kernel, mismatched shapes an einsum error."""
    from statespaces.analysis import green_kernel

    le, res = torch.tensor([-0.1 + 0.5j]), torch.tensor([1 + 0j])
    assert green_kernel(le, res, 3).shape == (3,) and green_kernel(le, res, np.int64(3)).shape == (3,)
    with pytest.raises(TypeError, match="kernel length L must be a positive integer, got 2.5"):
        green_kernel(le, res, 2.5)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="kernel length L must be a positive integer"):
            green_kernel(le, res, bad)
    with pytest.raises(ValueError, match="log_eig contains 1 non-finite"):
        green_kernel(torch.tensor([complex(float("nan"), 0.5)]), res, 3)
    with pytest.raises(ValueError, match="residue contains 1 non-finite"):
        green_kernel(le, torch.tensor([complex(float("inf"), 0.0)]), 3)
    with pytest.raises(ValueError, match=r"log_eig \(2,\) does not broadcast against residue \(3,\)"):
        green_kernel(torch.tensor([-0.1 + 0.5j, -0.2 + 0j]), torch.ones(3, dtype=torch.complex64), 3)
    with pytest.raises(TypeError, match="log_eig must be a tensor of numbers"):
        green_kernel("abc", res, 3)


GOOD = dict(channel=0, frequency=2.0, damping=0.3, amplitude=1.0, phase=0.0, dt=0.1)


def test_oscillator_records_check_their_fields():
    """R5: Oscillator never checked its fields: zeta = 1.5, w0 = 2 gave the eigenvalue -3 while the mode's are
    -0.764 and -5.236. An overdamped record is refused with its two real eigenvalues and the two relaxation records
    that hold them; |zeta| = 1 is a real eigenvalue (a relaxation), negative zeta a growing mode."""
    with pytest.raises(ValueError, match=r"-0\.763932 and -5\.23607.*damping=1 and frequencies 0\.763932 and 5\.23607"):
        Oscillator(0, 2.0, 1.5, 1.0, 0.0, 0.1)
    roots = sorted(np.roots([1, 2 * 1.5 * 2.0, 4.0]).real)
    relax = [Oscillator(0, w, 1.0, 1.0, 0.0, 0.1).continuous_eigenvalue() for w in (5.23607, 0.763932)]
    assert [r.imag for r in relax] == [0.0, 0.0] and np.allclose([r.real for r in relax], roots, atol=1e-5)
    assert Oscillator(0, 2.0, -0.5, 1.0, 0.0, 0.1).continuous_eigenvalue().real == pytest.approx(1.0)
    with pytest.raises(ValueError, match="damping=-1"):
        Oscillator(0, 2.0, -1.5, 1.0, 0.0, 0.1)
    o = Oscillator(np.int64(2), np.float32(2.0), 0.5, 1, 0, 0.1)
    assert type(o.channel) is int and type(o.frequency) is float and o.amplitude == 1.0
    with pytest.raises(TypeError, match="Oscillator channel must be an integer >= 0, got 1.5"):
        Oscillator(1.5, 2.0, 0.3, 1.0, 0.0, 0.1)
    with pytest.raises(ValueError, match="Oscillator channel must be an integer >= 0, got -1"):
        Oscillator(-1, 2.0, 0.3, 1.0, 0.0, 0.1)
    for field, value in (("frequency", math.inf), ("amplitude", math.inf), ("dt", math.nan), ("phase", math.inf)):
        with pytest.raises(ValueError, match=f"Oscillator {field} must be a finite real number"):
            Oscillator(**{**GOOD, field: value})
    for kw in (dict(frequency=-1.0), dict(amplitude=-1.0), dict(dt=0.0)):
        with pytest.raises(ValueError, match="need frequency >= 0, amplitude >= 0 and dt > 0"):
            Oscillator(**{**GOOD, **kw})


def test_s4d_from_oscillators_checks_D_channels_and_ranges():
    """R4/R8: a NaN D was accepted, a D of the wrong shape gave a broadcast error; a channel beyond d_model said
    "outside [0, 2)"; an out-of-range frequency * dt ended in S4D.from_modes' "use 'zoh' or 'bilinear'" although
    zoh was in use; an infinite amplitude passed and blamed a diverged training run."""
    o = Oscillator(0, 2.0, 0.3, 1.0, 0.0, 0.1)
    with pytest.raises(ValueError, match="D contains 1 non-finite"):
        s4d_from_oscillators([o], D=torch.tensor([float("nan")]))
    with pytest.raises(ValueError, match=r"D must have shape \(d_model,\) = \(1,\), got \(5,\)"):
        s4d_from_oscillators([o], D=torch.ones(5))
    with pytest.raises(TypeError, match="D must be a real floating-point tensor"):
        s4d_from_oscillators([o], D=torch.ones(1, dtype=torch.int64))
    layer = s4d_from_oscillators([o], D=torch.tensor([0.25]), dtype=f64)
    assert float(layer.D) == 0.25
    with pytest.raises(ValueError, match=r"channel 3 does not exist in a layer with d_model=2 \(channels 0\.\.1\)"):
        s4d_from_oscillators([Oscillator(3, 2.0, 0.3, 1.0, 0.0, 0.1)], d_model=2)
    with pytest.raises(TypeError, match="d_model must be an integer"):
        s4d_from_oscillators([o], d_model=2.0)
    with pytest.raises(ValueError, match="float64's range") as exc:
        s4d_from_oscillators([Oscillator(0, 1e200, 0.3, 1.0, 0.0, 1e200)], discretization="zoh")
    assert "use 'zoh'" not in str(exc.value)
    with pytest.raises(ValueError, match="Oscillator amplitude must be a finite real number"):
        s4d_from_oscillators([Oscillator(0, 2.0, 0.3, math.inf, 0.0, 0.1)])


def test_apply_checks_its_input():
    """R9: apply(u) with the wrong channel count or a 2-D input raised torch's broadcast RuntimeError."""
    an = oscillators(_s4d("legs", "zoh", H=2, N=4))
    u = torch.randn(1, 5, 2, dtype=f64)
    assert an.apply(u).shape == (1, 5, 2) and an.apply(u.float()).dtype == f64
    with pytest.raises(ValueError, match="u has 3 channels in its last dim, the module expects d_model=2"):
        an.apply(torch.ones(1, 5, 3))
    with pytest.raises(ValueError, match=r"u must have shape \(batch, length, d_model=2\), got \(5, 2\)"):
        an.apply(torch.ones(5, 2))
    with pytest.raises(ValueError, match="u contains NaN"):
        an.apply(torch.full((1, 5, 2), float("nan")))
    with pytest.raises(TypeError, match="real floating-point"):
        an.apply(torch.ones(1, 5, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="n_freq must be a positive integer"):
        an.frequency_response(n_freq=0)
    mimo = oscillators(S5(3, 4, seed=0))
    assert mimo.apply(torch.randn(2, 6, 3)).shape == (2, 6, 3)
    with pytest.raises(ValueError, match="expects d_model=3"):
        mimo.apply(torch.randn(2, 6, 2))


def test_real_modes_are_reported_as_relaxations(tmp_path, monkeypatch):
    """R12: a real eigenvalue was tabled as an oscillator with zeta = 1, i.e. read as the critically damped
    oscillator (Green's function t e^{-w t}); its kernel is the first-order relaxation e^{s t}. Such modes are now
    marked ``relaxation`` in the rows, the summary and the figure; the numbers are unchanged."""
    oscs = [Oscillator(0, 2.0, 1.0, 1.0, 0.0, 0.1), Oscillator(0, 3.0, 0.2, 0.5, 0.3, 0.1)]
    layer = s4d_from_oscillators(oscs, dtype=f64)
    t = torch.arange(50, dtype=f64) * 0.1
    relax = layer.kernel(50).detach()[0] - oscillators(s4d_from_oscillators(oscs[1:], dtype=f64)).kernel(50)[0]
    torch.testing.assert_close(relax, torch.exp(-2.0 * t), atol=1e-12, rtol=0)        # e^{-w t}, no t e^{-w t}
    an = oscillators(layer)
    rows = sorted(an.table(), key=lambda r: r["damping_ratio"])
    assert [r["relaxation"] for r in rows] == [False, True]
    assert rows[1]["damping_ratio"] == 1.0 and rows[1]["natural_frequency"] == pytest.approx(2.0)
    assert an.summary()["n_relaxations"] == 1 and an.summary()["n_oscillators"] == 2
    assert oscillators(S5(2, 4, seed=0)).table()[0]["relaxation"] in (True, False)
    pytest.importorskip("matplotlib")
    import matplotlib.axes

    from statespaces.analysis.plots import plot_oscillator_table, write_table

    cells = []
    real_table = matplotlib.axes.Axes.table

    def spy(self, *args, **kwargs):
        cells.append((kwargs["colLabels"], kwargs["cellText"]))
        return real_table(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "table", spy)
    plot_oscillator_table(an, tmp_path / "table.png")
    labels, text = cells[0]
    col = labels.index("relaxation")
    assert sorted(row[col] for row in text) == ["", "yes"]
    with open(write_table(an, tmp_path / "table.csv")) as f:
        assert sorted(r["relaxation"] for r in csv.DictReader(f)) == ["False", "True"]
