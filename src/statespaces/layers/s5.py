r"""S5: the simplified (MIMO) state space layer (Smith, Warrington & Linderman, ICLR 2023).

One diagonal state of P complex modes shared by all H channels (multi-input, multi-output):

    x'(t) = diag(Lambda) x(t) + B u(t),      y(t) = Re(C x(t)) + D u(t)

with ``Lambda`` (P,), ``B`` (P, H), ``C`` (H, P) complex and a real skip ``D`` (H,). Each mode has
its own step ``Delta_p = exp(log_dt_p)`` (log-uniform init in [dt_min, dt_max]); the discrete system

* ``zoh``: ``Lambda_bar = exp(Delta Lambda)``, ``B_bar = (Lambda_bar - 1) / Lambda * B``;
* ``bilinear``: ``Lambda_bar = (1 + Delta Lambda / 2) / (1 - Delta Lambda / 2)``,
  ``B_bar = Delta / (1 - Delta Lambda / 2) * B``

(thesis §2.3.1 rules, applied per mode) is run as ``x_k = Lambda_bar x_{k-1} + B_bar u_k`` by the
parallel associative scan over the state (:func:`statespaces.ops.scan.scan_diagonal`): no kernel and
no convolution in the forward pass. ``rate`` multiplies every ``Delta`` (the paper's
``step_rescale``, thesis §2.4.1).

Initialisation (S5 §4.3 / app. B.1): HiPPO-N, the normal part ``A_LegS + p p^T`` of HiPPO-LegS
(thesis Thm 6.7; :func:`statespaces.hippo.forms.nplr`), diagonalized as ``V diag(Lambda) V^*``
with V unitary. With ``blocks = J``, P is split into J blocks of size P/J, each initialised with the
HiPPO-N eigenvalues of size P/J (block-diagonal ``V``). ``B = V^* B0``, ``C = C0 V`` for random real
``B0`` (P, H) (LeCun normal: variance 1/H) and complex ``C0`` (H, P) (unit variance per entry, as
S4D's C). With ``conj_sym`` (default) only the P/2 modes with ``Im Lambda > 0`` of each block are
kept and the output is ``2 Re(C x)`` (the other half are their conjugates), so the state holds P/2
complex numbers.

Bidirectional (the paper's option): the same ``(Lambda_bar, B_bar)`` also run backwards in time,
``x^b_k = Lambda_bar x^b_{k+1} + B_bar u_k``, read out by a second ``C_b``:
``y_k = scale Re(C x_k + C_b x^b_k) + D u_k``. As in the paper, lag 0 is in both directions (so
``kernel`` folds ``Re(C_b B_bar)`` into the causal lag 0 and returns the anti-causal part on lags
-1..-L, the library's convention).

Irregular sampling: ``forward(x, dt=...)`` or ``forward(x, timestamps=...)`` discretizes each interval
with its own ``Delta * rate * dt[b, t]`` (see :mod:`.irregular`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Optional, Tuple, Union

import torch
from torch import nn

from .._checks import (
    check_batch_size,
    check_choice,
    check_flag,
    check_length,
    check_positive_int,
    check_result,
    public,
    seeded_generator,
    tracing,
)
from ..discretize import discretize_diagonal, log_discrete_eigenvalues, undiscretize_diagonal
from ..kernels.vandermonde import _powers
from ..ops.scan import scan_block2, scan_diagonal
from .base import BIDIRECTIONAL_HINT, SSMLayer, check_rate
from .config import LayerConfig, setting
from .init import (
    REAL_TRANSFORMS,
    as_complex,
    c_init,
    load_diagonal_system,
    log_dt_init,
    real_forward,
    real_inverse,
)
from .irregular import per_distinct_step, reversed_steps
from .modes import Modes

Tensor = torch.Tensor

#: Discretizations of S5 (paper: ZOH, bilinear).
S5_DISCRETIZATIONS = ("zoh", "bilinear")


def hippo_n_init(P: int, blocks: int, conj_sym: bool) -> Tuple[Tensor, Tensor]:
    r"""Block-diagonal HiPPO-N initialisation: eigenvalues (M,) and unitary eigenvectors per block.

    Each of the ``blocks`` blocks of size ``n = P / blocks`` is the normal part of HiPPO-LegS of size
    n, ``A + p p^T = V diag(Lambda) V^*`` (thesis Thm 6.7). With ``conj_sym`` only the n/2 modes with
    ``Im Lambda > 0`` are kept (:func:`statespaces.hippo.forms.dplr`).

    Returns:
        ``(Lambda, V)`` complex128: Lambda (M,) with M = P/2 (conj_sym) or P, and V (P, M)
        block-diagonal, columns orthonormal.
    """
    from ..hippo.forms import dplr, nplr

    n = P // blocks
    if conj_sym:
        lam, _, _, v = dplr("legs", n)
    else:
        lam, _, _, v = nplr("legs", n)
    Lam = lam.repeat(blocks)
    V = torch.block_diag(*([v] * blocks))
    return Lam, V


class S5(SSMLayer):
    r"""MIMO diagonal SSM layer computed by a parallel scan (S5).

    Args:
        d_model: channels H.
        d_state: state size P of the paper (P complex modes; P/2 stored with ``conj_sym``).
        blocks: number J of HiPPO-N blocks on the diagonal of the init (P/J each; the paper's ``J``).
        discretization: ``"zoh"`` (default) or ``"bilinear"``.
        dt_min: lower end of the log-uniform init of the per-mode step.
        dt_max: upper end of the log-uniform init of the per-mode step.
        conj_sym: keep half of the conjugate modes and output ``2 Re`` (default, as the paper).
        real_transform: how ``Re(Lambda) < 0`` is kept: ``"exp"`` (default), ``"softplus"``,
            ``"relu"`` (clamped at -1e-4: the paper's ``clip_eigs``), ``"none"`` (the paper's
            default, unconstrained; an unstable mode then raises ``ValueError``).
        bidirectional: run the state backwards too, with its own ``C`` (see the module notes).
        seed: seed of this layer's random init.

    Parameters: ``log_dt`` (M,), ``A_real``, ``A_imag`` (M,), ``B`` (M, H, 2), ``C`` (K, H, M, 2) with
    K = 2 if bidirectional, ``D`` (H,) (``(..., 2)``: real views of complex tensors).

    Shapes:
        forward: (B, L, H) -> (B, L, H); kernel(L): (H_out, H_in, L), or (2, H_out, H_in, L) if
        bidirectional; state: (B, M) complex.

    Example::

        >>> layer = S5(d_model=4, d_state=8)
        >>> y = layer(torch.randn(2, 16, 4))
    """

    stepper_kind = "mimo"               # layer.stepper(B): statespaces.layers.stepper.MIMOStepper

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        blocks: int = 1,
        discretization: str = "zoh",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        conj_sym: bool = True,
        real_transform: str = "exp",
        bidirectional: bool = False,
        seed: Optional[int] = None,
    ) -> None:
        super().__init__()
        self.d_model = check_positive_int("d_model", d_model)
        self.d_state = check_positive_int("d_state", d_state)
        self.blocks = check_positive_int("blocks", blocks)
        self.discretization = check_choice("discretization", discretization, S5_DISCRETIZATIONS)
        self.real_transform = check_choice("real_transform", real_transform, REAL_TRANSFORMS)
        self.conj_sym = check_flag("conj_sym", conj_sym)
        self.bidirectional = check_flag("bidirectional", bidirectional, BIDIRECTIONAL_HINT)
        P, J, H = self.d_state, self.blocks, self.d_model
        if P % J:
            raise ValueError(f"d_state={P} is not a multiple of blocks={J}; "
                             "each HiPPO-N block has d_state/blocks modes")
        if conj_sym and (P // J) % 2:
            raise ValueError(
                f"d_state/blocks = {P // J} is odd: with conj_sym each block keeps half of its conjugate pairs, "
                "so use an even block size (or conj_sym=False)"
            )
        gen = seeded_generator(seed)
        dtype = torch.get_default_dtype()
        Lam, V = hippo_n_init(P, J, conj_sym)
        M = self.n_modes = Lam.shape[0]
        self.scale = 2.0 if conj_sym else 1.0
        self.log_dt = nn.Parameter(log_dt_init(M, dt_min, dt_max, gen).to(dtype))
        self.A_real = nn.Parameter(real_inverse(-Lam.real, self.real_transform).to(dtype))
        self.A_imag = nn.Parameter(Lam.imag.to(dtype))
        B0 = torch.randn(P, H, dtype=torch.float64, generator=gen) / math.sqrt(H)    # LeCun normal
        self.B = nn.Parameter(torch.view_as_real(V.conj().T @ B0.to(torch.complex128)).to(dtype))
        K = 2 if bidirectional else 1
        C0 = c_init((K, H, P), gen)
        self.C = nn.Parameter(torch.view_as_real(C0 @ V).to(dtype))
        self.D = nn.Parameter(torch.randn(H, generator=gen, dtype=torch.float64).to(dtype))

    # ---- parameters -----------------------------------------------------------------------------
    def ssm_parameters(self) -> Iterator[nn.Parameter]:
        """``log_dt``, Lambda and B get the SSM optimizer settings (the paper's ``ssm_lr``; C, D do not)."""
        yield from (self.log_dt, self.A_real, self.A_imag, self.B)

    def continuous_A(self) -> Tensor:
        """Continuous-time eigenvalues ``Lambda = -f(A_real) + i A_imag``, complex (M,)."""
        A = torch.complex(-real_forward(self.A_real, self.real_transform), self.A_imag)
        if self.real_transform == "none" and bool((A.real >= 0).any()):
            raise ValueError(
                f"{int((A.real >= 0).sum())} eigenvalues of Lambda have Re >= 0 (unstable) with "
                "real_transform='none'; use real_transform='exp', 'softplus' or 'relu' (the paper's clip_eigs)"
            )
        return A

    @property
    def B_complex(self) -> Tensor:
        """Input matrix (M, H) complex (in the eigenbasis)."""
        return as_complex(self.B)

    @property
    def C_complex(self) -> Tensor:
        """Output matrices (K, H, M) complex; K = 2 if bidirectional (``[1]`` reads the backward state)."""
        return as_complex(self.C)

    def step_sizes(self, rate: float = 1.0) -> Tensor:
        """Per-mode steps ``rate * exp(log_dt)``, (M,)."""
        return torch.exp(self.log_dt) * check_rate(rate)

    def _discrete(self, steps: Tensor, A: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """``(Lambda_bar, g)`` for per-mode steps ``steps`` (..., M): ``B_bar = g[..., None] * B``; ``A`` the
        continuous eigenvalues when the caller has them (default :meth:`continuous_A`).

        Applies the thesis' diagonal rules to ``(Delta Lambda, Delta)`` with unit step (Lemma 2.13:
        a rule depends on ``(dt, A, B)`` only through ``(dt A, dt B)``)."""
        A = self.continuous_A() if A is None else A
        dtA = steps * A
        lam_bar, gain = discretize_diagonal(dtA, steps.to(dtA.dtype), torch.ones((), dtype=steps.dtype),
                                            self.discretization)
        return lam_bar, gain

    def discrete_system(self, rate: float = 1.0) -> Tuple[Tensor, Tensor]:
        """``(Lambda_bar (M,), B_bar (M, H))`` complex at ``rate``."""
        lam_bar, gain = self._discrete(self.step_sizes(rate))
        return lam_bar, gain.unsqueeze(-1) * self.B_complex

    def _step_system(self, rate: float) -> Tuple[Tensor, Tensor, Tensor]:
        """What :meth:`step` multiplies by: ``(Lambda_bar (M,), W_in (H, 2M), W_out (2M, H))``, the input and output
        maps as real matrices on the interleaved (Re, Im) pairs of the state (``torch.view_as_real``), contiguous:
        one product each way per step, where the complex ``C.real.T`` / ``B_bar.imag.T`` views were copied by every
        product (the eager step took 9.6x the stepper's time at B = 1). ``W_out`` holds the conjugate-pair scale."""
        lam_bar, Bb = self.discrete_system(rate)
        H, M = self.d_model, lam_bar.shape[-1]
        W_in = torch.view_as_real(Bb.T).reshape(H, 2 * M)                     # columns Re B_bar[m], Im B_bar[m]
        C = (self.scale * self.C_complex[0]).conj().resolve_conj()             # rows Re C[:, m], -Im C[:, m]
        W_out = torch.view_as_real(C).reshape(H, 2 * M).T.contiguous()
        return lam_bar, W_in, W_out

    def _modal_system(self, rate: float) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(steps, Lambda, log Lambda_bar, B_bar)`` at ``rate``: (M,), (M,), (M,), (M, H), the modes that
        :meth:`kernel` and :meth:`modes` read. ``log Lambda_bar`` comes from ``Delta Lambda`` itself: the log of a
        formed Lambda_bar is -inf where it underflows to 0 (ZOH, Delta Re Lambda < -745 in float64), and
        ``Lambda_bar^0 = exp(-inf * 0)`` would be NaN."""
        steps = self.step_sizes(rate)
        A = self.continuous_A()
        _, gain = self._discrete(steps, A)
        return steps, A, log_discrete_eigenvalues(steps * A, self.discretization), gain.unsqueeze(-1) * self.B_complex

    # ---- views ----------------------------------------------------------------------------------
    @public
    def kernel(self, L: int, rate: float = 1.0) -> Tensor:
        r"""MIMO kernel ``K[h, k, l] = scale Re(C diag(Lambda_bar^l) B_bar)_{hk}``, (H_out, H_in, L).

        ``y_n = sum_{l <= n} K[:, :, l] u_{n-l} + D u_n`` (D is not in K). Bidirectional:
        (2, H_out, H_in, L) with ``K[0]`` including the backward lag-0 term ``scale Re(C_b B_bar)`` and
        ``K[1, :, :, l]`` acting on ``u_{n+1+l}`` (lags -1..-L). For tests and analysis: the forward
        pass never forms it.
        """
        L = check_length(L)
        _, _, log_lam, Bb = self._modal_system(check_rate(rate))
        C = self.C_complex
        powers = _powers(log_lam, L + 1, 1)                                # (M, L + 1)
        K = self.scale * torch.einsum("hm,ml,mk->hkl", C[0], powers[:, :L], Bb).real
        if self.bidirectional:
            back = self.scale * torch.einsum("hm,ml,mk->hkl", C[1], powers[:, 1:], Bb).real
            lag0 = self.scale * (C[1] @ Bb).real
            K = torch.stack([torch.cat([K[..., :1] + lag0.unsqueeze(-1), K[..., 1:]], -1), back])
        check_result(self, K, "kernel")
        return K

    def modes(self, rate: float = 1.0) -> Modes:
        r"""The explicit-operator view (:class:`~statespaces.layers.modes.Modes`, complex128): M modes shared
        by all channels (MIMO, structure ``"diagonal"``), ``log_eig = log Lambda_bar`` (M,), ``B = B_bar``
        (M, H), ``C = scale C`` (K, H, M), ``dt = Delta rate`` (M,), ``A = Lambda``, so that
        ``kernel(L)[..., l] = Re sum_m C_m B_m Lambda_bar_m^l`` (eq. 3.2 with a matrix of residues per mode).

        Bidirectional: ``C[1] = scale C_b Lambda_bar`` reads the anti-causal kernel on lags -1..-L, and the
        backward scan's lag 0, ``scale Re(C_b B_bar)``, a full (H, H) matrix, is ``feedthrough``."""
        c128 = torch.complex128
        steps, A, log_lam, Bb = self._modal_system(check_rate(rate))
        # in complex128 from here (the parameters' exact system): products of float32 parameters in complex64
        # left the feedthrough 7e-8 off the lag 0 that from_modes recomputes, which its 1e-8 check refused
        log_lam, Bb = log_lam.to(c128), Bb.to(c128)
        C = self.scale * self.C_complex.to(c128)
        feedthrough = None
        if self.bidirectional:
            feedthrough = (C[1] @ Bb).real
            C = torch.stack([C[0], C[1] * torch.exp(log_lam)])
        return Modes(
            log_eig=log_lam.to(c128), B=Bb.to(c128), C=C.to(c128), D=self.D.to(torch.float64),
            dt=steps.to(torch.float64), A=A.to(c128), discretization=self.discretization, structure="diagonal",
            bidirectional="sum" if self.bidirectional else None, feedthrough=feedthrough,
        )

    @classmethod
    def from_modes(cls, modes: Modes, discretization: Optional[str] = None, real_transform: str = "exp",
                   dtype: Optional[torch.dtype] = None, tol: float = 1e-8) -> "S5":
        r"""An S5 layer whose forward at rate 1 reproduces the kernel of MIMO diagonal ``modes``.

        Each of the M modes becomes one stored mode of a ``conj_sym`` layer (``d_state = 2 M``, output
        ``2 Re``): ``Lambda = x / dt`` with ``x`` the inverse of the rule at ``lambda``
        (:func:`~statespaces.discretize.undiscretize_diagonal`), ``B = r B / g`` with ``g`` the rule's input
        gain, ``C = C / 2``, ``D`` the skip. Bidirectional modes (``"sum"``) become a bidirectional layer with
        ``C_b = C[1] / (2 lambda)``; S5 then adds its backward scan's lag 0, which must be the modes'
        ``feedthrough``.

        Args:
            modes: from :meth:`modes` (of any S5) or built by hand: MIMO, structure ``"diagonal"``, one
                ``dt`` per mode (None: 1), no Jordan terms.
            discretization: rule of the new layer (default the modes' own when S5 has it, else ``zoh``).
            real_transform: how the new layer keeps Re(Lambda) < 0.
            dtype: parameter dtype (default: torch's default dtype).
            tol: relative tolerance of the bidirectional lag-0 check.

        Raises:
            TypeError: SISO modes, or oscillator (LinOSS) modes. ValueError: an eigenvalue the rule cannot
            produce with Re(Lambda) < 0 (|lambda| >= 1), Jordan terms, or bidirectional modes whose lag-0
            term is not the one an S5 has (or that have an eigenvalue 0).
        """
        if not modes.mimo or modes.structure != "diagonal":
            raise TypeError(f"S5.from_modes needs MIMO diagonal modes (S5.modes()), got structure "
                            f"{modes.structure!r} with log_eig of shape {tuple(modes.log_eig.shape)}; "
                            "per-channel modes build S4D.from_modes, oscillator modes LinOSS.from_modes")
        modes._check_common("S5")
        if modes.ramp is not None and bool((modes.ramp != 0).any()):
            raise ValueError("S5.from_modes: these modes have Jordan (ramp) terms, "
                             "which a diagonal layer cannot represent")
        method = discretization
        if method is None:
            method = modes.discretization if modes.discretization in S5_DISCRETIZATIONS else "zoh"
        method = check_choice("discretization", method, S5_DISCRETIZATIONS)
        c128, f64 = torch.complex128, torch.float64
        log_eig = modes.log_eig.to(c128)
        M, H = modes.n_modes, modes.d_model
        dt = torch.ones(M, dtype=f64) if modes.dt is None else modes.dt.to(f64)
        A = undiscretize_diagonal(log_eig, torch.ones((), dtype=f64), method) / dt     # rules see dt A only
        if not bool((A.real < 0).all()):
            raise ValueError(
                f"S5.from_modes: the {method} rule cannot produce {int((~(A.real < 0)).sum())} of these discrete "
                "eigenvalues with Re(Lambda) < 0 (|lambda| >= 1 or off the rule's image)"
            )
        _, gain = discretize_diagonal(dt * A, dt.to(c128), torch.ones((), dtype=f64), method)
        rB = modes.input_weights().to(c128)                                          # = B_bar of the new layer
        B = rB / gain.unsqueeze(-1)
        C = modes.C.to(c128) / 2
        bidirectional = modes.bidirectional == "sum"
        if bidirectional:
            lam = torch.exp(log_eig)
            if not bool((lam != 0).all()):
                raise ValueError("S5.from_modes: a bidirectional S5 reads its backward kernel as C_b lambda^(l+1); "
                                 "an eigenvalue 0 leaves C_b undefined")
            C = torch.stack([C[0], C[1] / lam])
            lag0 = 2 * (C[1] @ rB).real
            want = torch.zeros_like(lag0) if modes.feedthrough is None else modes.feedthrough.to(f64)
            err = float((lag0 - want).abs().max().detach() / lag0.abs().max().detach().clamp_min(1e-300))
            if not err <= tol:
                raise ValueError(f"S5.from_modes: a bidirectional S5 adds its backward scan's lag 0, Re(C_b B_bar), to "
                                 f"the causal kernel; these modes' feedthrough differs from it (relative {err:.1e} > "
                                 f"tol={tol:g}). Build S4D/LinOSS-style layers from modes without that term")
        layer = cls(H, 2 * M, discretization=method, real_transform=real_transform, bidirectional=bidirectional)
        layer = layer.to(torch.get_default_dtype() if dtype is None else dtype)
        load_diagonal_system(layer, dt, A, B, C, modes.D)
        return layer

    @public
    def initial_state(self, batch_size: int) -> Tensor:
        """Zero state (B, M) complex."""
        batch_size = check_batch_size(batch_size)
        cdtype = torch.complex128 if self.param_dtype == torch.float64 else torch.complex64
        return torch.zeros(batch_size, self.n_modes, dtype=cdtype, device=self.D.device)

    def _input_proj(self, u: Tensor, Bb: Tensor, gain: Optional[Tensor] = None) -> Tensor:
        """``B_bar u`` complex (..., M) for real u (..., H) and B_bar (M, H), or ``gain * (B u)`` with the per-step
        gain (..., M) complex of irregular sampling (``B_bar_t = gain_t B``)."""
        re, im = u @ Bb.real.T, u @ Bb.imag.T
        v = torch.complex(re.to(u.dtype), im.to(u.dtype))
        return v if gain is None else gain * v

    def _output(self, x_re: Tensor, x_im: Tensor, k: int = 0) -> Tensor:
        """``scale Re(C_k x)`` (..., H) for states x (..., M) given as real and imaginary parts."""
        C = self.C_complex[k]
        return self.scale * (x_re @ C.real.T - x_im @ C.imag.T)

    @public
    def step(self, x: Tensor, state: Tensor, rate: float = 1.0) -> Tuple[Tensor, Tensor]:
        """One recurrent step: ``state' = Lambda_bar state + B_bar x``, ``y = scale Re(C state') + D x``.

        Args:
            x: (B, H). state: (B, M) complex.

        Returns:
            ``(y, state')`` with y (B, H).
        """
        self._check_step_input(x, state)
        rate = check_rate(rate)

        lam_bar, W_in, W_out = self._step_cache.get(self, rate, lambda: self._step_system(rate))
        u = x.to(self.param_dtype)
        Bsz, M = state.shape
        v = torch.view_as_complex((u @ W_in).view(Bsz, M, 2))                      # B_bar u, (B, M) complex
        new_state = lam_bar * state + v.to(state.dtype)
        y = torch.view_as_real(new_state).reshape(Bsz, 2 * M).to(W_out.dtype) @ W_out + self.D * u
        y = y.to(x.dtype)                        # cast first: a float16 output that overflows is refused too
        check_result(self, (y, new_state), "step output", x=x, state=state)
        return y, new_state

    @public
    def forward(
        self,
        x: Tensor,
        state: Optional[Tensor] = None,
        return_state: bool = False,
        rate: float = 1.0,
        dt: Optional[Tensor] = None,
        timestamps: Optional[Tensor] = None,
    ) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        """Apply the layer to x (B, L, H) by a parallel scan over the state.

        Args:
            x: input sequence (B, L, H), real.
            state: (B, M) complex state before the first step (None: zeros). Not with bidirectional.
            return_state: also return the state after the last step.
            rate: step-size multiplier (the paper's ``step_rescale``).
            dt: irregular sampling, (B, L) positive multipliers of the step of each interval.
            timestamps: irregular sampling, (B, L) increasing sample times in units of the step
                (see :mod:`.irregular`); not together with ``dt``.

        Returns:
            y (B, L, H) in the dtype of x, and the new state if ``return_state``.
        """
        rate = self._check_forward(x, state, return_state, rate)
        steps = self._check_intervals(x, dt, timestamps)
        u = x.to(self.param_dtype)
        cdtype = self.initial_state(1).dtype
        gain: Optional[Tensor] = None
        back: Optional[Tuple[Tensor, Tensor]] = None        # (a, gain) of the reversed pass, irregular sampling
        if steps is None:
            lam_bar, Bb = self.discrete_system(rate)
            a = lam_bar.unsqueeze(0)                                       # (1, M): time-invariant
        else:
            # B_bar_t = gain_t B per step: applied as gain_t (B u_t), never formed as a (B, L, M, H) tensor
            a, gain = per_distinct_step(lambda s: self._discrete(self._per_step(s, rate)), steps)
            Bb = self.B_complex
            if self.bidirectional:      # each sample held over the interval after it: the tables reordered
                back = (reversed_steps(a), reversed_steps(gain))
        if tracing():                                                      # compile/export: real arithmetic
            y, new_state = self._forward_real(u, a, Bb, state, return_state, gain, back)
        else:
            v = self._input_proj(u, Bb, gain).to(cdtype)                   # (B, L, M)
            X = scan_diagonal(a, v, state)                                 # (B, L, M)
            y = self._output(X.real, X.imag) + self.D * u
            if self.bidirectional:
                if back is None:
                    Xb = scan_diagonal(a, v.flip(1))
                else:
                    Xb = scan_diagonal(back[0], self._input_proj(u.flip(1), Bb, back[1]).to(cdtype))
                Xb = Xb.flip(1)
                y = y + self._output(Xb.real, Xb.imag, 1)
            # a copy: a view of X would keep the whole (B, L, M) trajectory alive with the state, and editing the
            # state in place would break the backward, which saves X
            new_state = X[:, -1].clone(memory_format=torch.contiguous_format) if return_state else None
        y = y.to(x.dtype)                        # cast first: a float16 output that overflows is refused too
        check_result(self, (y, new_state), input=x, state=state)
        if return_state:
            assert new_state is not None
            return y, new_state
        return y

    def _per_step(self, steps: Tensor, rate: float) -> Tensor:
        """The step of every mode at every sample, (B, L, M), for multipliers ``steps`` (B, L)."""
        return steps.to(self.param_dtype).unsqueeze(-1) * self.step_sizes(rate)

    def _forward_real(self, u: Tensor, a: Tensor, Bb: Tensor, state: Optional[Tensor],
                      return_state: bool, gain: Optional[Tensor] = None,
                      back: Optional[Tuple[Tensor, Tensor]] = None) -> Tuple[Tensor, Optional[Tensor]]:
        r""":meth:`forward`'s scan and read-out in real arithmetic: the path ``torch.compile`` and
        ``torch.export`` trace (issue 21). Each mode ``x_k = a_k x_{k-1} + v_k`` becomes the 2x2
        rotation-scaling block ``[[Re a, -Im a], [Im a, Re a]]`` on ``(Re x, Im x)``, scanned by
        :func:`~statespaces.ops.scan.scan_block2` (the LinOSS scan); the input projection and the
        read-out use the real and imaginary parts of ``B_bar`` and ``C``. No complex tensor enters
        the scan: Inductor generates no code for complex tensors, and ``torch.compile(fullgraph=True)``
        failed inside the complex scan (a complex dtype view of a stride-0 buffer).

        Eager mode keeps the complex :func:`~statespaces.ops.scan.scan_diagonal` (its Triton kernel
        on CUDA): this form is 1.4-1.7x slower forward+backward on CPU (``benchmarks/bench_s5.py``).
        The two are tested equal (tests/test_s5.py).

        Args: u (B, L, H) real; a (1, M) or (B, L, M) complex; Bb (M, H) complex; gain None or (B, L, M) complex
        (irregular sampling: ``B_bar_t = gain_t Bb``); state (B, M) complex or None; back: ``(a, gain)`` of a
        bidirectional layer's reversed pass under irregular sampling (None: ``(a, gain)``). Returns y (B, L, H) and
        the final state (B, M) complex (or None).
        """
        def blocks(u: Tensor, a: Tensor, gain: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
            vr, vi = u @ Bb.real.T, u @ Bb.imag.T
            if gain is not None:
                gr, gi = gain.real.to(u.dtype), gain.imag.to(u.dtype)
                vr, vi = gr * vr - gi * vi, gr * vi + gi * vr
            F = torch.stack([vr.to(u.dtype), vi.to(u.dtype)], -2)        # (B, L, 2, M)
            ar, ai = a.real.to(u.dtype), a.imag.to(u.dtype)
            return torch.stack([torch.stack([ar, -ai], -2), torch.stack([ai, ar], -2)], -3), F   # (..., 2, 2, M)

        M, F = blocks(u, a, gain)
        s0 = None if state is None else torch.stack([state.real, state.imag], -2).to(u.dtype)
        X = scan_block2(M, F, s0)                                          # (B, L, 2, M)
        y = self._output(X[..., 0, :], X[..., 1, :]) + self.D * u
        if self.bidirectional:
            Mb, Fb = (M, F.flip(1)) if back is None else blocks(u.flip(1), *back)
            Xb = scan_block2(Mb, Fb).flip(1)
            y = y + self._output(Xb[..., 0, :], Xb[..., 1, :], 1)
        last = torch.complex(X[:, -1, 0], X[:, -1, 1]) if return_state else None
        return y, last

    def extra_repr(self) -> str:
        s = (f"d_model={self.d_model}, d_state={self.d_state}, blocks={self.blocks}, "
             f"discretization={self.discretization!r}")
        if not self.conj_sym:
            s += ", conj_sym=False"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s


@dataclass(frozen=True)
class S5Config(LayerConfig):
    """Settings of :class:`S5` (its constructor arguments but ``d_model``, same defaults).

    ``d_state`` is the size P of the shared MIMO state (the HiPPO-N system's dimension): with
    ``conj_sym`` the layer stores P/2 complex modes, one per conjugate pair, and its output is
    2 Re(C x); without it, P complex modes. One state serves all H channels (S4D has one per channel).
    """

    kind = "s5"
    d_state: int = setting(64, "int", "state size P of the shared MIMO state (P/2 stored modes with conj_sym)", lo=1)
    blocks: int = setting(1, "int", "number J of HiPPO-N diagonal blocks of the init", lo=1)
    discretization: str = setting("zoh", "str", "discretization rule", choices=lambda: S5_DISCRETIZATIONS)
    dt_min: float = setting(1e-3, "float", "lower end of the log-uniform dt init", lo=0, lo_open=True)
    dt_max: float = setting(1e-1, "float", "upper end of the log-uniform dt init", lo=0, lo_open=True)
    conj_sym: bool = setting(True, "bool", "keep one mode per conjugate pair (real output 2 Re)")
    real_transform: str = setting("exp", "str", "how Re(Lambda) < 0 is kept", choices=lambda: tuple(REAL_TRANSFORMS))
    bidirectional: bool = setting(False, "bool", "a backward scan with its own C (no recurrent state)")
    seed: Optional[int] = setting(None, "int", "seed of the layer's random init", lo=0, nullable=True)
    renamed = {"n_oscillators": "d_state, the state size P: S5 has no oscillators"}
