"""8-bit audio for SaShiMi (statespaces.data.audio): mu-law round trip, synthetic signal, a tiny LM step."""
import numpy as np
import pytest
import torch

from statespaces.data.audio import (
    audio_splits, linear_decode, linear_encode, mulaw_decode, mulaw_encode, synth_piano,
)
from statespaces.models.lm import SSMLanguageModel


pytestmark = pytest.mark.usefixtures("one_thread")


def test_mulaw_codes_round_trip_exactly():
    q = torch.arange(256)
    assert torch.equal(mulaw_encode(mulaw_decode(q, dtype=torch.float64)), q)
    assert torch.equal(linear_encode(linear_decode(q, dtype=torch.float64)), q)


def test_mulaw_waveform_round_trip():
    x = torch.linspace(-1, 1, 20001, dtype=torch.float64)
    q = mulaw_encode(x)
    assert q.min() == 0 and q.max() == 255 and bool((q.diff() >= 0).all())
    err = (mulaw_decode(q, dtype=torch.float64) - x).abs()
    assert err.max() < 0.022                                 # half the widest step (near |x| = 1)
    small = x.abs() < 0.01
    assert err[small].max() < 3e-4                           # fine resolution near zero (0 itself is between codes)
    assert mulaw_encode(torch.tensor([0.0])).item() == 128 and mulaw_encode(torch.tensor([5.0])).item() == 255


def test_mulaw_errors():
    with pytest.raises(ValueError):
        mulaw_decode(torch.tensor([256]))
    with pytest.raises(TypeError):
        mulaw_encode(torch.tensor([1, 2]))
    with pytest.raises(ValueError):
        mulaw_encode(torch.tensor([0.1]), bits=0)


def test_synthetic_audio_and_splits():
    s = synth_piano(1.0, 8000, seed=3)
    assert s.shape == (8000,) and s.dtype == np.float32 and np.abs(s).max() <= 1
    np.testing.assert_array_equal(s, synth_piano(1.0, 8000, seed=3))
    d = audio_splits(synth_piano(4.0, 8000), 256)
    assert d["train"].shape == (110, 256) and d["valid"].shape == (7, 256) and d["test"].shape == (7, 256)


def test_tiny_sashimi_on_mulaw_audio():
    torch.manual_seed(0)
    x = audio_splits(synth_piano(2.0, 4000), 64)["train"][:8]
    m = SSMLanguageModel(256, d_model=16, n_layers=1, backbone="sashimi", backbone_kwargs=dict(pool=(4,)),
                         layer=dict(kind="s4d", d_state=8))
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(10):
        loss = m.loss(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(np.log(256), rel=0.15) and losses[-1] < losses[0] - 0.5
    out = m.generate(x[:2, :8], 12, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 12) and mulaw_decode(out).abs().max() <= 1
