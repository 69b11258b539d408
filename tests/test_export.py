"""Streaming export (issue 20 item 1): the real-arithmetic step of every layer family, the
``torch.export`` program and the ONNX file of whole models, each against the model's own
convolution view."""
import importlib.util
import warnings

import pytest
import torch

from statespaces import S4, S4D, LinOSS
from statespaces.export import export_onnx, export_step, real_step, streaming_model
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
