r"""S4D: the diagonal structured state space layer (thesis §3.2, ch. 6.3, Listing 1 corrected).

Per channel h (H channels, N real state size = N/2 complex conjugate pairs):

    x'(t) = diag(A_h) x(t) + B_h u(t),    y(t) = 2 Re(C_h x(t)) + D_h u(t)

discretized with step ``dt_h = exp(log_dt_h)`` and computed as a Vandermonde kernel (eq. 3.2)
plus FFT convolution. Parameters per channel: A (real part through a positive transform,
§3.4.2), B, C in C^{N/2}, log dt, D: 3N + 2 reals.
"""
from __future__ import annotations

import math
from typing import Iterator, Optional

import torch
from torch import nn

from .._checks import check_choice, check_positive_int
from ..discretize import discretize_diagonal
from .base import DiagonalSSM, DiagonalSystem, freeze_ssm
from .init import REAL_TRANSFORMS, S4D_INITS, as_complex, c_init, log_dt_init, real_forward, real_inverse, s4d_init

Tensor = torch.Tensor

#: Discretizations the diagonal kernel supports (app. A.1.4); the GBT family takes ``alpha``.
S4D_DISCRETIZATIONS = ("zoh", "bilinear", "forward_euler", "backward_euler", "gbt")


class S4D(DiagonalSSM):
    r"""Diagonal SSM layer, the linear map ``y = K * u + D u`` per channel.

    Args:
        d_model: number of channels H.
        d_state: real state size N (N/2 complex modes with conjugate symmetry; must be even),
            or N real modes for ``init='real'``.
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
        c_scale: float = 1.0,
        imag_scale: float = 1.0,
        trainable_ssm: bool = True,
    ) -> None:
        super().__init__()
        self.d_model = check_positive_int("d_model", d_model)
        self.d_state = check_positive_int("d_state", d_state)
        for name, value in (("c_scale", c_scale), ("imag_scale", imag_scale)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name}={value!r}: expected a finite number (1.0: the init as specified)")
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
        if alpha is not None and not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
        self.alpha = alpha
        self.bidirectional = bool(bidirectional)
        gen = torch.Generator().manual_seed(seed) if seed is not None else None

        H = d_model
        A, B, conjugate = s4d_init(self.init, d_state, H, gen)
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
        if trainable_B:
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
        """Continuous-time eigenvalues ``A = -f(A_real) + i A_imag``, complex (H, M)."""
        return torch.complex(-real_forward(self.A_real, self.real_transform), self.A_imag)

    def diagonal_system(self, rate: float = 1.0) -> DiagonalSystem:
        A = self.continuous_A()
        if self.real_transform == "none" and bool((A.real >= 0).any()):
            bad = int((A.real >= 0).sum())
            raise ValueError(
                f"{bad} eigenvalues of A have Re(A) >= 0 (unstable) with real_transform='none'; "
                "use real_transform='exp' or 'softplus' to keep A stable by construction"
            )
        dt = torch.exp(self.log_dt) * rate
        Bc = as_complex(self.B)
        dA, dB = discretize_diagonal(A, Bc, dt, self.discretization, self.alpha)
        log_dA = dt.unsqueeze(-1) * A if self.discretization == "zoh" else torch.log(dA)
        if self.discretization == "forward_euler" and bool((dA.abs() >= 1).any()):
            raise ValueError(
                "forward Euler is unstable here (|1 + dt*A| >= 1 for some modes); lower dt_max or "
                "use discretization='zoh'/'bilinear'"
            )
        return DiagonalSystem(log_dA=log_dA, dB=dB, C=as_complex(self.C), scale=self.scale)

    def extra_repr(self) -> str:
        s = (
            f"d_model={self.d_model}, d_state={self.d_state}, init={self.init!r}, "
            f"discretization={self.discretization!r}"
        )
        if self.alpha is not None:
            s += f", alpha={self.alpha}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s
