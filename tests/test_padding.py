"""Padding never leaks into valid steps (issue 16, item 5).

Right-padded batches with ``lengths``: the output of every sequence must not depend on how far it
is padded nor on what the padding holds, in every layer kind (S4D, S4, LinOSS), both directions of
bidirectional layers, every pooling mode, LayerNorm and BatchNorm (train and eval), pre- and
post-norm. The references are independent: the same model run on a batch padded only to its own
longest sequence with zeros, and each block run on the unpadded sequence alone.

Before the fix, ``lengths`` only masked the classifier's pooling, so the anti-causal half of a
bidirectional layer read the padding (logits moved by ~0.1 here) and BatchNorm's batch statistics
included it.
"""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from statespaces.blocks import ResidualBlock, length_mask, masked_batch_norm
from statespaces.layers.registry import make_layer
from statespaces.models import SequenceClassifier
from statespaces.models.lm import SSMLanguageModel, SSMStack
from statespaces.models.sashimi import SaShiMi

F64 = torch.float64
TOL = dict(atol=1e-9, rtol=1e-9)          # float64; the fix makes results identical up to FFT roundoff

# (layer, bidirectional); LinOSS is causal only
LAYERS = [("s4d", False), ("s4d", True), ("s4", False), ("s4", True), ("linoss", False), ("s5", False), ("s5", True)]


def _layer_kwargs(layer: str, bidirectional: bool) -> dict:
    kw = dict(n_oscillators=8) if layer == "linoss" else dict(d_state=8)
    if layer in ("s4d", "s4", "s5"):
        kw.update(bidirectional=bidirectional, dt_min=0.05, dt_max=0.5)   # long memory: a leak would show
    return kw


def _batches(B: int, d: int, L_max: int, extra: int, gen: torch.Generator, dtype=F64):
    """Random lengths in [1, L_max] (one sequence of full length); the batch padded to its own
    longest sequence with zeros, and the same sequences padded by ``extra`` more steps of garbage."""
    lengths = torch.randint(1, L_max + 1, (B,), generator=gen)
    lengths[int(torch.randint(0, B, (1,), generator=gen))] = L_max
    x = torch.randn(B, L_max, d, generator=gen, dtype=dtype)
    short = x.clone()
    long = torch.cat([x, 10 * torch.randn(B, extra, d, generator=gen, dtype=dtype)], 1)
    for b, n in enumerate(lengths.tolist()):
        short[b, n:] = 0
        long[b, n:] = 10 * torch.randn(L_max + extra - n, d, generator=gen, dtype=dtype)
    return short, long, lengths


@pytest.mark.parametrize("layer,bidirectional", LAYERS)
@pytest.mark.parametrize("pool", ["mean", "last", "none"])
@pytest.mark.parametrize("norm,prenorm", [("layer", True), ("layer", False), ("batch", True), ("batch", False)])
def test_classifier_output_does_not_depend_on_padding(layer, bidirectional, pool, norm, prenorm):
    gen = torch.Generator().manual_seed(hash((layer, bidirectional, pool, norm, prenorm)) % 2**31)
    model = SequenceClassifier(3, 5, d_model=8, n_layers=2, layer={"kind": layer, **_layer_kwargs(layer, bidirectional)},
                               pool=pool, norm=norm, prenorm=prenorm).to(F64)
    short, long, lengths = _batches(5, 3, 23, 41, gen)
    # BatchNorm in training mode normalizes with batch statistics: they must exclude the padding too
    for training in ((False, True) if norm == "batch" else (False,)):
        model.train(training)
        a, b = model(short, lengths), model(long, lengths)
        if pool == "none":
            mask = length_mask(lengths, 5, 23, a.device)
            a, b = a[mask], b[:, :23][mask]
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("layer,bidirectional", LAYERS)
@pytest.mark.parametrize("norm,prenorm", [("layer", True), ("layer", False), ("batch", True), ("batch", False)])
def test_block_valid_outputs_equal_the_unpadded_sequence_alone(layer, bidirectional, norm, prenorm):
    gen = torch.Generator().manual_seed(7)
    H = 6
    block = ResidualBlock(make_layer({"kind": layer, **_layer_kwargs(layer, bidirectional)}, H), norm=norm,
                          prenorm=prenorm).to(F64)
    with torch.no_grad():                       # nonzero running statistics, so eval-mode BN is not the identity
        if norm == "batch":
            block.norm.norm.running_mean.normal_(generator=gen)
            block.norm.norm.running_var.uniform_(0.5, 2.0, generator=gen)
            block.norm.norm.bias.normal_(generator=gen)
    block.eval()
    _, long, lengths = _batches(4, H, 19, 30, gen)
    mask = length_mask(lengths, 4, long.shape[1], long.device)
    y = block(long, mask=mask)
    for b, n in enumerate(lengths.tolist()):
        alone = block(long[b:b + 1, :n])
        torch.testing.assert_close(y[b:b + 1, :n], alone, **TOL)


@pytest.mark.parametrize("layer", ["s4d", "s4", "linoss"])
def test_causal_block_with_nonzero_initial_state_ignores_padding(layer):
    gen = torch.Generator().manual_seed(3)
    H = 4
    block = ResidualBlock(make_layer({"kind": layer, **_layer_kwargs(layer, False)}, H), norm="layer").to(F64)
    _, long, lengths = _batches(3, H, 12, 20, gen)
    # a state the layer produced from some earlier input
    _, state = block(torch.randn(3, 9, H, generator=gen, dtype=F64), return_state=True)
    mask = length_mask(lengths, 3, long.shape[1], long.device)
    y = block(long, state=state, mask=mask)
    for b, n in enumerate(lengths.tolist()):
        alone = block(long[b:b + 1, :n], state=state[b:b + 1])
        torch.testing.assert_close(y[b:b + 1, :n], alone, **TOL)


def test_masked_batch_norm_equals_batch_norm_of_the_valid_steps():
    """Reference: nn.BatchNorm1d on the (n_valid, H) matrix of valid steps, including running stats."""
    gen = torch.Generator().manual_seed(1)
    H = 5
    _, x, lengths = _batches(4, H, 11, 6, gen)
    mask = length_mask(lengths, 4, x.shape[1], x.device)
    for momentum in (0.1, None):
        ours, ref = nn.BatchNorm1d(H, momentum=momentum).to(F64), nn.BatchNorm1d(H, momentum=momentum).to(F64)
        with torch.no_grad():
            for bn in (ours, ref):
                bn.weight.copy_(torch.linspace(0.5, 2, H))
                bn.bias.copy_(torch.linspace(-1, 1, H))
        for _ in range(3):
            torch.testing.assert_close(masked_batch_norm(ours, x, mask)[mask], ref(x[mask]), **TOL)
        torch.testing.assert_close(ours.running_mean, ref.running_mean, **TOL)
        torch.testing.assert_close(ours.running_var, ref.running_var, **TOL)
        assert int(ours.num_batches_tracked) == int(ref.num_batches_tracked) == 3
        ours.eval(), ref.eval()
        torch.testing.assert_close(masked_batch_norm(ours, x, mask)[mask], ref(x[mask]), **TOL)


def test_gradients_do_not_depend_on_padding():
    """Training sees the same loss and parameter gradients however far the batch is padded."""
    gen = torch.Generator().manual_seed(5)
    model = SequenceClassifier(3, 4, d_model=8, n_layers=2, layer={"kind": "s4d", **_layer_kwargs("s4d", True)},
                               norm="batch").to(F64)
    short, long, lengths = _batches(6, 3, 17, 25, gen)
    y = torch.randint(0, 4, (6,), generator=gen)
    grads = []
    for x in (short, long):
        model.zero_grad()
        nn.functional.cross_entropy(model(x, lengths), y).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for ga, gb in zip(*grads):
        torch.testing.assert_close(ga, gb, **TOL)


def test_float32_padding_invariance():
    gen = torch.Generator().manual_seed(11)
    model = SequenceClassifier(3, 5, d_model=16, n_layers=3, layer={"kind": "s4d", **_layer_kwargs("s4d", True)}).eval()
    short, long, lengths = _batches(8, 3, 64, 200, gen, dtype=torch.float32)
    torch.testing.assert_close(model(short, lengths), model(long, lengths), atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("backbone", ["flat", "sashimi"])
@pytest.mark.parametrize("norm", ["layer", "batch"])
def test_language_model_nll_and_logits_do_not_depend_on_padding(backbone, norm):
    """The LM (causal: a bidirectional layer is refused when it is built, and BatchNorm's training
    statistics are the case that could read the padding) and SaShiMi's pooled tiers: a coarse step
    mixing valid and padded fine steps must not carry the padding."""
    gen = torch.Generator().manual_seed(2)
    bkw = dict(pool=2, n_pools=2) if backbone == "sashimi" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)       # norm="batch": causal in eval mode only
        lm = SSMLanguageModel(7, d_model=8, n_layers=1, backbone=backbone, backbone_kwargs=bkw,
                              layer={"kind": "s4d", **_layer_kwargs("s4d", False)}, norm=norm).to(F64)
    lengths = torch.tensor([13, 5, 2, 9])
    tok = torch.randint(0, 7, (4, 13), generator=gen)
    long = torch.cat([tok, torch.randint(0, 7, (4, 18), generator=gen)], 1)
    for b, n in enumerate(lengths.tolist()):
        long[b, n:] = torch.randint(0, 7, (31 - n,), generator=gen)
    for training in (True, False):
        lm.train(training)
        ta, ca = lm.nll(tok, lengths=lengths)
        tb, cb = lm.nll(long, lengths=lengths)
        assert int(ca) == int(cb)
        torch.testing.assert_close(ta, tb, atol=0, rtol=1e-6)     # nll sums float32 cross-entropies
    lm.eval()
    la, lb = lm(tok, lengths=lengths), lm(long, lengths=lengths)
    for b, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(la[b, :n], lb[b, :n], **TOL)
        torch.testing.assert_close(la[b, :n], lm(tok[b:b + 1, :n])[0], **TOL)


def test_sashimi_internal_padding_does_not_leak_into_batch_norm_statistics():
    """SaShiMi pads every input to a multiple of prod(pool) itself: harmless for its causal layers, but
    BatchNorm's training-mode statistics would read it unless the padding is masked."""
    gen = torch.Generator().manual_seed(4)
    with pytest.warns(UserWarning, match="norm='batch'"):
        net = SaShiMi(8, n_layers=1, pool=[2, 3], layer={"kind": "s4d", **_layer_kwargs("s4d", False)},
                      norm="batch").to(F64).train()
    x = torch.randn(2, 11, 8, generator=gen, dtype=F64)            # 11 is not a multiple of 6
    y = net(x)
    for junk in (0.0, 5.0):
        xp = torch.cat([x, junk * torch.randn(2, 13, 8, generator=gen, dtype=F64)], 1)
        torch.testing.assert_close(net(xp, lengths=torch.tensor([11, 11]))[:, :11], y, **TOL)


def test_ssm_stack_lengths_match_per_sequence_runs():
    gen = torch.Generator().manual_seed(6)
    stack = SSMStack(6, n_layers=2, layer={"kind": "s4", **_layer_kwargs("s4", True)}, ff_expand=2,
                     causal=False).to(F64)                      # bidirectional: the hardest case
    _, long, lengths = _batches(3, 6, 10, 15, gen)
    y = stack(long, lengths=lengths)
    for b, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(y[b:b + 1, :n], stack(long[b:b + 1, :n]), **TOL)


def test_bad_masks_and_lengths_are_refused():
    block = ResidualBlock(make_layer(dict(kind="s4d", d_state=4), 4))
    x = torch.randn(2, 6, 4)
    with pytest.raises(TypeError, match="bool"):
        block(x, mask=torch.ones(2, 6))
    with pytest.raises(ValueError, match="shape"):
        block(x, mask=torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="return_state"):
        block(x, mask=length_mask(torch.tensor([6, 3]), 2, 6, x.device), return_state=True)
    # a full mask is no padding: the state is well defined
    block(x, mask=torch.ones(2, 6, dtype=torch.bool), return_state=True)
    model = SequenceClassifier(4, 3, d_model=4, n_layers=1)
    with pytest.raises(ValueError, match="lengths"):
        model(x, torch.tensor([7, 1]))
    with pytest.raises(TypeError, match="lengths"):
        model(x, torch.tensor([6.0, 1.0]))
    with pytest.raises(ValueError, match="lengths"):
        SaShiMi(4, n_layers=1, pool=2, n_pools=1, layer="s4d")(x, lengths=torch.tensor([6, 2]), return_state=True)


def test_dropout_nd_is_inverted_dropout():
    """DropoutNd in training mode keeps each (example, channel) with probability 1 - p and scales it by 1/(1 - p),
    so E[dropout(x)] = x; in eval mode it is the identity."""
    from statespaces.blocks import DropoutNd

    torch.manual_seed(0)
    d = DropoutNd(0.5).train()
    x = torch.full((4000, 10, 8), 3.0)
    y = d(x)
    kept = y != 0
    assert torch.equal(y[kept], torch.full_like(y[kept], 6.0))
    assert abs(float(kept.float().mean()) - 0.5) < 0.01 and abs(float(y.mean()) - 3.0) < 0.05
    assert torch.equal(d.eval()(x), x)
