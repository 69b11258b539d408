"""Derivatives of order two and more (gradient penalties, meta-learning, Hessian-vector products).

The fast paths' custom autograd Functions have hand-written, first-order backwards (``once_differentiable``: a
second derivative through them raises). The ``"ref"`` backend (:func:`statespaces.backend.use_backend`) runs every
layer on plain differentiable torch ops, so ``torch.autograd.gradgradcheck`` holds there, in float64, for input and
parameters, against finite differences of the first derivative."""
import pytest
import torch

from statespaces import S4, S4D, LinOSS, backend
from statespaces.layers import DLinOSS
from statespaces.layers.s4nd import S4ND
from statespaces.layers.s5 import S5

pytestmark = pytest.mark.usefixtures("one_thread")

LAYERS = {
    "s4d": lambda: S4D(2, 4, seed=0),
    "s4d-bidirectional": lambda: S4D(2, 4, seed=0, bidirectional=True),
    "s4d-bilinear": lambda: S4D(2, 4, seed=0, discretization="bilinear"),
    "s4": lambda: S4(2, 4, seed=0),
    "linoss-im": lambda: LinOSS(2, 3, seed=0, discretization="IM"),
    "linoss-imex": lambda: LinOSS(2, 3, seed=0, discretization="IMEX"),
    "dlinoss": lambda: DLinOSS(2, 3, seed=0),
    "s5": lambda: S5(2, 4, seed=0),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_second_derivatives_on_the_ref_backend(name):
    torch.manual_seed(0)
    with backend.use_backend("ref"):
        layer = LAYERS[name]().double()
        params = [p for p in layer.parameters() if p.requires_grad]
        x = torch.randn(2, 6, 2, dtype=torch.float64, requires_grad=True)

        def f(x, *ps):
            out = torch.func.functional_call(layer, dict(zip([n for n, p in layer.named_parameters()
                                                              if p.requires_grad], ps)), (x,))
            return out

        assert torch.autograd.gradgradcheck(f, (x, *params), atol=1e-6, rtol=1e-4)


def test_gradient_penalty_on_the_ref_backend_matches_finite_differences():
    """d/dD of ||d(sum y^2)/dx||^2 for S4D: what the fast path cannot give (it raises), the ref backend gives, equal
    to a central difference of the penalty in D."""
    torch.manual_seed(0)
    with backend.use_backend("ref"):
        layer = S4D(2, 4, seed=0).double()
        x = torch.randn(2, 12, 2, dtype=torch.float64, requires_grad=True)

        def penalty():
            gx, = torch.autograd.grad((layer(x) ** 2).sum(), x, create_graph=True)
            return (gx ** 2).sum()

        g, = torch.autograd.grad(penalty(), layer.D)
        eps = 1e-6

        def shifted(by):
            with torch.no_grad():
                layer.D[0] += by
            value = float(penalty())
            with torch.no_grad():
                layer.D[0] -= by
            return value

        up, down = shifted(eps), shifted(-eps)
    assert abs(float(g[0]) - (up - down) / (2 * eps)) < 1e-5 * max(1.0, abs(float(g[0])))


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_second_derivatives_on_the_fast_paths_raise_and_name_the_ref_backend(name):
    """Never a silent wrong second derivative: on the default backend, a double backward through a hand-written
    backward raises, naming the ref backend (S5 runs on plain autograd ops on every backend: it just works)."""
    torch.manual_seed(0)
    layer = LAYERS[name]().double()
    x = torch.randn(2, 6, 2, dtype=torch.float64, requires_grad=True)
    try:
        gx, = torch.autograd.grad((layer(x) ** 2).sum(), x, create_graph=True)
        g = torch.autograd.grad((gx ** 2).sum(), [x, layer.D])
    except RuntimeError as e:
        assert "use_backend('ref')" in str(e)
        return
    with backend.use_backend("ref"):
        gx_ref, = torch.autograd.grad((layer(x) ** 2).sum(), x, create_graph=True)
        g_ref = torch.autograd.grad((gx_ref ** 2).sum(), [x, layer.D])
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("cls", [LinOSS, DLinOSS])
@pytest.mark.parametrize("stateful", [False, True])
def test_chunked_mode_second_derivatives_on_the_ref_backend(cls, stateful):
    """LinOSS/D-LinOSS mode="chunked" over three chunks of 32 steps (the carry between chunks is exercised), stateless
    (L a multiple of the chunk: the fused projected node on the default backend) and with a state in and out: its
    custom Functions (projection, readout, carry, the fused node) raised under double backward on every backend;
    on "ref" they are plain ops and gradgradcheck holds."""
    torch.manual_seed(0)
    layer = cls(2, 2, seed=1, mode="chunked").double()
    L = 96
    x = torch.randn(1, L, 2, dtype=torch.float64, requires_grad=True)
    s0 = (0.3 * torch.randn(1, 2, 2, dtype=torch.complex128)) if stateful else None
    with backend.use_backend("ref"):
        def f(x, D):
            out = torch.func.functional_call(layer, {"D": D}, (x,), {"state": s0, "return_state": stateful})
            return torch.cat([out[0].flatten(), torch.view_as_real(out[1]).flatten()]) if stateful else out

        assert torch.autograd.gradgradcheck(f, (x, layer.D.detach().clone().requires_grad_()), atol=1e-6, rtol=1e-4)
        gx, = torch.autograd.grad((layer(x) ** 2).sum(), x, create_graph=True)
        g = torch.autograd.grad((gx ** 2).sum(), layer.A_hat)[0]
        assert torch.isfinite(g).all() and float(g.abs().max()) > 0
    with pytest.raises(RuntimeError, match="use_backend"):                   # the default backend says where to go
        gx, = torch.autograd.grad((layer(x) ** 2).sum(), x, create_graph=True)
        torch.autograd.grad((gx ** 2).sum(), x)


def test_s4nd_second_derivatives_on_the_ref_backend():
    torch.manual_seed(0)
    with backend.use_backend("ref"):
        layer = S4ND(2, d_state=4, dims=2).double()
        x = torch.randn(1, 4, 5, 2, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradgradcheck(lambda x: layer(x), (x,), atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("stateful", [False, True])
def test_chunked_mode_on_ref_equals_the_fast_path(stateful):
    """The twins: LinOSS mode="chunked" on backend "ref" (plain ops, carry_states_ref) gives the outputs, final state
    and gradients of the default backend's custom Functions (fused projected node, _CarryScan), in float64."""
    torch.manual_seed(0)
    layer = LinOSS(3, 4, seed=2, mode="chunked").double()
    x = torch.randn(2, 96, 3, dtype=torch.float64)
    s0 = 0.3 * torch.randn(2, 2, 4, dtype=torch.complex128) if stateful else None

    def run():
        xg = x.clone().requires_grad_()
        out = layer(xg, state=s0, return_state=stateful)
        y = out[0] if stateful else out
        loss = (y ** 2).sum() + (out[1].abs() ** 2).sum() if stateful else (y ** 2).sum()
        grads = torch.autograd.grad(loss, [xg, *layer.parameters()], allow_unused=True)
        return out, grads

    fast, g_fast = run()
    with backend.use_backend("ref"):
        ref, g_ref = run()
    for a, b in zip(fast if stateful else (fast,), ref if stateful else (ref,)):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)
    for a, b in zip(g_fast, g_ref):
        if a is not None or b is not None:
            torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("name", ["s4d", "s4", "linoss-imex", "dlinoss"])
def test_forward_mode_ad_through_forward_ad_works_on_the_default_backend(name):
    """torch.autograd.forward_ad (not a torch.func transform) met the fast paths' Functions, which have no jvp rule:
    "You must implement the jvp function for custom autograd.Function". Inside dual_level() the twins run."""
    import torch.autograd.forward_ad as fwAD

    layer = LAYERS[name]().double()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 9, 2, dtype=torch.float64, generator=g)
    v = torch.randn(2, 9, 2, dtype=torch.float64, generator=g)
    with torch.no_grad():
        fd = (layer(x + 1e-6 * v) - layer(x - 1e-6 * v)) / 2e-6
    with fwAD.dual_level():
        tangent = fwAD.unpack_dual(layer(fwAD.make_dual(x, v))).tangent
    torch.testing.assert_close(tangent, fd, rtol=1e-6, atol=1e-8)
    assert not backend.transforming()          # outside the block the selector is obeyed again
