r"""S4ND: S4 on multidimensional signals (thesis ch. 9, §9.3; app. I.1).

**Model.** The N-D SSM (Def. 9.1) runs one 1-D SSM along each axis τ = 1..D of a signal
u(t^(1), ..., t^(D)). With a rank-1 output tensor ``C = C^(1) ⊗ ... ⊗ C^(D)`` (Cor. 9.3, the
setting of every thesis experiment) its convolution kernel (Thm 9.2) factorizes into one
standard 1-D SSM kernel per axis::

    K(t^(1), ..., t^(D)) = K^(1)(t^(1)) K^(2)(t^(2)) ... K^(D)(t^(D)),
    y = K * u + D u       (per channel, depthwise, a global kernel spanning the whole input)

**Implementation** (§9.3.1): each axis is an :class:`~statespaces.layers.s4d.S4D` module (its own
A, B, C, Δ per channel; its D skip is removed, the N-D layer has one D). The per-axis 1-D
kernels come from the S4D machinery (``diagonal_system`` + the blocked Vandermonde sum), so
nothing of the S4D math is repeated here; the N-D convolution multiplies their 1-D spectra into
the input's N-D FFT (:func:`statespaces.ops.fftconv_nd.fftconv_nd`; ``conv="toeplitz"`` gives the
same result by per-axis dense matmuls, faster on CPU for small images). Memory for the kernel is
O(H Σ_τ L_τ) (plus the O(H N sqrt(L)) Vandermonde blocks): the (H, L_1, ..., L_D) kernel is
never materialized in the forward pass, and never anything of size H Π L_τ N.

**Directions.** Every axis is bidirectional by default (the thesis uses non-causal kernels on
images, §2.2 per axis): the axis S4D has two C's and the two-sided kernel follows the
:func:`statespaces.ops.fftconv.two_sided_kernel` convention (causal half on lags 0..L-1,
anti-causal half on lags -1..-L). ``bidirectional=(False, True, True)`` makes the first axis
(e.g. time in video) causal.

**Streaming along the causal first axis** (thesis §2.3.2 applied to axis 1, §9.2). With a causal
first axis the kernel is ``K(t, r) = K^(1)(t) K_rest(r)`` (r: the other axes), and ``K^(1)`` is the
kernel of a diagonal SSM (eq. 3.2), so::

    v_t = K_rest * u_t                     (the (D-1)-d convolution of frame t, all at once)
    x_t = dA x_{t-1} + dB v_t,   y_t = scale Re(C x_t) + D u_t

with the axis-1 S4D's ``(dA, dB, C)``: a video is processed frame by frame (:meth:`S4ND.step`,
state (B, *frame, H, M) complex from :meth:`S4ND.initial_state`), or in chunks of frames
(``forward(x, state=..., return_state=True)``), with the same output as one convolution.

**Resolution change** (§9.3.2, §7.4.1). The input is a sampling of a continuous signal on a
fixed domain; ``rate`` multiplies each axis' Δ. A grid 2x finer along an axis needs Δ/2 there:
``rate = L_train / L_new`` per axis (see :func:`resolution_rate`).

**Bandlimiting** (§9.3.2). Each diagonal mode n is a damped sinusoid ``exp(t A_n)`` with
frequency ``|Im A_n| / 2π`` per unit time, i.e. ``f_n = |Im A_n| Δ / 2π`` cycles per sample.
With ``bandlimit=α`` the coefficient ``C_n`` is zeroed (for both directions) unless
``f_n < α/2``; α = 1 is the Nyquist cutoff for pure sinusoids. The printed inequality in the
thesis (``A_n Δ < α/2`` ⇒ mask) would mask the *low* frequencies, contradicting its own
low-pass goal; like the reference implementation we keep the low ones (notes §10 item 4).
``bandlimit_rule`` picks Δ in that formula:

* ``"train"`` (reference implementation): Δ is the training step ``exp(log_dt)``; the mask does
  not move with ``rate``.
* ``"nyquist"`` (default): Δ · max(1, rate_τ). Identical to ``"train"`` at the training
  resolution and on finer grids (rate <= 1, the only direction the thesis evaluates); on a
  coarser grid (rate > 1) it also zeroes the modes that would exceed α/2 cycles per sample of
  the *new* grid, i.e. it removes exactly the frequencies the coarser grid cannot represent.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple, Union, cast

import torch
from torch import nn

from .._checks import (
    check_batch,
    check_batch_size,
    check_choice,
    check_device,
    check_dtype_compatible,
    check_flag,
    check_int,
    check_length,
    check_positive_int,
    check_real,
    check_real_float,
    check_result,
    check_seed,
    check_state,
    public,
    seeded_generator,
)
from ..kernels.vandermonde import exp_scaled, vandermonde, vandermonde_transpose
from ..ops.fftconv import two_sided_kernel
from ..ops.fftconv_nd import CONV_METHODS, conv_nd, outer_kernel
from ..serialization import Pretrained
from .base import no_irregular_path
from .config import LayerConfig, setting
from .init import REAL_TRANSFORMS, S4D_INITS
from .s4d import S4D, S4D_DISCRETIZATIONS

#: S4ND's per-axis rules: S4D's without "gbt", whose alpha S4ND has no argument for (it failed at construction)
S4ND_DISCRETIZATIONS = tuple(d for d in S4D_DISCRETIZATIONS if d != "gbt")

Tensor = torch.Tensor
RateLike = Union[float, Sequence[float]]

#: Which step size the bandlimit mask uses (module docstring).
BANDLIMIT_RULES = ("nyquist", "train")


def _per_axis(name: str, value, dims: int) -> tuple:
    """Broadcast a scalar to ``dims`` entries, or check a sequence has exactly ``dims`` entries."""
    if isinstance(value, (list, tuple)):
        if len(value) != dims:
            raise ValueError(f"{name} must be a scalar or have one entry per axis (dims={dims}), got {value!r}")
        return tuple(value)
    return (value,) * dims


def check_rates(rate: RateLike, dims: int) -> Tuple[float, ...]:
    """Validate a step-size multiplier (one number, or one per axis) and return ``dims`` floats."""
    rates = _per_axis("rate", rate, dims)
    what = "positive finite number per axis (step-size multiplier; a grid 2x finer needs rate 0.5)"
    return tuple(check_real("rate" if dims == 1 else f"rate[{i}]", r, what=what) for i, r in enumerate(rates))


def resolution_rate(train_shape: Sequence[int], new_shape: Sequence[int]) -> Tuple[float, ...]:
    """Per-axis ``rate`` to run a layer trained on ``train_shape`` grids on ``new_shape`` grids.

    Both grids sample the same continuous domain, so the step scales as ``L_train / L_new``:
    ``resolution_rate((28, 28), (56, 56)) == (0.5, 0.5)`` (2x finer grid, Δ/2). Thesis §9.3.2, §2.4.1.
    """
    if len(train_shape) != len(new_shape):
        raise ValueError(f"train_shape {tuple(train_shape)} and new_shape {tuple(new_shape)} differ in rank; pass "
                         "both with one size per axis of the layer")
    for s in tuple(train_shape) + tuple(new_shape):
        check_positive_int("grid size", s)
    return tuple(a / b for a, b in zip(train_shape, new_shape))


class S4ND(Pretrained, nn.Module):
    r"""Multidimensional S4 layer with a rank-1 (outer-product) kernel (thesis §9.3.1, Cor. 9.3).

    Args:
        d_model: channels H (depthwise: one N-D kernel per channel).
        dims: number of spatial axes D (1, 2 or 3; any D >= 1 works).
        d_state: real state size N of each per-axis S4D (N/2 complex conjugate-pair modes per
            axis and channel); the thesis uses 64.
        init: S4D init of (A, B) for every axis (``legs``, ``inv``, ``lin``, ...).
        bidirectional: one bool for all axes or one per axis; True = two-sided (non-causal)
            kernel on that axis, False = causal.
        discretization: per-axis S4D discretization (default ``zoh``; every S4D rule but ``gbt``, whose ``alpha``
            S4ND does not take).
        dt_min: lower end of the log-uniform Δ init range, a scalar or one per axis (e.g. a longer
            initial temporal kernel for video; 1/Δ is the kernel's effective length, §9.4.2).
        dt_max: upper end of the log-uniform Δ init range, a scalar or one per axis (see ``dt_min``).
        real_transform: passed to every S4D.
        trainable_B: passed to every S4D.
        bandlimit: α of the bandlimit mask, or None (off, the α = ∞ of the thesis).
        bandlimit_rule: ``"nyquist"`` (default) or ``"train"``, see the module docstring.
        conv: how the separable N-D convolution is computed, all exact: ``"fft"`` (default, the
            thesis' N-D FFT with 2L zero padding per axis), ``"toeplitz"`` (one dense L x L matmul
            per axis; faster on CPU for small grids) or ``"auto"`` (Toeplitz if every L <= 64).
        seed: seeds axis τ's S4D with ``seed + τ`` and the D skip with ``seed + dims``.

    Shapes:
        forward: x (B, L_1, ..., L_D, H) -> y (B, L_1, ..., L_D, H), channels last like the 1-D layers.
        kernel_factors(shape): list of D tensors, (H, 2L_τ) two-sided / (H, L_τ) causal.
        kernel(shape): (H, n_1, ..., n_D), their outer product.

    Example::

        >>> layer = S4ND(d_model=8, dims=2, d_state=16)
        >>> y = layer(torch.randn(4, 28, 28, 8))              # trained at 28x28
        >>> y56 = layer(torch.randn(4, 56, 56, 8), rate=0.5)  # same continuous layer, 2x finer grid
    """

    def __init__(
        self,
        d_model: int,
        dims: int = 2,
        d_state: int = 64,
        init: str = "legs",
        bidirectional: Union[bool, Sequence[bool]] = True,
        discretization: str = "zoh",
        dt_min: Union[float, Sequence[float]] = 1e-3,
        dt_max: Union[float, Sequence[float]] = 1e-1,
        real_transform: str = "exp",
        trainable_B: bool = True,
        bandlimit: Optional[float] = None,
        bandlimit_rule: str = "nyquist",
        conv: str = "fft",
        seed: Optional[int] = None,
    ) -> None:
        super().__init__()
        self.d_model = check_positive_int("d_model", d_model)
        self.dims = check_positive_int("dims", dims)
        self.d_state = check_positive_int("d_state", d_state)
        seed = check_seed(seed)
        discretization = check_choice("discretization", discretization, S4ND_DISCRETIZATIONS)
        bidir = _per_axis("bidirectional", bidirectional, dims)
        if not all(isinstance(b, bool) for b in bidir):
            raise TypeError(f"bidirectional must be a bool or a sequence of {dims} bools, got {bidirectional!r}")
        self.two_sided: Tuple[bool, ...] = tuple(bidir)
        dt_mins = _per_axis("dt_min", dt_min, dims)
        dt_maxs = _per_axis("dt_max", dt_max, dims)
        self.bandlimit_rule = check_choice("bandlimit_rule", bandlimit_rule, BANDLIMIT_RULES)
        self.conv = check_choice("conv", conv, CONV_METHODS)
        self.bandlimit = bandlimit  # validated by the property setter
        axes = []
        for ax in range(dims):
            layer = S4D(
                d_model, d_state, init=init, discretization=discretization, dt_min=dt_mins[ax], dt_max=dt_maxs[ax],
                real_transform=real_transform, bidirectional=self.two_sided[ax], trainable_B=trainable_B,
                seed=None if seed is None else seed + ax,
            )
            # The N-D layer has a single skip term; the axis layers are only kernel generators.
            del layer.D
            layer.register_buffer("D", torch.zeros(d_model), persistent=False)
            axes.append(layer)
        self.axes = nn.ModuleList(axes)
        gen = seeded_generator(None if seed is None else seed + dims)
        self.D = nn.Parameter(torch.randn(d_model, generator=gen, dtype=torch.float64).to(torch.get_default_dtype()))

    #: ``bandlimit`` may be set after construction: ``save_pretrained`` saves its current value (also
    #: for the layers of a model, e.g. after ``ImageClassifier.set_bandlimit``), see :mod:`..serialization`
    settable_arguments = ("bandlimit",)

    # ---- configuration ---------------------------------------------------------------------
    @property
    def bandlimit(self) -> Optional[float]:
        """α of the bandlimit mask (None = off). Settable, e.g. to compare a trained layer with/without it;
        a save and reload keeps the value set last."""
        return self._bandlimit

    @bandlimit.setter
    def bandlimit(self, alpha: Optional[float]) -> None:
        if alpha is not None:
            alpha = check_real("bandlimit", alpha, what="positive finite cutoff alpha (or None: off)")
        self._bandlimit = alpha

    @property
    def param_dtype(self) -> torch.dtype:
        return self.D.dtype

    def ssm_parameters(self) -> Iterator[nn.Parameter]:
        """A, B, Δ of every axis (their own optimizer group, §7.1)."""
        for layer in self.axes:
            yield from cast(S4D, layer).ssm_parameters()

    # ---- kernels ---------------------------------------------------------------------------
    def bandlimit_mask(self, axis: int, rate: float = 1.0) -> Tensor:
        r"""Boolean (H, M) mask of the modes of ``axis`` kept at step multiplier ``rate`` (all True if off).

        Mode n of channel h is kept iff ``|Im A_n| Δ_h r / 2π < α/2`` with r = max(1, rate)
        (rule ``"nyquist"``) or r = 1 (rule ``"train"``); Δ_h is the trained step of that axis.
        """
        layer = cast(S4D, self.axes[axis])
        A = layer.continuous_A()
        if self._bandlimit is None:
            return torch.ones(A.shape, dtype=torch.bool, device=A.device)
        r = max(1.0, rate) if self.bandlimit_rule == "nyquist" else 1.0
        freq = A.imag.abs() * torch.exp(layer.log_dt).unsqueeze(-1) * r / (2 * math.pi)
        return freq < self._bandlimit / 2

    @public
    def axis_kernel(self, axis: int, L: int, rate: float = 1.0) -> Tensor:
        r"""The 1-D kernel of ``axis`` for length L: (2, H, L) (causal, anti-causal) if two-sided, else (H, L).

        Same as ``self.axes[axis].kernel(L, rate)`` (eq. 3.2) but with the bandlimit mask on C.
        """
        axis = check_int("axis", axis, 0)
        if axis >= self.dims:
            raise ValueError(f"axis must be in [0, dims={self.dims}), got {axis}")
        L = check_length(L)
        rate = check_rates(rate, 1)[0]
        layer = cast(S4D, self.axes[axis])
        sys = layer.diagonal_system(rate)
        C = sys.C
        if self._bandlimit is not None:
            C = C * self.bandlimit_mask(axis, rate).to(C.real.dtype)
        k = (sys.scale * vandermonde(C * sys.dB, sys.exponent, L)).to(sys.dB.real.dtype)     # (K, H, L)
        check_result(self, k, f"kernel of axis {axis}")
        return k if self.two_sided[axis] else k[0]

    @public
    def kernel_factors(self, shape: Sequence[int], rate: RateLike = 1.0) -> List[Tensor]:
        r"""Per-axis factors of the N-D kernel for a grid ``shape`` = (L_1, ..., L_D).

        Factor τ is (H, L_τ) on a causal axis (lag j at index j) or (H, 2L_τ) on a two-sided axis
        (index j < L: lag j; index 2L - m: lag -m), the layout of
        :func:`statespaces.ops.fftconv_nd.fftconv_nd`. Memory O(H Σ L_τ).
        """
        shape = self._check_shape(shape)
        rates = check_rates(rate, self.dims)
        out = []
        for ax, (L, r) in enumerate(zip(shape, rates)):
            k = self.axis_kernel(ax, L, r)
            out.append(two_sided_kernel(k, L) if self.two_sided[ax] else k)
        check_result(self, out, "kernel")
        return out

    @public
    def kernel(self, shape: Sequence[int], rate: RateLike = 1.0) -> Tensor:
        r"""Full N-D kernel (H, n_1, ..., n_D), the outer product of :meth:`kernel_factors` (Cor. 9.3).

        O(H Π n_τ) memory: for inspection (plots, tests); the forward pass never builds it.
        """
        K = outer_kernel(self.kernel_factors(shape, rate))
        check_result(self, K, "kernel")
        return K

    # ---- forward ---------------------------------------------------------------------------
    @public
    def forward(self, x: Tensor, state: Optional[Tensor] = None, return_state: bool = False,
                rate: RateLike = 1.0, *, dt: Optional[Tensor] = None,
                timestamps: Optional[Tensor] = None) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        r"""Apply the layer to x (B, L_1, ..., L_D, H).

        Args:
            x: real input, batch first, channels last, exactly ``dims`` spatial axes.
            state: state before the first frame (axis 1), (B, L_2, ..., L_D, H, M) complex from
                :meth:`initial_state` or a previous ``return_state=True`` call; None: zeros. Needs a
                causal first axis.
            return_state: also return the state after the last frame (chunked streaming).
            rate: step multiplier, one number or one per axis; ``rate = L_train / L_new`` runs a
                layer trained on L_train-point grids on L_new-point grids (:func:`resolution_rate`).
            dt, timestamps: refused (ValueError): S4ND has no irregular-sampling path, as the sequence layers do.

        Returns:
            y with the shape and dtype of x, and the new state if ``return_state``.
        """
        if dt is not None or timestamps is not None:
            raise no_irregular_path(self)
        self._check_input(x)
        rates = check_rates(rate, self.dims)
        return_state = check_flag("return_state", return_state)
        if state is not None or return_state:
            self._check_streamable()
        in_dtype = x.dtype
        u = x.to(self.param_dtype)
        spatial = tuple(u.shape[1:-1])
        if state is not None:
            self._check_state(state, u.shape[0], spatial[1:])
        factors = self.kernel_factors(spatial, rates)
        y = conv_nd(u.movedim(-1, 1), factors, self.two_sided, self.conv).movedim(1, -1) + u * self.D
        new_state = None
        if state is not None or return_state:
            log_dA, dB, C, scale = self._causal_system(rates[0])
            L = spatial[0]
            if state is not None:            # zero-input response: y_t += scale Re(C dA^{t+1} x_0)
                zir = scale * vandermonde(C * torch.exp(log_dA).to(dB.dtype) * state, log_dA, L)  # (B, *frame, H, L)
                zir = zir.to(dB.real.dtype)  # log_dA may be complex128 (DiagonalSystem.exponent): sums in float64
                y = y + zir.movedim(-1, 1)
            if return_state:                 # x_L = dA^L x_0 + sum_s dA^{L-1-s} dB v_s
                v = self._frame_conv(u, rates[1:])                                        # (B, L, *frame, H)
                new_state = dB * vandermonde_transpose(v.movedim(1, -1).flip(-1), log_dA).to(dB.dtype)
                if state is not None:
                    new_state = new_state + exp_scaled(log_dA, L).to(dB.dtype) * state
        y = y.to(in_dtype)                       # cast first: a float16 output that overflows is refused too
        check_result(self, (y, new_state), input=x, state=state)   # NaN/inf: names the input, state or parameters
        if return_state and new_state is not None:
            return y, new_state
        return y

    # ---- recurrence along the causal first axis ----------------------------------------------
    @public
    def initial_state(self, batch_size: int, spatial_shape: Sequence[int] = ()) -> Tensor:
        r"""Zero state (B, L_2, ..., L_D, H, M) complex for streaming along the first axis.

        ``spatial_shape``: the frame's shape (L_2, ..., L_D), the axes after the causal one (empty
        for ``dims=1``); M = N/2 modes of the first axis' S4D.
        """
        self._check_streamable()
        batch_size = check_batch_size(batch_size)
        frame = self._check_frame_shape(spatial_shape)
        cdtype = torch.complex128 if self.param_dtype == torch.float64 else torch.complex64
        M = self._axis0.n_modes
        return torch.zeros(batch_size, *frame, self.d_model, M, dtype=cdtype, device=self.D.device)

    @public
    def step(self, x: Tensor, state: Tensor, rate: RateLike = 1.0) -> Tuple[Tensor, Tensor]:
        r"""One frame along the causal first axis: ``x_t = dA x_{t-1} + dB (K_rest * u_t)``,
        ``y_t = scale Re(C x_t) + D u_t`` (module docstring).

        Args:
            x: frame (B, L_2, ..., L_D, H) (for ``dims=1``: (B, H)). state: (B, L_2, ..., L_D, H, M)
                complex. rate: as :meth:`forward` (the first entry applies to the causal axis).

        Returns:
            ``(y_t, state')``, y_t shaped like x.
        """
        self._check_streamable()
        rates = check_rates(rate, self.dims)
        check_real_float("frame", x)
        check_device("frame", x, self.D.device)
        if x.dim() != self.dims + 1 or x.shape[-1] != self.d_model:
            want = "(batch, " + "".join(f"L{i + 2}, " for i in range(self.dims - 1)) + f"d_model={self.d_model})"
            raise ValueError(f"a frame must have shape {want} for dims={self.dims} (channels last), "
                             f"got {tuple(x.shape)}")
        check_batch("frame", x)
        check_dtype_compatible("frame", x, self.param_dtype)
        self._check_state(state, x.shape[0], tuple(x.shape[1:-1]))
        u = x.to(self.param_dtype)
        log_dA, dB, C, scale = self._causal_system(rates[0])
        v = self._frame_conv(u.unsqueeze(1), rates[1:]).squeeze(1)
        new_state = torch.exp(log_dA).to(dB.dtype) * state + dB * v.unsqueeze(-1)
        y = scale * (C * new_state).sum(-1).real + self.D * u
        y = y.to(x.dtype)                        # cast first: a float16 output that overflows is refused too
        check_result(self, (y, new_state), "step output", x=x, state=state)
        return y, new_state

    def _causal_system(self, rate: float) -> Tuple[Tensor, Tensor, Tensor, float]:
        """``(log_dA, dB, C, scale)`` (H, M) of the first axis' S4D, C with the bandlimit mask; log_dA at its best
        precision (:attr:`~statespaces.layers.base.DiagonalSystem.exponent`: complex128 under bilinear/GBT)."""
        sys = self._axis0.diagonal_system(rate)
        C = sys.C[0]
        if self._bandlimit is not None:
            C = C * self.bandlimit_mask(0, rate).to(C.real.dtype)
        return sys.exponent, sys.dB, C, sys.scale

    def _frame_conv(self, u: Tensor, rates: Sequence[float]) -> Tensor:
        """``K_rest * u_t`` for every frame of u (B, T, L_2, ..., L_D, H): the convolution over the
        axes after the first, with their factors (identity for ``dims=1``)."""
        if self.dims == 1:
            return u
        frame = tuple(u.shape[2:-1])
        factors = []
        for ax, (L, r) in enumerate(zip(frame, rates), start=1):
            k = self.axis_kernel(ax, L, r)
            factors.append(two_sided_kernel(k, L) if self.two_sided[ax] else k)
        h = len(frame) + 1
        return conv_nd(u.movedim(-1, -h), factors, self.two_sided[1:], self.conv).movedim(-h, -1)

    def _check_streamable(self) -> None:
        if self.two_sided[0]:
            raise ValueError(
                "streaming (initial_state/step/state) runs along the first axis, which is two-sided here; build "
                "the layer with bidirectional=(False, ...) to make it causal (e.g. time in video), "
                f"got {self.two_sided}"
            )

    def _check_frame_shape(self, shape: Sequence[int]) -> Tuple[int, ...]:
        if isinstance(shape, int) or not isinstance(shape, (tuple, list, torch.Size)):
            raise TypeError(f"spatial_shape must be a sequence of {self.dims - 1} frame sizes (L_2, ..., L_D), "
                            f"got {shape!r}")
        if len(shape) != self.dims - 1:
            raise ValueError(f"spatial_shape {tuple(shape)} must hold the {self.dims - 1} axes after the causal one "
                             f"(dims={self.dims})")
        return tuple(check_length(s, f"spatial_shape[{i}]") for i, s in enumerate(shape))

    def _check_state(self, state: Tensor, batch: int, frame: Tuple[int, ...]) -> None:
        cdtype = torch.complex128 if self.param_dtype == torch.float64 else torch.complex64
        if isinstance(state, Tensor) and state.dim() == len(frame) + 3 and tuple(state.shape[1:-2]) != frame:
            raise ValueError(f"the frame's spatial shape {frame} and the state's {tuple(state.shape[1:-2])} differ: a "
                             "state streams frames of one shape; make it with initial_state(batch_size, "
                             "spatial_shape=frame.shape[1:-1]) for the frames you step")
        check_state(state, (batch, *frame, self.d_model, self._axis0.n_modes), cdtype, self.D.device, batch)

    @property
    def _axis0(self) -> S4D:
        """The S4D of the first axis (the causal one when streaming)."""
        return cast(S4D, self.axes[0])

    # ---- validation ------------------------------------------------------------------------
    def _check_shape(self, shape: Sequence[int]) -> Tuple[int, ...]:
        if isinstance(shape, int) or not isinstance(shape, (tuple, list, torch.Size)):
            raise TypeError(f"shape must be a sequence of {self.dims} grid sizes, got {shape!r}")
        if len(shape) != self.dims:
            raise ValueError(f"shape {tuple(shape)} has {len(shape)} axes, the layer has dims={self.dims}")
        return tuple(check_length(s, f"grid size shape[{i}]") for i, s in enumerate(shape))

    def _check_input(self, x: Tensor) -> None:
        check_real_float("input", x)
        check_device("input", x, self.D.device)
        want = f"(batch, {', '.join(f'L{i + 1}' for i in range(self.dims))}, d_model={self.d_model})"
        if x.dim() != self.dims + 2:
            raise ValueError(
                f"input must have shape {want} for dims={self.dims}, got {tuple(x.shape)} "
                f"({x.dim() - 2} spatial axes); channels go last"
            )
        if x.shape[-1] != self.d_model:
            raise ValueError(
                f"input has {x.shape[-1]} channels in its last dim, the layer expects d_model={self.d_model} "
                "(channels last: (batch, *spatial, channels))"
            )
        check_batch("input", x)
        if any(s == 0 for s in x.shape[1:-1]):
            raise ValueError(f"input of shape {tuple(x.shape)} has an empty spatial axis; every axis needs >= 1 point")
        check_dtype_compatible("input", x, self.param_dtype)
        # NaN/inf: checked on the result (check_result in forward), which names the culprit

    def extra_repr(self) -> str:
        s = f"d_model={self.d_model}, dims={self.dims}, d_state={self.d_state}, two_sided={self.two_sided}"
        if self._bandlimit is not None:
            s += f", bandlimit={self._bandlimit}, bandlimit_rule={self.bandlimit_rule!r}"
        if self.conv != "fft":
            s += f", conv={self.conv!r}"
        return s


@dataclass(frozen=True)
class S4NDConfig(LayerConfig):
    """Settings of :class:`S4ND` (its constructor arguments but ``d_model``, same defaults).

    ``d_state`` counts **real state dimensions** N of each axis' S4D (N/2 complex conjugate-pair
    modes per axis). ``bidirectional``, ``dt_min`` and ``dt_max`` take one value or one per axis.
    """

    kind = "s4nd"
    dims: int = setting(2, "int", "number of spatial axes D", lo=1)
    d_state: int = setting(64, "int", "real state size N per axis (N/2 complex conjugate-pair modes; even)", lo=1)
    init: str = setting("legs", "str", "S4D init of every axis", choices=lambda: tuple(S4D_INITS))
    bidirectional: Union[bool, Tuple[bool, ...]] = setting(True, "bool", "two-sided kernel, per axis or for all",
                                                           per_axis=True)
    discretization: str = setting("zoh", "str", "per-axis discretization", choices=lambda: S4ND_DISCRETIZATIONS)
    dt_min: Union[float, Tuple[float, ...]] = setting(1e-3, "float", "lower end of the dt init, per axis or for all",
                                                      lo=0, lo_open=True, per_axis=True)
    dt_max: Union[float, Tuple[float, ...]] = setting(1e-1, "float", "upper end of the dt init, per axis or for all",
                                                      lo=0, lo_open=True, per_axis=True)
    real_transform: str = setting("exp", "str", "how Re(A) < 0 is kept", choices=lambda: tuple(REAL_TRANSFORMS))
    trainable_B: bool = setting(True, "bool", "train B (or freeze it)")
    bandlimit: Optional[float] = setting(None, "float", "alpha of the bandlimit mask (none: off)", lo=0, lo_open=True,
                                         nullable=True)
    bandlimit_rule: str = setting("nyquist", "str", "step size of the bandlimit rule", choices=lambda: BANDLIMIT_RULES)
    conv: str = setting("fft", "str", "how the N-D convolution is computed", choices=lambda: CONV_METHODS)
    seed: Optional[int] = setting(None, "int", "seed of the layer's random init", lo=0, nullable=True)
