"""Checks for the survivors of a fourth mutation audit over the models, blocks, data loaders, sampler and
serialization (65 mutants; 18 survived, each a behaviour no test looked at). Each test below fails on its mutant."""
import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from statespaces.blocks import DropoutNd, masked_batch_norm
from statespaces.data.listops import load_listops
from statespaces.data.sampler import BucketBatchSampler
from statespaces.data.signals import bandlimited_noise, delay_data
from statespaces.data.trajectories import synthetic_trajectories
from statespaces.models.baselines import NaiveSSM
from statespaces.models.forecast import SSMForecaster
from statespaces.models.image import ImageClassifier
from statespaces.models.lm import SSMLanguageModel
from statespaces.serialization import FORMAT, load_pretrained

F64 = torch.float64


# ---- blocks ---------------------------------------------------------------------------------------------------
def test_masked_batch_norm_refuses_a_single_valid_step():
    """One valid step has no variance: without the check, the running variance turns NaN (n / (n - 1))."""
    bn = nn.BatchNorm1d(2).train()
    mask = torch.zeros(2, 3, dtype=torch.bool)
    mask[0, 0] = True
    with pytest.raises(ValueError, match="more than 1 valid step"):
        masked_batch_norm(bn, torch.randn(2, 3, 2), mask)
    assert torch.isfinite(bn.running_var).all()


@pytest.mark.parametrize("shape", [(4, 10, 8), (3, 5, 6, 8)])
def test_dropout_nd_mask_is_shared_along_length_and_space(shape):
    torch.manual_seed(0)
    y = DropoutNd(0.5).train()(torch.ones(shape))
    first = y[(slice(None),) + (slice(0, 1),) * (len(shape) - 2)]
    assert torch.equal(y, first.expand_as(y))
    assert (y == 0).any() and (y == 2).any()                     # some channels dropped, the rest scaled by 2


# ---- language model: several tokens per step ----------------------------------------------------------------
def test_multi_stream_nll_sums_the_streams():
    torch.manual_seed(0)
    m = SSMLanguageModel(vocab_size=11, d_model=16, n_layers=1, n_streams=4).double().eval()
    x = torch.randint(0, 11, (2, 9, 4))
    total, count = m.nll(x)
    logp = torch.log_softmax(m(x)[:, :-1], -1)                   # (B, L - 1, S, V)
    want = -logp.gather(-1, x[:, 1:, :, None]).sum()
    torch.testing.assert_close(total, want, rtol=1e-12, atol=1e-12)
    assert int(count) == 2 * 8


# ---- forecaster -------------------------------------------------------------------------------------------------
def _forecaster(**kw) -> SSMForecaster:
    torch.manual_seed(0)
    return SSMForecaster(2, horizon=3, d_model=16, n_layers=2, **kw).double().eval()


def test_forecaster_input_is_the_context_then_mask_tokens():
    f = _forecaster()
    c = torch.randn(2, 5, 2, dtype=F64)
    got = f.masked_input(c)
    assert got.shape == (2, 8, 3)
    torch.testing.assert_close(got[:, :5, :2], c, rtol=0, atol=0)
    assert (got[:, 5:, :2] == 0).all()                            # nothing of the context leaks into the tokens
    assert (got[:, :5, 2] == 0).all() and (got[:, 5:, 2] == 1).all()


def test_forecast_is_the_last_horizon_steps_of_the_network_output():
    f = _forecaster()
    c = torch.randn(2, 5, 2, dtype=F64)
    x = torch.cat([torch.cat([c, torch.zeros(2, 3, 2, dtype=F64)], 1),
                   torch.cat([torch.zeros(2, 5, 1, dtype=F64), torch.ones(2, 3, 1, dtype=F64)], 1)], -1)
    want = f.decoder(f.backbone(f.encoder(x)))[:, 5:]
    torch.testing.assert_close(f(c), want, rtol=1e-12, atol=1e-12)
    c2 = c.clone()
    c2[:, 0] += 1.0
    assert not torch.allclose(f(c2), f(c))                         # the forecast reads the whole context


def test_forecaster_keeps_the_users_direction():
    assert _forecaster(layer={"kind": "s4d", "bidirectional": False}).backbone.blocks[0].layer.bidirectional is False
    assert _forecaster(layer="s4d").backbone.blocks[0].layer.bidirectional is True       # the default


# ---- baselines ---------------------------------------------------------------------------------------------------
def test_naive_ssm_impulse_response_is_c_da_power_db():
    m = NaiveSSM(3, 8, seed=0).double()
    L = 10
    u = torch.zeros(1, L, 3, dtype=F64)
    u[0, 0] = 1.0
    with torch.no_grad():
        y = m(u)[0] - m.D * u[0]                                  # (L, H), the kernel itself
        want = torch.stack([torch.einsum("hn,hnm,hm->h", m.C, torch.linalg.matrix_power(m.dA, l), m.dB)
                            for l in range(L)])
    torch.testing.assert_close(y, want, rtol=1e-10, atol=1e-12)


# ---- image model: the user's layer settings win -------------------------------------------------------------
def test_image_classifier_keeps_the_users_layer_settings():
    m = ImageClassifier(d_input=1, n_classes=3, dims=2, d_model=8, n_layers=1, layer={"kind": "s4nd", "conv": "fft"})
    assert m.layer_config.conv == "fft"
    with pytest.raises(ValueError, match="dims"):
        ImageClassifier(dims=2, d_model=8, n_layers=1, layer={"kind": "s4nd", "dims": 3})


# ---- data --------------------------------------------------------------------------------------------------------
def test_listops_test_split_is_drawn_apart_from_the_training_split():
    data = load_listops(n_train=6, n_test=6, min_length=20, max_length=60, seed=3)
    train = {tuple(r.tolist()) for r in data.train.tensors[0]}
    assert not any(tuple(r.tolist()) in train for r in data.test.tensors[0])


def test_mnist1d_split_and_shuffle_arguments_are_applied():
    pytest.importorskip("mnist1d")
    from statespaces.data.mnist1d import load_mnist1d

    half = load_mnist1d(num_samples=100, train_split=0.5)
    assert len(half.train) == len(half.test) == 50
    plain, shuffled = load_mnist1d(num_samples=100), load_mnist1d(num_samples=100, shuffle_seq=True)
    xp, xs = plain.train.tensors[0][..., 0], shuffled.train.tensors[0][..., 0]
    assert not torch.equal(xp, xs)
    torch.testing.assert_close(xs.sort(-1).values, xp.sort(-1).values, rtol=0, atol=0)   # the steps permuted
    assert shuffled.name == "mnist1d_shuffled"


def test_bucketed_batches_come_in_random_length_order():
    """Batches are sorted by length within a window, then the batch order is shuffled: no length curriculum."""
    s = BucketBatchSampler(list(range(1, 401)), batch_size=8, window=50, seed=0)
    for epoch in range(3):
        s.set_epoch(epoch)
        means = torch.tensor([sum(b) / len(b) for b in s], dtype=F64)   # index i has length i + 1
        rank = torch.argsort(torch.argsort(means)).to(F64)
        pos = torch.arange(len(means), dtype=F64)
        corr = torch.corrcoef(torch.stack([rank, pos]))[0, 1]
        assert abs(float(corr)) < 0.5, (epoch, float(corr))


def test_delay_data_target_is_the_input_delayed():
    u, y = delay_data(n=2, L=64, lag=5, band=4.0, seed=0)
    assert torch.equal(y[:, 5:], u[:, :-5]) and (y[:, :5] == 0).all()


def test_bandlimited_noise_has_no_mean_and_no_energy_above_the_band():
    L, band = 256, 10.0
    x = bandlimited_noise(L, 1.0 / L, band_hz=band, rms=0.5, seed=0, batch=3)
    spec = torch.fft.rfft(x).abs()
    freqs = torch.fft.rfftfreq(L, d=1.0 / L)
    assert spec[:, 0].max() < 1e-12 and spec[:, freqs > band].max() < 1e-12
    assert spec[:, (freqs > 0) & (freqs <= band)].min(-1).values.gt(0).all()
    torch.testing.assert_close(x.pow(2).mean(-1).sqrt(), torch.full((3,), 0.5, dtype=F64), rtol=1e-12, atol=0)


def test_trajectory_pen_force_follows_sqrt_sin():
    data = synthetic_trajectories(1, seed=0, noise=0.0)
    x, lengths = data.tensors[0], data.tensors[2]
    for i in range(3):
        m = int(lengths[i])
        f = x[i, :m, 2].double()
        tau = torch.arange(m, dtype=F64) / (m - 1)
        shape = torch.sin(math.pi * tau).clamp(min=0).sqrt()
        torch.testing.assert_close(f / f.max(), shape / shape.max(), rtol=0, atol=2e-6)


# ---- serialization --------------------------------------------------------------------------------------------------
def _saved(tmp_path):
    torch.manual_seed(0)
    m = SSMForecaster(1, horizon=2, d_model=8, n_layers=1)
    m.save_pretrained(tmp_path / "m")
    return tmp_path / "m"


def test_loading_refuses_weights_with_a_missing_tensor(tmp_path):
    path = _saved(tmp_path)
    tensors = load_file(str(path / "model.safetensors"))
    del tensors["decoder.weight"]
    save_file(tensors, str(path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"do not fit the model that config.json describes .*decoder.weight"):
        load_pretrained(path)


def test_loading_refuses_a_newer_format(tmp_path):
    path = _saved(tmp_path)
    cfg = json.loads((path / "config.json").read_text())
    cfg["format"] = FORMAT + 1
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="newer"):
        load_pretrained(path)
