"""Baseline models the thesis compares SSMs against (reproduction claims, benchmarks).

* :class:`LegSRNN`: the HiPPO-LegS RNN of §4.4 (frozen LegS memory + a gated cell) with a linear head,
  built on :class:`statespaces.hippo.HiPPORNN`;
* :class:`GatedRNNClassifier`: an LSTM or GRU classifier;
* :class:`ConvClassifier`: a 1-D CNN classifier (Table 7.3);
* :class:`NaiveSSM`: an SSM with a dense ``dA`` and an explicit Krylov kernel (Table 7.8);
* :class:`LinearSSM`: encoder, one SSM layer, decoder, no nonlinearity (§7.5.8 synthetic tasks).
"""
from __future__ import annotations

from typing import Optional, cast

import torch
from torch import nn

from .._checks import check_choice
from ..blocks import length_mask
from ..hippo import HiPPORNN
from ..ops import fftconv

Tensor = torch.Tensor


class LegSRNN(nn.Module):
    r"""HiPPO-LegS RNN classifier (thesis §4.4, Remark 4.8): the library's :class:`~statespaces.hippo.HiPPORNN`
    (gated cell, frozen scale-invariant LegS memory, bilinear) + a linear head.

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
    """

    def __init__(self, d_input: int, n_classes: int, hidden: int = 256, order: int = 32, memory: int = 1) -> None:
        super().__init__()
        self.rnn = HiPPORNN(d_input, hidden, memory="legs", order=order, channels=memory)
        self.head = nn.Linear(hidden + memory * order, n_classes)

    def forward(self, x: Tensor, lengths: Optional[Tensor] = None) -> Tensor:
        _, state = self.rnn(x, lengths=lengths, return_state=True)
        return self.head(torch.cat([state.h, state.c.flatten(1)], -1))


class GatedRNNClassifier(nn.Module):
    """LSTM or GRU baseline: one layer, final hidden state of each (packed) sequence -> linear head."""

    def __init__(self, kind: str, d_input: int, n_classes: int, hidden: int = 256) -> None:
        super().__init__()
        self.rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[check_choice("kind", kind, ("lstm", "gru"))](
            d_input, hidden, batch_first=True)
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, x: Tensor, lengths: Optional[Tensor] = None) -> Tensor:
        length_mask(lengths, x.shape[0], x.shape[1], x.device)       # validates: integers in [1, L], one per series
        lengths = torch.full((x.shape[0],), x.shape[1]) if lengths is None else lengths
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, state = self.rnn(packed)
        h = state[0] if isinstance(state, tuple) else state
        return self.head(h[-1])


class ConvClassifier(nn.Module):
    """1-D CNN baseline (the CNNs of Table 7.3): ``depth`` conv(k=9) + GELU blocks of width H on one
    input channel, mean pooling over time, linear head to 10 classes; (B, L, 1) -> (B, 10). ``rate`` is
    accepted and ignored (a CNN has no notion of sampling rate). With ``lengths`` (B,) the padded steps are
    zeroed after every block and left out of the mean, so a padded series gives what it gives alone."""

    def __init__(self, H: int, depth: int) -> None:
        super().__init__()
        layers = [nn.Conv1d(1, H, 9, padding=4), nn.GELU()]
        for _ in range(depth - 1):
            layers += [nn.Conv1d(H, H, 9, padding=4), nn.GELU()]
        self.net = nn.Sequential(*layers)
        self.head = nn.Linear(H, 10)

    def forward(self, x, lengths=None, rate: float = 1.0) -> Tensor:
        mask = length_mask(lengths, x.shape[0], x.shape[1], x.device)
        h = x.transpose(1, 2)
        if mask is None:
            return self.head(self.net(h).mean(-1))
        keep = mask[:, None, :].to(h.dtype)                            # (B, 1, L)
        h = h * keep
        for module in self.net:
            h = module(h)
            if isinstance(module, nn.GELU):                            # the end of a block: padding back to zero
                h = h * keep
        return self.head(h.sum(-1) / keep.sum(-1))


class NaiveSSM(nn.Module):
    """H independent SISO SSMs with dense discrete ``dA`` (H, N, N), ``dB``, ``C`` (H, N) and D (H,).

    The kernel ``K_l = C dA^l dB`` is computed from the materialized Krylov matrix, then applied by
    FFT convolution like every other layer. ``dA`` is i.i.d. normal with variance 0.9^2 / N, so its
    spectral radius tends to 0.9 as N grows (circular law; no eigendecomposition at init). At small N it
    scatters above 1, and those channels' kernels grow (seed 0, 64 channels: N = 8, 23 channels above 1, up to
    1.58; N = 64, 7 channels, up to 1.08; N = 256, none): use N >= 128, as claim A6 does."""

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
        H = cast(int, layer.d_model)     # any SSM layer module: d_model is a plain int attribute
        self.enc = nn.Linear(1, H)
        self.layer = layer
        self.dec = nn.Linear(H, 1)
        self.rate = rate

    def forward(self, u: Tensor) -> Tensor:
        return self.dec(self.layer(self.enc(u.unsqueeze(-1)), rate=self.rate)).squeeze(-1)
