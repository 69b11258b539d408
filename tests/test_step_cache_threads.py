"""The step cache under concurrent readers (two generation streams stepping one layer in two threads).

A build must publish its key and its value together: a reader that runs between the two would take the new key's
lookup to the previous value (the system of another rate, or of parameters since edited). The interleaving is
forced here deterministically: a reader runs after every attribute assignment the cache makes.
"""
import sys
import threading

import torch

from statespaces import S4D
from statespaces.layers.step_cache import StepCache


class _Interleaved(StepCache):
    """A StepCache that runs ``self.reader()`` right after each attribute it assigns (a thread switch there)."""

    def __setattr__(self, name, value):
        object.__setattr__(self, name, value)
        reader = self.__dict__.get("reader")
        if reader is not None and name != "reader":
            object.__setattr__(self, "reader", None)      # the reader's own miss would assign too
            try:
                reader()
            finally:
                object.__setattr__(self, "reader", reader)


def test_a_reader_between_the_assignments_of_a_build_never_gets_another_rates_value():
    layer = S4D(3, 4)
    cache = _Interleaved()
    seen = []
    with torch.no_grad():
        assert cache.get(layer, 1.0, lambda: "rate 1") == "rate 1"
        cache.reader = lambda: seen.append(cache.get(layer, 2.0, lambda: "rebuilt by the reader"))
        assert cache.get(layer, 2.0, lambda: "rate 2") == "rate 2"
        cache.reader = None
        assert cache.get(layer, 2.0, lambda: "not cached") == "rate 2"
    assert seen and all(v in ("rate 2", "rebuilt by the reader") for v in seen), seen


def test_a_reader_between_the_assignments_of_a_build_sees_a_parameter_edit():
    layer = S4D(3, 4)
    cache = _Interleaved()
    seen = []
    with torch.no_grad():
        cache.get(layer, 1.0, lambda: "old parameters")
        layer.log_dt.add_(0.1)
        cache.reader = lambda: seen.append(cache.get(layer, 1.0, lambda: "rebuilt by the reader"))
        assert cache.get(layer, 1.0, lambda: "new parameters") == "new parameters"
    assert seen and "old parameters" not in seen, seen


def test_two_threads_stepping_one_layer_agree_with_a_single_thread():
    """Two streams through one layer at two rates, in two threads, each against its own single-thread run."""
    torch.manual_seed(0)
    layer = S4D(4, 8).eval()
    xs = torch.randn(2, 3, 200, 4)
    rates = (1.0, 0.5)

    def run(x, rate):
        s, ys = layer.initial_state(3), []
        with torch.no_grad():
            for t in range(x.shape[1]):
                y, s = layer.step(x[:, t], s, rate)
                ys.append(y)
        return torch.stack(ys, 1)

    want = [run(xs[i], rates[i]) for i in range(2)]
    got = [None, None]
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)            # switch threads as often as the interpreter allows
    try:
        threads = [threading.Thread(target=lambda i=i: got.__setitem__(i, run(xs[i], rates[i]))) for i in range(2)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    finally:
        sys.setswitchinterval(switch)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=0)
