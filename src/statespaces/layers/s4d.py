r"""S4D: the diagonal structured state space layer (thesis §3.2, ch. 6.3, Listing 1 corrected).

Per channel h (H channels, N real state size = N/2 complex conjugate pairs):

    x'(t) = diag(A_h) x(t) + B_h u(t),    y(t) = 2 Re(C_h x(t)) + D_h u(t)

discretized with step ``dt_h = exp(log_dt_h)`` and computed as a Vandermonde kernel (eq. 3.2)
plus FFT convolution. Parameters per channel: A (real part through a positive transform,
§3.4.2), B, C in C^{N/2}, log dt, D: 3N + 2 reals. ``init="real"`` (N real modes, no conjugate pairs) keeps
complex B and C for its N modes: 5N + 2 reals, of which the kernel sees Re(C B) per mode.

Parameter tying (§7.2.2, the official ``n_ssm``): with ``n_ssm < H`` the pair (A, B) is stored
once per group of ``H / n_ssm`` consecutive channels; C, D and the step dt stay per channel (the
thesis ties only (A, B); a per-channel dt keeps each channel's timescale, so the tied basis is
still H different convolution bases, as in the official code). Reals: ``n_ssm * 2N + H (N + 2)`` (``init="real"``:
``n_ssm * 3N + H (2N + 2)``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Optional, Tuple

import torch
from torch import nn

from .._checks import check_choice, check_flag, check_positive_int, check_real, refuse_if, seeded_generator
from ..discretize import DISCRETIZATIONS, discretize_diagonal, log_discrete_eigenvalues, undiscretize_diagonal
from ..kernels.vandermonde import zoh_vandermonde
from .base import BIDIRECTIONAL_HINT, DiagonalSSM, DiagonalSystem, freeze_ssm
from .config import LayerConfig, setting
from .init import (
    REAL_TRANSFORMS,
    S4D_INITS,
    as_complex,
    c_init,
    check_n_ssm,
    load_diagonal_system,
    log_dt_init,
    real_forward,
    real_inverse,
    s4d_init,
    tie_channels,
)
from .irregular import per_distinct_step
from .modes import Modes

Tensor = torch.Tensor

#: Discretizations the diagonal kernel supports (app. A.1.4); the GBT family takes ``alpha``.
S4D_DISCRETIZATIONS = DISCRETIZATIONS


class S4D(DiagonalSSM):
    r"""Diagonal SSM layer, the linear map ``y = K * u + D u`` per channel.

    Args:
        d_model: number of channels H.
        d_state: real state size N: N/2 complex modes are stored, each standing for a conjugate
            pair (``n_modes = N/2``, §3.4.5; must be even), or N real modes for ``init='real'``.
        init: one of ``legs`` (default), ``inv``, ``lin``, ``real``, ``rand``, ``inv2``, ``quad``
            (see :func:`statespaces.layers.init.s4d_init`).
        discretization: ``zoh`` (default) or ``bilinear``, ``forward_euler``, ``backward_euler``,
            ``gbt`` (with ``alpha``).
        dt_min: lower end of the log-uniform step-size init (Remark 5.6).
        dt_max: upper end of the log-uniform step-size init (Remark 5.6).
        real_transform: how Re(A) < 0 is kept: ``exp`` (default), ``softplus``, ``relu``, or ``none``
            (unconstrained; an unstable A then raises at kernel time).
        bidirectional: two kernels, causal and anti-causal (§7.2.6); no recurrent state then.
        trainable_B: train B (default) or freeze it (equivalent expressivity, §3.4.3).
        alpha: GBT parameter with ``discretization='gbt'``.
        seed: seed for this layer's random init (dt, C, D, and A for ``rand``).
        n_ssm: number of distinct (A, B) pairs, shared by groups of ``H / n_ssm`` consecutive
            channels (§7.2.2); must divide H. None (default) = H: one per channel.
        c_scale: factor on the initial C (unit variance, Cor. 5.16): its standard deviation
            (Table 7.10 ablation: 0.01, 1, 100).
        imag_scale: factor on the initial Im A (Table 7.12a "Scale 100": 100).
        trainable_ssm: False freezes the state equation (dt, A, B) at its init; C and D train
            ("frozen (A, B)", Fig. 7.9).

    Shapes:
        forward: (B, L, H) -> (B, L, H); kernel(L): (H, L) or (2, H, L); state: (B, H, M) complex.

    Example::

        >>> layer = S4D(d_model=4, d_state=8)
        >>> y = layer(torch.randn(2, 16, 4))
    """

    log_dt: Tensor                      # (H,) log step sizes

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        init: str = "legs",
        discretization: str = "zoh",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        real_transform: str = "exp",
        bidirectional: bool = False,
        trainable_B: bool = True,
        alpha: Optional[float] = None,
        seed: Optional[int] = None,
        n_ssm: Optional[int] = None,
        c_scale: float = 1.0,
        imag_scale: float = 1.0,
        trainable_ssm: bool = True,
    ) -> None:
        super().__init__()
        self.d_model = check_positive_int("d_model", d_model)
        self.n_ssm = check_n_ssm(n_ssm, self.d_model)
        self.d_state = check_positive_int("d_state", d_state)
        for name, value in (("c_scale", c_scale), ("imag_scale", imag_scale)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value <= 0:
                raise ValueError(f"{name}={value!r}: expected a finite number > 0 (1.0: the init as specified)")
        self.init = check_choice("init", init, S4D_INITS)
        self.discretization = check_choice("discretization", discretization, S4D_DISCRETIZATIONS)
        self.real_transform = check_choice("real_transform", real_transform, REAL_TRANSFORMS)
        if self.init != "real" and d_state % 2:
            raise ValueError(
                f"d_state={d_state} is odd: with conjugate symmetry the state holds d_state/2 complex "
                "pairs, so use an even d_state (or init='real' for real modes)"
            )
        if (alpha is not None) != (self.discretization == "gbt"):
            raise ValueError("alpha must be given exactly when discretization='gbt'")
        if alpha is not None:
            alpha = check_real("alpha", alpha, positive=False, what="number in [0, 1] (the GBT parameter)")
            if not 0.0 <= alpha <= 1.0:
                raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
        if self.init == "real" and imag_scale != 1.0:
            raise ValueError("imag_scale scales Im A, which init='real' does not have (real modes); leave it at 1")
        self.alpha = alpha
        self.bidirectional = check_flag("bidirectional", bidirectional, BIDIRECTIONAL_HINT)
        gen = seeded_generator(seed)

        H = d_model
        A, B, conjugate = s4d_init(self.init, d_state, self.n_ssm, gen)      # (n_ssm, M)
        self.n_modes = A.shape[-1]
        self.scale = 2.0 if conjugate else 1.0
        dtype = torch.get_default_dtype()
        self.log_dt = nn.Parameter(log_dt_init(H, dt_min, dt_max, gen).to(dtype))
        self.A_real = nn.Parameter(real_inverse(-A.real, self.real_transform).to(dtype))
        if conjugate:
            self.A_imag = nn.Parameter(A.imag.to(dtype) * imag_scale)
        else:
            self.register_buffer("A_imag", torch.zeros_like(A.imag, dtype=dtype))
        B = torch.view_as_real(B).to(dtype)
        if check_flag("trainable_B", trainable_B):
            self.B = nn.Parameter(B)
        else:
            self.register_buffer("B", B)
        K = 2 if self.bidirectional else 1
        self.C = nn.Parameter(torch.view_as_real(c_init((K, H, self.n_modes), gen)).to(dtype) * c_scale)
        self.D = nn.Parameter(torch.randn(H, generator=gen, dtype=torch.float64).to(dtype))
        freeze_ssm(self, trainable_ssm)

    def ssm_parameters(self) -> Iterator[nn.Parameter]:
        for p in (self.log_dt, self.A_real, self.A_imag, self.B):
            if isinstance(p, nn.Parameter):
                yield p

    def continuous_A(self) -> Tensor:
        """Continuous-time eigenvalues ``A = -f(A_real) + i A_imag``, complex (H, M) (tied rows
        repeated over their channel group when ``n_ssm < H``)."""
        A = torch.complex(-real_forward(self.A_real, self.real_transform), self.A_imag)
        return tie_channels(A, self.d_model)

    def diagonal_system(self, rate: float = 1.0) -> DiagonalSystem:
        """S4D discretized at ``rate * exp(log_dt)`` by its rule (ZOH by default; thesis §6.1, app. A.1): log dA,
        dB (H, M), C (K, H, M), scale (2 for conjugate pairs), and log dA in float64 under the other rules."""
        sys = self._discretized(torch.exp(self.log_dt) * rate)
        if (self.discretization != "zoh" or self.real_transform == "none") and sys.log_dA.dtype != torch.complex128:
            # log dA in float64 (DiagonalSystem.exponent): a float32 log of a mode near -1 (bilinear sends the fast
            # LegS modes to |lambda| ~ 1 - 1e-5) carries a phase error of ulp(pi) that dA^l multiplies by l (float32
            # kernel 6e-4 off at L = 65536, stateful forward 1e-3, against 1e-6 under ZOH, whose log is dt A itself)
            dt = torch.exp(self.log_dt.to(torch.float64)) * rate
            sys.log_dA_wide = log_discrete_eigenvalues(dt.unsqueeze(-1) * self.continuous_A().to(torch.complex128),
                                                       self.discretization, self.alpha)
        return sys

    def _kernel_values(self, L: int, rate: float) -> Tensor:
        """Under ZOH (the default) one op from the continuous parameters to the kernel
        (:func:`~statespaces.kernels.vandermonde.zoh_vandermonde`): on CPU the discretization is one autograd
        node with a hand-written backward (:func:`~statespaces.discretize.zoh_kernel_factors`) before the
        Vandermonde sum; on CUDA it runs inside the Triton kernels (the layer's fwd+bwd on the CUDA path
        197 -> 85 aten ops, ``benchmarks/host_census.py``; a GPU, bound by op dispatch here, pays per op)."""
        if self.discretization != "zoh" or self.real_transform == "none":    # "none" keeps its stability check
            return super()._kernel_values(L, rate)            # the exponent in float64 (diagonal_system)
        dt = torch.exp(self.log_dt)
        if rate != 1.0:
            dt = dt * rate
        Bc = tie_channels(as_complex(self.B), self.d_model)
        return zoh_vandermonde(dt, self.continuous_A(), Bc, as_complex(self.C), self.scale, L)

    def irregular_system(self, rate: float, steps: Tensor) -> Tuple[Tensor, Tensor, Tensor, float]:
        """Each interval discretized on its own (thesis §4.2.4): step ``rate * dt_h * steps[b, t]``;
        ``(dA, dB, C, scale)`` with dA, dB (B, L, H, M)."""
        dt = torch.exp(self.log_dt) * rate
        dA, dB = per_distinct_step(lambda s: self._discretized(s.unsqueeze(-1) * dt, log=False), steps)
        return dA, dB, as_complex(self.C), self.scale

    def _discretized(self, dt: Tensor, log: bool = True):
        """The system discretized with steps ``dt`` (..., H): a :class:`DiagonalSystem`, or ``(dA, dB)``
        without ``log``."""
        A = self.continuous_A()
        if self.real_transform == "none":     # no host sync on CUDA (torch._assert_async); ValueError on CPU
            refuse_if(A.real >= 0, "{n} eigenvalues of A have Re(A) >= 0 (unstable) with real_transform='none'; "
                      "use real_transform='exp' or 'softplus' to keep A stable by construction")
        Bc = tie_channels(as_complex(self.B), self.d_model)
        dA, dB = discretize_diagonal(A, Bc, dt, self.discretization, self.alpha)
        if self.discretization == "forward_euler":
            refuse_if(dA.abs() >= 1, "forward Euler is unstable here (|1 + dt*A| >= 1 for {n} modes: dt too large, "
                      "or so small that 1 + dt*A rounds to modulus 1); lower dt_max (the step is exp(log_dt) x rate "
                      "x the dt=/timestamps= intervals) or use discretization='zoh'/'bilinear'")
        elif self.discretization == "gbt" and self.alpha is not None and self.alpha < 0.5:
            # GBT maps the left half-plane into the unit disc only for alpha >= 1/2 (app. A.1.4); below, as
            # forward Euler (alpha = 0), a large dt |A| leaves it
            refuse_if(dA.abs() >= 1, f"the GBT discretization with alpha={self.alpha} < 1/2 is unstable here "
                      "(|dA| >= 1 for {n} modes); lower dt_max, raise alpha to >= 0.5 or use discretization="
                      "'zoh'/'bilinear'")
        if not log:
            return dA, dB
        log_dA = log_discrete_eigenvalues(dt.unsqueeze(-1) * A, self.discretization, self.alpha)
        return DiagonalSystem(log_dA=log_dA, dB=dB, C=as_complex(self.C), scale=self.scale)

    def _continuous_view(self, rate: float) -> Tuple[Tensor, Tensor]:
        dt = torch.exp(self.log_dt.to(torch.float64)) * rate
        return dt.unsqueeze(-1).expand(-1, self.n_modes).clone(), self.continuous_A().to(torch.complex128)

    @classmethod
    def from_modes(
        cls,
        modes: Modes,
        discretization: Optional[str] = None,
        alpha: Optional[float] = None,
        real_transform: str = "exp",
        dtype: Optional[torch.dtype] = None,
    ) -> "S4D":
        r"""An S4D layer whose kernel at rate 1 is the one ``modes`` define (any SISO modes).

        Each mode becomes one conjugate-pair mode (``d_state = 2 M``): ``A = x / dt`` with ``x`` the
        inverse of the rule at lambda (:func:`~statespaces.discretize.undiscretize_diagonal`),
        ``B = 1``, ``C = C_m r_m B_m / (2 dB)`` (the layer outputs ``2 Re``, §3.4.5), ``D`` the skip.

        Args:
            modes: from any layer's ``modes(rate)`` (S4D, S4, :class:`DiagonalizedS4`) or built by
                hand; one ``dt`` per channel (None: 1).
            discretization: rule of the new layer; default the modes' own when S4D has it, else ``zoh``.
            alpha: GBT parameter with ``discretization='gbt'`` (default the modes' own).
            real_transform: how the new layer keeps Re(A) < 0.
            dtype: parameter dtype (default: torch's default dtype).

        Raises:
            TypeError: MIMO (LinOSS) modes. ValueError: an eigenvalue the rule cannot produce
            with Re(A) < 0 (e.g. |lambda| >= 1), mixed dt within a channel, Jordan terms.
        """
        modes.check_siso("S4D")
        method = discretization
        if method is None:
            method = modes.discretization if modes.discretization in S4D_DISCRETIZATIONS else "zoh"
            if alpha is None and method == "gbt":
                alpha = modes.alpha
        method = check_choice("discretization", method, S4D_DISCRETIZATIONS)
        H, M = modes.log_eig.shape
        dt = modes.channel_dt("S4D")
        A = undiscretize_diagonal(modes.log_eig.to(torch.complex128), dt, method, alpha)
        if not bool((A.real < 0).all()):
            raise ValueError(
                f"S4D.from_modes: the {method} rule cannot produce {int((~(A.real < 0)).sum())} of these discrete "
                "eigenvalues with Re(A) < 0 (|lambda| >= 1 or off the rule's image)"
                + ("; 'zoh' and 'bilinear' reach every |lambda| < 1" if method not in ("zoh", "bilinear") else
                   ": an S4D layer has only decaying modes, |lambda| < 1")
            )
        ones = torch.ones_like(A)
        _, dB = discretize_diagonal(A, ones, dt, method, alpha)
        C = modes.C.to(torch.complex128) * modes.input_weights().to(torch.complex128) / (2 * dB)
        layer = cls(H, 2 * M, init="lin", discretization=method, alpha=alpha, real_transform=real_transform,
                    bidirectional=modes.bidirectional == "sum")
        dtype = torch.get_default_dtype() if dtype is None else dtype
        layer = layer.to(dtype)
        load_diagonal_system(layer, dt, A, ones, C, modes.D)
        return layer

    def extra_repr(self) -> str:
        s = (
            f"d_model={self.d_model}, d_state={self.d_state}, init={self.init!r}, "
            f"discretization={self.discretization!r}"
        )
        if self.alpha is not None:
            s += f", alpha={self.alpha}"
        if self.bidirectional:
            s += ", bidirectional=True"
        if self.n_ssm != self.d_model:
            s += f", n_ssm={self.n_ssm}"
        if self.real_transform != "exp":
            s += f", real_transform={self.real_transform!r}"
        if "B" not in self._parameters:
            s += ", trainable_B=False"
        return s


@dataclass(frozen=True)
class S4DConfig(LayerConfig):
    """Settings of :class:`S4D` (its constructor arguments but ``d_model``, same defaults).

    ``d_state`` counts **real state dimensions** N: the layer stores N/2 complex modes, one per
    conjugate pair (64 -> 32 complex modes), or N real modes with ``init="real"``.
    ``S4DConfig(d_state=32).build(64)`` is ``S4D(64, d_state=32)``.
    """

    kind = "s4d"
    d_state: int = setting(64, "int", "real state size N (N/2 complex conjugate-pair modes; even)", lo=1)
    init: str = setting("legs", "str", "init of (A, B), see s4d_init", choices=lambda: tuple(S4D_INITS))
    discretization: str = setting("zoh", "str", "discretization rule", choices=lambda: S4D_DISCRETIZATIONS)
    dt_min: float = setting(1e-3, "float", "lower end of the log-uniform dt init", lo=0, lo_open=True)
    dt_max: float = setting(1e-1, "float", "upper end of the log-uniform dt init", lo=0, lo_open=True)
    real_transform: str = setting("exp", "str", "how Re(A) < 0 is kept", choices=lambda: tuple(REAL_TRANSFORMS))
    bidirectional: bool = setting(False, "bool", "causal and anti-causal kernels (no recurrent state)")
    trainable_B: bool = setting(True, "bool", "train B (or freeze it)")
    alpha: Optional[float] = setting(None, "float", "GBT parameter, with discretization='gbt'", lo=0, hi=1,
                                     nullable=True)
    seed: Optional[int] = setting(None, "int", "seed of the layer's random init", lo=0, nullable=True)
    n_ssm: Optional[int] = setting(None, "int", "channel groups sharing (A, B) (thesis 7.2.2); none: one per channel",
                                   lo=1, nullable=True)
    c_scale: float = setting(1.0, "float", "factor on the initial C (its standard deviation; Table 7.10)", lo=0,
                             lo_open=True)
    imag_scale: float = setting(1.0, "float", "factor on the initial Im A (Table 7.12a)", lo=0, lo_open=True)
    trainable_ssm: bool = setting(True, "bool", "train the state equation (dt, A, B); false freezes it (Fig. 7.9)")
    renamed = {"n_oscillators": "d_state, the real state size N: S4D has no oscillators"}
