r"""Train-time augmentation of time series: circular shifts, random crops, amplitude scaling and jitter.

Small labelled time-series sets (the UCR/UEA archive: 20 to a few hundred training series) are fitted
long before they are learned: a bidirectional S4D stack reaches ~100% training accuracy on ACSF1
while validation stays near 50%. The standard remedies of the time-series classification literature
(Le Guennec et al. 2016, "window slicing"; Um et al. 2017, scaling and jitter) draw, per series and
per optimizer step,

* **roll** ``p`` in [0, 1]: with probability ``p``, the series is shifted circularly within its own
  ``n`` valid steps by a uniform offset in [0, n): the class must not depend on where the series
  starts. This is the invariance of closed contours read from an arbitrary start point (OSULeaf,
  leaf outlines: series of one class are circular shifts of each other by a quarter of their length
  on median), which a few hundred training series cannot teach a model otherwise;
* **crop** ``c`` in (0, 1]: a window of ``ceil(c * n)`` consecutive valid steps (``n`` the series'
  own length), at a uniform random offset, moved to the start and presented as a shorter series
  (its length becomes the window's, the rest is padding): the class must not depend on where, within
  a few percent of its length, a pattern sits. The time scale is kept -- a window stretched back to
  ``n`` steps (window slicing proper) shows the model patterns ``1/c`` times slower than at test time,
  and measurably hurt validation accuracy on ArrowHead (``experiments/ucr_tuning.md``);
* **scale** ``s`` >= 0: every channel of the series multiplied by one factor drawn from N(1, s^2);
* **jitter** ``j`` >= 0: independent N(0, j^2) noise added to every valid step.

A batch is x (B, L, C) of float inputs, right-padded with ``lengths`` (B,) (None: all L steps valid);
padded steps are returned unchanged by rolls, scaling and jitter, and zero after a crop (the model
masks them). The first ``keep_channels`` channels pass through untouched -- the clock of
``data.time_channel``, a grid shared by all series, which stays the grid (cut to a crop's window) while
the signal channels move. Transforms apply in the order roll, crop, scale, jitter. Draws come from a
generator seeded by ``(seed, step)``, so a resumed run sees the
augmentations of an uninterrupted one. Evaluation never augments.

Token sequences of a language model (``data.augment = {"window": W}``, :class:`TokenWindows`) take one
transform: each training sequence is replaced by a window of ``W`` consecutive valid steps at a uniform
random offset (the whole sequence when it is shorter), its targets cut alike. Random windows are what keeps
a model of the Bach chorales from memorising its training pieces: trained for 810 steps on fixed 128-step
windows every 64 steps, the chorales SaShiMi reached 1.66 nats/step on its training pieces and 3.97 on the
validation pieces; on random windows of the same pieces, 2.92 and 2.98 (``docs/generation.md``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
from torch import Tensor

__all__ = ["SeriesAugment", "TokenWindows", "AUGMENT_KEYS", "TOKEN_AUGMENT_KEYS", "from_spec"]

#: The keys ``data.augment`` accepts for token sequences (language models), with their ranges.
TOKEN_AUGMENT_KEYS = {"window": "an integer >= 2 (steps per random training window)"}
#: The keys ``data.augment`` accepts for float series, with their ranges (see the module docstring).
AUGMENT_KEYS = {"roll": "a probability in [0, 1] (0: no shift)", "crop": "a number in (0, 1] (1: no crop)",
                "scale": "a number >= 0 (0: no scaling)", "jitter": "a number >= 0 (0: no noise)"}


@dataclass(frozen=True)
class SeriesAugment:
    """Random circular shifts, crops, scaling and jitter of a batch of series (module docstring).

    Call as ``aug(x, lengths, step)`` with x (B, L, C) floating, ``lengths`` (B,) int or None, and the
    optimizer step (which seeds the draws together with ``seed``); returns ``(x', lengths')``: the
    transformed (B, L, C) batch and its valid lengths (with ``crop``, the window lengths; else
    ``lengths`` unchanged). ``keep_channels`` leading channels (a clock) are not transformed.
    """

    crop: float = 1.0
    scale: float = 0.0
    jitter: float = 0.0
    roll: float = 0.0
    seed: int = 0
    keep_channels: int = 0

    def __post_init__(self) -> None:
        ranges = {"roll": lambda v: 0 <= v <= 1, "crop": lambda v: 0 < v <= 1, "scale": lambda v: v >= 0,
                  "jitter": lambda v: v >= 0}
        for name, in_range in ranges.items():
            value = getattr(self, name)              # the type first: "x" <= 1 would raise Python's TypeError
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or not in_range(value):
                raise ValueError(f"augment: {name}={value!r}; allowed: {AUGMENT_KEYS[name]}")
        k = self.keep_channels
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(f"augment: keep_channels={k!r}; allowed: an integer >= 0 (leading channels left as "
                             "they are, e.g. 1 for the clock of data.time_channel)")

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], seed: int = 0, keep_channels: int = 0) -> "SeriesAugment":
        """From a ``data.augment`` table such as ``{"crop": 0.9, "scale": 0.1}``; unknown keys are refused."""
        unknown = sorted(set(spec) - set(AUGMENT_KEYS))
        if unknown:
            raise ValueError(f"augment: unknown key(s) {unknown}; allowed: the keys "
                             + ", ".join(f"{k} ({v})" for k, v in AUGMENT_KEYS.items()))
        return cls(seed=seed, keep_channels=keep_channels, **{k: spec[k] for k in AUGMENT_KEYS if k in spec})

    @property
    def active(self) -> bool:
        """Whether any transform is on."""
        return self.roll > 0 or self.crop < 1 or self.scale > 0 or self.jitter > 0

    def spec(self) -> Dict[str, float]:
        """The table this augmentation was built from (transforms that are on)."""
        out = {"roll": self.roll, "crop": self.crop, "scale": self.scale, "jitter": self.jitter}
        return {k: v for k, v in out.items() if v != (1.0 if k == "crop" else 0.0)}

    def __call__(self, x: Tensor, lengths: Optional[Tensor], step: int) -> Tuple[Tensor, Optional[Tensor]]:
        if x.dim() != 3 or not x.is_floating_point():
            raise ValueError(f"augment: expected float series (B, L, C), got a {x.dtype} tensor of shape "
                             f"{tuple(x.shape)}; augmentation applies to time-series inputs, not tokens")
        if not self.active:
            return x, lengths
        B, L, C = x.shape
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + step) % 2**63)
        n = (torch.full((B,), L) if lengths is None else lengths.detach().to("cpu", torch.int64)).clamp(1, L)
        t = torch.arange(L)[None, :]                                                   # (1, L) step index
        valid = (t < n[:, None]).to(x.device)                                          # (B, L)
        out, new_lengths = x, lengths
        if self.roll > 0:
            on = torch.rand(B, generator=gen, dtype=torch.float64) < self.roll
            shift = (torch.rand(B, generator=gen, dtype=torch.float64) * n).long().clamp(max=n - 1) * on  # [0, n)
            src = torch.where(t < n[:, None], (t + shift[:, None]) % n[:, None], t).to(x.device)   # (B, L)
            out = torch.gather(out, 1, src[..., None].expand(B, L, C))
        if self.crop < 1:
            width = torch.ceil(self.crop * n.double()).long().clamp(1)                   # (B,) window lengths
            start = (torch.rand(B, generator=gen, dtype=torch.float64) * (n - width + 1)).long()
            src = torch.minimum(start[:, None] + t, (n - 1)[:, None]).to(x.device)      # (B, L)
            out = torch.gather(out, 1, src[..., None].expand(B, L, C))
            n = width
            valid = (t < n[:, None]).to(x.device)
            out = torch.where(valid[..., None], out, torch.zeros((), dtype=x.dtype, device=x.device))
            new_lengths = n.to(x.device)
        if self.scale > 0:
            factor = 1 + self.scale * torch.randn(B, 1, 1, generator=gen, dtype=torch.float64)
            out = torch.where(valid[..., None], out * factor.to(x.device, x.dtype), out)
        if self.jitter > 0:
            noise = self.jitter * torch.randn(B, L, C, generator=gen, dtype=torch.float64)
            out = torch.where(valid[..., None], out + noise.to(x.device, x.dtype), out)
        k = min(self.keep_channels, C)
        if k:    # the clock: the same grid, cut to the (possibly cropped) valid steps
            clock = torch.where(valid[..., None], x[..., :k], torch.zeros((), dtype=x.dtype, device=x.device))
            out = torch.cat([clock, out[..., k:]], dim=-1)
        return out, new_lengths


@dataclass(frozen=True)
class TokenWindows:
    """Random windows of ``window`` steps of token sequences and their aligned targets (module docstring).

    Call as ``aug.with_targets(x, y, lengths, step)`` with x (B, L, ...) tokens, y (B, L, ...) targets aligned
    with them step by step, ``lengths`` (B,) or None, and the optimizer step (which seeds the draws with ``seed``);
    returns ``(x', y', lengths')`` of length ``min(window, L)``: sequence b's steps ``[s_b, s_b + window)`` with
    ``s_b`` uniform in ``[0, max(n_b - window, 0)]`` and ``n_b`` its valid length, and ``lengths' = min(n_b,
    window)``. :func:`statespaces.train.engine.fit` calls :meth:`with_targets` for an augmentation that has it.
    """

    window: int
    seed: int = 0

    def __post_init__(self) -> None:
        w = self.window
        if isinstance(w, bool) or not isinstance(w, int) or w < 2:
            raise ValueError(f"augment: window={w!r}; allowed: {TOKEN_AUGMENT_KEYS['window']}")

    @property
    def active(self) -> bool:
        return True

    def with_targets(self, x: Tensor, y: Optional[Tensor], lengths: Optional[Tensor],
                     step: int) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
        if x.dim() < 2 or x.is_floating_point():
            raise ValueError(f"augment: window: expected token ids (B, L[, S]), got a {x.dtype} tensor of shape "
                             f"{tuple(x.shape)}")
        if y is not None and tuple(y.shape[:2]) != tuple(x.shape[:2]):
            raise ValueError(f"augment: window: the targets {tuple(y.shape)} are not aligned with the inputs "
                             f"{tuple(x.shape)} step by step")
        B, L = x.shape[:2]
        W = min(self.window, L)
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + step) % 2**63)
        n = (torch.full((B,), L) if lengths is None else lengths.detach().to("cpu", torch.int64)).clamp(1, L)
        start = (torch.rand(B, generator=gen, dtype=torch.float64) * (n - W).clamp(min=0).add(1)).long()
        src = (start[:, None] + torch.arange(W)[None, :]).clamp(max=L - 1).to(x.device)      # (B, W)

        def cut(t: Tensor) -> Tensor:
            idx = src.reshape(B, W, *([1] * (t.dim() - 2))).expand(B, W, *t.shape[2:])
            return torch.gather(t, 1, idx)

        new_lengths = None if lengths is None else n.clamp(max=W).to(lengths.device, lengths.dtype)
        return cut(x), (None if y is None else cut(y)), new_lengths


def from_spec(spec: Mapping[str, Any], seed: int = 0, keep_channels: int = 0) -> Any:
    """The augmentation of a ``data.augment`` table: a :class:`TokenWindows` for ``{"window": W}``, else a
    :class:`SeriesAugment`; a table mixing the two kinds' keys, or with an unknown key, is refused."""
    if set(spec) & set(TOKEN_AUGMENT_KEYS):
        other = sorted(set(spec) - set(TOKEN_AUGMENT_KEYS))
        if other:
            raise ValueError(f"augment: window (token sequences) cannot be combined with {other} (float series); "
                             "allowed: window alone, or keys of float series alone")
        return TokenWindows(spec["window"], seed=seed)
    try:
        return SeriesAugment.from_spec(spec, seed=seed, keep_channels=keep_channels)
    except ValueError as e:
        if "unknown key" not in str(e):
            raise
        raise ValueError(f"{e}; for token sequences (language models): window "
                         f"({TOKEN_AUGMENT_KEYS['window']})") from None
