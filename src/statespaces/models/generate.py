r"""Sampling from next-token logits, for autoregressive generation (thesis §7.4.2, §8.3).

Generation itself lives on the models (:meth:`statespaces.models.lm.SSMLanguageModel.generate`):
the prompt is ingested once in convolution mode, then every new token costs one recurrent step
(O(1) time and memory per step in the sequence length, thesis §2.3.2 / §7.4.2). This module only
turns logits into samples.
"""
from __future__ import annotations

from typing import Optional

import torch

from .._checks import check_int, check_real
from ..ops._amp import upcast_half

Tensor = torch.Tensor


def check_sampling(temperature: float, top_k: Optional[int], top_p: Optional[float]) -> None:
    """Raise ``ValueError`` for temperature <= 0 (or not finite), top_k < 1, or top_p outside (0, 1], and
    ``TypeError`` for values of the wrong kind (bools, strings, tensors; a float ``top_k``). NumPy scalars
    are accepted."""
    check_real("temperature", temperature,
               what="finite number > 0 (use a small value such as 1e-3 for near-greedy decoding)")
    if top_k is not None:
        check_int("top_k", top_k, 1)
    if top_p is not None:
        p = check_real("top_p", top_p, what="number in (0, 1] (or None)")
        if p > 1.0:
            raise ValueError(f"top_p must be a number in (0, 1] (or None), got {top_p!r}")


def _top_k_mask(logits: Tensor, k: int) -> Tensor:
    """Boolean mask (..., V), True at exactly the k indices ``torch.topk`` picks in each row.

    Comparing with the k-th value instead (``logits >= kth``) would keep every token tied with it:
    top_k=1 on ``[2, 2, 2, 1]`` would keep three."""
    idx = torch.topk(logits, k, dim=-1).indices
    return torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, idx, True)


def filter_logits(
    logits: Tensor, temperature: float = 1.0, top_k: Optional[int] = None, top_p: Optional[float] = None
) -> Tensor:
    """Temperature-scaled logits (..., V) with the tokens outside the top-k / nucleus set to -inf.

    ``top_k`` keeps exactly k tokens (k is clipped to V): the indices ``torch.topk`` returns. When
    logits tie at the k-th place, which of the tied tokens stay is ``torch.topk``'s choice
    (deterministic for a given device and input, but unspecified: not necessarily the lowest indices,
    and it may differ between CPU and CUDA); never more than k of them.

    ``top_p`` keeps the smallest set of most likely tokens whose total probability reaches ``top_p``
    (at least one token is always kept). Tokens tied in probability enter the set in index order (a stable
    sort), so under ties the kept set is the same on every device: the lower indices. Both may be combined
    (top-k first).
    """
    check_sampling(temperature, top_k, top_p)
    temperature = float(temperature)
    top_k = None if top_k is None else int(top_k)
    top_p = None if top_p is None else float(top_p)
    logits = upcast_half(logits)
    # divided in float64: a float32 division casts a temperature below 1e-45 to 0 itself
    logits = (logits.double() / temperature).to(logits.dtype)
    V = logits.shape[-1]
    neg_inf = torch.tensor(float("-inf"), dtype=logits.dtype, device=logits.device)
    if top_k is not None and top_k < V:
        logits = torch.where(_top_k_mask(logits, top_k), logits, neg_inf)
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True, stable=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        before = torch.cumsum(probs, dim=-1) - probs         # mass strictly before each token
        drop_sorted = before >= top_p                        # the first token has before = 0: always kept
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = torch.where(drop, neg_inf, logits)
    return logits


def sample_logits(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """Draw one token per row from logits (..., V): returns int64 (...). Any finite temperature > 0 is valid, the
    smallest giving the greedy choice: the logits are shifted by their row maximum first (the softmax does not
    change), so a tiny temperature sends the others to -inf instead of overflowing the maximum to +inf (NaN
    probabilities at temperature 1e-40 in float32)."""
    logits = upcast_half(logits)
    logits = filter_logits(logits - logits.amax(-1, keepdim=True).detach(), temperature, top_k, top_p)
    V = logits.shape[-1]
    probs = torch.softmax(logits.reshape(-1, V).to(torch.float64), dim=-1)
    idx = torch.multinomial(probs, 1, generator=generator)
    return idx.reshape(logits.shape[:-1])
