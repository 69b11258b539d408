r"""Irregular sampling: a per-step time-step multiplier for the scan-based layers (thesis §4.2.4, app. D.1.4).

A regularly sampled layer discretizes its continuous system once with its learned step ``Delta``
(times ``rate``). With irregular sampling, step ``t`` of sequence ``b`` covers its own interval:
the layer discretizes the continuous system afresh for ``Delta * rate * dt[b, t]`` (ZOH: exactly,
``exp(Delta dt A)``), so the recurrence becomes time-varying and is computed by the parallel scan
over the state (:mod:`statespaces.ops.scan`) -- it is no longer a convolution.

``dt`` (B, L) is a *multiplier* of the learned step: all ones is the regular layer. ``timestamps``
(B, L), strictly increasing in each row, in units of the nominal step, are turned into
``dt[:, t] = timestamps[:, t] - timestamps[:, t - 1]`` with the interval before the first sample
set to ``first`` (default 1, one nominal step); to continue a stream chunk by chunk pass the
intervals themselves (``dt``), the first one measured from the previous chunk's last sample.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
from torch.utils.checkpoint import checkpoint

from .._checks import check_real, refuse_if, tracing
from ..ops.time_varying import reversed_steps, shift_anticausal  # noqa: F401  (re-exported: they lived here)

Tensor = torch.Tensor

#: Bytes of one per-step table (a discretized transition, the forcing, the state trajectory) that one chunk of an
#: irregular pass forms at a time: 16 MiB (see :func:`over_time_chunks`).
CHUNK_BYTES = 1 << 24
#: The shortest chunk :func:`over_time_chunks` cuts (a Python loop of shorter chunks costs more than it saves).
MIN_CHUNK = 32


def over_time_chunks(fn: Callable[..., Tuple[Tensor, Tensor]], seqs: Tuple[Tensor, ...], state: Optional[Tensor],
                     step_bytes: int) -> Tuple[Tensor, Tensor]:
    r"""``fn(*seqs, state) -> (y, last)`` over chunks of the time axis, carrying the state from chunk to chunk: the
    time-varying recurrence of irregular sampling (thesis §4.2.4) computed piecewise.

    The time-varying recurrence of irregular sampling forms per-step tables (the transitions and forcing
    discretized for each interval, the state trajectory), ``step_bytes`` bytes per time step for the largest one,
    and autograd keeps a dozen or more such tables (the parallel scan saves each level). Over a whole sequence
    that was 1.4 GB for an S4D layer at B=4, L=1024, H=64, N=64, whose regular path takes 13 MB. Cut into chunks
    of ``max(MIN_CHUNK, CHUNK_BYTES // step_bytes)`` steps, each chunk under
    :func:`torch.utils.checkpoint.checkpoint` when autograd records (its tables are formed again in the backward
    instead of kept), the peak holds one chunk's tables (0.24 GB there) and the rest keeps each chunk's input,
    output and boundary state. The cost is the forward formed twice: 1.4x the time of a forward+backward (5.8 s ->
    8.3 s there, one CPU thread, before the per-step factors and the scan's backward were made cheaper: 1.5 s
    now, ``docs/s5.md``). The result is the same recurrence: the state after a chunk is the next chunk's
    initial state.

    seqs: tensors (B, L, ...) cut along dim 1; state: the initial state (None: zeros) as ``fn`` takes it; fn
    returns y (B, Lc, ...) and the state after its last step. Returns y (B, L, ...) and the final state. A
    sequence of up to 1.5 chunks is one call of ``fn``, as before (one step past a chunk cost 1.7x the time: the
    recomputation of a whole chunk for one step), a longer one is cut into chunks of equal length; while
    torch.compile or torch.export traces, chunks are not checkpointed (the traced graph keeps what it keeps)."""
    L = seqs[0].shape[1]
    chunk = chunk_length(step_bytes)
    if one_pass(L, step_bytes):       # up to 1.5 chunks: one pass (a 1-step tail cost a 128-step recomputation)
        return fn(*seqs, state)
    n = -(-L // chunk)
    chunk = -(-L // n)                # n chunks of equal length, the last shorter by less than n steps
    recompute = torch.is_grad_enabled() and not tracing()
    ys = []
    for start in range(0, L, chunk):
        part = tuple(s[:, start:start + chunk] for s in seqs)
        if recompute:
            y, state = checkpoint(fn, *part, state, use_reentrant=False)
        else:
            y, state = fn(*part, state)
        ys.append(y)
    assert state is not None
    return torch.cat(ys, 1), state


#: :func:`per_distinct_step` forms tables per distinct interval when there are at most this share of the steps.
DISTINCT_SHARE = 1 / 8


def per_distinct_step(fn: Callable[[Tensor], Tuple[Tensor, ...]], steps: Tensor) -> Tuple[Tensor, ...]:
    """``fn(steps)`` for per-step tables that depend on each step's interval alone (each output (B, L, ...) for steps
    (B, L); the per-interval discretizations of thesis §4.2.4), formed once per distinct interval and gathered when
    the intervals repeat: samples missing from a regular grid leave a few distinct gaps (1, 2, 3 steps ...), and a
    bidirectional S4D classifier of the ``ucr`` preset's shape spent most of its forward+backward forming the same
    discretization over and over. The values are the same (the same elementwise arithmetic on the same numbers); the
    gradients of the parameters are sums in another order. Taken on the CPU in eager mode when the distinct intervals
    are at most :data:`DISTINCT_SHARE` of the steps and the steps need no gradient (``torch.unique`` has none, and on
    CUDA it would wait for the device)."""
    if steps.requires_grad or steps.device.type != "cpu" or tracing() or steps.numel() < 16:
        return fn(steps)
    distinct, where = torch.unique(steps, return_inverse=True)
    if distinct.numel() > DISTINCT_SHARE * steps.numel():
        return fn(steps)
    return tuple(t[where] for t in fn(distinct))


def chunk_length(step_bytes: int) -> int:
    """Steps per chunk of :func:`over_time_chunks` for per-step tables of ``step_bytes`` bytes."""
    return max(MIN_CHUNK, CHUNK_BYTES // max(1, step_bytes))


def one_pass(L: int, step_bytes: int) -> bool:
    """Whether :func:`over_time_chunks` runs a sequence of L steps in one call (up to 1.5 chunks)."""
    return 2 * L <= 3 * chunk_length(step_bytes)


def intervals_from_timestamps(timestamps: Tensor, first: float = 1.0, mask: Optional[Tensor] = None) -> Tensor:
    """Intervals (B, L) between consecutive sample times (B, L); the first interval is ``first``.

    Raises ``ValueError`` unless every row is strictly increasing (a repeated or reversed time
    stamp is a zero or negative interval). ``mask`` (B, L) bool, True at the valid steps of a right-padded
    batch: only those are checked, and the padded steps get the row's first interval (a causal pass never reads
    them; the anti-causal pass of a bidirectional layer reads the one after the last valid sample, the row's first
    interval, as an unpadded row's last sample takes: :func:`reversed_steps`; a layer that needs one interval per
    row, IMEX, sees none vary there).
    """
    first = check_real("first", first, what="positive finite number (interval before the first sample)")
    ts = _check_tensor("timestamps", timestamps)
    # the first interval is ``first`` itself: t0 - (t0 - first) rounds it away at large t0 (float32 Unix seconds:
    # 1.7e9 - 1 == 1.7e9, an interval of 0)
    d = torch.cat([torch.full_like(ts[:, :1], first), torch.diff(ts, dim=1)], 1)
    if mask is not None:
        d = _pad_with_first(d, mask)
    _check_positive("timestamps", d, "every row must be strictly increasing (sample times in units of the "
                    "nominal step); sort the samples or drop repeated time stamps")
    return d


def _pad_with_first(d: Tensor, mask: Tensor) -> Tensor:
    """``d`` with its padded steps (``mask`` False) set to the row's first interval."""
    return torch.where(mask, d, d[:, :1])


def _check_tensor(name: str, t: object) -> Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a tensor of shape (batch, length), got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}; convert it with .float()")
    if t.dim() != 2:
        raise ValueError(f"{name} must have shape (batch, length), got {tuple(t.shape)}")
    return t


def _check_positive(name: str, d: Tensor, hint: str) -> None:
    """Refuse intervals that are not positive and finite: on the CPU now, naming the smallest; on CUDA without a
    host sync (:func:`~statespaces._checks.refuse_if`); skipped while torch.compile / torch.export / torch.func
    trace (a data-dependent ``bool`` broke ``fullgraph=True`` and ``vmap`` over the intervals)."""
    bad = ~(torch.isfinite(d) & (d > 0))
    if tracing() or d.device.type != "cpu":
        refuse_if(bad, f"{name} gives {{n}} non-positive or non-finite intervals of {d.numel()}; {hint}")
    elif bool(bad.any()):
        raise ValueError(f"{name} gives {int(bad.sum())} non-positive or non-finite intervals of {d.numel()} "
                         f"(smallest {float(d.min()):.3g}); {hint}")


def check_intervals(x: Tensor, dt: Optional[Tensor], timestamps: Optional[Tensor],
                    mask: Optional[Tensor] = None) -> Optional[Tensor]:
    """The per-step multipliers (B, L) for input x (B, L, H) in the dtype and device of x, or None
    (regular sampling). Exactly one of ``dt``/``timestamps`` may be given. ``mask`` (B, L) bool, True at the
    valid steps of a right-padded batch: the padding of ``dt`` / ``timestamps`` (zeros, as padding usually is) is
    not checked and becomes the row's first interval (read only by the anti-causal pass of a bidirectional layer,
    for the last valid sample, as an unpadded row's last sample reads it: :func:`reversed_steps`)."""
    if dt is None and timestamps is None:
        return None
    if dt is not None and timestamps is not None:
        raise ValueError("give either dt (intervals) or timestamps (sample times), not both")
    name = "dt" if timestamps is None else "timestamps"
    d = _check_tensor(name, dt if timestamps is None else timestamps)
    if tuple(d.shape) != tuple(x.shape[:2]):
        raise ValueError(f"{name} has shape {tuple(d.shape)}, the input has (batch, length) = {tuple(x.shape[:2])}; "
                         "give one interval per step of every sequence")
    if d.device != x.device:
        raise ValueError(f"{name} is on {d.device}, the input on {x.device}; move it with .to(x.device)")
    if timestamps is not None:
        return intervals_from_timestamps(d, mask=mask)
    if mask is not None:
        d = _pad_with_first(d, mask)
    _check_positive("dt", d, "each entry multiplies the learned step of one interval and must be > 0")
    return d
