r"""Long-sequence stability (issue #8, item 2), every layer with its default init.

What is tested, per layer (S4D, S4, LinOSS-IM, LinOSS-IMEX with default inits, plus S4D-Inv and
S4-FouT, whose ``Re(lambda)`` floor puts ``|dA|`` within ~1e-5 of 1):

1. **Theory.** Every discrete eigenvalue has ``|lambda| <= 1`` (S4D/S4: Hurwitz A, ZOH/bilinear;
   LinOSS: Prop. 3.1), and for the non-normal transitions (S4's DPLR ``dA``, LinOSS's 2x2 blocks)
   ``||dA^k|| <= kappa(V) rho^k`` at k = 10, 10^3 and 10^6 (``matrix_power`` by repeated squaring).
   Hence the state bound used below: with ``|u| <= 1``,
   ``||x_n|| <= kappa(V) ||dB|| sum_{k<n} rho^k <= kappa(V) ||dB|| min(n, 1/(1 - rho))`` per
   channel (S4D: per mode, ``kappa = 1``; LinOSS: per oscillator, ``||dB||`` = ``||f|| max|B u|``).
2. **L = 10^6 forward**: one call on the whole sequence, and the same sequence chunked into
   10 calls of 10^5 with ``state=``/``return_state=True`` (i.e. 10^6 steps of the recurrence): outputs
   and states finite, the state within the bound of (1), chunked output == one-call output.
3. **True per-step loop** (``layer.step``): ``STEPS`` recurrent steps, 2,000 in the ci profile and
   10^6 in the long profile (HYPOTHESIS_PROFILE=long; STABILITY_STEPS overrides both), the state checked against the bound every
   1,000 steps and at the end equal to the chunked forward's state on the same input.

Training at 10x the learning rate is in tests/test_faults.py.
"""
import os

import pytest
import torch

from statespaces import S4, S4D, LinOSS

pytestmark = pytest.mark.usefixtures("one_thread")

LONG = os.environ.get("HYPOTHESIS_PROFILE", "ci") == "long"
STEPS = int(os.environ.get("STABILITY_STEPS", 1_000_000 if LONG else 2_000))
L_TOTAL, CHUNK = 1_000_000, 100_000
H = 2

LAYERS = {
    "s4d": lambda: S4D(H, 16, seed=3),
    "s4d-inv": lambda: S4D(H, 16, init="inv", seed=3),
    "s4": lambda: S4(H, 16, seed=3),
    "s4-fout": lambda: S4(H, 16, init="fout", seed=3),
    "linoss-IM": lambda: LinOSS(H, 8, seed=3),
    "linoss-IMEX": lambda: LinOSS(H, 8, discretization="IMEX", seed=3),
}


def _eig_bound(dA, dB_norm):
    """Per block b of ``dA`` (b, n, n) with ``||dB_b||`` : (kappa, rho, per-step bound) in float64."""
    lam, V = torch.linalg.eig(dA.double())
    rho = lam.abs().max(-1).values
    kappa = torch.linalg.cond(V)
    for k in (10, 1_000, 1_000_000):
        norm_k = torch.linalg.matrix_norm(torch.linalg.matrix_power(dA.double(), k), ord=2)
        assert bool((norm_k <= kappa * rho**k * (1 + 1e-6) + 1e-12).all()), f"||dA^{k}|| above kappa rho^k"
    return kappa, rho, kappa * dB_norm


def state_bound(layer, n):
    """Upper bound on the state after n steps of inputs with |u| <= 1, shaped like the state's
    norm over its last axis ((H,) for S4, (P,) for LinOSS) or the state itself ((H, M) for S4D)."""
    with torch.no_grad():
        if isinstance(layer, S4D):
            sys = layer.diagonal_system()
            rho = torch.exp(sys.log_dA.real.double())
            assert bool((rho <= 1).all())
            geo = torch.minimum(torch.full_like(rho, float(n)), 1 / (1 - rho).clamp(min=1e-300))
            return sys.dB.abs().double() * geo
        if isinstance(layer, S4):
            dA, dB, _, _ = layer.dense_system()
            kappa, rho, c = _eig_bound(dA, torch.linalg.vector_norm(dB.double(), dim=-1))
        else:
            M, f = layer.transition()                                  # (2, 2, P), (2, P)
            dA = M.permute(2, 0, 1)
            vmax = torch.view_as_complex(layer.B).abs().sum(-1).double()   # max |(B u)_p| for |u| <= 1
            kappa, rho, c = _eig_bound(dA, torch.linalg.vector_norm(f.T.double(), dim=-1) * vmax)
        assert bool((rho <= 1 + 1e-6).all()), f"spectral radius {float(rho.max())} > 1"
        geo = torch.where(rho < 1, 1 / (1 - rho).clamp(min=1e-300), torch.full_like(rho, float(n)))
        return c * torch.minimum(geo, torch.full_like(rho, float(n)))


def _state_norm(layer, state):
    """|state| comparable with :func:`state_bound` (max over the batch)."""
    s = state.abs().double()
    if isinstance(layer, S4D):
        return s.amax(0)
    if isinstance(layer, S4):
        return torch.linalg.vector_norm(s, dim=-1).amax(0)          # ||[Re x; Im x]|| = ||x||
    return torch.linalg.vector_norm(s, dim=1).amax(0)              # oscillator p: ||(z_p, y_p)||


def _inputs(n, seed=0):
    return torch.rand(1, n, H, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_million_step_forward_stays_bounded(name):
    layer = LAYERS[name]()
    u = _inputs(L_TOTAL)
    bound = state_bound(layer, L_TOTAL)
    with torch.no_grad():
        y_full = layer(u)
        assert torch.isfinite(y_full).all()
        state, ys = None, []
        for start in range(0, L_TOTAL, CHUNK):
            y, state = layer(u[:, start:start + CHUNK], state=state, return_state=True)
            assert torch.isfinite(y).all() and torch.isfinite(state).all()
            assert bool((_state_norm(layer, state) <= bound * (1 + 1e-3) + 1e-6).all()), name
            ys.append(y)
    y_chunked = torch.cat(ys, 1)
    scale = float(y_full.abs().max())
    assert float((y_chunked - y_full).abs().max()) <= 1e-3 * scale, name


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_recurrent_steps_stay_bounded(name):
    layer = LAYERS[name]()
    u = _inputs(STEPS, seed=1)
    bound = state_bound(layer, STEPS)
    with torch.no_grad():
        state = layer.initial_state(1)
        for t in range(STEPS):
            _, state = layer.step(u[:, t], state)
            if t % 1000 == 999:
                assert torch.isfinite(state).all()
                assert bool((_state_norm(layer, state) <= bound * (1 + 1e-3) + 1e-6).all()), (name, t)
        _, ref = layer(u, return_state=True)
    assert torch.isfinite(state).all()
    scale = float(ref.abs().max().clamp(min=1e-6))
    assert float((state - ref).abs().max()) <= 2e-3 * scale, name
