"""Streaming export (issue 20 item 1): the real-arithmetic step of every layer family, the
``torch.export`` program and the ONNX file of whole models, each against the model's own
convolution view."""
import copy
import importlib.util
import warnings

import pytest
import torch

from statespaces import S4, S4D, LinOSS
from statespaces.export import RealStep, export_onnx, export_step, real_step, streaming_model
from statespaces.layers import DLinOSS
from statespaces.layers.s5 import S5
from statespaces.models.lm import SSMLanguageModel, SSMStack
from statespaces.models.sashimi import SaShiMi

HAVE_ONNX = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxscript", "onnxruntime"))


def _layers():
    return {
        "s4d-legs": lambda: S4D(4, 8, init="legs", seed=0),
        "s4d-inv-zoh": lambda: S4D(4, 8, init="inv", seed=0),
        "s4-legs": lambda: S4(4, 8, init="legs", seed=1),
        "s4-fout-lmax": lambda: S4(4, 8, init="fout", l_max=64, seed=1),
        "linoss-im": lambda: LinOSS(4, 6, discretization="IM", seed=2),
        "linoss-imex": lambda: LinOSS(4, 6, discretization="IMEX", seed=2),
        "s5-zoh": lambda: S5(4, 8, seed=3),
        "s5-bilinear-full": lambda: S5(4, 8, blocks=2, discretization="bilinear", conj_sym=False, seed=3),
    }


def _run_steps(step, x, state):
    ys = []
    for t in range(x.shape[1]):
        y, state = step(x[:, t], state)
        ys.append(y)
    return torch.stack(ys, 1), state


@pytest.mark.parametrize("name", list(_layers()))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_real_step_matches_the_convolution(name, dtype):
    layer = _layers()[name]().to(dtype).eval()
    rs = real_step(layer)
    x = torch.randn(2, 40, 4, dtype=dtype)
    with torch.no_grad():
        y_conv, s_conv = layer(x, return_state=True)
        y_step, s_step = _run_steps(lambda u, s: rs.step(u, s), x, rs.initial_state(2))
    tol = 1e-10 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(y_step, y_conv, rtol=tol, atol=tol)
    torch.testing.assert_close(s_step, rs.from_layer_state(s_conv), rtol=tol, atol=tol)


@pytest.mark.parametrize("rate", [0.5, 2.0])
def test_real_step_at_another_rate(rate):
    layer = S4D(3, 8, seed=0).double()
    rs = real_step(layer, rate=rate)
    x = torch.randn(1, 20, 3, dtype=torch.float64)
    with torch.no_grad():
        ref = layer(x, rate=rate)
        y, _ = _run_steps(lambda u, s: rs.step(u, s, rate), x, rs.initial_state(1))
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="frozen at rate"):
        rs.step(x[:, 0], rs.initial_state(1), rate=1.0)


def test_real_step_refuses_what_cannot_stream():
    with pytest.raises(ValueError, match="bidirectional"):
        real_step(S4D(2, 4, bidirectional=True))
    with pytest.raises(ValueError, match="bidirectional"):
        real_step(S5(2, 4, bidirectional=True))
    with pytest.raises(TypeError, match="no streaming form"):
        real_step(torch.nn.Linear(2, 2))


def _models():
    torch.manual_seed(0)
    return {
        "s4d-layer": (S4D(8, 8, seed=0), "float"),
        "s4-stack": (SSMStack(8, 2, layer="s4"), "float"),
        "linoss-stack": (SSMStack(8, 2, layer="linoss"), "float"),
        "s5-stack": (SSMStack(8, 2, layer={"kind": "s5", "d_state": 8}), "float"),
        "sashimi": (SaShiMi(8, 1, pool=(2, 2), layer="s4d"), "float"),
        "lm": (SSMLanguageModel(11, 8, 2, layer="s4d"), "tokens"),
        "lm-sashimi-s4": (SSMLanguageModel(11, 8, 1, layer="s4", backbone="sashimi", backbone_kwargs={"pool": 2}),
                          "tokens"),
    }


# the S5 stack's first export/ONNX run takes 6-10 s on 2 CPU cores
MODEL_NAMES = [pytest.param(n, marks=pytest.mark.slow) if n == "s5-stack" else n for n in _models()]


def _inputs(model, kind, B, L):
    g = torch.Generator().manual_seed(1)
    if kind == "tokens":
        return torch.randint(0, model.vocab_size, (B, L), generator=g)
    return torch.randn(B, L, 8, generator=g)


def _stream(fn, sm, x, B):
    state, ys = sm.initial_state(B), []
    for t in range(0, x.shape[1], sm.frame):
        out = fn(x[:, t:t + sm.frame], *state)
        ys.append(out[0])
        state = out[1:]
    return torch.cat(ys, 1)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_exported_program_streams_like_the_convolution(name):
    model, kind = _models()[name]
    model.eval()
    sm = streaming_model(model)
    B, L = 2, 8 * sm.frame
    x = _inputs(model, kind, B, L)
    with torch.no_grad():
        ref = model(x)
        program = export_step(model, batch_size=B).module()
        y = _stream(program, sm, x, B)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)


def test_export_with_dynamic_batch():
    model = SSMStack(8, 1, layer="s4d").eval()
    program = export_step(model, dynamic_batch=True).module()
    sm = streaming_model(model)
    for B in (1, 3):
        x = torch.randn(B, 5, 8)
        with torch.no_grad():
            torch.testing.assert_close(_stream(program, sm, x, B), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not HAVE_ONNX, reason="onnx, onnxscript and onnxruntime are needed")
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_onnx_runtime_streams_like_the_convolution(name, tmp_path):
    import onnxruntime as ort

    model, kind = _models()[name]
    model.eval()
    sm = streaming_model(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = export_onnx(model, tmp_path / "step.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]

    def run(x, *state):
        out = sess.run(None, dict(zip(names, [x.numpy(), *(s.numpy() for s in state)])))
        return tuple(torch.from_numpy(o) for o in out)

    x = _inputs(model, kind, 1, 8 * sm.frame)
    with torch.no_grad():
        ref = model(x)
    torch.testing.assert_close(_stream(run, sm, x, 1), ref, rtol=1e-5, atol=1e-5)



# ---- a step frozen at rate != 1 must run like the eager model stepped at that rate ----------------------------

RATE = 2.0


def _rate_layers():
    return {
        "s4d": lambda: S4D(3, 8, seed=0),
        "s4": lambda: S4(3, 8, seed=1),
        "linoss-imex": lambda: LinOSS(3, 4, discretization="IMEX", seed=2),
        "dlinoss": lambda: DLinOSS(3, 4, seed=3),
    }


def _stream_states(fn, x, state):
    """Feed x (B, L, H) one sample at a time to ``fn(x (B, 1, H), *state) -> (y, *state')``: the outputs
    (B, L, H) and the list of state tuples after each step."""
    ys, states = [], []
    for t in range(x.shape[1]):
        y, *state = fn(x[:, t:t + 1], *state)
        ys.append(y[:, 0])
        states.append(tuple(state))
    return torch.stack(ys, 1), states


def _eager_steps(step, x, state, rate):
    """The eager reference ``step(x_t, state, rate=rate)`` over x (B, L, H): outputs (B, L, H) and the states."""
    ys, states = [], []
    for t in range(x.shape[1]):
        y, state = step(x[:, t], state, rate=rate)
        ys.append(y)
        states.append(state)
    return torch.stack(ys, 1), states


def _stack_step(stack):
    """The eager step of an SSMStack at any rate (its own ``step`` has none): each block's ``step(rate=...)``."""
    def step(x, state, rate):
        new = []
        for block, s in zip(stack.blocks, state):
            x, s = block.step(x, s, rate=rate)
            new.append(s)
        return stack.final_norm(x), new
    return step


def _assert_stream_matches(got, want, convert, tol):
    """``got`` = (outputs, exported state tuples), ``want`` = (outputs, eager states): equal at every step."""
    torch.testing.assert_close(got[0], want[0], rtol=tol, atol=tol)
    assert len(got[1]) == len(want[1])
    for s_got, s_want in zip(got[1], want[1]):
        for a, b in zip(s_got, convert(s_want), strict=True):
            torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("name", list(_rate_layers()))
def test_layer_exported_at_another_rate_steps_like_the_layer_at_that_rate(name):
    """``streaming_model`` / ``export_step(layer, rate=2)``: outputs and states, step by step, equal
    ``layer.step(x, state, rate=2)``."""
    layer = _rate_layers()[name]().double().eval()
    x = torch.randn(2, 6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = _eager_steps(layer.step, x, layer.initial_state(2), RATE)
        sm = streaming_model(layer, rate=RATE)
        convert = lambda s: (sm.model.from_layer_state(s),)                     # noqa: E731
        for fn in (sm, export_step(layer, batch_size=2, rate=RATE).module()):
            _assert_stream_matches(_stream_states(fn, x, sm.initial_state(2)), want, convert, 1e-10)


def _rate_stack():
    torch.manual_seed(0)
    return SSMStack(3, 2, layer={"kind": "s4d", "d_state": 8}).eval()


def test_stack_exported_at_another_rate_steps_like_its_blocks_at_that_rate():
    """An SSMStack: eager streaming model and ``export_step(stack, rate=2)`` against every block stepped at rate 2
    (outputs and each block's state)."""
    stack = _rate_stack().double()
    x = torch.randn(2, 6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = _eager_steps(_stack_step(stack), x, stack.initial_state(2), RATE)
        sm = streaming_model(stack, rate=RATE)
        convert = lambda st: tuple(b.layer.from_layer_state(s) for b, s in zip(sm.model.blocks, st))   # noqa: E731
        for fn in (sm, export_step(stack, batch_size=2, rate=RATE).module()):
            _assert_stream_matches(_stream_states(fn, x, sm.initial_state(2)), want, convert, 1e-10)


@pytest.mark.skipif(not HAVE_ONNX, reason="onnx, onnxscript and onnxruntime are needed")
def test_onnx_at_another_rate_steps_like_the_stack_at_that_rate(tmp_path):
    """``export_onnx(stack, rate=2)`` run by onnxruntime: outputs and states equal the eager blocks at rate 2."""
    import onnxruntime as ort

    stack = _rate_stack()
    x = torch.randn(1, 6, 3, generator=torch.Generator().manual_seed(2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = export_onnx(stack, tmp_path / "step.onnx", rate=RATE)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]

    def run(x, *state):
        out = sess.run(None, dict(zip(names, [x.numpy(), *(s.numpy() for s in state)])))
        return tuple(torch.from_numpy(o) for o in out)

    sm = streaming_model(stack, rate=RATE)
    convert = lambda st: tuple(b.layer.from_layer_state(s) for b, s in zip(sm.model.blocks, st))   # noqa: E731
    with torch.no_grad():
        want = _eager_steps(_stack_step(stack), x, stack.initial_state(1), RATE)
    _assert_stream_matches(_stream_states(run, x, sm.initial_state(1)), want, convert, 1e-5)


def test_frozen_step_runs_at_its_rate_unless_told_another():
    """A RealStep called without a rate (as blocks, stacks and language models call it) runs at the rate it was
    frozen at, like the layer stepped at that rate; an explicit other rate is refused with a clear error."""
    layer = S4D(3, 8, seed=0).double()
    rs = real_step(layer, rate=RATE)
    x = torch.randn(2, 3, dtype=torch.float64)
    with torch.no_grad():
        y_ref, s_ref = layer.step(x, layer.initial_state(2), rate=RATE)
        for y, s in (rs.step(x, rs.initial_state(2)), rs.step(x, rs.initial_state(2), RATE)):
            torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(s, rs.from_layer_state(s_ref), rtol=1e-12, atol=1e-12)
        with pytest.raises(ValueError, match="frozen at rate=2.0"):
            rs.step(x, rs.initial_state(2), rate=1.0)
        lm = SSMLanguageModel(7, d_model=4, n_layers=1).eval()
        sm = streaming_model(lm, rate=RATE)
        logits, *_ = sm(torch.zeros(2, 1, dtype=torch.long), *sm.initial_state(2))
        assert logits.shape == (2, 1, 7) and torch.isfinite(logits).all()


# ---- long streams of an IMEX oscillator (|lambda| = 1): the exported step must not drift ----------------------

def test_exported_linoss_imex_step_does_not_drift_over_a_long_stream(tmp_path):
    """20,000 steps of a float32 LinOSS-IMEX through ``export_step`` (and onnxruntime) against the float64 layer:
    a transition rounded to float32 drifts like ``L 2^-24`` (1.1e-4 relative here); the layer's own step, which
    updates in float64 and rounds the state once per step, stays at ~3e-6."""
    torch.manual_seed(0)
    layer = LinOSS(2, 2, discretization="IMEX", seed=0).eval()
    L = 20_000
    x = torch.randn(1, L, 2)
    with torch.no_grad():
        ref = copy.deepcopy(layer).double()(x.double(), mode="conv")
        sm = streaming_model(layer)
        runs = {"export_step": export_step(layer).module()}
    if HAVE_ONNX:
        import onnxruntime as ort

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sess = ort.InferenceSession(str(export_onnx(layer, tmp_path / "step.onnx")),
                                        providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]

        def run(u, state):
            out = sess.run(None, dict(zip(names, [u.numpy(), state.numpy()])))
            return tuple(torch.from_numpy(o) for o in out)

        runs["onnxruntime"] = run
    for what, fn in runs.items():
        state, ys = sm.initial_state(1)[0], []
        with torch.no_grad():
            for t in range(L):
                y, state = fn(x[:, t:t + 1], state)
                ys.append(y)
        y = torch.cat(ys, 1)
        assert y.dtype == torch.float32 and state.dtype == torch.float32 and state.shape == (1, 2, 4)
        err = float((y.double() - ref).abs().max() / ref.abs().max())
        assert err < 2e-5, f"{what}: relative error {err:.1e} over {L} steps"


def test_casting_an_exported_linoss_keeps_its_wide_transition():
    """``.float()`` / ``.to(float32)`` / ``.half()`` on a streaming model must not round the float64 transition of its
    oscillator steps (the drift of the test above); the state, C and D follow the cast as in any module."""
    layer = LinOSS(3, 4, discretization="IMEX", seed=0).eval()
    sm = streaming_model(layer)
    steps = [m for m in sm.modules() if isinstance(m, RealStep)]
    assert steps and all(m.A.dtype == torch.float64 and m.Bin.dtype == torch.float64 for m in steps)
    x = torch.randn(2, 1, 3)
    with torch.no_grad():
        before = sm(x, *sm.initial_state(2))
        for cast in (lambda m: m.float(), lambda m: m.to(torch.float32), lambda m: m.to("cpu")):
            cast(sm)
            assert all(m.A.dtype == torch.float64 and m.Bin.dtype == torch.float64 for m in steps)
            after = sm(x, *sm.initial_state(2))
            for a, b in zip(before, after):
                assert torch.equal(a, b)
        sm.half()
        assert all(m.A.dtype == torch.float64 and m.D.dtype == torch.float16 for m in steps)
        sm.double()
        assert all(m.D.dtype == torch.float64 and m.Cout.dtype == torch.float64 for m in steps)


def test_streaming_export_of_a_classifier_says_what_to_do_instead():
    """A classifier has no step: export_step / export_onnx failed with a raw AttributeError; now a TypeError names
    the alternative, which works: torch.export of its forward."""
    from statespaces.models import SequenceClassifier

    model = SequenceClassifier(1, 3, d_model=8, n_layers=1).eval()
    for fn in (export_step, streaming_model):
        with pytest.raises(TypeError, match="torch.export.export"):
            fn(model)
    x = torch.randn(2, 16, 1)
    program = torch.export.export(model, (x,))
    torch.testing.assert_close(program.module()(x), model(x))


def test_eager_streaming_model_checks_its_frame_and_state():
    """The eager StreamingModel took a missing state tensor (refilled from constants), an extra one, a state of the
    wrong shape (broadcast) or batch, and a frame of the wrong length (samples dropped; SaShiMi: an IndexError),
    each without a word (found by an export campaign); the exported program guards the same shapes itself."""
    torch.manual_seed(0)
    sm = streaming_model(SSMStack(d_model=4, n_layers=2).eval())
    x = torch.randn(1, 3, 4)
    st = list(sm.initial_state(1))
    y, *st2 = sm(x[:, :1], *st)                                   # the right call still works
    for args, match in (((x[:, :1], *st[:-1]), "the state is 2 tensor"),
                        ((x[:, :1], *st, torch.ones(3)), "the state is 2 tensor"),
                        ((x[:, :1], *[s[..., :1] for s in st]), "state tensor 0 must be torch.float32 of shape"),
                        ((torch.randn(3, 1, 4), *st), r"state tensor 0 must be .* of shape \(3,"),
                        ((x[:, :1], *[s.double() for s in st]), "state tensor 0 must be torch.float32"),
                        ((x, *st), r"SSMStack streams frames of 1 sample\(s\)")):
        with pytest.raises(ValueError, match=match):
            sm(*args)
    sash = streaming_model(SaShiMi(d_model=4, n_layers=1, pool=[2, 2], layer={"kind": "s4d", "d_state": 4}))
    with pytest.raises(ValueError, match=r"SaShiMi streams frames of 4 sample\(s\)"):
        sash(torch.randn(1, 1, 4), *sash.initial_state(1))
    with pytest.raises(ValueError, match="eval mode only"):
        sm.train()
    assert not sm.eval().training


def test_streaming_export_refuses_s4nd_and_warns_of_float64_onnx(tmp_path):
    """S4ND failed with an AttributeError of the swapped layer; a float64 ONNX file does not run in onnxruntime
    (no float64 Erf for GELU): both are said."""
    from statespaces.layers import S4ND

    for model in (S4ND(4, dims=1, d_state=4, bidirectional=False),
                  SSMStack(d_model=4, n_layers=1, layer={"kind": "s4nd", "dims": 1, "bidirectional": False})):
        with pytest.raises(TypeError, match="streaming export does not support S4ND"):
            streaming_model(model)
    if HAVE_ONNX:
        with pytest.warns(UserWarning, match="export_onnx of a float64 model: onnxruntime has no float64 kernel"):
            export_onnx(SSMStack(d_model=4, n_layers=1).double().eval(), tmp_path / "f64.onnx")


def test_streaming_language_model_names_tokens_out_of_the_vocabulary():
    """The eager streaming step raised the embedding's 'IndexError: index out of range in self' for a token id
    >= vocab_size, where forward, loss and generate name the range."""
    lm = SSMLanguageModel(11, d_model=4, n_layers=1).eval()
    sm = streaming_model(lm)
    state = sm.initial_state(2)
    with pytest.raises(ValueError, match=r"must lie in \[0, vocab_size=11\), got range \[1, 11\]"):
        sm(torch.tensor([[1], [11]]), *state)
    with pytest.raises(TypeError, match="integer tensor of token ids"):
        sm(torch.tensor([[1.0], [2.0]]), *state)
    assert sm(torch.tensor([[1], [10]]), *state)[0].shape == (2, 1, 11)


def test_sashimi_ff_expand_message_allows_zero():
    from statespaces.models import SaShiMi

    with pytest.raises(ValueError, match=r"ff_expand.*>= 0"):
        SaShiMi(8, n_layers=1, ff_expand=-1)
    SaShiMi(8, n_layers=1, ff_expand=0)
