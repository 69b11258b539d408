"""Irregular sampling through bidirectional layers (S4D, S5, LinOSS / D-LinOSS ``"sum"`` and ``"concat"``).

The anti-causal half runs the time-reversed sequence, each sample held over the interval *after* it (the mirror of
the causal convention; :func:`statespaces.layers.irregular.reversed_steps`), the last sample over the row's first
interval. Checked against: the regular bidirectional layer (FFT / chunked routes) for equal intervals; a float64
reference that discretizes every interval by the matrix exponential and loops both ways (S4D); padding (a padded row
equals the row alone); gradcheck.
"""
import pytest
import torch

from statespaces.layers import S4D, make_layer
from statespaces.layers.irregular import reversed_steps

f64, c128 = torch.float64, torch.complex128

SPECS = {
    "s4d": dict(kind="s4d", d_state=6, bidirectional=True, seed=1),
    "s4d-bilinear": dict(kind="s4d", d_state=6, bidirectional=True, discretization="bilinear", seed=2),
    "s5": dict(kind="s5", d_state=8, bidirectional=True, seed=3),
    "linoss-sum": dict(kind="linoss", n_oscillators=4, bidirectional="sum", discretization="IM", seed=4),
    "linoss-concat": dict(kind="linoss", n_oscillators=4, bidirectional="concat", discretization="IM", seed=5),
    "dlinoss-sum": dict(kind="dlinoss", n_oscillators=4, bidirectional="sum", discretization="IM", seed=6),
}
LAYERS = {name: (lambda spec=spec: make_layer(spec, 3)) for name, spec in SPECS.items()}


def _s4d_reference(layer, u, dt):
    """Bidirectional S4D (ZOH) by hand: each sample's interval ``dt * Delta_h`` discretized by the matrix exponential
    of ``[[A s, B s], [0, 0]]``; causal loop read by ``C[0]`` plus the skip; anti-causal loop from the end, sample s
    held over the interval after it (``dt[s + 1]``; the last sample over ``dt[0]``), read by ``C[1]`` one step
    earlier (lags -1..-L)."""
    A = layer.continuous_A().detach().to(c128)                   # (H, M)
    Bc = torch.view_as_complex(layer.B.detach().contiguous())
    C = torch.view_as_complex(layer.C.detach().contiguous())
    Delta = torch.exp(layer.log_dt.detach())
    Bsz, L, H = u.shape
    M = A.shape[-1]

    def step(h, s):
        blk = torch.zeros(M + 1, M + 1, dtype=c128)
        blk[:M, :M] = torch.diag(A[h]) * s
        blk[:M, M] = Bc[h] * s
        E = torch.linalg.matrix_exp(blk)
        return E[:M, :M], E[:M, M]

    y = torch.zeros(Bsz, L, H, dtype=f64)
    for b in range(Bsz):
        for h in range(H):
            x = torch.zeros(M, dtype=c128)
            for t in range(L):
                dA, dB = step(h, float(dt[b, t] * Delta[h]))
                x = dA @ x + dB * u[b, t, h]
                y[b, t, h] += layer.scale * (C[0, h] @ x).real + layer.D.detach()[h] * u[b, t, h]
            z = torch.zeros(M, dtype=c128)
            for s in range(L - 1, 0, -1):
                after = dt[b, s + 1] if s + 1 < L else dt[b, 0]
                dA, dB = step(h, float(after * Delta[h]))
                z = dA @ z + dB * u[b, s, h]
                y[b, s - 1, h] += layer.scale * (C[1, h] @ z).real
    return y


def test_reversed_steps_mirror_the_intervals():
    steps = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 5.0]])
    # reversed step j reads sample L-1-j and covers the interval after it; the last sample takes the first interval
    assert reversed_steps(steps).tolist() == [[1.0, 4.0, 3.0, 2.0], [5.0, 5.0, 7.0, 6.0]]
    assert torch.equal(reversed_steps(torch.ones(2, 5)), torch.ones(2, 5))


def test_s4d_bidirectional_intervals_equal_the_matrix_exponential_reference():
    torch.manual_seed(0)
    layer = S4D(2, 4, bidirectional=True, seed=7).double()
    with torch.no_grad():
        layer.C.normal_()                                  # the two directions' readouts differ
    u = torch.randn(2, 9, 2, dtype=f64)
    dt = torch.rand(2, 9, dtype=f64) * 3 + 0.05
    torch.testing.assert_close(layer(u, dt=dt), _s4d_reference(layer, u, dt), atol=1e-9, rtol=1e-8)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_equal_intervals_are_the_regular_bidirectional_layer(name):
    """Constant intervals c: the regular layer at rate c, by its own (FFT, chunked) route; forward and gradients."""
    torch.manual_seed(0)
    layer = LAYERS[name]().double()
    x = torch.randn(2, 40, 3, dtype=f64, requires_grad=True)
    for c in (1.0, 0.6):
        y = layer(x, dt=torch.full((2, 40), c, dtype=f64))
        ref = layer(x, rate=c)
        torch.testing.assert_close(y, ref, atol=1e-10, rtol=1e-9)
        g = torch.randn_like(y)
        got = torch.autograd.grad(y, [x, *layer.parameters()], g, allow_unused=True)
        want = torch.autograd.grad(ref, [x, *layer.parameters()], g, allow_unused=True)
        for a, b in zip(got, want):
            if b is not None:
                torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-8)


VARYING = [name for name in sorted(LAYERS) if not name.startswith("dlinoss")]   # D-LinOSS refuses varying steps


@pytest.mark.parametrize("name", VARYING)
def test_timestamps_of_a_padded_row_change_nothing(name):
    """Through a classifier with ``lengths``: a right-padded row (zeros in its padding, times included) gives the
    output of the row alone, so the reversed pass starts at the row's last valid sample."""
    from statespaces import SequenceClassifier

    torch.manual_seed(0)
    model = SequenceClassifier(2, 3, d_model=3, n_layers=2, layer=SPECS[name], pool="mean").double().eval()
    L, n = 14, 9
    x = torch.randn(2, L, 2, dtype=f64)
    ts = torch.cumsum(torch.rand(2, L, dtype=f64) + 0.2, 1)
    x[1, n:] = 0
    ts[1, n:] = 0
    out = model(x, lengths=torch.tensor([L, n]), timestamps=ts)
    alone = model(x[1:, :n], timestamps=ts[1:, :n])
    torch.testing.assert_close(out[1:], alone, atol=1e-10, rtol=0)


@pytest.mark.parametrize("name", ["s4d", "s5", "linoss-sum"])
def test_intervals_gradcheck(name):
    torch.manual_seed(0)
    layer = LAYERS[name]().double()
    x = torch.randn(1, 7, 3, dtype=f64, requires_grad=True)
    dt = (torch.rand(1, 7, dtype=f64) + 0.3).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, dt: layer(x, dt=dt), (x, dt))


def test_the_anticausal_half_reads_the_future_only_and_the_intervals_after_it():
    """Perturbing the interval before sample 0 moves every output (it is the last sample's reversed interval, and
    the first causal interval); perturbing the interval between samples 4 and 5 moves the causal outputs from 5 on
    and the anti-causal outputs before 4 only: outputs 4.. and 0..3 both move, output at 4 through sample 5's
    reversed step, which covers that interval."""
    torch.manual_seed(0)
    layer = S4D(1, 4, bidirectional=True, seed=9).double()
    x = torch.randn(1, 10, 1, dtype=f64)
    dt = torch.ones(1, 10, dtype=f64)
    base = layer(x, dt=dt)
    causal = S4D(1, 4, seed=9).double()
    with torch.no_grad():
        causal.C.copy_(layer.C[:1])
    moved = dt.clone()
    moved[0, 5] = 2.0                               # the interval between samples 4 and 5
    diff = (layer(x, dt=moved) - base).abs()[0, :, 0]
    cdiff = (causal(x, dt=moved) - causal(x, dt=dt)).abs()[0, :, 0]
    assert torch.all(cdiff[:5] == 0) and torch.all(cdiff[5:] > 0)
    # anti-causal: sample 4 is held over [t4, t5], so outputs 0..3 (which read sample 4 onwards) move, and output 4
    # (which reads samples 5.. only) does not, beyond the causal change
    acausal = diff - cdiff
    assert torch.all(acausal[:4].abs() > 0)
    assert torch.all(acausal[4:].abs() < 1e-15)


def test_s5_bidirectional_intervals_equal_a_loop_both_ways():
    """S5 (ZOH, its own convention: the backward scan includes lag 0, no shift): each sample's modes discretized in
    closed form, ``exp(Lambda s)`` and ``(exp(Lambda s) - 1) / Lambda``, looped forward with ``C[0]`` and the skip, and
    from the end with ``C[1]``, sample s held over the interval after it."""
    torch.manual_seed(0)
    layer = make_layer(SPECS["s5"], 3).double()
    u = torch.randn(2, 8, 3, dtype=f64)
    dt = torch.rand(2, 8, dtype=f64) * 3 + 0.05
    with torch.no_grad():
        lam, Bm, C = layer.continuous_A().to(c128), layer.B_complex.to(c128), layer.C_complex.to(c128)
        step = layer.step_sizes(1.0).to(f64)                       # (M,)
        want = torch.zeros_like(u)
        for b in range(2):
            x = torch.zeros(lam.shape[0], dtype=c128)
            for t in range(8):
                e = torch.exp(lam * step * dt[b, t])
                x = e * x + (e - 1) / lam * (Bm @ u[b, t].to(c128))
                want[b, t] += layer.scale * (C[0] @ x).real + layer.D * u[b, t]
            z = torch.zeros_like(x)
            for s in range(7, -1, -1):
                e = torch.exp(lam * step * (dt[b, s + 1] if s + 1 < 8 else dt[b, 0]))
                z = e * z + (e - 1) / lam * (Bm @ u[b, s].to(c128))
                want[b, s] += layer.scale * (C[1] @ z).real
        torch.testing.assert_close(layer(u, dt=dt), want, atol=1e-10, rtol=1e-9)


def _causal_twin(layer, C=None, skip=True):
    """A causal copy of a LinOSS-family ``layer`` (its own oscillators), read out by ``C`` (default its own C) and
    without the skip unless ``skip``."""
    import copy

    twin = copy.deepcopy(layer)
    twin.bidirectional_mode, twin.bidirectional = None, False
    with torch.no_grad():
        if C is not None:
            twin.C.copy_(C)
        if not skip:
            twin.D.zero_()
    return twin


@pytest.mark.parametrize("name", ["linoss-sum", "linoss-concat"])
def test_linoss_anticausal_half_is_the_causal_layer_in_mirrored_time(name):
    """The anti-causal half equals a causal layer run on the reversed samples at the mirrored times ``-t`` (their
    intervals are the ones after each sample), by the sequential loop: ``"sum"`` reads the same oscillators by
    ``C_back``, lags -1..-L; ``"concat"`` runs its reversed layer and mixes both halves by ``out_proj``."""
    torch.manual_seed(0)
    layer = make_layer(SPECS[name], 3).double()
    x = torch.randn(2, 12, 3, dtype=f64)
    ts = torch.cumsum(torch.rand(2, 12, dtype=f64) * 2 + 0.1, 1)
    mirrored = (-ts).flip(1)
    fwd = _causal_twin(layer)(x, timestamps=ts, mode="loop")
    if name.endswith("concat"):
        back = layer.reverse(x.flip(1), timestamps=mirrored, mode="loop").flip(1)
        want = layer.out_proj(torch.cat([fwd, back], -1))
    else:
        back = _causal_twin(layer, layer.C_back, skip=False)(x.flip(1), timestamps=mirrored, mode="loop").flip(1)
        want = fwd + torch.cat([back[:, 1:], torch.zeros_like(back[:, :1])], 1)
    torch.testing.assert_close(layer(x, timestamps=ts), want, atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("name", ["s4d", "s5", "linoss-sum"])
def test_bidirectional_intervals_in_chunks_equal_one_pass(name, monkeypatch):
    """A long sequence runs in chunks of the time axis (irregular.over_time_chunks), each direction on its own; a
    short one in one pass, where S4D's reversed pass reuses the causal tables reordered: the same outputs and
    gradients in float64."""
    import statespaces.layers.irregular as irregular

    layer = LAYERS[name]().double()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 75, 3, generator=g, dtype=f64)
    dt = 0.3 + torch.rand(2, 75, generator=g, dtype=f64)

    def run():
        a, d = x.clone().requires_grad_(), dt.clone().requires_grad_()
        layer.zero_grad()
        y = layer(a, dt=d)
        y.square().sum().backward()
        return [y.detach(), a.grad, d.grad] + [p.grad for p in layer.parameters() if p.grad is not None]

    monkeypatch.setattr(irregular, "CHUNK_BYTES", 1 << 40)
    whole = run()
    monkeypatch.setattr(irregular, "CHUNK_BYTES", 1)
    monkeypatch.setattr(irregular, "MIN_CHUNK", 8)
    assert not irregular.one_pass(75, 1)
    chunked = run()
    assert len(whole) == len(chunked) >= 5
    for got, want in zip(chunked, whole):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("name", ["s4d", "s4d-bilinear", "s5", "linoss-sum"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_repeated_intervals_formed_once_equal_the_per_step_tables(name, bidirectional, monkeypatch):
    """Intervals on a grid (samples missing from a regular series: gaps of 1, 2 or 3 steps) are discretized once
    per distinct value and gathered (irregular.per_distinct_step): the same outputs, and the same gradients of
    every parameter, as forming every step's table; intervals that need a gradient take the per-step tables."""
    import statespaces.layers.irregular as irregular

    spec = {**SPECS[name], "bidirectional": bidirectional}
    layer = make_layer(spec, 3).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 30, 3, generator=g, dtype=f64)
    dt = torch.randint(1, 4, (4, 30), generator=g).to(f64)
    calls = []
    real = irregular.per_distinct_step

    def spy(fn, steps):                     # records how many intervals each table is formed for
        return real(lambda s: (calls.append(s.numel() <= 3), fn(s))[1], steps)

    def run(share):
        monkeypatch.setattr(irregular, "DISTINCT_SHARE", share)
        layer.zero_grad()
        y = layer(x, dt=dt)
        y.square().sum().backward()
        return [y.detach()] + [p.grad.clone() for p in layer.parameters() if p.grad is not None]

    direct, distinct = run(0.0), run(1 / 8)
    torch.testing.assert_close(distinct[0], direct[0], rtol=0, atol=0)
    for a, b in zip(distinct[1:], direct[1:]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    module = __import__(type(layer).__module__, fromlist=["per_distinct_step"])
    monkeypatch.setattr(module, "per_distinct_step", spy)
    layer(x, dt=dt)
    assert calls and all(calls)
    calls.clear()
    d = dt.clone().requires_grad_()
    layer(x, dt=d).sum().backward()
    assert calls and not any(calls) and d.grad is not None and bool(d.grad.abs().sum() > 0)
