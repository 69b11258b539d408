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
from statespaces.kernels import cauchy, oscillator_transition, vandermonde, vandermonde_transpose, zoh_vandermonde
from statespaces.layers.dlinoss import DLinOSS
from statespaces.layers.registry import make_layer
from statespaces.layers.s5 import S5
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
LAYER_CTORS = {"S4D": S4D, "S4": S4, "LinOSS": LinOSS, "S4ND": lambda H, N=8, **k: S4ND(H, 1, N, **k), "S5": S5,
               "DLinOSS": DLinOSS}


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
    "S5": {"discretization": ("zoh", "bilinear"), "real_transform": ("exp", "softplus", "relu", "none")},
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


@pytest.mark.parametrize("ctor", ["S4D", "S4", "S4ND", "LinOSS", "S5"])
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


@given(name=_not(("s4d", "s4", "linoss", "dlinoss", "s5")), H=st.integers(1, 4))
@settings(max_examples=_n(10))
def test_make_layer_unknown_names(name, H):
    e = refused(make_layer, name, H)
    assert "s4d, s4, linoss" in str(e)


@given(case=st.sampled_from(["pool1", "pool0", "expand0", "layers0", "layer-name", "ff-neg", "dmodel"]))
@settings(max_examples=_n(8))
def test_sashimi_constructor(case):
    kw = {"pool1": dict(pool=1), "pool0": dict(pool=(2, 0)), "expand0": dict(expand=0), "layers0": dict(n_layers=0),
          "layer-name": dict(layer="mamba"), "ff-neg": dict(ff_expand=-1), "dmodel": dict(d_model=0)}[case]
    refused(SaShiMi, **{"d_model": 4, "n_layers": 1, "layer": dict(kind="s4d", d_state=4), **kw})


@given(case=st.sampled_from(["pool", "classes0", "input0", "layer", "layers0", "norm", "dropout", "mixing"]))
@settings(max_examples=_n(8))
def test_classifier_and_block_constructors(case):
    if case in ("norm", "dropout", "mixing"):
        kw = {"norm": dict(norm="group"), "dropout": dict(dropout=1.0), "mixing": dict(mixing="attention")}[case]
        refused(ResidualBlock, S4D(4, 4), **kw)
        refused(ResidualBlock, torch.nn.Linear(4, 4))
        return
    kw = {"pool": dict(pool="min"), "classes0": dict(n_classes=0), "input0": dict(d_input=0), "layer": dict(layer="x"),
          "layers0": dict(n_layers=0)}[case]
    refused(SequenceClassifier, **{"d_input": 2, "n_classes": 3, "d_model": 4, "n_layers": 1, **kw})


# ---- layer methods ---------------------------------------------------------------------------
LAYERS = {"S4D": lambda: S4D(3, 4), "S4": lambda: S4(3, 4), "LinOSS": lambda: LinOSS(3, 2),
          "S4D-bidirectional": lambda: S4D(3, 4, bidirectional=True), "S5": lambda: S5(3, 4),
          "S5-bidirectional": lambda: S5(3, 4, bidirectional=True), "DLinOSS": lambda: DLinOSS(3, 2),
          "DLinOSS-IM-bidirectional": lambda: DLinOSS(3, 2, discretization="IM", bidirectional=True)}
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


@pytest.mark.parametrize("name", ["S4D", "S4", "LinOSS", "S5", "DLinOSS"])
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
    m = SaShiMi(2, n_layers=1, pool=(2,), layer=dict(kind="s4d", d_state=4))
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
    model = SequenceClassifier(2, 3, d_model=4, n_layers=1, layer=dict(kind="s4d", d_state=4))
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
    "HiPPO": lambda m, N, th: hippo.HiPPO(N, m, mode="lti", dt=0.1, theta=th),   # theta is an LTI setting
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


@pytest.mark.parametrize("bad", ["dt", "A", "B", "C"])
def test_zoh_vandermonde_shape_mismatch(bad):
    """Wrong shapes are refused before any path is chosen (a Triton launch would otherwise fail, and fall back)."""
    args = {"dt": torch.rand(3), "A": torch.complex(-torch.rand(3, 4), torch.randn(3, 4)),
            "B": torch.randn(3, 4, dtype=torch.complex64), "C": torch.randn(1, 3, 4, dtype=torch.complex64)}
    args[bad] = args[bad][..., :2] if bad != "dt" else args[bad][:2]
    refused(zoh_vandermonde, args["dt"], args["A"], args["B"], args["C"], 2.0, 8)


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


# ---- the validation contract of every public entry point (issue 16 item 12, docs/validation.md) ----
# One table of targets (every public layer, the residual block, every model) and one list of cases;
# every applicable (target, case) pair is a test that asserts either the documented error type with
# a message fragment naming what was wrong, or a correct result.
import numpy as np

from statespaces.models import ImageClassifier, SSMForecaster, SSMLanguageModel, SSMStack
from statespaces._checks import named_tensors

NAN, INF = float("nan"), float("inf")


class Target:
    """How to drive one public module: its input, and which entry points it has."""

    def __init__(self, make, d_in=3, spatial=1, tokens=False, step=False, state=False, kernel=None, rate=False,
                 causal=True, empty="length 0"):
        self.make, self.d_in, self.spatial, self.tokens = make, d_in, spatial, tokens
        self.has_step, self.has_state, self.kernel, self.rate, self.causal = step, state, kernel, rate, causal
        self.empty = empty                     # message fragment for L = 0

    def x(self, B=2, L=4, dtype=torch.float32, device="cpu"):
        if self.tokens:
            return torch.randint(0, 5, (B, L), device=device)
        return torch.randn(B, *([L] * self.spatial), self.d_in, dtype=dtype, device=device)

    def x_t(self, B=2, dtype=torch.float32):
        return torch.randn(B, self.d_in, dtype=dtype)

    @staticmethod
    def init(m, B):
        return (m.backbone if isinstance(m, SSMLanguageModel) else m).initial_state(B)


_LK = dict(d_state=4)
TARGETS = {
    # layers
    "S4D": Target(lambda: S4D(3, 4, seed=0), step=True, state=True, kernel="1d", rate=True),
    "S4D-bidirectional": Target(lambda: S4D(3, 4, bidirectional=True, seed=0), kernel="1d", rate=True, causal=False),
    "S4": Target(lambda: S4(3, 4, seed=0), step=True, state=True, kernel="1d", rate=True),
    "S4-lmax": Target(lambda: S4(3, 4, l_max=16, seed=0), step=True, state=True, kernel="1d", rate=True),
    "LinOSS-IM": Target(lambda: LinOSS(3, 2, seed=0), step=True, state=True, kernel="1d", rate=True),
    "LinOSS-IMEX-conv": Target(lambda: LinOSS(3, 2, discretization="IMEX", mode="conv", seed=0), step=True,
                               state=True, kernel="1d", rate=True),
    "DLinOSS-IMEX": Target(lambda: DLinOSS(3, 2, seed=0), step=True, state=True, kernel="1d", rate=True),
    "DLinOSS-IM-conv": Target(lambda: DLinOSS(3, 2, discretization="IM", mode="conv", seed=0), step=True,
                              state=True, kernel="1d", rate=True),
    "DLinOSS-bidirectional": Target(lambda: DLinOSS(3, 2, bidirectional=True, seed=0), kernel="1d", rate=True,
                                    causal=False),
    "S5": Target(lambda: S5(3, 4, seed=0), step=True, state=True, kernel="1d", rate=True),
    "S5-bidirectional": Target(lambda: S5(3, 4, bidirectional=True, seed=0), kernel="1d", rate=True, causal=False),
    "S4ND-1d": Target(lambda: S4ND(3, dims=1, d_state=4, seed=0), kernel="nd", rate=True, causal=False,
                      empty="empty spatial axis"),
    "S4ND-2d": Target(lambda: S4ND(3, dims=2, d_state=4, seed=0), spatial=2, kernel="nd", rate=True, causal=False,
                      empty="empty spatial axis"),
    "S4ND-1d-causal": Target(lambda: S4ND(3, dims=1, d_state=4, bidirectional=False, seed=0), step=True, state=True,
                             kernel="nd", rate=True, empty="empty spatial axis"),
    # blocks
    "Block-S4ND-1d-causal": Target(lambda: ResidualBlock(S4ND(3, dims=1, d_state=4, bidirectional=False, seed=0)),
                                   step=True, state=True, rate=True),   # a 1-D S4ND block takes the sequence path
    "Block-S4D": Target(lambda: ResidualBlock(S4D(3, 4, seed=0)), step=True, state=True, rate=True),
    "Block-S4-postnorm": Target(lambda: ResidualBlock(S4(3, 4, seed=0), prenorm=False), step=True, state=True,
                                rate=True),
    "Block-LinOSS": Target(lambda: ResidualBlock(LinOSS(3, 2, seed=0), mixing="linear"), step=True, state=True,
                           rate=True),
    # models
    "SequenceClassifier": Target(lambda: SequenceClassifier(3, 2, d_model=4, n_layers=1, layer={"kind": "s4d", **_LK}, pool="none"),
                                 rate=True),
    "SSMForecaster": Target(lambda: SSMForecaster(3, horizon=2, d_model=4, n_layers=1, layer={"kind": "s4d", **_LK}), causal=False),
    "ImageClassifier": Target(lambda: ImageClassifier(3, 2, dims=2, d_model=4, n_layers=1, layer={"kind": "s4nd", "d_state": 4}), spatial=2,
                              rate=True, causal=False, empty="empty spatial axis"),
    "SSMStack": Target(lambda: SSMStack(3, n_layers=1, layer={"kind": "s4d", **_LK}, ff_expand=2), step=True, state=True),
    "SaShiMi": Target(lambda: SaShiMi(3, n_layers=1, pool=(2,), layer={"kind": "s4d", **_LK}), step=True, state=True),
    "LM-tokens": Target(lambda: SSMLanguageModel(5, d_model=4, n_layers=1, layer={"kind": "s4d", **_LK}), tokens=True, state=True),
    "LM-inputs": Target(lambda: SSMLanguageModel(5, d_model=4, n_layers=1, layer={"kind": "s4d", **_LK}, d_input=3), state=True),
    "LM-sashimi": Target(lambda: SSMLanguageModel(5, d_model=4, n_layers=1, backbone="sashimi", layer={"kind": "s4d", **_LK}, backbone_kwargs=dict(pool=(2,))),
                         tokens=True, state=True),
}


def expect(exc, fragments, fn, *args, **kwargs):
    """``fn`` must raise ``exc`` from statespaces' own checks with every fragment in its message."""
    e = refused(fn, *args, **kwargs)
    assert isinstance(e, exc), f"expected {exc.__name__}, got {type(e).__name__}: {e}"
    for frag in [fragments] if isinstance(fragments, str) else fragments:
        assert frag.lower() in str(e).lower(), f"{frag!r} not in: {e}"
    return e


def _poison(m, which, value):
    """Fill one parameter (the first or the last) with NaN/inf; return its name."""
    params = list(m.named_parameters())
    name, p = params[0] if which == "first" else params[-1]
    with torch.no_grad():
        p.fill_(value)
    return name


def _corrupt_state(state, how):
    """A copy of ``state`` (a tensor or a nested list/dict) whose first complex tensor is modified."""
    done = []

    def walk(s):
        if isinstance(s, torch.Tensor):
            if done or not s.is_complex():
                return s
            done.append(True)
            if how == "complex128":
                return s.to(torch.complex128)
            if how == "meta":
                return s.to("meta")
            if how == "real":
                return s.real.clone()
            s = s.clone()
            s.view(-1)[0] = {"nan": complex(NAN, 0), "inf": complex(INF, 0)}[how]
            return s
        if isinstance(s, dict):
            return {k: walk(v) for k, v in s.items()}
        if isinstance(s, list):
            return [walk(v) for v in s]
        return s

    out = walk(state)
    assert done, "no complex tensor in the state"
    return out


def _close(a, b, tol=1e-5):
    torch.testing.assert_close(a, b, atol=tol, rtol=tol)


FORWARD_CASES = ["batch0", "len0", "len1", "device", "float64", "int", "nan", "inf", "huge", "param-nan-first",
                 "param-nan-last", "param-inf", "rate-bool", "rate-numpy"]


def _forward_cases():
    for name, t in TARGETS.items():
        for case in FORWARD_CASES:
            if t.tokens and case in ("float64", "nan", "inf", "huge"):
                continue
            if case.startswith("rate") and not t.rate:
                continue
            yield pytest.param(name, case, id=f"{name}-{case}")


@pytest.mark.parametrize("name,case", list(_forward_cases()))
def test_contract_forward(name, case):
    t = TARGETS[name]
    m = t.make()
    x = t.x()
    if case == "batch0":
        expect(ValueError, "batch size 0", m, t.x(B=0))
    elif case == "len0":
        expect(ValueError, t.empty, m, t.x(L=0))
    elif case == "len1":
        x1 = t.x(L=1)
        y1 = m(x1)
        assert torch.isfinite(y1).all()
        _close(m(x1[:1]), y1[:1])                              # batch rows are independent
        if t.causal and not isinstance(m, SSMLanguageModel) or t.tokens:
            _close(y1, m(torch.cat([x1, t.x(L=3)], 1))[:, :1])   # L = 1 is the first step of any longer input
        if t.has_step:
            _close(y1[:, 0], m.step(x1[:, 0], t.init(m, 2))[0])
        if isinstance(m, (S4D,)) and m.bidirectional:          # y = (K_0 + D) x at L = 1
            _close(y1, x1 * (m.kernel(1)[0, :, 0] + m.D))
        if isinstance(m, S4ND):
            lag0 = torch.stack([f[:, 0] for f in m.kernel_factors((1,) * m.dims)]).prod(0)
            _close(y1, x1 * (lag0 + m.D))
    elif case == "device":
        expect(ValueError, "meta", m, t.x(device="meta"))
    elif case == "float64":
        expect(TypeError, "float64", m, t.x(dtype=torch.float64))
    elif case == "int":
        bad = torch.ones(2, 4, dtype=torch.float32) if t.tokens else torch.ones_like(x, dtype=torch.int64)
        expect(TypeError, "integer tensor" if t.tokens else "floating-point", m, bad)
    elif case in ("nan", "inf"):
        x[0, 1] = NAN if case == "nan" else INF
        expect(ValueError, "contains NaN or inf", m, x)
    elif case == "huge":
        try:
            y = m(torch.full_like(x, 1e38))
        except FloatingPointError as e:
            assert "overflowed" in str(e)
        else:
            assert torch.isfinite(y).all()
    elif case == "param-inf":
        pname = _poison(m, "first", INF)
        try:
            y = m(x)
        except FloatingPointError as e:
            assert pname in str(e) and "overflow" not in str(e), e
        else:   # only where the map is defined at inf (LinOSS-IMEX clamps A to 3.99/dt^2): the limit value
            _poison(m, "first", torch.finfo(torch.float32).max)
            assert torch.isfinite(y).all()
            _close(y, m(x))
    elif case.startswith("param"):
        pname = _poison(m, "last" if case.endswith("last") else "first", NAN)
        e = expect(FloatingPointError, pname, m, x)
        assert "overflow" not in str(e)
    elif case == "rate-bool":
        expect(TypeError, ["rate", "bool"], m, x, rate=True)
    elif case == "rate-numpy":
        _close(m(x, rate=np.float32(0.5)), m(x, rate=0.5))


STATE_CASES = ["complex128", "meta", "real", "nan", "inf"]


def _state_cases():
    for name, t in TARGETS.items():
        for case in STATE_CASES:
            if t.has_state:
                yield pytest.param(name, "forward", case, id=f"{name}-forward-{case}")
            if t.has_step:
                yield pytest.param(name, "step", case, id=f"{name}-step-{case}")


@pytest.mark.parametrize("name,entry,case", list(_state_cases()))
def test_contract_bad_state(name, entry, case):
    """A state of the wrong dtype/device/kind or with NaN/inf: a clear error naming the state (for
    NaN/inf never an overflow or a parameter), never a NaN result."""
    t = TARGETS[name]
    m = t.make()
    state = _corrupt_state(t.init(m, 2), case)
    call = (lambda: m(t.x(), state=state)) if entry == "forward" else (lambda: m.step(t.x_t(), state))
    if case == "complex128":
        expect(TypeError, ["state", "complex64"], call)
    elif case == "meta":
        expect(ValueError, ["state", "meta"], call)
    elif case == "real":
        expect(TypeError, ["state", "complex"], call)
    else:
        e = expect(ValueError, ["state", "contains NaN or inf"], call)
        assert "overflowed" not in str(e) and "these parameters" not in str(e)


STEP_CASES = ["batch0", "device", "float64", "nan", "inf", "rank", "param-nan", "numpy-rate", "bool-rate"]


@pytest.mark.parametrize("name,case", [pytest.param(n, c, id=f"{n}-{c}") for n, t in TARGETS.items() if t.has_step
                                       for c in STEP_CASES if not (c.endswith("rate") and not t.rate)])
def test_contract_step(name, case):
    t = TARGETS[name]
    m = t.make()
    s = t.init(m, 2)
    if case == "batch0":
        expect(ValueError, "batch size 0", m.step, t.x_t(B=0), t.init(m, 1))
    elif case == "device":
        expect(ValueError, "meta", m.step, t.x_t().to("meta"), s)
    elif case == "float64":
        expect(TypeError, "float64", m.step, t.x_t(dtype=torch.float64), s)
    elif case in ("nan", "inf"):
        x = t.x_t()
        x[1, 0] = NAN if case == "nan" else INF
        expect(ValueError, ["x", "contains NaN or inf"], m.step, x, s)
    elif case == "rank":
        expect(ValueError, "(batch, d_model", m.step, t.x(), s)
    elif case == "param-nan":
        pname = _poison(m, "first", NAN)
        for _ in range(4):   # SaShiMi: its first parameter (a pool) is reached at the p-th step only
            try:
                y, s = m.step(t.x_t(), s)
            except FloatingPointError as e:
                assert pname in str(e) and "overflow" not in str(e), e
                break
            assert torch.isfinite(y).all()
        else:
            raise AssertionError(f"4 steps with NaN in {pname} raised nothing")
    elif case == "numpy-rate":
        x = t.x_t()
        _close(m.step(x, s, rate=np.float64(2.0))[0], m.step(x, s, rate=2.0)[0])
    elif case == "bool-rate":
        expect(TypeError, ["rate", "bool"], m.step, t.x_t(), s, rate=True)


INIT_CASES = {"zero": (0, ValueError, "batch_size must be an integer >= 1"),
              "negative": (-2, ValueError, "batch_size must be an integer >= 1"),
              "float": (2.5, TypeError, ["batch_size must be an integer", "2.5"]),
              "integral-float": (2.0, TypeError, "batch_size must be an integer"),
              "bool": (True, TypeError, ["batch_size", "bool"]),
              "string": ("2", TypeError, "batch_size must be an integer"),
              "tensor": (torch.tensor(2), TypeError, "batch_size must be an integer")}


@pytest.mark.parametrize("name,case", [pytest.param(n, c, id=f"{n}-{c}") for n, t in TARGETS.items()
                                       if t.has_step or t.has_state for c in [*INIT_CASES, "numpy"]])
def test_contract_initial_state(name, case):
    t = TARGETS[name]
    m = t.make()
    init = (m.backbone if isinstance(m, SSMLanguageModel) else m).initial_state
    if case == "numpy":
        for (n1, a), (n2, b) in zip(named_tensors("s", init(np.int64(3))), named_tensors("s", init(3)), strict=True):
            assert n1 == n2 and a.shape == b.shape and a.dtype == b.dtype and a.shape[0] == 3
        return
    value, exc, frag = INIT_CASES[case]
    expect(exc, frag, init, value)


KERNEL_CASES = ["numpy", "bool", "float", "zero", "param-nan", "rate-bool"]


@pytest.mark.parametrize("name,case", [pytest.param(n, c, id=f"{n}-{c}") for n, t in TARGETS.items() if t.kernel
                                       for c in KERNEL_CASES])
def test_contract_kernel(name, case):
    t = TARGETS[name]
    m = t.make()
    nd = t.kernel == "nd"

    def arg(L):
        return (L,) * m.dims if nd else L

    if case == "numpy":
        _close(m.kernel(arg(np.int64(8))), m.kernel(arg(8)))
        _close(m.kernel(arg(np.int32(5)), rate=np.float32(0.5)), m.kernel(arg(5), rate=0.5))
    elif case == "bool":
        expect(TypeError, ["positive integer", "bool"], m.kernel, arg(True))
    elif case == "float":
        expect(TypeError, ["positive integer", "8.0"], m.kernel, arg(8.0))
    elif case == "zero":
        expect(ValueError, "positive integer", m.kernel, arg(0))
    elif case == "param-nan":
        name, p = next((n, p) for n, p in m.named_parameters() if n != "D")    # the skip D is not in the kernel
        with torch.no_grad():
            p.fill_(NAN)
        expect(FloatingPointError, ["kernel", name], m.kernel, arg(8))
    elif case == "rate-bool":
        expect(TypeError, ["rate", "bool"], m.kernel, arg(8), rate=True)


GENERATE_CASES = ["steps-numpy", "steps-bool", "steps-float", "steps-zero", "temperature-bool", "temperature-numpy",
                  "top_k-numpy", "top_k-float", "prompt-batch0", "prompt-len0", "prompt-device", "param-nan"]


@pytest.mark.parametrize("name,case", [pytest.param(n, c, id=f"{n}-{c}") for n in ("LM-tokens", "LM-sashimi")
                                       for c in GENERATE_CASES])
def test_contract_generate(name, case):
    m = TARGETS[name].make()
    prompt = torch.randint(0, 5, (2, 3))
    gen = lambda **kw: torch.Generator().manual_seed(0)  # noqa: E731
    if case == "steps-numpy":
        out = m.generate(prompt, np.int64(3), generator=gen())
        assert out.shape == (2, 3) and torch.equal(out, m.generate(prompt, 3, generator=gen()))
    elif case == "steps-bool":
        expect(TypeError, ["steps", "bool"], m.generate, prompt, True)
    elif case == "steps-float":
        expect(TypeError, ["steps", "2.5"], m.generate, prompt, 2.5)
    elif case == "steps-zero":
        expect(ValueError, "steps", m.generate, prompt, 0)
    elif case == "temperature-bool":
        expect(TypeError, ["temperature", "bool"], m.generate, prompt, 2, temperature=True)
    elif case == "temperature-numpy":
        a = m.generate(prompt, 2, temperature=np.float32(0.5), generator=gen())
        assert torch.equal(a, m.generate(prompt, 2, temperature=0.5, generator=gen()))
    elif case == "top_k-numpy":
        a = m.generate(prompt, 2, top_k=np.int64(2), generator=gen())
        assert torch.equal(a, m.generate(prompt, 2, top_k=2, generator=gen()))
    elif case == "top_k-float":
        expect(TypeError, ["top_k", "2.5"], m.generate, prompt, 2, top_k=2.5)
    elif case == "prompt-batch0":
        expect(ValueError, "batch size 0", m.generate, prompt[:0], 2)
    elif case == "prompt-len0":
        expect(ValueError, "length 0", m.generate, prompt[:, :0], 2)
    elif case == "prompt-device":
        expect(ValueError, "meta", m.generate, prompt.to("meta"), 2)
    elif case == "param-nan":
        pname = _poison(m, "last", NAN)                       # the LM head: NaN logits, never a multinomial crash
        expect(FloatingPointError, pname, m.generate, prompt, 2)


@given(d_model=st.sampled_from([np.int64(4), np.int32(4), np.uint8(4)]), d_state=st.sampled_from([np.int64(4), 4]))
@settings(max_examples=_n(4))
def test_contract_constructors_take_numpy_ints(d_model, d_state):
    for ctor in (S4D, S4, LinOSS, S5):
        layer = ctor(d_model, d_state)
        assert type(layer.d_model) is int and layer.d_model == 4
    assert S4ND(d_model, dims=np.int64(2), d_state=d_state).dims == 2
    for bad, exc in ((4.0, TypeError), (True, TypeError), (0, ValueError)):
        expect(exc, "d_model", S4D, bad, 4)


def test_an_overflow_in_float64_does_not_advise_float64():
    """A float64 layer driven at an absurd rate overflows: the message named "run the module in float64", which it
    already was; it now points at the rate and steps. A float32 overflow still advises float64."""
    layer = LinOSS(2, 3, seed=0).double()
    x = torch.randn(2, 20, 2, dtype=torch.float64)
    with pytest.raises(FloatingPointError) as e:
        layer(x, rate=1e300)
    assert "overflowed torch.float64" in str(e.value) and "run the module in float64" not in str(e.value)
    assert "rate" in str(e.value)


# ---- flags and seeds (a truthy string was read as True; seeds reached torch unchecked) ------------------
@pytest.mark.parametrize("ctor", sorted(LAYER_CTORS))
@pytest.mark.parametrize("seed", [1.5, "a", True, -1, 2 ** 70, [1]])
def test_layer_seeds(ctor, seed):
    e = refused(LAYER_CTORS[ctor], 4, seed=seed)
    assert "seed" in str(e)


def test_layer_seed_accepts_numpy_integers():
    import numpy as np

    for ctor in LAYER_CTORS.values():
        a, b = ctor(4, seed=np.int64(3)), ctor(4, seed=3)
        assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("ctor,flag,value", [("S4D", "bidirectional", "concat"), ("S4", "bidirectional", 1),
                                             ("S4D", "trainable_B", "no"), ("S4", "trainable_B", None)])
def test_layer_flags_must_be_bools(ctor, flag, value):
    e = refused(LAYER_CTORS[ctor], 4, **{flag: value})
    assert flag in str(e) and "True or False" in str(e)
    if value == "concat":
        assert "LinOSS" in str(e)


@pytest.mark.parametrize("ctor", ["S4D", "S4", "LinOSS", "DLinOSS", "S5", "S4ND"])
def test_return_state_must_be_a_bool(ctor):
    """S4ND took any truthy value (``return_state="no"`` returned a tuple) until an API campaign found it."""
    kw = {"bidirectional": False} if ctor == "S4ND" else {}
    layer = LAYER_CTORS[ctor](4, seed=0, **kw)
    for value in ("yes", "no", 1):
        e = refused(layer, torch.randn(1, 5, 4), return_state=value)
        assert "return_state must be True or False" in str(e)


@pytest.mark.parametrize("ctor", list(LAYER_CTORS))
def test_sparse_input_is_refused_by_every_layer(ctor):
    """A sparse input failed deep inside torch with a different error per layer (API campaign)."""
    e = refused(LAYER_CTORS[ctor](4, seed=0), torch.randn(2, 5, 4).to_sparse())
    assert "must be a dense tensor" in str(e) and ".to_dense()" in str(e)


def test_fftconv_refuses_an_empty_length():
    """fftconv(u of length 0) looked for an FFT length forever (its length search now refuses n < 1 as well)."""
    from statespaces.ops.fftconv import _fft_len

    with pytest.raises(ValueError, match=">= 1"):
        _fft_len(0)
    e = refused(fftconv, torch.randn(2, 0, 3), torch.randn(3, 5))
    assert "L, H >= 1" in str(e)
    refused(fftconv, torch.randn(5), torch.randn(3, 5))


@pytest.mark.parametrize("ctor", ["S4D", "S4", "LinOSS", "DLinOSS", "S5"])
def test_initial_state_of_a_half_precision_layer_is_refused(ctor):
    """LinOSS.initial_state lost its @public (a method inserted between the decorator and it) and returned a
    complex64 state for float16 parameters; every layer refuses them at this entry point too."""
    e = refused(LAYER_CTORS[ctor](4, seed=0).half().initial_state, 1)
    assert "parameters are torch.float16" in str(e)
