r"""The contract every SSM layer shares, and its implementation for diagonal SSMs.

Three views of one linear time-invariant layer, per channel ``y = K * u + D u``:

* convolution: ``layer(x)`` with x (B, L, H) -> y (B, L, H) via FFT (thesis §2.3.3), or for
  diagonal SSMs by the chunked convolution where it is faster
  (:func:`statespaces.kernels.chunked_conv.prefer_chunked`);
* recurrence: ``state = layer.initial_state(B)``; ``y_t, state = layer.step(x_t, state)`` with
  x_t (B, H) (thesis §2.3.2), and the stateful chunked forward
  ``y, state = layer(x, state=state, return_state=True)``;
* continuous time: ``rate`` multiplies the step size dt, so a signal sampled ``rate`` times more
  coarsely is processed by the same continuous system (thesis §2.4.1, §7.4.1). Exception: the
  layers whose stability projection depends on the step, LinOSS with IMEX (``A`` bounded by
  ``4 / dt^2``) and D-LinOSS (``A`` clamped per ``G`` and ``rate * dt``), change their effective
  ``A`` (and D-LinOSS-IM its ``G``) with ``rate`` where the bound binds: read them with
  ``layer.stiffness(rate)`` / ``layer.damping(rate)``.

A layer is only the linear SSM: activation, mixing, normalization and residual belong to
:class:`statespaces.blocks.ResidualBlock`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Iterator, Optional, Tuple, Union, cast

import torch
from torch import nn

from .._checks import (
    CAUSAL_HINT,
    NOT_STEPPABLE,
    check_batch_size,
    check_flag,
    check_length,
    check_rate,  # re-exported: layers and analysis import it from here
    check_result,
    check_sequence,
    check_state,
    check_step_input,
    public,
)
from ..kernels import dispatch
from ..kernels.chunked_conv import chunked_conv_diagonal, prefer_chunked
from ..kernels.vandermonde import exp_scaled, vandermonde, vandermonde_transpose
from ..ops.fftconv import fftconv
from ..ops.time_varying import time_varying_ssm
from ..serialization import Pretrained
from .irregular import check_intervals, one_pass, over_time_chunks, reversed_steps, shift_anticausal
from .modes import Modes
from .step_cache import StepCache

if TYPE_CHECKING:
    from .stepper import LayerStepper

Tensor = torch.Tensor

#: What a non-bool ``bidirectional`` of S4D/S4 is told: their two directions share the modes and their kernels are
#: summed (LinOSS's ``"sum"``); a ``"concat"`` of two independent layers exists for LinOSS/D-LinOSS only.
BIDIRECTIONAL_HINT = ("; True sums a causal and an anti-causal kernel over the same modes (LinOSS's 'sum'); "
                      "'concat' exists for LinOSS/D-LinOSS only")


def freeze_ssm(layer: "SSMLayer", trainable: bool) -> None:
    """With ``trainable=False``, stop gradients to the state equation (``layer.ssm_parameters()``:
    dt, A, B and, for S4, P) so that only C and D train ("frozen (A, B)", thesis Fig. 7.9). The
    parameters stay parameters (same ``state_dict``); ``trainable=True`` leaves the layer as it is."""
    if not isinstance(trainable, bool):
        raise TypeError(f"trainable_ssm={trainable!r}: expected True or False")
    if not trainable:
        for p in layer.ssm_parameters():
            p.requires_grad_(False)


def _to_implement(layer: Any, method: str, what: str) -> NotImplementedError:
    """The error of a contract method a layer class has not implemented, naming it and what it must return."""
    return NotImplementedError(f"{type(layer).__name__} does not implement {method}, which SSMLayer needs for "
                               f"this call: it must return {what} (the contract: statespaces.layers.base.SSMLayer)")


class SSMLayer(Pretrained, nn.Module):
    """Base class of the linear SSM layers. Subclasses implement :meth:`kernel`, :meth:`initial_state`,
    :meth:`step`, and the two state maps used by the chunked forward (:meth:`_zero_input_response`,
    :meth:`_advance_state`); :class:`DiagonalSSM` implements all of them from one :meth:`DiagonalSSM.diagonal_system`.

    A layer of your own also sets, in ``__init__``: ``d_model`` (H), ``bidirectional`` (bool; a bidirectional layer
    has no state), and ``D``, the skip (H,) parameter whose dtype and device are the layer's; it registers its kind
    with :func:`statespaces.layers.register_layer` to be built from a config, trained and saved
    (``docs/api/layers.md``, "A layer of your own")."""

    d_model: int
    bidirectional: bool
    D: Tensor                           # skip term (H,): a parameter of every layer

    #: which stepper :meth:`stepper` builds (:func:`.stepper.layer_stepper`): "diagonal", "dplr",
    #: "oscillator", "mimo" (S5), or None (no stepper: use :meth:`step`)
    stepper_kind: ClassVar[Optional[str]] = None

    # ---- to implement -------------------------------------------------------------------

    def kernel(self, L: int, rate: float = 1.0) -> Tensor:  # pragma: no cover - abstract
        """Convolution kernel (H, L), or (2, H, L) if bidirectional."""
        raise _to_implement(self, "kernel(L, rate)", "the convolution kernel (H, L), or (2, H, L) if bidirectional")

    def initial_state(self, batch_size: int) -> Tensor:  # pragma: no cover - abstract
        """The zero state of a batch of B sequences, e.g. (B, H, M) complex for a diagonal layer (the state ``x_{-1}``
        of the recurrence, thesis eq. 2.5)."""
        raise _to_implement(self, "initial_state(batch_size)", "the zero state of a batch")

    def step(self, x: Tensor, state: Tensor, rate: float = 1.0) -> Tuple[Tensor, Tensor]:  # pragma: no cover
        """One recurrent step (thesis eq. 2.5, §2.3.2): x (B, H) and the state of :meth:`initial_state`'s shape ->
        ``(y (B, H), next state)``, equal to the convolution view's output at that step."""
        raise _to_implement(self, "step(x, state, rate)", "(y (B, H), next state): one recurrent step")

    def _zero_input_response(self, state: Tensor, L: int, rate: float) -> Tensor:  # pragma: no cover
        """Output (B, L, H) produced by ``state`` alone over the next L steps."""
        raise _to_implement(self, "_zero_input_response(state, L, rate)",
                            "the output (B, L, H) that the state alone produces over the next L steps")

    def _advance_state(self, state: Optional[Tensor], x: Tensor, rate: float) -> Tensor:  # pragma: no cover
        """State after consuming x (B, L, H) starting from ``state`` (zeros if None)."""
        raise _to_implement(self, "_advance_state(state, x, rate)",
                            "the state after reading x (B, L, H) from state (zeros if None)")

    def _irregular_forward(self, u: Tensor, state: Optional[Tensor], rate: float,
                           steps: Tensor) -> Tuple[Tensor, Tensor]:
        """Output (B, L, H) and final state for per-step multipliers ``steps`` (B, L) (irregular sampling)."""
        raise no_irregular_path(self)

    def ssm_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the state equation (A, B, dt) that get their own optimizer settings (§7.1)."""
        return iter(())

    # ---- shared -------------------------------------------------------------------------
    @property
    def param_dtype(self) -> torch.dtype:
        return self.D.dtype

    @property
    def state_dtype(self) -> torch.dtype:
        """dtype of the recurrent state: complex128 for float64 parameters, else complex64 (float32; half-precision
        parameters are refused at every entry point, :func:`~statespaces._checks.check_dtype_compatible`)."""
        return torch.complex128 if self.param_dtype == torch.float64 else torch.complex64

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
        """Apply the layer to x (B, L, H).

        Args:
            x: input sequence, batch first (B, L, H).
            state: state before the first step, from :meth:`initial_state` or a previous call
                with ``return_state=True``; None means zeros. Not allowed when bidirectional.
            return_state: also return the state after the last step (for chunked processing).
            rate: step-size multiplier (continuous-time view); 2 means x is sampled half as often.
            dt: irregular sampling (diagonal layers): (B, L) positive multipliers of the step of
                each interval, computed by a time-varying scan instead of a convolution
                (thesis §4.2.4; :mod:`statespaces.layers.irregular`).
            timestamps: irregular sampling: (B, L) increasing sample times in units of the step.

        Returns:
            y (B, L, H) in the dtype of x, and the new state if ``return_state``.
        """
        rate = self._check_forward(x, state, return_state, rate)
        steps = self._check_intervals(x, dt, timestamps)
        in_dtype = x.dtype
        u = x.to(self.param_dtype)
        L = u.shape[1]
        new_state: Optional[Tensor]
        if steps is not None:
            y, new_state = self._irregular_forward(u, state, rate, steps.to(self.param_dtype))
            new_state = new_state if return_state else None
        elif self._use_chunked(u, state is not None or return_state):   # rule: chunked_conv.prefer_chunked
            y, new_state = self._chunked_forward(u, state, return_state, rate)
        else:
            y = fftconv(u, self._with_skip(self._conv_kernel(u, L, rate)), self.bidirectional)
            if state is not None:
                y = y + self._zero_input_response(state, L, rate)
            new_state = self._advance_state(state, u, rate) if return_state else None
        # cast first: a float16 output that overflows is refused too; then row-major (B, L, H) whatever the path
        # (the chunked CPU kernels, which stateful calls take, compute in (B, H, L) and return that layout)
        y = y.to(in_dtype).contiguous()
        new_state = None if new_state is None else new_state.contiguous()    # S4's chunked state is (H, B, N)
        check_result(self, (y, new_state), input=x, state=state)     # NaN/inf: names input, state or parameters
        if return_state:
            assert new_state is not None
            return y, new_state
        return y

    def _check_forward(self, x: Tensor, state: Optional[Tensor], return_state: bool, rate: float) -> float:
        """Static checks of ``forward(x, state, return_state, rate)`` shared by every layer: x (B, L, H)
        with L >= 1 in a usable dtype, rate, no state for a bidirectional layer, the state's shape.
        NaN/inf are caught on the result (:func:`check_result`). Returns the checked rate."""
        check_sequence(x, self.d_model, self.param_dtype, device=self.D.device, finite=False)
        rate = check_rate(rate)
        check_flag("return_state", return_state)
        if self.bidirectional and (state is not None or return_state):
            raise ValueError("a bidirectional layer is not causal: it has no recurrent state" + CAUSAL_HINT)
        if state is not None:
            self._check_state(state, x.shape[0])
        return rate

    def _conv_kernel(self, u: Tensor, L: int, rate: float) -> Tensor:
        """The kernel that :meth:`forward`'s FFT route convolves u (B, L, H) with: :meth:`kernel` by default."""
        return self.kernel(L, rate)

    def _use_chunked(self, u: Tensor, stateful: bool) -> bool:
        """Whether :meth:`forward` takes :meth:`_chunked_forward` instead of the FFT convolution (no by default)."""
        return False

    def _chunked_forward(self, u: Tensor, state: Optional[Tensor], return_state: bool,
                         rate: float) -> Tuple[Tensor, Optional[Tensor]]:  # pragma: no cover - abstract
        """``(y, new_state or None)`` by the chunked convolution (:mod:`statespaces.kernels.chunked_conv`)."""
        raise NotImplementedError

    def _check_intervals(self, x: Tensor, dt: Optional[Tensor], timestamps: Optional[Tensor]) -> Optional[Tensor]:
        """The (B, L) step multipliers of irregular sampling (:func:`.irregular.check_intervals`), or None."""
        return check_intervals(x, dt, timestamps)

    def _with_skip(self, k: Tensor) -> Tensor:
        """The kernel with the skip term folded into lag 0: ``y = k * u + D u = (k + D delta) * u``.

        One (H, L) addition instead of two (B, L, H) passes forward and three backward; the
        gradient of D comes out of the convolution's kernel gradient at lag 0. k: (H, L) or (2, H, L)
        (the causal direction, ``k[0]``, holds lag 0).
        """
        if k.dim() == 3:
            return torch.stack([self._with_skip(k[0]), k[1]])
        return torch.cat([k[:, :1] + self.D[:, None], k[:, 1:]], -1)

    def _check_state(self, state: Tensor, batch: int) -> None:
        """``state`` must have the shape, dtype and device of ``initial_state(batch)``."""
        specs = self.__dict__.setdefault("_state_specs", {})       # learned once per batch/dtype/device
        key = (batch, self.param_dtype, self.D.device)
        spec = specs.get(key)
        if spec is None:
            s0 = self.initial_state(batch)
            spec = specs[key] = (tuple(s0.shape), s0.dtype, s0.device)
        check_state(state, spec[0], spec[1], spec[2], batch)

    @property
    def _step_cache(self) -> StepCache:
        """The discretized step system, cached for generation (see :mod:`.step_cache`)."""
        cache = self.__dict__.get("_step_cache_obj")
        if cache is None:
            cache = self.__dict__["_step_cache_obj"] = StepCache()
        return cache

    def stepper(self, batch_size: int, rate: float = 1.0, dtype: Optional[torch.dtype] = None,
                device: Optional[Union[str, torch.device]] = None, form: str = "auto") -> "LayerStepper":
        """A stepper for generation (:mod:`.stepper`): validated and discretized once, static buffers,
        ``y = st(x_t)`` advances in place ((B, H) -> (B, H)), ``st.reset()``; thesis §2.3.2. The ``y`` returned is
        the stepper's buffer ``st.y``, overwritten by the next call: keep a step's output with ``y.clone()``.

        Args:
            batch_size: B. rate: step-size multiplier. dtype: float32/float64 (default: the layer's).
            device: default the layer's. form: S4 only, ``"dplr"`` (= ``"auto"``, low-rank Woodbury
                step) or ``"diagonal"`` (float64 eigendecomposition, see :meth:`S4.diagonalize`).

        The stepper is a snapshot: build a new one after the parameters change.
        """
        from .stepper import layer_stepper

        return layer_stepper(self, batch_size, rate, dtype, device, form)

    def _check_step_input(self, x: Tensor, state: Tensor) -> None:
        """Static checks of ``step(x, state)``; NaN/inf are caught on the result (:func:`check_result`).
        The metadata of the last accepted call is remembered: a generation loop repeats it every step."""
        if self.bidirectional:
            raise ValueError(NOT_STEPPABLE)
        sig = None
        if isinstance(x, Tensor) and isinstance(state, Tensor):
            D = self.D
            sig = (x.shape, x.dtype, x.device, state.shape, state.dtype, state.device, D.dtype, D.device)
            if self.__dict__.get("_step_ok") == sig:
                return
        check_step_input(x, self.d_model, self.param_dtype, self.D.device)
        self._check_state(state, x.shape[0])
        self.__dict__["_step_ok"] = sig


def no_irregular_path(layer: nn.Module) -> ValueError:
    """The error of a layer without an irregular-sampling path (``dt=`` / ``timestamps=``): which layers have one,
    and, for a diagonal layer of one's own, what to implement."""
    own = (" (a DiagonalSSM of your own gets one by implementing irregular_system(rate, steps) -> (dA, dB, C, scale), "
           "dA and dB (B, L, H, M))") if isinstance(layer, DiagonalSSM) else ""
    return ValueError(f"{type(layer).__name__} has no irregular-sampling path (dt/timestamps); S4D, S5 and LinOSS "
                      f"(IM) have one (LinOSS-IMEX and DLinOSS take one interval per sequence){own}")


@dataclass
class DiagonalSystem:
    """A discretized diagonal SSM with M complex modes per channel.

    ``log_dA`` (H, M): logarithms of the discrete eigenvalues; ``dB`` (H, M); ``C`` (K, H, M) with
    K = 1, or 2 for the two directions of a bidirectional layer; ``scale``: 2 when each mode
    stands for a conjugate pair (output ``2 Re``, §3.4.5), else 1. ``log_dA_wide`` (H, M) complex128 or None:
    the same exponent formed in float64 by a float32 layer whose float32 ``log_dA`` is too coarse for high powers
    (S4D under bilinear/GBT/Euler: modes near -1 carry a phase error of ulp(pi), which ``dA^l`` multiplies by l).
    The views that raise dA to a power read :attr:`exponent`, and round what they form to the precision of ``dB``.
    """

    log_dA: Tensor
    dB: Tensor
    C: Tensor
    scale: float
    log_dA_wide: Optional[Tensor] = None

    @property
    def exponent(self) -> Tensor:
        """``log dA`` (H, M) at its best precision: ``log_dA_wide`` if the layer formed it, else ``log_dA``."""
        return self.log_dA if self.log_dA_wide is None else self.log_dA_wide

    def __post_init__(self) -> None:
        """Shapes checked once here (no values: no host sync): a (H, M) C or a shared (M,) system would run in
        one view and fail, or silently broadcast channel 0, in another."""
        H_M = tuple(self.log_dA.shape)
        if len(H_M) != 2 or tuple(self.dB.shape) != H_M or self.C.dim() != 3 or tuple(self.C.shape[1:]) != H_M \
                or self.C.shape[0] not in (1, 2):
            raise ValueError(f"DiagonalSystem: log_dA and dB must be (H, M) and C (K, H, M) with K = 1, or 2 for a "
                             f"bidirectional layer; got log_dA {tuple(self.log_dA.shape)}, dB {tuple(self.dB.shape)}, "
                             f"C {tuple(self.C.shape)} (a layer's diagonal_system(rate) builds it)")
        if self.log_dA_wide is not None and (tuple(self.log_dA_wide.shape) != H_M
                                             or self.log_dA_wide.dtype != torch.complex128):
            raise ValueError(f"DiagonalSystem: log_dA_wide must be complex128 of log_dA's shape {H_M}, got "
                             f"{self.log_dA_wide.dtype} {tuple(self.log_dA_wide.shape)}")


class DiagonalSSM(SSMLayer):
    """Convolution, recurrence and chunked views for any diagonal SSM. Subclasses provide
    :meth:`diagonal_system`; the state is complex, shape (B, H, M)."""

    stepper_kind = "diagonal"
    n_modes: int                        # M, set by each subclass

    def diagonal_system(self, rate: float = 1.0) -> DiagonalSystem:  # pragma: no cover - abstract
        """The layer discretized at step ``rate * dt``: a :class:`DiagonalSystem` (log dA, dB (H, M); C (K, H, M);
        scale), from which every view of this class is formed (thesis §3.2.1, eq. 3.2). The one method a diagonal
        layer of one's own implements."""
        raise _to_implement(self, "diagonal_system(rate)", "the DiagonalSystem (log dA, dB, C, scale) at this rate")

    def irregular_system(self, rate: float, steps: Tensor) -> Tuple[Tensor, Tensor, Tensor, float]:
        """The system discretized per step, ``(dA, dB, C, scale)`` with dA, dB (B, L, H, M), for
        multipliers ``steps`` (B, L) of the step size. Layers with an irregular-sampling path implement it (S4D)."""
        raise no_irregular_path(self)

    def _irregular_forward(self, u: Tensor, state: Optional[Tensor], rate: float,
                           steps: Tensor) -> Tuple[Tensor, Tensor]:
        """Time-varying recurrence ``x_t = dA_t x_{t-1} + dB_t u_t`` by the parallel scan (no convolution), in
        chunks of the time axis whose (B, Lc, H, M) tables are formed one chunk at a time
        (:func:`~statespaces.layers.irregular.over_time_chunks`)."""
        # dA_t, dB_t: (B, H, M) complex per step, counted at 16 bytes (complex128): a float32 layer's complex64
        # tables get chunks of half the budget, the safe side
        step_bytes = u.shape[0] * u.shape[2] * self.n_modes * 16
        if self.bidirectional and one_pass(u.shape[1], step_bytes):
            # one pass: the reversed pass reads the causal tables in reversed order (half the discretization work)
            dA, dB, C, scale = self.irregular_system(rate, steps)
            y, last = self._irregular_scan(u, state, dA, dB, C, scale)
            return y + time_varying_ssm(dA, dB, u, C[1], scale, anticausal=True)[0], last
        y, last = over_time_chunks(lambda u, steps, state: self._irregular_chunk(u, state, rate, steps),
                                   (u, steps), state, step_bytes)
        if self.bidirectional:
            # the anti-causal half (lags -1..-L, as fftconv's two-sided kernel): the same modes run over the
            # reversed sequence, read out by C[1], each sample held over the interval after it (reversed_steps)
            back, _ = over_time_chunks(lambda u, steps, state: self._irregular_chunk(u, state, rate, steps, 1),
                                       (u.flip(1), reversed_steps(steps)), None, step_bytes)
            y = y + shift_anticausal(back.flip(1))
        return y, last

    def _irregular_chunk(self, u: Tensor, state: Optional[Tensor], rate: float,
                         steps: Tensor, direction: int = 0) -> Tuple[Tensor, Tensor]:
        """:meth:`_irregular_forward` on one chunk: u (B, Lc, H), steps (B, Lc) -> y (B, Lc, H), state (B, H, M).
        ``direction`` 1: the anti-causal pass of a bidirectional layer (read out by ``C[1]``, no skip)."""
        return self._irregular_scan(u, state, *self.irregular_system(rate, steps), direction)

    def _irregular_scan(self, u: Tensor, state: Optional[Tensor], dA: Tensor, dB: Tensor, C: Tensor, scale: float,
                        direction: int = 0) -> Tuple[Tensor, Tensor]:
        """The time-varying scan of :meth:`_irregular_chunk` with the per-step tables dA, dB (B, Lc, H, M)
        (:func:`~statespaces.ops.time_varying.time_varying_ssm`)."""
        y, last = time_varying_ssm(dA, dB, u, C[direction], scale, state)
        return (y if direction else y + self.D * u), last

    def _step_system(self, rate: float) -> Tuple[Tensor, Tensor, Tensor, float]:
        """``(dA, dB, C, scale)`` for stepping. Without autograd (generation), the discretization is
        cached until a parameter or buffer changes value (:mod:`.step_cache`), so a step is O(HN)
        multiply-adds with no transcendental functions."""
        def build():
            sys = self.diagonal_system(rate)
            dA = torch.exp(sys.exponent).to(sys.dB.dtype)
            return (dA, sys.dB, (sys.scale * sys.C[0]).conj().resolve_conj(), sys.scale)

        return self._step_cache.get(self, rate, build)

    @public
    def kernel(self, L: int, rate: float = 1.0) -> Tensor:
        """Kernel ``K_l = scale * Re sum_n C_n dB_n dA_n^l`` (eq. 3.2): (H, L) or (2, H, L) if bidirectional."""
        L = check_length(L)
        K = self._kernel_values(L, check_rate(rate))
        check_result(self, K, "kernel")
        return K if self.bidirectional else K[0]

    def _kernel_values(self, L: int, rate: float) -> Tensor:
        """The (K, H, L) Vandermonde sum of :meth:`kernel` (K = 2 if bidirectional, else 1). Layers may fuse
        the discretization into it (S4D under ZOH: :func:`~statespaces.kernels.vandermonde.zoh_vandermonde`)."""
        coef, log_dA = self._kernel_factors(rate)
        return vandermonde(coef, log_dA, L).to(coef.real.dtype)    # a wide exponent sums in float64

    def _kernel_factors(self, rate: float) -> Tuple[Tensor, Tensor]:
        """``(scale C dB, log dA)``: the (K, H, M) coefficients and (H, M) exponents of :meth:`kernel`'s
        Vandermonde sum (scale, 1 or 2, folded into the coefficients; the exponent at its best precision,
        :attr:`DiagonalSystem.exponent`)."""
        sys = self.diagonal_system(rate)
        return sys.scale * sys.C * sys.dB, sys.exponent

    @public
    def initial_state(self, batch_size: int) -> Tensor:
        """Zero state (B, H, M), complex."""
        batch_size = check_batch_size(batch_size)
        M = self.n_modes
        return torch.zeros(batch_size, self.d_model, M, dtype=self.state_dtype, device=self.D.device)

    @public
    def step(self, x: Tensor, state: Tensor, rate: float = 1.0) -> Tuple[Tensor, Tensor]:
        """One recurrent step: ``state' = dA state + dB x``, ``y = scale Re(C state') + D x``.

        Args:
            x: (B, H). state: (B, H, M) complex.

        Returns:
            ``(y, state')`` with y (B, H).
        """
        self._check_step_input(x, state)
        dA, dB, Cc, _ = self._step_system(check_rate(rate))      # Cc = conj(scale C), for vecdot
        D = self.D
        u = x if x.dtype == D.dtype else x.to(D.dtype)
        # fused Triton step on CUDA at inference; otherwise (autograd, CPU) the same math in PyTorch
        y, new_state = dispatch.diagonal_step(dA, dB, Cc, D, u, state)
        # y = Re(Cc . state') + D u reads every entry of state' through a product (IEEE: inf * 0 and
        # NaN * 0 are NaN), so a finite y proves a finite state': one reduction per step, not two
        y = y if y.dtype == x.dtype else y.to(x.dtype)     # cast first: a float16 overflow is refused too
        check_result(self, y, "step output", x=x, state=state)
        return y, new_state

    def modes(self, rate: float = 1.0) -> Modes:
        r"""The explicit-operator view (:class:`~statespaces.layers.modes.Modes`, complex128):
        ``log_eig = log dA``, ``B = dB`` (H, M), ``C = scale C`` (K, H, M), so that
        ``kernel(L)[..., l] = Re sum_m C_m B_m dA_m^l`` (eq. 3.2)."""
        sys = self.diagonal_system(check_rate(rate))
        c128 = torch.complex128
        dt, A = self._continuous_view(rate)
        return Modes(
            log_eig=sys.exponent.to(c128), B=sys.dB.to(c128), C=(sys.scale * sys.C).to(c128),
            D=self.D.to(torch.float64), dt=dt, A=A, discretization=str(getattr(self, "discretization", "")),
            alpha=getattr(self, "alpha", None), structure="diagonal",
            bidirectional="sum" if self.bidirectional else None,
        )

    def _continuous_view(self, rate: float) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        """``(dt, A)`` (H, M) of :meth:`modes`: step sizes and continuous eigenvalues, None if unknown."""
        return None, None

    def _use_chunked(self, u: Tensor, stateful: bool) -> bool:
        return prefer_chunked(u, stateful, self.n_modes)

    def _chunked_forward(self, u: Tensor, state: Optional[Tensor], return_state: bool,
                         rate: float) -> Tuple[Tensor, Optional[Tensor]]:
        """Output, and the new state if ``return_state``, in one chunked pass (exact; thesis §2.3.2-2.3.3)."""
        sys = self.diagonal_system(rate)
        # the tables' powers and the chunk carry are formed in float64 from the exponent, then rounded to dB's precision
        out = chunked_conv_diagonal(u, sys.exponent, sys.dB, sys.C, sys.scale, self.D, state, return_state)
        if return_state:
            return cast(Tuple[Tensor, Tensor], out)
        return cast(Tensor, out), None

    def _zero_input_response(self, state: Tensor, L: int, rate: float) -> Tensor:
        sys = self.diagonal_system(rate)
        log_a = sys.exponent                                             # a wide one sums in float64
        coef = sys.C[0] * torch.exp(log_a) * state                       # (B, H, M)
        return (sys.scale * vandermonde(coef, log_a, L)).transpose(1, 2).to(sys.dB.real.dtype)

    def _advance_state(self, state: Optional[Tensor], x: Tensor, rate: float) -> Tensor:
        sys = self.diagonal_system(rate)
        L = x.shape[1]
        log_a = sys.exponent
        new = sys.dB * vandermonde_transpose(x.transpose(1, 2).flip(-1), log_a).to(sys.dB.dtype)
        if state is not None:
            new = new + exp_scaled(log_a, L).to(sys.dB.dtype) * state       # a^L, exponent in float64
        return new
