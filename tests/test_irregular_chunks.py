"""Irregular sampling in chunks of the time axis (layers.irregular.over_time_chunks): the time-varying scan of
S4D, LinOSS and D-LinOSS forms its per-step tables one chunk at a time, recomputing them in the backward
(checkpoint) instead of keeping them: the same outputs, states and gradients as one pass over the whole sequence,
in float64. S5's per-step input matrix is applied as gain * (B u), never formed as a (B, L, M, H) tensor."""
import pytest
import torch

import statespaces.layers.irregular as irregular
from statespaces.layers import S4D, S5, DLinOSS, LinOSS

f64 = torch.float64

LAYERS = {
    "s4d-zoh": lambda: S4D(3, 8, seed=0),
    "s4d-bilinear": lambda: S4D(3, 8, discretization="bilinear", seed=1),
    "linoss-im": lambda: LinOSS(3, 4, discretization="IM", seed=2),
    "linoss-imex": lambda: LinOSS(3, 4, discretization="IMEX", seed=3),   # one interval per row (IMEX's rule)
    "dlinoss-im": lambda: DLinOSS(3, 4, discretization="IM", seed=4),     # one interval per row (D-LinOSS's rule)
}


def _run(layer, x, dt, state):
    """Output, final state and the gradients of a scalar of both with respect to x, dt and every parameter."""
    x, dt = x.clone().requires_grad_(), dt.clone().requires_grad_()
    layer.zero_grad()
    y, last = layer(x, state=state, return_state=True, dt=dt)
    loss = y.square().sum() + torch.view_as_real(last).square().sum() if last.is_complex() else \
        y.square().sum() + last.square().sum()
    loss.backward()
    grads = [x.grad, dt.grad] + [p.grad for p in layer.parameters() if p.grad is not None]
    return y.detach(), last.detach(), grads


@pytest.mark.parametrize("name", list(LAYERS))
def test_chunked_irregular_pass_equals_one_pass_in_float64(name, monkeypatch):
    layer = LAYERS[name]().double()
    g = torch.Generator().manual_seed(0)
    B, L = 2, 75                               # chunks of 8 steps: 9 whole chunks and one of 3
    x = torch.randn(B, L, 3, generator=g, dtype=f64)
    dt = 0.5 + torch.rand(B, L, generator=g, dtype=f64)
    if name.endswith("imex") or name.startswith("dlinoss"):
        dt = dt[:, :1].expand(B, L).contiguous()
    state = layer.initial_state(B)
    state = state + 0.1 * torch.randn(state.shape, generator=g, dtype=state.dtype)
    monkeypatch.setattr(irregular, "CHUNK_BYTES", 1 << 40)
    whole = _run(layer, x, dt, state)
    monkeypatch.setattr(irregular, "CHUNK_BYTES", 1)
    monkeypatch.setattr(irregular, "MIN_CHUNK", 8)
    chunked = _run(layer, x, dt, state)
    torch.testing.assert_close(chunked[0], whole[0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(chunked[1], whole[1], rtol=1e-10, atol=1e-12)
    assert len(chunked[2]) == len(whole[2]) >= 4
    for got, want in zip(chunked[2], whole[2]):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11)
    with torch.no_grad():                      # without autograd: chunks in order, no checkpoint
        y = layer(x, state=state, dt=dt)
    torch.testing.assert_close(y, whole[0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("grad", [True, False])
def test_the_per_step_tables_are_formed_one_chunk_at_a_time(grad, monkeypatch):
    """No discretization covers more than one chunk of steps; with autograd each chunk is formed twice (forward,
    and again in the backward, the checkpoint's recomputation), so none is kept between the passes."""
    layer = S4D(4, 8, seed=0)
    B, L, H, M = 2, 200, 4, layer.n_modes
    monkeypatch.setattr(irregular, "CHUNK_BYTES", 64 * B * H * M * 16)    # 64 steps of complex128 (B, H, M)
    lengths = []
    orig = type(layer).irregular_system

    def spy(self, rate, steps):
        lengths.append(steps.shape[1])
        return orig(self, rate, steps)

    monkeypatch.setattr(type(layer), "irregular_system", spy)
    x = torch.randn(B, L, H, requires_grad=grad)
    with torch.set_grad_enabled(grad):
        y = layer(x, dt=torch.full((B, L), 0.7))
    assert lengths == [50, 50, 50, 50]             # 200 steps: 4 chunks of at most 64, of equal length
    if grad:
        y.square().mean().backward()
        assert lengths == [50] * 8
        assert x.grad is not None and torch.isfinite(x.grad).all()
    lengths.clear()
    with torch.set_grad_enabled(grad):
        layer(x[:, :96], dt=torch.full((B, 96), 0.7))
    assert lengths == [96]                         # up to 1.5 chunks: one pass


def test_a_short_sequence_is_one_pass(monkeypatch):
    """At most one chunk of steps: one call, nothing checkpointed (the path of every earlier release)."""
    calls = []
    monkeypatch.setattr(irregular, "checkpoint", lambda *a, **k: calls.append(1))
    layer = LinOSS(3, 4, seed=0)
    layer(torch.randn(2, 50, 3), dt=torch.ones(2, 50)).sum().backward()
    assert calls == []


def test_s5_irregular_pass_keeps_no_per_step_input_matrix():
    """S5 with intervals: B_bar_t = gain_t B is applied as gain_t (B u_t); no (B, L, M, H) tensor is formed or
    saved for the backward (at H = 128 it was 70x the input's size), and the output is the per-step recurrence."""
    torch.manual_seed(0)
    layer = S5(16, 8, seed=0).double()
    B, L, H = 2, 12, 16
    x = torch.randn(B, L, H, dtype=f64, requires_grad=True)
    dt = 0.5 + torch.rand(B, L, dtype=f64)
    shapes = []

    def pack(t):
        shapes.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = layer(x, dt=dt)
    M = layer.n_modes
    assert shapes and all(len(s) < 4 and s != (B, L, M, H) for s in shapes), sorted(set(shapes))
    # the recurrence step by step, with the per-step input matrix formed explicitly
    per_step = dt.unsqueeze(-1) * layer.step_sizes(1.0)
    a, gain = layer._discrete(per_step)
    state = torch.zeros(B, M, dtype=torch.complex128)
    C = layer.C_complex[0]
    want = []
    for t in range(L):
        Bb = gain[:, t].unsqueeze(-1) * layer.B_complex                   # (B, M, H)
        state = a[:, t] * state + torch.einsum("bmh,bh->bm", Bb, x[:, t].to(torch.complex128))
        want.append(layer.scale * (state @ C.T).real + layer.D * x[:, t])
    torch.testing.assert_close(y, torch.stack(want, 1), rtol=1e-10, atol=1e-12)


def test_intervals_trace_with_fullgraph_compile_and_vmap():
    """The intervals' value check is skipped while tracing (a data-dependent bool broke fullgraph=True and vmap
    over the intervals); eager calls still refuse a non-positive interval."""
    layer = S4D(3, 8, seed=0)
    x, dt = torch.randn(2, 40, 3), 0.5 + torch.rand(2, 40)
    want = layer(x, dt=dt)
    got = torch.compile(lambda x, dt: layer(x, dt=dt), fullgraph=True, backend="aot_eager")(x, dt)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    per_row = torch.func.vmap(lambda xi, di: layer(xi[None], dt=di[None])[0])(x, dt)
    torch.testing.assert_close(per_row, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="dt gives 1 non-positive"):
        layer(x, dt=dt.index_put((torch.tensor([1]), torch.tensor([5])), torch.tensor(0.0)))
