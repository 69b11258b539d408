"""Tier B: the fully specified synthetic tasks of thesis §7.5.8 (HiPPO method comparisons).

* B1, the delay (continuous copying) task of Fig. 7.9: one linear SSM layer must output its
  band-limited white-noise input delayed by a quarter of the sequence.
* B2, the reconstruction task of Fig. 7.8: from the last output vector ``y_L`` alone, a linear
  probe must reconstruct the last quarter of the input.

Both are run on one CPU core with the reductions stated in each result (the thesis sizes take
seconds per step here). FouT and LegT use the timescale-normalized matrices ``(A/2, B/2)``, whose
window is ``2/dt`` samples (notes §10 item 16, Fig. 7.9b): our ``statespaces.hippo`` ``fout``/
``legt`` at ``theta=1`` (the printed (5.2)/(5.3)) have window ``1/dt``, so we pass ``theta=2``.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, cast

import torch
from torch import nn

from ..data.signals import delay_data, window_noise
from ..hippo import dplr
from ..layers import S4, S4D
from ..layers.init import real_inverse
from ..models.baselines import LinearSSM
from ..train.engine import fit
from ..train.recipes import Batches
from ..train.tasks import Forecast
from .registry import Result, claim, pyplot, save_figure

Tensor = torch.Tensor

#: Timescale normalization of the windowed measures (window 2/dt), see the module docstring.
WINDOW_THETA = 2.0


def _set_window_theta(layer: S4, theta: float) -> None:
    """Re-initialize an S4 LegT/FouT layer with ``(A/theta, B/theta)`` (window ``theta/dt``, §5.4)."""
    Lam, P, B, _ = dplr(layer.init, layer.d_state, rank=layer.rank, theta=theta)
    H, M = layer.d_model, layer.n_modes
    dtype = layer.D.dtype
    with torch.no_grad():
        decay = (-Lam.real).clamp(min=1e-4).expand(H, M)
        layer.Lambda_real.copy_(real_inverse(decay, layer.real_transform).to(dtype))
        layer.Lambda_imag.copy_(Lam.imag.expand(H, M).to(dtype))
        layer.P.copy_(torch.view_as_real(P[:, None, :].expand(-1, H, M)).to(dtype))
        layer.B.copy_(torch.view_as_real(B.expand(H, M)).to(dtype))


def make_method(method: str, H: int, N: int, dt: Tuple[float, float], seed: int = 0,
                l_max: Optional[int] = None, trainable: bool = True) -> nn.Module:
    """One linear SSM layer of the §7.5.8 comparisons: ``s4-fout``, ``s4-legt``, ``s4-legs``,
    ``s4d-inv``, ``s4d-legs`` or ``s4d-lin``; FouT/LegT with the 2/dt window. ``l_max`` (S4 only):
    learn ``C~`` for kernels of that length, as the reference S4 kernel does (no ``dA^L`` per step).
    ``trainable=False``: frozen (A, B) of Fig. 7.9 (the state equation fixed; C, D train)."""
    family, init = method.split("-")
    if family == "s4d":
        return S4D(H, N, init=init, dt_min=dt[0], dt_max=dt[1], seed=seed, trainable_ssm=trainable)
    layer = S4(H, N, init=init, dt_min=dt[0], dt_max=dt[1], seed=seed, l_max=l_max, trainable_ssm=trainable)
    if init in ("fout", "legt"):
        _set_window_theta(layer, WINDOW_THETA)
    return layer


def _bar_plot(values: Dict[str, float], path: Path, ylabel: str, title: str, ref: Dict[str, float]) -> Optional[str]:
    """Bars of our numbers, thesis numbers as black dots where the thesis has the same setting."""
    plt = pyplot()
    if plt is None:
        return None
    names = list(values)
    fig, ax = plt.subplots(figsize=(8, 3.8))
    ax.bar(range(len(names)), [values[k] for k in names], color="#9ab", label="ours")
    pts = [(i, ref[k]) for i, k in enumerate(names) if k in ref]
    if pts:
        ax.plot(*zip(*pts), "k.", ms=10, label="thesis")
    ax.set_xticks(range(len(names)), names, rotation=25, ha="right", fontsize=7)
    ax.set(ylabel=ylabel, title=title)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


# ---- B1: delay task ------------------------------------------------------------------------------
def train_delay(method: str, dt: Tuple[float, float], trainable: bool, test, cfg: dict) -> float:
    """Adam (LR 1e-3) on the MSE over all positions for ``cfg['epochs']`` epochs of
    ``cfg['n_train']`` fresh sequences each (like the reference ``DelayTrainDataset``, which draws
    new white noise for every item); returns the RMSE on the fixed test set ``test = (u, y)``.

    The thesis' dt values are kept by time rescaling: the layer is built with ``dt * rate`` and run at
    rate 1 with ``l_max = L`` (it learns ``C~``, like the reference kernel), which is the same model
    as ``dt`` at ``rate`` and ~3x faster on CPU (no ``dA^L`` per step).
    """
    torch.manual_seed(0)
    r = cfg["rate"]
    layer = make_method(method, cfg["H"], cfg["N"], (dt[0] * r, dt[1] * r), l_max=cfg["L"], trainable=trainable)
    model = LinearSSM(layer, 1.0)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    steps = cfg["epochs"] * (cfg["n_train"] // cfg["batch"])
    batches = Batches(lambda i: delay_data(cfg["batch"], cfg["L"], cfg["lag"], cfg["band"], seed=1000 + i), steps)
    fit(model, batches, opt, Forecast())
    with torch.no_grad():
        u_te, y_te = test
        return float((model(u_te) - y_te).pow(2).mean().sqrt())


@torch.no_grad()
def delay_readout_lstsq(method: str, dt: Tuple[float, float], cfg: dict, n_fit: int = 32, n_test: int = 16,
                        seed: int = 0) -> float:
    """Best test RMSE of a linear readout ``y_t ~ w . x_t + d u_t + b`` from the frozen state ``x_t`` of
    one channel (float64 least squares over all positions; independent of any training).

    Any trained linear model of B1 with the same frozen ``(A, B, dt)`` on every channel has its
    kernel in the span of the state's impulse responses, so this is the floor for the frozen runs.
    The state's impulse responses ``dA^l dB`` (the real dense system, ``l < L``) are orthonormalized
    and convolved with the input by FFT."""
    L, N = cfg["L"], cfg["N"]
    r = cfg.get("rate", 1.0)
    layer = make_method(method, 1, N, (dt[0] * r, dt[1] * r))
    if not isinstance(layer, S4):
        raise ValueError(f"delay_readout_lstsq needs an S4 method (dense system), got {method!r}")
    dA, dB, _, _ = layer.dense_system(1.0)
    dA, x = dA[0].double(), dB[0].double()
    basis = torch.empty(L, x.shape[0], dtype=torch.float64)
    for l in range(L):
        basis[l] = x
        x = dA @ x
    Q = torch.linalg.qr(basis)[0]
    KQ = torch.fft.rfft(Q.T, 2 * L)

    def feats(u: Tensor) -> Tensor:
        X = torch.fft.irfft(torch.fft.rfft(u, 2 * L)[:, None] * KQ[None], 2 * L)[..., :L].transpose(1, 2)
        return torch.cat([X, u[..., None], torch.ones_like(u[..., None])], -1).reshape(-1, X.shape[-1] + 2)

    u, y = (t.double() for t in delay_data(n_fit, L, cfg["lag"], cfg["band"], seed=seed + 500))
    w = torch.linalg.lstsq(feats(u), y.reshape(-1, 1), driver="gelsd").solution
    u, y = (t.double() for t in delay_data(n_test, L, cfg["lag"], cfg["band"], seed=seed + 501))
    return float((feats(u) @ w - y.reshape(-1, 1)).pow(2).mean().sqrt())


def _b1_config(quick: bool) -> dict:
    # Thesis: L = 4000, lag 1000, N = 1024, H = 4, 20 epochs (dataset size not given; the reference
    # Delay dataset draws n_train = 10000 fresh sequences per epoch). Full: every length / 4 and N / 4
    # (N = 1024 costs seconds per step on one core); the layer's dt values are the thesis' times
    # 4000 / L (time rescaling, window 2/dt = L/4 samples). 20 epochs of 512 fresh sequences in
    # batches of 8: 1280 Adam steps (the first version took 280 steps on 448 fixed sequences, which
    # left even the frozen FouT far above its least-squares floor: 0.36 vs 0.07).
    if quick:
        return dict(L=200, lag=50, N=64, H=4, epochs=2, batch=8, n_train=16, n_test=16)
    return dict(L=1000, lag=250, N=256, H=4, epochs=20, batch=8, n_train=512, n_test=128)


B1_RUNS = [  # (method, dt range, trainable) -- fixed before any result was seen (§11 row B1)
    ("s4-fout", (2e-3, 2e-3), True),
    ("s4-fout", (2e-3, 2e-3), False),
    ("s4-fout", (1e-3, 1e-1), True),
    ("s4-fout", (8e-3, 8e-3), False),
    ("s4-legt", (2e-3, 2e-3), True),
    ("s4-legs", (2e-3, 2e-3), True),
    ("s4d-inv", (2e-3, 2e-3), True),
    ("s4d-legs", (2e-3, 2e-3), True),
    ("s4d-lin", (2e-3, 2e-3), True),
]
B1_QUICK_RUNS = [B1_RUNS[0], B1_RUNS[2], B1_RUNS[3], B1_RUNS[6]]


def _label(method: str, dt, trainable: bool) -> str:
    return f"{method} ({dt[0]:g},{dt[1]:g}) {'train' if trainable else 'frozen'}"


@claim("B1", "Delay task: S4-FouT at dt = 2e-3 encodes the lag, HiPPO methods compared (Fig. 7.9)", "B")
def b1(quick: bool, out: Path) -> Result:
    """Fig. 7.9 / §7.5.8: white noise band-limited to 1000 Hz (L = 4000 samples per second), target
    the input delayed by 1000 samples; RMSE over all positions (chance: predicting 0, 0.5 sqrt(3/4))."""
    cfg = _b1_config(quick)
    cfg["rate"] = 4000.0 / cfg["L"]
    band = cfg["band"] = cfg["L"] / 4  # 1000 Hz at 4000 samples/s: a quarter of the sampling rate
    test = delay_data(cfg["n_test"], cfg["L"], cfg["lag"], band, seed=1)
    chance = float(test[1].pow(2).mean().sqrt())
    rmse, secs = {}, {}
    for method, dt, trainable in (B1_QUICK_RUNS if quick else B1_RUNS):
        t0 = time.time()
        rmse[_label(method, dt, trainable)] = train_delay(method, dt, trainable, test, cfg)
        secs[_label(method, dt, trainable)] = round(time.time() - t0, 1)
    # independent floor of the frozen runs: least-squares readout from the frozen FouT state
    floor = {f"s4-fout ({a:g},{b:g}) frozen": delay_readout_lstsq("s4-fout", (a, b), cfg)
             for a, b in ((2e-3, 2e-3), (8e-3, 8e-3))}
    best = rmse[_label("s4-fout", (2e-3, 2e-3), True)]
    wide = rmse[_label("s4-fout", (1e-3, 1e-1), True)]
    slow = rmse[_label("s4-fout", (8e-3, 8e-3), False)]
    at2 = {k: v for k, v in rmse.items() if "(0.002,0.002) train" in k}
    winner = min(at2, key=lambda k: at2[k])
    checks = {"fout<0.03": best < 0.03, "fout<=wide/3": best <= wide / 3, "8e-3 frozen>0.35": slow > 0.35,
              "fout/legt best": winner.split(" ")[0] in ("s4-fout", "s4-legt")}
    failed = [k for k, v in checks.items() if not v]
    ref = {_label("s4-fout", (2e-3, 2e-3), True): 0.0078, _label("s4-fout", (2e-3, 2e-3), False): 0.0584,
           _label("s4-fout", (1e-3, 1e-1), True): 0.1474, _label("s4-fout", (8e-3, 8e-3), False): 0.4330,
           _label("s4-legt", (2e-3, 2e-3), True): 0.0129, _label("s4-legs", (2e-3, 2e-3), True): 0.0130,
           _label("s4d-inv", (2e-3, 2e-3), True): 0.0186, _label("s4d-legs", (2e-3, 2e-3), True): 0.0140,
           _label("s4d-lin", (2e-3, 2e-3), True): 0.0144}
    fig = _bar_plot(rmse, out / "B1_delay_rmse.png", "test RMSE", f"B1: delay task (chance {chance:.2f})", ref)
    scale = (f"L={cfg['L']}, lag {cfg['lag']}, N={cfg['N']}, H={cfg['H']}, band {band:g} Hz at {cfg['L']} samples/s, "
             f"rms 0.5, {cfg['epochs']} epochs x {cfg['n_train']} fresh seqs, batch {cfg['batch']}, Adam 1e-3, "
             f"layer dt x {cfg['rate']:g}")
    return Result(
        thesis="FouT trainable 0.0078 (frozen 0.0584/0.0304) at (2e-3,2e-3); (1e-3,1e-1) trainable 0.1474; "
               "(8e-3,8e-3) frozen 0.4330; LegT 0.0129, LegS 0.0130, S4D-Inv 0.0186; chance 0.43",
        ours="; ".join(f"{k} {v:.4f}" for k, v in rmse.items()) + f"; chance {chance:.3f}; least-squares floor "
             + ", ".join(f"{k} {v:.4f}" for k, v in floor.items()) + f" ({scale}; "
             + ("thesis: L=4000, lag 1000, N=1024" if not quick else "quick profile") + ")",
        passed=not failed,
        criterion="FouT (2e-3,2e-3) trainable RMSE < 0.03 and <= 1/3 of (1e-3,1e-1); (8e-3,8e-3) frozen > 0.35; "
                  "FouT or LegT best at (2e-3,2e-3)" + (f" -- failed: {', '.join(failed)}" if failed else ""),
        details=dict(config=cfg, band_hz=band, rmse=rmse, seconds=secs, chance=chance, best_at_2e3=winner,
                     window_theta=WINDOW_THETA, lstsq_floor_frozen=floor,
                     lstsq_floor="test RMSE of the float64 least-squares readout (w . x_t + d u_t + b) from the "
                                 "frozen FouT state, 32 fit / 16 test sequences: the best any frozen run can reach",
                     steps=cfg["epochs"] * (cfg["n_train"] // cfg["batch"]),
                     data="fresh band-limited noise every step (seeds 1000+step), fixed test set (seed 1)",
                     loss="MSE over all L positions (targets before the lag are 0), as the thesis' RMSE",
                     time_rescaling=f"layers built with dt x {cfg['rate']:g} and run at rate 1 with l_max = L "
                                    "(C~ learned, as in the reference kernel); same model as the thesis dt at "
                                    f"rate {cfg['rate']:g}",
                     frozen="log_dt, Lambda, P, B fixed; C~, D, encoder, decoder trained",
                     normalization="FouT/LegT: hippo theta=2, i.e. (A/2, B/2), window 2/dt; theta=1 would be 1/dt"),
        figure=fig,
    )


# ---- B2: reconstruction task ---------------------------------------------------------------------
def _final_outputs(layer: nn.Module, u: Tensor) -> Tensor:
    """``y_L = K . reverse(u) + D u_L`` for every channel (the input feeds all H channels): (B, H)."""
    K = cast(Tensor, cast(Any, layer).kernel(u.shape[1]))
    D = cast(Tensor, layer.D)
    return u.flip(1).to(K.dtype) @ K.T + u[:, -1:].to(K.dtype) * D


def _probe(Y: Tensor, T: Tensor, ridge: float = 1e-6) -> Tensor:
    """Least-squares probe W (H, M) with ``Y W ~ T`` (the optimum of the learned linear probe)."""
    G = Y.T @ Y
    G = G + ridge * G.diagonal().mean() * torch.eye(G.shape[0], dtype=G.dtype)
    return torch.linalg.solve(G, Y.T @ T)


class _ProbeTask(Forecast):
    """The last ``M`` inputs ``T`` (B, M) read from the layer's final outputs ``Y`` (B, H) by the
    least-squares probe of the same batch: output ``Y W(Y, T)``, MSE against ``T``."""

    def train_output(self, model, x, y, lengths):
        Y = _final_outputs(model, x)
        return Y @ _probe(Y, y)


def train_reconstruction(method: str, dt: Tuple[float, float], cfg: dict) -> float:
    """Trains the layer (Adam: 1e-3 on dt/A/B, 1e-2 on C, D) with the probe solved in closed form on
    each batch; then fits W on fresh sequences and returns the natural-log test MSE. S4 layers learn
    C~ for length L (``l_max``, as in B1). ``cfg["steps"] = 0`` gives the frozen-init result."""
    torch.manual_seed(0)
    layer = make_method(method, cfg["H"], cfg["N"], dt, l_max=cfg["L"] if method.startswith("s4-") else None)
    ssm = list(cast(Any, layer).ssm_parameters())
    other = [p for p in layer.parameters() if all(p is not q for q in ssm)]
    opt = torch.optim.Adam([{"params": ssm, "lr": 1e-3}, {"params": other, "lr": 1e-2}])
    L, M = cfg["L"], cfg["window"]

    def batch(seed: int, n: int) -> Tuple[Tensor, Tensor]:
        u = window_noise(L, cfg["band"], seed, n)
        return u, u[:, L - M:]

    if cfg["steps"]:
        fit(layer, Batches(lambda i: batch(100 + i, cfg["batch"]), cfg["steps"]), opt, _ProbeTask())
    with torch.no_grad():
        u, T = batch(1, cfg["n_fit"])
        W = _probe(_final_outputs(layer, u).double(), T.double())
        u, T = batch(2, cfg["n_test"])
        return math.log(float((_final_outputs(layer, u).double() @ W - T.double()).pow(2).mean()))


def _b2_config(quick: bool) -> dict:
    # Thesis: N = 256, H = 256, L = 4000, probe over the last 1000 inputs, white noise (band not given).
    # Full here: H = N = 64 (the probe sees as many outputs as there are states, as with H = N = 256),
    # noise band-limited to 100 Hz at dt = 1/L, i.e. 2 * 100 * 0.25 = 50 degrees of freedom in the
    # 1000-sample window: fewer than N, so an ideal N-dim memory of the window can hold it, but too many
    # for a smooth long memory. Narrower bands (4, 20 Hz: 2-10 dof) are reported as a sensitivity check.
    if quick:
        return dict(L=400, window=100, N=16, H=16, band=25.0, steps=3, batch=32, n_fit=64, n_test=64)
    return dict(L=4000, window=1000, N=64, H=64, band=100.0, steps=200, batch=64, n_fit=512, n_test=512)


B2_RUNS = [("s4-fout", (2e-3, 2e-3)), ("s4d-inv", (2e-3, 2e-3)), ("s4-fout", (1e-3, 1e-1)), ("s4d-inv", (1e-3, 1e-1))]


@claim("B2", "Reconstruction task: FouT beats S4D-Inv when dt fits the window, the order flips otherwise (Fig. 7.8)",
       "B")
def b2(quick: bool, out: Path) -> Result:
    """Fig. 7.8 / §7.5.8: log-MSE of reconstructing the last quarter of the input from ``y_L``."""
    cfg = _b2_config(quick)
    scale = 4000 / cfg["L"]
    logmse: Dict[str, float] = {}
    secs: Dict[str, float] = {}
    for method, dt in B2_RUNS:
        dts = (dt[0] * scale, dt[1] * scale)  # same window in samples as the thesis (no-op at L = 4000)
        t0 = time.time()
        logmse[f"{method} ({dt[0]:g},{dt[1]:g})"] = train_reconstruction(method, dts, cfg)
        secs[f"{method} ({dt[0]:g},{dt[1]:g})"] = round(time.time() - t0, 1)
    sensitivity = {}
    if not quick:  # frozen inits at (2e-3, 2e-3) for narrower bands: how the ordering depends on the signal
        for band in (4.0, 20.0):
            frozen = dict(cfg, band=band, steps=0)
            sensitivity[f"{band:g} Hz"] = {m: round(train_reconstruction(m, dt, frozen), 2)
                                           for m, dt in B2_RUNS[:2]}
    f_good, i_good = logmse["s4-fout (0.002,0.002)"], logmse["s4d-inv (0.002,0.002)"]
    f_bad, i_bad = logmse["s4-fout (0.001,0.1)"], logmse["s4d-inv (0.001,0.1)"]
    checks = {"fout beats inv by >= 1 nat at (2e-3,2e-3)": f_good <= i_good - 1.0, "flip at (1e-3,1e-1)": i_bad < f_bad}
    failed = [k for k, v in checks.items() if not v]
    ref = {"s4-fout (0.002,0.002)": -8.3296, "s4d-inv (0.002,0.002)": -6.0986, "s4-fout (0.001,0.1)": -3.0062,
           "s4d-inv (0.001,0.1)": -4.1402}
    fig = _bar_plot(logmse, out / "B2_reconstruction_logmse.png", "test log-MSE (nats)", "B2: reconstruction task", ref)
    return Result(
        thesis="(2e-3,2e-3): FouT -8.33, S4D-Inv -6.10; (1e-3,1e-1): FouT -3.01, S4D-Inv -4.14",
        ours="; ".join(f"{k} {v:.2f}" for k, v in logmse.items())
             + f" (natural log; L={cfg['L']}, window {cfg['window']}, N={cfg['N']}, H={cfg['H']} vs thesis 256, "
               f"{cfg['band']:g} Hz band-limited non-periodic noise, {cfg['steps']} steps, closed-form probe)"
             + ("; frozen at (2e-3,2e-3) with narrower bands, FouT / S4D-Inv: "
                + ", ".join(f"{b}: {v['s4-fout']:.2f} / {v['s4d-inv']:.2f}" for b, v in sensitivity.items())
                if sensitivity else ""),
        passed=not failed,
        criterion="FouT beats S4D-Inv by >= 1 nat at (2e-3,2e-3) and the order flips at (1e-3,1e-1)"
                  + (f" -- failed: {', '.join(failed)}" if failed else ""),
        details=dict(config=cfg, log_mse=logmse, seconds=secs, log_base="e", window_theta=WINDOW_THETA,
                     frozen_band_sensitivity=sensitivity,
                     noise="band-limited, drawn over 2L and cropped (non-periodic)",
                     probe="W solved by ridge least squares (1e-6 relative) on each batch while training, "
                           "then on n_fit fresh sequences for the test",
                     optimizer="Adam, lr 1e-3 on (dt, Lambda, P, B), 1e-2 on (C, D)"),
        figure=fig,
    )
