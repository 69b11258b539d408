r"""The explicit operator of a trained SSM layer: its oscillators and closed-form Green's function.

Seed 000 (with the corrections of notes Part 6.2) and seed 001 (LinOSS, notes Part 6.1). A linear
time-invariant layer's convolution kernel is a sum of damped discrete oscillators:

    K[l] = sum_n 2 Re(c_n lambda_n^l)                      (l = 0, 1, ..., L-1)

with discrete eigenvalues ``lambda_n`` (one representative per conjugate pair, ``Im >= 0``) and
complex residues ``c_n`` (amplitude ``2|c_n|``, phase ``arg c_n``). The layer's output is
``y = K * u + D u``. The analysis extracts ``(lambda_n, c_n)`` from a layer and reports, per
oscillator:

* ``eig``: discrete eigenvalue ``lambda = exp(log_eig)``; ``angle`` = arg(lambda) (rad per step),
  ``decay_steps`` = -1/log|lambda| (steps for the envelope to fall by e);
* ``eig_continuous`` ``s = log(lambda)/dt`` (principal log): the continuous eigenvalue whose samples
  at ``t = l dt`` reproduce the discrete kernel exactly, ``K[l] = sum 2 Re(c e^{s t_l})``;
  from it ``natural_frequency`` ``w0 = |s|``, ``damping_ratio`` ``zeta = -Re s/|s|``,
  ``damped_frequency`` ``Im s`` (rad per unit time; time unit = the one dt is measured in) and
  ``decay_time`` ``-1/Re s``. For complex ``s`` the pair (s, conj s) is the first-order form of
  ``q'' + 2 zeta w0 q' + w0^2 q = input`` (notes 6.2), with ``|zeta| < 1``. A **real** ``s`` (a real
  positive ``lambda``, ``angle`` 0) is no oscillator but a single first-order relaxation ``e^{s t}``
  (its conjugate is itself): it is reported with ``zeta = 1`` (``-1`` if it grows) and ``w0 = |s|``, the
  relaxation rate, and marked ``relaxation`` (property, table column, ``summary()['n_relaxations']``).
  It is *not* the critically damped oscillator of that equation, whose Green's function
  ``t e^{-w0 t}`` needs a double eigenvalue. A layer whose modes carry no ``dt`` is
  analysed with ``dt = 1`` step and says so: ``time_unit == "step"`` (frequencies in rad per step,
  decay times in steps) instead of ``"time"``.
* ``eig_nominal``: the continuous eigenvalue of the layer's own ODE before discretization.

What frequency and damping mean depends on the discretization (notes 6.2):

* S4D **ZOH**: ``lambda = exp(dt A)``, so ``s = A`` exactly (up to aliasing of Im A by 2 pi/dt).
* S4D **bilinear** (and the other GBT rules): ``lambda = (1 + dt A/2)/(1 - dt A/2)``, so
  ``s != A``: the frequency is tan-warped (for Re A = 0: ``Im s = (2/dt) arctan(dt Im A / 2)``) and
  the damping changes. We report ``s`` (what the discrete kernel does) and ``A`` as ``eig_nominal``.
* **LinOSS**: the ODE ``y'' = -A y`` is undamped (``eig_nominal = i sqrt(A)``, zeta = 0); IM adds
  numerical damping ``|lambda| = (1 + dt^2 A)^{-1/2}``; IMEX keeps ``|lambda| = 1``.
  LinOSS is MIMO: its residues are ``c_{h,k,p} = Re(C_hp B_pk) c_p`` (H_out, H_in, P) where
  ``c_p`` is the residue of oscillator p's position Green's function (unit forcing).
  An oscillator with ``dt sqrt(A) < 1e-6`` (A ~ 0: a double eigenvalue, Jordan block) is not a sum
  of exponentials; it is kept as a ramp ``K[l] += ramp * (l + 1) r^l`` (:attr:`ramp`).
* **S5** (MIMO, first-order modes shared by all channels): each mode ``lambda_m`` is one oscillator
  (ZOH: ``s = Lambda_m``; bilinear: warped as S4D's), with the complex mixing residues
  ``c_{h,j,m} = C_hm B_mj / 2`` (H_out, H_in, M). A bidirectional S5's backward scan also reads the
  current input: that lag-0 matrix ``Re(C_b B_bar)`` is no oscillator and is kept as :attr:`lag0`.

Supported layers: any layer with a ``modes(rate)`` view (:class:`~statespaces.layers.modes.Modes`):
:class:`~statespaces.layers.s4d.S4D` (and any :class:`~statespaces.layers.base.DiagonalSSM`), S4
(its diagonalised DPLR form), :class:`~statespaces.layers.linoss.LinOSS`, D-LinOSS and
:class:`~statespaces.layers.s5.S5`. The analysis
reads nothing else of a layer (no type tests, no raw parameters). All numbers are float64/complex128, computed
from a float64 copy of a float32 layer.

**S4** (modes of structure ``dplr``: all N eigenvalues of the real N x N system per channel) lists each
conjugate pair ``(lambda, conj lambda)`` as one oscillator with the pair's residue ``c + conj c'``, and
each real eigenvalue as one oscillator, exactly as S4D with the same system would. Channels can then
have different numbers of oscillators; the (H, M) tensors are padded, and :attr:`OscillatorAnalysis.valid`
marks the oscillators (tables, counts and :meth:`~OscillatorAnalysis.to_oscillators` skip the padding,
which has residue 0 and repeats a real entry's eigenvalue, so the kernel and plots are unchanged).
S4's modes come from an eigendecomposition whose accuracy is measured (``Modes.kernel_error``, Lemma
6.6); the analysis keeps it (``extra['kernel_error']`` per channel, ``summary()['kernel_error']``,
a ``kernel_error`` column in :meth:`~OscillatorAnalysis.table`): above
:data:`~statespaces.layers.modes.MODES_TOL` the table is not a faithful picture of the layer
(``summary()['faithful']`` is False, and ``S4.modes`` has warned).

**Bidirectional layers** have two kernels over the same oscillators: the causal (``forward``)
one, acting on lags ``0..L-1`` with the skip ``D``, and the anti-causal (``backward``) one with its
own output vector (``C[1]``, LinOSS ``C_back``), acting on lags ``-1..-L``:
``y_t += sum_{s>t} K_back[s-t-1] u_s``. :func:`oscillators` takes ``direction="forward"`` or
``"backward"`` for such a layer; :func:`layer_analyses` returns both. A LinOSS with
``bidirectional="concat"`` runs an independent ``reverse`` layer on the reversed sequence (lags
``0..-(L-1)``, its own ``D``) and mixes the two outputs with a linear map: its backward analysis is
that of the reverse layer (``lag_offset = 0``), and the mixing map is not part of either kernel.

:func:`s4d_from_oscillators` maps a list of :class:`Oscillator` records back to an S4D layer with
the same kernel (round trip).

Layout (this module gathers them: every name stays importable from here): the records :class:`Oscillator`,
:class:`OscillatorAnalysis` and :func:`green_kernel` live in :mod:`statespaces.analysis.records`; reading a layer
(:func:`oscillators`, :func:`layer_analyses`, :func:`supported_layer`, :func:`unsupported_reason`) in
:mod:`statespaces.analysis.extraction`; the inverse map :func:`s4d_from_oscillators` in
:mod:`statespaces.analysis.synthesis`.
"""
from .extraction import DIRECTIONS, layer_analyses, oscillators, supported_layer, unsupported_reason
from .records import Oscillator, OscillatorAnalysis, green_kernel
from .synthesis import s4d_from_oscillators

__all__ = ["Oscillator", "OscillatorAnalysis", "oscillators", "s4d_from_oscillators", "supported_layer", "green_kernel",
           "layer_analyses", "unsupported_reason", "DIRECTIONS"]
