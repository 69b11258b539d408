r"""D-LinOSS: damped oscillatory state space layer (Boyer, Rusch & Rus 2025, arXiv:2505.12171).

LinOSS (:mod:`.linoss`) with a learned damping per oscillator:

    y''(t) = -A y(t) - G y'(t) + B u(t),        out(t) = Re(C y(t)) + D u(t)

P oscillators shared by all H channels (complex B (P, H), C (H, P), real D (H,)), step
``dt = rate * sigmoid(dt_raw)`` per oscillator. With velocity ``z = y'``, ``S = 1 + dt G``:

* ``IMEX`` (default; the paper's D-LinOSS, official code ``DampedIMEX1``): damping implicit,
  stiffness explicit, ``z_n = z_{n-1} + dt(-A y_{n-1} - G z_n + B u_n)``, ``y_n = y_{n-1} + dt z_n``::

      M = [[1/S, -dt A/S], [dt/S, 1 - dt^2 A/S]],   f = [dt/S, dt^2/S]

  ``det M = 1/S``, ``tr M = (2 + dt G - dt^2 A)/S``. The eigenvalues are a complex pair iff
  ``A_low <= A <= A_high`` with ``dt^2 A_low = (sqrt(1 + dt G) - 1)^2`` and
  ``dt^2 A_high = (sqrt(1 + dt G) + 1)^2``; then ``|lambda| = (1 + dt G)^{-1/2} <= 1`` for ``G >= 0``.
  (Outside it the pair is real; ``|lambda| <= 1`` still holds on ``0 <= dt^2 A <= 4 + 2 dt G``,
  the whole stability region, but the layer never leaves the complex band.)
* ``IM`` (official ``DampedIM``): both implicit, ``z_n = z_{n-1} + dt(-A y_n - G z_n + B u_n)``::

      M = [[1, -dt A], [dt, 1 + dt G]] / S',   f = [dt, dt^2] / S',   S' = 1 + dt G + dt^2 A

  ``det M = 1/S'``; complex pair iff ``G^2 <= 4 A``; ``|lambda| = S'^{-1/2} <= 1`` iff
  ``dt G + dt^2 A >= 0``.

Both satisfy ``f = dt M[:, 0]`` (so the closed-form responses of :mod:`.linoss` apply).

Parameterization (the official "soft projection", which is a clamp into the complex band, so the
bound holds by construction for every parameter value and every ``rate``):

* IMEX: ``G = relu(G_hat)``, ``A = A_low + relu(A_hat - A_low) - relu(A_hat - A_top)``
  (A clamped to ``[A_low, A_top]`` of the current ``G`` and ``rate * dt``; ``A_top = A_high x 3.99 / 4``, LinOSS's
  margin: at ``A_high`` itself with ``G = 0`` the pair is a Jordan block at -1, whose response grows linearly);
* IM: ``G = G_low + relu(G_hat - G_low)`` with ``G_low = -dt A_hat``, then
  ``A = G^2/4 + relu(A_hat - G^2/4)`` (so ``dt G + dt^2 A >= 0`` and ``G^2 <= 4 A``).

Initialisation (official code; defaults of its experiment scripts): ``"ring"`` -- eigenvalues
``r e^{+-i theta}`` with ``r^2 ~ U[r_min^2, r_max^2]`` (uniform on the annulus), ``theta ~
U[theta_min, theta_max]``, ``dt_raw ~ N(0, dt_std^2)``; (A, G) solved from (r, theta, dt) in closed form
(IMEX: ``G = (r^{-2} - 1)/dt``, ``dt^2 A = 1 + r^{-2} - 2 cos(theta)/r``; IM: ``dt G = 2 cos(theta)/r - 2``,
``dt^2 A = 1 + r^{-2} - 2 cos(theta)/r``); defaults ``r in [0.9, 1]``, ``theta in [0, pi]``,
``dt_std = 0.5``. ``"uniform"`` -- ``A ~ U[A_min, A_max]``, ``G ~ U[G_min, G_max]``,
``dt_raw ~ N(0, dt_std^2)``, rejection-sampled into the complex band. B, C, D as LinOSS.

Every view (scan, conv, loop, step, chunked state, kernel, bidirectional forms) is LinOSS's,
driven by :meth:`DLinOSS._system`; the Cayley-Hamilton powers and Green's functions use the polar
form ``sign * r e^{+-i theta}``, ``theta = atan2(sqrt(disc), |tr|)`` in [0, pi/2] (a block with a
negative trace gets ``sign = -1``: ``sin(l theta)/sin(theta)`` is inaccurate near theta = pi), with
the discriminant in the cancellation-free product form ``(q - q_low)(q_high - q)`` (IMEX, ``q = dt^2 A``)
or ``4 dt^2 (A - G^2/4)`` (IM).
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Iterator, Optional, Tuple, Union

import torch
from torch import nn

from .. import backend
from .._checks import check_choice, check_positive_int, check_rate, check_result, seeded_generator
from ..kernels.oscillator import IMEX_MAX_DT2A, JacobianNode
from .config import LayerConfig, setting
from .linoss import (
    LINOSS_BIDIRECTIONAL,
    LINOSS_MODES,
    LinOSS,
    check_bidirectional,
    oscillator_count,
)
from .oscillator_system import OscillatorSystem

Tensor = torch.Tensor

#: Discretizations: ``imex`` (damping implicit, stiffness explicit; the paper's D-LinOSS) and ``im``.
DLINOSS_DISCRETIZATIONS = ("imex", "im")
#: Initialisations of (A, G, dt) (official code).
DLINOSS_INITS = ("ring", "uniform")


def _sqrt0(x: Tensor) -> Tensor:
    """``sqrt(max(x, 0))`` with a zero (not NaN) gradient at and below 0 (boundary of the complex band)."""
    tiny = torch.finfo(x.dtype).tiny
    return torch.sqrt(torch.clamp(x, min=tiny)) * (x > 0)


def _damped_triton(A_hat: Tensor, G_hat: Tensor, dt: Tensor, scheme: str) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    from ..ops.triton.oscillator import damped_transition_triton

    return damped_transition_triton(A_hat.detach(), G_hat.detach(), dt.detach(), scheme)


def _damped_fused(A_hat: Tensor, G_hat: Tensor, dt: Tensor,
                  scheme: str) -> Optional[Tuple[Tensor, Tensor, Tensor]]:
    """The fused scan's blocks ``(M', f', T)`` in their normal form by the Triton kernel
    (:func:`statespaces.ops.triton.oscillator.damped_transition_triton`) where :mod:`statespaces.backend` picks it
    (CUDA float64, one oscillator axis), as one autograd node (:class:`~statespaces.kernels.oscillator.
    JacobianNode`: the kernel's forward-mode Jacobian (3, 8, P) contracted in the backward); else None."""
    if not (A_hat.dim() == 1 and G_hat.shape == A_hat.shape and dt.shape == A_hat.shape):
        return None
    if backend.choose("damped_transition", A_hat, G_hat, dt, dtypes=(torch.float64,)) != "triton":
        return None
    if torch.is_grad_enabled() and (A_hat.requires_grad or G_hat.requires_grad or dt.requires_grad):
        return backend.attempt("damped_transition", JacobianNode.apply, _damped_triton, scheme, A_hat, G_hat, dt)
    out = backend.attempt("damped_transition", _damped_triton, A_hat, G_hat, dt, scheme)
    return None if out is None else (out[0], out[1], out[2])


def damped_system(A_hat: Tensor, G_hat: Tensor, dt: Tensor,
                  discretization: str) -> Tuple[Tensor, Tensor, OscillatorSystem]:
    r"""Projected ``(A, G)`` and the discretized system for raw ``A_hat``, ``G_hat`` and step ``dt`` (all (P,)).

    Returns ``(A, G, OscillatorSystem)`` in the dtype of the inputs (see the module notes). The fused Triton scan
    takes its blocks from :func:`_damped_fused` instead (normal form, one launch).
    """
    if discretization == "imex":
        G = torch.relu(G_hat)
        s = dt * G
        sq = torch.sqrt(1.0 + s)
        A_low = (G / (sq + 1.0)) ** 2                       # (sqrt(1+s) - 1)^2 / dt^2, no cancellation
        A_high = ((sq + 1.0) / dt) ** 2
        # = A_low + relu(A_hat - A_low) - relu(A_hat - A_top) (the paper's form, the same gradients), without its
        # cancellation: that sum is off by ~eps |A_hat| when A_top << A_hat (large steps). The top is A_high
        # scaled by LinOSS's margin (IMEX_MAX_DT2A / 4): at A_high the pair is a double eigenvalue of modulus
        # (1 + dt G)^{-1/2}, which at G = 0 is a Jordan block at -1 whose response grows linearly (a relu'd G_hat
        # <= 0 with a large A_hat landed there, and float32 scans lost 17% over 20,000 steps)
        # (never under A_low: at dt G > 2.6e6 the margin would cross the band's lower edge)
        A = torch.clamp(A_hat, A_low, torch.maximum(A_low, A_high * (IMEX_MAX_DT2A / 4.0)))
        S = 1.0 + s
        M = torch.stack([torch.stack([1.0 / S, -dt * A / S]), torch.stack([dt / S, 1.0 - dt * dt * A / S])])
        f = torch.stack([dt / S, dt * dt / S])
        log_r = -0.5 * torch.log1p(s)
        disc = (dt * dt) * (A - A_low) * (dt * dt) * (A_high - A)        # (q - q_low)(q_high - q) = S^2 (4 det - tr^2)
        re = 2.0 + s - dt * dt * A                          # 2 r cos(theta) S, any sign
        im = _sqrt0(disc)                                   # 2 r sin(theta) S >= 0
    elif discretization == "im":
        G_low = -dt * A_hat
        G = torch.clamp(G_hat, min=G_low)     # = G_low + relu(G_hat - G_low), without its cancellation when dt A >> |G|
        A_low = 0.25 * G * G
        gap = torch.relu(A_hat - A_low)                      # A - G^2/4
        A = A_low + gap
        s = dt * G
        S = 1.0 + s + dt * dt * A
        M = torch.stack([torch.stack([1.0 / S, -dt * A / S]), torch.stack([dt / S, (1.0 + s) / S])])
        f = torch.stack([dt / S, dt * dt / S])
        log_r = -0.5 * torch.log(S)
        re, im = 2.0 + s, 2.0 * dt * _sqrt0(gap)           # 2 r (cos, sin)(theta) S
    else:  # pragma: no cover - checked by the caller
        raise ValueError(f"D-LinOSS discretization must be 'imex' or 'im' here, got {discretization!r}")
    # eigenvalues sign * r e^{+-i theta} with theta in [0, pi/2]: near -r the angle stays small
    sign = torch.where(re < 0, -torch.ones_like(re), torch.ones_like(re))
    theta = torch.atan2(im, re.abs())
    return A, G, OscillatorSystem(M, f, dt, log_r, theta, sign)


def ring_to_AG(r: Tensor, theta: Tensor, dt: Tensor, discretization: str) -> Tuple[Tensor, Tensor]:
    r"""``(A, G)`` whose discrete eigenvalues at step ``dt`` are ``r e^{+-i theta}`` (0 < r <= 1)."""
    q = 1.0 + r ** -2 - 2.0 * torch.cos(theta) / r          # dt^2 A (both schemes)
    if discretization == "imex":
        G = (r ** -2 - 1.0) / dt
    else:
        G = (2.0 * torch.cos(theta) / r - 2.0) / dt
    return q / (dt * dt), G


class DLinOSS(LinOSS):
    r"""Damped linear oscillatory state space layer (D-LinOSS, arXiv:2505.12171).

    Args:
        d_model: channels H.
        n_oscillators: number of oscillators P, shared by all channels (complex state (B, 2, P):
            velocity and position, 2P complex numbers; not S4D/S4's ``d_state`` of real dimensions).
        discretization: ``"IMEX"`` (default, the paper's D-LinOSS) or ``"IM"``.
        init: ``"ring"`` (default) or ``"uniform"`` (see the module notes).
        r_min: smallest initial eigenvalue modulus (ring); ``0 < r_min <= r_max <= 1``.
        r_max: largest initial eigenvalue modulus (ring).
        theta_min: smallest initial eigenvalue angle (ring), in ``[0, pi]``.
        theta_max: largest initial eigenvalue angle (ring), in ``[theta_min, pi]``.
        A_min: lower end of the uniform init of A.
        A_max: upper end of the uniform init of A.
        G_min: lower end of the uniform init of G.
        G_max: upper end of the uniform init of G.
        dt_std: ``dt_raw ~ N(0, dt_std^2)``, ``dt = sigmoid(dt_raw)``.
        mode: default forward path, ``"auto"`` (default: as :class:`LinOSS`, the chunked form on CPU, 3.9x faster
            than the scan at B=8, H=128, P=64, L=1024 fwd+bwd, one thread; the fused Triton scan for training on
            CUDA), ``"scan"``, ``"chunked"``, ``"conv"`` or ``"loop"``.
        bidirectional: as :class:`LinOSS` (``False``, ``True``/``"sum"``, ``"concat"``).
        seed: seed of this layer's random init.
        d_state: deprecated name of ``n_oscillators`` (DeprecationWarning).

    Parameters: ``A_hat``, ``G_hat``, ``dt_raw`` (P,), ``B`` (P, H, 2), ``C`` (H, P, 2), ``D`` (H,).
    ``A_param`` is ``"project"`` (the clamp above). Shapes as :class:`LinOSS`.
    """

    def __init__(
        self,
        d_model: int,
        n_oscillators: int = 64,
        discretization: str = "IMEX",
        init: str = "ring",
        r_min: float = 0.9,
        r_max: float = 1.0,
        theta_min: float = 0.0,
        theta_max: float = math.pi,
        A_min: float = 0.0,
        A_max: float = 1.0,
        G_min: float = 0.0,
        G_max: float = 1.0,
        dt_std: float = 0.5,
        mode: str = "auto",
        bidirectional: Union[bool, str] = False,
        seed: Optional[int] = None,
        d_state: Optional[int] = None,
    ) -> None:
        nn.Module.__init__(self)
        self.d_model = check_positive_int("d_model", d_model)
        self.n_oscillators = oscillator_count(self, n_oscillators, d_state)
        self.discretization = check_choice("discretization", discretization, DLINOSS_DISCRETIZATIONS)
        self.init = check_choice("init", init, DLINOSS_INITS)
        self.A_param = "project"
        self.mode = check_choice("mode", mode, LINOSS_MODES)
        self.bidirectional_mode = check_bidirectional(bidirectional)
        self.bidirectional = self.bidirectional_mode is not None
        for name, v in (("r_min", r_min), ("r_max", r_max), ("theta_min", theta_min), ("theta_max", theta_max),
                        ("A_min", A_min), ("A_max", A_max), ("G_min", G_min), ("G_max", G_max), ("dt_std", dt_std)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite real number, got {v!r}")
        if not (0 < r_min <= r_max <= 1):
            raise ValueError(f"DLinOSS needs 0 < r_min <= r_max <= 1, got r_min={r_min}, r_max={r_max}")
        if not (0 <= theta_min <= theta_max <= math.pi):
            raise ValueError(f"DLinOSS needs 0 <= theta_min <= theta_max <= pi, got {theta_min}, {theta_max}")
        for ok, what in ((A_min <= A_max, f"A_min <= A_max, got A_min={A_min}, A_max={A_max}"),
                         (G_min <= G_max, f"G_min <= G_max, got G_min={G_min}, G_max={G_max}"),
                         (dt_std >= 0, f"dt_std >= 0, got dt_std={dt_std}")):
            if not ok:
                raise ValueError(f"DLinOSS needs {what}")
        # each init reads only its own ranges: a changed range of the other init would be ignored, so it is refused
        other = "uniform" if self.init == "ring" else "ring"
        ranges = {"ring": {"r_min": r_min, "r_max": r_max, "theta_min": theta_min, "theta_max": theta_max},
                  "uniform": {"A_min": A_min, "A_max": A_max, "G_min": G_min, "G_max": G_max}}[other]
        defaults = inspect.signature(DLinOSS.__init__).parameters
        changed = [f"{k}={v!r}" for k, v in ranges.items() if v != defaults[k].default]
        if changed:
            raise ValueError(f"{', '.join(changed)}: {'these ranges are' if len(changed) > 1 else 'this range is'} "
                             f"read by init={other!r} only, and this layer has init={self.init!r}; pass "
                             f"init={other!r} or drop {'them' if len(changed) > 1 else 'it'}")
        if self.init == "uniform" and (A_max <= 0 or G_min < 0):
            raise ValueError("uniform init needs A_max > 0 and G_min >= 0 (the complex band has A > 0, G >= 0)")
        gen = seeded_generator(seed)
        P = self.n_oscillators
        dtype = torch.get_default_dtype()
        f64 = torch.float64
        if self.init == "ring":
            mag = torch.sqrt(torch.rand(P, dtype=f64, generator=gen) * (r_max ** 2 - r_min ** 2) + r_min ** 2)
            arg = torch.rand(P, dtype=f64, generator=gen) * (theta_max - theta_min) + theta_min
            raw = torch.randn(P, dtype=f64, generator=gen) * dt_std
            A, G = ring_to_AG(mag, arg, torch.sigmoid(raw), self.discretization)
        else:
            A, G, raw = self._uniform_init(P, A_min, A_max, G_min, G_max, dt_std, gen)
        self.A_hat = nn.Parameter(A.to(dtype))
        self.G_hat = nn.Parameter(G.to(dtype))
        self.dt_raw = nn.Parameter(raw.to(dtype))
        self._init_io(gen, seed)

    def _uniform_init(self, P: int, A_min: float, A_max: float, G_min: float, G_max: float, dt_std: float,
                      gen: Optional[torch.Generator]) -> Tuple[Tensor, Tensor, Tensor]:
        """Rejection sampling of (A, G, dt_raw) into the complex band (official ``uniform`` init)."""
        f64 = torch.float64
        keep_A, keep_G, keep_raw, n = [], [], [], 0
        for _ in range(1000):
            A = torch.rand(512, dtype=f64, generator=gen) * (A_max - A_min) + A_min
            G = torch.rand(512, dtype=f64, generator=gen) * (G_max - G_min) + G_min
            raw = torch.randn(512, dtype=f64, generator=gen) * dt_std
            dt = torch.sigmoid(raw)
            if self.discretization == "imex":
                ok = (G >= 0) & ((G - dt * A) ** 2 < 4 * A)
            else:
                ok = (G + dt * A >= 0) & (G * G < 4 * A)
            keep_A.append(A[ok])
            keep_G.append(G[ok])
            keep_raw.append(raw[ok])
            n += int(ok.sum())
            if n >= P:
                return torch.cat(keep_A)[:P], torch.cat(keep_G)[:P], torch.cat(keep_raw)[:P]
        raise ValueError("uniform init: the (A, G) box barely meets the stable complex band; widen A_max or G_max")

    # ---- parameters -----------------------------------------------------------------------------
    def ssm_parameters(self) -> Iterator[nn.Parameter]:
        yield from (self.A_hat, self.G_hat, self.dt_raw, self.B)
        if self.bidirectional_mode == "concat":
            yield from self.reverse.ssm_parameters()

    def _projected(self, rate: Union[float, Tensor]) -> Tuple[Tensor, Tensor, OscillatorSystem]:
        w = self._wide
        return damped_system(self.A_hat.to(w), self.G_hat.to(w), self._dt(rate), self.discretization)

    def _varying_steps_refusal(self) -> Optional[str]:
        """D-LinOSS refuses intervals that vary along a sequence under both schemes: its projection bounds each
        step's eigenvalues for *that* step size (``A`` and ``G`` are clamped as functions of ``dt``, and ``G`` may
        be negative, an anti-damped oscillator that the scheme's numerical damping holds at that step), so the
        blocks of different steps belong to different systems, whose product can grow: IM, steps alternating 0.2
        and 1.0, L = 200, float64: 2.8e40 where constant steps give 3-6 (found by a verification campaign).
        LinOSS-IM (fixed ``A``, no damping: implicit Euler on one conservative system) stays bounded."""
        scheme = "IMEX" if self.discretization == "imex" else "IM"
        return (f"irregular sampling with D-LinOSS: its projection bounds each step for that step size (A and G are "
                f"clamped as functions of dt, G may be negative), so {scheme} steps of different sizes belong to "
                "different systems whose product can grow (2.8e40 at L = 200 with steps alternating 0.2 and 1.0); "
                "use LinOSS(..., discretization='IM'), S4D or S5 for irregularly sampled data")

    def _system(self, rate: Union[float, Tensor]) -> OscillatorSystem:
        return self._projected(rate)[2]

    def _scan_blocks(self, rate: float) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        w = self._wide
        A_hat, G_hat, dt = self.A_hat.to(w), self.G_hat.to(w), self._dt(rate)
        fused = _damped_fused(A_hat, G_hat, dt, self.discretization)
        if fused is not None:
            return fused
        sys = damped_system(A_hat, G_hat, dt, self.discretization)[2]
        return sys.M, sys.f, None

    def _stiffness(self, rate: Union[float, Tensor]) -> Tensor:
        return self._projected(rate)[0]

    def stiffness(self, rate: float = 1.0) -> Tensor:
        """Effective ``A`` (P,) after the projection at this rate (float64 math, parameter dtype)."""
        A = self._projected(check_rate(rate))[0].to(self.param_dtype)
        check_result(self, A, "stiffness")
        return A

    def damping(self, rate: float = 1.0) -> Tensor:
        """Effective ``G`` (P,) after the projection at this rate (float64 math, parameter dtype)."""
        G = self._projected(check_rate(rate))[1].to(self.param_dtype)
        check_result(self, G, "damping")
        return G

    def _continuous_eigenvalues(self, rate: float) -> Tensor:
        """Eigenvalue of ``y'' = -A y - G y'`` (P,) complex128: ``-G/2 + i sqrt(A - G^2/4)`` in the complex
        band (the layer's projection keeps it there), ``-G/2 + sqrt(G^2/4 - A)`` outside."""
        A, G, _ = self._projected(rate)
        A, G = A.to(torch.float64), G.to(torch.float64)
        disc = A - G * G / 4
        return torch.where(disc >= 0, torch.complex(-G / 2, torch.sqrt(disc.clamp(min=0))),
                           torch.complex(-G / 2 + torch.sqrt((-disc).clamp(min=0)), torch.zeros_like(G)))

    @staticmethod
    def _curve() -> str:
        return ("|lambda| < 1 and the angle and radius that damping G >= 0 and stiffness A >= 0 give at that dt, "
                "in the complex band")

    def _set_oscillators(self, lam: Tensor, dt: Tensor) -> None:
        """Set (A_hat, G_hat, dt_raw) so that block p has eigenvalues ``lam[p]``, conj at step ``dt[p]``
        (:func:`ring_to_AG`; inside the complex band the projection is the identity)."""
        A, G = ring_to_AG(lam.abs(), torch.angle(lam).abs(), dt, self.discretization)
        self.A_hat.copy_(A)
        self.G_hat.copy_(G)
        self.dt_raw.copy_(torch.log(dt) - torch.log1p(-dt))

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, n_oscillators={self.n_oscillators}, "
            f"discretization={self.discretization.upper()!r}, "
            f"init={self.init!r}, mode={self.mode!r}"
            + (f", bidirectional={self.bidirectional_mode!r}" if self.bidirectional else "")
        )


@dataclass(frozen=True)
class DLinOSSConfig(LayerConfig):
    """Settings of :class:`DLinOSS` (its constructor arguments but ``d_model``, same defaults).

    ``n_oscillators`` counts **damped oscillators** P: the state holds 2P complex numbers
    (velocity, position). DLinOSS takes no ``d_state``, ``dt_min``/``dt_max`` (its dt init is
    ``dt_std``) or ``A_param`` (A is projected into the stable band).
    """

    kind = "dlinoss"
    n_oscillators: int = setting(64, "int", "number of oscillators P (state: 2P complex numbers)", lo=1)
    discretization: str = setting("imex", "str", "IMEX (the paper's D-LinOSS) or IM",
                                  choices=lambda: DLINOSS_DISCRETIZATIONS)
    init: str = setting("ring", "str", "init of (A, G, dt)", choices=lambda: DLINOSS_INITS)
    r_min: float = setting(0.9, "float", "smallest initial eigenvalue modulus (ring)", lo=0, hi=1, lo_open=True)
    r_max: float = setting(1.0, "float", "largest initial eigenvalue modulus (ring)", lo=0, hi=1, lo_open=True)
    theta_min: float = setting(0.0, "float", "smallest initial eigenvalue angle (ring)", lo=0, hi=math.pi)
    theta_max: float = setting(math.pi, "float", "largest initial eigenvalue angle (ring)", lo=0, hi=math.pi)
    A_min: float = setting(0.0, "float", "lower end of the uniform init of A")
    A_max: float = setting(1.0, "float", "upper end of the uniform init of A")
    G_min: float = setting(0.0, "float", "lower end of the uniform init of G")
    G_max: float = setting(1.0, "float", "upper end of the uniform init of G")
    dt_std: float = setting(0.5, "float", "dt_raw ~ N(0, dt_std^2)", lo=0)
    mode: str = setting("auto", "str", "default forward path", choices=lambda: LINOSS_MODES)
    bidirectional: Union[bool, str] = setting(False, "bool", "false, true/sum (kernel sum) or concat",
                                              choices=lambda: LINOSS_BIDIRECTIONAL)
    seed: Optional[int] = setting(None, "int", "seed of the layer's random init", lo=0, nullable=True)
    renamed = {"d_state": "n_oscillators, the number of oscillators P, which DLinOSS's d_state meant before"}
