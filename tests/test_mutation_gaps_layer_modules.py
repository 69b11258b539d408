"""Checks for the survivors of a mutation audit of the layer modules (S4, LinOSS, D-LinOSS, S5, modes, the step
cache and DiagonalSSM; 55 mutants, 7 test gaps). Each test below fails on its mutant."""
import dataclasses

import pytest
import torch

from statespaces.layers.dlinoss import DLinOSS
from statespaces.layers.linoss import LinOSS
from statespaces.layers.s4 import S4
from statespaces.layers.s4d import S4D

F64 = torch.float64


@pytest.mark.parametrize("cls", [LinOSS, DLinOSS])
def test_concat_bidirectional_runs_both_halves_at_the_rate(cls):
    """out_proj(cat(causal(x), reverse(x flipped) flipped)) at rate 2, the causal half an ordinary layer with the
    same parameters: the reverse half must see the rate too."""
    torch.manual_seed(0)
    layer = cls(3, 4, bidirectional="concat", seed=0).double()
    causal = cls(3, 4, seed=0).double()
    causal.load_state_dict({k: v for k, v in layer.state_dict().items()
                            if not k.startswith(("reverse.", "out_proj.", "C_back"))})
    x = torch.randn(2, 20, 3, dtype=F64)
    with torch.no_grad():
        want = layer.out_proj(torch.cat([causal(x, rate=2.0, mode="conv"),
                                         layer.reverse(x.flip(1), rate=2.0, mode="conv").flip(1)], -1))
        torch.testing.assert_close(layer(x, rate=2.0, mode="conv"), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("disc", ["IMEX", "IM"])
def test_dlinoss_modes_are_the_eigenvalues_of_the_damped_oscillator(disc):
    """The continuous eigenvalue of each mode: the root with Im >= 0 of s^2 + G s + A (the matrix [[-G, -A], [1, 0]])
    from the layer's own stiffness and damping."""
    layer = DLinOSS(3, 5, discretization=disc, seed=1).double()
    m = layer.modes()
    A, G = layer.stiffness().detach(), layer.damping().detach()
    roots = [torch.linalg.eigvals(torch.tensor([[-g, -a], [1.0, 0.0]], dtype=F64))
             for a, g in zip(A.tolist(), G.tolist())]
    want = torch.stack([r[r.imag.argmax()] for r in roots])
    torch.testing.assert_close(m.A[:A.shape[0]], want, rtol=1e-12, atol=1e-12)


def test_diagonalized_s4_refuses_another_rate():
    form = S4(2, d_state=4, seed=0).double().diagonalize(rate=2.0)
    with pytest.raises(ValueError, match="rate"):
        form.kernel(8, rate=1.0)
    form.kernel(8, rate=2.0)


def test_step_state_checks_follow_dtype_and_shape():
    layer = S4D(3, d_state=8, seed=0)
    layer.step(torch.randn(2, 3), layer.initial_state(2))
    layer.double()                                            # a state spec cached at float32 must not stick
    layer.step(torch.randn(2, 3, dtype=F64), layer.initial_state(2))
    x, s = torch.randn(2, 3, dtype=F64), layer.initial_state(2)
    layer.step(x, s)
    with pytest.raises(ValueError):
        layer.step(x, s[..., :1])                             # right after an accepted step: a wrong state shape


def test_linoss_imex_unconstrained_stiffness_is_checked_at_the_rate():
    """A_param='none': dt^2 A = 2 is stable at rate 1 and 8 > 4 is not at rate 2; the check must use the rate's dt."""
    layer = LinOSS(2, 3, discretization="IMEX", A_param="none", seed=0).double()
    with torch.no_grad():
        layer.A_hat.copy_(2.0 / layer.dt() ** 2)
    x = torch.randn(1, 50, 2, dtype=F64)
    layer(x)
    with pytest.raises(ValueError):
        layer(x, rate=2.0, mode="loop")


@pytest.mark.parametrize("cls", [S4D, S4])
def test_from_modes_refuses_modes_with_a_ramp(cls):
    m = S4D(2, d_state=8, seed=0).double().modes()
    ramped = dataclasses.replace(m, ramp=0.3 * torch.ones(m.log_eig.shape, dtype=torch.complex128))
    with pytest.raises(ValueError):
        cls.from_modes(ramped, dtype=F64)
