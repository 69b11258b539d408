r"""Argument handling shared by the Cauchy sums of :mod:`statespaces.kernels.cauchy` (PyTorch and
reference paths) and :mod:`statespaces.ops.triton.cauchy` (Triton kernel): dtype promotion,
``conj=True`` mirrored poles, and the grouping of broadcast dims into (R, J, N) so that J vectors
share each row's reciprocals. A leaf module (imports only torch), so neither of those imports the other.
"""
from __future__ import annotations

from typing import Tuple

import torch

Tensor = torch.Tensor


def _complex_dtype(*ts: Tensor) -> torch.dtype:
    dt = torch.float32
    for t in ts:
        real = t.real.dtype if t.is_complex() else t.dtype
        dt = torch.promote_types(dt, real)
    return torch.complex128 if dt == torch.float64 else torch.complex64


def _check(v: Tensor, z: Tensor, w: Tensor) -> None:
    for name, t in (("v", v), ("z", z), ("w", w)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"cauchy: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() < 1:
            raise ValueError(f"cauchy: {name} must have at least one dimension, got a scalar")
        if not (t.is_complex() or t.is_floating_point()):
            raise TypeError(f"cauchy: {name} must be a floating or complex tensor, got {t.dtype}")
    if v.shape[-1] != w.shape[-1]:
        raise ValueError(f"cauchy: v (..., N) and w (..., N) disagree on N: {v.shape[-1]} vs {w.shape[-1]}")


def _grouped(v: Tensor, z: Tensor, w: Tensor):
    """Reshape broadcastable (v, z, w) into v (R, J, N), z (R, K), w (R, N).

    Batch dims along which z and w are both constant (size 1) but v is not become the J axis,
    so every reciprocal 1/(z_k - w_n) is computed once and shared by J vectors (one matmul).
    Returns the reshaped tensors and a function mapping the (R, J, K) output back to (..., K).
    """
    N, K = v.shape[-1], z.shape[-1]
    batch = torch.broadcast_shapes(v.shape[:-1], z.shape[:-1], w.shape[:-1])
    nb = len(batch)

    def pad(t: Tensor) -> Tensor:
        return t.reshape((1,) * (nb - (t.dim() - 1)) + tuple(t.shape))

    v, z, w = pad(v), pad(z), pad(w)
    group = [i for i in range(nb) if z.shape[i] == 1 and w.shape[i] == 1 and batch[i] > 1]
    rest = [i for i in range(nb) if i not in group]
    perm = rest + group
    rest_shape = [batch[i] for i in rest]
    group_shape = [batch[i] for i in group]
    Rn = 1
    for s in rest_shape:
        Rn *= s
    Jn = 1
    for s in group_shape:
        Jn *= s
    v = v.expand(*batch, N).permute(*perm, nb).reshape(Rn, Jn, N)
    zb = z.expand(*[batch[i] if i in rest else 1 for i in range(nb)], K)
    wb = w.expand(*[batch[i] if i in rest else 1 for i in range(nb)], N)
    z = zb.permute(*perm, nb).reshape(Rn, K)
    w = wb.permute(*perm, nb).reshape(Rn, N)
    inv = [0] * nb
    for pos, i in enumerate(perm):
        inv[i] = pos

    def unshape(out: Tensor) -> Tensor:
        return out.reshape(*rest_shape, *group_shape, K).permute(*inv, nb)

    return v, z, w, unshape


def _prepare(v: Tensor, z: Tensor, w: Tensor, conj: bool) -> Tuple[Tensor, Tensor, Tensor]:
    _check(v, z, w)
    cd = _complex_dtype(v, z, w)
    v, z, w = v.to(cd), z.to(cd), w.to(cd)
    if conj:
        v = torch.cat([v, v.conj()], -1)
        w = torch.cat([w, w.conj()], -1)
    return v, z, w
