r"""Streaming export: a whole model's recurrent step as a ``torch.export`` program or an ONNX file.

SSMs are deployed for streaming inference: constant memory and time per step (thesis §2.3.2,
§7.4.2). This module turns the recurrent view of a trained model into a self-contained
function ``(x_frame, *state) -> (y_frame, *state')`` that ``torch.export`` and ONNX can carry:

* every SSM layer is replaced by its **real** discrete system, frozen at one ``rate``
  (ONNX has no complex tensors): a complex mode ``x' = a x + b u`` becomes the 2 x 2 rotation
  block ``[[Re a, -Im a], [Im a, Re a]]`` (S4D and diagonal forms), S4 becomes its dense real
  bilinear system (:meth:`statespaces.layers.s4.S4.dense_system`, O(N^2) per channel, no
  eigenvector conditioning issue), LinOSS its 4 x 4 real block per oscillator (velocity and
  position, real and imaginary parts), S5 one 2 x 2 rotation block per shared (MIMO) mode;
* the state is a flat tuple of real tensors (:meth:`StreamingModel.initial_state`);
* a *frame* is the number of samples per call: 1 for layers, stacks and language models, the
  product of the pooling factors for SaShiMi (its tiers fire on a fixed pattern within a frame,
  so one frame is a fixed graph without data-dependent control flow).

Example::

    >>> model = SSMStack(d_model=16, n_layers=2)
    >>> program = export_step(model)                        # torch.export.ExportedProgram
    >>> path = export_onnx(model, "step.onnx")              # needs the onnx + onnxscript packages

Checked in the tests against each model's own convolution view, in ``torch.export`` and in
onnxruntime.
"""
from __future__ import annotations

import copy
import math
import warnings
from pathlib import Path
from typing import Any, List, Optional, Tuple, Union, cast

import torch
from torch import nn
from torch.utils import _pytree as pytree

from ._checks import CAUSAL_HINT, tracing
from .kernels.oscillator import normal_form, to_normal_basis
from .layers.base import DiagonalSSM, SSMLayer, check_rate
from .layers.linoss import LinOSS
from .layers.s4 import S4
from .layers.s5 import S5

Tensor = torch.Tensor

__all__ = ["RealStep", "real_step", "StreamingModel", "streaming_model", "export_step", "export_onnx"]


def _rotation(a: Tensor) -> Tensor:
    """Complex (or real) a (...) -> real 2 x 2 blocks (..., 2, 2) acting on (Re x, Im x)."""
    if not a.is_complex():
        a = torch.complex(a, torch.zeros_like(a))
    return torch.stack([torch.stack([a.real, -a.imag], -1), torch.stack([a.imag, a.real], -1)], -2)


class RealStep(nn.Module):
    r"""One SSM layer's recurrent step in real arithmetic, frozen at one ``rate``.

    State (B, S, k): S blocks of k reals. ``x'_s = A_s x_s + Bin_s u``, ``y = Cout . x' + D u`` with

    * per-channel blocks (``siso=True``, S4D/S4): S = H * M, ``Bin`` (H, M, k) multiplies ``u_h``
      of the block's own channel and ``Cout`` (H, M, k) sums the channel's blocks;
    * shared blocks (``siso=False``, LinOSS, S5): S = P oscillators (M modes), ``Bin`` (P, k, H)
      and ``Cout`` (H, P, k) mix all channels.

    Precision. The state, ``Cout`` and ``D`` are in the layer's dtype. ``A`` and ``Bin`` may be wider
    (float64 for LinOSS / D-LinOSS, as in :meth:`statespaces.layers.linoss.LinOSS.step`): the update
    ``A x + Bin u`` then runs in that precision and the new state is rounded once to the layer's dtype.
    An IMEX oscillator has ``|lambda| = 1``, so a transition rounded to float32 (off by ~2^-24) would
    drift like ``L 2^-24`` over a stream of L steps (1.6e-4 relative at L = 20,000); the rounding of
    the state alone does not accumulate that way.

    ``basis`` (2, P), LinOSS / D-LinOSS only: T = (p, q) of the blocks' normal form, the basis the state lives in
    (``x = [[p, q], [0, 1]] x'`` per oscillator; :func:`_oscillator_step`); None elsewhere.

    Build it with :func:`real_step`; :meth:`from_layer_state` converts a state of the original
    layer (complex) into this one's, so both can be run side by side.
    """

    A: Tensor
    Bin: Tensor
    Cout: Tensor
    D: Tensor

    def __init__(self, A: Tensor, Bin: Tensor, Cout: Tensor, D: Tensor, siso: bool, kind: str, rate: float,
                 basis: Optional[Tensor] = None) -> None:
        super().__init__()
        self.siso, self.kind, self.rate = siso, kind, rate
        self.d_model = D.shape[0]
        self.bidirectional = False
        self.register_buffer("A", A)
        self.register_buffer("Bin", Bin)
        self.register_buffer("Cout", Cout)
        self.register_buffer("D", D)
        self.basis: Optional[Tensor]
        self.register_buffer("basis", basis)    # LinOSS: T = (p, q) of the blocks' normal basis (2, P)
        self.wide = A.dtype != D.dtype        # A, Bin kept wider than the layer's dtype (LinOSS: float64)

    def _apply(self, fn, recurse: bool = True):
        """``.to()``, ``.float()``, ``.half()``, ``.cuda()`` ... as for any module, except that a wide ``A`` and
        ``Bin`` only move device and keep their precision (float32 on MPS, which has no float64): a cast would
        round the transition, and the stream would drift (class docstring)."""
        if not self.wide:
            return super()._apply(fn, recurse)
        wide = {name: self._buffers.pop(name) for name in ("A", "Bin")}
        try:
            super()._apply(fn, recurse)
        finally:
            for name, t in wide.items():
                if t is not None:
                    dtype = torch.float32 if self.D.device.type == "mps" else t.dtype
                    t = t.to(device=self.D.device, dtype=dtype)
                self._buffers[name] = t
        return self

    def initial_state(self, batch_size: int) -> Tensor:
        """Zero state: (B, H, M, k) for per-channel blocks, (B, P, k) for shared ones."""
        shape = self.Bin.shape if self.siso else self.Bin.shape[:2]
        return torch.zeros(batch_size, *shape, dtype=self.D.dtype, device=self.D.device)

    def step(self, x: Tensor, state: Tensor, rate: Optional[float] = None) -> Tuple[Tensor, Tensor]:
        """x (B, H) -> y (B, H), new state (the shape and dtype of :meth:`initial_state`).

        The step runs at the rate it was frozen at: ``rate`` may be left out (the blocks and models
        that call it pass none) or repeat that rate; another rate raises ``ValueError``.
        """
        if rate is not None and check_rate(rate) != self.rate:
            raise ValueError(f"this streaming step was frozen at rate={self.rate} and cannot step at rate={rate}; "
                             f"call it without a rate, or build it again with rate={rate}")
        u = x.to(self.D.dtype)
        wide = state.to(self.A.dtype)  # a no-op unless A is wider than the state (LinOSS: float64)
        if self.A.shape[-1] <= 4:      # small blocks: broadcast multiply-adds (no batched tiny matmuls)
            trans = (self.A * wide.unsqueeze(-2)).sum(-1)
        else:                          # dense S4 block: one batched mat-vec per channel
            trans = (self.A @ wide.unsqueeze(-1)).squeeze(-1)
        uw = u.to(self.Bin.dtype)
        if self.siso:
            new = (trans + self.Bin * uw[:, :, None, None]).to(state.dtype)
            y = (self.Cout * new).sum((-1, -2))
        else:
            new = (trans + torch.einsum("pkh,bh->bpk", self.Bin, uw)).to(state.dtype)
            y = torch.einsum("hpk,bpk->bh", self.Cout, new)
        return (y + self.D * u).to(x.dtype), new

    def from_layer_state(self, state: Tensor) -> Tensor:
        """The original layer's complex state -> this step's real state."""
        if self.kind == "diagonal":                  # (B, H, M) -> (B, H, M, 2)
            return torch.stack([state.real, state.imag], -1).to(self.D.dtype)
        if self.kind == "s5":                        # (B, M) -> (B, M, 2)
            return torch.stack([state.real, state.imag], -1).to(self.D.dtype)
        if self.kind == "s4":                        # (B, H, M) -> (B, H, 1, 2M)
            return torch.cat([state.real, state.imag], -1).unsqueeze(-2).to(self.D.dtype)
        if self.basis is not None:                   # linoss: into the blocks' normal basis (_oscillator_step)
            state = to_normal_basis(state.to(self.basis.dtype.to_complex()), self.basis)
        z, v = state[:, 0], state[:, 1]              # linoss (B, 2, P) -> (B, P, 4)
        return torch.stack([z.real, z.imag, v.real, v.imag], -1).to(self.D.dtype)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, state={tuple(self.initial_state(1).shape[1:])}, rate={self.rate}"


@torch.no_grad()
def real_step(layer: SSMLayer, rate: float = 1.0) -> RealStep:
    """The real-arithmetic step of an S4D / diagonal, S4, LinOSS, D-LinOSS or S5 layer at ``rate``
    (see :class:`RealStep`)."""
    rate = check_rate(rate)
    if not isinstance(layer, (DiagonalSSM, S4, LinOSS, S5)):
        raise TypeError(f"no streaming form for {type(layer).__name__}: supported are S4D (any DiagonalSSM), S4, "
                        "LinOSS, DLinOSS, S5")
    if getattr(layer, "bidirectional", False):
        raise ValueError("a bidirectional layer is not causal and has no streaming step" + CAUSAL_HINT)
    D = cast(Tensor, layer.D).detach().clone()           # a Parameter/buffer (nn.Module.__getattr__ is untyped)
    if isinstance(layer, DiagonalSSM):
        dA, dB, Cc, _ = layer._step_system(rate)             # y = Re(sum conj(Cc) x')
        c = Cc.conj()
        Cout = torch.stack([c.real, -c.imag], -1)
        return RealStep(_rotation(dA), torch.stack([dB.real, dB.imag], -1), Cout, D, True, "diagonal", rate)
    if isinstance(layer, S5):                            # M shared modes: x' = lam x + B_bar u, y = scale Re(C x')
        lam, Bb = layer.discrete_system(rate)                # (M,), (M, H) complex
        C = layer.C_complex[0] * layer.scale                 # (H, M)
        Bin = torch.stack([Bb.real, Bb.imag], 1)             # (M, 2, H)
        Cout = torch.stack([C.real, -C.imag], -1)            # (H, M, 2)
        return RealStep(_rotation(lam), Bin.to(D.dtype), Cout.to(D.dtype), D, False, "s5", rate)
    if isinstance(layer, S4):
        dA, dB, c, _ = layer.dense_system(rate)              # y = c . xi' with xi = [Re x; Im x]
        return RealStep(dA.unsqueeze(1), dB.unsqueeze(1), c.unsqueeze(1), D, True, "s4", rate)
    return _oscillator_step(layer, D, rate)


def _oscillator_step(layer: LinOSS, D: Tensor, rate: float) -> RealStep:
    """The :class:`RealStep` of a LinOSS or D-LinOSS layer (a LinOSS subclass: only its 2x2 blocks M, f
    differ): state (B, P, 4) = (Re z, Im z, Re y, Im y) per oscillator, in the layer's dtype.

    ``A`` (P, 4, 4) and ``Bin`` (P, 4, H) stay in the layer's wide precision (float64; the parameter
    dtype on MPS), the precision its own step updates in: see :class:`RealStep` on drift. The blocks are in
    their normal form (:func:`~statespaces.kernels.oscillator.normal_form`; positions as the layer's, velocities
    mapped, :meth:`RealStep.from_layer_state` converts): the state is rounded to the layer's dtype every step,
    and rounded in its own basis a D-LinOSS block near theta = pi gave 3.5e-4 relative error at L = 1000 in
    float32, 7e-7 in the normal basis.
    """
    sys = layer._system(rate)                            # M (2, 2, P), f (2, P), wide (not layer.transition)
    M, f, T = normal_form(sys.M, sys.f)
    A = torch.cat([torch.cat([_rotation(M[i][j]) for j in range(2)], -1) for i in range(2)], -2)   # (P, 4, 4)
    Bc = layer.B_complex.to(M.dtype.to_complex())      # (P, H), complex in the wide precision
    g0, g1 = f[0][:, None] * Bc, f[1][:, None] * Bc     # complex (P, H)
    Bin = torch.stack([g0.real, g0.imag, g1.real, g1.imag], 1)                                     # (P, 4, H)
    C = layer.C_complex                                  # (H, P): y = Re(C v')
    Cout = torch.stack([torch.zeros_like(C.real), torch.zeros_like(C.real), C.real, -C.imag], -1)  # (H, P, 4)
    return RealStep(A, Bin.to(M.dtype), Cout.to(D.dtype), D, False, "linoss", rate, basis=T)


def _stepping_core(model: nn.Module) -> Any:
    """What steps in ``model``: a language model's backbone (it has ``backbone`` and ``decode``), else the model."""
    return model.backbone if hasattr(model, "backbone") and hasattr(model, "decode") else model


def _replace_layers(model: nn.Module, rate: float) -> nn.Module:
    from .layers.s4nd import S4ND

    if isinstance(model, SSMLayer):
        return real_step(model, rate)
    if isinstance(model, S4ND):       # its step convolves each frame over the other axes: no real step form here
        raise TypeError("streaming export does not support S4ND layers (a 1-D S4ND is an S4D: build the model with "
                        "layer='s4d'); stream it in PyTorch with its step()")
    for name, child in list(model.named_children()):
        if isinstance(child, SSMLayer):
            setattr(model, name, real_step(child, rate))       # bypasses the blocks' type check on purpose
        else:
            _replace_layers(child, rate)
    return model


def _frame(model: nn.Module) -> int:
    backbone = getattr(model, "backbone", model)
    pools = getattr(backbone, "pools", None)
    return int(math.prod(pools)) if pools else 1


class StreamingModel(nn.Module):
    r"""A model's recurrent step over one frame, with a flat real state (see the module notes).

    ``forward(x, *state) -> (y, *state')``:

    * a layer, a block stack or SaShiMi: x (B, F, H) -> y (B, F, H);
    * a language model: tokens (B, F) (or (B, F, S) with streams) int64 -> logits (B, F, [S,] V).

    ``F`` = :attr:`frame`. ``initial_state(B)`` is the state before the first sample.
    """

    # duck-typed: a RealStep, a block stack, SaShiMi or a language model (initial_state / step / d_model)
    model: Any
    core: Any

    def __init__(self, model: nn.Module, rate: float = 1.0) -> None:
        super().__init__()
        self.rate = check_rate(rate)
        core = _stepping_core(model)
        if not (callable(getattr(core, "initial_state", None)) and callable(getattr(core, "step", None))):
            raise TypeError(
                f"streaming export needs a model that steps (an SSM layer, a block, SSMStack, SaShiMi or a language "
                f"model); a {type(model).__name__} has no initial_state/step (a classifier pools over the whole "
                "sequence before it answers): capture its forward with torch.export.export(model, (x,)) (ONNX cannot "
                "take it: its kernels use complex arithmetic), or keep it in PyTorch (statespaces.train.load_trained)")
        self.model = _replace_layers(copy.deepcopy(model), self.rate).eval()
        self.core = _stepping_core(self.model)
        self.is_lm = self.core is not self.model
        self.frame = _frame(self.model)
        leaves, self._spec = pytree.tree_flatten(self.core.initial_state(1))
        self._tensor_at = [i for i, t in enumerate(leaves) if isinstance(t, Tensor)]
        self._constants = leaves                 # non-tensor leaves (SaShiMi's step counter) restart each frame
        self._state_meta = [(tuple(leaves[i].shape[1:]), leaves[i].dtype) for i in self._tensor_at]
        self.eval()                              # an inference graph: no dropout, and exporters expect eval mode

    def train(self, mode: bool = True) -> "StreamingModel":
        """Eval mode only: the step is an inference graph (``train()`` would switch dropout back on in the stream)."""
        if mode:
            raise ValueError("a StreamingModel runs in eval mode only (an inference graph); train the original "
                             "model and wrap it again with streaming_model")
        return super().train(False)

    def _check_inputs(self, x: Tensor, state: Tuple[Tensor, ...]) -> None:
        """Eager calls: a frame of :attr:`frame` samples and the whole state, each tensor of its shape and dtype
        (a missing tensor was refilled from the constants, a short frame dropped samples). The exported program
        guards the same shapes itself."""
        if not isinstance(x, Tensor) or x.dim() < 2 or x.shape[1] != self.frame:
            raise ValueError(f"{type(self.model).__name__} streams frames of {self.frame} sample(s): x must be "
                             f"(batch, {self.frame}, ...), got {tuple(getattr(x, 'shape', ())) or type(x).__name__}")
        if self.is_lm and getattr(self.model, "d_input", None) is None:
            self.model._check_tokens(x)          # ids in [0, vocab_size), named (an embedding IndexError before)
        if len(state) != len(self._state_meta):
            raise ValueError(f"the state is {len(self._state_meta)} tensor(s) (initial_state(B) or the previous "
                             f"call's), got {len(state)}")
        for i, (t, (shape, dtype)) in enumerate(zip(state, self._state_meta)):
            want = (x.shape[0],) + shape
            if not isinstance(t, Tensor) or tuple(t.shape) != want or t.dtype != dtype:
                raise ValueError(f"state tensor {i} must be {dtype} of shape {want}, got "
                                 f"{getattr(t, 'dtype', type(t).__name__)} of shape {tuple(getattr(t, 'shape', ()))}")

    def initial_state(self, batch_size: int) -> Tuple[Tensor, ...]:
        leaves = pytree.tree_leaves(self.core.initial_state(batch_size))
        return tuple(leaves[i] for i in self._tensor_at)

    def _unflatten(self, flat: Tuple[Tensor, ...]) -> Any:
        leaves = list(self._constants)
        for i, t in zip(self._tensor_at, flat):
            leaves[i] = t
        return pytree.tree_unflatten(leaves, self._spec)

    def _step(self, x: Tensor, state: Any) -> Tuple[Tensor, Any]:
        # no rate passed: every RealStep inside runs at the rate it was frozen at (blocks, stacks and
        # SaShiMi step without one)
        return self.core.step(x, state)

    def forward(self, x: Tensor, *state: Tensor) -> Tuple[Tensor, ...]:
        if not tracing():
            self._check_inputs(x, state)
        st = self._unflatten(state)
        outs: List[Tensor] = []
        for j in range(self.frame):
            if self.is_lm:
                h = self.model._encode_step(x[:, j], None)
                y, st = self._step(h, st)
                outs.append(self.model.decode(y))
            else:
                y, st = self._step(x[:, j], st)
                outs.append(y)
        leaves = pytree.tree_leaves(st)
        return (torch.stack(outs, 1), *(leaves[i] for i in self._tensor_at))

    def example_inputs(self, batch_size: int = 1) -> Tuple[Tensor, ...]:
        """Zero inputs of the right shapes and dtypes for tracing."""
        if self.is_lm:
            shape = (batch_size, self.frame) + ((self.model.n_streams,) if self.model.n_streams > 1 else ())
            x = torch.zeros(shape, dtype=torch.long, device=self.model.head.weight.device)
        else:
            d = self.initial_state(1)[0] if self._tensor_at else None
            dtype = d.dtype if d is not None else torch.get_default_dtype()
            x = torch.zeros(batch_size, self.frame, self.core.d_model, dtype=dtype,
                            device=None if d is None else d.device)
        return (x, *self.initial_state(batch_size))


def streaming_model(model: nn.Module, rate: float = 1.0) -> StreamingModel:
    """Wrap ``model`` (a causal SSM layer, :class:`~statespaces.models.lm.SSMStack`,
    :class:`~statespaces.models.sashimi.SaShiMi` or :class:`~statespaces.models.lm.SSMLanguageModel`)
    as a :class:`StreamingModel` (a deep copy; the original is untouched)."""
    if model.__class__.__name__ == "SSMLanguageModel" and getattr(model, "d_input", None) is not None:
        raise ValueError("streaming export of a language model with continuous inputs (d_input) is not supported")
    return StreamingModel(model, rate)


def export_step(model: nn.Module, batch_size: int = 1, rate: float = 1.0,
                dynamic_batch: bool = False) -> torch.export.ExportedProgram:
    """``torch.export`` of the streaming step (:class:`StreamingModel`) at a fixed batch size
    (or a dynamic batch dimension with ``dynamic_batch``)."""
    sm = streaming_model(model, rate)
    args = sm.example_inputs(max(batch_size, 2) if dynamic_batch else batch_size)   # 1 would specialize
    dynamic = None
    if dynamic_batch:
        b = torch.export.Dim("batch", min=1)
        dynamic = ({0: b}, tuple({0: b} for _ in args[1:]))      # forward(x, *state)
    with torch.no_grad():
        return torch.export.export(sm, args, dynamic_shapes=dynamic)


def export_onnx(model: nn.Module, path: Union[str, Path], batch_size: int = 1, rate: float = 1.0,
                opset: Optional[int] = None) -> Path:
    """Write the streaming step as an ONNX file (inputs ``x, state_0, ...``; outputs ``y, state_0', ...``).

    Needs the ``onnx`` and ``onnxscript`` packages (``pip install onnx onnxscript``); run the file
    with onnxruntime. Returns the path written.
    """
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ImportError("export_onnx needs the onnx and onnxscript packages: pip install onnx onnxscript") from e
    sm = streaming_model(model, rate)
    args = sm.example_inputs(batch_size)
    if any(a.dtype == torch.float64 for a in args) or any(p.dtype == torch.float64 for p in sm.parameters()):
        warnings.warn("export_onnx of a float64 model: onnxruntime has no float64 kernel for some operators such a "
                      "model uses (Erf, of GELU), so the file may not run there; export a float32 copy "
                      "(copy.deepcopy(model).float())", stacklevel=2)
    n = len(args) - 1
    names_in = ["x"] + [f"state_{i}" for i in range(n)]
    names_out = ["y"] + [f"next_state_{i}" for i in range(n)]
    path = Path(path)
    kwargs: dict[str, Any] = {} if opset is None else {"opset_version": opset}
    import logging

    # torch's exporter warns about its own internals (a deprecation inside torch, torchvision's operators not
    # being registered): nothing the caller can change, so those are silenced for the call
    registry = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registry.level
    registry.setLevel(logging.ERROR)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            program = torch.onnx.export(sm, args, dynamo=True, input_names=names_in, output_names=names_out,
                                        verbose=False, **kwargs)
    finally:
        registry.setLevel(level)
    assert program is not None                  # dynamo=True always returns an ONNXProgram
    program.save(str(path))
    return path
