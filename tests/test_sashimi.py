"""SaShiMi (thesis ch. 8): recurrent step mode through DownPool/UpPool equals convolution mode,
chunked processing, and causality, for every supported pooling configuration."""
import pytest
import torch
from conftest import SMALL_LAYERS

from statespaces.models.sashimi import DownPool, FFBlock, SaShiMi, UpPool

pytestmark = pytest.mark.usefixtures("one_thread")
LAYERS = SMALL_LAYERS

CONFIGS = {
    "p4x2-q2": dict(pool=4, n_pools=2, expand=2),                 # the thesis's default (3 tiers)
    "p2-q1": dict(pool=(2,), expand=1),
    "p2x3-q2-unet": dict(pool=(2, 3), expand=2, unet=True),
    "p3x2x2-q1-noff": dict(pool=(3, 2, 2), expand=1, ff_expand=0),
    "nopool": dict(pool=4, n_pools=0),
}
T = 48  # a multiple of every configuration's total pooling factor


def _model(cfg, layer="s4d", lkw=None):
    torch.manual_seed(0)
    return SaShiMi(4, n_layers=1, layer={"kind": layer, **(lkw or dict(d_state=8))}, **CONFIGS[cfg]).double().eval()


@pytest.mark.parametrize("cfg", list(CONFIGS))
def test_step_matches_convolution(cfg):
    m = _model(cfg)
    x = torch.randn(2, T, 4, dtype=torch.float64)
    with torch.no_grad():
        y = m(x)
        st = m.initial_state(2)
        ys = []
        for t in range(T):
            y_t, st = m.step(x[:, t], st)
            ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, 1), y, atol=1e-4, rtol=1e-4)
    assert st["t"] == T


@pytest.mark.parametrize("layer,lkw", LAYERS[1:], ids=[l for l, _ in LAYERS[1:]])
def test_step_matches_convolution_other_layers(layer, lkw):
    m = _model("p4x2-q2", layer, lkw)
    x = torch.randn(1, 32, 4, dtype=torch.float64)
    with torch.no_grad():
        y = m(x)
        st = m.initial_state(1)
        ys = [None] * 32
        for t in range(32):
            ys[t], st = m.step(x[:, t], st)
    torch.testing.assert_close(torch.stack(ys, 1), y, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("cfg", ["p4x2-q2", "p2x3-q2-unet"])
@pytest.mark.parametrize("split", [16, 12, 5, 0])
def test_chunked_forward_with_state(cfg, split):
    m = _model(cfg)
    x = torch.randn(2, T, 4, dtype=torch.float64)
    with torch.no_grad():
        y = m(x)
        y1, st = m(x[:, :split], return_state=True) if split else (x[:, :0], m.initial_state(2))
        y2, st2 = m(x[:, split:split + 20], state=st, return_state=True)   # unaligned start and end
        y3 = m(x[:, split + 20:], state=st2)
    torch.testing.assert_close(torch.cat([y1, y2, y3], 1), y, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("layer,lkw", LAYERS, ids=[l for l, _ in LAYERS])
@pytest.mark.parametrize("cfg", list(CONFIGS))
def test_causal(cfg, layer, lkw):
    m = _model(cfg, layer, lkw)
    x = torch.randn(1, T, 4, dtype=torch.float64)
    with torch.no_grad():
        y = m(x)
        for t0 in (0, 1, 3, 4, 11, 16, 29, 47):             # group starts, middles and ends
            x2 = x.clone()
            x2[:, t0:] += torch.randn(1, T - t0, 4, dtype=torch.float64)
            y2 = m(x2)
            torch.testing.assert_close(y2[:, :t0], y[:, :t0], atol=1e-12, rtol=0)
            assert (y2[:, t0] - y[:, t0]).abs().max() > 1e-6   # the present input does matter


def test_causal_gradient_default_config():
    m = _model("p4x2-q2")
    x = torch.randn(1, 32, 4, dtype=torch.float64, requires_grad=True)
    y = m(x)
    w = torch.randn(4, dtype=torch.float64)                 # not .sum(): LayerNorm outputs sum to ~0
    for t in (0, 3, 4, 15, 16, 30):
        (g,) = torch.autograd.grad(y[0, t] @ w, x, retain_graph=True)
        assert g[0, t + 1:].abs().max() < 1e-12 and g[0, t].abs().max() > 1e-6  # FFT round-off only


def test_unaligned_length_is_padded_causally():
    m = _model("p4x2-q2")
    x = torch.randn(2, 37, 4, dtype=torch.float64)
    torch.testing.assert_close(m(x), m(torch.cat([x, torch.randn(2, 11, 4, dtype=torch.float64)], 1))[:, :37])


def test_step_does_not_modify_state():
    m = _model("p4x2-q2")
    st = m.initial_state(1)
    x = torch.randn(1, 4, dtype=torch.float64)
    st1 = m.step(x, st)[1]
    st1b = m.step(x, st)[1]
    assert st["t"] == 0 and float(st["down_buf"][0].abs().sum()) == 0.0
    torch.testing.assert_close(st1["down_buf"][0], st1b["down_buf"][0])


def test_pool_shapes_and_errors():
    x = torch.randn(2, 8, 6)
    assert DownPool(6, 4, 2)(x).shape == (2, 2, 12)
    with torch.no_grad():
        u, last = UpPool(6, 4, 2)(torch.randn(2, 2, 12))
    assert u.shape == (2, 8, 6) and last.shape == (2, 4, 6)
    assert float(u[:, :4].abs().max()) == 0.0                # first group is the causal shift's zeros
    assert FFBlock(6)(x).shape == x.shape
    with pytest.raises(ValueError, match="d_model"):
        FFBlock(0)
    with pytest.raises(ValueError):
        DownPool(6, 4, 2)(torch.randn(2, 6, 6))
    with pytest.raises(ValueError):
        SaShiMi(4, pool=(1,))
    m = _model("p2-q1")
    with pytest.raises(ValueError, match="batch"):
        m.step(torch.randn(3, 4, dtype=torch.float64), m.initial_state(2))
    with pytest.raises(ValueError):
        m(torch.randn(2, 8, 5, dtype=torch.float64))


def test_sashimi_trains():
    torch.manual_seed(0)
    m = SaShiMi(8, n_layers=1, pool=(2, 2), layer=dict(kind="s4", d_state=8))
    head = torch.nn.Linear(8, 1)
    opt = torch.optim.Adam(list(m.parameters()) + list(head.parameters()), lr=1e-2)
    x = torch.randn(4, 32, 8)
    target = torch.sin(torch.linspace(0, 6, 32)).expand(4, 32)
    losses = []
    for _ in range(15):
        loss = ((head(m(x)).squeeze(-1) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_a_coarse_step_is_valid_when_any_of_its_fine_steps_is():
    """With lengths, each tier's normalisation sees the mask of its own steps: a coarse step counts when any of its
    p fine steps is valid (a partly valid group carries valid information into BatchNorm's statistics). Checked on
    the masks every norm receives, against the rule computed here from the lengths."""
    from statespaces.blocks import _SeqNorm

    torch.manual_seed(0)
    model = SaShiMi(d_model=4, n_layers=1, pool=2, n_pools=2, layer="s4d", norm="batch").train()
    seen = []
    for module in model.modules():
        if isinstance(module, _SeqNorm):
            module.register_forward_hook(lambda m, args, kwargs, out: seen.append(
                args[1] if len(args) > 1 else kwargs.get("mask")), with_kwargs=True)
    lengths = torch.tensor([16, 9, 5])
    model(torch.randn(3, 16, 4), lengths=lengths)
    fine = torch.arange(16)[None] < lengths[:, None]
    want = {16: fine, 8: fine.unflatten(1, (8, 2)).any(-1), 4: fine.unflatten(1, (4, 4)).any(-1)}
    assert {m.shape[1] for m in seen if m is not None} == {16, 8, 4}
    for m in seen:
        assert m is not None and torch.equal(m, want[m.shape[1]]), m
