"""Online function approximation with HiPPO (thesis ch. 4, §4.2.4, App. A.1.5, D.1-D.2).

:class:`HiPPO` runs the HiPPO memory update over a sampled signal and returns the
coefficient history; :meth:`HiPPO.reconstruct` turns coefficients back into the
signal over the memory window (Prop. 5.3 / eq. D.6).

Two modes
---------
``"lsi"`` (scale-invariant, default for ``legs``; also ``jacobi``/``chebyshev`` by
Cor. E.7): ``x' = (A x + B u)/t``. Sample ``k`` (0-based) is the input on
``[t_{k-1}, t_k]`` with timestamps ``t_k = k + 1`` by default (the recurrence
depends only on the ratios ``delta/t``, so any uniform step gives the same
coefficients; pass ``timestamps`` for irregular sampling). The state starts at
``t_0`` as the projection of a constant: ``x(t_0) = u_0 e_0`` (the thesis leaves
the start open because ``1/t`` is singular at 0; this is the exact solution for
an input constant on ``[0, t_0]``). Then GBT steps (App. A.1.5), see
:mod:`.legs_fast`; LegS uses the O(N) update by default.
The memory window is the whole history ``[0, t_k]``.

``"lti"`` (time-invariant, all measures): ``x' = A x + B u`` with
``(A, B) = transition(measure, N, theta)`` discretized once with step ``dt``
(GBT or ZOH, §2.3.1 / App. A.1.4), ``x_k = Abar x_{k-1} + Bbar u_k``, ``x_{-1} = 0``.
For windowed measures the window is the last ``theta`` time units (``theta/dt``
samples).

Sign convention: SSM sign ``x' = A x + B u`` (see :mod:`.measures`).
"""

from __future__ import annotations

import numbers
import warnings
from typing import Tuple

import torch
from torch import nn

from .._checks import all_finite, check_device
from ..discretize import GBT_ALPHA, discretize_dense
from ._checks import check_finite_tensor, check_measure, check_positive, check_state_size, check_system
from .basis import basis
from .legs_fast import INPUT_GAINS, legs_gbt_coefficients, legs_step_dense, legs_step_fast
from .measures import MEASURES, measure_params, transition
from .polys import jacobi_01, jacobi_01_weight, legendre_01

__all__ = ["HiPPO", "MODES", "DISCRETIZATIONS", "LSI_MEASURES", "discretize"]

MODES = ("lsi", "lti")
LSI_MEASURES = ("legs", "jacobi", "chebyshev")
#: The named GBT rules (alphas from :data:`statespaces.discretize.GBT_ALPHA`) and ZOH.
DISCRETIZATIONS = (*GBT_ALPHA, "zoh")
_F64 = torch.float64


def _check_discretization(disc) -> tuple[str, float | None]:
    """Return ``(name, alpha)``; ``alpha`` is None for ZOH."""
    if isinstance(disc, numbers.Real) and not isinstance(disc, bool):
        alpha = float(disc)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"GBT discretization alpha must be in [0, 1], got {alpha}")
        return "gbt", alpha
    name = check_measure(disc, DISCRETIZATIONS, what="discretization (or a GBT alpha in [0, 1])")
    return name, GBT_ALPHA.get(name)


def discretize(A: torch.Tensor, B: torch.Tensor, dt: float, discretization="bilinear") -> Tuple[torch.Tensor,
               torch.Tensor]:
    """Discretize an LTI system ``(A, B)`` with step ``dt`` (thesis §2.3.1, App. A.1.4).

    ``discretization``: ``"forward_euler"`` / ``"backward_euler"`` / ``"bilinear"``
    (GBT with alpha = 0, 1, 1/2), a GBT ``alpha`` in [0, 1], or ``"zoh"``.
    ``A`` (N, N) and ``B`` (N,): finite floating tensors. Returns ``(Abar (N, N), Bbar (N,))``.
    """
    A, B = check_system(A, B)
    dt = check_positive(dt, "dt")
    name, alpha = _check_discretization(discretization)
    if name == "zoh":
        return discretize_dense(A, B, dt, "zoh")
    return discretize_dense(A, B, dt, "gbt", alpha)


def _lsi_reconstruction_basis(measure: str, N: int, y: torch.Tensor, params: dict) -> torch.Tensor:
    """``q_n(y)`` on the history fraction ``y = s/t`` in [0, 1] (Cor. E.7): ``L_n(y)`` for
    LegS, ``w(y) p_n(y)`` for Jacobi/Chebyshev. Shape ``(N, *y.shape)``."""
    if measure == "legs":
        return legendre_01(N, y)
    a, b = (-0.5, -0.5) if measure == "chebyshev" else (params["alpha"], params["beta"])
    return jacobi_01(N, y, a, b) * jacobi_01_weight(y, a, b)


def warn_forward_euler_lsi(A: torch.Tensor, what: str, stacklevel: int = 3) -> None:
    """Warn when forward Euler amplifies a scale-invariant recurrence ``x' = (A x + B u)/t``: a step from ``t``
    to ``t + delta`` multiplies the state by ``I + (delta/t) A``, whose eigenvalues ``1 + (delta/t) A_nn``
    (``A`` lower triangular) exceed 1 in magnitude while ``delta/t > 2 / max|A_nn|``; ``delta/t = 1`` at the
    first default step. ``what`` names the module in the message."""
    d = float(-torch.diagonal(A).min())
    growth = abs(1.0 - d)
    if growth > 1.0:
        warnings.warn(
            f"{what} with forward Euler: a step multiplies the state by I + (delta/t) A, with an eigenvalue of "
            f"magnitude {growth:.4g} at the first step (delta/t = 1 with the default timestamps) and above 1 while "
            f"delta/t > {2.0 / d:.3g} (the first ~{d / 2:.0f} steps): rounding errors grow by up to that factor per "
            "step, into garbage or inf/NaN for large N; use discretization='bilinear' or 'backward_euler'",
            RuntimeWarning, stacklevel=stacklevel)


class HiPPO(nn.Module):
    """Online HiPPO projection of a signal onto ``N`` basis functions.

    Args:
        N: state size (number of coefficients).
        measure: one of :data:`MEASURES` (default ``"legs"``).
        mode: ``"lsi"`` (default for legs) or ``"lti"`` (default otherwise;
            ``"lsi"`` only for :data:`LSI_MEASURES`).
        discretization (str | float): ``"bilinear"`` (default), ``"forward_euler"``,
            ``"backward_euler"``, a GBT alpha in [0, 1], or ``"zoh"`` (LTI only). Forward Euler
            amplifies the first steps of the ``lsi`` recurrence (a ``RuntimeWarning`` says by how much).
        dt: sampling step of the LTI mode (required there; refused by ``lsi``, which is
            step-size free: pass ``timestamps`` to ``forward`` instead).
        theta: timescale / window of the LTI system (default 1.0; ``lsi`` has no timescale and
            refuses any other value).
        fast: use the O(N) LegS update (default True for LSI-LegS).
        input_gain: ``"gbt"`` (default) or ``"thesis"`` input weighting of the LSI
            step (see :mod:`.legs_fast`).
        **params (float): measure parameters (``alpha`` for lagt; ``alpha, beta`` for jacobi).

    Shapes: ``forward(u)`` takes ``u`` of shape ``(B, L)`` or ``(B, L, H)`` and returns
    the coefficient history ``(B, L, N)`` / ``(B, L, H, N)`` (entry ``k`` = state after
    reading sample ``k``), or only the final state ``(B, [H,] N)`` with
    ``return_history=False``. Computation is float64; the result has ``u``'s dtype. The matrices
    ``A (N, N)``, ``B (N,)`` (and ``Abar``, ``Bbar`` in ``lti``) are float64 buffers that stay float64
    when the module is cast (``.float()``, ``.half()``, ``.to(dtype)``); device moves apply to them.
    """

    A: torch.Tensor
    B: torch.Tensor
    Abar: torch.Tensor
    Bbar: torch.Tensor
    #: the buffers that dtype casts leave in float64 (see :meth:`_apply`)
    _FLOAT64_BUFFERS = ("A", "B", "Abar", "Bbar")

    def __init__(self, N: int, measure: str = "legs", mode: str | None = None,
                 discretization="bilinear", dt: float | None = None, theta: float = 1.0,
                 fast: bool | None = None, input_gain: str = "gbt", **params):
        super().__init__()
        self.N = check_state_size(N)
        self.measure = check_measure(measure, MEASURES)
        self.params = measure_params(self.measure, params)
        if mode is None:
            mode = "lsi" if self.measure == "legs" else "lti"
        self.mode = check_measure(mode, MODES, what="mode")
        if self.mode == "lsi" and self.measure not in LSI_MEASURES:
            raise ValueError(
                f"mode 'lsi' is only defined for measures {', '.join(LSI_MEASURES)}; "
                f"got {self.measure!r} (use mode='lti')"
            )
        self.disc_name, self.alpha = _check_discretization(discretization)
        self.theta = check_positive(theta, "theta")
        self.input_gain = check_measure(input_gain, INPUT_GAINS, what="input_gain")
        A, B = transition(self.measure, self.N, theta=self.theta if self.mode == "lti" else 1.0,
                          **self.params)
        self.register_buffer("A", A)
        self.register_buffer("B", B)
        if self.mode == "lsi":
            if self.disc_name == "zoh":
                raise ValueError("discretization 'zoh' is not available for mode 'lsi'; "
                                 "use 'bilinear', 'forward_euler', 'backward_euler' or a GBT alpha")
            if dt is not None or self.theta != 1.0:
                raise ValueError(
                    f"dt and theta apply to mode 'lti' (got dt={dt!r}, theta={theta!r}); mode 'lsi' has no step "
                    "size and no timescale (its recurrence depends only on delta/t): leave them out, pass "
                    "timestamps to forward for irregular sampling, or use mode='lti'")
            self.dt = None
            self.fast = (self.measure == "legs") if fast is None else bool(fast)
            if self.fast and self.measure != "legs":
                raise ValueError("the O(N) fast update exists only for measure 'legs'")
            if self.alpha == 0.0:
                self._warn_forward_euler()
        else:
            if dt is None:
                raise ValueError(f"dt (sampling step > 0) is required for mode 'lti' "
                                 f"(measure {self.measure!r}, theta={self.theta})")
            self.dt = check_positive(dt, "dt")
            if fast:
                raise ValueError("fast=True is only available for measure 'legs' in mode 'lsi'")
            self.fast = False
            Abar, Bbar = discretize(A, B, self.dt, discretization)
            self.register_buffer("Abar", Abar)
            self.register_buffer("Bbar", Bbar)

    def _warn_forward_euler(self) -> None:
        warn_forward_euler_lsi(self.A, f"HiPPO(N={self.N}, {self.measure!r}, mode='lsi')", stacklevel=4)

    @property
    def _disc_label(self) -> str:
        return self.disc_name if self.alpha is None or self.disc_name != "gbt" else f"GBT alpha={self.alpha}"

    def _apply(self, fn, recurse=True):
        """``nn.Module._apply`` (behind ``.to``, ``.float()``, ``.half()``, ``.cuda()``...) that moves the
        matrices to the new device but keeps them float64 at full precision (the recurrence is float64)."""
        kept = {n: self._buffers[n] for n in self._FLOAT64_BUFFERS if self._buffers.get(n) is not None}
        super()._apply(fn, recurse)
        for n, t in kept.items():
            self._buffers[n] = t.to(getattr(self, n).device)
        return self

    def extra_repr(self) -> str:
        return (f"N={self.N}, measure={self.measure!r}, mode={self.mode!r}, discretization={self._disc_label}, "
                f"dt={self.dt}, theta={self.theta}, fast={self.fast}")

    # ------------------------------------------------------------------ forward
    def forward(self, u: torch.Tensor, timestamps: torch.Tensor | None = None,
                return_history: bool = True) -> torch.Tensor:
        r"""Project the signal ``u`` online: ``c_k`` = coefficients of the measure's projection of
        ``u_0 .. u_k`` (thesis §4.2: LegT Thm 4.2, LegS Thm 4.3), by the discretized recurrence (§4.2.4).

        Args:
            u: samples (B, L) or (B, L, H), finite.
            timestamps: ``lsi`` mode only: (L,) strictly increasing end times of the samples
                (default 1, 2, ..., L); the LSI measure starts at 0.
            return_history: return every state (default) or only the last one.

        Returns:
            (B, L, N) / (B, L, H, N), or (B, N) / (B, H, N) with ``return_history=False``, in
            ``u``'s dtype (computed in float64).

        Raises:
            FloatingPointError: the recurrence overflowed (e.g. forward Euler in mode ``lsi`` at large N)
                or the result leaves the range of ``u``'s dtype.
        """
        u = check_finite_tensor(u, "u")
        check_device("u", u, self.A.device)
        if u.dim() not in (2, 3):
            raise ValueError(f"u must have shape (B, L) or (B, L, H), got {tuple(u.shape)}")
        if u.shape[1] < 1:
            raise ValueError("u must contain at least one time step (L >= 1)")
        out_dtype = u.dtype
        x_in = u.to(_F64)
        squeeze_h = x_in.dim() == 2
        if squeeze_h:
            x_in = x_in.unsqueeze(-1)
        Bsz, L, H = x_in.shape
        seq = x_in.permute(1, 0, 2)  # (L, B, H)
        if self.mode == "lsi":
            ts = self._timestamps(timestamps, L)
            hist = self._run_lsi(seq, ts, return_history)
        else:
            if timestamps is not None:
                raise ValueError("timestamps are only supported in mode 'lsi'")
            hist = self._run_lti(seq, return_history)
        if return_history:
            out = hist.permute(1, 0, 2, 3)  # (B, L, H, N)
            if squeeze_h:
                out = out.squeeze(2)
        else:
            out = hist.squeeze(1) if squeeze_h else hist
        if not all_finite(out):
            raise FloatingPointError(self._overflow_message(out))
        cast = out.to(out_dtype)
        if not all_finite(cast):
            raise FloatingPointError(f"HiPPO: the coefficients (up to {float(out.abs().max()):.3g}) overflow "
                                     f"{out_dtype}; pass u in float32 or float64")
        return cast

    def _overflow_message(self, out: torch.Tensor) -> str:
        """Why a finite input gave non-finite float64 coefficients, and what to do."""
        if self.alpha is not None and self.alpha < 0.5:     # explicit-leaning GBT: not A-stable
            fix = "use discretization='bilinear' or 'backward_euler'" + (" or a smaller dt" if self.dt else "")
        else:
            fix = "rescale the input"
        step = "" if self.dt is None else f", dt={self.dt}"
        return (f"HiPPO: {int((~torch.isfinite(out)).sum())} of {out.numel()} coefficients are not finite for a "
                f"finite input: the recurrence (discretization {self._disc_label}, mode {self.mode!r}{step}) "
                f"overflowed float64; {fix}")

    def _timestamps(self, timestamps, L: int) -> torch.Tensor:
        if timestamps is None:
            return torch.arange(1, L + 1, dtype=_F64)
        ts = check_finite_tensor(timestamps, "timestamps").to(_F64)
        if ts.dim() != 1 or ts.shape[0] != L:
            raise ValueError(f"timestamps must have shape (L,) = ({L},), got {tuple(ts.shape)}")
        if ts[0] <= 0 or (L > 1 and bool((ts[1:] <= ts[:-1]).any())):
            raise ValueError("timestamps must be positive and strictly increasing "
                             "(t_k = end time of sample k; the LSI measure starts at 0)")
        return ts

    def _run_lsi(self, seq: torch.Tensor, ts: torch.Tensor, return_history: bool) -> torch.Tensor:
        L, Bsz, H = seq.shape
        x = torch.zeros(Bsz, H, self.N, dtype=_F64, device=seq.device)
        x[..., 0] = seq[0]
        hist = [x]
        tl = ts.tolist()
        assert self.alpha is not None  # mode 'lsi' rejects zoh in __init__
        for k in range(1, L):
            a, b, g = legs_gbt_coefficients(tl[k - 1], tl[k], self.alpha, self.input_gain)
            if self.fast:
                x = legs_step_fast(x, seq[k], a, b, g)
            elif self.measure == "legs":
                x = legs_step_dense(x, seq[k], a, b, g, self.A, self.B)
            else:
                x = self._dense_gbt(x, seq[k], a, b, g)
            if return_history:
                hist.append(x)
        return torch.stack(hist) if return_history else x

    def _dense_gbt(self, x, u, a, b, g):
        N = self.N
        eye = torch.eye(N, dtype=_F64, device=x.device)
        y = x @ (eye + a * self.A).T + g * u.unsqueeze(-1) * self.B
        sol = torch.linalg.solve_triangular(eye - b * self.A, y.reshape(-1, N).T, upper=False)
        return sol.T.reshape(y.shape)

    def _run_lti(self, seq: torch.Tensor, return_history: bool) -> torch.Tensor:
        L, Bsz, H = seq.shape
        AT = self.Abar.T.contiguous()
        Bb = self.Bbar
        x = torch.zeros(Bsz, H, self.N, dtype=_F64, device=seq.device)
        hist = torch.empty(L if return_history else 0, Bsz, H, self.N, dtype=_F64, device=seq.device)
        for k in range(L):
            x = x @ AT + seq[k].unsqueeze(-1) * Bb
            if return_history:
                hist[k] = x
        return hist if return_history else x

    # ------------------------------------------------------------ reconstruct
    def reconstruct(self, coeffs: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """Rebuild the signal over the memory window from coefficients ``(..., N)``.

        * ``lsi``: the whole history ``[0, t]``, evaluated at the ``length`` cell
          midpoints ``y_j = (j + 1/2)/length`` of ``s = y t`` (with the default
          ``t_k = k + 1`` and ``length = k + 1`` these are the samples ``0..k``).
          ``length`` is required.
        * ``lti``: the last ``length`` samples before "now" at lags
          ``tau_j = (j + 1/2) dt`` (sample midpoints); default ``length =
          round(theta/dt)`` for windowed measures (required otherwise).

        Returns ``(..., length)``, ordered oldest -> newest.
        """
        if not isinstance(coeffs, torch.Tensor) or coeffs.shape[-1:] != (self.N,):
            raise ValueError(f"coeffs must be a tensor of shape (..., {self.N})")
        coeffs = check_finite_tensor(coeffs, "coeffs")      # integers were truncated, complex lost its imaginary part
        if length is None:
            if self.mode == "lti" and self.measure in ("legt", "lmu", "fout"):
                assert self.dt is not None  # required in mode 'lti'
                length = max(1, int(round(self.theta / self.dt)))
            else:
                raise ValueError(f"length is required to reconstruct measure {self.measure!r} "
                                 f"in mode {self.mode!r} (its memory is not a finite window)")
        length = check_state_size(length, "length")
        if self.mode == "lsi":
            y = (torch.arange(length, dtype=_F64) + 0.5) / length
            Q = _lsi_reconstruction_basis(self.measure, self.N, y, self.params)  # (N, length)
        else:
            assert self.dt is not None  # required in mode 'lti'
            tau = (torch.arange(length - 1, -1, -1, dtype=_F64) + 0.5) * self.dt
            Q = basis(self.measure, self.N, tau, theta=self.theta, kind="reconstruction", **self.params)
        return (coeffs.to(_F64) @ Q.to(coeffs.device)).to(coeffs.dtype)
