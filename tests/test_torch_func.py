"""``torch.func`` transforms on every layer: per-sample gradients (``vmap(grad(...))`` over ``functional_call``),
Jacobians (``jacrev``, ``jacfwd``), forward-mode products (``jvp``) and Hessians.

The fast paths are custom autograd Functions, which functorch cannot see through; inside a transform every op
takes its plain-torch reference twin (:func:`statespaces.backend.get_backend` is ``"ref"`` there) and the
checks that need host values are skipped, as under ``torch.compile``. Each transform is checked, in float64,
against an independent route outside any transform: a Python loop of ordinary backward passes through the fast
paths (per-sample gradients, Jacobians), and finite differences (``jvp``)."""
import pytest
import torch
from torch.func import functional_call, grad, hessian, jacfwd, jacrev, jvp, vmap

from statespaces import S4, S4D, LinOSS, SequenceClassifier, backend
from statespaces.layers import DLinOSS
from statespaces.layers.s4nd import S4ND
from statespaces.layers.s5 import S5

pytestmark = pytest.mark.usefixtures("one_thread")

LAYERS = {
    "s4d": lambda: S4D(3, 8, seed=0),
    "s4d-bidirectional": lambda: S4D(3, 8, seed=0, bidirectional=True),
    "s4": lambda: S4(3, 8, seed=0),
    "s4-lmax": lambda: S4(3, 8, seed=0, l_max=7),
    "linoss-im": lambda: LinOSS(3, 4, seed=0, discretization="IM"),
    "linoss-imex-conv": lambda: LinOSS(3, 4, seed=0, discretization="IMEX", mode="conv"),
    "dlinoss": lambda: DLinOSS(3, 4, seed=0),
    "s5": lambda: S5(3, 8, seed=0),
}
B, L, H = 3, 7, 3


def _trainable(module):
    return {n: p.detach() for n, p in module.named_parameters() if p.requires_grad}


def _per_sample_loop(module, x, loss_of):
    """Per-sample gradients the ordinary way: one forward and backward per example (fast paths)."""
    out = []
    for i in range(x.shape[0]):
        module.zero_grad(set_to_none=True)
        loss_of(module(x[i:i + 1])).backward()
        out.append({n: p.grad.clone() for n, p in module.named_parameters() if p.requires_grad})
    return {n: torch.stack([g[n] for g in out]) for n in out[0]}


def _loss(y):
    return (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view(y.shape)).sum() + (y ** 2).sum()


def _check_per_sample(module, x):
    """``vmap(grad(...))`` per-sample gradients of ``_loss`` in ``module``'s parameters against the loop."""
    params = _trainable(module)
    got = vmap(grad(lambda p, xi: _loss(functional_call(module, p, (xi.unsqueeze(0),)))), in_dims=(None, 0))(params, x)
    want = _per_sample_loop(module, x, _loss)
    assert set(got) == set(want)
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-9, atol=1e-11, msg=n)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_per_sample_gradients_by_vmap_equal_a_loop_of_backward_passes(name):
    torch.manual_seed(0)
    _check_per_sample(LAYERS[name]().double(), torch.randn(B, L, H, dtype=torch.float64))
    assert backend.get_backend() == backend._BACKEND     # the transform's "ref" does not outlive it


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_jacobians_by_jacrev_and_jacfwd_equal_backward_passes(name):
    torch.manual_seed(1)
    layer = LAYERS[name]().double()
    x = torch.randn(1, L, H, dtype=torch.float64)
    J_rev = jacrev(layer)(x).reshape(L * H, L * H)
    J_fwd = jacfwd(layer)(x).reshape(L * H, L * H)
    xg = x.clone().requires_grad_(True)
    y = layer(xg).reshape(-1)
    rows = [torch.autograd.grad(y[i], xg, retain_graph=True)[0].reshape(-1) for i in range(y.numel())]
    J = torch.stack(rows)
    torch.testing.assert_close(J_rev, J, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(J_fwd, J, rtol=1e-9, atol=1e-12)
    # a causal layer's Jacobian is block lower-triangular in time (up to the FFT's round-off)
    if "bidirectional" not in name:
        blocks = J_rev.reshape(L, H, L, H).permute(0, 2, 1, 3)
        later = torch.triu(torch.ones(L, L, dtype=torch.bool), diagonal=1)
        assert blocks[later].abs().max() <= 1e-14 * J.abs().max()


@pytest.mark.parametrize("name", ["s4d", "linoss-im", "s5"])
def test_jvp_in_the_parameters_equals_central_differences(name):
    torch.manual_seed(2)
    layer = LAYERS[name]().double()
    x = torch.randn(2, L, H, dtype=torch.float64)
    params = _trainable(layer)
    tangent = {n: torch.randn_like(p) for n, p in params.items()}

    def f(p):
        return functional_call(layer, p, (x,))

    _, dy = jvp(f, (params,), (tangent,))
    eps = 1e-6
    plus = f({n: p + eps * tangent[n] for n, p in params.items()})
    minus = f({n: p - eps * tangent[n] for n, p in params.items()})
    torch.testing.assert_close(dy, (plus - minus) / (2 * eps), rtol=1e-6, atol=1e-8)


def test_hessian_in_the_input_equals_the_ref_backends_double_backward():
    torch.manual_seed(3)
    layer = S4D(2, 4, seed=0).double()
    x = torch.randn(1, 5, 2, dtype=torch.float64)

    def f(x):
        return (layer(x) ** 2).sum() + layer(x).pow(3).sum()

    Hm = hessian(f)(x).reshape(10, 10)
    with backend.use_backend("ref"):
        Href = torch.autograd.functional.hessian(f, x).reshape(10, 10)
    torch.testing.assert_close(Hm, Href, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(Hm, Hm.T, rtol=1e-9, atol=1e-12)


def test_s4nd_per_sample_gradients():
    torch.manual_seed(4)
    _check_per_sample(S4ND(2, d_state=4, dims=2, seed=0).double(), torch.randn(2, 5, 4, 2, dtype=torch.float64))


def test_model_per_sample_gradients_of_the_cross_entropy():
    """The DP-SGD use: per-example gradients of a whole classifier's loss."""
    torch.manual_seed(5)
    model = SequenceClassifier(d_input=2, n_classes=3, d_model=4, n_layers=2, layer={"kind": "s4d", "d_state": 4},
                               dropout=0.0).double().eval()
    x = torch.randn(3, 6, 2, dtype=torch.float64)
    y = torch.tensor([0, 2, 1])
    params = _trainable(model)

    def sample_loss(p, xi, yi):
        logits = functional_call(model, p, (xi.unsqueeze(0),))
        return torch.nn.functional.cross_entropy(logits, yi.unsqueeze(0))

    got = vmap(grad(sample_loss), in_dims=(None, 0, 0))(params, x, y)
    for i in range(3):
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        for n, p in model.named_parameters():
            if p.requires_grad:
                torch.testing.assert_close(got[n][i], p.grad, rtol=1e-9, atol=1e-11, msg=n)


def test_step_under_vmap_equals_the_batched_step():
    """``step`` is a pure function of (x, state): vmapped over examples it equals the batched step."""
    torch.manual_seed(6)
    layer = S4D(3, 8, seed=0).double()
    x = torch.randn(B, H, dtype=torch.float64)
    state = layer.initial_state(B)
    state = state + torch.randn_like(state)
    y, s = layer.step(x, state)
    yv, sv = vmap(lambda xi, si: tuple(t.squeeze(0) for t in layer.step(xi.unsqueeze(0), si.unsqueeze(0))))(x, state)
    torch.testing.assert_close(yv, y, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(sv, s, rtol=1e-12, atol=1e-14)


def test_the_fast_paths_still_run_outside_transforms():
    """Outside a transform the selector is obeyed: the S4D forward applies its custom Functions."""
    layer = S4D(3, 8, seed=0)
    x = torch.randn(2, 16, 3, requires_grad=True)
    names = set()
    y = layer(x)
    stack = [y.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or type(node).__name__ in names:
            continue
        names.add(type(node).__name__)
        stack.extend(f for f, _ in node.next_functions)
    assert any(n.startswith("_FFTConv") for n in names), names


@pytest.mark.parametrize("L", [1024, 2048])
def test_float32_gradients_on_the_reference_twins_as_accurate_as_the_fast_path(L):
    """Transforms run the reference twins, in the user's precision: an S4D in float32 gets parameter gradients
    there as close to float64 as the fast path's (the Vandermonde twin forms its powers in complex128, as the
    fast path does in float64; in complex64 the phase ``l Im log dA`` lost digits at large l: log_dt's gradient
    5-30x further from float64 than the fast path's at these L)."""
    import copy

    torch.manual_seed(0)
    layer = S4D(4, 64, seed=0)
    wide = copy.deepcopy(layer).double()
    x, w = torch.randn(2, L, 4), torch.randn(2, L, 4)

    def grads(m, xx, name):
        m.zero_grad(set_to_none=True)
        with backend.use_backend(name):
            (m(xx) * w.to(xx.dtype)).sum().backward()
        return {n: p.grad.double() for n, p in m.named_parameters()}

    exact = grads(wide, x.double(), "auto")
    fast, ref = grads(layer, x, "auto"), grads(layer, x, "ref")
    for n in exact:
        err_fast = ((fast[n] - exact[n]).norm() / exact[n].norm()).item()
        err_ref = ((ref[n] - exact[n]).norm() / exact[n].norm()).item()
        assert err_ref <= 2 * err_fast + 1e-6, (n, err_ref, err_fast)


@pytest.mark.parametrize("name", ["s4d", "s4", "s4-lmax", "linoss-chunked", "linoss-imex-scan", "dlinoss", "s5"])
def test_per_sample_gradients_of_a_stateful_call(name):
    """A call that continues from a state and returns the next one (the chunked/stateful paths: S4's dense chunked
    form, LinOSS's chunked mode), differentiated per example in the parameters and the incoming state."""
    make = {"s4d": lambda: S4D(3, 8, seed=0), "s4": lambda: S4(3, 8, seed=0), "s4-lmax": lambda: S4(3, 8, seed=0, l_max=64),
            "linoss-chunked": lambda: LinOSS(3, 4, seed=0, mode="chunked"),
            "linoss-imex-scan": lambda: LinOSS(3, 4, seed=0, discretization="IMEX", mode="scan"),
            "dlinoss": lambda: DLinOSS(3, 4, seed=0), "s5": lambda: S5(3, 8, seed=0)}[name]
    torch.manual_seed(7)
    layer = make().double()
    x = torch.randn(B, 40, H, dtype=torch.float64)
    s0 = layer.initial_state(B)
    s0 = s0 + torch.randn_like(s0)
    params = _trainable(layer)

    def sample_loss(p, xi, si):
        y, s = functional_call(layer, p, (xi.unsqueeze(0),), {"state": si.unsqueeze(0), "return_state": True})
        return _loss(y) + (s.abs() ** 2).sum()

    got_p, got_s = vmap(grad(sample_loss, argnums=(0, 2)), in_dims=(None, 0, 0))(params, x, s0)
    for i in range(B):
        layer.zero_grad(set_to_none=True)
        si = s0[i:i + 1].clone().requires_grad_(True)
        y, s = layer(x[i:i + 1], state=si, return_state=True)
        (_loss(y) + (s.abs() ** 2).sum()).backward()
        torch.testing.assert_close(got_s[i:i + 1], si.grad, rtol=1e-9, atol=1e-11)
        for n, p in layer.named_parameters():
            if p.requires_grad:
                torch.testing.assert_close(got_p[n][i], p.grad, rtol=1e-9, atol=1e-11, msg=n)


def test_image_model_per_sample_gradients():
    """S4ND in an image model takes exact Toeplitz products on small grids (``conv="auto"``), another custom
    Function outside transforms."""
    from statespaces.models.image import ImageClassifier

    torch.manual_seed(8)
    model = ImageClassifier(d_input=1, n_classes=3, d_model=4, n_layers=2,
                            layer=dict(kind="s4nd", d_state=4, seed=0)).double().eval()
    _check_per_sample(model, torch.randn(3, 6, 5, 1, dtype=torch.float64))


def test_every_custom_function_steps_aside_inside_transforms():
    """The helpers that wrap a custom autograd Function take plain ops on backend "ref", hence inside transforms:
    the gradient-layout copy of the chunked forms, and the one-node near powers (taken off the CPU; a meta
    tensor stands for a GPU one here)."""
    from statespaces.kernels.chunked import prefer_one_node
    from statespaces.kernels.chunked_conv import contiguous_grad

    x = torch.randn(3, 4, dtype=torch.float64)
    torch.testing.assert_close(grad(lambda t: (contiguous_grad(t) ** 2).sum())(x), 2 * x)
    off_cpu = torch.empty(2, 4, 4, device="meta")
    assert prefer_one_node(off_cpu)
    with backend.use_backend("ref"):
        assert not prefer_one_node(off_cpu)
    assert vmap(lambda t: torch.tensor(float(prefer_one_node(off_cpu))) + 0 * t.sum())(x).eq(0).all()


@pytest.mark.parametrize("which", ["sashimi-lm", "forecaster-bidirectional"])
def test_more_models_per_sample_gradients(which):
    """A SaShiMi language model (token inputs, pooled tiers) and a forecaster with bidirectional layers."""
    from statespaces.models.forecast import SSMForecaster
    from statespaces.models.lm import SSMLanguageModel

    torch.manual_seed(9)
    if which == "sashimi-lm":
        model = SSMLanguageModel(11, d_model=8, n_layers=1, layer="s4d", backbone="sashimi",
                                 backbone_kwargs=dict(pool=(2, 2)))
        x = torch.randint(0, 11, (3, 8))
    else:
        model = SSMForecaster(d_input=2, horizon=4, d_model=8, n_layers=2, layer={"kind": "s4d", "bidirectional": True})
        x = torch.randn(3, 12, 2, dtype=torch.float64)
    _check_per_sample(model.double().eval(), x)


def test_solves_fold_extra_batch_dimensions_into_columns():
    """``_linalg.solve_ex``: B (*lead, *a, n, k) against A (*a, n, n) gives torch's answer, and under vmap(grad) the
    per-sample gradients of a loop (torch's own solve gave them times the vmapped batch size)."""
    from statespaces._linalg import solve, solve_ex

    g = torch.Generator().manual_seed(0)
    A = torch.randn(3, 4, 4, dtype=torch.float64, generator=g) + 3 * torch.eye(4, dtype=torch.float64)
    for shape in [(3, 4, 2), (1, 3, 4, 1), (2, 5, 3, 4, 3), (4, 1)]:
        B = torch.randn(*shape, dtype=torch.float64, generator=g)
        want = torch.linalg.solve(A if len(shape) > 2 else A[0], B)
        X, info = solve_ex(A if len(shape) > 2 else A[0], B)
        assert X.shape == want.shape and not info.any()
        torch.testing.assert_close(X, want, rtol=1e-12, atol=1e-12)
    b, s = torch.randn(1, 3, 4, dtype=torch.float64, generator=g), torch.randn(5, 1, 3, 4, dtype=torch.float64, generator=g)

    def f(b, si):
        return ((solve(A, b.unsqueeze(-1)).squeeze(-1) * si) ** 2).sum()

    per_sample = vmap(grad(f), in_dims=(None, 0))(b, s)
    torch.testing.assert_close(per_sample, torch.stack([grad(f)(b, s[i]) for i in range(5)]), rtol=1e-10, atol=1e-10)
    with pytest.raises(torch.linalg.LinAlgError, match="singular"):
        solve(torch.zeros(3, 4, 4, dtype=torch.float64), b.unsqueeze(-1))


def test_helper_paths_keep_their_promises_on_every_backend():
    """contiguous_grad returns a copy (the caller may edit it in place) on the fast path and on "ref"; the one-node
    near powers are never taken on the CPU, whatever the backend."""
    from statespaces.kernels.chunked import prefer_one_node
    from statespaces.kernels.chunked_conv import contiguous_grad

    for name in ("auto", "torch", "ref"):
        with backend.use_backend(name):
            x = torch.zeros(2, 3, requires_grad=True).clone()
            y = contiguous_grad(x)
            with torch.no_grad():
                y.add_(1)
            assert bool((x == 0).all()), name
            assert not prefer_one_node(torch.zeros(2, 4, 4))
