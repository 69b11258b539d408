r"""Figures and tables of the explicit operator (see :mod:`statespaces.analysis.oscillators`).

matplotlib is imported lazily and used through ``matplotlib.figure.Figure`` with the Agg canvas,
so no global pyplot state or GUI backend is touched. Every function writes one PNG.

* :func:`plot_eigenvalues` -- discrete eigenvalues with the unit circle, and the continuous
  (effective, ``s = log(lambda)/dt``) eigenvalues with the imaginary axis; nominal ones hollow.
* :func:`plot_kernels` -- Green's function per channel (LinOSS: diagonal entries K[h, h]).
* :func:`plot_frequency_response` -- ``|H(e^{i w})|`` in dB per channel (LinOSS: diagonal entries
  and the largest singular value of the MIMO response).
* :func:`plot_oscillator_table` -- the strongest oscillators as a table.
* :func:`analyze_module` / :func:`analyze_checkpoint` -- all of the above for every supported SSM
  layer in a model, plus ``<layer>_oscillators.csv``, ``<layer>_operator.npz`` (eigenvalues,
  residues, D) and ``analysis.json``.
"""
from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Set, Tuple, Union

import torch
from torch import nn

from .._checks import file_in_the_way
from .extraction import layer_analyses, supported_layer, unsupported_reason
from .records import OscillatorAnalysis

PathLike = Union[str, os.PathLike]

__all__ = [
    "plot_eigenvalues", "plot_kernels", "plot_frequency_response", "plot_oscillator_table",
    "write_table", "analyze_module", "analyze_checkpoint", "load_model",
]


def _figure(nrows: int = 1, ncols: int = 1, size=(6.0, 4.5)):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("the analysis figures need matplotlib: pip install matplotlib (statespaces analyze "
                          "--no-plots, or plots=False, writes the tables without it)") from None

    fig = Figure(figsize=size, dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _save(fig, path: PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    return path


def _title(an: OscillatorAnalysis) -> str:
    direction = "" if an.direction == "causal" else f", {an.direction}"
    return f"{an.name or an.kind} ({an.kind}, {an.discretization}{direction})"


def plot_eigenvalues(an: OscillatorAnalysis, path: PathLike) -> Path:
    """Discrete eigenvalues (with the unit circle) and continuous ones (with the imaginary axis)."""
    fig, ax = _figure(1, 2, size=(11.0, 4.8))
    lam = an.eig.flatten()
    t = torch.linspace(0, 2 * math.pi, 400)
    a0 = ax[0, 0]
    a0.plot(torch.cos(t), torch.sin(t), color="0.6", lw=1, label="unit circle")
    a0.scatter(lam.real, lam.imag, s=10, c="C0", label="lambda")
    a0.scatter(lam.real, -lam.imag, s=10, c="C0", alpha=0.3, label="conjugate")
    a0.axhline(0, color="0.85", lw=0.8)
    a0.axvline(0, color="0.85", lw=0.8)
    a0.set_aspect("equal", adjustable="datalim")
    a0.set_xlabel("Re lambda")
    a0.set_ylabel("Im lambda")
    a0.set_title(f"discrete eigenvalues, max |lambda| = {float(lam.abs().max()):.4f}")
    a0.legend(loc="lower left", fontsize=8)
    a1 = ax[0, 1]
    s = an.eig_continuous.flatten()
    nom = an.eig_nominal.flatten()
    a1.axvline(0, color="0.6", lw=1, label="imaginary axis")
    a1.scatter(s.real, s.imag, s=10, c="C1", label="effective s = log(lambda)/dt")
    a1.scatter(nom.real, nom.imag, s=16, facecolors="none", edgecolors="C2", label="nominal (ODE)")
    a1.set_xlabel("Re s (decay rate)")
    a1.set_ylabel(f"Im s (rad / {'step' if an.time_unit == 'step' else 'unit time'})")
    if bool((s.imag > 0).any()) and float(s.imag.max()) / max(float(s.imag[s.imag > 0].min()), 1e-300) > 100:
        a1.set_yscale("symlog", linthresh=max(float(s.imag[s.imag > 0].min()), 1e-6))
    a1.set_title("continuous eigenvalues")
    a1.legend(loc="best", fontsize=8)
    fig.suptitle(_title(an))
    return _save(fig, path)


def _channels(an: OscillatorAnalysis, max_channels: int) -> List[int]:
    return list(range(min(an.d_model, max_channels)))


def plot_kernels(an: OscillatorAnalysis, path: PathLike, L: int = 512, max_channels: int = 8) -> Path:
    """Closed-form kernel K[l] per channel (LinOSS: K[h, h, l])."""
    K = an.kernel(L)
    fig, ax = _figure(size=(8.0, 4.5))
    a = ax[0, 0]
    lags = torch.arange(L)
    if an.backward:                          # entry l acts on lag -(l + lag_offset)
        lags = -(lags + an.lag_offset)
    for h in _channels(an, max_channels):
        k = K[h, h] if an.mimo else K[h]
        a.plot(lags.numpy(), k.numpy(), lw=1, label=f"ch {h}")
    a.set_xlabel("lag l (steps; negative: the backward, anti-causal direction)" if an.backward else "lag l (steps)")
    a.set_ylabel("K[l]" if not an.mimo else "K[h, h, l]")
    a.set_title(f"Green's function (kernel) per channel - {_title(an)}")
    a.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def plot_frequency_response(an: OscillatorAnalysis, path: PathLike, L: int = 2048, max_channels: int = 8) -> Path:
    """|H(e^{i w})| in dB for w in [0, pi] (the length-L kernel plus D)."""
    w, Hf = an.frequency_response(L=L)
    fig, ax = _figure(size=(8.0, 4.5))
    a = ax[0, 0]
    db = lambda x: 20 * torch.log10(x.abs().clamp_min(1e-12))  # noqa: E731
    for h in _channels(an, max_channels):
        a.plot(w.numpy(), db(Hf[h, h] if an.mimo else Hf[h]).numpy(), lw=1, label=f"ch {h}")
    if an.mimo:
        smax = torch.linalg.matrix_norm(Hf.permute(2, 0, 1), ord=2)
        a.plot(w.numpy(), db(smax).numpy(), color="k", lw=1.5, label="sigma_max")
    a.set_xlabel("frequency w (rad / step)")
    a.set_ylabel("|H(e^{iw})| (dB)")
    a.set_xlim(0, math.pi)
    a.set_title(f"frequency response - {_title(an)}")
    a.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def plot_oscillator_table(an: OscillatorAnalysis, path: PathLike, top: int = 16) -> Path:
    """Table of the ``top`` strongest oscillators (by amplitude, times gain for LinOSS); a ``relaxation`` column
    marks the first-order modes (real eigenvalue), which are no oscillators."""
    rows = an.table()
    key = (lambda r: r["amplitude"] * r["gain"]) if an.mimo else (lambda r: r["amplitude"])
    rows = sorted(rows, key=key, reverse=True)[:top]
    first = ["oscillator"] if an.mimo else ["channel", "mode"]
    cols = first + ["natural_frequency", "damping_ratio", "relaxation", "damped_frequency", "decay_time", "eig_abs",
                    "amplitude", "phase"]
    if an.mimo:
        cols.append("gain")

    def fmt(v: Any) -> str:
        if isinstance(v, bool):                       # relaxation: a real mode, not an oscillator
            return "yes" if v else ""
        return f"{v:d}" if isinstance(v, int) else f"{v:.4g}"

    cells = [[fmt(r[c]) for c in cols] for r in rows]
    fig, ax = _figure(size=(1.15 * len(cols) + 1, 0.3 * len(rows) + 1.2))
    a = ax[0, 0]
    a.axis("off")
    tab = a.table(cellText=cells, colLabels=[c.replace("_", "\n") for c in cols], loc="center", cellLoc="right")
    tab.auto_set_font_size(False)
    tab.set_fontsize(8)
    tab.scale(1.0, 1.25)
    a.set_title(f"strongest oscillators - {_title(an)}", fontsize=9)
    return _save(fig, path)


def write_table(an: OscillatorAnalysis, path: PathLike) -> Path:
    """All oscillator rows as CSV."""
    rows = an.table()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    return path


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name) or "layer"


def analyze_module(model: nn.Module, out_dir: PathLike, L: int = 512, plots: bool = True) -> Dict[str, Any]:
    r"""Analyze every supported SSM layer inside ``model`` (walks ``named_modules``).

    Writes, per layer ``<name>`` (per direction of a bidirectional layer: ``<name>.forward``,
    ``<name>.backward``): ``<name>_eigenvalues.png``, ``<name>_kernel.png``,
    ``<name>_frequency_response.png``, ``<name>_oscillators.png`` (if ``plots``),
    ``<name>_oscillators.csv``, ``<name>_operator.npz``; and ``analysis.json`` for all layers.
    An SSM layer that cannot be analyzed (a type without an oscillator form, or a system the
    analysis cannot form, e.g. an S4 layer whose C cannot be recovered) is listed under
    ``"skipped"`` with the reason.

    Returns the JSON summary (also with the written file paths).

    Raises:
        TypeError: if ``model`` is not an ``nn.Module`` or contains no SSM layer.
        ValueError: if it contains SSM layers but none could be analyzed (the message gives each reason).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"analyze_module needs an nn.Module, got {type(model).__name__}")
    import numpy as np

    out = Path(out_dir)
    blocker = file_in_the_way(out, itself=True)
    if blocker is not None:
        raise ValueError(f"{out}: {blocker} is a file; give a folder for the analysis (new, or one of its own)")
    if plots:
        _figure()                    # matplotlib missing: named before anything is written (no empty folder)
    out.mkdir(parents=True, exist_ok=True)
    layers: List[Tuple[str, nn.Module]] = []
    skipped: List[Dict[str, str]] = []
    covered: Set[int] = set()
    for n, m in model.named_modules():
        name = n or type(m).__name__
        if id(m) in covered:
            continue
        if supported_layer(m):
            layers.append((name, m))
            reverse = getattr(m, "reverse", None)        # LinOSS concat: analyzed as the backward direction
            if getattr(m, "bidirectional", False) and isinstance(reverse, nn.Module):
                covered.update(id(x) for x in reverse.modules())
        elif (reason := unsupported_reason(m)) is not None:
            skipped.append({"layer": name, "reason": reason})
    if not layers and not skipped:
        kinds = sorted({type(m).__name__ for m in model.modules()})
        raise TypeError(f"no supported SSM layer (S4D, LinOSS, S4) found in the model; module types: {kinds}")
    analyses = []
    for name, layer in layers:
        try:
            analyses += layer_analyses(layer, name=name)
        except (ValueError, RuntimeError) as e:           # e.g. S4 with l_max: C~ cannot be inverted
            skipped.append({"layer": name, "reason": f"{type(layer).__name__}: " + " ".join(str(e).split())})
    if not analyses:
        raise ValueError("no SSM layer of the model could be analyzed: "
                         + "; ".join(f"{s['layer']}: {s['reason']}" for s in skipped))
    summary: Dict[str, Any] = {"layers": [], "skipped": skipped}
    for an in analyses:
        name = an.name
        stem = _safe(name)
        files = []
        if plots:
            files += [
                plot_eigenvalues(an, out / f"{stem}_eigenvalues.png"),
                plot_kernels(an, out / f"{stem}_kernel.png", L=L),
                plot_frequency_response(an, out / f"{stem}_frequency_response.png", L=max(L, 1024)),
                plot_oscillator_table(an, out / f"{stem}_oscillators.png"),
            ]
        files.append(write_table(an, out / f"{stem}_oscillators.csv"))
        arrays: Dict[str, Any] = {"eig": an.eig.numpy(), "log_eig": an.log_eig.numpy(), "residue": an.residue.numpy(),
                  "dt": an.dt.numpy(), "D": an.D.numpy(), "eig_nominal": an.eig_nominal.numpy()}
        if an.ramp is not None:
            arrays["ramp"] = an.ramp.numpy()
        np.savez(out / f"{stem}_operator.npz", **arrays)
        files.append(out / f"{stem}_operator.npz")
        entry = an.summary()
        entry["files"] = [str(p) for p in files]
        summary["layers"].append(entry)
    with open(out / "analysis.json", "w") as f:
        json.dump(summary, f, indent=2)
    summary["json"] = str(out / "analysis.json")
    return summary


def load_model(path: PathLike) -> nn.Module:
    """Rebuild the model of a trainer checkpoint directory (safetensors + ``meta.json``; nothing is unpickled)."""
    from ..train.evaluation import load_trained

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"no checkpoint directory at {path} "
                                f"(expected a directory written by `statespaces train`)")
    return load_trained(str(path))[0]


def analyze_checkpoint(path: Union[PathLike, nn.Module], out_dir: PathLike, L: int = 512,
                       plots: bool = True) -> Dict[str, Any]:
    r"""Analyze a checkpoint (see :func:`load_model`) or an ``nn.Module`` directly; writes the files
    of :func:`analyze_module` into ``out_dir`` and returns its summary."""
    if isinstance(path, nn.Module):
        return analyze_module(path, out_dir, L=L, plots=plots)
    model = load_model(path)
    model.eval()
    return analyze_module(model, out_dir, L=L, plots=plots)
