r"""S4: the diagonal-plus-low-rank (DPLR) structured state space layer (thesis ch. 3.3, Alg. 1, app. C.1).

Per channel h (H channels, real state size N = 2M, M conjugate-pair modes, rank r):

    x'(t) = A_h x(t) + B_h u(t),   y(t) = Re-part output C_h x(t) + D_h u(t),
    A_h = diag(Lambda_h) - P_h P_h^*          (Hurwitz DPLR, §3.3.3, Lemma 3.8; Thm 6.7 / Cor 6.8)

over the full conjugate-symmetric set of N modes (Lambda, P, B, C store the half; see
:mod:`statespaces.kernels.dplr` for the exact conventions). Discretization is bilinear (the only
rule with a DPLR structure, §3.4.1). The kernel is computed by Algorithm 1 (truncated generating
function at the roots of unity, Woodbury, Cauchy, inverse FFT) in O(H (N + L)) memory.

Design decisions (thesis app. C.1 leaves them open):

* **C, not C~, is the parameter by default.** ``C~ = (I - dA^L)^T C`` (eq. C.4) is recomputed at
  every call from the rows ``c^T dA^L`` (squarings of the real (H, N, N) form, then row products,
  O(H N^3 log L) at most, independent of the batch; on the CPU the stateless forward skips it and takes
  the kernel straight from the dense powers, :func:`statespaces.kernels.chunked.power_kernel`). So the
  convolution, the recurrence, any length L and any ``rate`` all use the same C, and nothing has to be
  inverted for stepping.
* **Or learn C~ for one length** (``l_max=L``; app. C.1.2 allows this reparameterization, and the
  official implementation does it): the parameter ``C`` then holds C~ for kernels of length
  ``l_max``, and ``kernel(L <= l_max)`` at rate 1 skips ``dA^L`` altogether (measured: about a
  third of the layer's CPU time at H=128, N=64, L=1024). The true C, needed by the recurrence,
  other rates and longer kernels, is recovered by one solve with ``I - dA^{l_max}``
  (:func:`statespaces.kernels.dplr.untruncated_C`). At init, C~ is computed from the same C
  as the default layer's, so both parameterizations start as the same system.
* The state (B, H, M) is the complex half of the conjugate-symmetric full state; the low-rank term
  couples it with its conjugate, so the recurrence is real-linear, not complex-linear.
* The two state maps of the chunked forward (free response of a state, state after a chunk) are
  computed in the time domain by chunks of matrix powers (:mod:`statespaces.kernels.chunked`),
  not by the generating function: the latter divides by ``I - dA^L`` and lost up to half the
  digits in float32 for states with slowly decaying components (small dt, LegT/FouT). On CPU a
  stateful forward does output and state in one chunked pass through the real dense form instead
  (:func:`statespaces.kernels.chunked.chunked_conv_dense`; rule
  :func:`statespaces.kernels.chunked_conv.prefer_chunked`), and a stateless one (not bidirectional, not
  with ``l_max``) convolves by FFT with the kernel from the same dense powers
  (:func:`statespaces.kernels.chunked.power_kernel`; rule :func:`statespaces.kernels.chunked_conv.prefer_power_kernel`).
  On CUDA (float32, N <= 64) the chunked pass is the Triton kernels of
  :mod:`statespaces.ops.triton.chunked_dense`, stateless calls included (H200: 14x the Cauchy/FFT
  route fwd+bwd at B=16, L=4096).
  With ``l_max`` the pass needs the true C, recovered from C~ by the same conversion as the step;
  where that is ill-conditioned a call without a state (``return_state`` only) falls back to the FFT
  route (its C~ kernel is exact for ``L <= l_max``) and a call with a state is refused, as ``step``
  is. Stateless ``l_max`` calls keep the FFT: its C~ kernel needs no ``dA^L`` at all, and it measured
  2.3x faster than the chunked pass with the recovery (CPU, fwd+bwd, L = 1024).
* **Tied SSMs** (``n_ssm``, §7.2.2): Lambda, P and B are stored for ``n_ssm`` SSMs, each shared
  by ``H / n_ssm`` consecutive channels; dt, C and D stay per channel (the thesis ties (A, B);
  a per-channel dt keeps H timescales, as in the official code). The shared rows are repeated
  to H channels in :meth:`S4._raw_system`, so every view (kernel, step, chunks) is unchanged.
* ``Re(Lambda) < 0`` is kept by ``real_transform`` (``exp`` default, ``softplus``, ``relu``, or
  ``none``: then a violating value raises). LegT/FouT have ``Re(Lambda) = 0``; their init is
  floored at ``-1e-4`` (a shift of at most ``dt * 1e-4`` in the discrete eigenvalues).
"""
from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass
from typing import Iterator, Optional, Tuple, cast

import torch
from torch import nn

from .._checks import (
    CAUSAL_HINT,
    check_batch_size,
    check_choice,
    check_flag,
    check_length,
    check_positive_int,
    check_result,
    public,
    refuse_if,
    seeded_generator,
    tracing,
)
from ..discretize import undiscretize_diagonal
from ..kernels import chunked
from ..kernels.chunked_conv import prefer_chunked, prefer_power_kernel
from ..kernels.dplr import (
    CAUCHY_BACKENDS,
    DPLRStep,
    bilinear_dplr_system,
    bilinear_real,
    discrete_power,
    dplr_kernel,
    dplr_real_system,
    dplr_step,
    truncated_C,
    truncated_C_wide,
    untruncated_C,
)
from ..kernels.vandermonde import vandermonde
from ..ops.fftconv import fftconv
from .base import BIDIRECTIONAL_HINT, SSMLayer, check_rate, freeze_ssm
from .config import LayerConfig, setting
from .diagonalized_s4 import DiagonalizedS4
from .init import (
    REAL_TRANSFORMS,
    as_complex,
    c_init,
    check_n_ssm,
    log_dt_init,
    real_forward,
    real_inverse,
    s4d_init,
    tie_channels,
)
from .modes import MODES_TOL, Modes, ModesAccuracyWarning

Tensor = torch.Tensor

#: Initializations of (Lambda, P, B): HiPPO measures through :func:`statespaces.hippo.dplr`, or random.
S4_INITS = ("legs", "legt", "fout", "lagt", "rand")
#: Minimal low-rank for each init (LegT is rank 2, Cor 6.8).
S4_MIN_RANK = {"legs": 1, "legt": 2, "fout": 1, "lagt": 1, "rand": 1}
_REAL_FLOOR = 1e-4
#: Largest error amplification of the C~ -> C recovery (float64): ``cond(I - dA^{l_max})`` (the solve) plus
#: ``l_max ||dA^{l_max}|| / sigma_min(I - dA^{l_max})`` (the rounding of ``dA^{l_max}``, about ``l_max`` ulps after its
#: squarings, divided by how far ``I - dA^{l_max}`` is from singular). Times 2^-53: a relative error bound of ~1e-7 on
#: C, float32's own rounding (measured on equally undamped modes against mpmath: bounds 1e8 / 1e11 / 1e14, errors of
#: step() 3.7e-9 / 1.7e-5 / 2.1e-2).
_C_RECOVERY_MAX_COND = 1e9




def s4_init(name: str, N: int, H: int, rank: Optional[int] = None,
            generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor, Tensor]:
    r"""``(Lambda (H, M), P (r, H, M), B (H, M))`` complex128 of a Hurwitz DPLR init, M = N/2.

    ========  ==============================================================================
    ``legs``  HiPPO-LegS (5.1): ``A = V (Lambda - P P^*) V^*``, ``Re Lambda = -1/2`` (Cor 6.8)
    ``legt``  HiPPO-LegT (5.2), rank 2, ``Re Lambda = 0``
    ``fout``  HiPPO-FouT (5.3, frequency-based, see hippo notes), ``Re Lambda = 0``
    ``lagt``  HiPPO-LagT (not in the thesis; from :mod:`statespaces.hippo`)
    ``rand``  our choice (the thesis names S4-Rand without a formula): Lambda as S4D-Rand,
              ``-1/2 + i pi (N/2) u`` (u ~ U[0,1], sorted), P i.i.d. complex normal of variance 1
              per entry, B = 1
    ========  ==============================================================================

    HiPPO inits use :func:`statespaces.hippo.dplr` (conjugate-symmetric half, ``B = V^* B_hippo``);
    a rank above the measure's minimum pads P with zero columns (which then get zero gradient,
    since ``d(p p^*)/dp = 0`` at p = 0; use ``rand`` for a random rank-r start).
    """
    name = check_choice("S4 init", name, S4_INITS)
    r = S4_MIN_RANK[name] if rank is None else rank
    M = N // 2
    if name == "rand":
        Lam, B, _ = s4d_init("rand", N, H, generator)
        re = torch.randn(r, H, M, dtype=torch.float64, generator=generator)
        im = torch.randn(r, H, M, dtype=torch.float64, generator=generator)
        return Lam, torch.complex(re, im) / math.sqrt(2), B
    from ..hippo import dplr

    Lam, P, B, _ = dplr(name, N, rank=r)
    return Lam.expand(H, M).clone(), P[:, None, :].expand(r, H, M).clone(), B.expand(H, M).clone()


def _warn_if_unfaithful(modes: Modes, tol: float, L: int) -> None:
    """:class:`ModesAccuracyWarning` if some channel's ``modes.kernel_error`` exceeds ``tol`` (S4.modes)."""
    err = modes.kernel_error
    if err is None or not bool((err > tol).any() | err.isnan().any()):
        return
    h = int(torch.nan_to_num(err, nan=math.inf).argmax())
    cond = float(modes.cond.detach().max()) if modes.cond is not None else math.nan
    warnings.warn(
        f"S4.modes(): the eigenbasis of this layer's A = Lambda - P P^* is ill-conditioned (cond(V) up to "
        f"{cond:.1e}; Lemma 6.6: HiPPO-LegS/LegT-like matrices) or A is not diagonalizable at all (HiPPO-LagT "
        f"is a single Jordan block), so its modes are not faithful: the kernel they define differs from the "
        f"layer's own by a relative error of {float(err[h]):.1e} in channel {h} (tol={tol:g}, over {L} lags; "
        f"{int((err > tol).sum())} of {err.numel()} channels above tol). The oscillator table read from them "
        "(statespaces.analysis.oscillators, `statespaces analyze`) is not faithful either: its frequencies, "
        "dampings and amplitudes may be made up (HiPPO-LegS's eigenvalues are real). The layer itself is "
        "unaffected: use layer.kernel(L) for its operator, and Modes.kernel_error (per channel) to see which "
        "channels' modes can be trusted",
        ModesAccuracyWarning, stacklevel=3,
    )


class S4(SSMLayer):
    r"""S4 layer with a Hurwitz DPLR state matrix, ``y = K * u + D u`` per channel.

    Args:
        d_model: number of channels H.
        d_state: real state size N (even): N/2 complex modes are stored, one per conjugate pair
            (``n_modes = N/2``).
        init: ``legs`` (default), ``legt``, ``fout``, ``lagt`` or ``rand`` (see :func:`s4_init`).
        rank: rank r >= 1 of the low-rank term; None = the init's minimum (2 for ``legt``, else 1).
        dt_min: lower end of the log-uniform step-size init (Remark 5.6).
        dt_max: upper end of the log-uniform step-size init (Remark 5.6).
        real_transform: keeps ``Re Lambda < 0``: ``exp`` (default), ``softplus``, ``relu``, ``none``.
        bidirectional: causal and anti-causal kernels (two C's); no recurrent state then.
        trainable_B: train B (default) or freeze it.
        cauchy_backend: ``chunked`` (default, O(H(N+L)) memory) or ``naive`` (reference).
        l_max: learn C~ for kernels of this length instead of C (see the module notes): faster
            kernels for ``L <= l_max`` at rate 1; None (default) learns C.
        seed: seed for this layer's random init.
        n_ssm: number of distinct (Lambda, P, B), shared by groups of ``H / n_ssm`` consecutive
            channels (§7.2.2); must divide H. None (default) = H: one per channel.
        trainable_ssm: False freezes the state equation (dt, Lambda, P, B) at its init; C and D
            train ("frozen (A, B)", Fig. 7.9).

    Shapes:
        forward: (B, L, H) -> (B, L, H); kernel(L): (H, L) or (2, H, L); state: (B, H, N/2) complex.

    Parameters per channel: Lambda, B, C in C^{N/2}, P in C^{r x N/2}, log dt, D:
    (3 + r) N + 2 reals (4N + 2 for r = 1, cf. §7.1's 4N + 1 without D); with ``n_ssm``:
    ``n_ssm (2 + r) N + H (N + 2)`` reals.

    Cost of ``kernel(L)`` (H channels, M = N/2, r): time O(H M L (1+r)^2) multiply-adds in the
    Cauchy sums + O(H L log L) FFT + O(H N^3 log L) for ``dA^L``; memory
    ``~ 16 (1+r)^2 H (L/2+1) + 8 H N^2 log2(L)`` bytes (fp32, autograd included) plus one Cauchy
    work chunk, i.e. O(H (r^2 L + N^2 log L)), never O(H N L). The layer's forward adds the FFT
    convolution, O(B H L) memory. Measured (2026-12-06, ``benchmarks/bench_s4.py``; on the CPU a stateless call
    takes its kernel from dense powers instead): B=1, H=256, N=64, L=65536 fwd+bwd peaks at 1.32 GiB process
    RSS (0.30 GiB of it before the run).

    Example::

        >>> layer = S4(d_model=4, d_state=8)
        >>> y = layer(torch.randn(2, 16, 4))
    """

    stepper_kind = "dplr"

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        init: str = "legs",
        rank: Optional[int] = None,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        real_transform: str = "exp",
        bidirectional: bool = False,
        trainable_B: bool = True,
        cauchy_backend: str = "chunked",
        l_max: Optional[int] = None,
        seed: Optional[int] = None,
        n_ssm: Optional[int] = None,
        trainable_ssm: bool = True,
    ) -> None:
        super().__init__()
        self.d_model = check_positive_int("d_model", d_model)
        self.d_state = check_positive_int("d_state", d_state)
        self.n_ssm = check_n_ssm(n_ssm, self.d_model)
        self.init = check_choice("init", init, S4_INITS)
        self.real_transform = check_choice("real_transform", real_transform, REAL_TRANSFORMS)
        self.cauchy_backend = check_choice("cauchy_backend", cauchy_backend, tuple(CAUCHY_BACKENDS))
        if d_state % 2:
            raise ValueError(
                f"d_state={d_state} is odd: S4 stores d_state/2 conjugate pairs of modes, so use an even "
                "d_state (HiPPO DPLR forms are conjugate-symmetric only for even N)"
            )
        if rank is not None:
            rank = check_positive_int("rank", rank)
            if rank < S4_MIN_RANK[self.init]:
                raise ValueError(
                    f"init={self.init!r} needs rank >= {S4_MIN_RANK[self.init]} (its low-rank term, Cor 6.8), "
                    f"got rank={rank}"
                )
        self.rank = S4_MIN_RANK[self.init] if rank is None else rank
        self.bidirectional = check_flag("bidirectional", bidirectional, BIDIRECTIONAL_HINT)
        gen = seeded_generator(seed)

        H, M = d_model, d_state // 2
        self.n_modes = M
        Lam, P, B = s4_init(self.init, d_state, self.n_ssm, self.rank, gen)     # (n_ssm, M), (r, n_ssm, M)
        dtype = torch.get_default_dtype()
        self.log_dt = nn.Parameter(log_dt_init(H, dt_min, dt_max, gen).to(dtype))
        decay = (-Lam.real).clamp(min=_REAL_FLOOR)
        self.Lambda_real = nn.Parameter(real_inverse(decay, self.real_transform).to(dtype))
        self.Lambda_imag = nn.Parameter(Lam.imag.to(dtype))
        self.P = nn.Parameter(torch.view_as_real(P).to(dtype))
        Bv = torch.view_as_real(B).to(dtype)
        if check_flag("trainable_B", trainable_B):
            self.B = nn.Parameter(Bv)
        else:
            self.register_buffer("B", Bv)
        K = 2 if self.bidirectional else 1
        self.l_max = None if l_max is None else check_positive_int("l_max", l_max)
        C = c_init((K, H, M), gen)
        self.C = nn.Parameter(torch.view_as_real(C).to(dtype))
        self.D = nn.Parameter(torch.randn(H, generator=gen, dtype=torch.float64).to(dtype))
        if self.l_max is not None:  # store C~ of the same system (computed in float64)
            with torch.no_grad():
                Lam64, P64, _, _ = (t.to(torch.complex128) for t in self._raw_system())
                dA_L = discrete_power(Lam64, P64, self._dt(1.0).double(), self.l_max)
                self.C.copy_(torch.view_as_real(truncated_C(C, dA_L)).to(dtype))
        freeze_ssm(self, trainable_ssm)

    # ---- parameterization ---------------------------------------------------------------------
    def ssm_parameters(self) -> Iterator[nn.Parameter]:
        for p in (self.log_dt, self.Lambda_real, self.Lambda_imag, self.P, self.B):
            if isinstance(p, nn.Parameter):
                yield p

    def continuous_system(self) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        r"""``(Lambda (H, M), P (r, H, M), B (H, M), C (K, H, M))`` complex; A = Lambda - P P^*.

        C is the true output vector, also when the layer learns C~ (``l_max``).
        Raises ValueError if some ``Re(Lambda) >= 0`` (possible only with ``real_transform='none'``
        or an underflowing transform): Lemma 3.8 then no longer guarantees a Hurwitz A.
        """
        Lam, P, B, C = self._raw_system()
        if self.l_max is not None:
            C = self._recover_C(Lam, P, C)
        return Lam, P, B, C

    def _recover_C(self, Lam: Tensor, P: Tensor, Ct: Tensor) -> Tensor:
        r"""True C from the learned C~ (``l_max``): ``C^T = C~^T (I - dA^{l_max})^{-1}`` (eq. C.4).

        Always in float64, whatever the layer's dtype: ``I - dA^{l_max}`` is near-singular when a
        mode has barely decayed over ``l_max`` steps (``Re Lambda ~ 0``, small dt), and a float32
        ``dA^{l_max}`` (repeated squaring) plus a float32 solve then lose every digit (measured
        1e5-1e12 relative error in ``step`` before this rule). C~ itself is exact as stored; the float64
        result is accurate to about ``(cond + l_max ||dA^L|| / sigma_min) 1e-16`` (:data:`_C_RECOVERY_MAX_COND`):
        the condition number alone missed modes that are all equally undamped (``I - dA^L ~ eps I``, cond ~ 1,
        yet ``dA^L``'s own rounding is amplified by ``1 / eps``: 2e-2 relative error in ``step`` at Re Lambda =
        -1e-12). When that bound passes 1e-7 a ValueError says so, instead of a silently wrong recurrence.
        """
        C = self._try_recover_C(Lam, P, Ct, refuse=True)
        assert C is not None                   # refuse=True raises instead of returning None
        return C

    def _try_recover_C(self, Lam: Tensor, P: Tensor, Ct: Tensor, refuse: bool,
                       float64: bool = False) -> Optional[Tensor]:
        r""":meth:`_recover_C`, or None instead of the ValueError when ``refuse`` is False and the solve
        cannot be trusted (CPU eager only: deciding needs the condition number on the host). The one
        conversion C~ -> C of the layer: the step, other rates, longer kernels and the chunked forward.
        With ``float64`` C stays complex128 (for :meth:`_retruncated_C`), else it has C~'s dtype."""
        assert self.l_max is not None          # called only for a layer that learns C~
        c64 = torch.complex128
        dA_L = discrete_power(Lam.to(c64), P.to(c64), self._dt(1.0).double(), self.l_max)
        if not self._check_C_recovery(dA_L, refuse):
            return None
        C = untruncated_C(Ct.to(c64), dA_L)
        return C if float64 else C.to(Ct.dtype)

    def _retruncated_C(self, Lam: Tensor, P: Tensor, Ct: Tensor, L: int, rate: float) -> Tensor:
        r"""The learned ``C~`` (truncated at ``l_max``, rate 1) moved to length L and ``rate``:
        ``C~_L^T = C~^T (I - dA^{l_max})^{-1} (I - dA_rate^L)`` (eq. C.4 twice), all in float64, returned in C~'s
        dtype. Where ``I - dA^{l_max}`` is ill-conditioned the true C is large along the slow modes, and
        ``C^T (I - dA^L)`` in float32 cancels: an S4 layer with ``l_max`` in float32 lost up to every digit of
        its kernel at L > l_max or rate != 1 (0.7-0.8 relative error at cond ~5e7, 3e-3 at 2.5e4), while its
        kernel at rate 1 and L <= l_max (from C~ itself) and its recurrence stayed accurate."""
        C = self._try_recover_C(Lam, P, Ct, refuse=True, float64=True)
        assert C is not None                   # refuse=True raises instead of returning None
        return truncated_C_wide(C, Lam, P, self._dt(rate), L).to(Ct.dtype)

    def _recovery_message(self, cond: str) -> str:
        return (
            f"cannot recover C from the learned C~ of this S4 layer (l_max={self.l_max}): "
            f"I - dA^l_max amplifies rounding by {cond} > {_C_RECOVERY_MAX_COND:.0e} (its condition "
            "number plus l_max ||dA^l_max|| / its smallest singular value), because some "
            "mode has not decayed over l_max steps (Re Lambda ~ 0 or a tiny dt). The convolution of "
            f"length <= {self.l_max} at rate 1 is still exact; for step(), other rates or longer "
            "kernels use an S4 layer without l_max (it learns C directly)"
        )

    def _check_C_recovery(self, dA_L: Tensor, refuse: bool = True) -> bool:
        r"""Refuse an error amplification above :data:`_C_RECOVERY_MAX_COND` without paying for it on every forward
        (issue 17 item 2).

        CPU: the amplification from 2-norms (an SVD, O(H N^3)) is computed once per set of values of
        the parameters it depends on (Lambda, P, log dt: not C, not D) and remembered by value, like
        :mod:`.step_cache` (a comparison with a stored copy, cheap and sync-free on CPU); a refusal is
        remembered too, but never as a pass. CUDA: no host sync per call; the Frobenius condition
        number (>= the 2-norm one, so it refuses at least whenever the CPU rule does) from ``inv_ex``
        goes to ``torch._assert_async``. Skipped while tracing (compile / export); a stepper's build
        runs it eagerly.

        Returns True when the recovery may proceed; False only for ``refuse=False`` on CPU with an
        ill-conditioned ``I - dA^{l_max}`` (the caller then keeps the learned-C~ convolution).
        """
        if tracing():
            return True
        eye = torch.eye(dA_L.shape[-1], dtype=dA_L.dtype, device=dA_L.device)
        Mx = (eye - dA_L).detach()
        assert self.l_max is not None
        if Mx.is_cuda:
            inv, _ = torch.linalg.inv_ex(Mx)
            inv_norm = torch.linalg.matrix_norm(inv)
            cond_t = torch.linalg.matrix_norm(Mx) * inv_norm + self.l_max * torch.linalg.matrix_norm(dA_L) * inv_norm
            refuse_if(~(cond_t <= _C_RECOVERY_MAX_COND), self._recovery_message("above the limit"))
            return True
        deps = tuple(t.detach() for t in (self.Lambda_real, self.Lambda_imag, self.P, self.log_dt))
        seen = self.__dict__.get("_C_recovery_seen")
        if seen is not None and all(s.shape == t.shape and s.dtype == t.dtype and s.device == t.device
                                    and torch.equal(s, t) for s, t in zip(seen[0], deps)):
            cond = seen[1]
        else:
            sv = torch.linalg.svdvals(Mx)                                        # (H, N), descending
            amp = sv[..., 0] / sv[..., -1] + self.l_max * torch.linalg.matrix_norm(dA_L.detach(), 2) / sv[..., -1]
            cond = float(amp.max())                  # inf or NaN (a singular I - dA^L) fails the test below
            self.__dict__["_C_recovery_seen"] = (tuple(t.clone() for t in deps), cond)
        if cond <= _C_RECOVERY_MAX_COND:
            return True
        if refuse:
            raise ValueError(self._recovery_message(f"{cond:.1e}"))
        return False

    def _raw_system(self) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """Like :meth:`continuous_system`, but the stored C (which is C~ when ``l_max`` is set).
        Tied (Lambda, P, B) (``n_ssm < H``) are repeated over their channel groups here."""
        re = -real_forward(self.Lambda_real, self.real_transform)
        # no host sync on CUDA (torch._assert_async there); a ValueError now on CPU
        refuse_if(re >= 0, "{n} entries of Re(Lambda) are >= 0, so A = Lambda - P P^* is not guaranteed Hurwitz "
                  "(Lemma 3.8); use real_transform='exp' or 'softplus' to keep Lambda stable by construction")
        Lam = torch.complex(re, self.Lambda_imag)
        H = self.d_model
        return (tie_channels(Lam, H), tie_channels(as_complex(self.P), H, 1), tie_channels(as_complex(self.B), H),
                as_complex(self.C))

    def _dt(self, rate: float) -> Tensor:
        return torch.exp(self.log_dt) * rate

    def _no_autocast(self):
        dev = self.D.device.type
        try:
            return torch.autocast(device_type=dev, enabled=False)
        except RuntimeError:  # pragma: no cover - device without autocast support
            return contextlib.nullcontext()

    # ---- convolution view ---------------------------------------------------------------------
    @public
    def kernel(self, L: int, rate: float = 1.0) -> Tensor:
        """Kernel (H, L), or (2, H, L) if bidirectional, by Algorithm 1 (app. C.1.2, Thm 3.6).

        Equals the power kernel ``(c^T dA^l dB)_{l<L}`` of :meth:`dense_system` (tests: 1e-9 in fp64).
        """
        L = check_length(L)
        rate = check_rate(rate)
        with self._no_autocast():
            if self.l_max is not None and rate == 1.0 and L <= self.l_max:   # learned C~: no dA^L
                Lam, P, B, Ct = self._raw_system()
                K = dplr_kernel(Lam, P, B, Ct, self._dt(rate), self.l_max, truncation_correction=False,
                                backend=self.cauchy_backend)[..., :L]
            elif self.l_max is not None:                                        # C~ for this length and rate
                Lam, P, B, Ct = self._raw_system()
                K = dplr_kernel(Lam, P, B, self._retruncated_C(Lam, P, Ct, L, rate), self._dt(rate), L,
                                truncation_correction=False, backend=self.cauchy_backend)
            else:
                Lam, P, B, C = self.continuous_system()
                K = dplr_kernel(Lam, P, B, C, self._dt(rate), L, backend=self.cauchy_backend)
        check_result(self, K, "kernel")
        return K if self.bidirectional else K[0]

    def dense_system(self, rate: float = 1.0) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        r"""The equivalent real dense discrete SSM (reference; O(H N^2) memory, O(H N^3) time).

        Returns ``(dA (H, N, N), dB (H, N), C (H, N), dt (H,))``, real, with the kernel
        ``K_l = C dA^l dB`` and state ``xi = [Re x; Im x]`` (x the layer's half state). For a
        bidirectional layer C is the causal direction's.
        """
        rate = check_rate(rate)
        Lam, P, B, C = self.continuous_system()
        dt = self._dt(rate)
        A, b, c = dplr_real_system(Lam, P, B, C[0])
        dA = bilinear_real(A, dt)
        s = (dt / 2)[:, None, None]
        eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
        dB = torch.linalg.solve(eye - s * A, (dt[:, None] * b).unsqueeze(-1)).squeeze(-1)
        return dA, dB, c, dt

    # ---- explicit operator ----------------------------------------------------------------------
    def modes(self, rate: float = 1.0, check_length: Optional[int] = 256, tol: float = MODES_TOL) -> Modes:
        r"""The diagonalised DPLR form (:class:`~statespaces.layers.modes.Modes`, complex128, N modes per channel).

        The real continuous ``A = Lambda - P P^*`` (H, N, N) of the full conjugate-symmetric state is
        eigen-decomposed once in float64, ``A = V diag(s) V^{-1}`` (Lemma 3.3 conjugation); the
        bilinear rule keeps the eigenvectors, so ``lambda = (1 + dt s/2)/(1 - dt s/2)``,
        ``B = dt V^{-1} b / (1 - dt s/2)``, ``C = c V`` (eq. 3.2 in the eigenbasis); ``A`` holds s.
        Structure ``dplr``: every complex mode comes with its conjugate (the oscillator analysis
        merges each pair into one oscillator).

        Exact only up to the conditioning of V (``cond``, per channel): HiPPO-LegS and LegT have an
        exponentially ill-conditioned eigenbasis (Lemma 6.6), and HiPPO-LagT's A is a single Jordan
        block, not diagonalizable at all (layers built in float64 at these inits: kernel errors 1e-2 to
        3e-1 and made-up frequencies from N = 16-32). So the kernel the modes define is compared with
        the layer's own (Algorithm 1 on the same system, in float64) over ``check_length`` lags; the
        relative error per channel is ``kernel_error``.

        Above ``tol`` this **warns** (:class:`~statespaces.layers.modes.ModesAccuracyWarning`) and
        still returns the modes, where :meth:`diagonalize` raises: ``diagonalize`` builds a
        computational form that replaces the layer, so an inaccurate one is refused, while ``modes``
        is an analysis view (``statespaces analyze`` reads trained checkpoints through it), which
        reports how far it can be trusted rather than refusing to look.

        Args:
            rate: step-size multiplier, folded into ``dt``.
            check_length: lags of the accuracy check (None: skip it; ``kernel_error`` stays None).
            tol: relative kernel error above which the warning is given.

        Shapes: ``log_eig``, ``B``, ``dt``, ``A`` (H, N); ``C`` (K, H, N); ``cond``, ``kernel_error`` (H,).
        """
        rate = check_rate(rate)
        c128 = torch.complex128
        system = tuple(t.to(c128) for t in self.continuous_system())
        Lam, P, B, C = system
        A, b, c = dplr_real_system(Lam, P, B, C)                       # (H, N, N), (H, N), (K, H, N) float64
        s, V = torch.linalg.eig(A)
        Vb = torch.linalg.solve(V, b.to(c128).unsqueeze(-1)).squeeze(-1)
        CV = torch.einsum("khn,hnm->khm", c.to(c128), V)
        dt = self._dt(rate).to(torch.float64).unsqueeze(-1)             # (H, 1)
        half = 1 - dt * s / 2
        modes = Modes(
            log_eig=torch.log((1 + dt * s / 2) / half), B=dt * Vb / half, C=CV, D=self.D.to(torch.float64),
            dt=dt.expand_as(s).clone(), A=s, discretization="bilinear", structure="dplr",
            bidirectional="sum" if self.bidirectional else None, cond=torch.linalg.cond(V).real,
        )
        if check_length is not None:
            L = check_positive_int("check_length", check_length)
            modes.kernel_error = self._modes_kernel_error(modes, system, rate, L)
            _warn_if_unfaithful(modes, tol, L)
        return modes

    @torch.no_grad()
    def _modes_kernel_error(self, modes: Modes, system: Tuple[Tensor, ...], rate: float, L: int) -> Tensor:
        r"""Relative error per channel (H,) of the kernel of ``modes`` against Algorithm 1 on the same
        ``system`` (Lambda, P, B, C complex128) in float64, over both directions and ``L`` lags.

        For a float64 layer learning C the reference is ``self.kernel(L, rate)`` itself; for a float32
        layer it is the same system evaluated without float32 rounding, so only the eigenbasis is judged.
        """
        Lam, P, B, C = (t.detach() for t in system)
        ref = dplr_kernel(Lam, P, B, C, self._dt(rate).detach().double(), L, backend=self.cauchy_backend)
        got = vandermonde(modes.C.detach() * modes.B.detach(), modes.log_eig.detach(), L)   # Re sum C B lambda^l
        err = (got - ref).square().sum((0, 2)).sqrt()
        return err / ref.square().sum((0, 2)).sqrt().clamp(min=torch.finfo(torch.float64).tiny)

    @classmethod
    def from_modes(cls, modes: Modes, real_transform: str = "exp", dtype: Optional[torch.dtype] = None) -> "S4":
        r"""An S4 layer (rank-1 term zero, i.e. diagonal) whose kernel at rate 1 is the one ``modes`` define.

        Each of the M modes of a channel becomes one mode of the half state (``d_state = 2 M``):
        ``Lambda = s`` from the inverse bilinear rule at the channel's ``dt``
        (:func:`~statespaces.discretize.undiscretize_diagonal`), ``P = 0``, ``B = 1``,
        ``C = C_m r_m B_m / (2 dB)`` (S4 outputs ``2 Re``). Raises ValueError if some
        ``Re s >= 0`` (|lambda| >= 1: no Hurwitz Lambda), or as :meth:`Modes.check_siso`.
        """
        modes.check_siso("S4")
        H, M = modes.log_eig.shape
        dt = modes.channel_dt("S4")
        s = undiscretize_diagonal(modes.log_eig.to(torch.complex128), dt, "bilinear")
        if not bool((s.real < 0).all()):
            raise ValueError(f"S4.from_modes: {int((~(s.real < 0)).sum())} modes have |lambda| >= 1, which no "
                             "Hurwitz Lambda produces under the bilinear rule")
        dB = dt.unsqueeze(-1) / (1 - dt.unsqueeze(-1) * s / 2)
        C = modes.C.to(torch.complex128) * modes.input_weights().to(torch.complex128) / (2 * dB)
        layer = cls(H, 2 * M, init="rand", rank=1, real_transform=real_transform,
                    bidirectional=modes.bidirectional == "sum")
        layer = layer.to(torch.get_default_dtype() if dtype is None else dtype)
        with torch.no_grad():
            layer.log_dt.copy_(torch.log(dt))
            layer.Lambda_real.copy_(real_inverse(-s.real, layer.real_transform))
            layer.Lambda_imag.copy_(s.imag)
            layer.P.zero_()
            layer.B.copy_(torch.view_as_real(torch.ones_like(s)))
            layer.C.copy_(torch.view_as_real(C))
            layer.D.copy_(modes.D)
        return layer

    # ---- recurrent view -----------------------------------------------------------------------
    @public
    def initial_state(self, batch_size: int) -> Tensor:
        """Zero state (B, H, N/2), complex (the half of the conjugate-symmetric state)."""
        batch_size = check_batch_size(batch_size)
        return torch.zeros(batch_size, self.d_model, self.n_modes, dtype=self.state_dtype, device=self.D.device)

    def _step_system(self, rate: float) -> Tuple[DPLRStep, Tensor]:
        """Discretized step (cached without autograd until a parameter or buffer changes value), and C (H, M)."""
        def build():
            with self._no_autocast():
                Lam, P, B, C = self.continuous_system()
                return DPLRStep.build(Lam, P, B, self._dt(rate)), C[0]

        return self._step_cache.get(self, rate, build)

    @public
    def step(self, x: Tensor, state: Tensor, rate: float = 1.0) -> Tuple[Tensor, Tensor]:
        r"""One bilinear recurrent step in O(N r) per channel (Thm 3.5, app. C.1.1, via Woodbury).

        ``state' = dA state + dB x``, ``y = 2 Re(C . state') + D x``.

        Args:
            x: (B, H). state: (B, H, N/2) complex.

        Returns:
            ``(y (B, H), state')``.
        """
        self._check_step_input(x, state)
        st, C = self._step_system(check_rate(rate))
        y, new_state = dplr_step(st, C, self.D, x.to(self.param_dtype), state)
        y = y.to(x.dtype)                        # cast first: a float16 output that overflows is refused too
        check_result(self, (y, new_state), "step output", x=x, state=state)
        return y, new_state

    def _real_discrete(self, rate: float, Lam: Tensor, P: Tensor, B: Tensor) -> Tuple[Tensor, Tensor]:
        """Real bilinear ``dA`` (H, N, N) and ``dB = (dt/2)(I + dA) b`` (H, N) (app. C.1.1)."""
        return bilinear_dplr_system(Lam, P, B, self._dt(rate))

    def _use_chunked(self, u: Tensor, stateful: bool) -> bool:
        # A stateless call of a layer learning C~ (l_max) keeps the FFT: its FFT route takes the kernel from C~
        # without any dA^L, while the dense form needs C recovered (dA^{l_max} in float64 and a solve, as costly
        # as the chunked pass itself); measured on CPU (one thread, B8 H128 N64 L1024, fwd+bwd, loaded machine):
        # FFT 96-100 ms, chunked 222-232 ms. On CUDA the recovery's condition check would also cost a host
        # sync per parameter update. Stateful calls need C on both routes: chunked where the rule says. A
        # bidirectional layer (never stateful) follows the rule too: on CUDA its two directions are one chunked
        # pass over 2H channels (:func:`statespaces.kernels.chunked.chunked_conv_dense_bidirectional`), on the
        # CPU the FFT with both kernels.
        if not stateful and self.l_max is not None:
            return False
        return prefer_chunked(u, stateful, modes=self.d_state, dense=True)

    def _conv_kernel(self, u: Tensor, L: int, rate: float) -> Tensor:
        """Kernel (H, L), or (2, H, L) if bidirectional, of the stateless FFT forward: for a layer learning C, on
        CPU (:func:`~statespaces.kernels.chunked_conv.prefer_power_kernel`), ``c^T dA^l dB`` by the dense powers
        of :meth:`dense_system`'s system (:func:`statespaces.kernels.chunked.power_kernel`; a bidirectional
        layer's two directions share the system and its near columns); else :meth:`kernel` (Algorithm 1). A
        layer learning C~ (``l_max``) gets its kernel without ``dA^L`` and keeps Algorithm 1."""
        if self.l_max is not None or not prefer_power_kernel(u):
            return self.kernel(L, rate)
        with self._no_autocast():
            Lam, P, B, C = self.continuous_system()
            dA, dB = self._real_discrete(rate, Lam, P, B)
            c = 2 * torch.cat([C.real, -C.imag], -1)                    # (K, H, N): K = 2 if bidirectional
            K = chunked.power_kernel(dA, dB, c, L)
        return K if self.bidirectional else K[0]

    def _chunked_forward(self, u: Tensor, state: Optional[Tensor], return_state: bool,
                         rate: float) -> Tuple[Tensor, Optional[Tensor]]:
        """Forward in one chunked pass through the real dense form (:func:`statespaces.kernels.chunked.
        chunked_conv_dense`): output and new state, instead of the FFT (plus the two state maps below when
        stateful); taken where :func:`prefer_chunked` says so.

        A layer learning C~ (``l_max``) gets the true ``C = C~ (I - dA^{l_max})^{-1}`` by the step's own
        conversion (:meth:`_recover_C`, eq. C.4; its gradient reaches C~, Lambda, P and dt through the
        solve). When that is ill-conditioned (``cond > 1e8``): with a ``state`` the call is refused as the
        step refuses (the FFT route needs C for the state's free response too); without one it runs the FFT
        route instead, whose learned-C~ kernel is exact for ``L <= l_max`` at rate 1 (and which refuses
        itself where it needs C: longer kernels, other rates)."""
        with self._no_autocast():
            Lam, P, B, C = self._raw_system()
            if self.l_max is not None:
                Cr = self._try_recover_C(Lam, P, C, refuse=state is not None or u.device.type != "cpu")
                if Cr is None:
                    y = fftconv(u, self._with_skip(self.kernel(u.shape[1], rate)), self.bidirectional)
                    return y, (self._advance_state(None, u, rate) if return_state else None)
                C = Cr
            dA, dB = self._real_discrete(rate, Lam, P, B)
            if self.bidirectional:                                      # never stateful
                c2 = 2 * torch.cat([C.real, -C.imag], -1)               # (2, H, N)
                return chunked.chunked_conv_dense_bidirectional(u.to(dA.dtype), dA, dB, c2, self.D), None
            c = 2 * torch.cat([C[0].real, -C[0].imag], -1)
            xi0 = None if state is None else torch.cat([state.real, state.imag], -1).to(dA.dtype)
            out = chunked.chunked_conv_dense(u.to(dA.dtype), dA, dB, c, self.D, xi0, return_state)
        if not return_state:
            return cast(Tensor, out), None
        y, xi = out
        M = self.n_modes
        return y, torch.complex(xi[..., :M], xi[..., M:])

    def _zero_input_response(self, state: Tensor, L: int, rate: float) -> Tensor:
        # time-domain chunks (kernels.chunked): no division by I - dA^L, so a state with slowly
        # decaying components is as accurate in float32 as the recurrence (issue 16 item 3)
        with self._no_autocast():
            Lam, P, B, C = self.continuous_system()
            dA, _ = self._real_discrete(rate, Lam, P, B)
            c = 2 * torch.cat([C[0].real, -C[0].imag], -1)
            xi = torch.cat([state.real, state.imag], -1).to(dA.dtype)
            y = chunked.zero_input_response(dA, c, xi, L)
        return y.transpose(1, 2)

    def _advance_state(self, state: Optional[Tensor], x: Tensor, rate: float) -> Tensor:
        with self._no_autocast():
            Lam, P, B, _ = self._raw_system()
            dA, dB = self._real_discrete(rate, Lam, P, B)
            xi0 = None if state is None else torch.cat([state.real, state.imag], -1).to(dA.dtype)
            xi = chunked.advance(dA, dB, x.transpose(1, 2).to(dA.dtype), xi0)
            M = self.n_modes
            return torch.complex(xi[..., :M], xi[..., M:])

    # ---- inference fast path ------------------------------------------------------------------
    @torch.no_grad()
    def diagonalize(self, rate: float = 1.0, check_length: int = 256, tol: float = 1e-4) -> "DiagonalizedS4":
        r"""Diagonalize ``dA`` once for inference: an O(N) complex-diagonal step, no Woodbury.

        Eigendecomposition of the real (H, N, N) discrete state matrix (Lemma 3.3 conjugation),
        in float64. It is only as accurate as the eigenbasis is well conditioned; HiPPO-LegS has an
        exponentially ill-conditioned one (Lemma 6.6). Measured for the LegS init in float64 over 256 steps
        (2026-12-06): built in float64, kernel rel. error 3e-12 (N=8), 3e-6 (16), 6e-2 (32), 0.2 (128, 256), so
        from N=32 on it is refused; built in float32 and cast with ``.double()`` (a trained float32 layer),
        1.2e-9 (32), 8e-9 (64), 1.6e-8 (128), 1.1e-7 (256): the rounded parameters make it diagonalizable.
        The kernel of the returned form (in the layer's dtype) is compared with the
        layer's over ``check_length`` steps and ValueError is raised if the relative error exceeds ``tol``:
        a float32 form loses what the float64 one keeps wherever its modes' terms cancel (LegS: relative
        error 1e-2 at N=8, 0.5 at N=32), so a float32 LegS layer is refused; ``layer.double()`` is not.
        ``kernel_error`` of the result is that relative error, over those steps only: an ill-conditioned eigenbasis
        (LagT, one Jordan block) lets it grow past them (LagT N=8, float64: 9.5e-5 at 256 steps, 1.6e-4 at 512).
        Pass the length you will run as ``check_length``.

        Returns:
            a :class:`~statespaces.layers.diagonalized_s4.DiagonalizedS4` (a causal ``DiagonalSSM``) for this
            ``rate``; convert a state of this layer with :meth:`DiagonalizedS4.from_dplr_state`.
        """
        if self.bidirectional:
            raise ValueError("a bidirectional layer is not causal and has no recurrent form to diagonalize"
                             + CAUSAL_HINT)
        rate = check_rate(rate)
        dA, dB, c, _ = (t.double() for t in self.dense_system(rate))
        lam, V = torch.linalg.eig(dA)                                   # (H, N), (H, N, N)
        dBd = torch.linalg.solve(V, dB.to(V.dtype).unsqueeze(-1)).squeeze(-1)
        Cd = torch.einsum("hn,hnm->hm", c.to(V.dtype), V)
        dt = self._dt(rate).detach().double()                           # the step of every mode, rate included
        exact = DiagonalizedS4(lam, dBd, Cd, V, self.D.detach().double(), rate, dt)
        if self.param_dtype == torch.float64:
            layer = exact
        else:      # the form in the layer's dtype: its terms C_n dB_n lambda_n^l cancel, so its own error counts
            cd = torch.complex64
            layer = DiagonalizedS4(lam.to(cd), dBd.to(cd), Cd.to(cd), V.to(cd), self.D.detach().clone(), rate, dt)
        ref = self.kernel(check_length, rate).double()
        err = float((layer.kernel(check_length, rate).double() - ref).norm() / ref.norm().clamp(min=1e-300))
        if not err <= tol:
            hint = "HiPPO-LegS-like matrices cannot be diagonalized stably (Lemma 6.6)"
            if layer is not exact:
                err64 = float((exact.kernel(check_length, rate) - ref).norm() / ref.norm().clamp(min=1e-300))
                hint = (f"in float64 the form's error is {err64:.1e}: its modes' terms |C_n dB_n| reach "
                        f"{float((Cd * dBd).abs().max()):.1e} and cancel, beyond {self.param_dtype}'s precision; "
                        "diagonalize the layer cast to float64 (layer.double().diagonalize())")
            raise ValueError(
                f"diagonalizing this S4 layer is numerically inaccurate (kernel rel. error {err:.1e} > tol={tol:g} "
                f"over {check_length} steps; eigenbasis condition number up to "
                f"{float(torch.linalg.cond(V).max()):.1e}). {hint}, or use S4.step (DPLR, O(N))"
            )
        layer.kernel_error = err
        return layer

    def extra_repr(self) -> str:
        s = f"d_model={self.d_model}, d_state={self.d_state}, init={self.init!r}, rank={self.rank}"
        if self.l_max is not None:
            s += f", l_max={self.l_max}"
        if self.bidirectional:
            s += ", bidirectional=True"
        if self.n_ssm != self.d_model:
            s += f", n_ssm={self.n_ssm}"
        if self.real_transform != "exp":
            s += f", real_transform={self.real_transform!r}"
        return s


@dataclass(frozen=True)
class S4Config(LayerConfig):
    """Settings of :class:`S4` (its constructor arguments but ``d_model``, same defaults).

    ``d_state`` counts **real state dimensions** N (even): the layer stores N/2 complex modes, one
    per conjugate pair (64 -> 32 complex modes), plus the rank-r low-rank term.
    """

    kind = "s4"
    d_state: int = setting(64, "int", "real state size N (N/2 complex conjugate-pair modes; even)", lo=1)
    init: str = setting("legs", "str", "DPLR init (HiPPO measure or rand), see s4_init", choices=lambda: S4_INITS)
    rank: Optional[int] = setting(None, "int", "rank of the low-rank term (none: the init's minimum)", lo=1,
                                  nullable=True)
    dt_min: float = setting(1e-3, "float", "lower end of the log-uniform dt init", lo=0, lo_open=True)
    dt_max: float = setting(1e-1, "float", "upper end of the log-uniform dt init", lo=0, lo_open=True)
    real_transform: str = setting("exp", "str", "how Re(Lambda) < 0 is kept", choices=lambda: tuple(REAL_TRANSFORMS))
    bidirectional: bool = setting(False, "bool", "causal and anti-causal kernels (no recurrent state)")
    trainable_B: bool = setting(True, "bool", "train B (or freeze it)")
    cauchy_backend: str = setting("chunked", "str", "Cauchy kernel backend", choices=lambda: tuple(CAUCHY_BACKENDS))
    l_max: Optional[int] = setting(None, "int", "learn C~ for kernels of this length (none: learn C)", lo=1,
                                   nullable=True)
    seed: Optional[int] = setting(None, "int", "seed of the layer's random init", lo=0, nullable=True)
    n_ssm: Optional[int] = setting(None, "int", "channel groups sharing (A, B) (thesis 7.2.2); none: one per channel",
                                   lo=1, nullable=True)
    trainable_ssm: bool = setting(True, "bool", "train the state equation (dt, Lambda, P, B); false freezes it")
    renamed = {"n_oscillators": "d_state, the real state size N: S4 has no oscillators"}
