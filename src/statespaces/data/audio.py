r"""8-bit waveform data for autoregressive audio models (SaShiMi setting, thesis ch. 8, Table 8.1).

* :func:`mulaw_encode` / :func:`mulaw_decode`: 8-bit mu-law companding (mu = 255), the
  quantization of YouTubeMix and SC09 (H.2.1); :func:`linear_encode` / :func:`linear_decode` for
  the 8-bit linear quantization of Beethoven.
* No real audio dataset is available offline here (Speech Commands / SC09 / YouTubeMix / Beethoven
  are not shipped by any installable package), so :func:`synth_piano` **synthesizes** a piano-like
  signal (random notes of a pentatonic scale, harmonics with exponential decay, a little noise).
  It is a stand-in to exercise the pipeline, not a benchmark. :func:`load_wav` reads a real
  16-bit PCM WAV file (standard library ``wave``) if you have one.
* :func:`audio_splits` cuts a signal in time into train/valid/test chunks of mu-law tokens
  (88/6/6 like YouTubeMix).
"""
from __future__ import annotations

import math
import wave
from pathlib import Path
from typing import Dict, Union

import numpy as np
import torch

Tensor = torch.Tensor

#: 8 bits -> 256 levels.
N_LEVELS = 256


def _check_bits(bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 16:
        raise ValueError(f"bits must be an integer in [1, 16], got {bits!r}")
    return bits


def mulaw_encode(x: Tensor, bits: int = 8) -> Tensor:
    r"""Waveform in [-1, 1] (any shape, float) -> int64 codes in ``[0, 2^bits)``.

    ``y = sign(x) log(1 + mu |x|) / log(1 + mu)`` with ``mu = 2^bits - 1``, then uniform rounding of
    y to ``2^bits`` levels. Values outside [-1, 1] are clipped.
    """
    mu = 2 ** _check_bits(bits) - 1
    x = _waveform(x, "mulaw_encode")
    y = torch.sign(x) * torch.log1p(mu * x.abs()) / math.log1p(mu)
    return torch.floor((y + 1) / 2 * mu + 0.5).long()


def mulaw_decode(q: Tensor, bits: int = 8, dtype: torch.dtype = torch.float32) -> Tensor:
    """Codes in ``[0, 2^bits)`` -> waveform in [-1, 1] (inverse of :func:`mulaw_encode` up to rounding)."""
    mu = 2 ** _check_bits(bits) - 1
    q = torch.as_tensor(q)
    if q.is_floating_point() or q.is_complex():
        raise TypeError(f"mulaw_decode expects integer codes, got dtype {q.dtype}")
    if q.numel() and (int(q.min()) < 0 or int(q.max()) > mu):
        raise ValueError(f"codes must lie in [0, {mu}], got range [{int(q.min())}, {int(q.max())}]")
    y = 2 * q.to(torch.float64) / mu - 1
    x = torch.sign(y) * ((1 + mu) ** y.abs() - 1) / mu
    return x.to(dtype)


def linear_encode(x: Tensor, bits: int = 8) -> Tensor:
    """Uniform quantization of [-1, 1] to ``2^bits`` codes (Beethoven, Table 8.1)."""
    n = 2 ** _check_bits(bits) - 1
    x = _waveform(x, "linear_encode")
    return torch.floor((x + 1) / 2 * n + 0.5).long()


def _waveform(x: Tensor, who: str) -> Tensor:
    """A float waveform as float64, clipped to [-1, 1]; NaN refused (it became the code -2^63, found only later as a
    token out of range), integers refused (a waveform is float; linear_encode took them silently)."""
    x = torch.as_tensor(x)
    if not x.is_floating_point():
        raise TypeError(f"{who} expects a float waveform in [-1, 1], got dtype {x.dtype}")
    if x.numel() and bool(torch.isnan(x).any()):
        raise ValueError(f"{who}: the waveform holds {int(torch.isnan(x).sum())} NaN samples; clean them first")
    return x.to(torch.float64).clamp(-1.0, 1.0)


def linear_decode(q: Tensor, bits: int = 8, dtype: torch.dtype = torch.float32) -> Tensor:
    n = 2 ** _check_bits(bits) - 1
    return (2 * torch.as_tensor(q).to(torch.float64) / n - 1).to(dtype)


def synth_piano(seconds: float = 10.0, sample_rate: int = 8000, seed: int = 0) -> np.ndarray:
    """A synthetic piano-like waveform (float32 in [-1, 1], shape (seconds * sample_rate,)).

    Notes of random length (1/8 - 1/2 s) drawn from a pentatonic scale over two octaves, each with
    4 harmonics and an exponential decay, occasionally two at once, plus -40 dB noise.
    Deterministic given ``seed``. **Synthetic**: a stand-in for real music such as YouTubeMix.
    """
    if not seconds > 0 or sample_rate < 100:
        raise ValueError("seconds must be > 0 and sample_rate >= 100")
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate)
    out = np.zeros(n)
    scale = np.array([0, 2, 4, 7, 9])
    t0 = 0
    while t0 < n:
        dur = int(rng.choice([0.125, 0.25, 0.25, 0.5]) * sample_rate)
        for _ in range(1 + int(rng.random() < 0.3)):
            midi = 57 + scale[rng.integers(5)] + 12 * rng.integers(2)
            f = 440.0 * 2 ** ((midi - 69) / 12)
            t = np.arange(min(2 * dur, n - t0)) / sample_rate
            env = np.exp(-t * rng.uniform(3, 8)) * np.minimum(1, t * 200)
            tone = sum((0.6 ** k) * np.sin(2 * np.pi * (k + 1) * f * t) for k in range(4))
            out[t0:t0 + len(t)] += 0.35 * env * tone
        t0 += dur
    out += 0.01 * rng.standard_normal(n)
    return (out / max(1.0, np.abs(out).max())).astype(np.float32)


def load_wav(path: Union[str, Path]) -> tuple:
    """Read a PCM WAV (8/16/32-bit integer, any channels) -> (mono float32 in [-1, 1], sample_rate)."""
    with wave.open(str(path), "rb") as w:
        width, ch, sr, n = w.getsampwidth(), w.getnchannels(), w.getframerate(), w.getnframes()
        raw = w.readframes(n)
    if width == 1:
        x = (np.frombuffer(raw, np.uint8).astype(np.float64) - 128) / 128
    elif width in (2, 4):
        x = np.frombuffer(raw, np.int16 if width == 2 else np.int32).astype(np.float64) / (2 ** (8 * width - 1))
    else:
        raise ValueError(f"unsupported sample width {width} bytes")
    return x.reshape(-1, ch).mean(1).astype(np.float32), sr


def audio_splits(
    signal: np.ndarray,
    chunk: int,
    fractions=(0.88, 0.06, 0.06),
    bits: int = 8,
    encoding: str = "mulaw",
) -> Dict[str, Tensor]:
    """Cut a waveform in time into train/valid/test parts, each as non-overlapping chunks of codes.

    Returns ``{"train": (N_tr, chunk), "valid": (N_va, chunk), "test": (N_te, chunk)}`` int64 tensors
    (a part too short for one chunk gives an empty (0, chunk) tensor).
    """
    if encoding not in ("mulaw", "linear"):
        raise ValueError(f"unknown encoding {encoding!r}; valid: mulaw, linear")
    fr = tuple(fractions) if isinstance(fractions, (tuple, list)) else ()
    if len(fr) != 3 or any(isinstance(f, bool) or not isinstance(f, (int, float)) or f < 0 for f in fr) \
            or sum(fr) > 1 + 1e-9:
        raise ValueError(f"fractions must be three numbers >= 0 (train, valid, test) summing to at most 1, got "
                         f"{fractions!r}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer (samples per chunk), got {chunk!r}")
    enc = mulaw_encode if encoding == "mulaw" else linear_encode
    codes = enc(torch.as_tensor(np.asarray(signal, dtype=np.float64)), bits)
    n = len(codes)
    bounds = np.cumsum([0] + [int(f * n) for f in fractions])
    out = {}
    for k, name in enumerate(("train", "valid", "test")):
        part = codes[bounds[k]:bounds[k + 1]]
        m = len(part) // chunk
        out[name] = part[: m * chunk].reshape(m, chunk)
    return out
