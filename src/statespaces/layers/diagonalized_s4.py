r"""The diagonal form of an S4 layer for fast inference: :class:`DiagonalizedS4`, built by
:meth:`S4.diagonalize <statespaces.layers.s4.S4.diagonalize>` (thesis §3.3: the eigendecomposition of the real
N x N bilinear ``dA`` per channel, Lemma 3.3 conjugation; Lemma 6.6 for when it is ill-conditioned).

Shapes: ``log_dA``, ``dB``, ``Cd`` (H, N) complex, ``V`` (H, N, N), ``D`` (H,), ``dt`` (H,) float64 or None;
state (B, H, N) complex in the eigenbasis. Its convolution, recurrence and chunked views are those of
:class:`~statespaces.layers.base.DiagonalSSM`, read from :meth:`DiagonalizedS4.diagonal_system`.
"""
from __future__ import annotations

from dataclasses import replace
from typing import NoReturn, Optional, Tuple

import torch

from .._linalg import solve
from ..discretize import undiscretize_diagonal
from .base import DiagonalSSM, DiagonalSystem, check_rate
from .modes import Modes

Tensor = torch.Tensor

__all__ = ["DiagonalizedS4"]


class DiagonalizedS4(DiagonalSSM):
    r"""A fixed diagonal form of an S4 layer (from :meth:`S4.diagonalize <statespaces.layers.s4.S4.diagonalize>`), for
    fast inference.

    ``N`` complex modes (all eigenvalues of the real N x N ``dA``, conjugate pairs included), output
    ``Re(C . x)``; buffers only, for one ``rate``. State (B, H, N) complex, in the eigenbasis.
    Built in the dtype of the S4 layer. ``.float()`` of a float64 form casts every buffer (the complex
    ones too, which ``nn.Module`` casts leave alone); a cast to a wider dtype than it was built in raises
    ``TypeError``, because a cast cannot add the digits the diagonalization lacks: call
    :meth:`S4.diagonalize` on a float64 layer instead. Not for ``save_pretrained`` (its buffers are its
    arguments): save the S4 layer and diagonalize after loading, or ``torch.save`` its ``state_dict``.

    ``dt`` (H,) float64 is the S4 layer's step at that rate, ``exp(log_dt) * rate`` (a buffer, so it
    follows ``state_dict`` and copies): with it :meth:`modes` has the S4 layer's continuous view
    (bilinear rule, ``A`` = the continuous eigenvalues), and the oscillator analysis reports the same
    frequencies and decay times per unit time as for the S4 layer. Built without ``dt`` (None) the
    step is unknown and the analysis reads the modes per step (``time_unit == "step"``).
    """

    log_dA: Tensor
    dB: Tensor
    Cd: Tensor
    V: Tensor
    dt: Optional[Tensor]
    discretization = "bilinear"

    def __init__(self, eig: Tensor, dB: Tensor, C: Tensor, V: Tensor, D: Tensor, rate: float,
                 dt: Optional[Tensor] = None) -> None:
        super().__init__()
        self.d_model, self.n_modes = eig.shape
        self.bidirectional = False
        self.rate = rate
        self.kernel_error = float("nan")
        self.register_buffer("log_dA", torch.log(eig))
        self.register_buffer("dB", dB)
        self.register_buffer("Cd", C)
        self.register_buffer("V", V)
        self.register_buffer("D", D)
        self.register_buffer("dt", None if dt is None else self._check_dt(dt))

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_modes={self.n_modes}, rate={self.rate}"

    def _apply(self, fn, recurse: bool = True):
        """Module casts and moves, with the complex buffers following the real dtype (class docstring)."""
        before = self.D.dtype
        super()._apply(fn, recurse)
        after = self.D.dtype
        if after == before:
            return self
        if torch.finfo(after).bits > torch.finfo(before).bits:
            self.D = self.D.to(before)
            raise TypeError(f"DiagonalizedS4 was computed in {before}; casting it to {after} cannot make it more "
                            f"accurate than {before}: call "
                            f"S4.diagonalize() on a {after} S4 layer instead")
        complex_dtype = {torch.float32: torch.complex64, torch.float64: torch.complex128}.get(after)
        if complex_dtype is None:
            raise TypeError(f"DiagonalizedS4 cannot run in {after}: keep float32 or float64 (use autocast around it)")
        for name in ("log_dA", "dB", "Cd", "V"):
            setattr(self, name, getattr(self, name).to(complex_dtype))
        return self

    def save_pretrained(self, save_directory) -> NoReturn:
        raise TypeError("a DiagonalizedS4 is not saved with save_pretrained (its tensors are its arguments): save "
                        "the S4 layer (S4.save_pretrained) and call diagonalize() after loading, or torch.save("
                        "form.state_dict())")

    def _check_dt(self, dt: Tensor) -> Tensor:
        """``dt`` as (H,) float64, positive and finite, or ValueError naming what was given."""
        dt = torch.as_tensor(dt).detach().to(torch.float64).reshape(-1)
        if dt.shape != (self.d_model,) or not bool(torch.isfinite(dt).all() & (dt > 0).all()):
            raise ValueError(f"DiagonalizedS4: dt must hold the {self.d_model} positive step sizes of the S4 layer "
                             f"(exp(log_dt) * rate, shape ({self.d_model},)); got shape {tuple(dt.shape)}")
        return dt

    def _check_rate(self, rate: float) -> None:
        if check_rate(rate) != self.rate:
            raise ValueError(f"this diagonal form was computed for rate={self.rate}; call S4.diagonalize(rate={rate})")

    def diagonal_system(self, rate: float = 1.0) -> DiagonalSystem:
        """The stored eigendecomposition of S4's bilinear dA at the rate it was built for (thesis §3.3): log dA, dB
        and C (1, H, M) in its eigenbasis, scale 1 (every mode stored, no conjugate pairing)."""
        self._check_rate(rate)
        return DiagonalSystem(log_dA=self.log_dA, dB=self.dB, C=self.Cd[None], scale=1.0)

    def modes(self, rate: float = 1.0) -> Modes:
        r"""The explicit-operator view: :meth:`DiagonalSSM.modes` with structure ``dplr`` (all N eigenvalues of
        the real ``dA``, so the oscillator analysis merges conjugate pairs as for the S4 layer) and ``cond``
        (H,) of the eigenbasis V; ``dt`` and ``A`` (H, N) from :meth:`_continuous_view`."""
        return replace(super().modes(rate), structure="dplr", cond=torch.linalg.cond(self.V).real.double())

    def _continuous_view(self, rate: float) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        """``(dt, A)`` (H, N): the S4 layer's step (rate included) and the continuous eigenvalues whose
        bilinear discretization gives ``exp(log_dA)`` (those of S4's A, to rounding); (None, None) without dt."""
        self._check_rate(rate)
        if self.dt is None:
            return None, None
        dt = self.dt.to(torch.float64)
        A = undiscretize_diagonal(self.log_dA.to(torch.complex128), dt, "bilinear")
        return dt.unsqueeze(-1).expand(-1, self.n_modes).clone(), A

    def from_dplr_state(self, state: Tensor) -> Tensor:
        """S4 half state (B, H, N/2) -> eigen-coordinates (B, H, N): ``V^{-1} [Re x; Im x]``."""
        xi = torch.cat([state.real, state.imag], -1).to(self.V.dtype)
        return solve(self.V, xi.unsqueeze(-1)).squeeze(-1)          # (B, H, N, 1): B folded into the columns
