"""One equivalence suite over every layer and execution path (issue: reliability).

For each layer (S4D with each init and discretization, LinOSS IM/IMEX with each forward mode, S4 with
each measure once it exists) and random shapes drawn by hypothesis: convolution == step-by-step ==
chunked with random cut points, outputs and input/parameter gradients; bf16 autocast close to fp32;
fuzzed bad input always raises a documented ValueError/TypeError. HYPOTHESIS_PROFILE=long for more cases.
"""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from statespaces import S4, S4D, LinOSS

FACTORIES = {
    **{f"s4d-{init}": (lambda init=init: lambda H, N, seed: S4D(H, N, init=init, seed=seed))()
       for init in ("legs", "inv", "lin", "real", "rand", "inv2", "quad")},
    "s4d-bilinear": lambda H, N, seed: S4D(H, N, init="legs", discretization="bilinear", seed=seed),
    **{f"linoss-{d}-{m}": (lambda d=d, m=m: lambda H, N, seed: LinOSS(H, N // 2, discretization=d, mode=m, seed=seed))()
       for d in ("IM", "IMEX") for m in ("scan", "conv")},
}
for measure in ("legs", "legt", "fout"):
    FACTORIES[f"s4-{measure}"] = (lambda m=measure: lambda H, N, seed: S4(H, N, init=m, seed=seed))()

shapes = st.tuples(st.integers(1, 3), st.integers(1, 40), st.integers(1, 4), st.sampled_from([2, 4, 8]))


def _run_step(layer, x):
    state = layer.initial_state(x.shape[0])
    ys = []
    for t in range(x.shape[1]):
        y, state = layer.step(x[:, t], state)
        ys.append(y)
    return torch.stack(ys, 1), state


def _run_chunked(layer, x, cuts):
    ys, state, prev = [], None, 0
    for c in list(cuts) + [x.shape[1]]:
        y, state = layer(x[:, prev:c], state=state, return_state=True)
        ys.append(y)
        prev = c
    return torch.cat(ys, 1), state


@pytest.mark.parametrize("name", sorted(FACTORIES))
@given(shape=shapes, seed=st.integers(0, 2**16), data=st.data())
@settings(max_examples=6)
def test_conv_step_chunked_agree(name, shape, seed, data):
    B, L, H, N = shape
    layer = FACTORIES[name](H, N, seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, L, H, generator=gen)
    cuts = sorted(set(data.draw(st.lists(st.integers(1, max(1, L - 1)), max_size=3)))) if L > 1 else []
    with torch.no_grad():
        y = layer(x)
        y_step, s_step = _run_step(layer, x)
        y_chunk, s_chunk = _run_chunked(layer, x, cuts)
    scale = float(y.abs().max().clamp(min=1.0))
    assert torch.allclose(y_step, y, atol=1e-5 * scale, rtol=0), name
    assert torch.allclose(y_chunk, y, atol=1e-5 * scale, rtol=0), name
    sscale = float(s_step.abs().max().clamp(min=1.0))
    assert torch.allclose(s_chunk, s_step, atol=1e-4 * sscale, rtol=0), name


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_chunked_gradients_equal_full_gradients(name):
    torch.manual_seed(0)
    layer = FACTORIES[name](3, 8, 1).double()
    x = torch.randn(2, 23, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 23, 3, dtype=torch.float64)

    def grads(fn):
        layer.zero_grad()
        x.grad = None
        (fn() * w).sum().backward()
        return [x.grad.clone()] + [p.grad.clone() for p in layer.parameters()]

    full = grads(lambda: layer(x))
    chunked = grads(lambda: _run_chunked(layer, x, [5, 6, 17])[0])
    for a, b in zip(full, chunked):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-7)


@pytest.mark.parametrize("name", ["s4d-legs", "linoss-IM-scan", "s4-legs"])
def test_bf16_autocast_close_to_fp32(name):
    layer = FACTORIES[name](4, 8, 2)
    x = torch.randn(2, 64, 4)
    with torch.no_grad():
        ref = layer(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = layer(x)
    assert torch.isfinite(y).all()
    assert float((y.float() - ref).abs().max()) < 0.05 * float(ref.abs().max())


BAD_INPUTS = st.sampled_from(["rank2", "rank4", "channels", "int", "complex", "nan", "inf", "empty", "float64",
                               "device", "huge"])


@pytest.mark.parametrize("name", sorted(FACTORIES))
@given(kind=BAD_INPUTS, L=st.integers(1, 9))
@settings(max_examples=9)
def test_fuzz_bad_input_raises_documented_errors(name, kind, L):
    layer = FACTORIES[name](3, 4, 0)
    x = {
        "rank2": torch.randn(L, 3), "rank4": torch.randn(1, 1, L, 3), "channels": torch.randn(2, L, 5),
        "int": torch.ones(2, L, 3, dtype=torch.int32), "complex": torch.randn(2, L, 3, dtype=torch.complex64),
        "nan": torch.full((2, L, 3), float("nan")), "inf": torch.full((2, L, 3), float("inf")),
        "empty": torch.randn(2, 0, 3), "float64": torch.randn(2, L, 3, dtype=torch.float64),
        "device": torch.randn(2, L, 3, device="meta"), "huge": torch.full((2, L, 3), 1e38),
    }[kind]
    if kind == "huge":  # finite but huge input: a finite answer or FloatingPointError, never inf/NaN silently
        try:
            y = layer(x)
        except FloatingPointError as e:
            assert "overflowed" in str(e)
            return
        assert torch.isfinite(y).all()
        return
    with pytest.raises((ValueError, TypeError)):
        layer(x)
    if x.dim() == 3 and x.shape[1] > 0:
        with pytest.raises((ValueError, TypeError)):
            layer.step(x[:, 0], layer.initial_state(x.shape[0]))


@pytest.mark.parametrize("name", ["s4d-legs", "s4d-inv", "linoss-IM-scan", "linoss-IMEX-scan", "s4-legs"])
def test_million_step_sequence_stays_bounded(name):
    """L = 10^6 processed in chunks of 10^5 with default inits: finite outputs, state bounded by
    sum_l |K-ish| <= (max|u|) * sum over modes |dB| / (1 - |dA|) (|dA| <= 1 results)."""
    layer = FACTORIES[name](2, 16, 3)
    state = None
    gen = torch.Generator().manual_seed(0)
    peak = 0.0
    with torch.no_grad():
        for _ in range(10):
            u = torch.rand(1, 100_000, 2, generator=gen) * 2 - 1
            y, state = layer(u, state=state, return_state=True)
            assert torch.isfinite(y).all() and torch.isfinite(state).all()
            peak = max(peak, float(state.abs().max()))
            if isinstance(layer, S4D):  # |x_n| <= max|u| * |dB| / (1 - |dA|) per mode, since |dA| < 1
                sys = layer.diagonal_system()
                bound = sys.dB.abs() / (1 - torch.exp(sys.log_dA.real))
                assert bool((state.abs()[0] <= bound * 1.0001).all())
    assert math.isfinite(peak) and peak < 1e6
