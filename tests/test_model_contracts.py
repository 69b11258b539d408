"""Contracts of the models that a wrong argument used to break silently (model audit).

* Autoregressive models (``SSMLanguageModel`` with either backbone, ``SaShiMi``, ``SSMStack``) must be
  causal: a non-causal layer is refused when the model is built (trained on next-step prediction it
  read the answer from later steps: NLL 0.035 nats on i.i.d. tokens whose entropy is log 8 = 2.08),
  and ``norm="batch"`` warns once (its training-mode statistics include later steps).
* ``SSMLanguageModel.loss`` / ``nll`` refuse a batch with nothing to predict instead of returning 0.
* ``top_k`` keeps exactly k tokens when logits tie.
* ``ImageClassifier(dims=1, layer="conv")`` runs (it crashed in every forward).
* ``SaShiMi(pool=...)`` names ``pool`` for a float, bool or string.
* The printed form of a model shows its defining arguments.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from statespaces.blocks import ResidualBlock
from statespaces.layers import S4D
from statespaces.models import (
    ImageClassifier,
    SaShiMi,
    SequenceClassifier,
    SSMForecaster,
    SSMLanguageModel,
    SSMStack,
    filter_logits,
    sample_logits,
)

F64 = torch.float64
SASHIMI_KW = dict(pool=2, n_pools=1)

# every sequence layer kind in its non-causal setting
NON_CAUSAL = [
    {"kind": "s4d", "d_state": 4, "bidirectional": True},
    {"kind": "s4", "d_state": 4, "bidirectional": True},
    {"kind": "s5", "d_state": 4, "bidirectional": True},
    {"kind": "linoss", "n_oscillators": 4, "bidirectional": True},
    {"kind": "dlinoss", "n_oscillators": 4, "bidirectional": True},
    {"kind": "s4nd", "dims": 1, "d_state": 4},                     # S4ND is two-sided by default
]


def _lm(backbone: str = "flat", **kw) -> SSMLanguageModel:
    bkw = SASHIMI_KW if backbone == "sashimi" else {}
    kw.setdefault("layer", {"kind": "s4d", "d_state": 4})
    return SSMLanguageModel(7, d_model=8, n_layers=1, backbone=backbone, backbone_kwargs=bkw, **kw)


def _batch_norm_warnings(build) -> list:
    """The norm='batch' warnings emitted while ``build()`` runs (the model is discarded)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build()
    return [w for w in caught if "norm='batch'" in str(w.message)]


# ---- causality ----------------------------------------------------------------------------------
@pytest.mark.parametrize("backbone", ["flat", "sashimi"])
@pytest.mark.parametrize("layer", NON_CAUSAL, ids=lambda spec: spec["kind"])
def test_language_model_refuses_a_non_causal_layer(backbone, layer):
    with pytest.raises(ValueError, match=r"must be causal.*bidirectional=.*layer setting"):
        _lm(backbone, layer=layer)


def test_sashimi_and_ssm_stack_refuse_a_bidirectional_layer():
    layer = {"kind": "s4d", "d_state": 4, "bidirectional": True}
    with pytest.raises(ValueError, match=r"SaShiMi must be causal.*\(S4D\).*bidirectional=True"):
        SaShiMi(8, 1, **SASHIMI_KW, layer=layer)
    with pytest.raises(ValueError, match=r"SSMStack must be causal"):
        SSMStack(8, 1, layer=layer)


def test_language_model_checks_a_backbone_module_it_is_given():
    layer = {"kind": "s4d", "d_state": 4, "bidirectional": True}
    with pytest.raises(ValueError, match=r"backbone must be causal"):
        SSMLanguageModel(7, d_model=8, n_layers=1, backbone=SSMStack(8, 1, layer=layer, causal=False))
    with pytest.raises(ValueError, match=r"backbone must be causal"):
        SSMLanguageModel(7, d_model=8, n_layers=1, layer=layer, backbone_kwargs={"causal": False})


def test_models_that_see_the_whole_window_keep_their_bidirectional_layers():
    """SSMForecaster (mask tokens, bidirectional by default), SequenceClassifier and an explicit
    SSMStack(causal=False) are non-causal by design: no error and no warning."""
    layer = {"kind": "s4d", "d_state": 4, "bidirectional": True}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f = SSMForecaster(1, 3, d_model=8, n_layers=1)
        SequenceClassifier(1, 2, d_model=8, n_layers=1, layer=layer, norm="batch")
        SSMStack(8, 1, layer=layer, norm="batch", causal=False)
    assert f.backbone.blocks[0].layer.bidirectional


@pytest.mark.parametrize("backbone", ["flat", "sashimi"])
def test_accepted_language_models_are_causal_in_training_mode(backbone):
    """With LayerNorm the accepted models are causal in training mode too: editing token t0 leaves
    every earlier logit unchanged (and moves some later one)."""
    torch.manual_seed(0)
    lm = _lm(backbone).to(F64).train()
    x = torch.randint(0, 7, (2, 12))
    x2 = x.clone()
    x2[:, 7] = (x2[:, 7] + 3) % 7
    with torch.no_grad():
        d = (lm(x2) - lm(x)).abs()
    assert float(d[:, :7].max()) < 1e-12                 # FFT round-off only
    assert float(d[:, 7:].max()) > 1e-6


@pytest.mark.parametrize("build", [
    lambda: _lm("flat", norm="batch"),
    lambda: _lm("sashimi", norm="batch"),
    lambda: SaShiMi(8, 1, **SASHIMI_KW, layer={"kind": "s4d", "d_state": 4}, norm="batch"),
    lambda: SSMStack(8, 2, layer={"kind": "s4d", "d_state": 4}, norm="batch"),
], ids=["lm-flat", "lm-sashimi", "sashimi", "stack"])
def test_batch_norm_in_a_causal_model_warns_once(build):
    caught = _batch_norm_warnings(build)
    assert len(caught) == 1
    assert issubclass(caught[0].category, UserWarning)
    assert "training mode" in str(caught[0].message) and "norm='layer'" in str(caught[0].message)
    assert caught[0].filename == __file__          # points at the line that built the model


def test_layer_norm_models_build_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _lm("flat")
        _lm("sashimi")


def test_batch_norm_language_model_is_causal_in_eval_mode_only():
    """What the warning says: train-mode batch statistics carry a later edit back in time; eval mode does not."""
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="norm='batch'"):
        lm = _lm("flat", norm="batch").to(F64)
    x = torch.randint(0, 7, (2, 16))
    x2 = x.clone()
    x2[0, 12] = (x2[0, 12] + 3) % 7
    with torch.no_grad():
        lm.eval()
        assert float((lm(x2) - lm(x))[:, :12].abs().max()) < 1e-12
        lm.train()
        assert float((lm(x2) - lm(x))[:, :12].abs().max()) > 1e-6


# ---- nothing to predict ---------------------------------------------------------------------------
def test_loss_and_nll_refuse_length_one_sequences():
    lm = _lm()
    x = torch.randint(0, 7, (4, 1))
    for fn in (lm.loss, lm.nll):
        with pytest.raises(ValueError, match="at least 2 tokens"):
            fn(x)


def test_loss_and_nll_refuse_a_batch_whose_lengths_are_all_one():
    lm = _lm()
    x = torch.randint(0, 7, (2, 6))
    for fn in (lm.loss, lm.nll):
        with pytest.raises(ValueError, match=r"lengths.*at least 2 tokens"):
            fn(x, lengths=torch.tensor([1, 1]))


def test_loss_counts_only_the_sequences_with_something_to_predict():
    """One sequence of length 1 among longer ones is fine: it contributes no step."""
    lm = _lm().to(F64)
    x = torch.randint(0, 7, (2, 6))
    total, count = lm.nll(x, lengths=torch.tensor([1, 4]))
    assert int(count) == 3
    ref_total, ref_count = lm.nll(x[1:, :4])
    assert int(ref_count) == 3
    torch.testing.assert_close(total, ref_total)
    torch.testing.assert_close(lm.loss(x, lengths=torch.tensor([1, 4])), ref_total / 3)


# ---- top-k with ties ------------------------------------------------------------------------------
def test_top_k_keeps_exactly_k_tokens_when_logits_tie():
    logits = torch.tensor([[2.0, 2.0, 2.0, 1.0, 0.0], [1.0, 3.0, 3.0, 3.0, 3.0]])
    for k in (1, 2, 3, 4):
        kept = torch.isfinite(filter_logits(logits, top_k=k))
        assert kept.sum(-1).tolist() == [k, k]
        want = torch.zeros_like(kept).scatter(-1, torch.topk(logits, k, dim=-1).indices, True)
        assert torch.equal(kept, want)                     # the very tokens torch.topk picks
    kept_bf16 = torch.isfinite(filter_logits(torch.tensor([[1.0001, 1.0002, 1.0003, 0.5]]).bfloat16(), top_k=1))
    assert int(kept_bf16.sum()) == 1                       # distinct in float32, tied in bfloat16


def test_top_k_on_random_ties_and_sampling():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randint(0, 3, (64, 10), generator=gen).float()     # many ties per row
    for k in (1, 3, 7):
        assert torch.isfinite(filter_logits(logits, top_k=k)).sum(-1).eq(k).all()
    tied = torch.tensor([2.0, 2.0, 2.0, 1.0, 0.0]).expand(500, 5)
    draws = sample_logits(tied, top_k=1, generator=torch.Generator().manual_seed(1))
    assert len(set(draws.tolist())) == 1


# ---- ImageClassifier(dims=1, layer="conv") ---------------------------------------------------------
@pytest.mark.parametrize("depthwise", [False, True])
def test_one_dimensional_conv_image_classifier_matches_a_direct_convolution(depthwise):
    torch.manual_seed(0)
    H = 6
    m = ImageClassifier(2, 3, dims=1, d_model=H, n_layers=2, layer="conv", depthwise=depthwise).to(F64).eval()
    x = torch.randn(4, 9, 2, dtype=F64)
    with torch.no_grad():
        out = m(x)
        h = m.encoder(x)
        for block in m.blocks:
            z = F.layer_norm(h, (H,), block.norm.norm.weight, block.norm.norm.bias)
            conv = block.layer.conv
            y = F.conv1d(z.transpose(1, 2), conv.weight, conv.bias, padding=1, groups=H if depthwise else 1)
            h = h + F.glu(block.output(F.gelu(y.transpose(1, 2))), dim=-1)
        ref = m.decoder(m.final_norm(h).mean(1))
    torch.testing.assert_close(out, ref)


# ---- SaShiMi pool ---------------------------------------------------------------------------------
@pytest.mark.parametrize("pool", [2.5, True, "4", None, [2, 2.0], torch.tensor(2)])
def test_sashimi_refuses_a_pool_that_is_not_integers(pool):
    with pytest.raises(TypeError, match="pool"):
        SaShiMi(8, 1, pool=pool)


@pytest.mark.parametrize("pool", [1, 0, [2, 1], (3, -2)])
def test_sashimi_refuses_pool_factors_below_two(pool):
    with pytest.raises(ValueError, match=r"pool.*>= 2"):
        SaShiMi(8, 1, pool=pool)


def test_sashimi_accepts_integer_pools():
    assert SaShiMi(8, 1, pool=np.int64(2), n_pools=2, layer="s4d").pools == (2, 2)
    assert SaShiMi(8, 1, pool=[2, 3], layer="s4d").pools == (2, 3)
    assert SaShiMi(8, 1, pool=(), layer="s4d").pools == ()


# ---- printed forms -------------------------------------------------------------------------------
def test_printed_forms_show_the_defining_arguments():
    pairs = [
        (SSMForecaster(1, 3, d_model=8, n_layers=1), SSMForecaster(1, 7, d_model=8, n_layers=1), "horizon=7"),
        (ResidualBlock(S4D(8, 8), prenorm=True), ResidualBlock(S4D(8, 8), prenorm=False), "prenorm=False"),
        (ResidualBlock(S4D(8, 8), mixing="glu"), ResidualBlock(S4D(8, 8), mixing="linear"), "mixing='linear'"),
        (SequenceClassifier(1, 3, d_model=8, n_layers=1, pool="mean"),
         SequenceClassifier(1, 3, d_model=8, n_layers=1, pool="max"), "pool='max'"),
        (SSMLanguageModel(10, d_model=8, n_layers=1), SSMLanguageModel(10, d_model=8, n_layers=1, max_len=100),
         "max_len=100"),
    ]
    for a, b, shown in pairs:
        assert repr(a) != repr(b)
        assert shown in repr(b).splitlines()[1]           # on the module's own line, torch.nn style
    # modules that printed no configuration of their own (API audit)
    from statespaces.hippo.rnn import HiPPOCell
    from statespaces.layers.s4 import S4
    from statespaces.models.image import ImageClassifier
    from statespaces.models.lm import SSMStack
    from statespaces.models.sashimi import DownPool, FFBlock, UpPool

    shown = {FFBlock(8, 3): "d_model=8, expand=3", DownPool(8, 4, 2): "d_in=8, pool=4, d_out=16",
             UpPool(8, 4, 2): "d_in=16, pool=4, d_out=8", SSMStack(8, n_layers=2, causal=False): "n_layers=2",
             ImageClassifier(3, 5, d_model=8, n_layers=1): "dims=2", HiPPOCell(2, 6): "hidden_size=6",
             S4(4, 8, seed=0).double().diagonalize(): "n_modes=8"}
    for module, text in shown.items():
        assert text in "\n".join(repr(module).splitlines()[:2]), repr(module)      # its own line(s)


def test_step_in_training_mode_with_tied_dropout_warns_once():
    """Stepping a block in training mode drew a fresh tied-dropout mask per step, silently unlike forward."""
    block = ResidualBlock(S4D(4, 8, seed=0), dropout=0.2).train()
    state = block.initial_state(2)
    with pytest.warns(UserWarning, match="new dropout mask at every step"):
        _, state = block.step(torch.randn(2, 4), state)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        block.step(torch.randn(2, 4), state)                        # once per block
        block.eval().step(torch.randn(2, 4), block.initial_state(2))   # eval: no dropout, no warning
        untied = ResidualBlock(S4D(4, 8, seed=0), dropout=0.2, tie_dropout=False).train()
        untied.step(torch.randn(2, 4), untied.initial_state(2))     # elementwise dropout: steps like forward


def test_baselines_honour_lengths():
    """ConvClassifier took lengths and ignored them (padding reached its convolutions and its mean: 1e-2 on the
    logits of a short series); GatedRNNClassifier passed bad lengths to torch (floats truncated, too long: an
    unclear RuntimeError). Padded series now give what they give alone; bad lengths are refused as elsewhere."""
    from statespaces.models.baselines import ConvClassifier, GatedRNNClassifier

    torch.manual_seed(0)
    lengths = torch.tensor([12, 5, 1])
    x = torch.randn(3, 12, 1, dtype=torch.float64)
    x[1, 5:] = 0.0
    x[2, 1:] = 0.0
    for model in (ConvClassifier(8, 2).double(), GatedRNNClassifier("gru", 1, 4, hidden=8).double()):
        together = model(x, lengths)
        for b, n in enumerate(lengths.tolist()):
            torch.testing.assert_close(together[b], model(x[b:b + 1, :n])[0], atol=1e-12, rtol=0)
        with pytest.raises(TypeError):
            model(x, lengths.double())
        with pytest.raises(ValueError):
            model(x, torch.tensor([13, 5, 1]))


def test_a_seeded_layer_config_gives_each_block_its_own_layer():
    """A model built from a layer config with a seed gave every block the same SSM weights (the config was built
    unchanged); block i is now seeded with seed + BLOCK_SEED_STRIDE i, in every model, reproducibly, and block 0 is
    the layer the seed alone builds."""
    from statespaces.layers import S4D
    from statespaces.layers.config import BLOCK_SEED_STRIDE
    from statespaces.models import SSMForecaster
    from statespaces.models.lm import SSMLanguageModel
    from statespaces.models.sashimi import SaShiMi

    spec = {"kind": "s4d", "d_state": 8, "seed": 5}
    builds = {
        "classifier": lambda: SequenceClassifier(3, 5, d_model=8, n_layers=3, layer=spec),
        "lm": lambda: SSMLanguageModel(7, d_model=8, n_layers=3, layer=spec),
        "forecaster": lambda: SSMForecaster(2, 4, d_model=8, n_layers=3, layer=spec),
        "sashimi": lambda: SaShiMi(d_model=8, n_layers=2, pool=2, n_pools=1, layer=spec),
    }
    for name, build in builds.items():
        layers = [m for m in build().modules() if isinstance(m, S4D)]
        again = [m for m in build().modules() if isinstance(m, S4D)]
        assert len(layers) >= 3, name
        logs = [m.log_dt.detach() for m in layers]
        assert all(not torch.equal(logs[i], logs[j]) for i in range(len(logs)) for j in range(i)), name
        assert all(torch.equal(a.log_dt, b.log_dt) and torch.equal(a.C, b.C) for a, b in zip(layers, again)), name
        widths = [m.d_model for m in layers]
        for i, m in enumerate(layers):
            same = S4D(widths[i], 8, seed=5 + BLOCK_SEED_STRIDE * i, bidirectional=m.bidirectional)
            assert torch.equal(m.C, same.C), name


def test_models_take_half_precision_input_in_their_own_precision():
    """docs/validation.md: half precision is computed in the module's precision. The layers did; every model failed
    inside its first Linear (float16 input, float32 weights). A model now gives, for a float16 input, what it gives
    for the same values in float32 (in its own dtype); a block returns x's dtype, as a layer does."""
    from statespaces.layers import S4D
    from statespaces.models import SSMForecaster
    from statespaces.models.image import ImageClassifier
    from statespaces.models.sashimi import SaShiMi

    torch.manual_seed(0)
    cases = [(SequenceClassifier(3, 5, d_model=8, n_layers=2), torch.randn(2, 16, 3)),
             (SSMForecaster(3, 4, d_model=8, n_layers=2), torch.randn(2, 16, 3)),
             (SaShiMi(d_model=8, n_layers=1, pool=2, n_pools=1, layer="s4d"), torch.randn(2, 16, 8)),
             (ImageClassifier(3, 5, d_model=8, n_layers=1), torch.randn(2, 8, 8, 3)),
             (ResidualBlock(S4D(8, 8, seed=0)), torch.randn(2, 16, 8))]
    for model, x in cases:
        model.eval()
        with torch.no_grad():
            for dtype in (torch.float16, torch.bfloat16):
                half, full = model(x.to(dtype)), model(x.to(dtype).float())
                if isinstance(model, ResidualBlock):
                    assert half.dtype == dtype
                    torch.testing.assert_close(half, full.to(dtype))
                else:
                    assert half.dtype == torch.float32
                    torch.testing.assert_close(half, full, atol=0, rtol=0)
