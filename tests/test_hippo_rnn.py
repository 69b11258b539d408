"""HiPPO-RNN cells (thesis §4.4, Remark 4.8): memory vs the online approximation, LegS timescale
robustness, sequence vs step, gradients, bad input."""
import math

import pytest
import torch

import statespaces.hippo as hippo
from statespaces.hippo import HiPPO, HiPPOCell, HiPPOMemory, HiPPORNN, transition
from statespaces.hippo.rnn import legs_lsi_transitions

F64 = torch.float64
MEMORIES = [("legs", {}), ("legs", {"fast": True}), ("legs", {"discretization": "backward_euler"}),
            ("legt", {"theta": 12.0}), ("lmu", {"theta": 12.0, "dt": 0.5}), ("lagt", {"theta": 3.0, "alpha": 0.5}),
            ("legt", {"theta": 12.0, "discretization": "zoh"})]


def _online(measure, kw, N):
    """The independent route: :class:`statespaces.hippo.HiPPO` with the same memory settings."""
    kw = dict(kw)
    kw.pop("fast", None)
    if measure == "legs":
        return HiPPO(N, "legs", mode="lsi", fast=False, **kw)
    return HiPPO(N, measure, mode="lti", dt=kw.pop("dt", 1.0), **kw)


@pytest.mark.parametrize("measure,kw", MEMORIES)
@pytest.mark.parametrize("cell", ["gated", "gru"])
def test_cell_memory_equals_online_approximation(measure, kw, cell):
    """Run the cell, record the scalar signals f_k = W_f h_k it wrote, and project them with the online
    HiPPO module: the cell's memory must be that projection after every step (float64)."""
    torch.manual_seed(1)
    N, m, L = 6, 2, 25
    rnn = HiPPORNN(3, 8, memory=measure, order=N, channels=m, cell=cell, **kw).double()
    x = torch.randn(2, L, 3, dtype=F64)
    state = rnn.initial_state(2)
    fs, cs = [], []
    for k in range(L):
        h, state = rnn.step(x[:, k], state)
        fs.append(rnn.cell.write(h))
        cs.append(state.c)
    f, c = torch.stack(fs, 1), torch.stack(cs, 1)                       # (B, L, m), (B, L, m, N)
    ref = _online(measure, kw, N)(f)
    assert c.abs().max() > 1e-3
    torch.testing.assert_close(c, ref, atol=1e-12, rtol=1e-10)


def test_lti_memory_is_the_bilinear_rule():
    N, theta, dt = 5, 7.0, 0.5
    mem = HiPPOMemory(N, "legt", theta=theta, dt=dt)
    A, B = transition("legt", N, theta)
    eye = torch.eye(N, dtype=F64)
    Abar = torch.linalg.solve(eye - dt / 2 * A, eye + dt / 2 * A)
    Bbar = torch.linalg.solve(eye - dt / 2 * A, dt * B)
    f = torch.randn(1, 4, 1, dtype=F64)
    c = torch.zeros(N, dtype=F64)
    for k in range(4):
        c = Abar @ c + Bbar * f[0, k, 0]
    torch.testing.assert_close(mem(f)[0, -1, 0], c, atol=1e-13, rtol=1e-12)


def test_legs_transitions_match_continuous_dynamics():
    # bilinear LSI step from t=k to k+1: (I - A/(2(k+1))) c' = (I + A/(2k)) c + g B f, g = 1/(2k) + 1/(2(k+1))
    N = 6
    T, b = legs_lsi_transitions(N, 5)
    A, B = transition("legs", N)
    eye = torch.eye(N, dtype=F64)
    for k in range(1, 5):
        lhs = eye - A / (2 * (k + 1))
        torch.testing.assert_close(lhs @ T[k - 1], eye + A / (2 * k))
        torch.testing.assert_close(lhs @ b[k - 1], (1 / (2 * k) + 1 / (2 * (k + 1))) * B)


def test_legs_memory_of_constant_is_exact_at_every_length():
    mem = HiPPOMemory(8, "legs")
    c = mem(torch.full((1, 60, 1), 1.0, dtype=F64))[0, :, 0]
    assert (c[:, 0] - 1).abs().max() < 1e-9 and c[:, 1:].abs().max() < 1e-9


def _signal(L):
    t = (torch.arange(L, dtype=F64) + 1) / L
    return (torch.sin(2 * math.pi * t) + 0.5 * torch.cos(5 * math.pi * t) + t).view(1, L, 1)


def _rate_mismatch(mem, L):
    """Relative memory difference between the signal sampled L and 2L times over the same interval,
    fed as plain steps (the rate is not given), at corresponding times (sample k <-> 2k + 1)."""
    c1, c2 = mem(_signal(L))[0, :, 0], mem(_signal(2 * L))[0, :, 0]
    k = torch.arange(L // 10, L)
    return float(((c1[k] - c2[2 * k + 1]).norm(dim=-1) / c1[k].norm(dim=-1)).max())


def test_legs_memory_is_timescale_robust():
    """Prop. 4.5: the 1/t measure makes the memory independent of the sampling rate (up to the O(1/L)
    discretization error), whereas a fixed window counted in samples (LegT) is not."""
    legs = HiPPOMemory(16, "legs")
    e200, e400 = _rate_mismatch(legs, 200), _rate_mismatch(legs, 400)
    assert e200 < 0.02 and e400 < 0.6 * e200               # small, and shrinking with the resolution
    assert _rate_mismatch(HiPPOMemory(16, "legt", theta=20.0), 200) > 0.5
    # the recurrence itself is step-size free: timestamps t_k = (k + 1) dt give identical coefficients
    f = _signal(50)
    ts = 0.37 * torch.arange(1.0, 51, dtype=F64)
    torch.testing.assert_close(legs(f), HiPPO(16, "legs", fast=False)(f, timestamps=ts), atol=1e-12, rtol=1e-10)


def test_sequence_equals_steps_and_padding_is_ignored():
    torch.manual_seed(0)
    rnn = HiPPORNN(3, 8, memory="lmu", order=4, theta=6.0, channels=2).double()
    x = torch.randn(2, 12, 3, dtype=F64)
    y, st = rnn(x, return_state=True)
    state = rnn.initial_state(2)
    for k in range(12):
        h, state = rnn.step(x[:, k], state)
        torch.testing.assert_close(h, y[:, k], atol=0, rtol=0)
    assert st.k == 12 and torch.equal(st.c, state.c)
    # chunked: continue from a returned state
    y1, s1 = rnn(x[:, :5], return_state=True)
    torch.testing.assert_close(torch.cat([y1, rnn(x[:, 5:], state=s1)], 1), y, atol=1e-14, rtol=0)
    # right padding with lengths: the final state is each sequence's own
    legs = HiPPORNN(3, 8, order=4)
    xs = torch.randn(1, 5, 3)
    padded = torch.cat([xs, torch.randn(1, 4, 3)], 1)
    _, a = legs(xs, return_state=True)
    _, b = legs(padded, lengths=torch.tensor([5]), return_state=True)
    torch.testing.assert_close(a.h, b.h)
    torch.testing.assert_close(a.c, b.c)


@pytest.mark.parametrize("measure,kw", [("legs", {}), ("legs", {"fast": True}), ("legt", {"theta": 8.0})])
def test_gradients_flow_through_the_memory(measure, kw):
    torch.manual_seed(0)
    rnn = HiPPORNN(2, 4, memory=measure, order=4, **kw).double()
    x = torch.randn(1, 10, 2, dtype=F64, requires_grad=True)
    _, st = rnn(x, return_state=True)
    st.c.sum().backward()                             # only through the memory
    for name, p in rnn.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad[0, 0].abs().sum() > 0                    # the first input reaches the last memory
    # exact gradient of the whole recurrence (frozen A, B; cell weights) by finite differences
    small = HiPPORNN(2, 3, memory=measure, order=3, **kw).double()
    xs = torch.randn(1, 6, 2, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: small(v), (xs,))


def test_public_api_and_repr():
    assert hippo.HiPPOCell is HiPPOCell and hippo.HiPPORNN is HiPPORNN
    assert {"HiPPOCell", "HiPPORNN", "HiPPOMemory"} <= set(hippo.__all__)
    assert "theta=12.0" in repr(HiPPORNN(2, 3, memory="legt", theta=12.0))
    assert sum(p.numel() for p in HiPPOCell(3, 8, order=4, channels=2).parameters()) == \
        (3 + 8 + 8) * 16 + 16 + 8 * 2 + 2


@pytest.mark.parametrize("kwargs,err,match", [
    (dict(memory="fout"), ValueError, "unknown HiPPO-RNN memory 'fout'"),
    (dict(memory="legt"), ValueError, "needs theta"),
    (dict(memory="legs", theta=5.0), ValueError, "no timescale"),
    (dict(memory="legs", discretization="zoh"), ValueError, "zoh"),
    (dict(memory="lmu", theta=4.0, fast=True), ValueError, "only for memory 'legs'"),
    (dict(memory="legt", theta=-1.0), ValueError, "theta"),
    (dict(cell="lstm"), ValueError, "unknown cell 'lstm'"),
    (dict(order=0), ValueError, "N must be an integer >= 1"),
    (dict(memory="lagt", beta=1.0), TypeError, "unexpected parameter"),
])
def test_bad_arguments_raise(kwargs, err, match):
    with pytest.raises(err, match=match):
        HiPPORNN(2, 4, **kwargs)


def test_bad_inputs_raise():
    rnn = HiPPORNN(2, 4, order=3)
    with pytest.raises(ValueError, match=r"x must have shape \(B, L, input_size=2\), got \(1, 5, 3\)"):
        rnn(torch.randn(1, 5, 3))
    with pytest.raises(ValueError, match="x must have shape"):
        rnn.step(torch.randn(1, 5, 2), rnn.initial_state(1))
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, L=5\]"):
        rnn(torch.randn(2, 5, 2), lengths=torch.tensor([5, 6]))
    with pytest.raises(ValueError, match="state shapes must be"):
        rnn(torch.randn(2, 5, 2), state=rnn.initial_state(3))
    with pytest.raises(TypeError, match="HiPPOState"):
        rnn.step(torch.randn(1, 2), (torch.zeros(1, 4), torch.zeros(1, 1, 3), 0))


def test_legs_memory_refuses_a_step_size_and_warns_of_forward_euler():
    """dt was accepted and ignored by the scale-invariant memory (its default 1.0 hid a passed value); forward Euler
    amplifies its first steps as it does HiPPO's lsi mode."""
    import warnings

    with pytest.raises(ValueError, match="memory 'legs' has no step size"):
        HiPPOMemory(8, "legs", dt=0.5)
    with pytest.raises(ValueError, match="no step size"):
        HiPPORNN(2, 4, order=4, dt=0.5)
    assert HiPPOMemory(8, "legt", theta=10.0).dt == 1.0                 # the LTI memories keep their default
    with pytest.warns(RuntimeWarning, match="forward Euler"):
        HiPPOMemory(8, "legs", discretization="forward_euler")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        HiPPOMemory(8, "legs")
