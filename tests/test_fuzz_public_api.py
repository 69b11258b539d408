"""Fuzz the public API with bad input (issue #8, item 3): hypothesis draws invalid arguments
(wrong ranks, dtypes, devices, NaN/inf, zero-length, huge or out-of-range values, unknown names,
missing paths) for constructors, layer methods, HiPPO functions, discretization, kernels, models
and data loaders. Every call must raise a documented exception (``ValueError``, ``TypeError``,
``FileNotFoundError``, ``FloatingPointError``) with a message, raised by statespaces' own
validation (the innermost traceback frame is in the package, not deep in torch), and never return.

The layers' forward/step inputs are fuzzed in tests/test_equivalence.py; docs/validation.md
lists what each entry point validates. HYPOTHESIS_PROFILE=long runs 20x more cases.
"""
import math
import os
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import statespaces
from statespaces import S4, S4D, S4ND, LinOSS, ResidualBlock, SaShiMi, SequenceClassifier, param_groups
from statespaces import discretize_dense, discretize_diagonal
from statespaces import hippo
from statespaces.kernels import cauchy, oscillator_transition, vandermonde, vandermonde_transpose
from statespaces.layers.registry import make_layer
from statespaces.ops import fftconv, scan_diagonal

pytestmark = pytest.mark.usefixtures("one_thread")

LONG = os.environ.get("HYPOTHESIS_PROFILE", "ci") == "long"
DOCUMENTED = (ValueError, TypeError, FileNotFoundError, FloatingPointError)
PACKAGE = str(Path(statespaces.__file__).parent)


def _n(ci: int) -> int:
    return ci * 20 if LONG else ci


def refused(fn, *args, **kwargs):
    """Call fn: it must raise a documented exception with a message, from statespaces' own code."""
    try:
        out = fn(*args, **kwargs)
    except DOCUMENTED as e:
        assert str(e).strip(), f"{type(e).__name__} without a message"
        tb = e.__traceback__
        while tb.tb_next is not None:
            tb = tb.tb_next
        where = tb.tb_frame.f_code.co_filename
        assert where.startswith(PACKAGE), f"{type(e).__name__} raised deep inside {where}: {e}"
        return e
    what = getattr(fn, "__name__", type(fn).__name__)
    raise AssertionError(f"bad input accepted silently: {what}{args} {kwargs} -> {type(out).__name__}")


BAD_SIZES = st.sampled_from([0, -1, -64, 2.5, "8", True, None, float("nan"), float("inf")])
BAD_FLOATS = st.sampled_from([0.0, -1.0, float("nan"), float("inf"), -float("inf"), "0.1", None])
names = st.text(min_size=0, max_size=8)


def _not(valid):
    valid = {v.lower() for v in valid}
    return st.one_of(names.filter(lambda s: s.lower() not in valid), st.sampled_from([None, 3, b"legs"]))


# ---- constructors ----------------------------------------------------------------------------
LAYER_CTORS = {"S4D": S4D, "S4": S4, "LinOSS": LinOSS, "S4ND": lambda H, N=8, **k: S4ND(H, 1, N, **k)}


@pytest.mark.parametrize("ctor", sorted(LAYER_CTORS))
@given(which=st.sampled_from(["d_model", "d_state"]), bad=BAD_SIZES)
@settings(max_examples=_n(8))
def test_layer_sizes(ctor, which, bad):
    args = {"d_model": 4, "d_state": 8, which: bad}
    refused(LAYER_CTORS[ctor], args["d_model"], args["d_state"])


CHOICES = {
    "S4D": {"init": S4D_INITS, "discretization": ("zoh", "bilinear", "forward_euler", "backward_euler", "gbt"),
            "real_transform": ("exp", "softplus", "relu", "none")} if (S4D_INITS := statespaces.layers.init.S4D_INITS) else {},
    "S4": {"init": statespaces.layers.s4.S4_INITS, "real_transform": ("exp", "softplus", "relu", "none"),
           "cauchy_backend": ("chunked", "naive")},
    "LinOSS": {"discretization": ("im", "imex"), "A_param": ("relu", "square", "none"), "mode": ("scan", "conv", "loop")},
    "S4ND": {"init": S4D_INITS, "conv": ("fft", "toeplitz", "auto"), "bandlimit_rule": ("nyquist", "train")},
}


@pytest.mark.parametrize("ctor", sorted(CHOICES))
@given(data=st.data())
@settings(max_examples=_n(8))
def test_layer_names(ctor, data):
    key = data.draw(st.sampled_from(sorted(CHOICES[ctor])))
    bad = data.draw(_not(CHOICES[ctor][key]))
    e = refused(LAYER_CTORS[ctor], 4, 8, **{key: bad})
    if isinstance(bad, str):
        assert "valid" in str(e), e


@pytest.mark.parametrize("ctor", ["S4D", "S4", "S4ND", "LinOSS"])
@given(lo=BAD_FLOATS | st.floats(0.0, 2.0), hi=BAD_FLOATS | st.floats(0.0, 2.0))
@settings(max_examples=_n(10))
def test_step_size_ranges(ctor, lo, hi):
    ok = (isinstance(lo, float) and isinstance(hi, float) and 0 < lo <= hi and math.isfinite(hi)
          and (ctor != "LinOSS" or hi < 1))
    if ok or (ctor == "LinOSS" and lo is None and hi is None):      # LinOSS: both None is its default init
        return
    refused(LAYER_CTORS[ctor], 4, 8, dt_min=lo, dt_max=hi)


@given(case=st.sampled_from(["odd-s4d", "odd-s4", "gbt-no-alpha", "alpha-no-gbt", "alpha-range", "legt-rank1",
                             "rank0", "linoss-one-dt", "s4nd-dims0", "s4nd-bidir-len", "s4nd-bidir-type",
                             "s4nd-bandlimit", "s4nd-bandlimit-inf", "s4nd-dt-len"]))
@settings(max_examples=_n(20))
def test_layer_option_combinations(case):
    call = {
        "odd-s4d": lambda: S4D(4, 7), "odd-s4": lambda: S4(4, 7),
        "gbt-no-alpha": lambda: S4D(4, 8, discretization="gbt"), "alpha-no-gbt": lambda: S4D(4, 8, alpha=0.5),
        "alpha-range": lambda: S4D(4, 8, discretization="gbt", alpha=1.5),
        "legt-rank1": lambda: S4(4, 8, init="legt", rank=1), "rank0": lambda: S4(4, 8, rank=0),
        "linoss-one-dt": lambda: LinOSS(4, 8, dt_min=0.1),
        "s4nd-dims0": lambda: S4ND(4, dims=0), "s4nd-bidir-len": lambda: S4ND(4, dims=2, bidirectional=(True,)),
        "s4nd-bidir-type": lambda: S4ND(4, dims=1, bidirectional="yes"),
        "s4nd-bandlimit": lambda: S4ND(4, dims=1, bandlimit=-1.0),
        "s4nd-bandlimit-inf": lambda: S4ND(4, dims=1, bandlimit=float("inf")),
        "s4nd-dt-len": lambda: S4ND(4, dims=2, dt_min=(1e-3, 1e-3, 1e-3)),
    }[case]
    refused(call)


@given(name=_not(("s4d", "s4", "linoss")), H=st.integers(1, 4))
@settings(max_examples=_n(10))
def test_make_layer_unknown_names(name, H):
    e = refused(make_layer, name, H)
    assert "valid choices" in str(e)


@given(case=st.sampled_from(["pool1", "pool0", "expand0", "layers0", "layer-name", "ff-neg", "dmodel"]))
@settings(max_examples=_n(8))
def test_sashimi_constructor(case):
    kw = {"pool1": dict(pool=1), "pool0": dict(pool=(2, 0)), "expand0": dict(expand=0), "layers0": dict(n_layers=0),
          "layer-name": dict(layer="mamba"), "ff-neg": dict(ff_expand=-1), "dmodel": dict(d_model=0)}[case]
    refused(SaShiMi, **{"d_model": 4, "n_layers": 1, "layer": "s4d", "layer_kwargs": dict(d_state=4), **kw})


@given(case=st.sampled_from(["pool", "classes0", "input0", "layer", "layers0", "norm", "dropout", "mixing"]))
@settings(max_examples=_n(8))
def test_classifier_and_block_constructors(case):
    if case in ("norm", "dropout", "mixing"):
        kw = {"norm": dict(norm="group"), "dropout": dict(dropout=1.0), "mixing": dict(mixing="attention")}[case]
        refused(ResidualBlock, S4D(4, 4), **kw)
        refused(ResidualBlock, torch.nn.Linear(4, 4))
        return
    kw = {"pool": dict(pool="max"), "classes0": dict(n_classes=0), "input0": dict(d_input=0), "layer": dict(layer="x"),
          "layers0": dict(n_layers=0)}[case]
    refused(SequenceClassifier, **{"d_input": 2, "n_classes": 3, "d_model": 4, "n_layers": 1, **kw})


# ---- layer methods ---------------------------------------------------------------------------
LAYERS = {"S4D": lambda: S4D(3, 4), "S4": lambda: S4(3, 4), "LinOSS": lambda: LinOSS(3, 2),
          "S4D-bidirectional": lambda: S4D(3, 4, bidirectional=True)}
BAD_L = st.sampled_from([0, -1, 2.5, "4", True, None, torch.tensor(4)])
BAD_RATE = st.sampled_from([0, -1.0, float("nan"), float("inf"), "1", None, torch.tensor(1.0), True and None])


@pytest.mark.parametrize("name", sorted(LAYERS))
@given(L=BAD_L, rate=BAD_RATE, which=st.sampled_from(["kernel-L", "kernel-rate", "forward-rate", "step-rate"]))
@settings(max_examples=_n(8))
def test_kernel_length_and_rate(name, L, rate, which):
    layer = LAYERS[name]()
    x = torch.randn(2, 5, 3)
    if which == "kernel-L":
        refused(layer.kernel, L)
    elif which == "kernel-rate":
        refused(layer.kernel, 5, rate)
    elif which == "forward-rate":
        refused(layer, x, rate=rate)
    elif not layer.bidirectional:
        refused(layer.step, x[:, 0], layer.initial_state(2), rate)


@pytest.mark.parametrize("name", ["S4D", "S4", "LinOSS"])
@given(kind=st.sampled_from(["batch", "shape", "list", "none-step", "real"]))
@settings(max_examples=_n(5))
def test_bad_states(name, kind):
    layer = LAYERS[name]()
    x = torch.randn(2, 5, 3)
    good = layer.initial_state(2)
    state = {"batch": layer.initial_state(3), "shape": good[..., :1], "list": good.tolist(), "none-step": None,
             "real": good.real}[kind]
    if kind != "none-step":
        refused(layer, x, state=state)
    refused(layer.step, x[:, 0], state)


@given(kind=st.sampled_from(["rank", "channels", "int", "complex", "nan", "inf", "empty", "float64", "meta",
                             "rate-len", "rate-bad", "shape-kernel"]), dims=st.integers(1, 2))
@settings(max_examples=_n(12))
def test_s4nd_bad_input(kind, dims):
    layer = S4ND(3, dims=dims, d_state=4)
    sp = (5,) * dims
    if kind == "rate-len":
        refused(layer, torch.randn(1, *sp, 3), rate=[1.0] * (dims + 1))
        return
    if kind == "rate-bad":
        refused(layer, torch.randn(1, *sp, 3), rate=-1.0)
        return
    if kind == "shape-kernel":
        refused(layer.kernel, (4,) * (dims + 1))
        return
    x = {"rank": torch.randn(*sp, 3), "channels": torch.randn(1, *sp, 4), "int": torch.ones(1, *sp, 3, dtype=torch.int64),
         "complex": torch.randn(1, *sp, 3, dtype=torch.complex64), "nan": torch.full((1, *sp, 3), float("nan")),
         "inf": torch.full((1, *sp, 3), float("inf")), "empty": torch.randn(1, *((0,) + sp[1:]), 3),
         "float64": torch.randn(1, *sp, 3, dtype=torch.float64), "meta": torch.randn(1, *sp, 3, device="meta")}[kind]
    refused(layer, x)


@given(kind=st.sampled_from(["rank", "channels", "int", "nan", "empty", "float64", "step-int", "step-nan",
                             "step-rank", "state-dict", "state-batch"]))
@settings(max_examples=_n(11))
def test_sashimi_bad_input(kind):
    m = SaShiMi(2, n_layers=1, pool=(2,), layer="s4d", layer_kwargs=dict(d_state=4))
    st0 = m.initial_state(1)
    calls = {
        "rank": lambda: m(torch.randn(4, 2)), "channels": lambda: m(torch.randn(1, 4, 3)),
        "int": lambda: m(torch.ones(1, 4, 2, dtype=torch.int64)), "nan": lambda: m(torch.full((1, 4, 2), float("nan"))),
        "empty": lambda: m(torch.randn(1, 0, 2)), "float64": lambda: m(torch.randn(1, 4, 2, dtype=torch.float64)),
        "step-int": lambda: m.step(torch.ones(1, 2, dtype=torch.int64), st0),
        "step-nan": lambda: m.step(torch.full((1, 2), float("nan")), st0),
        "step-rank": lambda: m.step(torch.randn(2), st0),
        "state-dict": lambda: m(torch.randn(1, 4, 2), state={"t": 0}),
        "state-batch": lambda: m.step(torch.randn(2, 2), st0),
    }
    refused(calls[kind])


@given(kind=st.sampled_from(["zero", "long", "shape", "float", "x-rank"]))
@settings(max_examples=_n(5))
def test_classifier_bad_lengths(kind):
    model = SequenceClassifier(2, 3, d_model=4, n_layers=1, layer_kwargs=dict(d_state=4))
    x = torch.randn(2, 6, 2)
    lengths = {"zero": torch.tensor([0, 6]), "long": torch.tensor([3, 7]), "shape": torch.tensor([3]),
               "float": torch.tensor([2.5, 3.0]), "x-rank": None}[kind]
    if kind == "x-rank":
        refused(model, torch.randn(6, 2))
        return
    refused(model, x, lengths)


@given(lr=BAD_FLOATS.filter(lambda v: v is not None and not isinstance(v, str)), which=st.sampled_from(["lr", "ssm_lr"]))
@settings(max_examples=_n(5))
def test_param_groups_bad_rates(lr, which):
    refused(param_groups, S4D(2, 4), **{which: lr})


# ---- HiPPO -----------------------------------------------------------------------------------
HIPPO_FUNCS = {
    "transition": lambda m, N, th: hippo.transition(m, N, th),
    "basis": lambda m, N, th: hippo.basis(m, N, torch.linspace(0, 1, 5), th),
    "weight": lambda m, N, th: hippo.weight(m, torch.linspace(0, 1, 5), th),
    "nplr": lambda m, N, th: hippo.nplr(m, N, theta=th),
    "dplr": lambda m, N, th: hippo.dplr(m, N, theta=th),
    "low_rank": lambda m, N, th: hippo.low_rank(m, N, th),
    "HiPPO": lambda m, N, th: hippo.HiPPO(m, N, theta=th) if "theta" in hippo.HiPPO.__init__.__code__.co_varnames
    else hippo.HiPPO(m, N),
}


@pytest.mark.parametrize("fn", sorted(HIPPO_FUNCS))
@given(data=st.data())
@settings(max_examples=_n(8))
def test_hippo_bad_arguments(fn, data):
    which = data.draw(st.sampled_from(["measure", "N", "theta"] if fn != "weight" else ["measure", "theta"]))
    measure = data.draw(_not(hippo.MEASURES)) if which == "measure" else "legs"
    N = data.draw(BAD_SIZES) if which == "N" else 4
    theta = data.draw(BAD_FLOATS) if which == "theta" else 1.0
    refused(HIPPO_FUNCS[fn], measure, N, theta)


@given(kind=st.sampled_from(["t-nan", "t-inf", "kind", "diag-measure", "diag-N", "disc"]))
@settings(max_examples=_n(6))
def test_hippo_other_bad_arguments(kind):
    A, B = hippo.transition("legs", 4)
    calls = {
        "t-nan": lambda: hippo.basis("legs", 4, torch.tensor([0.0, float("nan")])),
        "t-inf": lambda: hippo.basis("legt", 4, torch.tensor([float("inf")])),
        "kind": lambda: hippo.basis("legs", 4, torch.linspace(0, 1, 3), kind="spline"),
        "diag-measure": lambda: hippo.diagonal_init("nope", 4),
        "diag-N": lambda: hippo.diagonal_init("legs", 0),
        "disc": lambda: hippo.discretize(A, B, 0.1, "rk4"),
    }
    refused(calls[kind])


# ---- discretization --------------------------------------------------------------------------
@given(kind=st.sampled_from(["method", "alpha-range", "alpha-zoh", "gbt-none", "dense-square", "dense-rows",
                             "dense-method"]), alpha=st.floats(-5, 5).filter(lambda a: not 0 <= a <= 1))
@settings(max_examples=_n(10))
def test_discretize_bad_arguments(kind, alpha):
    A = torch.complex(-torch.rand(2, 3), torch.randn(2, 3))
    Bv = torch.ones(2, 3, dtype=torch.complex64)
    dt = torch.full((2,), 0.1)
    calls = {
        "method": lambda: discretize_diagonal(A, Bv, dt, "rk4"),
        "alpha-range": lambda: discretize_diagonal(A, Bv, dt, "gbt", alpha),
        "alpha-zoh": lambda: discretize_diagonal(A, Bv, dt, "zoh", 0.5),
        "gbt-none": lambda: discretize_diagonal(A, Bv, dt, "gbt"),
        "dense-square": lambda: discretize_dense(torch.randn(3, 4), torch.randn(3), 0.1),
        "dense-rows": lambda: discretize_dense(torch.randn(3, 3), torch.randn(4), 0.1),
        "dense-method": lambda: discretize_dense(torch.randn(3, 3), torch.randn(3), 0.1, "magic"),
    }
    refused(calls[kind])


# ---- kernels and ops ---------------------------------------------------------------------------
@given(kind=st.sampled_from(["vander-L", "vander-N", "cauchy-N", "cauchy-type", "cauchy-int", "cauchy-scalar",
                             "fft-kernel", "fft-bidir", "scan-len", "osc-scheme", "osc-negA"]),
       L=BAD_L)
@settings(max_examples=_n(12))
def test_kernel_functions_bad_arguments(kind, L):
    coef = torch.randn(2, 3, dtype=torch.complex64)
    log_a = torch.complex(-torch.rand(2, 3), torch.randn(2, 3))
    v, z, w = torch.randn(2, 4, dtype=torch.complex64), torch.randn(2, 5, dtype=torch.complex64), torch.randn(2, 4, dtype=torch.complex64)
    calls = {
        "vander-L": lambda: vandermonde(coef, log_a, L),
        "vander-N": lambda: vandermonde(torch.randn(2, 4, dtype=torch.complex64), log_a, 5),
        "cauchy-N": lambda: cauchy(v[..., :3], z, w),
        "cauchy-type": lambda: cauchy(v.tolist(), z, w),
        "cauchy-int": lambda: cauchy(torch.ones(2, 4, dtype=torch.int64), z, w),
        "cauchy-scalar": lambda: cauchy(torch.tensor(1.0), z, w),
        "fft-kernel": lambda: fftconv(torch.randn(1, 6, 2), torch.randn(3, 6)),
        "fft-bidir": lambda: fftconv(torch.randn(1, 6, 2), torch.randn(2, 6), bidirectional=True),
        "scan-len": lambda: scan_diagonal(torch.rand(2, 5, 3), torch.randn(2, 4, 3)),
        "osc-scheme": lambda: oscillator_transition(torch.rand(3), torch.rand(3), "rk4"),
        "osc-negA": lambda: oscillator_transition(-torch.ones(3), torch.full((3,), 0.5), "im"),
    }
    refused(calls[kind])


def test_vandermonde_transpose_shape_mismatch():
    refused(vandermonde_transpose, torch.randn(3, 5), torch.complex(-torch.rand(2, 4), torch.randn(2, 4)))


# ---- data --------------------------------------------------------------------------------------
@given(name=names.filter(lambda s: not s.startswith("ucr:")))
@settings(max_examples=_n(10))
def test_unknown_dataset_names(name):
    from statespaces.data import DATASETS, get_dataset

    if name in DATASETS:
        return
    e = refused(get_dataset, name)
    assert "valid datasets" in str(e)


@given(kind=st.sampled_from(["ucr-missing-path", "ucr-missing-name", "ucr-bad-file", "fashion-root", "idx-garbage",
                             "synthetic-n0", "synthetic-target", "listops-n", "config-file", "config-garbage"]))
@settings(max_examples=_n(10))
def test_data_and_config_bad_paths(tmp_path_factory, kind):
    from statespaces.data import get_dataset
    from statespaces.data.fashion_mnist import load_fashion_mnist, read_idx
    from statespaces.data.ucr import load_ucr, read_ts
    from statespaces.train import build_config

    tmp = tmp_path_factory.mktemp("fuzz")
    garbage = tmp / "x_TRAIN.ts"
    garbage.write_bytes(b"\x00\xffnot a ts file\n@data\n1,2:zz\n")
    (tmp / "x_TEST.ts").write_bytes(b"garbage")
    calls = {
        "ucr-missing-path": lambda: get_dataset(f"ucr:{tmp}/missing/Nope_TRAIN.ts"),
        "ucr-missing-name": lambda: load_ucr("NoSuchProblemAnywhere", root=tmp),
        "ucr-bad-file": lambda: read_ts(garbage),
        "fashion-root": lambda: load_fashion_mnist(root=tmp / "nowhere"),
        "idx-garbage": lambda: read_idx(garbage),
        "synthetic-n0": lambda: get_dataset("adding", n_train=0),
        "synthetic-target": lambda: get_dataset("copying", target="everything"),
        "listops-n": lambda: get_dataset("listops", n_train=-1),
        "config-file": lambda: build_config(config_file=str(tmp / "missing.toml")),
        "config-garbage": lambda: build_config(config_file=str(garbage)),
    }
    refused(calls[kind])
