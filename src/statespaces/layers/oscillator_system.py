r"""The discretized oscillators of LinOSS and D-LinOSS as one system, and its closed forms (seed 001; thesis §2.3.3).

:class:`OscillatorSystem` is what every view of :class:`~statespaces.layers.linoss.LinOSS` works from (D-LinOSS
supplies its own through ``_system``): P real 2x2 blocks ``x_n = M x_{n-1} + f (B u)_n`` on (velocity, position).
This module holds what follows from it in closed form, without a layer:

* :func:`system_powers` ``M^l`` and :func:`system_responses` ``M^l f`` by Cayley-Hamilton
  (:func:`~statespaces.kernels.oscillator.power_coefficients`);
* the tables of the chunked convolution (:func:`chunk_tables`, :func:`normal_chunk_tables`; chunks of
  :data:`LINOSS_CHUNK` steps) and the forcing of the scan in the blocks' normal basis (:func:`normal_forcing`);
* the state conversions between the (B, 2, 2P) real layout, the normal basis and the chunked columns.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import torch

from ..kernels.chunked_conv import ChunkTables, block_tables, chunk_length
from ..kernels.oscillator import from_normal_basis, normal_form, power_coefficients, to_normal_basis

Tensor = torch.Tensor

__all__ = ["LINOSS_CHUNK", "OscillatorSystem", "chunk_of", "chunk_tables", "column_state", "normal_chunk_tables",
           "normal_forcing", "state_from_normal", "state_to_normal", "system_powers", "system_responses"]

#: Chunk length of the ``mode='chunked'`` path (one 2x2 block per column: the Toeplitz product dominates).
LINOSS_CHUNK = 32


class OscillatorSystem(NamedTuple):
    r"""A bank of P discretized oscillators, ``x_n = M x_{n-1} + f (B u)_n`` on ``x = [z; y]``.

    All (P,)-shaped tensors in the wide precision (float64): ``M`` (2, 2, P) block diagonals,
    ``f`` (2, P) forcing coefficients, ``dt`` (P,) the step actually used (``rate * dt``), and the
    eigenvalues ``sign r e^{+-i theta}`` of each block as ``log_r``, ``theta`` (P,) and an optional
    ``sign`` (P,) of +-1 (None: +1). Every scheme here satisfies ``f = dt M[:, 0]`` (LinOSS
    IM/IMEX, D-LinOSS IMEX/IM), which the closed-form responses use; each block has a
    complex-conjugate (or double) eigenvalue pair, which the Cayley-Hamilton powers use.

    ``sign = -1`` lets a block with eigenvalues near -r (angle near pi) be stored as
    ``-r e^{+-i theta}`` with a small ``theta``: ``sin(l theta)/sin(theta)`` at ``theta = pi - d``
    loses all digits for tiny d (``l * pi`` is rounded), at ``theta = d`` it does not.
    """

    M: Tensor
    f: Tensor
    dt: Tensor
    log_r: Tensor
    theta: Tensor
    sign: Optional[Tensor] = None


def _signed(sys: OscillatorSystem, c: Tensor, l: Tensor, shift: int) -> Tensor:
    """``c * sign^(l + shift)`` (c (P, n), l (n,)): the power of the eigenvalue sign in s_l."""
    if sys.sign is None:
        return c
    odd = torch.remainder(l.to(torch.int64) + shift, 2) == 1                  # (n,)
    flip = (sys.sign < 0).unsqueeze(-1) & odd                                 # (P, n)
    return torch.where(flip, -c, c)


def system_powers(sys: OscillatorSystem, l: Tensor) -> Tensor:
    r"""``M^l`` in closed form (Cayley-Hamilton, :func:`~statespaces.kernels.oscillator.power_coefficients`):
    ``M^l = s_l M - r^2 s_{l-1} I``. l: integer powers (n,). Returns (2, 2, P, n) in the dtype of ``M``."""
    s_l, s_prev = power_coefficients(sys.log_r, sys.theta, l)
    s_l, s_prev = _signed(sys, s_l, l, -1), _signed(sys, s_prev, l, 0)
    eye = torch.eye(2, dtype=sys.M.dtype, device=sys.M.device)[:, :, None, None]
    return s_l * sys.M.unsqueeze(-1) - s_prev * eye


def system_responses(sys: OscillatorSystem, L: int) -> Tensor:
    r"""Impulse responses ``[zeta_l; kappa_l] = M^l f`` (l < L) of velocity and position, (2, P, L).

    With ``f = dt M[:, 0]`` this is ``dt (M^{l+1})_{:, 0} = dt [s_{l+1} M_11 - r^2 s_l; s_{l+1} M_21]``.
    """
    l = torch.arange(1, L + 1, device=sys.M.device, dtype=sys.M.dtype)
    s_next, s_cur = power_coefficients(sys.log_r, sys.theta, l)
    s_next, s_cur = _signed(sys, s_next, l, -1), _signed(sys, s_cur, l, 0)
    dtc = sys.dt.unsqueeze(-1)
    vel = dtc * (s_next * sys.M[0, 0].unsqueeze(-1) - s_cur)
    pos = dtc * s_next * sys.M[1, 0].unsqueeze(-1)
    return torch.stack([vel, pos])


def chunk_of(L: int) -> int:
    """The chunk length T of LinOSS's chunked mode at sequence length L: :data:`LINOSS_CHUNK`, or L when shorter."""
    return chunk_length(L, LINOSS_CHUNK)


def chunk_tables(sys: OscillatorSystem, L: int, dtype: torch.dtype) -> ChunkTables:
    r""":class:`~statespaces.kernels.chunked_conv.ChunkTables` of the 2P real columns of the chunked mode, chunks of
    :data:`LINOSS_CHUNK` steps (thesis §2.3.3): each column is a 2x2 block system on (velocity, position), forced
    by ``f`` and read at the position, with the closed-form float64 powers ``M^j`` (j <= T, :func:`system_powers`)
    rounded once to ``dtype``; ``pow_T``, ``pow_r`` stay float64 (the carry). Built for the P oscillators and
    repeated for the [Re; Im] halves, which share them. Shapes: taps (2P, T), w_in and w_out (2P, T, 2)."""
    T = chunk_of(L)
    r = L - (-(-L // T) - 1) * T
    Mp = system_powers(sys, torch.arange(1, T + 1, device=sys.M.device))        # (2, 2, P, T): M^{1..T}
    eye = torch.eye(2, dtype=Mp.dtype, device=Mp.device)[:, :, None, None].expand(2, 2, Mp.shape[2], 1)
    powers = torch.cat([eye, Mp], -1).permute(2, 3, 0, 1)                       # (P, T+1, 2, 2)
    b = sys.f.T                                                                 # (P, 2)
    c = torch.tensor([0.0, 1.0], dtype=b.dtype, device=b.device).expand_as(b)   # read the position
    tab = block_tables(powers.to(dtype), b.to(dtype), c.to(dtype), r)
    tab = tab._replace(pow_T=powers[:, T, None], pow_r=powers[:, r, None])     # the carry in float64
    return ChunkTables(*(t.repeat(2, *([1] * (t.dim() - 1))) for t in tab))


def normal_chunk_tables(sys: OscillatorSystem, L: int, dtype: torch.dtype) -> Tuple[ChunkTables, Tensor]:
    r""":func:`chunk_tables` in the blocks' normal basis (:func:`~statespaces.kernels.oscillator.normal_form`), and
    T2 (2, 2P), the (p, q) of each column in the wide precision, to convert states (``x = [[p, q], [0, 1]] x'``).

    Why: rounded to float32 in its own basis, a block far from normal (D-LinOSS near theta = 0 or pi) loses
    accuracy with every chunk that a float32 carry crosses. On a D-LinOSS-IM layer with theta = pi - 4e-4 at
    L = 1000 (``tests/test_mutation_gaps_oscillators.py``), the Triton kernel (float32 carry; interpreter) was
    5.7e-3 off in its own basis and is 3.7e-7 off in this one; with a float64 carry (the CPU's chunked kernel) the
    own basis gives 1.4e-5 and this one 3e-7."""
    Mn, fn, T = normal_form(sys.M, sys.f)
    # M^l = s_l M - r^2 s_{l-1} I is linear in M, so the closed-form powers of the normal-form blocks M' = T^-1 M T
    # are those of M in the new basis: the same cost, no product with T per power
    return chunk_tables(sys._replace(M=Mn, f=fn), L, dtype), T.repeat(1, 2)


def normal_forcing(sys: OscillatorSystem, v: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    r"""The blocks in their normal form (:func:`~statespaces.kernels.oscillator.normal_form`, formed in the wide
    precision, then rounded to v's dtype) and the forcing of the projected input v (B, L, 2P) in that basis, for the
    scan and the loop over the 2P real columns ([Re; Im] halves share a block): ``(M2 (2, 2, 2P), F (B, L, 2, 2P),
    T2 (2, 2P))``, T2 = (p, q) per column in the wide precision (``x = [[p, q], [0, 1]] x'``, thesis Lemma 3.3)."""
    Mn, fn, T = normal_form(sys.M, sys.f)
    M, f = Mn.to(v.dtype), fn.to(v.dtype)
    M2 = torch.cat([M, M], -1)                                      # same real transition for Re and Im
    F = torch.stack([f[0].repeat(2) * v, f[1].repeat(2) * v], -2)   # (B, L, 2, 2P)
    return M2, F, T.repeat(1, 2)


def state_to_normal(x0: Optional[Tensor], T2: Tensor, dtype: torch.dtype) -> Optional[Tensor]:
    """A real state (B, 2, 2P) into the blocks' normal basis (T2 (2, 2P) of :func:`normal_forcing` /
    :func:`normal_chunk_tables`), converted in T2's wide precision and rounded once to ``dtype``; None stays None."""
    return None if x0 is None else to_normal_basis(x0.to(T2.dtype), T2).to(dtype)


def state_from_normal(x: Tensor, T2: Tensor, dtype: torch.dtype) -> Tensor:
    """The inverse of :func:`state_to_normal`: a real state (B, 2, 2P) back into the (velocity, position) layout."""
    return from_normal_basis(x.to(T2.dtype), T2).to(dtype)


def column_state(x0: Optional[Tensor]) -> Optional[Tensor]:
    """Real state (B, 2, 2P) -> the (B, 2P, 2) (velocity, position) pairs of the chunked columns (None stays None)."""
    return None if x0 is None else x0.transpose(1, 2).reshape(x0.shape[0], -1, 2)
