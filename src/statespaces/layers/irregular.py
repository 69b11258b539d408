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

from typing import Optional

import torch

from .._checks import check_real

Tensor = torch.Tensor


def intervals_from_timestamps(timestamps: Tensor, first: float = 1.0, mask: Optional[Tensor] = None) -> Tensor:
    """Intervals (B, L) between consecutive sample times (B, L); the first interval is ``first``.

    Raises ``ValueError`` unless every row is strictly increasing (a repeated or reversed time
    stamp is a zero or negative interval). ``mask`` (B, L) bool, True at the valid steps of a right-padded
    batch: only those are checked, and the padded steps get the row's first interval (they are never read; a
    layer that needs one interval per row, IMEX, sees none vary there).
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
    ok = torch.isfinite(d) & (d > 0)
    if not bool(ok.all()):
        bad = int((~ok).sum())
        raise ValueError(f"{name} gives {bad} non-positive or non-finite intervals of {d.numel()} "
                         f"(smallest {float(d.min()):.3g}); {hint}")


def check_intervals(x: Tensor, dt: Optional[Tensor], timestamps: Optional[Tensor],
                    mask: Optional[Tensor] = None) -> Optional[Tensor]:
    """The per-step multipliers (B, L) for input x (B, L, H) in the dtype and device of x, or None
    (regular sampling). Exactly one of ``dt``/``timestamps`` may be given. ``mask`` (B, L) bool, True at the
    valid steps of a right-padded batch: the padding of ``dt`` / ``timestamps`` (zeros, as padding usually is) is
    not checked and becomes the row's first interval, which no valid step reads."""
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
