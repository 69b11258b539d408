"""Chunked LTI convolution vs the FFT route on CPU (one thread), ratios in one run.

    python benchmarks/bench_chunked.py                       # B=8, H=128, N=64, L=1024 and 8192
    python benchmarks/bench_chunked.py --lengths 256 2048 --d-state 16 --chunks 32 64 128

For each shape: the S4D layer (N=64 real state = 32 complex modes) stateless (FFT route: Vandermonde
kernel + ``fftconv``; chunked: :func:`statespaces.kernels.chunked_conv.chunked_conv_diagonal` at each
chunk length T) and stateful (``state=``, ``return_state=True``: the FFT route adds the zero-input
response and the state advance), and LinOSS (P = N oscillators) by ``mode='scan'``, ``'conv'`` and
``'chunked'`` (IM and IMEX; stateless calls with L a multiple of 32 run the fused
:func:`statespaces.kernels.chunked_projected.chunked_conv_projected`, timed against its twin of unfused ops in the
``unfused ms`` column), and S4 (N real state dimensions) stateful and stateless: its FFT route (the kernel by
Algorithm 1's Cauchy sums on CUDA; on the CPU a stateless call takes it from dense powers of dA,
:func:`statespaces.kernels.chunked_conv.prefer_power_kernel`; with the two time-domain state maps when stateful) against :func:`statespaces.kernels.chunked.chunked_conv_dense` at the
default T, and the same for an S4 layer learning C~ for this length (``l_max = L``: its FFT route takes the
kernel from C~ without dA^L, its chunked form needs C recovered, a float64 dA^L and a solve); forward (no
grad) and forward+backward. ``--layers s4`` runs the S4 rows only, ``--layers linoss`` the LinOSS rows
only. ``ratio`` = FFT (or scan) time / chunked time:
above 1, the chunked path is faster. The dispatch rule that these figures set is
:func:`statespaces.kernels.chunked_conv.prefer_chunked`. Every row ends with the fp32 copy floor of the (B, L, H)
activations (``common.layer_floor``: x->y for ``fwd``, and dy->dx for ``fwd+bwd``; states not counted), timed by
the same clock, and ``best/floor``: the fastest column of the row over it.
"""
from __future__ import annotations

import argparse
import contextlib
import time

import torch
from common import LAYER_FLOOR, layer_floor, machine, positive_int, run, timeit, timing_line

import statespaces.layers.linoss as linoss_module
from statespaces import S4, S4D, LinOSS
from statespaces.kernels.chunked_conv import chunked_conv_diagonal
from statespaces.ops.fftconv import fftconv


def _fwd_bwd(fn):
    def run():
        out = fn()
        y, s = out if isinstance(out, tuple) else (out, None)
        loss = y.sum() + (0 if s is None else s.abs().sum())
        loss.backward()
    return run


@contextlib.contextmanager
def _unfused():
    """LinOSS's chunked mode without the fused node (its twin of unfused ops, the path before it)."""
    fits = linoss_module.fits_projected
    linoss_module.fits_projected = lambda u, tables: False      # noqa: ARG005
    try:
        yield
    finally:
        linoss_module.fits_projected = fits


CLOCK = time.perf_counter


def _time(fn, repeat: int, grad: bool) -> float:
    if grad:
        return timeit(_fwd_bwd(fn), repeat=repeat, clock=CLOCK) * 1e3
    with torch.no_grad():
        return timeit(fn, repeat=repeat, clock=CLOCK) * 1e3


FLOORS: dict = {}


def _floor(numel: int, grad: bool, repeat: int) -> float:
    """layer_floor in ms, once per (size, pass)."""
    if (numel, grad) not in FLOORS:
        FLOORS[numel, grad] = layer_floor(numel, grad, clock=CLOCK, repeat=max(5, repeat)) * 1e3
    return FLOORS[numel, grad]


def _floor_cols(ts, numel: int, grad: bool, repeat: int) -> str:
    f = _floor(numel, grad, repeat)
    return f" {f:9.3f} {min(ts) / f:10.1f}x"


FLOOR_HEAD = f" {'floor ms':>9} {'best/floor':>11}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=positive_int, default=8)
    p.add_argument("--d-model", type=positive_int, default=128)
    p.add_argument("--d-state", type=positive_int, default=64)
    p.add_argument("--lengths", type=positive_int, nargs="+", default=[1024, 8192])
    p.add_argument("--chunks", type=positive_int, nargs="+", default=[64, 128])
    p.add_argument("--repeat", type=positive_int, default=3)
    p.add_argument("--layers", choices=("all", "s4", "linoss"), default="all",
                   help="all rows, or the S4 (LinOSS) rows only")
    p.add_argument("--linoss-modes", nargs="+", choices=("scan", "conv", "chunked"),
                   default=["scan", "conv", "chunked"],
                   help="LinOSS modes timed (the unfused twin is timed with 'chunked' where this checkout has it)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall clock, or this process's CPU time (steadier on a shared machine)")
    args = p.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(1)
    torch.manual_seed(0)
    B, H, N = args.batch, args.d_model, args.d_state
    print(f"chunked vs FFT, B={B} H={H} N={N}, one thread; {machine()}")
    print(LAYER_FLOOR)
    print(timing_line(args.clock, f"median of {args.repeat} calls after 1 warm-up; floor median of {max(5, args.repeat)}"))
    if args.layers == "all":
        print(f"{'layer':>16} {'L':>6} {'pass':>8} {'ref ms':>9} "
              + " ".join(f"{'T=' + str(T) + ' ms':>10}" for T in args.chunks) + f" {'best ratio':>10}" + FLOOR_HEAD)
    s4d = S4D(H, N)
    for L in args.lengths if args.layers == "all" else ():
        x = torch.randn(B, L, H, requires_grad=True)
        s0 = s4d.initial_state(B) + torch.randn(B, H, s4d.n_modes, dtype=torch.complex64)
        for stateful in (False, True):
            for grad in (False, True):
                def ref(x=x, L=L, s0=s0, stateful=stateful):   # the FFT route of SSMLayer.forward
                    y = fftconv(x, s4d._with_skip(s4d.kernel(L)))
                    if not stateful:
                        return y
                    return y + s4d._zero_input_response(s0, L, 1.0), s4d._advance_state(s0, x, 1.0)
                t_ref = _time(ref, args.repeat, grad)

                def chunked(T, x=x, s0=s0, stateful=stateful):
                    def f():
                        sys = s4d.diagonal_system()
                        return chunked_conv_diagonal(x, sys.log_dA, sys.dB, sys.C, sys.scale, s4d.D, chunk=T,
                                                     state=s0 if stateful else None, return_state=stateful)
                    return f
                ts = [_time(chunked(T), args.repeat, grad) for T in args.chunks]
                name = "S4D stateful" if stateful else "S4D"
                print(f"{name:>16} {L:>6} {'fwd+bwd' if grad else 'fwd':>8} {t_ref:9.2f} "
                      + " ".join(f"{t:10.2f}" for t in ts) + f" {t_ref / min(ts):10.2f}"
                      + _floor_cols([t_ref, *ts], x.numel(), grad, args.repeat))
    modes = list(args.linoss_modes)
    if "chunked" in modes and hasattr(linoss_module, "fits_projected"):   # a checkout before it: no such column
        modes.append("unfused")
    ratios = [(a, "chunked") for a in ("scan", "unfused") if a in modes and "chunked" in modes]
    if args.layers != "s4":
        print(f"{'layer':>16} {'L':>6} {'pass':>8} " + " ".join(f"{m + ' ms':>10}" for m in modes)
              + "".join(f" {a + '/chunk':>13}" for a, _ in ratios) + FLOOR_HEAD)
    for disc in ("IM", "IMEX") if args.layers != "s4" else ():
        lin = LinOSS(H, N, discretization=disc)
        for L in args.lengths:
            x = torch.randn(B, L, H, requires_grad=True)
            for grad in (False, True):
                t = {}
                for m in modes:
                    with _unfused() if m == "unfused" else contextlib.nullcontext():
                        mode = "chunked" if m == "unfused" else m
                        t[m] = _time(lambda mode=mode, x=x, lin=lin: lin(x, mode=mode), args.repeat, grad)
                print(f"{'LinOSS-' + disc:>16} {L:>6} {'fwd+bwd' if grad else 'fwd':>8} "
                      + " ".join(f"{t[m]:10.2f}" for m in modes)
                      + "".join(f" {t[a] / t[b]:13.2f}" for a, b in ratios)
                      + _floor_cols(list(t.values()), x.numel(), grad, args.repeat), flush=True)

    if args.layers == "linoss":
        return
    plain = S4(H, N, seed=0)
    print(f"{'layer':>16} {'L':>6} {'pass':>8} {'FFT ms':>9} {'chunked ms':>10} {'ratio':>10}" + FLOOR_HEAD)
    for L in args.lengths:
        x = torch.randn(B, L, H, requires_grad=True)
        for tag, s4 in (("S4", plain), ("S4 l_max", S4(H, N, seed=0, l_max=L))):
            s0 = s4.initial_state(B) + 0.1 * torch.randn(B, H, s4.n_modes, dtype=torch.complex64)
            for stateful in (False, True):
                for grad in (False, True):
                    t = {}
                    for path in ("fft", "chunked"):
                        s4._use_chunked = lambda u, st, path=path: path == "chunked"   # the two branches of forward
                        kw = dict(state=s0, return_state=True) if stateful else {}
                        t[path] = _time(lambda x=x, kw=kw, s4=s4: s4(x, **kw), args.repeat, grad)
                    name = tag + (" stateful" if stateful else "")
                    print(f"{name:>16} {L:>6} {'fwd+bwd' if grad else 'fwd':>8} {t['fft']:9.2f} {t['chunked']:10.2f} "
                          f"{t['fft'] / t['chunked']:10.2f}"
                          + _floor_cols(list(t.values()), x.numel(), grad, args.repeat), flush=True)
            del s4._use_chunked


if __name__ == "__main__":
    run(main)
