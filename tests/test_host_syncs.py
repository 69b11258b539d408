"""No host synchronisation on the hot path (issue 17 item 2), proven on CPU.

* ``check_result``'s finite check becomes ``torch._assert_async`` on CUDA and in traced graphs: tested
  here through the same function on CPU (where ``_assert_async`` raises at once) and by the graphs of
  ``torch.export`` / ``torch.compile(fullgraph=True)``, which keep the check (a NaN input fails in the
  compiled program) -- a ``.item()`` or ``bool(tensor)`` would break the fullgraph trace.
* the step cache keyed on identity, storage pointer and version counter (the CUDA key, forced on CPU
  here) follows optimizer updates, ``load_state_dict`` and replaced tensors, and is reused otherwise.
* the DPLR kernel's float64 refinement of the risky nodes uses a fixed-size index set (no ``nonzero``)
  and gives the same kernel as the data-dependent selection.
"""
import ast
import copy
import inspect
import textwrap

import pytest
import torch
from conftest import StepModule

from statespaces import S4D, _checks
from statespaces.layers import step_cache


# ---- check_result: asynchronous finite check ---------------------------------------------------------
def test_async_finite_flag_is_exact():
    big = torch.full((4,), 3e38)                               # finite, but its float32 sum overflows
    assert bool(_checks._finite_exact(big))
    for bad in (float("nan"), float("inf"), -float("inf")):
        x = torch.randn(5, 3)
        x[2, 1] = bad
        assert not bool(_checks._finite_exact(x))
    z = torch.zeros(3, dtype=torch.complex64)
    z[1] = complex(0.0, float("nan"))
    assert not bool(_checks._finite_exact(z))


def test_async_finite_check_names_the_module_and_what_to_do():
    layer = S4D(2, 4)
    _checks._assert_finite_async(layer, [torch.ones(3), torch.full((2,), 3e38)], "output")
    y = torch.ones(2, 3)
    y[0, 0] = float("nan")
    with pytest.raises(RuntimeError, match="S4D output is not finite.*rerun the call on CPU"):
        _checks._assert_finite_async(layer, [torch.ones(3), y], "output")


def test_cpu_eager_keeps_the_named_value_error():
    layer = S4D(2, 4)
    x = torch.randn(1, 8, 2)
    x[0, 3, 1] = float("nan")
    with pytest.raises(ValueError, match="input contains NaN"):
        layer(x)


@pytest.mark.slow                                              # two exports and a dynamo trace: ~10 s
def test_traced_graphs_keep_the_finite_check():
    """torch.export of S4D forward and step and torch.compile(fullgraph=True) of the step (finite check ON):
    no graph break, the graphs hold ``aten._assert_async``, and a NaN input fails inside the program."""
    assert _checks.CHECK_FINITE
    layer = S4D(4, 8, seed=0).eval()
    x, xt, s0 = torch.randn(2, 16, 4), torch.randn(2, 4), layer.initial_state(2)
    nan_x = x.clone()
    nan_x[1, 5, 2] = float("nan")
    with torch.no_grad():
        for mod, args, bad in ((layer, (x,), (nan_x,)), (StepModule(layer), (xt, s0), (nan_x[:, 5], s0))):
            ep = torch.export.export(mod, args)
            assert "_assert_async" in ep.graph_module.code
            torch.testing.assert_close(ep.module()(*args), mod(*args))
            with pytest.raises(RuntimeError, match="not finite"):
                ep.module()(*bad)
        torch._dynamo.reset()
        step = torch.compile(StepModule(layer), fullgraph=True, backend="eager")
        torch.testing.assert_close(step(xt, s0), layer.step(xt, s0))
        with pytest.raises(RuntimeError, match="not finite"):
            step(nan_x[:, 5], s0)


# ---- the step cache without value comparisons ------------------------------------------------------
def _counting(layer):
    calls = []
    orig = layer.diagonal_system

    def counted(*a, **k):
        calls.append(1)
        return orig(*a, **k)

    layer.diagonal_system = counted
    return calls


def test_version_keyed_step_cache_follows_in_place_updates(monkeypatch):
    monkeypatch.setattr(step_cache, "VALUE_KEYED", ())            # the CUDA key, on CPU
    torch.manual_seed(0)
    layer = S4D(3, 8, seed=1).double()
    calls = _counting(layer)
    x, s0 = torch.randn(2, 3, dtype=torch.float64), layer.initial_state(2)

    def step():
        with torch.no_grad():
            return layer.step(x, s0)[0]

    def fresh():                                                  # autograd on: the cache is bypassed
        return layer.step(x, s0)[0].detach()

    y0 = step()
    step()
    assert len(calls) == 1                                        # reused: nothing changed
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    fresh().square().sum()                                        # (no cache while grad is on)
    layer.step(x, s0)[0].square().sum().backward()
    opt.step()                                                    # in-place update: versions bump
    n = len(calls)
    y1 = step()
    assert len(calls) == n + 1 and not torch.allclose(y0, y1)
    torch.testing.assert_close(y1, fresh())
    other = copy.deepcopy(layer)
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(0.9)
    layer.load_state_dict(other.state_dict())                     # copy_ in place
    torch.testing.assert_close(step(), fresh())
    layer.log_dt.data = layer.log_dt.data + 0.2                   # a new storage
    torch.testing.assert_close(step(), fresh())
    n = len(calls)
    step()
    assert len(calls) == n


def test_version_key_reads_no_tensor_values():
    """The CUDA key is metadata only: the cache's lookup never touches tensor data (no torch.equal,
    no clone), which is what would sync."""
    src = inspect.getsource(step_cache.StepCache.get)
    tree = ast.parse(textwrap.dedent(src))
    branch = [n for n in ast.walk(tree) if isinstance(n, ast.If) and ast.unparse(n.test) == "not by_value"]
    assert branch and "data_ptr" in ast.unparse(branch[0]) and "_version" in ast.unparse(branch[0])
    assert "equal" not in ast.unparse(branch[0])


# ---- kernels/dplr.py: no nonzero, no syncing solve on the per-call path ----------------------------------
def test_risky_list_is_the_risky_mask_without_nonzero(monkeypatch):
    """The fixed-size list (first occurrences; what CUDA and traced graphs use) is exactly the set of the
    data-dependent mask, for weakly damped poles (LegT-like, Re lambda = -1e-4) mixed with strongly damped
    ones, plain and mirrored; so is the CPU eager list (the mask's distinct nodes, each once)."""
    from statespaces.kernels import dplr

    g = torch.Generator().manual_seed(0)
    H, M, L = 3, 6, 64
    re = torch.where(torch.rand(H, M, generator=g) < 0.5, torch.full((H, M), -1e-4), -torch.rand(H, M, generator=g))
    Lambda = torch.complex(re, 20 * torch.randn(H, M, generator=g)).to(torch.complex128)
    dt = torch.rand(H, generator=g, dtype=torch.float64) * 0.1 + 0.01
    for count, mirrored in ((L // 2 + 1, False), (L, True)):
        mask = dplr._risky_nodes(Lambda, dt, L, count, mirrored)
        want = sorted(zip(*(t.tolist() for t in mask.nonzero(as_tuple=True))))
        hs, ks, first = dplr._risky_list_fixed(Lambda, dt, L, count, mirrored)
        assert hs.shape == ks.shape == first.shape and hs.numel() == H * (1 + (4 if mirrored else 2) * M)
        assert sorted(zip(hs[first].tolist(), ks[first].tolist())) == want
        hs, ks, first = dplr._risky_list(Lambda, dt, L, count, mirrored)            # CPU eager
        assert bool(first.all()) and sorted(zip(hs.tolist(), ks.tolist())) == want
        monkeypatch.setattr(dplr, "tracing", lambda: True)                          # traced: the fixed list
        assert dplr._risky_list(Lambda, dt, L, count, mirrored)[0].numel() == H * (1 + (4 if mirrored else 2) * M)
        monkeypatch.undo()


def test_dplr_per_call_path_has_no_syncing_calls():
    """Static check of kernels/dplr.py: no call of ``nonzero``, ``torch.linalg.solve`` (its error check reads
    the device), ``.item()``, ``.tolist()``, ``bool(...)``, ``.any()``/``.all()`` in the functions S4's forward
    calls (``_risky_list`` takes ``nonzero`` on CPU eager only, where no device is synced; CUDA and traced
    graphs take ``_risky_list_fixed``)."""
    from statespaces.kernels import dplr

    for fn in (dplr.dplr_kernel, dplr.dplr_advance, dplr.dplr_zero_input, dplr.discrete_power, dplr.resolvent_sums,
               dplr.bilinear_dplr_real, dplr.truncated_C, dplr.untruncated_C, dplr._refine_fp64, dplr._risky_list_fixed,
               dplr._risky_nodes, dplr._resolvent_vector, dplr._solve):
        calls = _calls(fn)
        for bad in ("nonzero", "torch.linalg.solve", "item", "tolist", "bool", "any", "all"):
            assert bad not in calls, f"{fn.__name__} calls {bad}"


def _calls(fn):
    """Names of the functions and methods ``fn`` calls (``x.nonzero()`` -> ``nonzero``; dotted for modules)."""
    out = set()
    for node in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(fn)))):
        if isinstance(node, ast.Call):
            f = node.func
            out.add(f.attr if isinstance(f, ast.Attribute) else ast.unparse(f))
            out.add(ast.unparse(f))
    return out


def test_singular_solve_is_refused_with_a_value_error_on_cpu():
    from statespaces.kernels import dplr

    A = torch.eye(3, dtype=torch.float64).expand(2, 3, 3).clone()
    A[1] = 0.0
    with pytest.raises(ValueError, match="1 singular linear system"):
        dplr._solve(A, torch.ones(2, 3, 1, dtype=torch.float64), "test")
    torch.testing.assert_close(dplr._solve(A[:1], torch.ones(1, 3, 1, dtype=torch.float64), "test"),
                               torch.ones(1, 3, 1, dtype=torch.float64))
