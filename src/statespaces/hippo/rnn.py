r"""HiPPO-RNN: a gated RNN cell with a frozen HiPPO memory (thesis §4.4, Remark 4.8, app. D.1/D.4).

The original HiPPO architecture (Remark 4.8; Gu et al. 2020): a hidden state ``h`` (width H) writes
a scalar per memory channel, ``f_k = W_f h_k`` (m channels), into a memory ``c_k`` (m, N) that
follows a HiPPO ODE with frozen ``(A, B)``; the next hidden update reads ``c_{k-1}`` back::

    z_k = [x_k, vec(c_{k-1}), h_{k-1}]
    gated:  g = sigmoid(W_g z_k),  h_k = (1 - g) h_{k-1} + g tanh(W_h z_k)     (one update gate,
            the gate of Lemma 2.16 / §4.2.5)
    gru:    h_k = GRUCell([x_k, vec(c_{k-1})], h_{k-1})
    f_k = W_f h_k,   c_k = memory step(c_{k-1}, f_k)

Memories (:data:`CELL_MEMORIES`, discretizations of §4.2.4 / app. A.1.4-A.1.5):

``legs``  scale-invariant ``c' = (A c + B f)/t`` (Thm 4.3): sample ``k`` (0-based) ends at
          ``t_k = k + 1``; ``c_0 = f_0 e_0`` (a constant's projection), then the GBT step from
          ``t = k`` to ``k + 1`` (app. A.1.5, ``alpha = 1/2`` bilinear by default). It depends only
          on ``delta/t``, so it has **no timescale**: the same signal sampled at any rate gives the
          same memory at the same time, up to discretization error (Prop. 4.5, §4.4.3).
``legt``, ``lmu``  sliding window of length ``theta`` (time units of ``dt``): the LTI system
          ``transition(measure, N, theta)`` discretized once with step ``dt`` (bilinear/GBT or ZOH).
``lagt``  Laguerre (exponentially decaying measure), LTI like ``legt``; ``theta`` stretches its warp.

This is exactly the online approximation of :class:`statespaces.hippo.HiPPO` (``lsi`` for LegS,
``lti`` otherwise) applied to the signal ``f`` the cell writes (tests check it step by step).

Shapes: x (B, L, H_in) -> h (B, L, H); memory c (B, m, N); one step x_t (B, H_in).
"""
from __future__ import annotations

import numbers
from typing import Dict, NamedTuple, Optional, Tuple, Union

import torch
from torch import nn

from ._checks import check_finite_tensor, check_measure, check_positive, check_state_size
from .legs_fast import legs_gbt_coefficients, legs_step_fast
from .measures import measure_params, transition
from .online import _check_discretization, discretize, warn_forward_euler_lsi

__all__ = ["CELL_MEMORIES", "CELL_TYPES", "HiPPOMemory", "HiPPOCell", "HiPPORNN", "HiPPOState",
           "legs_lsi_transitions"]

CELL_MEMORIES = ("legs", "legt", "lmu", "lagt")
CELL_TYPES = ("gated", "gru")
_F64 = torch.float64
Tensor = torch.Tensor


def legs_lsi_transitions(N: int, steps: int, alpha: float = 0.5) -> Tuple[Tensor, Tensor]:
    r"""Dense per-step transitions of the scale-invariant LegS memory, float64.

    Step ``k`` (1-based, ``k < steps``) goes from ``t = k`` to ``t = k + 1`` by the GBT rule ``alpha``:
    ``c_k = T_k c_{k-1} + b_k f_k``. Returns ``T`` (steps - 1, N, N) and ``b`` (steps - 1, N), built
    by applying the O(N) step (:func:`~statespaces.hippo.legs_fast.legs_step_fast`) to the identity
    and to a unit input, all steps at once.
    """
    N, steps = check_state_size(N), check_state_size(steps, "steps")
    n = steps - 1
    t = torch.arange(1, n + 1, dtype=_F64).view(n, 1, 1)
    a_, b_, g_ = legs_gbt_coefficients(t, t + 1, float(alpha))
    eye = torch.eye(N, dtype=_F64).expand(n, N, N)
    TT = legs_step_fast(eye, torch.zeros(n, N, dtype=_F64), a_, b_, g_)        # rows T_k e_i
    b = legs_step_fast(torch.zeros(n, 1, N, dtype=_F64), torch.ones(n, 1, dtype=_F64), a_, b_, g_)[:, 0]
    return TT.transpose(-1, -2), b


class HiPPOState(NamedTuple):
    """Recurrent state of :class:`HiPPOCell`: hidden ``h`` (B, H), memory ``c`` (B, m, N), and ``k``,
    the number of samples read so far (the LegS clock ``t = k``)."""

    h: Tensor
    c: Tensor
    k: int


class HiPPOMemory(nn.Module):
    r"""Frozen HiPPO memory of ``channels`` scalar signals (see the module doc), no parameters.

    Args:
        N: order (coefficients per channel).
        measure: ``legs`` (default), ``legt``, ``lmu`` or ``lagt``.
        channels: m, number of memorized scalar signals.
        theta: window length (``legt``/``lmu``, required) or warp timescale (``lagt``, default 1),
            in the time units of ``dt``; not accepted for ``legs`` (it has no timescale).
        dt: sampling step of the LTI memories (default 1); not accepted for ``legs`` (scale-invariant:
            it has no step size).
        discretization: ``bilinear`` (default), ``forward_euler``, ``backward_euler``, a GBT alpha
            in [0, 1], or ``zoh`` (LTI memories only).
        fast: LegS only: apply the O(N) step (Lemma 4.6) instead of cached dense per-step
            transitions (O(N^2) per step but one matmul; faster for small N on CPU).
        **params: measure parameters (``alpha`` of ``lagt``).

    ``step(c (B, m, N), f (B, m), k) -> c'`` with ``k`` the 0-based index of sample ``f``;
    ``forward(f (B, L, m)) -> (B, L, m, N)`` the memory after each sample.
    """

    def __init__(self, N: int, measure: str = "legs", channels: int = 1, theta: Optional[float] = None,
                 dt: Optional[float] = None, discretization="bilinear", fast: bool = False, **params) -> None:
        super().__init__()
        self.N = check_state_size(N)
        self.measure = check_measure(measure, CELL_MEMORIES, what="HiPPO-RNN memory")
        self.channels = check_state_size(channels, "channels")
        self.params = measure_params(self.measure, params)
        self.disc_name, self.alpha = _check_discretization(discretization)
        self.fast = bool(fast)
        self._cache: Dict[Tuple, Tuple[Tensor, Tensor]] = {}
        if self.measure == "legs":
            if theta is not None:
                raise ValueError(f"memory 'legs' has no timescale (it is scale-invariant, Prop. 4.5); got "
                                 f"theta={theta!r}: leave theta=None, or use 'legt'/'lmu' for a window")
            if dt is not None:
                raise ValueError(f"memory 'legs' has no step size (it is scale-invariant, Prop. 4.5); got dt={dt!r}: "
                                 "leave dt=None, or use 'legt'/'lmu'/'lagt' for a sampled LTI memory")
            if self.disc_name == "zoh":
                raise ValueError("discretization 'zoh' is not available for the scale-invariant 'legs' memory; "
                                 "use 'bilinear', 'forward_euler', 'backward_euler' or a GBT alpha")
            if self.alpha == 0.0:
                warn_forward_euler_lsi(transition("legs", self.N)[0], f"HiPPOMemory(N={self.N}, 'legs')")
            self.theta, self.dt = None, None
            self._legs_T, self._legs_b = torch.zeros(0, self.N, self.N, dtype=_F64), torch.zeros(0, self.N, dtype=_F64)
        else:
            if self.fast:
                raise ValueError(f"fast=True (the O(N) LegS step) is only for memory 'legs', got {self.measure!r}")
            if theta is None:
                if self.measure in ("legt", "lmu"):
                    raise ValueError(f"memory {self.measure!r} needs theta, the window length in the time units "
                                     f"of dt (e.g. theta=100 with dt=1 remembers the last 100 samples)")
                theta = 1.0
            self.theta = check_positive(theta, "theta")
            self.dt = check_positive(1.0 if dt is None else dt, "dt")
            A, B = transition(self.measure, self.N, self.theta, **self.params)
            self._Abar, self._Bbar = discretize(A, B, self.dt, discretization)    # float64

    def extra_repr(self) -> str:
        s = f"N={self.N}, measure={self.measure!r}, channels={self.channels}"
        if self.theta is not None:
            s += f", theta={self.theta}, dt={self.dt}"
        return s + (", fast=True" if self.fast else "")

    # -------------------------------------------------------------------------------------------
    def _cast(self, name: str, tensors: Tuple[Tensor, Tensor], like: Tensor) -> Tuple[Tensor, Tensor]:
        key = (name, like.dtype, like.device)
        hit = self._cache.get(key)
        if hit is None or hit[0].shape != tensors[0].shape:
            hit = self._cache[key] = (tensors[0].to(dtype=like.dtype, device=like.device),
                                      tensors[1].to(dtype=like.dtype, device=like.device))
        return hit

    def _legs_steps(self, k_max: int, like: Tensor) -> Tuple[Tensor, Tensor]:
        """Cached dense transitions for steps 1..k_max (grown by doubling)."""
        if self._legs_T.shape[0] < k_max:
            n = max(k_max, 2 * self._legs_T.shape[0])
            assert self.alpha is not None                                   # 'legs' rejects zoh in __init__
            T, self._legs_b = legs_lsi_transitions(self.N, n + 1, self.alpha)
            self._legs_T = T.transpose(-1, -2).contiguous()                 # c_k = c_{k-1} @ T_k^T + f b_k
        return self._cast("legs", (self._legs_T, self._legs_b), like)

    def initial_state(self, batch_size: int, dtype=None, device=None) -> Tensor:
        """Zero memory (B, m, N)."""
        return torch.zeros(batch_size, self.channels, self.N, dtype=dtype, device=device)

    def step(self, c: Tensor, f: Tensor, k: int) -> Tensor:
        """Memory after sample ``k`` (0-based): c (B, m, N), f (B, m) -> (B, m, N)."""
        if self.measure == "legs":
            if k == 0:
                return torch.nn.functional.pad(f.unsqueeze(-1), (0, self.N - 1))     # f_0 e_0
            if self.fast:
                assert self.alpha is not None                               # 'legs' rejects zoh in __init__
                a_, b_, g_ = legs_gbt_coefficients(float(k), float(k + 1), self.alpha)
                return legs_step_fast(c, f, a_, b_, g_)
            TT, b = self._legs_steps(k, c)
            return c @ TT[k - 1] + f.unsqueeze(-1) * b[k - 1]               # TT[k - 1] = T_k^T
        Abar, Bbar = self._cast("lti", (self._Abar, self._Bbar), c)
        return c @ Abar.T + f.unsqueeze(-1) * Bbar

    def forward(self, f: Tensor, k0: int = 0) -> Tensor:
        """Memory history (B, L, m, N) of the signal f (B, L, m), first sample at index ``k0``."""
        f = check_finite_tensor(f, "f")
        if f.dim() != 3 or f.shape[-1] != self.channels:
            raise ValueError(f"f must have shape (B, L, channels={self.channels}), got {tuple(f.shape)}")
        c = self.initial_state(f.shape[0], f.dtype, f.device)
        out = []
        for i in range(f.shape[1]):
            c = self.step(c, f[:, i], k0 + i)
            out.append(c)
        return torch.stack(out, 1)


class HiPPOCell(nn.Module):
    r"""One step of the HiPPO-RNN (module doc): ``(x_t, state) -> (h_t, state')``.

    Args:
        input_size: H_in.
        hidden_size: H.
        memory: ``legs`` (default), ``legt``, ``lmu``, ``lagt`` (:class:`HiPPOMemory`).
        order: N, memory order per channel (default 32).
        channels: m, scalar signals written into the memory per step (default 1).
        cell: ``gated`` (default: one update gate, as in the original HiPPO-RNN) or ``gru``.
        theta, dt, discretization, fast, **params: of the memory (:class:`HiPPOMemory`).

    Trainable: the cell (``cell``) and the write projection ``W_f`` (``write``); ``(A, B)`` are frozen.
    """

    def __init__(self, input_size: int, hidden_size: int, memory: str = "legs", order: int = 32,
                 channels: int = 1, cell: str = "gated", theta: Optional[float] = None, dt: Optional[float] = None,
                 discretization="bilinear", fast: bool = False, **params) -> None:
        super().__init__()
        self.input_size = check_state_size(input_size, "input_size")
        self.hidden_size = check_state_size(hidden_size, "hidden_size")
        self.cell_type = check_measure(cell, CELL_TYPES, what="cell")
        self.memory = HiPPOMemory(order, memory, channels, theta, dt, discretization, fast, **params)
        mem = self.memory.channels * self.memory.N
        self.cell: nn.Module
        if self.cell_type == "gated":
            self.cell = nn.Linear(self.input_size + mem + self.hidden_size, 2 * self.hidden_size)
        else:
            self.cell = nn.GRUCell(self.input_size + mem, self.hidden_size)
        self.write = nn.Linear(self.hidden_size, self.memory.channels)

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}, hidden_size={self.hidden_size}, cell={self.cell_type!r}"

    def initial_state(self, batch_size: int) -> HiPPOState:
        """Zero hidden (B, H) and memory (B, m, N), ``k = 0``."""
        batch_size = check_state_size(batch_size, "batch_size")
        w = self.write.weight
        return HiPPOState(torch.zeros(batch_size, self.hidden_size, dtype=w.dtype, device=w.device),
                          self.memory.initial_state(batch_size, w.dtype, w.device), 0)

    def _check_state(self, state: object, batch: int) -> HiPPOState:
        if not isinstance(state, HiPPOState):
            raise TypeError(f"state must be a HiPPOState (from initial_state), got {type(state).__name__}")
        h, c, k = state
        want_h, want_c = (batch, self.hidden_size), (batch, self.memory.channels, self.memory.N)
        if tuple(h.shape) != want_h or tuple(c.shape) != want_c:
            raise ValueError(f"state shapes must be h {want_h}, c {want_c} for batch {batch}; "
                             f"got h {tuple(h.shape)}, c {tuple(c.shape)}")
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 0:
            raise ValueError(f"state.k (samples read so far) must be an integer >= 0, got {k!r}")
        return state

    def forward(self, x: Tensor, state: Optional[HiPPOState] = None) -> Tuple[Tensor, HiPPOState]:
        """One step: x (B, H_in) -> ``(h (B, H), state')``; ``state=None`` starts from zeros."""
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[-1] != self.input_size:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must have shape (B, input_size={self.input_size}), got {got}")
        state = self.initial_state(x.shape[0]) if state is None else self._check_state(state, x.shape[0])
        return self._step(x.to(self.write.weight.dtype), state)

    def _step(self, x: Tensor, state: HiPPOState) -> Tuple[Tensor, HiPPOState]:
        h, c, k = state
        if self.cell_type == "gated":
            gate, cand = self.cell(torch.cat([x, c.flatten(1), h], -1)).chunk(2, -1)
            g = torch.sigmoid(gate)
            h = (1 - g) * h + g * torch.tanh(cand)
        else:
            h = self.cell(torch.cat([x, c.flatten(1)], -1), h)
        c = self.memory.step(c, self.write(h), k)
        return h, HiPPOState(h, c, k + 1)


class HiPPORNN(nn.Module):
    r"""HiPPO-RNN sequence module (thesis §4.4): x (B, L, H_in) -> h (B, L, H).

    Same arguments as :class:`HiPPOCell`. ``forward(x, state=None, lengths=None, return_state=False)``
    runs the cell over the sequence; ``lengths`` (B,) freezes each sequence's ``h`` and ``c`` after its
    last valid step (right-padded batches), so the returned state holds every sequence's final ``h``
    and ``c`` (its ``k`` is then the padded length: use it for reading, not to continue a ragged
    batch). ``step(x_t (B, H_in), state) -> (h_t, state')`` is one step of the same recurrence.

    Example::

        >>> rnn = HiPPORNN(3, 16, memory="legs", order=8)
        >>> y, st = rnn(torch.randn(2, 50, 3), return_state=True)     # y (2, 50, 16), st.c (2, 1, 8)
    """

    def __init__(self, input_size: int, hidden_size: int, **cell_kwargs) -> None:
        super().__init__()
        self.cell = HiPPOCell(input_size, hidden_size, **cell_kwargs)

    @property
    def memory(self) -> HiPPOMemory:
        """The cell's HiPPO memory (its measure, order N and discretization)."""
        return self.cell.memory

    def initial_state(self, batch_size: int) -> HiPPOState:
        """Zero hidden state and HiPPO coefficients for a batch of B."""
        return self.cell.initial_state(batch_size)

    def step(self, x: Tensor, state: HiPPOState) -> Tuple[Tensor, HiPPOState]:
        """One step: x (B, H_in), state -> ``(h (B, H), state')``."""
        return self.cell(x, state)

    def forward(self, x: Tensor, state: Optional[HiPPOState] = None, lengths: Optional[Tensor] = None,
                return_state: bool = False) -> Union[Tensor, Tuple[Tensor, HiPPOState]]:
        """x (B, L, input_size) -> hidden states (B, L, hidden_size), the cell stepped along L (thesis §4.4: the
        HiPPO-RNN); ``lengths`` keeps each sequence's state at its last valid step."""
        cell = self.cell
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[-1] != cell.input_size:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must have shape (B, L, input_size={cell.input_size}), got {got}")
        Bsz, L, _ = x.shape
        if L < 1:
            raise ValueError("x must contain at least one time step (L >= 1)")
        state = cell.initial_state(Bsz) if state is None else cell._check_state(state, Bsz)
        if lengths is not None:
            if not isinstance(lengths, torch.Tensor) or lengths.shape != (Bsz,) or lengths.is_floating_point():
                raise ValueError(f"lengths must be an integer tensor of shape (B,) = ({Bsz},), got {lengths!r}")
            if bool((lengths < 1).any()) or bool((lengths > L).any()):
                raise ValueError(f"lengths must lie in [1, L={L}], got {lengths.tolist()}")
            lengths = lengths.to(x.device)
        u = x.to(cell.write.weight.dtype)
        out = []
        for i in range(L):
            h, c, k = state
            nh, new = cell._step(u[:, i], state)
            if lengths is not None:
                live = (i < lengths).unsqueeze(-1)
                new = HiPPOState(torch.where(live, new.h, h), torch.where(live.unsqueeze(-1), new.c, c), new.k)
            state = new
            out.append(state.h)
        y = torch.stack(out, 1)
        return (y, state) if return_state else y
