"""A layer's output is the caller's to modify in place, under autograd, on every forward path of the CPU.

A custom autograd Function that returns a view of a tensor made inside it (``out.view(...)``) makes that output
read-only for in-place ops ("Output 0 of ... is a view and is being modified inplace"): LinOSS's chunked CPU
path (its default) did, until 2026-12-06."""
import importlib
import warnings

import pytest
import torch

from statespaces.layers.dlinoss import DLinOSS
from statespaces.layers.linoss import LinOSS
from statespaces.layers.s4 import S4
from statespaces.layers.s4d import S4D
from statespaces.layers.s5 import S5

LAYERS = {
    "s4d": lambda: S4D(3, 8, seed=0),
    "s4d-bidirectional": lambda: S4D(3, 8, seed=0, bidirectional=True),
    "s4": lambda: S4(3, 8, seed=0),
    "s4-lmax": lambda: S4(3, 8, seed=0, l_max=32),
    "s4-bidirectional": lambda: S4(3, 8, seed=0, bidirectional=True),
    "linoss": lambda: LinOSS(3, n_oscillators=4, seed=0),
    "linoss-bidirectional": lambda: LinOSS(3, n_oscillators=4, seed=0, bidirectional=True),
    "dlinoss": lambda: DLinOSS(3, n_oscillators=4, seed=0),
    "s5": lambda: S5(3, 8, seed=0),
}
fftconv_module = importlib.import_module("statespaces.ops.fftconv")   # the module (the package exports the function)
MODES = {"linoss": [None, "scan", "conv", "chunked", "loop"], "dlinoss": [None, "scan", "chunked"]}


@pytest.mark.parametrize("schedule", ["cpu", "whole-tensor"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_output_can_be_modified_in_place(name, schedule, monkeypatch):
    """``schedule="whole-tensor"``: the FFT convolution's CUDA (and traced) schedule, taken here on the CPU. It
    returned ``irfft(...)[..., :L].transpose(1, 2)``, a view, until 2026-12-06: S4D's and S4's outputs could not
    be edited in place on a GPU."""
    if schedule == "whole-tensor":
        monkeypatch.setattr(fftconv_module, "_grouped", lambda u: False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        layer = LAYERS[name]()
    for mode in MODES.get(name, [None]):
        for stateful in ((False,) if layer.bidirectional else (False, True)):
            x = torch.randn(2, 32, 3, requires_grad=True)
            kw = {} if mode is None else {"mode": mode}
            out = layer(x, return_state=True, **kw) if stateful else layer(x, **kw)
            y = out[0] if stateful else out
            y[:, 0] += 1.0
            y[:, -3:] = 0.0
            y.mul_(2.0)
            (y.sum() + (out[1].real.sum() if stateful else 0.0)).backward()
            assert x.grad is not None and torch.isfinite(x.grad).all(), (name, mode, stateful)


def test_irregular_state_can_be_modified_in_place():
    """The irregular-sampling path (``dt=``) returned its final state as a view of the scanned states it saved for
    the readout's backward: editing it in place broke the backward."""
    layer = S4D(3, 8, seed=0)
    x = torch.randn(2, 16, 3, requires_grad=True)
    y, state = layer(x, dt=torch.rand(2, 16) + 0.5, return_state=True)
    state.mul_(0.5)
    (y.sum() + state.real.sum()).backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("schedule", ["cpu", "whole-tensor"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_output_is_contiguous_on_every_path(name, schedule, monkeypatch):
    """y (B, L, H) is laid out row by row whether the call is stateless, returns its state or starts from one:
    S4D's and S4's stateful calls (the chunked CPU kernels, which compute in (B, H, L)) returned a (B, H, L) tensor
    seen as (B, L, H) (``y.view(B * L, H)`` failed) until 2026-12-07."""
    if schedule == "whole-tensor":
        monkeypatch.setattr(fftconv_module, "_grouped", lambda u: False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        layer = LAYERS[name]()
    calls = [{}] if layer.bidirectional else [{}, {"return_state": True},
                                              {"state": 0.5 * torch.ones_like(layer.initial_state(2)),
                                               "return_state": True}]
    for mode in MODES.get(name, [None]):
        for kw in calls:
            x = torch.randn(2, 32, 3)
            out = layer(x, **kw, **({} if mode is None else {"mode": mode}))
            y = out[0] if isinstance(out, tuple) else out
            assert y.is_contiguous(), (name, mode, sorted(kw), y.stride())
            y.view(-1, 3)
            if isinstance(out, tuple):      # the final state too (S4's, LinOSS's and S5's were not row-major)
                assert out[1].is_contiguous(), (name, mode, sorted(kw), out[1].stride())


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("name", [n for n in LAYERS if "bidirectional" not in n])
def test_final_state_is_the_callers_to_modify_in_place(name, batch):
    """The final state is a tensor of its own: editing it in place leaves the backward intact, and it does not keep
    the forward's buffers alive. S5's was a view of its (B, L, M) scanned states, which its backward saves, until
    2026-12-07 (``state.mul_(0.5)`` then broke the backward, and a state kept for the next segment held the whole
    trajectory); with B = 1 a view of one row is contiguous, so ``contiguous()`` alone would not have copied."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        layer = LAYERS[name]()
    for mode in MODES.get(name, [None]):
        for start in (None, "given"):
            x = torch.randn(batch, 16, 3, requires_grad=True)
            s0 = None if start is None else 0.5 * torch.ones_like(layer.initial_state(batch))
            y, state = layer(x, state=s0, return_state=True, **({} if mode is None else {"mode": mode}))
            assert state._base is None, (name, mode, start, "the state is a view of a larger tensor")
            state.mul_(0.5)
            (y.sum() + state.real.sum()).backward()
            assert torch.isfinite(x.grad).all(), (name, mode, start)
