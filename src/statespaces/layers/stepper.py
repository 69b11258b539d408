r"""Steppers: a layer's recurrent view prepared once for generation (thesis §2.3.2, §7.4.2).

``layer.step(x, state)`` re-validates its input and state, looks the discrete system up in a
cache (values compared on CPU, version counters on CUDA: :mod:`.step_cache`), allocates a new state and
checks the result for NaN/inf (another sync). A stepper does all of that **once**::

    st = layer.stepper(batch_size)          # validate, discretize, allocate
    ys = []
    for t in range(L):
        y_t = st(x[:, t])                   # (B, H) -> (B, H), advances st.state in place
        ys.append(y_t.clone())              # y_t IS the buffer st.y, overwritten by the next call
    st.reset()                              # back to the zero state (or st.reset(state))

At build time it checks the parameters (finite, else ``FloatingPointError`` naming them), the
discrete system (finite; every eigenvalue ``|lambda| <= 1 + 1e-9``, i.e. no growing mode, else
``ValueError``) and the shapes; a call then only checks the
shape of ``x_t`` (host metadata, no sync) and advances the static buffers ``st.x`` (B, H),
``st.y`` (B, H) and ``st.state`` (the layer's state, or its image in the basis the stepper runs in:
``st.layer_state()`` gives the layer's) in place, so the same call can be captured in a CUDA graph
(:mod:`statespaces.models.stepper`). The result is **not** checked for NaN/inf per call: finite parameters,
a stable system and finite inputs give finite outputs.

Forms (each the same math as the layer's ``step``, written once and shared with it):

* :class:`DiagonalStepper` -- S4D and any :class:`~.base.DiagonalSSM`: ``dA, dB, conj(scale C)``
  (H, M) complex; on CUDA the fused Triton kernel (:mod:`statespaces.ops.triton.step`) updates the
  state in place in one launch, elsewhere :func:`~statespaces.kernels.dispatch.diagonal_step_ref`.
* :class:`DPLRStepper` -- S4 in its low-rank form (Woodbury, :class:`~statespaces.kernels.dplr.DPLRStep`,
  O(N r) per channel, exact); ``S4.stepper(..., form="diagonal")`` uses instead the float64
  eigendecomposition of the DPLR transition (:meth:`~.s4.S4.diagonalize`, refused when inaccurate)
  and a :class:`DiagonalStepper`, whose state lives in the eigenbasis.
* :class:`MIMOStepper` -- S5: one complex state (B, M) shared by the channels, ``Lambda_bar``, ``B_bar``, ``C``
  as the layer's ``step`` forms them; the input and readout are complex GEMMs on static buffers.
* :class:`OscillatorStepper` -- LinOSS / D-LinOSS: the 2x2 blocks ``M``, forcing ``f`` in float64, in their
  normal form (the state in that basis, converted by ``reset`` / ``layer_state``).

Shapes: B batch, H channels, M complex modes, P oscillators.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Union, cast

import torch

from .. import backend
from .._checks import NOT_STEPPABLE, check_batch_size, check_rate, nonfinite_parameters
from ..kernels.dispatch import diagonal_step_ref
from ..kernels.oscillator import from_normal_basis, normal_form, oscillator_step, to_normal_basis

if TYPE_CHECKING:                       # type hints only: base.py builds steppers through layer_stepper
    from .base import DiagonalSSM, SSMLayer

Tensor = torch.Tensor

#: An eigenvalue of the discrete transition above ``1 + STABILITY_TOL`` in modulus is refused.
STABILITY_TOL = 1e-9

_COMPLEX = {torch.float32: torch.complex64, torch.float64: torch.complex128}


def _resolve(layer: SSMLayer, dtype: Optional[torch.dtype], device: Optional[Union[str, torch.device]]):
    dtype = layer.param_dtype if dtype is None else dtype
    if dtype not in _COMPLEX:
        raise TypeError(f"a stepper computes in float32 or float64, got dtype={dtype}")
    device = layer.D.device if device is None else torch.device(device)
    return dtype, device


def check_stepper_input(x: Tensor, buffer: Tensor, who: str) -> None:
    """The per-call checks of a stepper's input x against its static input ``buffer`` (B, H), from metadata only
    (no device sync, so a CUDA-graph replay loop pays nothing on the device): the buffer's shape and device (the
    buffer's device has its index, "cuda:0", where a requested device may not), and a real floating dtype no wider
    than the buffer's (as a layer's ``step`` refuses float64 into float32). Shared by the layer steppers and
    :class:`~statespaces.models.stepper.ModelStepper`."""
    if not isinstance(x, Tensor) or x.shape != buffer.shape:
        raise ValueError(f"{who} input must have shape {tuple(buffer.shape)} (batch_size, d_model), got "
                         f"{tuple(getattr(x, 'shape', ())) or type(x).__name__}")
    if x.device != buffer.device:
        raise ValueError(f"{who} input is on {x.device}, the stepper on {buffer.device}; move one with .to(device)")
    if x.is_complex() or not x.is_floating_point() or (x.dtype == torch.float64 and buffer.dtype != x.dtype):
        raise TypeError(f"{who} input must be a real floating-point tensor no wider than the stepper's "
                        f"{buffer.dtype}, got {x.dtype}")


def _check_system(layer: SSMLayer, eig_abs: Tensor, **tensors: Tensor) -> None:
    """Build-time validation: finite parameters and system, no eigenvalue outside the unit disc."""
    bad = nonfinite_parameters(layer)
    if bad:                     # the contract of docs/validation.md: non-finite parameters -> FloatingPointError
        raise FloatingPointError(f"cannot build a stepper for {type(layer).__name__}: these parameters are not "
                                 f"finite: {bad}; reload a checkpoint or re-initialize them")
    for name, t in tensors.items():
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"cannot build a stepper for {type(layer).__name__}: its discrete {name} is not "
                             "finite (an overflow of the discretization; try a smaller rate or float64)")
    worst = float(eig_abs.max()) if eig_abs.numel() else 0.0
    if not worst <= 1 + STABILITY_TOL:
        raise ValueError(f"cannot build a stepper for {type(layer).__name__}: its discrete transition has an "
                         f"eigenvalue of modulus {worst:.6g} > 1, so the state grows without bound; keep A stable "
                         "(real_transform='exp'/'softplus') or lower dt / rate")


class LayerStepper:
    """Static buffers and the in-place step of one causal layer (see the module docstring).

    Attributes: ``x`` (B, H) input buffer, ``y`` (B, H) output buffer, ``state`` (the layer's
    state layout, complex), ``batch_size``, ``d_model``, ``dtype``, ``device``, ``rate``.
    """

    state: Tensor

    def __init__(self, layer: SSMLayer, batch_size: int, rate: float, dtype: Optional[torch.dtype],
                 device: Optional[Union[str, torch.device]]) -> None:
        if getattr(layer, "bidirectional", False):
            raise ValueError(NOT_STEPPABLE)
        self.batch_size = check_batch_size(batch_size)
        self.rate = check_rate(rate)
        self.dtype, self.device = _resolve(layer, dtype, device)
        self.cdtype = _COMPLEX[self.dtype]
        self.d_model = layer.d_model
        self.layer_name = type(layer).__name__
        kw = dict(dtype=self.dtype, device=self.device)
        self.x = torch.zeros(self.batch_size, self.d_model, **kw)
        self.y = torch.zeros(self.batch_size, self.d_model, **kw)

    def _real(self, t: Tensor) -> Tensor:
        """A private contiguous copy (never a view of a parameter: the stepper is a snapshot)."""
        return t.detach().to(device=self.device, dtype=self.dtype).clone(memory_format=torch.contiguous_format)

    def _cplx(self, t: Tensor) -> Tensor:
        return t.detach().resolve_conj().to(device=self.device, dtype=self.cdtype).clone(
            memory_format=torch.contiguous_format)

    def __call__(self, x: Tensor) -> Tensor:
        """Advance one step on x (B, H); returns the output buffer ``y`` (B, H), overwritten by the next call.

        Checked per call from the tensor's metadata only (no device sync): shape, device, a real floating dtype
        no wider than the stepper's (as the layer's ``step`` does)."""
        check_stepper_input(x, self.x, f"{self.layer_name} stepper")
        self.x.copy_(x)
        self.advance()
        return self.y

    def advance(self) -> None:  # pragma: no cover - abstract
        """One step from the buffer ``x`` into ``state`` and ``y``, in place (CUDA-graph capturable)."""
        raise NotImplementedError

    def reset(self, state: Optional[Tensor] = None) -> None:
        """Zero the state, or load ``state`` (in the layer's own layout, e.g. from
        ``forward(..., return_state=True)``)."""
        if state is None:
            self.state.zero_()
            return
        self._check_state(state, self.state.shape)
        self.state.copy_(self._own_basis(state.detach()))

    def _check_state(self, state: Tensor, shape) -> None:
        """A state to load: complex, of ``shape``, and (off CUDA, where it costs no device sync) finite. It is
        detached when loaded: the stepper is a snapshot, and a state from a training-mode ``forward`` carries the
        autograd graph, which every step would otherwise extend."""
        if not isinstance(state, Tensor) or not state.is_complex():
            raise TypeError(f"{self.layer_name} stepper state must be a complex tensor (the layer's state, e.g. from "
                            f"forward(..., return_state=True)), got {getattr(state, 'dtype', type(state).__name__)}")
        if state.shape != shape:
            raise ValueError(f"{self.layer_name} stepper state must have shape {tuple(shape)}, "
                             f"got {tuple(state.shape)}")
        if state.device.type == "cpu" and not bool(torch.isfinite(torch.view_as_real(state.detach())).all()):
            raise ValueError(f"{self.layer_name} stepper state holds NaN or inf values; start again with "
                             "st.reset() (zeros) or assign a finite state")

    def _own_basis(self, state: Tensor) -> Tensor:
        """A state in the layer's layout mapped to the basis ``state`` lives in (here the same)."""
        return state

    def layer_state(self) -> Tensor:
        """The current state in the layer's layout (a copy), e.g. for ``layer(x, state=...)``."""
        return self.state.clone()


class DiagonalStepper(LayerStepper):
    """Stepper of a :class:`~.base.DiagonalSSM` (S4D, a diagonalized S4): state (B, H, M) complex."""

    def __init__(self, layer: DiagonalSSM, batch_size: int, rate: float = 1.0, dtype: Optional[torch.dtype] = None,
                 device: Optional[Union[str, torch.device]] = None) -> None:
        super().__init__(layer, batch_size, rate, dtype, device)
        with torch.no_grad():
            sys = layer.diagonal_system(self.rate)
            dA = torch.exp(sys.exponent)
            _check_system(layer, dA.abs(), dA=dA, dB=sys.dB, C=sys.C)
            self.dA = self._cplx(dA)
            self.dB = self._cplx(sys.dB)
            self.Cc = self._cplx((sys.scale * sys.C[0]).conj())
            self.D = self._real(layer.D)
        self.state = torch.zeros(self.batch_size, self.d_model, self.dA.shape[-1], dtype=self.cdtype,
                                 device=self.device)

    def advance(self) -> None:
        args = (self.dA, self.dB, self.Cc, self.D, self.x, self.state)
        if backend.choose("diagonal_step", *args, dtypes=tuple(_COMPLEX) + tuple(_COMPLEX.values())) == "triton":
            from ..ops.triton.step import diagonal_step_triton

            if backend.attempt("diagonal_step", diagonal_step_triton, *args, out=(self.y, self.state)) is not None:
                return
        diagonal_step_ref(*args, out=(self.y, self.state))      # the expression of layer.step, into the buffers


class DPLRStepper(LayerStepper):
    """Stepper of an :class:`~.s4.S4` layer in its low-rank form: state (B, H, N/2) complex (the layer's)."""

    def __init__(self, layer, batch_size: int, rate: float = 1.0, dtype: Optional[torch.dtype] = None,
                 device: Optional[Union[str, torch.device]] = None) -> None:
        from ..kernels.dplr import DPLRStep

        super().__init__(layer, batch_size, rate, dtype, device)
        with torch.no_grad(), layer._no_autocast():
            Lam, P, B, C = layer.continuous_system()
            st = DPLRStep.build(Lam, P, B, layer._dt(self.rate))
            # stability without an eigensolver: Re Lambda < 0 makes A = Lambda - P P^* Hurwitz
            # (Lemma 3.8), and the bilinear map sends a Hurwitz A inside the unit disc (dt > 0)
            if not bool((Lam.real < 0).all()):
                raise ValueError(f"cannot build a stepper for {type(layer).__name__}: some Re(Lambda) >= 0, so "
                                 "A = Lambda - P P^* is not guaranteed Hurwitz (Lemma 3.8); use real_transform="
                                 "'exp' or 'softplus'")
            parts = {k: getattr(st, k) for k in ("da", "db", "Pc", "dsP", "E", "sG")}
            _check_system(layer, torch.zeros(0), C=C[0], **parts)
            self.step_system = DPLRStep(**{k: self._cplx(v) for k, v in parts.items()})
            self.C = self._cplx(C[0])
            self.D = self._real(layer.D)
        self.state = torch.zeros(self.batch_size, self.d_model, layer.n_modes, dtype=self.cdtype, device=self.device)

    def advance(self) -> None:
        from ..kernels.dplr import dplr_step

        # one fused Triton launch on CUDA, in place (ops.triton.dplr_step); else PyTorch, copied in
        dplr_step(self.step_system, self.C, self.D, self.x, self.state, out=(self.y, self.state))


class EigenStepper(DiagonalStepper):
    """S4 through its float64 eigendecomposition (:meth:`~.s4.S4.diagonalize`): an O(N) complex
    diagonal step. The state lives in the eigenbasis; :meth:`reset` and :meth:`layer_state` convert
    from / to the S4 layer's half state."""

    def __init__(self, layer, batch_size: int, rate: float = 1.0, dtype: Optional[torch.dtype] = None,
                 device: Optional[Union[str, torch.device]] = None, tol: float = 1e-4) -> None:
        self.diagonal = layer.diagonalize(check_rate(rate), tol=tol)
        if dtype is not None and dtype != self.diagonal.D.dtype:
            raise TypeError("form='diagonal' steps in the layer's dtype; cast the S4 layer instead")
        super().__init__(self.diagonal, batch_size, rate, dtype, device)
        self.layer_name = type(layer).__name__
        self.n_half = layer.n_modes

    def reset(self, state: Optional[Tensor] = None) -> None:
        if state is not None:
            self._check_state(state, (self.batch_size, self.d_model, self.n_half))
            state = self.diagonal.from_dplr_state(state.detach().to(self.diagonal.V.device))
        super().reset(state)

    def layer_state(self) -> Tensor:
        xi = (self.diagonal.V.to(self.state.dtype) @ self.state.unsqueeze(-1)).squeeze(-1).real
        return torch.complex(xi[..., : self.n_half], xi[..., self.n_half:]).to(self.cdtype)


class OscillatorStepper(LayerStepper):
    """Stepper of :class:`~.linoss.LinOSS` / :class:`~.dlinoss.DLinOSS`: state (B, 2, P) complex, in the blocks'
    normal basis (:func:`~statespaces.kernels.oscillator.normal_form`, ``x = [[p, q], [0, 1]] x'``: the positions
    as the layer's, the velocities mapped); :meth:`reset` and :meth:`layer_state` convert from / to the layer's
    (velocity, position) layout. Rounded to float32 every step in the blocks' own basis, a D-LinOSS block near
    theta = pi gave 3.8e-4 relative error at L = 1000 (the layer's ``step``, which keeps its layout, 8e-4); in
    the normal basis 7e-7."""

    def __init__(self, layer, batch_size: int, rate: float = 1.0, dtype: Optional[torch.dtype] = None,
                 device: Optional[Union[str, torch.device]] = None) -> None:
        super().__init__(layer, batch_size, rate, dtype, device)
        with torch.no_grad():
            sys = layer._system(self.rate)
            _check_system(layer, torch.exp(sys.log_r), M=sys.M, f=sys.f)
            wide = sys.M.dtype                                          # float64 (the layer's wide precision)
            M, f, T = normal_form(sys.M.detach(), sys.f.detach())
            self.M, self.f, self.T = (t.to(self.device).clone(memory_format=torch.contiguous_format)
                                      for t in (M, f, T))
            if wide != torch.float64:
                self.M, self.f = self._real(self.M), self._real(self.f)
            self.Bt = self._cplx(layer.B_complex.T)
            self.Ct = self._cplx(layer.C_complex.T)
            self.D = self._real(layer.D)
        self.state = torch.zeros(self.batch_size, 2, layer.n_oscillators, dtype=self.cdtype, device=self.device)

    def advance(self) -> None:
        # two fused Triton launches on CUDA, in place (ops.triton.oscillator_step); else PyTorch, copied in
        oscillator_step(self.M, self.f, self.Bt, self.Ct, self.D, self.x, self.state, out=(self.y, self.state))

    def _own_basis(self, state: Tensor) -> Tensor:
        return to_normal_basis(state.to(self.state.device), self.T)

    def layer_state(self) -> Tensor:
        return from_normal_basis(self.state, self.T).to(self.cdtype)


class MIMOStepper(LayerStepper):
    """Stepper of :class:`~.s5.S5`: one state (B, M) complex shared by all channels (the layer's layout).

    ``state <- Lambda_bar state + u B_bar^T`` and ``y = scale Re(state C^T) + D u``: an in-place multiply and two
    complex GEMMs into static buffers (cuBLAS on CUDA, capturable in a CUDA graph), the same math as
    :meth:`~.s5.S5.step`."""

    def __init__(self, layer, batch_size: int, rate: float = 1.0, dtype: Optional[torch.dtype] = None,
                 device: Optional[Union[str, torch.device]] = None) -> None:
        super().__init__(layer, batch_size, rate, dtype, device)
        with torch.no_grad():
            lam_bar, Bb = layer.discrete_system(self.rate)
            C = layer.C_complex[0]
            _check_system(layer, lam_bar.abs(), Lambda_bar=lam_bar, B_bar=Bb, C=C)
            self.lam = self._cplx(lam_bar)                        # (M,)
            self.BbT = self._cplx(Bb.T)                           # (H, M)
            self.CT = self._cplx(C.T)                             # (M, H)
            self.D = self._real(layer.D)
            self.scale = float(layer.scale)
        kw = dict(dtype=self.cdtype, device=self.device)
        self.state = torch.zeros(self.batch_size, self.lam.shape[0], **kw)
        self._u = torch.zeros(self.batch_size, self.d_model, **kw)   # x as complex (a GEMM operand)
        self._out = torch.zeros(self.batch_size, self.d_model, **kw)

    def advance(self) -> None:
        self._u.copy_(self.x)
        self.state.mul_(self.lam).addmm_(self._u, self.BbT)
        torch.mm(self.state, self.CT, out=self._out)
        torch.mul(self.x, self.D, out=self.y).add_(self._out.real, alpha=self.scale)


def layer_stepper(layer: SSMLayer, batch_size: int, rate: float = 1.0, dtype: Optional[torch.dtype] = None,
                  device: Optional[Union[str, torch.device]] = None, form: str = "auto") -> LayerStepper:
    """The stepper of ``layer`` (see :meth:`statespaces.layers.base.SSMLayer.stepper`)."""
    kind = getattr(type(layer), "stepper_kind", None)       # declared by each layer class
    if kind == "dplr":
        if form not in ("auto", "dplr", "diagonal"):
            raise ValueError(f"unknown S4 stepper form {form!r}; valid forms are: auto, dplr, diagonal")
        if form == "diagonal":
            return EigenStepper(layer, batch_size, rate, dtype, device)
        return DPLRStepper(layer, batch_size, rate, dtype, device)
    if form != "auto":
        raise ValueError(f"form={form!r} applies only to S4 layers; {type(layer).__name__} has one form ('auto')")
    if kind == "diagonal":
        return DiagonalStepper(cast("DiagonalSSM", layer), batch_size, rate, dtype, device)
    if kind == "oscillator":
        return OscillatorStepper(layer, batch_size, rate, dtype, device)
    if kind == "mimo":
        return MIMOStepper(layer, batch_size, rate, dtype, device)
    raise TypeError(f"{type(layer).__name__} has no stepper; use its step() method")
