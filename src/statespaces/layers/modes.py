r"""The explicit-operator view of a layer: its modes (thesis §3.2, eq. 3.2; §3.4.5; LinOSS seed 001).

Every linear time-invariant layer here is, after discretization, a sum of geometric modes. The
:class:`Modes` of a layer at a ``rate`` reproduce its convolution kernel exactly:

    SISO (S4D, S4):    K[k, h, l]    = Re sum_m C[k, h, m] r[h, m] B[h, m] lambda[h, m]^l
    MIMO (LinOSS, S5): K[k, h, j, l] = Re sum_m C[k, h, m] r[m]    B[m, j] lambda[m]^l

for lags ``l = 0 .. L-1``, plus ``D`` on the skip (and, for a bidirectional S5, a lag-0 matrix
``feedthrough``: its backward scan reads the current input too), with ``lambda = exp(log_eig)`` the
**discrete** eigenvalues (the step ``dt`` and the rule are recorded alongside; ``A`` holds the continuous
eigenvalues of the layer's ODE before discretization). ``B`` are the *discrete* input weights (for
S4D ``dB``), ``r`` an optional per-mode residue (None: 1), and ``k`` the direction (0 causal; 1 the
anti-causal kernel of a bidirectional layer, lags -1..-L). Every factor of 2 of a conjugate-pair
layer (output ``2 Re``, §3.4.5) is folded into ``C``. A mode may carry a Jordan part (a double
eigenvalue, LinOSS with ``A = 0``): ``Re C ramp B (l + 1) lambda^l`` is added.

The layers' ``modes(rate)`` return this object in float64/complex128 whatever their own dtype,
and each layer class has a ``from_modes(modes, ...)`` constructor whose forward (at rate 1)
reproduces the given kernel; see ``docs/modes.md``.

The modes are exact by construction for S4D and LinOSS. For S4 they come from an eigendecomposition,
which is only as accurate as the eigenbasis is well conditioned (Lemma 6.6); ``S4.modes`` therefore
measures the kernel its modes define against the layer's own and records the relative error per
channel in :attr:`Modes.kernel_error`, with a :class:`ModesAccuracyWarning` above :data:`MODES_TOL`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .._checks import check_length

Tensor = torch.Tensor

#: What a :class:`Modes` was read from: a diagonal SSM, the diagonalised DPLR form of S4, or
#: LinOSS-like banks of 2x2 oscillator blocks (modes listed as all ``lambda_p`` then all conjugates).
MODE_STRUCTURES = ("diagonal", "dplr", "oscillator")

#: Relative kernel error above which modes read from an eigendecomposition are reported as not faithful
#: to their layer (:class:`ModesAccuracyWarning`); the same default as ``S4.diagonalize``'s ``tol``.
MODES_TOL = 1e-4


class ModesAccuracyWarning(UserWarning):
    """The modes of a layer do not reproduce its kernel (an ill-conditioned or defective eigenbasis,
    Lemma 6.6): the explicit-operator view, and any oscillator table read from it, is not faithful."""


@dataclass
class Modes:
    r"""Discrete modes of a layer (see the module docstring for the kernel they define).

    Shapes: SISO ``log_eig``, ``B``, ``dt``, ``A``, ``residue``, ``ramp`` (H, M), ``C`` (K, H, M);
    MIMO (``log_eig.dim() == 1``) ``log_eig``, ``dt``, ``A``, ``residue``, ``ramp`` (M,), ``B``
    (M, H_in), ``C`` (K, H_out, M). K = 2 for ``bidirectional == "sum"``, else 1. ``D`` (H,).

    Fields:
        log_eig: complex log of the discrete eigenvalues ``lambda`` (principal branch).
        B: discrete input weights, complex.
        C: output weights, complex, with the conjugate-pair factor 2 folded in.
        D: real skip.
        dt: step size each mode was discretized with (``rate`` included); None if unknown.
        discretization: the rule (``zoh``, ``bilinear``, ``gbt``, ... for S4D/S4; ``im``/``imex``
            for the oscillators).
        structure: one of :data:`MODE_STRUCTURES`.
        A: continuous eigenvalues of the layer's ODE (the nominal ones), or None.
        alpha: GBT parameter (``discretization='gbt'``).
        residue: per-mode factor of the unit-forcing response (None: 1).
        ramp: Jordan coefficient per mode (None: no double eigenvalue).
        bidirectional: None (causal), ``"sum"`` (``C[1]`` is the anti-causal kernel over the same
            modes) or ``"concat"`` (these are the causal half's modes only; the reverse half is
            ``layer.reverse.modes()``, and the mixing projection is outside both).
        cond: condition number of the eigenbasis per channel (H,) (``dplr``: Lemma 6.6), or None.
        feedthrough: MIMO only, (H_out, H_in) float64 or None: a lag-0 term of the causal kernel that is no
            sum of modes (bidirectional S5: ``Re(C_b B_bar)``, its backward scan's lag 0; the anti-causal
            kernel ``C[1]`` then starts at lag -1 as everywhere else).
        kernel_error: relative error per channel (H,) float64 of the kernel these modes define against
            the layer's own kernel, ``||K_modes - K|| / ||K||`` over both directions and the first
            ``check_length`` lags (``S4.modes``); None where not measured (modes exact by construction).
            Above :data:`MODES_TOL` the modes, and the oscillators read from them, are not faithful.

    Structures: ``diagonal`` (one mode per stored diagonal mode, conjugate pairs folded into ``C``),
    ``dplr`` (all N eigenvalues of a real N x N system per channel, so every complex mode appears
    together with its conjugate: ``S4.modes``, ``DiagonalizedS4.modes``), ``oscillator`` (LinOSS-like).
    """

    log_eig: Tensor
    B: Tensor
    C: Tensor
    D: Tensor
    dt: Optional[Tensor]
    discretization: str
    structure: str
    A: Optional[Tensor] = None
    alpha: Optional[float] = None
    residue: Optional[Tensor] = None
    ramp: Optional[Tensor] = None
    bidirectional: Optional[str] = None
    cond: Optional[Tensor] = None
    kernel_error: Optional[Tensor] = None
    feedthrough: Optional[Tensor] = None

    @property
    def mimo(self) -> bool:
        """Whether the modes are shared by all channels (LinOSS: ``B`` (M, H_in), ``C`` (K, H_out, M))."""
        return self.log_eig.dim() == 1

    @property
    def eig(self) -> Tensor:
        """Discrete eigenvalues ``lambda = exp(log_eig)``."""
        return torch.exp(self.log_eig)

    @property
    def n_modes(self) -> int:
        return self.log_eig.shape[-1]

    @property
    def d_model(self) -> int:
        return self.D.shape[0]

    def input_weights(self) -> Tensor:
        """``r B``: the input weights with the residue applied, shape of ``B``."""
        if self.residue is None:
            return self.B
        return self.B * (self.residue.unsqueeze(-1) if self.mimo else self.residue)

    def kernel(self, L: int) -> Tensor:
        r"""The kernel the modes define, by explicit powers in float64 (the reference route).

        Returns (H, L) (SISO) or (H_out, H_in, L) (MIMO); with a leading 2 for
        ``bidirectional == "sum"``, as the layer's own ``kernel(L)``. O(H M L) memory.
        """
        L = check_length(L)
        c128 = torch.complex128
        log_eig = self.log_eig.to(c128)
        l = torch.arange(L, dtype=torch.float64, device=log_eig.device)
        powers = torch.exp(log_eig.unsqueeze(-1) * l)                      # (..., M, L)
        K = self._assemble(self.input_weights().to(c128), powers)
        if self.ramp is not None:
            ramp_B = self.B.to(c128) * (self.ramp.unsqueeze(-1) if self.mimo else self.ramp).to(c128)
            K = K + self._assemble(ramp_B, powers * (l + 1))
        if self.feedthrough is not None:
            K[0, ..., 0] += self.feedthrough.to(K.dtype)
        return K if self.bidirectional == "sum" else K[0]

    def _assemble(self, B: Tensor, powers: Tensor) -> Tensor:
        C = self.C.to(torch.complex128)
        if self.mimo:
            return torch.einsum("khm,mj,ml->khjl", C, B, powers).real
        return torch.einsum("khm,hm,hml->khl", C, B, powers).real

    def check_siso(self, who: str) -> None:
        """Raise if these modes cannot become the per-channel (SISO) diagonal layer ``who``."""
        if self.mimo:
            other = "S5.from_modes" if self.structure == "diagonal" else "LinOSS/DLinOSS.from_modes"
            raise TypeError(f"{who}.from_modes needs per-channel (SISO) modes, got MIMO modes of "
                            f"structure {self.structure!r}; build {other} from them")
        self._check_common(who)
        if self.ramp is not None and bool((self.ramp != 0).any()):
            raise ValueError(f"{who}.from_modes: these modes have Jordan (ramp) terms, "
                             "which a diagonal layer cannot represent")

    def _check_common(self, who: str) -> None:
        if self.bidirectional == "concat":
            raise ValueError(f"{who}.from_modes: bidirectional='concat' modes are only the causal half of a layer "
                             "that mixes two layers through a projection; build from each half's modes instead")
        if self.C.dim() != 3 or self.C.shape[0] != (2 if self.bidirectional == "sum" else 1):
            raise ValueError(f"{who}.from_modes: C must be (K, H, M) with K = 2 for bidirectional='sum', else 1; "
                             f"got shape {tuple(self.C.shape)} with bidirectional={self.bidirectional!r}")

    def channel_dt(self, who: str) -> Tensor:
        """One step size per channel (H,) float64 from ``dt`` (H, M) (1 where ``dt`` is None);
        ValueError if the modes of one channel were discretized with different steps."""
        H = self.log_eig.shape[0]
        if self.dt is None:
            return torch.ones(H, dtype=torch.float64, device=self.log_eig.device)
        dt = self.dt.to(torch.float64)
        first = dt[:, :1]
        if bool(((dt - first).abs() > 1e-12 * first.abs()).any()):
            raise ValueError(f"{who}.from_modes: all modes of a channel must share one dt (one step size per channel)")
        return first[:, 0].clone()
