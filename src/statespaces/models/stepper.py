r"""Whole-model stepper for generation: one step of backbone + head, captured in a CUDA graph on CUDA.

Recurrent generation (thesis §7.4.2, §2.3.2) costs one step of every layer per token. Eagerly that
is tens of small kernel launches per layer plus the host syncs of the per-call checks; a
:class:`ModelStepper` validates once, holds every layer's :mod:`stepper <statespaces.layers.stepper>`
(static state buffers advanced in place) and a static input ``x`` (B, H) and output ``logits``
(B, V) or (B, S, V), so one token is::

    st = ModelStepper(model, batch_size)    # or model.stepper(batch_size)
    st.load_state(state)                    # e.g. from model(prompt, return_state=True)
    logits = st(x_t)                        # x_t (B, H) = the encoded token; logits are st.logits

On CUDA (``cuda_graph=None`` means "when on CUDA") each step is captured once in a
``torch.cuda.CUDAGraph`` and replayed; the captured work is exactly the eager step
(:meth:`ModelStepper.step_eager`, its twin, which is also the CPU path), so both share every line
but the replay. SaShiMi (thesis ch. 8) steps each tier at its own rate: the work of a fine step
depends on its phase ``t mod prod(pools)``, so there is one graph per phase.

Backbones: :class:`~statespaces.models.lm.SSMStack` and :class:`~statespaces.models.sashimi.SaShiMi`,
every layer with a stepper (:func:`has_stepper`: not S4ND, which steps only through ``step``).
The model must be in eval mode (dropout would draw new masks), and the stepper is a snapshot of
the parameters: build a new one after they change. NaN/inf are not checked per step (the build
checks parameters and stability); :meth:`SSMLanguageModel.generate` checks the logits on CPU only,
where the check costs no device sync.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Dict, Iterator, List, Optional, cast

import torch
from torch import nn

from .._checks import check_batch_size
from ..blocks import ResidualBlock
from ..layers.base import SSMLayer
from ..layers.stepper import LayerStepper, check_stepper_input

Tensor = torch.Tensor


class _Blocks:
    """A stack of ResidualBlock / FFBlock stepping through layer steppers."""

    def __init__(self, blocks: nn.ModuleList, batch_size: int) -> None:
        # ResidualBlock (stepped with its stepper) or FFBlock (stepper None): told apart by `steppers`
        self.blocks: List[Any] = list(blocks)
        self.steppers: List[Optional[LayerStepper]] = [
            cast(SSMLayer, b.layer).stepper(batch_size) if isinstance(b, ResidualBlock) else None for b in self.blocks
        ]

    def step(self, x: Tensor) -> Tensor:
        for b, st in zip(self.blocks, self.steppers):
            x = b.step(x)[0] if st is None else b.step_with(x, st)
        return x

    def load(self, states: List[Any]) -> None:
        for st, s in zip(self.steppers, states):
            if st is not None:
                st.reset(s)

    def buffers(self) -> List[Tensor]:
        return [t for st in self.steppers if st is not None for t in (st.x, st.y, st.state)]


class _StackCore:
    """:class:`~statespaces.models.lm.SSMStack`: blocks, then the final LayerNorm. Period 1."""

    period = 1

    def __init__(self, stack, batch_size: int) -> None:
        self.stack = stack
        self.blocks = _Blocks(stack.blocks, batch_size)
        self.t = 0

    def step(self, x: Tensor, phase: int) -> Tensor:
        return self.stack.final_norm(self.blocks.step(x))

    def load(self, state: List[Any]) -> None:
        if not isinstance(state, list) or len(state) != len(self.blocks.blocks):
            raise ValueError("state must come from SSMStack.initial_state() or a call with return_state=True")
        self.blocks.load(state)
        self.t = 0

    def buffers(self) -> List[Tensor]:
        return self.blocks.buffers()


class _SaShiMiCore:
    """:class:`~statespaces.models.sashimi.SaShiMi`: the tiers of ``SaShiMi._tier_step`` on static
    buffers (DownPool input buffers, UpPool output buffers) and layer steppers. Period ``prod(pools)``."""

    def __init__(self, net, batch_size: int) -> None:
        self.net = net
        self.batch_size = batch_size
        n = len(net.pools)
        self.period = net.length_multiple
        self.down = [_Blocks(net.down_blocks[i], batch_size) for i in range(n)]
        self.up = [_Blocks(net.up_blocks[i], batch_size) for i in range(n)]
        self.center = _Blocks(net.center, batch_size)
        zeros = net._zeros
        self.down_buf = [zeros(batch_size, net.pools[i], net.widths[i]) for i in range(n)]
        self.up_buf = [zeros(batch_size, net.pools[i], net.widths[i]) for i in range(n)]
        self.t = 0

    def _tier(self, i: int, x: Tensor, t_i: int) -> Tensor:
        net = self.net
        if i == len(net.pools):
            return x + self.center.step(x)
        x = self.down[i].step(x)
        p = net.pools[i]
        r = t_i % p
        self.down_buf[i][:, r].copy_(x)
        u = self.up_buf[i][:, r].clone()                 # released before the buffer is refilled
        if r == p - 1:
            yc = self._tier(i + 1, net.down_pools[i].pool_group(self.down_buf[i]), t_i // p)
            self.up_buf[i].copy_(net.up_pools[i].expand_group(yc))
        z = u + x
        return z + self.up[i].step(z)

    def step(self, x: Tensor, phase: int) -> Tensor:
        return self.net.final_norm(self._tier(0, x, phase))

    def load(self, state: Dict[str, Any]) -> None:
        self.net._check_state(state, self.batch_size)
        for i in range(len(self.net.pools)):
            self.down_buf[i].copy_(state["down_buf"][i])
            self.up_buf[i].copy_(state["up_buf"][i])
            self.down[i].load(state["down_blocks"][i])
            self.up[i].load(state["up_blocks"][i])
        self.center.load(state["center"])
        self.t = int(state["t"])

    def buffers(self) -> List[Tensor]:
        out = self.down_buf + self.up_buf + self.center.buffers()
        for d, u in zip(self.down, self.up):
            out += d.buffers() + u.buffers()
        return out


#: Devices whose steps are captured in graphs (tests add "cpu" with a stand-in for the capture).
GRAPH_DEVICES = ("cuda",)


@contextlib.contextmanager
def _side_stream(device: torch.device) -> Iterator[None]:
    """Run the body on a side stream that the current stream then waits for (before a capture)."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        yield
    torch.cuda.current_stream(device).wait_stream(side)


def _record(fn: Callable[[], None]):
    """``fn`` captured in a ``torch.cuda.CUDAGraph`` (recorded, not run); ``.replay()`` runs it."""
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return g


def has_stepper(layer: nn.Module) -> bool:
    """Whether ``layer`` has a :mod:`stepper <statespaces.layers.stepper>`: an
    :class:`~statespaces.layers.base.SSMLayer` whose class declares a ``stepper_kind`` (S4D, S4,
    LinOSS, D-LinOSS, S5). S4ND is no SSMLayer: it steps only through ``step``."""
    return isinstance(layer, SSMLayer) and type(layer).stepper_kind is not None


def layer_without_stepper(model: nn.Module) -> Optional[str]:
    """``"<path> (<class>)"`` of the first layer of ``model.backbone`` with no stepper, or None if all
    have one. :class:`ModelStepper` needs one per layer; ``generate(stepper=None)`` asks this to fall
    back to the eager ``backbone.step`` instead of failing mid-build."""
    for name, module in cast(nn.Module, model.backbone).named_modules():
        if isinstance(module, ResidualBlock) and not has_stepper(module.layer):
            return f"backbone.{name}.layer ({type(module.layer).__name__})"
    return None


def _is_flat_stack(module: nn.Module) -> bool:
    """A flat stack (:class:`~statespaces.models.lm.SSMStack`, told by its parts since lm imports this
    module): blocks in ``blocks`` stepped one after another, then ``final_norm``."""
    return isinstance(getattr(module, "blocks", None), nn.ModuleList) and isinstance(
        getattr(module, "final_norm", None), nn.LayerNorm)


class ModelStepper:
    """One recurrent step of an :class:`~statespaces.models.lm.SSMLanguageModel`'s backbone and head.

    Args:
        model: the language model, in eval mode (flat or SaShiMi backbone).
        batch_size: B.
        cuda_graph: capture the step in CUDA graphs (default: when the model is on CUDA).

    ``st(x)``: x (B, H), the encoded input of the step -> ``st.logits`` (B, V) or (B, S, V), a static
    buffer overwritten by the next call. ``st.load_state(state)`` loads the backbone state (from
    ``model(..., return_state=True)``); ``st.reset()`` zeros it; ``st.t`` counts the steps.
    """

    def __init__(self, model, batch_size: int, cuda_graph: Optional[bool] = None) -> None:
        from .sashimi import SaShiMi  # (lm imports this module, so the flat stack is told by its blocks)

        if model.training:
            raise ValueError("ModelStepper needs the model in eval mode (dropout would draw new masks): "
                             "call model.eval()")
        missing = layer_without_stepper(model)
        if missing is not None:
            raise TypeError(f"no ModelStepper for this model: layer {missing} has no stepper (S4ND steps only "
                            "through step()); generate with stepper=False (or None, the default, which then "
                            "steps eagerly), or step with model.backbone.step")
        self.model = model
        self.batch_size = check_batch_size(batch_size)
        bb = model.backbone
        with torch.no_grad():
            if isinstance(bb, SaShiMi):
                self.core: Any = _SaShiMiCore(bb, self.batch_size)
            elif _is_flat_stack(bb):
                self.core = _StackCore(bb, self.batch_size)
            else:
                raise TypeError(f"no stepper for a {type(bb).__name__} backbone (SSMStack and SaShiMi have one); "
                                "use backbone.step")
            w = model.head.weight
            self.x = torch.zeros(self.batch_size, model.d_model, dtype=w.dtype, device=w.device)
            self.logits = torch.zeros_like(model.decode(self.x))
        self.device = w.device
        self.cuda_graph = (self.device.type == "cuda") if cuda_graph is None else bool(cuda_graph)
        if self.cuda_graph and self.device.type not in GRAPH_DEVICES:
            raise ValueError(f"cuda_graph=True needs a model on CUDA, this one is on {self.device}")
        self.graphs: Optional[List[Any]] = None
        if self.cuda_graph:
            self._capture()

    @property
    def t(self) -> int:
        """Steps taken (SaShiMi: since its state's ``t``)."""
        return self.core.t

    def _buffers(self) -> List[Tensor]:
        return [self.x, self.logits] + self.core.buffers()

    @torch.no_grad()
    def step_eager(self, phase: int) -> None:
        """The step from ``x`` into ``logits`` and the state buffers (what a CUDA graph replays)."""
        self.logits.copy_(self.model.decode(self.core.step(self.x, phase)))

    def _capture(self) -> None:
        saved = [b.clone() for b in self._buffers()]
        with _side_stream(self.device):                   # warm-up: Triton compiles, allocator settles
            for phase in range(self.core.period):
                self.step_eager(phase)
        graphs = [_record(functools.partial(self.step_eager, phase)) for phase in range(self.core.period)]
        for b, s in zip(self._buffers(), saved):         # the warm-up advanced the state: undo it
            b.copy_(s)
        self.graphs = graphs

    def __call__(self, x: Tensor) -> Tensor:
        """One step from the encoded input x (B, H); returns the logits buffer (overwritten by the next call).
        Checked from metadata only (no device sync): shape, device, a real floating dtype no wider than the
        model's."""
        check_stepper_input(x, self.x, "stepper")
        self.x.copy_(x)
        phase = self.core.t % self.core.period
        if self.graphs is not None:
            self.graphs[phase].replay()
        else:
            self.step_eager(phase)
        self.core.t += 1
        return self.logits

    def load_state(self, state: Any) -> None:
        """Load the backbone state (``initial_state(B)`` or from ``return_state=True``) into the buffers."""
        with torch.no_grad():
            self.core.load(state)

    def reset(self) -> None:
        """Back to the zero state (t = 0)."""
        self.load_state(self.model.backbone.initial_state(self.batch_size))
