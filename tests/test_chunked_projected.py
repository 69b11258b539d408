"""The projected chunked convolution as one autograd node (:mod:`statespaces.kernels.chunked_projected`): equal to
its twin of unfused ops and to the layer's scan and loop in float64, values and gradients of every parameter;
gradcheck of the Function; which calls of LinOSS's chunked mode take it and which keep the old path."""
import pytest
import torch

import statespaces.kernels.chunked_projected as cp
import statespaces.layers.linoss as linoss_mod
from statespaces import LinOSS
from statespaces.backend import use_backend
from statespaces.kernels.chunked_conv import ChunkTables, _toeplitz, _toeplitz_adjoint
from statespaces.kernels.chunked_projected import (
    _ChunkedProjected,
    batch_groups,
    chunked_conv_projected,
    chunked_conv_projected_ref,
)
from statespaces.layers.dlinoss import DLinOSS
from statespaces.layers.oscillator_system import chunk_tables

f64 = torch.float64


@pytest.fixture
def small_groups(monkeypatch):
    """Groups of one or two batch items even at these small shapes (the group loop is what is tested)."""
    monkeypatch.setattr(cp, "GROUP_ELEMENTS", 300)


@pytest.fixture
def calls(monkeypatch):
    """Counts the layer's calls of the fused Function."""
    n = {"fused": 0}

    def spy(*args, **kwargs):
        n["fused"] += 1
        return chunked_conv_projected(*args, **kwargs)

    monkeypatch.setattr(linoss_mod, "chunked_conv_projected", spy)
    return n


def _layer(kind, H=5, P=3, seed=1, **kw):
    if kind == "dlinoss":
        return DLinOSS(H, P, seed=seed, **kw).double()
    return LinOSS(H, P, discretization=kind, seed=seed, **kw).double()


def _grads(layer, x, g, **kw):
    layer.zero_grad()
    x = x.clone().requires_grad_()
    y = layer(x, **kw)
    (y * g).sum().backward()
    return [y.detach(), x.grad] + [p.grad.clone() for p in layer.parameters()]


def test_batch_groups_cover_the_batch():
    assert batch_groups(8, 100, budget=250) == [(0, 2), (2, 4), (4, 6), (6, 8)]
    assert batch_groups(3, 10**9, budget=1) == [(0, 1), (1, 2), (2, 3)]
    assert batch_groups(5, 1, budget=10**6) == [(0, 5)]


def test_toeplitz_adjoint_is_the_adjoint():
    taps, dZ = torch.randn(3, 6, dtype=f64), torch.randn(3, 6, 6, dtype=f64)
    assert torch.allclose((_toeplitz(taps) * dZ).sum(), (taps * _toeplitz_adjoint(dZ)).sum())


@pytest.mark.parametrize("kind", ["im", "imex", "dlinoss"])
def test_forward_equals_twin_scan_and_loop(kind, small_groups):
    layer = _layer(kind)
    x = torch.randn(3, 96, 5, dtype=f64)
    with torch.no_grad():
        tab = chunk_tables(layer._system(1.0), 96, f64)
        args = (x, layer._input_weight(), layer._output_weight(), layer.D, tab)
        fused, twin = chunked_conv_projected(*args), chunked_conv_projected_ref(*args)
        torch.testing.assert_close(fused, twin, rtol=1e-12, atol=1e-12)
        for mode in ("scan", "loop"):
            torch.testing.assert_close(fused, layer(x, mode=mode), rtol=1e-10, atol=1e-10)


def _random_tables(C, T, M, dtype=f64):
    g = torch.Generator().manual_seed(5)
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=dtype)      # noqa: E731
    pow_T = 0.5 * rnd(C, M, 2, 2)                                   # any 2x2 blocks: the carry is linear
    return ChunkTables(rnd(C, T), rnd(C, T, 2 * M), rnd(C, T, 2 * M), pow_T, pow_T.clone())


@pytest.mark.parametrize("skip", [True, False])
def test_gradcheck(skip, small_groups):
    """Every input of the Function, with tables that no oscillator built (M = 2 blocks per column, T = 4)."""
    H, C, T = 3, 4, 4
    tab = _random_tables(C, T, 2)
    u, W_in, W_out, D = (torch.randn(*s, dtype=f64) for s in ((3, 12, H), (C, H), (H, C), (H,)))
    inputs = [t.requires_grad_() for t in (u, W_in, W_out, D, tab.taps, tab.w_in, tab.w_out, tab.pow_T)]
    if not skip:
        inputs[3] = None
    assert torch.autograd.gradcheck(lambda *a: _ChunkedProjected.apply(*a), inputs)


@pytest.mark.parametrize("kind", ["im", "imex"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_layer_gradients_equal_the_twin(kind, bidirectional, small_groups, calls, monkeypatch):
    """Gradients of B, C (and C_back), D, A_hat, dt_raw and the input through the fused node equal those of the
    twin of unfused ops (the same layer with the fused node refused)."""
    layer = _layer(kind, bidirectional=bidirectional, mode="chunked")
    x, g = torch.randn(3, 64, 5, dtype=f64), torch.randn(3, 64, 5, dtype=f64)
    fused = _grads(layer, x, g)
    assert calls["fused"] == (2 if bidirectional else 1)
    with use_backend("ref"):                                   # the twin of unfused ops
        twin = _grads(layer, x, g)
    assert calls["fused"] == (2 if bidirectional else 1)
    for a, b in zip(fused, twin):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    for a, b in zip(fused, _grads(layer, x, g, mode="loop")):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-8)


def test_float32_close_to_float64(calls):
    layer = _layer("imex", H=6, P=4)
    x = torch.randn(2, 128, 6, dtype=f64)
    want = layer(x, mode="chunked")
    got = layer.float()(x.float(), mode="chunked")
    assert calls["fused"] == 2
    torch.testing.assert_close(got, want.float(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["im", "imex"])
def test_other_calls_keep_the_old_path(kind, calls):
    """Stateful calls: the unfused twin, still equal to the loop."""
    layer = _layer(kind, mode="chunked")
    x = torch.randn(2, 64, 5, dtype=f64)
    s0 = layer.initial_state(2) + torch.randn(2, 2, 3, dtype=torch.complex128)
    y, s = layer(x, state=s0, return_state=True)
    y_l, s_l = layer(x, state=s0, return_state=True, mode="loop")
    torch.testing.assert_close(y, y_l, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s, s_l, rtol=1e-10, atol=1e-10)
    y, s = layer(x, return_state=True)
    torch.testing.assert_close(s, layer(x, return_state=True, mode="loop")[1], rtol=1e-10, atol=1e-10)
    assert calls["fused"] == 0
    layer(x)
    assert calls["fused"] == 1


@pytest.mark.parametrize("kind", ["im", "imex", "dlinoss"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("L", [1, 31, 40, 95])
def test_a_length_of_partial_chunks_is_padded_into_the_fused_node(kind, bidirectional, L, calls):
    """L not a multiple of the chunk length: zeros after the last step, the fused node, the output cut back. Values
    and gradients equal the twin's and the loop's (the anti-causal branch too: its pass is causal on the reversed
    input), and the output is the caller's own tensor (modified in place without an autograd error)."""
    layer = _layer(kind, bidirectional=bidirectional, mode="chunked")
    x, g = torch.randn(2, L, 5, dtype=f64), torch.randn(2, L, 5, dtype=f64)
    fused = _grads(layer, x, g)
    assert calls["fused"] == (2 if bidirectional else 1)         # L < 32: one chunk of L steps
    with use_backend("ref"):
        twin = _grads(layer, x, g)
    for a, b in zip(fused, twin):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    for a, b in zip(fused, _grads(layer, x, g, mode="loop")):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-8)
    y = layer(x.clone().requires_grad_())
    y.mul_(2).sum().backward()


def test_bad_input_still_raises(calls):
    layer = _layer("im", mode="chunked")
    with pytest.raises(ValueError):
        layer(torch.randn(2, 64, 4, dtype=f64))                          # wrong channel count
    with pytest.raises(ValueError):
        layer(torch.randn(64, 5, dtype=f64))                             # no batch dimension
    with pytest.raises(ValueError, match="chunk length"):
        chunked_conv_projected(torch.randn(2, 40, 5, dtype=f64), layer._input_weight(), layer._output_weight(),
                               layer.D, chunk_tables(layer._system(1.0), 40, f64))
    assert calls["fused"] == 0


def test_export_keeps_the_traceable_ops(calls):
    """torch.export traces the twin of plain ops (the fused node is left out of traced graphs); equal to eager."""
    layer = _layer("im", H=4, P=3).eval()
    x = torch.randn(2, 32, 4, dtype=f64)
    prog = torch.export.export(layer, (x,))
    assert calls["fused"] == 0
    torch.testing.assert_close(prog.module()(x), layer(x), rtol=1e-12, atol=1e-12)
    assert calls["fused"] == 1


def test_backward_twice_with_retain_graph(small_groups):
    """The backward reads its saved buffers without overwriting them: a second pass gives the same gradients."""
    layer = _layer("imex", mode="chunked")
    x = torch.randn(2, 64, 5, dtype=f64, requires_grad=True)
    y = layer(x)
    first = torch.autograd.grad(y.square().sum(), [x, *layer.parameters()], retain_graph=True)
    second = torch.autograd.grad(y.square().sum(), [x, *layer.parameters()])
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_rowwise_dot_in_blocks_equals_the_whole_product():
    """The backward's D gradient, ``(G * U).sum(0)``, summed block of rows by block (full blocks and a partial
    one), added to what ``out`` holds."""
    from statespaces.kernels.chunked_projected import DOT_ROWS, _add_rowwise_dot

    g = torch.Generator().manual_seed(0)
    for R in (1, DOT_ROWS, 2 * DOT_ROWS + 77):
        a = torch.randn(R, 5, dtype=torch.float64, generator=g)
        b = torch.randn(R, 5, dtype=torch.float64, generator=g)
        out = torch.ones(5, dtype=torch.float64)
        _add_rowwise_dot(out, a, b)
        torch.testing.assert_close(out, 1 + (a * b).sum(0), rtol=1e-12, atol=1e-12)


def test_toeplitz_and_its_adjoint():
    """The chunk's Toeplitz matrix ``Z[s, t] = taps[t - s]`` (t >= s, else 0) against a loop, and its adjoint
    against autograd of the product with it."""
    from statespaces.kernels.chunked_conv import _toeplitz, _toeplitz_adjoint

    taps = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    Z = _toeplitz(taps)
    want = torch.zeros(3, 6, 6, dtype=torch.float64)
    for s in range(6):
        for t in range(s, 6):
            want[:, s, t] = taps[:, t - s]
    assert torch.equal(Z, want)
    dZ = torch.randn(3, 6, 6, dtype=torch.float64)
    torch.testing.assert_close(_toeplitz_adjoint(dZ), torch.autograd.grad((Z * dZ).sum(), taps)[0])


def test_rowwise_dot_writes_no_resized_buffer():
    """The partial last block uses a slice of the buffer of its own size (an ``out=`` of another shape is resized
    by torch with a deprecation warning, an error in a later release)."""
    import warnings

    from statespaces.kernels.chunked_projected import DOT_ROWS, _add_rowwise_dot

    a, b, out = torch.ones(DOT_ROWS + 37, 3), torch.ones(DOT_ROWS + 37, 3), torch.zeros(3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _add_rowwise_dot(out, a, b)
    torch.testing.assert_close(out, torch.full((3,), float(DOT_ROWS + 37)))


def test_bmm_in_place_equals_the_product():
    """The backward's ``dV = dY Z^T`` written over dY block of chunk rows by block (full blocks and a partial one,
    no warning from an ``out=`` of another size) equals the plain batched product."""
    import warnings

    from statespaces.kernels.chunked_projected import _bmm_in_place

    g = torch.Generator().manual_seed(0)
    for R, rows in ((1, 4), (8, 4), (11, 4), (5, 16)):
        a = torch.randn(3, R, 6, dtype=f64, generator=g)
        b = torch.randn(3, 6, 6, dtype=f64, generator=g)
        want = torch.bmm(a, b)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = _bmm_in_place(a, b, torch.empty(3, rows, 6, dtype=f64))
        assert got.data_ptr() == a.data_ptr()
        torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-13)


def test_gradients_with_small_in_place_blocks(monkeypatch):
    """The fused backward with the in-place product cut into blocks of 4 chunk rows (21 rows: a partial last
    one) gives the twin's gradients: each block is read before it is overwritten."""
    monkeypatch.setattr(cp, "INPLACE_ROWS", 4)
    torch.manual_seed(0)
    layer = _layer("im", mode="chunked")
    x = torch.randn(3, 7 * 32, 5, dtype=f64)
    g = torch.randn(3, 7 * 32, 5, dtype=f64)
    fused = _grads(layer, x, g)
    with use_backend("ref"):
        twin = _grads(layer, x, g)
    for a, b in zip(fused, twin):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
