"""S4 layers that learn C~ (``l_max``) on the dense chunked path (issue 17): the forward recovers
``C = C~ (I - dA^l_max)^-1`` by the step's own conversion and runs the chunked convolution; output,
state and every gradient equal the Cauchy/FFT route (backend "ref", which uses the learned C~ kernel
directly for L <= l_max) in float64. Stateful calls take it by the rule; stateless ones keep the FFT
(measured faster: no dA^L at all), so the stateless case is run with the rule overridden. Where the
conversion is ill-conditioned, a call without a state falls back to the FFT route and one with a state
is refused, as the step is."""
import pytest
import torch

from statespaces import S4, backend
from statespaces.kernels import chunked as kchunked
from statespaces.kernels.chunked_conv import prefer_chunked

C128 = torch.complex128


@pytest.fixture
def dense_calls(monkeypatch):
    calls = []
    orig = kchunked.chunked_conv_dense
    monkeypatch.setattr(kchunked, "chunked_conv_dense", lambda *a, **k: calls.append(1) or orig(*a, **k))
    return calls


def _layer(init, l_max, seed=3):
    layer = S4(3, 8, init=init, l_max=l_max, seed=seed).double()
    with torch.no_grad():                       # C~ away from its init value, as after training
        layer.C.add_(0.3 * torch.randn(layer.C.shape, dtype=torch.float64,
                                       generator=torch.Generator().manual_seed(seed)))
    return layer


def _run(layer, x, s0, return_state):
    """Output, final state, and the gradients of x, the state and every parameter."""
    layer.zero_grad()
    xx = x.clone().requires_grad_()
    ss = None if s0 is None else s0.clone().requires_grad_()
    out = layer(xx, state=ss, return_state=return_state)
    y, s = out if return_state else (out, None)
    L = x.shape[1]
    loss = (y * torch.cos(0.7 * torch.arange(L, dtype=torch.float64))[:, None]).sum()
    if s is not None:
        loss = loss + (torch.view_as_real(s) * torch.linspace(-1, 1, 2)).sum()
    loss.backward()
    res = [y.detach()] + ([] if s is None else [s.detach()]) + [xx.grad]
    res += [] if ss is None else [ss.grad]
    return res + [p.grad.clone() for p in layer.parameters()]


@pytest.mark.parametrize("init", ["legs", "fout"])
@pytest.mark.parametrize("L", [29, 40])                                  # L < l_max and L == l_max
@pytest.mark.parametrize("mode", ["stateless", "return_state", "state"])
def test_lmax_chunked_equals_the_fft_route(init, L, mode, dense_calls):
    torch.manual_seed(0)
    layer = _layer(init, l_max=40)
    x = torch.randn(2, L, 3, dtype=torch.float64)
    s0 = (layer.initial_state(2) + torch.randn(2, 3, 4, dtype=C128)) if mode == "state" else None
    stateful = mode != "stateless"
    assert prefer_chunked(x, stateful, dense=True) == stateful              # CPU: stateless S4 takes the FFT
    assert layer._use_chunked(x, stateful) == stateful                    # the rule: stateless keeps the FFT
    if not stateful:
        layer._use_chunked = lambda u, st: True                            # the chunked form itself
    got = _run(layer, x, s0, stateful)
    layer.__dict__.pop("_use_chunked", None)
    assert len(dense_calls) == 1                                          # the dense chunked path ran
    with backend.use_backend("ref"):
        ref = _run(layer, x, s0, stateful)
    assert len(dense_calls) == 1                                          # ... and "ref" did not
    names = ["y"] + (["state"] if stateful else []) + ["x"] + (["state0"] if s0 is not None else [])
    names += [n for n, _ in layer.named_parameters()]
    for n, a, b in zip(names, got, ref):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10, msg=lambda m, n=n: f"{n}: {m}")


def _undamped(layer):
    with torch.no_grad():                       # an (almost) undamped real mode: I - dA^l_max singular
        layer.P.zero_()
        layer.Lambda_real.fill_(-27.6)
        layer.Lambda_imag[:, -1] = 0.0
    return layer


def test_ill_conditioned_recovery_falls_back_or_refuses(dense_calls):
    """cond(I - dA^l_max) ~ 1e13: stateless calls (with or without return_state) run the FFT route with
    the exact learned-C~ kernel, equal to the "ref" route; a call with a state is refused like step()."""
    layer = _undamped(S4(2, 8, l_max=8, seed=0).double())
    x = torch.randn(1, 8, 2, dtype=torch.float64)
    y, s = layer(x, return_state=True)                  # stateful by the rule: the chunked form, then the fallback
    layer._use_chunked = lambda u, st: True
    y0 = layer(x)
    del layer._use_chunked
    assert not dense_calls
    with backend.use_backend("ref"):
        y_ref, s_ref = layer(x, return_state=True)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(y0, y_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(s, s_ref, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="condition number"):
        layer(x, state=layer.initial_state(1))
    with pytest.raises(ValueError, match="condition number"):
        layer.step(x[:, 0], layer.initial_state(1))
    assert not dense_calls


def test_recovery_verdict_is_remembered_by_value(monkeypatch):
    """The condition number behind the chunked choice is computed once per values of (Lambda, P, dt),
    a bad verdict included, and recomputed when they change."""
    calls = []
    svdvals = torch.linalg.svdvals          # the recovery's error bound comes from one SVD per check
    monkeypatch.setattr(torch.linalg, "svdvals", lambda *a, **k: calls.append(1) or svdvals(*a, **k))
    layer = _undamped(S4(2, 8, l_max=8, seed=0))
    x = torch.randn(1, 8, 2)
    layer(x, return_state=True)
    layer(x, return_state=True)
    assert len(calls) == 1
    with torch.no_grad():
        layer.Lambda_real.fill_(0.0)             # Re Lambda = -1: well conditioned, chunked again
    layer(x, return_state=True)[0].sum().backward()
    layer(x, return_state=True)
    assert len(calls) == 2
