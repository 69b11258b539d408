"""Baseline models the thesis compares SSMs against (reproduction claims, benchmarks).

* :class:`LegSRNN`: the HiPPO-LegS RNN of §4.4 (frozen LegS memory + a gated cell), with
  :func:`legs_lsi_steps`, its per-step transitions;
* :class:`GatedRNNClassifier`: an LSTM or GRU classifier;
* :class:`ConvClassifier`: a 1-D CNN classifier (Table 7.3);
* :class:`NaiveSSM`: an SSM with a dense ``dA`` and an explicit Krylov kernel (Table 7.8);
* :class:`LinearSSM`: encoder, one SSM layer, decoder, no nonlinearity (§7.5.8 synthetic tasks).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from ..hippo.legs_fast import legs_gbt_coefficients, legs_step_fast
from ..ops import fftconv

Tensor = torch.Tensor


def legs_lsi_steps(N: int, steps: int, alpha: float = 0.5) -> Tuple[Tensor, Tensor]:
    """Dense per-step LegS transitions of the scale-invariant ODE ``c' = (A c + B f)/t``.

    Step k (1-based, k < ``steps``) goes from ``t = k`` to ``t = k + 1`` with the GBT rule ``alpha``:
    ``c_k = T_k c_{k-1} + b_k f_k``. Returns ``T`` (steps - 1, N, N) and ``b`` (steps - 1, N), float64,
    obtained by applying the library's O(N) step to the identity and to a unit input.
    """
    eye = torch.eye(N, dtype=torch.float64)
    T, b = [], []
    for k in range(1, steps):
        a_, b_, g_ = legs_gbt_coefficients(float(k), float(k + 1), alpha)
        T.append(legs_step_fast(eye, torch.zeros(N, dtype=torch.float64), a_, b_, g_).T)
        b.append(legs_step_fast(torch.zeros(1, N, dtype=torch.float64), torch.ones(1, dtype=torch.float64),
                                a_, b_, g_)[0])
    return torch.stack(T), torch.stack(b)


class LegSRNN(nn.Module):
    r"""HiPPO-LegS RNN classifier (thesis §4.4, Remark 4.8): frozen LegS memory + trainable gated cell.

    Per step k, with ``z_k = [x_k, vec(c_{k-1}), h_{k-1}]``::

        g = sigmoid(W_g z_k),  h_k = (1 - g) h_{k-1} + g tanh(W_h z_k),  f_k = W_f h_k  (m channels)
        c_0 = f_0 e_0 (a constant's projection),  c_k = T_k c_{k-1} + b_k f_k   (k >= 1, t_k = k + 1)

    The logits read ``[h_K, vec(c_K)]`` at each sequence's last valid step K.

    Args:
        d_input: data size: input channels per step.
        n_classes: data size: number of classes.
        hidden: width of h.
        order: LegS order N.
        memory: channels m.
        max_len: longest sequence (the transitions are precomputed up to it).
    """

    def __init__(self, d_input: int, n_classes: int, hidden: int = 256, order: int = 32, memory: int = 1,
                 max_len: int = 256) -> None:
        super().__init__()
        self.hidden, self.order, self.memory = hidden, order, memory
        T, b = legs_lsi_steps(order, max_len)
        self.register_buffer("T", T.to(torch.get_default_dtype()), persistent=False)
        self.register_buffer("b", b.to(torch.get_default_dtype()), persistent=False)
        z = d_input + memory * order + hidden
        self.cell = nn.Linear(z, 2 * hidden)
        self.write = nn.Linear(hidden, memory)
        self.head = nn.Linear(hidden + memory * order, n_classes)

    def forward(self, x: Tensor, lengths: Optional[Tensor] = None) -> Tensor:
        Bsz, L, _ = x.shape
        if L > self.T.shape[0] + 1:
            raise ValueError(f"sequence length {L} exceeds max_len={self.T.shape[0] + 1}")
        lengths = torch.full((Bsz,), L) if lengths is None else lengths
        h = x.new_zeros(Bsz, self.hidden)
        c = x.new_zeros(Bsz, self.memory, self.order)
        e0 = torch.zeros(self.order, dtype=x.dtype)
        e0[0] = 1.0
        for k in range(L):
            gate, cand = self.cell(torch.cat([x[:, k], c.flatten(1), h], -1)).chunk(2, -1)
            g = torch.sigmoid(gate)
            h_new = (1 - g) * h + g * torch.tanh(cand)
            f = self.write(h_new).unsqueeze(-1)                       # (B, m, 1)
            c_new = f * e0 if k == 0 else c @ self.T[k - 1].T + f * self.b[k - 1]
            live = (k < lengths).unsqueeze(-1)
            h = torch.where(live, h_new, h)
            c = torch.where(live.unsqueeze(-1), c_new, c)
        return self.head(torch.cat([h, c.flatten(1)], -1))


class GatedRNNClassifier(nn.Module):
    """LSTM or GRU baseline: one layer, final hidden state of each (packed) sequence -> linear head."""

    def __init__(self, kind: str, d_input: int, n_classes: int, hidden: int = 256) -> None:
        super().__init__()
        self.rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[kind](d_input, hidden, batch_first=True)
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, x: Tensor, lengths: Optional[Tensor] = None) -> Tensor:
        lengths = torch.full((x.shape[0],), x.shape[1]) if lengths is None else lengths
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, state = self.rnn(packed)
        h = state[0] if isinstance(state, tuple) else state
        return self.head(h[-1])


class ConvClassifier(nn.Module):
    """1-D CNN baseline (the CNNs of Table 7.3): ``depth`` conv(k=9) + GELU blocks of width H on one
    input channel, mean pooling over time, linear head to 10 classes; (B, L, 1) -> (B, 10). ``rate`` is
    accepted and ignored (a CNN has no notion of sampling rate)."""

    def __init__(self, H: int, depth: int) -> None:
        super().__init__()
        layers = [nn.Conv1d(1, H, 9, padding=4), nn.GELU()]
        for _ in range(depth - 1):
            layers += [nn.Conv1d(H, H, 9, padding=4), nn.GELU()]
        self.net = nn.Sequential(*layers)
        self.head = nn.Linear(H, 10)

    def forward(self, x, lengths=None, rate: float = 1.0):
        return self.head(self.net(x.transpose(1, 2)).mean(-1))


class NaiveSSM(nn.Module):
    """H independent SISO SSMs with dense discrete ``dA`` (H, N, N), ``dB``, ``C`` (H, N) and D (H,).

    The kernel ``K_l = C dA^l dB`` is computed from the materialized Krylov matrix, then applied by
    FFT convolution like every other layer. ``dA`` is i.i.d. normal with variance 0.9^2 / N, so its
    spectral radius is about 0.9 (circular law; no eigendecomposition at init)."""

    def __init__(self, d_model: int, d_state: int, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        H, N = d_model, d_state
        self.dA = nn.Parameter(0.9 * torch.randn(H, N, N, generator=g) / N ** 0.5)
        self.dB = nn.Parameter(torch.randn(H, N, generator=g))
        self.C = nn.Parameter(torch.randn(H, N, generator=g) / N ** 0.5)
        self.D = nn.Parameter(torch.randn(H, generator=g))

    def krylov(self, L: int) -> Tensor:
        """``[dB, dA dB, ..., dA^{L-1} dB]``, shape (H, N, L), one batched mat-vec per column."""
        x = self.dB.unsqueeze(-1)
        cols = [x]
        for _ in range(L - 1):
            x = torch.bmm(self.dA, x)
            cols.append(x)
        return torch.cat(cols, -1)

    def forward(self, u: Tensor) -> Tensor:
        K = torch.einsum("hn,hnl->hl", self.C, self.krylov(u.shape[1]))
        return fftconv(u, K) + u * self.D


class LinearSSM(nn.Module):
    """Linear encoder (1 -> H), one SSM layer, linear decoder (H -> 1); no nonlinearity (§7.5.8)."""

    def __init__(self, layer: nn.Module, rate: float) -> None:
        super().__init__()
        self.enc = nn.Linear(1, layer.d_model)
        self.layer = layer
        self.dec = nn.Linear(layer.d_model, 1)
        self.rate = rate

    def forward(self, u: Tensor) -> Tensor:
        return self.dec(self.layer(self.enc(u.unsqueeze(-1)), rate=self.rate)).squeeze(-1)
