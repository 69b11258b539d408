"""Train-time augmentation of series (issue 18 item 2; ``statespaces.data.augment``) and max pooling:
each transform against its definition computed another way, padding untouched, the draws a function
of (seed, step) so that resume is exact, and bad settings refused with the key named."""
import math

import pytest
import torch

from statespaces.data.augment import SeriesAugment
from statespaces.models import SequenceClassifier
from statespaces.train.config import ConfigError, DataConfig, build_config


def _ramp(B=5, L=40, C=2):
    """x[b, t, c] = t + 100 c: a crop-and-stretch of a ramp is again a ramp (an affine map of t)."""
    t = torch.arange(L, dtype=torch.float64)[None, :, None]
    return (t + 100 * torch.arange(C, dtype=torch.float64)[None, None, :]).expand(B, L, C).clone()


def test_off_is_the_identity_and_on_is_seeded_by_step():
    x = torch.randn(3, 16, 2)
    y, n = SeriesAugment()(x, None, 5)
    assert y is x and n is None and not SeriesAugment().active
    aug = SeriesAugment(crop=0.8, scale=0.2, jitter=0.1, seed=3)
    torch.testing.assert_close(aug(x, None, 7), aug(x, None, 7), atol=0, rtol=0)
    assert not torch.equal(aug(x, None, 7)[0], aug(x, None, 8)[0])
    assert not torch.equal(aug(x, None, 7)[0], SeriesAugment(crop=0.8, scale=0.2, jitter=0.1, seed=4)(x, None, 7)[0])


def test_crop_is_a_window_of_each_series_own_valid_steps_moved_to_the_start():
    """On a ramp x[b, t] = t, the cropped series must read s, s + 1, ..., s + w - 1 for one offset
    s >= 0 with s + w <= n, w = ceil(crop n) its new length, zeros after it."""
    x = _ramp()
    lengths = torch.tensor([40, 31, 17, 2, 1])
    crop = 0.7
    y, new = SeriesAugment(crop=crop, seed=1)(x, lengths, 0)
    for b, n in enumerate(lengths.tolist()):
        w = max(1, math.ceil(crop * n))
        assert new[b].item() == w
        s = y[b, 0, 0].item()
        assert s == int(s) and 0 <= s and s + w <= n
        expect = s + torch.arange(w, dtype=torch.float64)
        torch.testing.assert_close(y[b, :w, 0], expect, atol=0, rtol=0)
        torch.testing.assert_close(y[b, :w, 1], expect + 100, atol=0, rtol=0)
        assert torch.equal(y[b, w:], torch.zeros_like(y[b, w:]))
    y, new = SeriesAugment(crop=crop, seed=1)(x, None, 0)        # no lengths: all 40 steps valid
    assert new.tolist() == [28] * 5


def test_offsets_cover_the_whole_range():
    """Over many steps every allowed window offset 0 .. n - w is drawn (no offset is unreachable)."""
    x, n, crop = _ramp(B=1, L=10, C=1), 10, 0.7
    aug = SeriesAugment(crop=crop, seed=0)
    starts = {int(aug(x, None, step)[0][0, 0, 0].item()) for step in range(200)}
    assert starts == set(range(0, n - 7 + 1))


def test_roll_is_a_circular_shift_within_each_series_own_valid_steps():
    """Each rolled series equals torch.roll of its valid steps by some shift in [0, n) (found by
    search, not by the sampler's formula), on every channel alike; padding is untouched; p = 0.5
    leaves about half the series as they were; over many steps every shift is drawn."""
    x = torch.randn(6, 12, 3, dtype=torch.float64)
    lengths = torch.tensor([12, 9, 5, 2, 1, 7])
    y, new = SeriesAugment(roll=1.0, seed=2)(x, lengths, 0)
    assert new is lengths
    for b, n in enumerate(lengths.tolist()):
        shifts = [k for k in range(n) if torch.equal(y[b, :n], torch.roll(x[b, :n], -k, dims=0))]
        assert shifts, f"series {b} is not a circular shift of itself"
        assert torch.equal(y[b, n:], x[b, n:])
    xs = torch.randn(400, 8, 1, dtype=torch.float64)
    same = (SeriesAugment(roll=0.5, seed=0)(xs, None, 3)[0] == xs).all(dim=(1, 2)).double().mean().item()
    assert 0.5 <= same <= 0.5 + 1 / 8 + 0.1      # half kept, plus the rolled ones that drew shift 0
    ramp = _ramp(B=1, L=6, C=1)
    aug = SeriesAugment(roll=1.0, seed=0)
    assert {int(aug(ramp, None, step)[0][0, 0, 0].item()) for step in range(200)} == set(range(6))


def test_the_clock_channel_passes_through_every_transform():
    """keep_channels=1 (data.time_channel): channel 0 is the shared grid before and after a roll,
    scaling and jitter, and the grid cut to the window after a crop, while channel 1 moves."""
    L = 20
    clock = torch.arange(L, dtype=torch.float64) / (L - 1)
    lengths = torch.tensor([20, 13, 4])
    x = torch.stack([clock.expand(3, L) * (torch.arange(L)[None] < lengths[:, None]),
                     torch.randn(3, L, dtype=torch.float64)], dim=-1)
    for aug in (SeriesAugment(roll=1.0, scale=0.3, jitter=0.1, seed=1, keep_channels=1),
                SeriesAugment(roll=1.0, crop=0.5, seed=1, keep_channels=1)):
        y, new = aug(x, lengths, 4)
        n = new if new is not None else lengths
        for b in range(3):
            m = int(n[b])
            torch.testing.assert_close(y[b, :m, 0], clock[:m], atol=0, rtol=0)
            assert torch.equal(y[b, m:, 0], torch.zeros(L - m, dtype=torch.float64))
        assert not torch.equal(y[..., 1], x[..., 1])
    with pytest.raises(ValueError, match="keep_channels"):
        SeriesAugment(keep_channels=-1)


def test_scale_multiplies_each_series_by_one_factor_and_jitter_adds_noise_of_the_given_size():
    x = torch.rand(64, 50, 3, dtype=torch.float64) + 1.0
    lengths = torch.randint(1, 51, (64,))
    valid = torch.arange(50)[None, :] < lengths[:, None]
    y, same = SeriesAugment(scale=0.3, seed=2)(x, lengths, 11)
    assert same is lengths
    ratio = y / x
    for b, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(ratio[b, :n], ratio[b, :1].expand(n, 3), atol=1e-12, rtol=0)
        torch.testing.assert_close(y[b, n:], x[b, n:], atol=0, rtol=0)
    factors = ratio[:, 0, 0]
    assert 0.2 < factors.std().item() < 0.4 and abs(factors.mean().item() - 1) < 0.1
    z = SeriesAugment(jitter=0.05, seed=2)(x, lengths, 11)[0] - x
    assert torch.equal(z[~valid], torch.zeros_like(z[~valid]))
    assert 0.045 < z[valid].std().item() < 0.055


def test_bad_settings_are_refused_with_the_key_named():
    for spec, match in (({"crop": 0}, "crop=0"), ({"crop": 1.5}, "crop=1.5"), ({"scale": -1}, "scale=-1"),
                        ({"jitter": float("nan")}, "jitter=nan"), ({"shift": 1}, "unknown key"),
                        ({"roll": 1.5}, "roll=1.5"), ({"roll": True}, "roll=True")):
        with pytest.raises(ValueError, match=match):
            SeriesAugment.from_spec(spec)
        with pytest.raises(ConfigError, match="data.augment"):
            DataConfig(name="ucr:GunPoint", augment=spec)
    with pytest.raises(ValueError, match="float series"):
        SeriesAugment(jitter=0.1)(torch.zeros(2, 5, dtype=torch.long), None, 0)


def test_augment_is_refused_for_token_data():
    from types import SimpleNamespace

    from statespaces.train.config import build_config
    from statespaces.train.loop import _augmentation

    cfg = build_config("listops-s4d", overrides=[("data.augment", '{"jitter": 0.1}')])
    tokens = SimpleNamespace(train=[(torch.zeros(7, dtype=torch.long), 0)])
    with pytest.raises(ConfigError, match="float time series"):
        _augmentation(cfg, tokens)
    series = SimpleNamespace(train=[(torch.zeros(7, 2), 0)])
    assert _augmentation(cfg, series) == SeriesAugment(jitter=0.1, seed=cfg.trainer.seed)
    assert _augmentation(build_config("listops-s4d"), tokens) is None


@pytest.mark.parametrize("pool", ["max", "meanmax"])
def test_max_pools_take_the_valid_steps_only(pool):
    """A padded batch with pool="max" or "meanmax" equals each series run alone (no padding) -- the
    padding, set to a huge value, never wins the maximum -- and the pooled vector is the channel-wise
    max of the final features ("meanmax": [mean, max] side by side, 2H features into the head)."""
    torch.manual_seed(0)
    model = SequenceClassifier(2, 3, d_model=8, n_layers=1, layer={"kind": "s4d", "d_state": 4},
                               pool=pool).double().eval()
    assert model.decoder.in_features == (16 if pool == "meanmax" else 8)
    lengths = torch.tensor([12, 7, 3])
    x = torch.randn(3, 12, 2, dtype=torch.float64)
    x[1, 7:] = 1e6
    x[2, 3:] = 1e6
    out = model(x, lengths)
    for b, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(out[b], model(x[b:b + 1, :n])[0], atol=1e-12, rtol=0)
        h = model.encoder(x[b:b + 1, :n])
        for block in model.blocks:
            h = block(h)
        h = model.final_norm(h)[0]
        pooled = h.amax(0) if pool == "max" else torch.cat([h.mean(0), h.amax(0)])
        torch.testing.assert_close(out[b], model.decoder(pooled), atol=1e-12, rtol=0)
    assert build_config("ucr", overrides=[("model.pool", pool)]).model.pool == pool
    with pytest.raises(ValueError, match="meanmax"):
        SequenceClassifier(2, 3, pool="sum")
