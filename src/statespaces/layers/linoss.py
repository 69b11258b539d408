r"""LinOSS: oscillatory state space layer (Rusch & Rus, ICLR 2025, arXiv:2410.03943; seed 001, notes Part 6.1).

P forced harmonic oscillators shared by all H channels (MIMO, like the paper):

    y''(t) = -A y(t) + B u(t),        out(t) = Re(C y(t)) + D u(t)

with ``A = diag(A_1..A_P) >= 0`` (``A = relu(A_hat)`` or ``A_hat^2``), complex ``B`` (P, H) and
``C`` (H, P), real skip ``D`` (H,), and one step size per oscillator ``dt = sigmoid(dt_raw)`` in
(0, 1). With velocity ``z = y'`` and state ``x = [z; y]`` in C^{2P}, the two schemes of the seed give
``x_n = M x_{n-1} + F_n`` (see :mod:`statespaces.kernels.oscillator` for M):

* ``IM`` (implicit Euler): ``F_n = [dt S B u_n; dt^2 S B u_n]``, ``S = (1 + dt^2 A)^{-1}`` (the
  corrected forcing: the seed's ``[dt B u_n; 0]`` does not solve the implicit equations);
  eigenvalues ``S(1 +- i dt sqrt(A))``, ``|lambda| = sqrt(S) <= 1`` (Prop. 3.1).
* ``IMEX`` (symplectic Euler): ``F_n = [dt B u_n; dt^2 B u_n]``; ``|lambda| = 1`` only while
  ``dt^2 A <= 4`` -- which the seed omits. Here the effective stiffness is bounded by construction:
  ``A_eff = min(A, IMEX_MAX_DT2A / (rate dt)^2)`` with ``IMEX_MAX_DT2A = 3.99``. This is the identity
  in the paper's regime (A ~ U[0, 1], dt < 1, rate 1 give dt^2 A < 1) and has zero gradient in A
  beyond the bound (like relu below 0). With ``A_param='none'`` nothing is clamped and an
  out-of-range A raises ``ValueError`` instead.

The layer output is ``Re(C y_n) + D u_n`` (paper: ``x = Re(C y) + D u``, seed 001 "x(t) = C y(t) + D u(t)").

Bidirectional (thesis §7.2.6): ``bidirectional=True`` adds an anti-causal branch with the same
oscillators (A, dt, B) and its own ``C_back`` -- the kernel-sum form of S4D, lags -1..-L
(``out_t += Re(C_back y^rev_{t+1})`` where ``y^rev`` is the position of the causal system run on the
reversed input); ``bidirectional="concat"`` is the reverse-and-concatenate form
``Linear(Concat(LinOSS(x), reverse(LinOSS'(reverse(x)))))`` with an independent second layer. Neither
has a recurrent state: ``step`` and stateful ``forward`` raise.

Views (all equal, tested): parallel associative scan (``mode='scan'``, :mod:`statespaces.ops.scan`),
sequential loop (``'loop'``), FFT convolution with each oscillator's closed-form Green's function
(``'conv'``), single steps (:meth:`LinOSS.step`) and the chunked form (``'chunked'``). The default
``mode='auto'`` takes the chunked form on CPU and the scan (below) for training on CUDA. ``kernel(L)`` returns
the MIMO convolution kernel (H_out, H_in, L) -- LinOSS mixes channels, so it is not depthwise.

On CUDA (float32 input, :mod:`statespaces.backend` ``"auto"``) ``mode='scan'`` runs the fused Triton
kernel :mod:`statespaces.ops.triton.linoss` (forcing ``f B u`` built in-kernel from x (B, L, H), fp64
chunk carry, hand-written backward); its twins are :meth:`LinOSS._scan_path` and the loop. A failed
Triton import or compile warns once and falls back to :meth:`LinOSS._scan_path`.

D-LinOSS (learned damping, arXiv:2505.12171) is :class:`statespaces.layers.dlinoss.DLinOSS`, a
subclass that only replaces :meth:`LinOSS._system` (the discretized 2x2 blocks and their polar form)
and the parameters; every view below works from :class:`OscillatorSystem`.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Dict, Iterator, Optional, Tuple, Union, cast

import torch
import torch.nn.functional as F
from torch import nn

from .. import backend
from .._checks import (
    check_batch_size,
    check_choice,
    check_length,
    check_positive_int,
    check_real,
    check_result,
    public,
    refuse_if,
    seeded_generator,
    tracing,
)
from ..kernels.chunked_conv import chunked_conv, prefer_chunked
from ..kernels.chunked_projected import chunked_conv_projected, chunked_conv_projected_ref
from ..kernels.oscillator import (
    IMEX_MAX_DT2A,
    OSCILLATOR_SCHEMES,
    check_oscillator_params,
    from_normal_basis,
    mimo_kernel,
    oscillator_polar,
    oscillator_step,
    oscillator_transition,
    to_normal_basis,
)
from ..ops.fftconv import fftconv
from ..ops.scan import scan_block2, scan_loop
from .base import SSMLayer, check_rate
from .config import LayerConfig, setting
from .init import as_complex, log_dt_init
from .irregular import over_time_chunks, per_distinct_step, reversed_steps, shift_anticausal
from .modes import Modes
from .oscillator_system import (
    OscillatorSystem,
    chunk_of,
    chunk_tables,
    column_state,
    normal_chunk_tables,
    normal_forcing,
    state_from_normal,
    state_to_normal,
    system_powers,
    system_responses,
)

Tensor = torch.Tensor

#: Parameterizations of the stiffness A >= 0 (paper: relu or square); ``none`` = raw, checked at use.
A_PARAMS = ("relu", "square", "none")
#: Forward paths.
LINOSS_MODES = ("auto", "scan", "conv", "loop", "chunked")
#: Discretizations (seed 001): the oscillator schemes of :mod:`statespaces.kernels.oscillator`.
LINOSS_DISCRETIZATIONS = OSCILLATOR_SCHEMES
#: Chunk length of the ``mode='scan'`` path: each chunk is scanned in the working precision, the
#: states between chunks are carried in float64 (see :meth:`LinOSS._scan_path`).
SCAN_CHUNK = 256
#: Bidirectional forms (thesis §7.2.6): ``"sum"`` (= ``True``, kernel sum) and ``"concat"``.
LINOSS_BIDIRECTIONAL = ("sum", "concat")
#: An oscillator with ``|sin theta|`` below this has a double eigenvalue (Jordan block) in :meth:`LinOSS.modes`.
#: The Jordan form is off by ``(l theta)^2 / 6`` at lag l, the two-residue form by about ``eps / theta``: at 1e-6
#: the first was 5.5e-6 at L = 4096 (7e-4 at 65536); at 1e-9 the worst of either is 1.4e-9 (L <= 65536, float64,
#: against a recurrence; 2026-12-07).
DEGENERATE_THETA = 1e-9


def _mode_mismatch(got: Modes, want: Modes) -> float:
    """Largest relative difference of the per-mode terms (eigenvalue; ``C r B`` and ``C ramp B`` outer products)."""
    def terms(m: Modes):
        out = [m.eig.to(torch.complex128)]
        for w in (m.input_weights(), None if m.ramp is None else m.B * m.ramp.unsqueeze(-1)):
            if w is not None:
                out.append(torch.einsum("khm,mj->khjm", m.C.to(torch.complex128), w.to(torch.complex128)))
        return out
    a, b = terms(got), terms(want)
    if len(a) != len(b):
        return math.inf
    return max(float((x - y).abs().max() / y.abs().max().clamp(min=1e-300)) for x, y in zip(a, b))


def check_bidirectional(value: Union[bool, str]) -> Optional[str]:
    """``False``/``None`` -> None (causal); ``True``/``"sum"`` -> ``"sum"``; ``"concat"`` -> ``"concat"``."""
    if value is None or value is False:
        return None
    if value is True:
        return "sum"
    if isinstance(value, str):
        return check_choice("bidirectional", value, LINOSS_BIDIRECTIONAL)
    raise TypeError(f"bidirectional must be a bool, 'sum' or 'concat', got {value!r}")


def oscillator_count(layer: Any, n_oscillators: int, d_state: Optional[int]) -> int:
    """``n_oscillators``, or the deprecated ``d_state`` given instead (DeprecationWarning; both -> ValueError).

    The recorded constructor arguments (for ``save_pretrained``) keep the new name only.
    """
    name = type(layer).__name__
    if d_state is not None:
        if n_oscillators != 64 and n_oscillators != d_state:
            raise ValueError(f"{name} got n_oscillators={n_oscillators} and d_state={d_state}; d_state is the old "
                             "name of n_oscillators: give n_oscillators only")
        warnings.warn(f"{name}(d_state=...) is deprecated: the number of oscillators is n_oscillators "
                      "(d_state counts real state dimensions in S4D/S4)", DeprecationWarning, stacklevel=4)
        n_oscillators = d_state
    n = check_positive_int("n_oscillators", n_oscillators)
    recorded = layer.__dict__.get("_init_config")
    if recorded is not None:
        recorded.pop("d_state", None)
        recorded["n_oscillators"] = n
    return n


def upgrade_oscillator_arguments(config: Dict[str, Any]) -> Dict[str, Any]:
    """Saved arguments of a LinOSS/DLinOSS from before ``n_oscillators`` (``d_state``) -> the new name."""
    if "d_state" not in config:
        return config
    config = dict(config)
    d_state = config.pop("d_state")
    if d_state is not None:
        config["n_oscillators"] = d_state
    return config


class LinOSS(SSMLayer):
    r"""Linear oscillatory state space layer (LinOSS-IM / LinOSS-IMEX).

    Args:
        d_model: channels H.
        n_oscillators: number of oscillators P, shared by all channels. Each oscillator has a
            velocity and a position, so the state holds 2P complex numbers (4P real numbers);
            this is not the ``d_state`` of S4D/S4, which counts real state dimensions.
        discretization: ``"IM"`` (default, dissipative) or ``"IMEX"`` (symplectic, |lambda| = 1).
        A_param: ``"relu"`` (default, ``A = relu(A_hat)``), ``"square"`` (``A = A_hat^2``), or ``"none"``
            (``A = A_hat`` unconstrained; negative A, or IMEX with dt^2 A > 3.99, raises ``ValueError``).
        dt_min: lower end of the initial ``dt`` range: if given (with ``dt_max``), the initial ``dt``
            is log-uniform in [dt_min, dt_max] with ``0 < dt_min <= dt_max < 1``; default:
            ``dt_raw ~ U[0, 1]``, i.e. dt in [0.5, 0.73] (the seed says dt = 1 at init, which
            sigmoid cannot reach; our choice).
        dt_max: upper end of the initial ``dt`` range (see ``dt_min``).
        mode: default forward path: ``"auto"`` (default: ``"chunked"`` on CPU and where the Triton
            chunked kernel runs, else ``"scan"``; see :meth:`forward`), ``"scan"`` (parallel scan, as
            the paper), ``"chunked"`` (chunked convolution), ``"conv"`` (FFT) or ``"loop"``.
        bidirectional: ``False`` (causal, default); ``True`` or ``"sum"``: add an anti-causal branch
            with its own ``C_back`` (kernel sum, §7.2.6); ``"concat"``: an independent reversed layer
            and a ``Linear(2H, H)`` (no bias) on the concatenation. No recurrent state in either.
        seed: seed of this layer's random init.
        d_state: deprecated name of ``n_oscillators`` (DeprecationWarning).
        a_max: the initial stiffness is ``A ~ U[0, a_max]`` (default 1, the paper's): the oscillators'
            initial frequencies per step are at most about ``sqrt(a_max) dt``, so inputs with faster
            periodic structure (e.g. the 8-step rows of sequential 8x8 digits) need ``a_max > 1``. Under IMEX
            the effective A is clamped at ``3.99 / dt^2`` (the stability bound), where it gets no gradient: with
            the default dt range, ``a_max`` above about 8 mostly draws clamped oscillators
            (``layer.stiffness()`` shows the effective values).

    Init (seed 001 / paper): ``A ~ U[0, 1]``; B, C complex with real and imaginary parts
    ``U[-1, 1]/sqrt(H)`` and ``U[-1, 1]/sqrt(P)``; ``D ~ N(0, 1)``.

    Shapes:
        forward: (B, L, H) -> (B, L, H); kernel(L): (H_out, H_in, L), or (2, H_out, H_in, L) with
        ``bidirectional=True`` (``[1]`` acts on lags -1..-L); state: (B, 2, P) complex
        (``state[:, 0]`` velocity z, ``state[:, 1]`` position y).
    """

    upgrade_config = staticmethod(upgrade_oscillator_arguments)

    stepper_kind = "oscillator"

    def __init__(
        self,
        d_model: int,
        n_oscillators: int = 64,
        discretization: str = "IM",
        A_param: str = "relu",
        dt_min: Optional[float] = None,
        dt_max: Optional[float] = None,
        mode: str = "auto",
        bidirectional: Union[bool, str] = False,
        seed: Optional[int] = None,
        d_state: Optional[int] = None,
        a_max: float = 1.0,
    ) -> None:
        super().__init__()
        self.d_model = check_positive_int("d_model", d_model)
        self.n_oscillators = oscillator_count(self, n_oscillators, d_state)
        self.a_max = check_real("a_max", a_max, what="finite number > 0 (the initial stiffness A is uniform in "
                                                      "[0, a_max]; 1 in the paper)")
        self.discretization = check_choice("discretization", discretization, LINOSS_DISCRETIZATIONS)
        self.A_param = check_choice("A_param", A_param, A_PARAMS)
        self.mode = check_choice("mode", mode, LINOSS_MODES)
        self.bidirectional_mode = check_bidirectional(bidirectional)
        self.bidirectional = self.bidirectional_mode is not None
        gen = seeded_generator(seed)
        P = self.n_oscillators
        dtype = torch.get_default_dtype()

        a0 = self.a_max * torch.rand(P, dtype=torch.float64, generator=gen)     # A ~ U[0, a_max]
        self.A_hat = nn.Parameter((a0.sqrt() if self.A_param == "square" else a0).to(dtype))
        if (dt_min is None) != (dt_max is None):
            raise ValueError(f"LinOSS: give both dt_min and dt_max (0 < dt_min <= dt_max < 1), or neither (dt ~ "
                             f"sigmoid(U[0, 1])); got dt_min={dt_min}, dt_max={dt_max}")
        if dt_min is None:
            raw = torch.rand(P, dtype=torch.float64, generator=gen)
        else:
            assert dt_max is not None                   # given together with dt_min (checked above)
            if not (0 < dt_min <= dt_max < 1):
                raise ValueError(
                    f"LinOSS needs 0 < dt_min <= dt_max < 1 (dt = sigmoid(dt_raw) lies in (0, 1)), "
                    f"got dt_min={dt_min}, dt_max={dt_max}"
                )
            dt0 = torch.exp(log_dt_init(P, dt_min, dt_max, gen))
            raw = torch.log(dt0) - torch.log1p(-dt0)                  # logit
        self.dt_raw = nn.Parameter(raw.to(dtype))
        self._init_io(gen, seed)

    def _init_io(self, gen: Optional[torch.Generator], seed: Optional[int]) -> None:
        """B, C, D (seed 001 init) and the bidirectional parts; shared with :class:`DLinOSS`."""
        H, P = self.d_model, self.n_oscillators
        dtype = torch.get_default_dtype()

        def uni(*shape: int, scale: float) -> Tensor:
            return (2 * torch.rand(*shape, 2, dtype=torch.float64, generator=gen) - 1) * scale

        self.B = nn.Parameter(uni(P, H, scale=1 / math.sqrt(H)).to(dtype))      # view_as_real of (P, H)
        self.C = nn.Parameter(uni(H, P, scale=1 / math.sqrt(P)).to(dtype))      # view_as_real of (H, P)
        self.D = nn.Parameter(torch.randn(H, dtype=torch.float64, generator=gen).to(dtype))
        if self.bidirectional_mode == "sum":
            self.C_back = nn.Parameter(uni(H, P, scale=1 / math.sqrt(P)).to(dtype))   # view_as_real of (H, P)
        elif self.bidirectional_mode == "concat":
            # an independent layer of the same class and arguments for the reversed sequence
            cfg = dict(self.__dict__.get("_init_config") or {})
            if not cfg:
                raise TypeError(f"{type(self).__name__} did not record its arguments; cannot build its reverse layer")
            cfg.update(bidirectional=False, seed=None if seed is None else seed + 1, n_oscillators=P)
            cfg.pop("d_state", None)
            cfg.pop("d_model", None)
            self.reverse = type(self)(H, **cfg)
            w = (2 * torch.rand(H, 2 * H, dtype=torch.float64, generator=gen) - 1) / math.sqrt(2 * H)
            self.out_proj = nn.Linear(2 * H, H, bias=False, dtype=dtype)
            with torch.no_grad():
                self.out_proj.weight.copy_(w.to(dtype))

    # ---- parameters -----------------------------------------------------------------------------
    def ssm_parameters(self) -> Iterator[nn.Parameter]:
        yield from (self.A_hat, self.dt_raw, self.B)
        if self.bidirectional_mode == "concat":
            yield from self.reverse.ssm_parameters()

    @property
    def B_complex(self) -> Tensor:
        """Input matrix (P, H) complex."""
        return as_complex(self.B)

    @property
    def C_complex(self) -> Tensor:
        """Output matrix (H, P) complex."""
        return as_complex(self.C)

    @property
    def _wide(self) -> torch.dtype:
        """Precision of the parameter map and of the scan's chunk carry: float64 (MPS has none)."""
        return self.param_dtype if self.D.device.type == "mps" else torch.float64

    def _dt(self, rate: Union[float, Tensor]) -> Tensor:
        return rate * torch.sigmoid(self.dt_raw.to(self._wide))

    def _stiffness(self, rate: Union[float, Tensor]) -> Tensor:
        if self.A_param == "relu":
            A = torch.relu(self.A_hat.to(self._wide))
        elif self.A_param == "square":
            A_hat = self.A_hat.to(self._wide)
            A = A_hat * A_hat
        else:
            A = self.A_hat.to(self._wide)
            dt = self._dt(rate).detach()
            if A.is_cuda or tracing():      # no host sync on CUDA (torch._assert_async); skipped while tracing
                refuse_if(~(A.detach() >= 0), "oscillator stiffness A must be finite and >= 0 (found {n} entries "
                          "that are not); use A_param='relu' or 'square' to keep it nonnegative by construction")
                if self.discretization == "imex":
                    refuse_if(~(dt * dt * A.detach() <= IMEX_MAX_DT2A), f"LinOSS-IMEX needs dt^2 A <= {IMEX_MAX_DT2A} "
                              "(its margin below 4, past which it is unstable; {n} oscillators beyond); lower dt/rate "
                              "or A, or use discretization='IM'")
            else:                           # CPU: the detailed message (host values cost no device sync)
                check_oscillator_params(A.detach(), dt, self.discretization)
            return A
        if self.discretization == "imex":
            dt = self._dt(rate)
            A = torch.minimum(A, IMEX_MAX_DT2A / (dt * dt))
        return A

    def dt(self, rate: float = 1.0) -> Tensor:
        """Step sizes ``rate * sigmoid(dt_raw)``, (P,) (evaluated in float64, returned in the parameter dtype)."""
        return self._dt(check_rate(rate)).to(self.param_dtype)

    def stiffness(self, rate: float = 1.0) -> Tensor:
        r"""Effective ``A >= 0`` (P,) used by the recurrence at this rate (IMEX bound applied).

        Evaluated in float64 and returned in the parameter dtype. Raises ``ValueError`` for
        ``A_param='none'`` with negative A (or, for IMEX, dt^2 A > 3.99).
        """
        A = self._stiffness(check_rate(rate)).to(self.param_dtype)
        check_result(self, A, "stiffness")          # a NaN parameter is named, as forward/kernel/step name it
        return A

    def _system(self, rate: Union[float, Tensor]) -> OscillatorSystem:
        """The discretized oscillators at ``rate`` in the wide precision (the one hook :class:`DLinOSS` replaces)."""
        A, dt = torch.broadcast_tensors(self._stiffness(rate), self._dt(rate))   # rate: a float, or (B, L, 1) per step
        M, f = oscillator_transition(A, dt, self.discretization, validate=False)
        log_r, theta = oscillator_polar(A, dt, self.discretization)
        return OscillatorSystem(M, f, dt, log_r, theta)

    def transition(self, rate: float = 1.0) -> Tuple[Tensor, Tensor]:
        """``(M, f)``: M (2, 2, P) and forcing coefficients f (2, P), ``F_n = f * (B u_n)``
        (formed in float64, returned in the parameter dtype)."""
        sys = self._system(check_rate(rate))
        M, f = sys.M.to(self.param_dtype), sys.f.to(self.param_dtype)
        check_result(self, (M, f), "transition")
        return M, f

    def eigenvalues(self, rate: float = 1.0) -> Tensor:
        """Discrete eigenvalues, (2P,) complex: ``lambda_p`` and their conjugates (Prop. 3.1)."""
        sys = self._system(check_rate(rate))
        lam = torch.polar(torch.exp(sys.log_r), sys.theta)
        if sys.sign is not None:                                # sign -1: -r e^{-i theta} = r e^{i (pi - theta)}
            lam = torch.where(sys.sign < 0, -lam.conj(), lam)
        lam = lam.to(self.state_dtype)
        check_result(self, lam, "eigenvalues")
        return torch.cat([lam, lam.conj()])

    # ---- explicit operator ------------------------------------------------------------------------
    def modes(self, rate: float = 1.0) -> Modes:
        r"""The oscillators as conjugate pairs of modes (:class:`~statespaces.layers.modes.Modes`, MIMO, complex128).

        Block p (2x2, eigenvalues ``lambda_p``, ``conj lambda_p`` with ``Im lambda_p >= 0``) has the
        position response ``kappa_l = e_2^T M^l f = 2 Re(g lambda^l)`` with the partial-fraction
        residue ``g = ((M f)_2 - conj(lambda) f_2) / (lambda - conj lambda)``, and the output is
        ``Re(C_hp B_pj) kappa_l``. Since ``2 Re(x) Re(z) = Re(x z) + Re(x conj z)``, the block is the
        two modes ``lambda_p`` (residue g) and ``conj lambda_p`` (residue conj g), both with input
        weights ``B_p:`` and output weights ``C_:p``: M = 2P modes, all ``lambda_p`` first, then the
        conjugates in the same order. A block with a double eigenvalue ``+-r`` (``|sin theta| <``
        :data:`DEGENERATE_THETA`, e.g. A = 0) is a Jordan block: ``kappa_l = (f_2 - c) lambda^l + c (l + 1) lambda^l``,
        ``c = (M f)_2/lambda - f_2``, split evenly over the two modes (``residue``, ``ramp``).
        ``A`` holds the continuous eigenvalues of ``y'' = -A y (- G y')``; ``D`` the skip.
        A ``"concat"`` layer returns its causal half (``reverse.modes()`` is the other half).
        """
        rate = check_rate(rate)
        sys = self._system(rate)
        f64, c128 = torch.float64, torch.complex128
        M, f = sys.M.to(f64), sys.f.to(f64)
        theta = sys.theta.to(f64)
        if sys.sign is not None:                                   # -r e^{i theta} ~ r e^{i (pi - theta)}
            theta = torch.where(sys.sign.to(f64) < 0, math.pi - theta, theta)
        log_lam = torch.complex(sys.log_r.to(f64), theta)              # exact |lambda| = 1 for IMEX (log_r = 0)
        lam = torch.exp(log_lam)
        g = M[1, 0] * f[0] + M[1, 1] * f[1]                            # (M f)_2
        degenerate = torch.sin(theta).abs() < DEGENERATE_THETA
        safe = torch.where(degenerate, torch.ones_like(lam), lam - lam.conj())
        lam_re = torch.where(degenerate, lam.real, torch.ones_like(lam.real))
        c = g / lam_re - f[1]
        res = torch.where(degenerate, ((f[1] - c) / 2).to(c128), (g - lam.conj() * f[1]) / safe)
        ramp = torch.where(degenerate, c / 2, torch.zeros_like(c)).to(c128)
        Bc = self.B_complex.to(c128)
        Cs = [self.C_complex] + ([as_complex(self.C_back)] if self.bidirectional_mode == "sum" else [])
        C = torch.stack([torch.cat([Ci, Ci], -1) for Ci in Cs]).to(c128)
        s = self._continuous_eigenvalues(rate)
        return Modes(
            log_eig=torch.cat([log_lam, log_lam.conj()]), B=torch.cat([Bc, Bc]), C=C,
            D=self.D.to(f64), dt=sys.dt.to(f64).repeat(2), A=torch.cat([s, s.conj()]),
            discretization=self.discretization, structure="oscillator",
            residue=torch.cat([res, res.conj()]), ramp=torch.cat([ramp, ramp]) if bool(degenerate.any()) else None,
            bidirectional=self.bidirectional_mode,
        )

    def _continuous_eigenvalues(self, rate: float) -> Tensor:
        """``i sqrt(A)`` (P,) complex128: the eigenvalue with Im >= 0 of the undamped ``y'' = -A y``."""
        A = self._stiffness(rate).to(torch.float64)
        return torch.complex(torch.zeros_like(A), torch.sqrt(A.clamp(min=0)))

    def _set_oscillators(self, lam: Tensor, dt: Tensor) -> None:
        """Set A_hat and dt_raw so that block p has eigenvalue ``lam[p]`` at step ``dt[p]`` (rate 1).

        IM: ``|lambda|^2 = 1/(1 + dt^2 A)``; IMEX: ``2 Re lambda = tr M = 2 - dt^2 A`` (Prop. 3.1).
        """
        q = 1 / lam.abs() ** 2 - 1 if self.discretization == "im" else 2 - 2 * lam.real      # dt^2 A
        A = q / (dt * dt)
        self.A_hat.copy_(A.clamp(min=0).sqrt() if self.A_param == "square" else A)
        self.dt_raw.copy_(torch.log(dt) - torch.log1p(-dt))                                   # logit

    @staticmethod
    def _curve() -> str:
        """Where the scheme's eigenvalues lie, for :meth:`from_modes`' error."""
        return "IM: |lambda| < 1 with angle atan(dt sqrt A); IMEX: |lambda| = 1"

    @classmethod
    def from_modes(cls, modes: Modes, discretization: Optional[str] = None, mode: str = "scan",
                   dtype: Optional[torch.dtype] = None, tol: float = 1e-8, **kwargs) -> "LinOSS":
        r"""A layer of this class whose forward at rate 1 reproduces the kernel of oscillator ``modes``.

        ``modes`` must have the layout of :meth:`modes` (MIMO, 2P modes: ``lambda_p`` then their
        conjugates, ``dt`` per mode, ``C[..., p] = C[..., P + p]``, ``B[p] = B[P + p]``). The blocks
        are rebuilt from ``(lambda_p, dt_p)`` (:meth:`_set_oscillators`), then ``B_p = (r_p B_p)/g_p``
        with g the new blocks' residues, ``C``, ``D`` copied. The result's modes are compared with
        the given ones (relative ``tol``) and ValueError is raised if this class cannot produce them
        (e.g. an IM layer from modes with ``|lambda| = 1``, or eigenvalues off the scheme's curve).

        Args:
            modes: from ``LinOSS.modes`` / ``DLinOSS.modes`` (or built in that layout).
            discretization: the new layer's scheme (default the modes' own).
            mode: default forward path of the new layer.
            dtype: parameter dtype (default: torch's default dtype).
            tol: relative tolerance of the final check.
            **kwargs: further constructor arguments (e.g. ``A_param``).
        """
        who = cls.__name__
        if not modes.mimo or modes.structure != "oscillator" or modes.n_modes % 2 or modes.dt is None:
            raise TypeError(f"{who}.from_modes needs oscillator modes (MIMO, 2P modes, dt given), "
                            f"got structure {modes.structure!r} with log_eig of shape {tuple(modes.log_eig.shape)}")
        modes._check_common(who)
        P, H = modes.n_modes // 2, modes.d_model
        disc = modes.discretization if discretization is None else discretization
        steps = modes.dt[:P].to(torch.float64)
        if not bool(((steps > 0) & (steps < 1)).all()):
            raise ValueError(f"{who}.from_modes: the layer's step dt = sigmoid(dt_raw) lies in (0, 1), but these modes "
                             f"have steps in [{steps.min().item():.4g}, {steps.max().item():.4g}] (modes(rate) folds "
                             "the rate into dt); take the modes at rate 1 and run the new layer with "
                             "forward(x, rate=R), or at a rate that keeps every rate x dt below 1")
        layer = cls(H, P, discretization=disc.upper(), mode=mode, bidirectional=modes.bidirectional == "sum", **kwargs)
        layer = layer.to(torch.float64)            # built and checked in float64, then cast to dtype
        c128 = torch.complex128
        lam = modes.eig[:P].to(c128)
        lam = torch.where(lam.imag < 0, lam.conj(), lam)
        with torch.no_grad():
            layer._set_oscillators(lam, steps)
            own = layer.modes()
            # B_p from the residue term, or from the ramp term where that dominates (A = 0: pure ramp)
            assert own.residue is not None         # an oscillator layer's modes() always sets it
            res = own.residue[:P]
            ramp = torch.zeros_like(res) if own.ramp is None else own.ramp[:P]
            use_ramp = ramp.abs() > res.abs()
            rB = modes.input_weights()[:P].to(c128)
            ramp_B = (torch.zeros_like(rB) if modes.ramp is None
                      else modes.B[:P].to(c128) * modes.ramp[:P, None].to(c128))
            one = torch.ones_like(res)
            B = torch.where(use_ramp[:, None], ramp_B / torch.where(use_ramp, ramp, one)[:, None],
                            rB / torch.where(use_ramp, one, res)[:, None])
            layer.B.copy_(torch.view_as_real(B))
            layer.C.copy_(torch.view_as_real(modes.C[0, :, :P].to(c128)))
            if modes.bidirectional == "sum":
                layer.C_back.copy_(torch.view_as_real(modes.C[1, :, :P].to(c128)))
            layer.D.copy_(modes.D)
            got, want = layer.modes(), modes
            err = _mode_mismatch(got, want)
        if not err <= tol:
            raise ValueError(f"{who}.from_modes: this {layer.discretization.upper()} layer cannot reproduce these "
                             f"modes (relative mismatch {err:.1e} > tol={tol:g}); eigenvalues off the scheme's curve "
                             f"({cls._curve()}), or not in the conjugate-pair layout of {who}.modes")
        return layer.to(torch.get_default_dtype() if dtype is None else dtype)

    # ---- views ----------------------------------------------------------------------------------
    def oscillator_kernels(self, L: int, rate: float = 1.0) -> Tensor:
        """Impulse responses (2, P, L) of velocity and position to a unit ``B u`` (closed form,
        float64 trigonometry, returned in the parameter dtype)."""
        return system_responses(self._system(check_rate(rate)), L).to(self.param_dtype)

    @public
    def kernel(self, L: int, rate: float = 1.0) -> Tensor:
        r"""MIMO convolution kernel ``K[h, k, l] = Re(C diag(kappa_l) B)_{hk}``, (H_out, H_in, L).

        ``out_n = sum_{l<=n} K[:, :, l] u_{n-l} + D u_n`` (the D skip is not in K). With
        ``bidirectional=True``: (2, H_out, H_in, L), ``K[1]`` built with ``C_back`` and acting
        anti-causally on lags -1..-L: ``out_n += sum_{l < L-1-n} K[1, :, :, l] u_{n+1+l}``.
        ``bidirectional="concat"`` has no kernel of this form (raises ``ValueError``).
        """
        L = check_length(L)
        rate = check_rate(rate)
        if self.bidirectional_mode == "concat":
            raise ValueError("bidirectional='concat' mixes two layers through a projection; "
                             "it has no (2, H, H, L) kernel")
        kappa = self.oscillator_kernels(L, rate)[1]
        K = mimo_kernel(kappa, self.B_complex, self.C_complex)
        if self.bidirectional_mode == "sum":
            K = torch.stack([K, mimo_kernel(kappa, self.B_complex, as_complex(self.C_back))])
        check_result(self, K, "kernel")
        return K

    def _check_intervals(self, x: Tensor, dt: Optional[Tensor], timestamps: Optional[Tensor]) -> Optional[Tensor]:
        """As :meth:`SSMLayer._check_intervals`, and IMEX refuses steps that vary along a sequence: each IMEX block
        has ``|lambda| <= 1``, but a product of blocks of different sizes is not contractive (parametric growth).
        Measured in float64 on an impulse, L = 2000, steps U[0.1, 2.1]: LinOSS-IMEX 0.27 -> 3.1e3, D-LinOSS-IMEX
        (P = 16) 3.5 -> 2.6e209, and 2.6e26 with steps U[0.9, 1.1]; IM stays bounded (0.30 -> 0.29, 3.5 -> 2.9).
        Constant steps per sequence are a rate and stay allowed."""
        steps = super()._check_intervals(x, dt, timestamps)
        why = self._varying_steps_refusal()
        if steps is not None and why is not None and not tracing() and not bool((steps == steps[:, :1]).all()):
            raise ValueError(f"{why}. Evenly spaced samples are a rate: pass rate=c for a spacing c (timestamps= "
                             "starts every row with an interval of 1)")
        return steps

    def _varying_steps_refusal(self) -> Optional[str]:
        """Why this layer refuses intervals that vary along a sequence (None: it takes them)."""
        if self.discretization != "imex":
            return None
        return ("irregular sampling with discretization='IMEX': each IMEX step is stable, but a product of steps of "
                "different sizes is not (parametric growth: a 10% jitter of the steps grew a D-LinOSS response to "
                f"1e26); use discretization='IM' for irregularly sampled data ({type(self).__name__}(..., "
                "discretization='IM'))")

    @public
    def initial_state(self, batch_size: int) -> Tensor:
        """Zero state (B, 2, P) complex: ``[:, 0]`` velocity, ``[:, 1]`` position."""
        batch_size = check_batch_size(batch_size)
        return torch.zeros(batch_size, 2, self.n_oscillators, dtype=self.state_dtype, device=self.D.device)

    def _input_weight(self) -> Tensor:
        """B as the real (2P, H) matrix [Re B; Im B]: ``B u`` = [Re; Im] for real u."""
        Bc = self.B_complex
        return torch.cat([Bc.real, Bc.imag], 0)

    def _output_weight(self, C: Optional[Tensor] = None) -> Tensor:
        """C as the real (H, 2P) matrix [Re C, -Im C]: ``Re(C y)`` for y given as [Re; Im]; C (H, P, 2) real
        view, default ``self.C``."""
        Cc = self.C_complex if C is None else as_complex(C)
        return torch.cat([Cc.real, -Cc.imag], 1)

    def _input_proj(self, u: Tensor) -> Tensor:
        """``B u`` as a real tensor (..., 2P) = [Re; Im] for real u (..., H)."""
        return u @ self._input_weight().T

    def _output_proj(self, y: Tensor, C: Optional[Tensor] = None) -> Tensor:
        """``Re(C y)`` for y given as real (..., 2P) = [Re; Im]: (..., H); C (H, P, 2) real view, default ``self.C``."""
        return y @ self._output_weight(C).T

    @staticmethod
    def _to_real(state: Tensor) -> Tensor:
        return torch.cat([state.real, state.imag], -1)          # (B, 2, 2P)

    @staticmethod
    def _to_complex(x: Tensor) -> Tensor:
        P = x.shape[-1] // 2
        return torch.complex(x[..., :P], x[..., P:])

    @public
    def step(self, x: Tensor, state: Tensor, rate: float = 1.0) -> Tuple[Tensor, Tensor]:
        """One recurrent step: ``state' = M state + f B x``; ``y = Re(C state'_pos) + D x``.

        Args:
            x: (B, H). state: (B, 2, P) complex.

        Returns:
            ``(y, state')`` with y (B, H).
        """
        self._check_step_input(x, state)
        rate = check_rate(rate)
        # the 2x2 update runs in float64 with the float64 M (O(B P) work) and is rounded once: a
        # float32 M is off by ~2^-24, a bias that IMEX (|lambda| = 1) turns into drift ~ L 2^-24;
        # without autograd (generation) the system is cached until a parameter changes (:mod:`.step_cache`)
        sys = self._step_cache.get(self, rate, lambda: self._system(rate))
        u = x.to(self.param_dtype)
        out, new_state = oscillator_step(sys.M, sys.f, self.B_complex.T, self.C_complex.T, self.D, u, state)
        out = out.to(x.dtype)                    # cast first: a float16 output that overflows is refused too
        check_result(self, (out, new_state), "step output", x=x, state=state)
        return out, new_state

    @public
    def forward(  # type: ignore[override]  # public API: `mode` sits before dt/timestamps (positional order)
        self,
        x: Tensor,
        state: Optional[Tensor] = None,
        return_state: bool = False,
        rate: float = 1.0,
        mode: Optional[str] = None,
        dt: Optional[Tensor] = None,
        timestamps: Optional[Tensor] = None,
    ) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        """Apply the layer to x (B, L, H) -> (B, L, H).

        Args:
            x: input (B, L, H), real.
            state: (B, 2, P) complex state before the first step (None: zeros).
            return_state: also return the state after the last step.
            rate: multiplies dt (a signal sampled ``rate`` times more coarsely).
            mode: ``"auto"`` / ``"scan"`` / ``"chunked"`` / ``"conv"`` / ``"loop"``; default the layer's
                ``mode``. ``"auto"`` is ``"chunked"`` on CPU (1.2-1.9x faster than the scan at B=8, H=128,
                P=64, L=256..8192 in fwd+bwd; ``benchmarks/bench_chunked.py``) and on CUDA where the
                rule :func:`~statespaces.kernels.chunked_conv.prefer_chunked` picks the Triton chunked
                kernel (stateful calls: ``state=`` or ``return_state``; stateless calls keep the fused Triton
                scan), else ``"scan"``.
            dt: irregular sampling, (B, L) positive multipliers of the step of each interval: step
                t uses the scheme's transition at ``rate * dt[b, t] * sigmoid(dt_raw)`` (a
                time-varying scan, ``mode`` ``"auto"``, ``"scan"`` or ``"loop"``; see
                :mod:`statespaces.layers.irregular`).
            timestamps: irregular sampling, (B, L) increasing sample times in units of the step.

        A bidirectional layer takes no ``state`` and cannot ``return_state`` (``ValueError``).
        """
        rate = self._check_forward(x, state, return_state, rate)
        explicit_mode = mode is not None
        mode = self.mode if mode is None else check_choice("mode", mode, LINOSS_MODES)
        steps = self._check_intervals(x, dt, timestamps)
        if steps is not None:
            if mode in ("conv", "chunked", "auto"):
                if explicit_mode and mode != "auto":
                    raise ValueError("irregular sampling (dt/timestamps) is a time-varying recurrence with no "
                                     "convolution form; use mode='scan' or 'loop'")
                mode = "scan"
        u = x.to(self.param_dtype)
        L = u.shape[1]
        # on CPU chunked beats the scan in every measured shape: use the stateful branch of the rule
        if mode == "auto" and steps is None:
            stateful = u.device.type == "cpu" or state is not None or return_state
            mode = "chunked" if prefer_chunked(u, stateful) else "scan"
        x0 = None if state is None else self._to_real(state.to(self.initial_state(1).dtype))
        v: Optional[Tensor] = None
        y_pos: Optional[Tensor]
        last: Optional[Tensor]
        sys: Optional[OscillatorSystem] = None
        blocks: Optional[Tuple[Tensor, Tensor, Optional[Tensor]]] = None
        if steps is not None:
            v = self._input_proj(u).to(u.dtype)                     # (B, L, 2P) real [Re; Im]
            y_pos, last = self._irregular_positions(v, steps, rate, x0, mode)
        else:
            # the fused Triton scan needs only the blocks (M, f): the polar form of the full system is formed
            # only for the other routes (and if the kernel fails)
            blocks = self._scan_blocks(rate) if mode == "scan" and self._fused_available(u) else None
            fused = None if blocks is None else self._fused_scan(u, blocks, x0, return_state)
            sys = None if fused is not None else self._system(rate)   # float64 (see _scan_path)
            if fused is None and self._channels_first(u, mode):
                y_pos = None                                        # the layout-preserving chunked pass below
            elif fused is None:
                v = self._input_proj(u).to(u.dtype)                 # (B, L, 2P) real [Re; Im] (autocast: bf16 matmul)
                y_pos, last = self._positions(v, cast(OscillatorSystem, sys), x0, L, mode)
            else:
                y_pos, last = fused
        if y_pos is None:
            sys = cast(OscillatorSystem, sys)
            out, last = self._chunked_channels_first(u, sys, x0, L, return_state)
        else:
            out = self._output_proj(y_pos) + self.D * u
        if self.bidirectional_mode == "sum":
            # the same oscillators on the reversed input, read out by C_back, shifted to lags -1..-L
            if y_pos is None:
                back = self._chunked_channels_first(u.flip(1), cast(OscillatorSystem, sys), None, L, False,
                                                    self.C_back)[0].flip(1)
            elif steps is not None:     # each sample held over the interval after it (irregular.reversed_steps)
                y_rev = self._irregular_positions(cast(Tensor, v).flip(1), reversed_steps(steps), rate, None,
                                                  mode)[0]
                back = self._output_proj(y_rev, self.C_back).flip(1)
            else:
                fused = self._fused_scan(u.flip(1), blocks, None, False) if blocks is not None and v is None else None
                if fused is None and sys is None:
                    sys = self._system(rate)
                y_rev = fused[0] if fused is not None else self._positions(
                    (self._input_proj(u).to(u.dtype) if v is None else v).flip(1), cast(OscillatorSystem, sys),
                    None, L, mode)[0]
                back = self._output_proj(y_rev, self.C_back).flip(1)     # back[t] = sum_{s >= t} ...
            out = out + shift_anticausal(back)
        elif self.bidirectional_mode == "concat":
            back_steps = None if steps is None else reversed_steps(steps)
            back = self.reverse(u.flip(1), rate=rate, mode=mode, dt=back_steps).flip(1)
            out = self.out_proj(torch.cat([out, back], -1))
        new_state = self._to_complex(cast(Tensor, last)).contiguous() if return_state else None   # row-major
        out = out.to(x.dtype)                    # cast first: a float16 output that overflows is refused too
        check_result(self, (out, new_state), input=x, state=state)   # NaN/inf: names input, state or parameters
        if return_state:
            assert new_state is not None
            return out, new_state
        return out

    def _fused_available(self, u: Tensor) -> bool:
        """Whether :mod:`statespaces.backend` picks the fused Triton scan for u (CUDA float32)."""
        return backend.choose("linoss_scan", u, dtypes=backend.REAL) == "triton"

    def _scan_blocks(self, rate: float) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        """The blocks ``(M, f)`` of :meth:`_system` alone (float64), for the fused scan, and the basis change
        ``T = (p, q)`` (2, P) of blocks given in another basis, ``x = [[p, q], [0, 1]] x'`` (None: none; the
        position coordinate is the same in both)."""
        A, dt = torch.broadcast_tensors(self._stiffness(rate), self._dt(rate))
        M, f = oscillator_transition(A, dt, self.discretization, validate=False)
        return M, f, None

    def _fused_scan(self, u: Tensor, blocks: Tuple[Tensor, Tensor, Optional[Tensor]], x0: Optional[Tensor],
                    need_state: bool) -> Optional[Tuple[Tensor, Tensor]]:
        """``mode='scan'`` on the fused Triton kernel (:mod:`statespaces.ops.triton.linoss`: forcing
        ``f B u`` built in-kernel from u (B, L, H), fp64 chunk carry), with the blocks of :meth:`_scan_blocks`;
        None if the kernel failed (it warns once; the PyTorch :meth:`_scan_path` runs). Returns positions
        (B, L, 2P) and the final state (B, 2, 2P) like :meth:`_positions` (the state in the blocks' basis
        unless ``need_state``)."""
        return backend.attempt("linoss_scan", self._scan_triton, u, blocks, x0, need_state)

    def _scan_triton(self, u: Tensor, blocks: Tuple[Tensor, Tensor, Optional[Tensor]], x0: Optional[Tensor],
                     need_state: bool) -> Tuple[Tensor, Tensor]:
        from ..ops.triton.linoss import linoss_scan_triton

        M, f, T = blocks
        W = self._input_weight()                                    # (2P, H): v = u W^T = [Re B u; Im B u]
        T2 = None                                                   # (2, 2P): the same basis for Re and Im
        if T is not None and (x0 is not None or need_state):
            T2 = T.repeat(1, 2).to(u.dtype)
        if T2 is not None and x0 is not None:
            x0 = to_normal_basis(x0, T2)
        y, last = linoss_scan_triton(u, W, M, f, x0)
        if T2 is not None and need_state:
            last = from_normal_basis(last, T2)
        return y.to(u.dtype), last.to(u.dtype)

    def _irregular_positions(
        self, v: Tensor, steps: Tensor, rate: float, x0: Optional[Tensor], mode: str
    ) -> Tuple[Tensor, Tensor]:
        r"""Position trajectory (B, L, 2P) and final state (B, 2, 2P) with step t of sequence b
        discretized at ``rate * steps[b, t] * dt`` (thesis §4.2.4): per-step blocks ``M_t``, ``f_t``
        (formed in float64, rounded once) and a time-varying scan (``mode='loop'``: the sequential twin).

        Unlike the regular scan path, the whole sequence is scanned in the working precision (no
        float64 chunk carry: the transitions differ per step), so in float32 an IMEX layer
        (``|lambda| = 1``) drifts like ``L * 2^-24``. The per-step tables (B, Lc, 2, 2, 2P) are formed one chunk
        of the time axis at a time (:func:`~statespaces.layers.irregular.over_time_chunks`)."""
        step_bytes = v.shape[0] * v.shape[2] * 2 * 8      # M_t: (B, 2, 2, P) float64 per step (2P = v.shape[2])
        return over_time_chunks(lambda v, steps, x0: self._irregular_chunk(v, steps, rate, x0, mode),
                                (v, steps), x0, step_bytes)

    def _irregular_chunk(
        self, v: Tensor, steps: Tensor, rate: float, x0: Optional[Tensor], mode: str
    ) -> Tuple[Tensor, Tensor]:
        """:meth:`_irregular_positions` on one chunk: v (B, Lc, 2P), steps (B, Lc) -> positions (B, Lc, 2P), state
        (B, 2, 2P)."""
        def blocks(s: Tensor) -> Tuple[Tensor, Tensor]:                     # s (*S,) -> (*S, 2, 2, P), (*S, 2, P)
            sys = self._system(s.to(self._wide).unsqueeze(-1) * rate)      # M (2, 2, *S, P), f (2, *S, P)
            return sys.M.movedim((0, 1), (-3, -2)), sys.f.movedim(0, -2)

        wd = v.dtype
        M, f = (t.to(wd) for t in per_distinct_step(blocks, steps))        # (B, L, 2, 2, P), (B, L, 2, P)
        M2 = torch.cat([M, M], -1)                                          # same real transition for Re and Im
        F = torch.cat([f, f], -1) * v.unsqueeze(-2)                         # (B, L, 2, 2P)
        X = scan_block2(M2, F, x0) if mode == "scan" else scan_loop(M2, F, x0, block=True)
        return X[:, :, 1], X[:, -1]

    def _positions(
        self, v: Tensor, sys: OscillatorSystem, x0: Optional[Tensor], L: int, mode: str
    ) -> Tuple[Tensor, Tensor]:
        """Position trajectory (B, L, 2P) and final state (B, 2, 2P) for the projected input v by ``mode``."""
        if mode == "conv":
            return self._conv_path(v, sys, x0, L)
        if mode == "scan":
            return self._scan_path(v, sys, x0, L)
        if mode == "chunked":
            return self._chunked_path(v, sys, x0, L)
        # the loop, like the scan, runs the blocks in their normal form (see _scan_path, (c)): rounded to float32
        # in its own basis, a D-LinOSS block near theta = pi gave 6.7e-3 relative error at L = 1000; the positions
        # are the same in both bases, the final state is mapped back in float64
        M2, F, T2 = normal_forcing(sys, v)
        X = scan_loop(M2.unsqueeze(0).expand(L, *M2.shape), F, state_to_normal(x0, T2, v.dtype), block=True)
        return X[:, :, 1], state_from_normal(X[:, -1], T2, v.dtype)

    def _scan_path(
        self, v: Tensor, sys: OscillatorSystem, x0: Optional[Tensor], L: int
    ) -> Tuple[Tensor, Tensor]:
        r"""Position trajectory (B, L, 2P) and final state (B, 2, 2P) by a chunked parallel scan.

        Precision (issue #16, item 6). With ``|lambda| = 1`` (IMEX) nothing is forgotten, so any
        relative error ``e`` in the transition becomes a phase/modulus drift ``~ L e``: in float32,
        ``dt = sigmoid(dt_raw)`` and the entries of M rounded to 2^-24 gave 2e-4 relative error at
        L = 1e4 and 1.7e-2 at L = 1e6 against float64. So (a) A, dt, M, f and the powers of M are
        formed in float64 (``_stiffness``, ``_dt``) and only rounded at the end; (b) the sequence
        is cut into chunks of :data:`SCAN_CHUNK` steps, each scanned from a zero state in the
        working precision (error bounded by the chunk length), and the chunk-boundary states are
        carried in float64 with the exact float64 power ``M^C``; each chunk then adds
        ``M^{n+1} carry`` (float64 powers, rounded). The error no longer grows with L (figures in
        docs/linoss.md). Cost: the scan has ``log2 C`` levels instead of ``log2 L``, plus one
        elementwise pass for the carry term. (c) The chunks are scanned with the blocks in their normal form
        (:func:`~statespaces.kernels.oscillator.normal_form`, ``x = [[p, q], [0, 1]] x'``, positions unchanged):
        rounded in their own basis, D-LinOSS's blocks, far from normal near theta = 0 or pi, gave 6.7e-4 relative
        error at L = 1024 in float32, 1.5e-6 in the normal basis; LinOSS 4.1e-6 -> 3.5e-6 (IMEX) and
        3.2e-7 -> 2.5e-7 (IM), H = P = 32.
        """
        wd = v.dtype
        Bsz, _, P2 = v.shape
        C = min(L, SCAN_CHUNK)
        K = -(-L // C)
        M64 = sys.M
        M2, F, T2 = normal_forcing(sys, v)                         # local scans in the normal basis
        if K * C != L:                                              # zero forcing after the end
            F = torch.nn.functional.pad(F, (0, 0, 0, 0, 0, K * C - L))
        F = F.unflatten(1, (K, C))                                  # (B, K, C, 2, 2P)
        Xl = scan_block2(M2.expand(C, 2, 2, P2), F)                 # per chunk, from a zero state
        # M^{n+1}, n < C, in float64: (2, 2, 2P, C)
        n1 = torch.arange(1, C + 1, device=v.device)
        Mp = system_powers(sys, n1).repeat(1, 1, 2, 1)
        # chunk-boundary states s_k = M^C s_{k-1} + (chunk k from zero)_end, s_{-1} = x0; float64
        ends = from_normal_basis(Xl[:, :, -1].to(M64.dtype), T2)    # (B, K, 2, 2P)
        x0w = None if x0 is None else x0.to(M64.dtype)
        S = scan_block2(Mp[..., -1].expand(K, 2, 2, P2), ends, x0w)  # (B, K, 2, 2P)
        first = torch.zeros_like(S[:, :1]) if x0w is None else x0w.unsqueeze(1)
        carry = torch.cat([first, S[:, :-1]], 1)                    # state before chunk k
        # y_pos[k, n] = local + (M^{n+1} carry_k)_pos
        Mw, cw = Mp[1].to(wd), carry.to(wd).unsqueeze(2)            # elementwise (no autocast matmul)
        zir = Mw[0].T * cw[..., 0, :] + Mw[1].T * cw[..., 1, :]     # (B, K, C, 2P)
        y_pos = (Xl[..., 1, :] + zir).flatten(1, 2)[:, :L]
        r = L - (K - 1) * C                                         # steps in the last chunk
        last = from_normal_basis(Xl[:, -1, r - 1].to(M64.dtype), T2) + torch.einsum("ijp,bjp->bip", Mp[..., r - 1],
                                                                                     carry[:, -1])
        return y_pos, last.to(wd)

    def _channels_first(self, u: Tensor, mode: str) -> bool:
        """Whether :meth:`forward` runs :meth:`_chunked_channels_first`: the chunked mode of a causal or
        ``bidirectional="sum"`` layer on the PyTorch path (not Triton), without autocast (whose projections are
        reduced-precision matmuls)."""
        return (mode == "chunked" and self.bidirectional_mode != "concat"
                and backend.choose("chunked_conv", u, dtypes=backend.REAL) != "triton"
                and not torch.is_autocast_enabled(u.device.type))

    def _chunked_channels_first(
        self, u: Tensor, sys: OscillatorSystem, x0: Optional[Tensor], L: int, return_state: bool,
        C: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Optional[Tensor]]:
        """Output (B, L, H) and final state (B, 2, 2P) (None when not asked) of the chunked mode, with the chunk
        products in the oscillator-first layout (2P, B, L) from end to end; ``C`` (H, P, 2) given: that readout
        (the anti-causal branch: no skip), else ``self.C`` and the D skip.

        A stateless call (no ``x0``, no ``return_state``) is one autograd node,
        :func:`~statespaces.kernels.chunked_projected.chunked_conv_projected` (1.2-1.7x faster forward+backward
        at B=8, H=128, P=64, one CPU thread; docs/speed.md), which takes whole chunks of
        :data:`~statespaces.layers.oscillator_system.LINOSS_CHUNK` steps: another L is padded with zeros at the end,
        which change no output of a causal pass, and the output cut back (the twin took 1.2-1.4x longer per step at
        L = 1000 or 4095 than at 1024 or 4096). Stateful calls, any call while torch.compile or torch.export traces
        (which keep the plain ops they can trace), and backend ``"ref"`` (plain autograd, so derivatives of any
        order) take its twin of unfused ops
        :func:`~statespaces.kernels.chunked_projected.chunked_conv_projected_ref`."""
        fused = x0 is None and not return_state and not tracing() and backend.get_backend() != "ref"
        pad = (-L) % chunk_of(L) if fused else 0
        tab = chunk_tables(sys, L + pad, u.dtype)   # the blocks' own basis: the carry is float64 (see _chunked_path)
        W_in, W_out = self._input_weight(), self._output_weight(C)
        D = self.D if C is None else None
        if fused:
            if pad:
                out = chunked_conv_projected(F.pad(u, (0, 0, 0, pad)), W_in, W_out, D, tab)
                return out[:, :L].contiguous(), None     # its own tensor: a caller may modify it in place
            return chunked_conv_projected(u, W_in, W_out, D, tab), None
        out, last = chunked_conv_projected_ref(u, W_in, W_out, D, tab, column_state(x0), return_state=True)
        return out, last.transpose(1, 2).to(u.dtype)

    def _chunked_path(
        self, v: Tensor, sys: OscillatorSystem, x0: Optional[Tensor], L: int
    ) -> Tuple[Tensor, Tensor]:
        """Position trajectory (B, L, 2P) and final state (B, 2, 2P) by the chunked convolution
        (:mod:`statespaces.kernels.chunked_conv`): each of the 2P real columns is a 2x2 block system
        on (velocity, position) with the closed-form float64 powers ``M^j`` (j <= T), rounded once, in the blocks'
        normal basis (:func:`normal_chunk_tables`; the state converted in and out in the wide precision). This is
        the route of the Triton kernel, whose carry is float32; the CPU's channels-first route
        (:meth:`_chunked_channels_first`) carries in float64 and keeps the blocks' own basis (1.4e-5 relative error
        where the normal basis gives 3e-7, at L = 1000 near theta = pi, both at float32's level), which spares it
        the normal form's small ops (about 0.3-0.6 ms of a 15 ms forward+backward at B=8, L=1024, H=128)."""
        tables, T2 = normal_chunk_tables(sys, L, v.dtype)
        y_pos, last = chunked_conv(v, tables, column_state(state_to_normal(x0, T2, v.dtype)), return_state=True)
        return y_pos, state_from_normal(last.transpose(1, 2), T2, v.dtype)

    def _conv_path(
        self, v: Tensor, sys: OscillatorSystem, x0: Optional[Tensor], L: int
    ) -> Tuple[Tensor, Tensor]:
        """Position trajectory (B, L, 2P) and final state (B, 2, 2P) from the closed-form Green's
        functions (float64 trigonometry from the float64 A, dt; rounded once)."""
        wd = v.dtype
        resp = system_responses(sys, L).to(wd)                      # (2, P, L)
        kap2 = resp.repeat(1, 2, 1)                                 # (2, 2P, L)
        y_pos = fftconv(v, kap2[1])
        # final state: sum_k resp_{L-1-k} v_k
        last = torch.einsum("blp,cpl->bcp", v, kap2.flip(-1))
        if x0 is not None:
            l = torch.arange(1, L + 1, device=v.device)
            Mp = system_powers(sys, l).to(wd).repeat(1, 1, 2, 1)  # (2, 2, 2P, L): M^{n+1}
            zir = Mp[1, 0].T * x0[:, None, 0] + Mp[1, 1].T * x0[:, None, 1]         # (B, L, 2P)
            y_pos = y_pos + zir
            last = last + torch.einsum("ijp,bjp->bip", Mp[..., -1], x0)
        return y_pos, last

    def _zero_input_response(self, state: Tensor, L: int, rate: float) -> Tensor:
        zeros = torch.zeros(state.shape[0], L, self.d_model, dtype=self.param_dtype, device=self.D.device)
        return cast(Tensor, self.forward(zeros, state=state, rate=rate, mode="conv"))

    def _advance_state(self, state: Optional[Tensor], x: Tensor, rate: float) -> Tensor:
        y_state = cast(Tuple[Tensor, Tensor], self.forward(x, state=state, return_state=True, rate=rate, mode="conv"))
        return y_state[1]

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, n_oscillators={self.n_oscillators}, "
            f"discretization={self.discretization.upper()!r}, A_param={self.A_param!r}, mode={self.mode!r}"
            + (f", bidirectional={self.bidirectional_mode!r}" if self.bidirectional else "")
            + (f", a_max={self.a_max}" if getattr(self, "a_max", 1.0) != 1.0 else "")
        )


@dataclass(frozen=True)
class LinOSSConfig(LayerConfig):
    """Settings of :class:`LinOSS` (its constructor arguments but ``d_model``, same defaults).

    ``n_oscillators`` counts **oscillators** P (the seed's P), each a second-order system with
    velocity and position: the state holds 2P complex numbers. (S4D/S4's ``d_state`` counts real
    state dimensions instead; LinOSS takes no ``d_state``, ``init`` or ``real_transform``.)
    """

    kind = "linoss"
    n_oscillators: int = setting(64, "int", "number of oscillators P (state: 2P complex numbers)", lo=1)
    discretization: str = setting("im", "str", "IM (implicit, dissipative) or IMEX (symplectic)",
                                  choices=lambda: LINOSS_DISCRETIZATIONS)
    A_param: str = setting("relu", "str", "parameterization of the stiffness A >= 0", choices=lambda: A_PARAMS)
    dt_min: Optional[float] = setting(None, "float", "lower end of a log-uniform dt init (none: dt_raw ~ U[0, 1])",
                                      lo=0, hi=1, lo_open=True, hi_open=True, nullable=True)
    dt_max: Optional[float] = setting(None, "float", "upper end of a log-uniform dt init (with dt_min)",
                                      lo=0, hi=1, lo_open=True, hi_open=True, nullable=True)
    mode: str = setting("auto", "str", "default forward path", choices=lambda: LINOSS_MODES)
    bidirectional: Union[bool, str] = setting(False, "bool", "false, true/sum (kernel sum) or concat",
                                              choices=lambda: LINOSS_BIDIRECTIONAL)
    seed: Optional[int] = setting(None, "int", "seed of the layer's random init", lo=0, nullable=True)
    a_max: float = setting(1.0, "float", "initial stiffness A ~ U[0, a_max] (1: the paper's)", lo=0, lo_open=True)
    renamed = {"d_state": "n_oscillators, the number of oscillators P, which LinOSS's d_state meant before"}
