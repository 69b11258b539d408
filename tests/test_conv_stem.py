"""The classifier's convolutional stem (``SequenceClassifier(stem=K, stem_dilations=...)``, issue 18).

Independent routes: each output channel of the stem equals an explicit sum over taps written with
plain indexing; padding never reaches a valid output (the sequence run alone, unpadded); the config
and checkpoint carry the stem; bad settings are refused with messages naming them.
"""
from __future__ import annotations

import pytest
import torch

from statespaces.models import SequenceClassifier
from statespaces.models.classifier import ConvStem
from statespaces.train.config import ConfigError, TrainConfig

F64 = torch.float64


def _explicit_stem(stem: ConvStem, x: torch.Tensor) -> torch.Tensor:
    """GELU(sum_j w[o, i, j] x[t + d (j - K//2), i] + b[o]) with zeros outside [0, L), by loops."""
    B, L, _ = x.shape
    K = stem.kernel
    outs = []
    for conv, d in zip(stem.convs, stem.dilations):
        w, b = conv.weight, conv.bias            # (O, I, K), (O,)
        y = b.expand(B, L, -1).clone()
        for j in range(K):
            shift = d * (j - K // 2)
            src = torch.zeros_like(x)
            lo, hi = max(0, -shift), min(L, L - shift)
            if hi > lo:
                src[:, lo:hi] = x[:, lo + shift:hi + shift]
            y = y + src @ w[:, :, j].T
        outs.append(y)
    return torch.nn.functional.gelu(torch.cat(outs, -1))


@pytest.mark.parametrize("kernel,dilations", [(1, (1,)), (3, (1,)), (9, (1, 2, 4, 8)), (5, (3, 1))])
def test_stem_equals_explicit_taps(kernel, dilations):
    torch.manual_seed(0)
    stem = ConvStem(3, 8, kernel, dilations).to(F64)
    x = torch.randn(2, 37, 3, dtype=F64)
    torch.testing.assert_close(stem(x), _explicit_stem(stem, x), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_stem_classifier_ignores_padding(bidirectional):
    torch.manual_seed(1)
    model = SequenceClassifier(2, 4, d_model=8, n_layers=2, stem=5, stem_dilations=(1, 4),
                               layer={"kind": "s4d", "d_state": 8, "bidirectional": bidirectional,
                                      "dt_min": 0.05, "dt_max": 0.5}).to(F64).eval()
    lengths = torch.tensor([30, 11, 4])
    x = torch.randn(3, 30, 2, dtype=F64)
    garbage = x.clone()
    for b, n in enumerate(lengths.tolist()):
        garbage[b, n:] = 100 * torch.randn(30 - n, 2, dtype=F64)
    batched = model(garbage, lengths)
    alone = torch.cat([model(x[b:b + 1, :n]) for b, n in enumerate(lengths.tolist())])
    torch.testing.assert_close(batched, alone, atol=1e-9, rtol=1e-9)


def test_stem_trains_saves_and_loads(tmp_path):
    torch.manual_seed(2)
    model = SequenceClassifier(1, 3, d_model=8, n_layers=1, stem=3, stem_dilations=(1, 2))
    x, y = torch.randn(4, 20, 1), torch.tensor([0, 1, 2, 0])
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    assert all(c.weight.grad is not None and c.weight.grad.abs().sum() > 0 for c in model.encoder.convs)
    model.save_pretrained(tmp_path / "m")
    again = SequenceClassifier.from_pretrained(tmp_path / "m")
    assert isinstance(again.encoder, ConvStem) and again.encoder.dilations == (1, 2)
    torch.testing.assert_close(again(x), model(x))


def test_stem_config_round_trip_and_refusals():
    cfg = TrainConfig.from_dict({"model": {"stem": 9, "stem_dilations": [1, 2, 4, 8]}})
    assert cfg.model.stem == 9 and tuple(cfg.model.stem_dilations) == (1, 2, 4, 8)
    for bad in ({"stem": -1}, {"stem": 1.5}, {"stem_dilations": [0, 1]}):
        with pytest.raises(ConfigError, match="model.stem"):
            TrainConfig.from_dict({"model": bad})
    with pytest.raises(ValueError, match="odd"):
        SequenceClassifier(1, 2, stem=4)
    with pytest.raises(ValueError, match="split evenly"):
        SequenceClassifier(1, 2, d_model=10, stem=3, stem_dilations=(1, 2, 4))
    with pytest.raises(ValueError, match="regular grid"):
        SequenceClassifier(1, 2, d_model=8, n_layers=1, stem=3)(torch.randn(1, 5, 1), dt=torch.ones(1, 5))
