"""Survivors of a mutation audit (round 11f) of the optimizer groups (:mod:`statespaces.optim`), the layer
configs and registry (:mod:`statespaces.layers.config`, :mod:`statespaces.layers.registry`), the reference twins
(:mod:`statespaces.kernels.reference`) and the Cauchy argument handling (:mod:`statespaces.ops._cauchy_args`).

56 mutants; 40 killed by the existing tests, 16 survived. Equivalent: putting size-1 batch dims in the
shared Cauchy group (``batch[i] >= 1``: only the layout of size-1 axes changes). Unreachable through the field rules
(pinned here with a stand-in constructor): ``LayerConfig.check`` reporting a constructor's ``TypeError``. Gaps, each
pinned below: frozen parameters and empty groups in ``param_groups``; ``check``'s RNG isolation and return value;
case-insensitive kinds; ``to_dict``'s lists; same-kind merges; the kind-switch warning; ``available_layers``;
``make_layer``'s seeding; ``recurrence``'s initial and final state; the Cauchy output's dim order after grouping and
its scalar-argument error.
"""
import warnings

import pytest
import torch
from torch import nn

from statespaces import S4D, SequenceClassifier, param_groups
from statespaces.layers import config as layer_config_module
from statespaces.layers.config import config_class, layer_class, layer_config, merge_layer
from statespaces.layers.s4 import S4Config
from statespaces.layers.s4nd import S4NDConfig


# ---- optimizer groups -------------------------------------------------------------------------------------------
def test_param_groups_leave_out_frozen_parameters():
    """``param_groups`` splits the *trainable* parameters: a parameter with ``requires_grad=False`` is in no group,
    every trainable one is in exactly one."""
    model = SequenceClassifier(1, 3, d_model=4, n_layers=1, layer=dict(kind="s4d", d_state=4))
    layer = model.blocks[0].layer
    layer.D.requires_grad_(False)
    layer.log_dt.requires_grad_(False)
    grouped = [id(p) for g in param_groups(model) for p in g["params"]]
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert len(grouped) == len(set(grouped))
    assert set(grouped) == trainable
    assert id(layer.D) not in grouped and id(layer.log_dt) not in grouped


def test_param_groups_drop_empty_groups():
    """Empty groups are dropped: a model without SSM layers has no ``"ssm"`` group, one without 1-D parameters no
    ``"no_decay"`` group (an optimizer is never handed an empty group)."""
    assert [g["name"] for g in param_groups(nn.Linear(3, 2))] == ["decay", "no_decay"]
    assert [g["name"] for g in param_groups(nn.Linear(3, 2, bias=False))] == ["decay"]
    assert [g["name"] for g in param_groups(nn.LayerNorm(4))] == ["no_decay"]


# ---- layer configs ----------------------------------------------------------------------------------------------
def test_check_leaves_the_global_rng_untouched():
    """``LayerConfig.check`` builds a throw-away layer "without touching the global RNG": the draws after it are
    the draws a fresh seed gives without it."""
    cfg = layer_config({"kind": "s4d", "d_state": 4})
    torch.manual_seed(123)
    want = torch.rand(5)
    torch.manual_seed(123)
    cfg.check()
    assert torch.equal(torch.rand(5), want)


def test_check_returns_the_config_itself():
    """``check`` returns the config (so ``cfg = layer_config(spec).check()`` chains)."""
    cfg = layer_config({"kind": "s4d", "d_state": 4})
    assert cfg.check() is cfg


def test_check_reports_a_constructor_type_error_as_a_config_error(monkeypatch):
    """A constructor refusing the settings with a ``TypeError`` (not only ``ValueError``) is reported as a
    :class:`ConfigError` naming where and the kind."""
    def refuse(d_model, **settings):
        raise TypeError("bad combination")

    monkeypatch.setattr(layer_config_module, "layer_class", lambda kind: refuse)
    with pytest.raises(layer_config_module.ConfigError, match=r"model\.layer \(kind 's4d'\): bad combination"):
        layer_config("s4d").check("model.layer")


def test_kind_names_are_case_insensitive():
    """Kinds are matched case-insensitively by ``layer_class``/``config_class`` (and hence by ``merge_layer``):
    ``"S4D"`` is ``"s4d"``."""
    assert layer_class("S4D") is layer_class("s4d")
    assert config_class("S4") is S4Config
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        merged = merge_layer({"kind": "s4d", "d_state": 32}, "LINOSS")
    assert merged == {"kind": "LINOSS"}                          # d_state is no LinOSS setting: left behind
    assert any("d_state=32" in str(w.message) for w in caught)


def test_to_dict_writes_tuples_as_lists():
    """``to_dict`` is JSON/TOML data with tuples as lists (per-axis S4ND settings)."""
    cfg = S4NDConfig(dims=2, bidirectional=(True, False), dt_min=(1e-3, 2e-3))
    d = cfg.to_dict()
    assert d["bidirectional"] == [True, False] and type(d["bidirectional"]) is list
    assert type(d["dt_min"]) is list
    assert layer_config(d) == cfg


def test_merge_with_the_same_kind_is_a_plain_update():
    """With the same kind, ``merge_layer`` is ``{**old, **new}``: every key of ``old`` stays as given (a default
    included, an unknown key included so that reading the result reports it), without a warning."""
    old = {"kind": "s4d", "d_state": 64, "init": "inv", "bogus": 1}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        merged = merge_layer(old, {"kind": "s4d", "dt_max": 0.2})
    assert merged == {"kind": "s4d", "d_state": 64, "init": "inv", "bogus": 1, "dt_max": 0.2}
    with pytest.raises(layer_config_module.ConfigError, match="bogus"):
        layer_config(merged)


def test_switching_kind_warns_only_about_settings_the_new_spec_does_not_give():
    """Switching kind names in its warning only the old settings left behind; a key the new spec gives itself is
    not "left behind" (reading the result then names that key)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        merged = merge_layer({"kind": "s4d", "d_state": 32}, {"kind": "linoss", "d_state": 16})
    assert merged == {"kind": "linoss", "d_state": 16}


# ---- registry ---------------------------------------------------------------------------------------------------
def test_available_layers_lists_every_installed_kind():
    """Every layer module ships with the package, so ``available_layers()`` is every registered kind, in order."""
    from statespaces.layers.registry import available_layers

    assert available_layers() == ("s4d", "s4", "linoss", "dlinoss", "s4nd", "s5")


def test_make_layer_builds_the_layer_the_constructor_builds():
    """``make_layer(spec, d)`` is the layer ``Layer(d, **settings)``: with a seed, the same parameters as the
    constructor called directly (block 0, no per-block seed offset)."""
    from statespaces.layers.registry import make_layer

    made = make_layer({"kind": "s4d", "d_state": 4, "init": "inv", "seed": 3}, 2)
    direct = S4D(2, d_state=4, init="inv", seed=3)
    assert made.state_dict().keys() == direct.state_dict().keys()
    for k, v in direct.state_dict().items():
        assert torch.equal(made.state_dict()[k], v), k


# ---- reference twins --------------------------------------------------------------------------------------------
def _loop_recurrence(dA, dB, C, D, u, x0):
    """x_k = dA x_{k-1} + dB u_k, y_k = C x_k + D u_k, one channel and batch row at a time, from x_{-1} = x0."""
    Bsz, L, H = u.shape
    ys = torch.zeros(Bsz, L, H, dtype=torch.float64)
    xs = torch.zeros(Bsz, H, dA.shape[-1], dtype=torch.float64)
    for b in range(Bsz):
        for h in range(H):
            x = x0[b, h].clone()
            for k in range(L):
                x = dA[h] @ x + dB[h] * u[b, k, h]
                ys[b, k, h] = C[h] @ x + D[h] * u[b, k, h]
            xs[b, h] = x
    return ys, xs


def test_recurrence_starts_from_the_given_state():
    """``recurrence(..., x0=x0)`` starts from ``x_{-1} = x0`` (not zeros): outputs and final state match a plain
    loop, and differ from the zero-state run by the free response ``C dA^{k+1} x0``."""
    from statespaces.kernels.reference import recurrence

    g = torch.Generator().manual_seed(0)
    H, N, Bsz, L = 2, 3, 2, 5
    dA = 0.5 * torch.randn(H, N, N, generator=g, dtype=torch.float64)
    dB, C = torch.randn(H, N, generator=g, dtype=torch.float64), torch.randn(H, N, generator=g, dtype=torch.float64)
    D = torch.randn(H, generator=g, dtype=torch.float64)
    u = torch.randn(Bsz, L, H, generator=g, dtype=torch.float64)
    x0 = torch.randn(Bsz, H, N, generator=g, dtype=torch.float64)
    y, x = recurrence(dA, dB, C, u, D, x0=x0)
    want_y, want_x = _loop_recurrence(dA, dB, C, D, u, x0)
    torch.testing.assert_close(y, want_y, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x, want_x, rtol=1e-12, atol=1e-12)
    y0, _ = recurrence(dA, dB, C, u, D)
    free = torch.stack([torch.einsum("hn,hnm,bhm->bh", C, torch.linalg.matrix_power(dA, k + 1), x0)
                        for k in range(L)], 1)
    torch.testing.assert_close(y - y0, free, rtol=1e-10, atol=1e-12)


# ---- Cauchy arguments -------------------------------------------------------------------------------------------
def _literal_cauchy(v, z, w):
    """sum_n v_n / (z_k - w_n) by broadcasting, the definition written out."""
    return (v.unsqueeze(-2) / (z.unsqueeze(-1) - w.unsqueeze(-2))).sum(-1)


@pytest.mark.parametrize("shapes", [((2, 3, 4), (1, 1, 4), (1, 1, 4)), ((3, 2, 4), (3, 1, 1), (3, 1, 1)),
                                    ((2, 4, 3), (1, 4, 1), (1, 4, 1))])
def test_cauchy_broadcasts_shared_poles_over_several_leading_dims(shapes):
    """Batch dims where z and w are constant but v is not are shared (grouped) and the output is put back in the
    order of the input dims, for groups before, between and after the other dims (a 3-cycle of dims)."""
    from statespaces.kernels.cauchy import cauchy

    g = torch.Generator().manual_seed(1)
    sv, sz, sw = shapes
    N, K = 5, 6

    def rand(*s):
        return torch.complex(torch.randn(*s, generator=g, dtype=torch.float64),
                             torch.randn(*s, generator=g, dtype=torch.float64))

    v, z, w = rand(*sv, N), rand(*sz, K), rand(*sw, N)
    out = cauchy(v, z, w)
    want = _literal_cauchy(v, z, w)
    assert out.shape == want.shape == (*torch.broadcast_shapes(sv, sz, sw), K)
    torch.testing.assert_close(out, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("which", ["v", "z", "w"])
def test_cauchy_refuses_a_scalar_argument_with_a_value_error(which):
    """A 0-dim v, z or w is refused with the documented ``ValueError`` ("at least one dimension"), not an
    ``IndexError`` from deep inside."""
    from statespaces.kernels.cauchy import cauchy

    args = {"v": torch.ones(3, dtype=torch.complex128), "z": torch.ones(4, dtype=torch.complex128),
            "w": torch.zeros(3, dtype=torch.complex128)}
    args[which] = torch.tensor(1.0 + 0j, dtype=torch.complex128)
    with pytest.raises(ValueError, match="at least one dimension"):
        cauchy(args["v"], args["z"], args["w"])
