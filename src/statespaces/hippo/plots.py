"""Matplotlib figures for HiPPO (imported lazily, Agg backend; needs the ``plot`` extra).

* :func:`plot_reconstruction` -- a signal and its reconstruction per measure (Fig. 4.3 style).
* :func:`plot_basis` -- the kernel basis functions ``K_n`` (and the measure) of a measure
  (Table 5.1 / Fig. 5.1 style).

Both return the ``matplotlib.figure.Figure`` and save it when ``path`` is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

__all__ = ["plot_reconstruction", "plot_basis"]


def _pyplot():
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("statespaces.hippo.plots needs matplotlib (pip install statespaces[plot])") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path):
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight")


def plot_reconstruction(x: Sequence[float] | torch.Tensor, signal, reconstructions: Mapping[str, torch.Tensor],
                        title: str = "HiPPO online reconstruction", path=None) -> Any:
    """Plot ``signal`` against each entry of ``reconstructions`` (label -> values on ``x``).

    One panel per reconstruction; the panel title shows its MSE.
    """
    plt = _pyplot()
    xs = torch.as_tensor(x).detach().cpu().numpy()
    sig = torch.as_tensor(signal).detach().cpu().numpy()
    n = max(1, len(reconstructions))
    fig, axes = plt.subplots(n, 1, figsize=(9, 2.2 * n), sharex=True, squeeze=False)
    for ax, (label, rec) in zip(axes[:, 0], reconstructions.items()):
        r = torch.as_tensor(rec).detach().cpu().numpy()
        mse = float(((r - sig) ** 2).mean())
        ax.plot(xs, sig, color="k", lw=1.2, label="signal")
        ax.plot(xs, r, color="tab:red", lw=1.0, ls="--", label="reconstruction")
        ax.set_title(f"{label}   (MSE {mse:.2e})", fontsize=9)
        ax.legend(loc="upper left", fontsize=7)
    axes[-1, 0].set_xlabel("time")
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)
    return fig


def plot_basis(measure: str, N: int = 6, t_max: float | None = None, theta: float = 1.0, path=None,
               num: int = 800, **params) -> Any:
    """Plot the first ``N`` kernel basis functions ``K_n(t) = e^{tA}B`` of ``measure``
    (closed form, :func:`statespaces.hippo.basis`) together with the measure."""
    from .basis import basis, weight

    plt = _pyplot()
    if t_max is None:
        t_max = 1.25 * theta if measure in ("legt", "lmu", "fout") else 5.0 * theta
    t = torch.linspace(0.0, t_max, num, dtype=torch.float64)
    K = basis(measure, N, t, theta=theta, kind="kernel", **params).numpy()
    w = weight(measure, t, theta=theta, **params).numpy()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    tn = t.numpy()
    for n in range(N):
        ax.plot(tn, K[n], lw=1.0, label=f"$K_{{{n}}}$")
    ax.plot(tn, w, color="k", lw=2.0, ls=":", label=r"measure $\omega$")
    ax.set_xlabel("lag t")
    ax.set_title(f"HiPPO-{measure} kernel basis $K_n = e^{{tA}}B$ (closed form, N -> inf; theta={theta:g})")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    _save(fig, path)
    return fig
