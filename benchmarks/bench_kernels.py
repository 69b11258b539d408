"""Per-op kernel benchmark: ours vs the naive reference twin vs the fp32 copy floor, in one run.

    python benchmarks/bench_kernels.py                      # CPU, 1 thread, default sizes
    python benchmarks/bench_kernels.py --threads 2 --lengths 1024 8192
    python benchmarks/bench_kernels.py --device cuda        # GPU: Triton kernels via the dispatcher
    python benchmarks/bench_kernels.py --peer-s4 .peers/official_s4.py   # + official S4D layer (from the repo root)

Ops (fwd+bwd each, float32): the S4D Vandermonde kernel ``Re sum_n c_n exp(l w_n)`` (H, N modes,
L), the diagonal scan ``x_l = a x_{l-1} + b_l`` (complex, time-invariant a), the DPLR Cauchy sum
(if ``statespaces.kernels.cauchy`` exists), the causal FFT convolution, and the S4D layer. "ours"
goes through the public functions (so on CUDA through :mod:`statespaces.kernels.dispatch` to
Triton when it imports); "naive" is the reference twin; "floor" streams the op's unavoidable
fp32 bytes (inputs read + outputs written, forward and backward) at copy bandwidth (into a buffer
allocated beforehand, ``common.copy_floor``).

CPU figures on a shared machine are noisy: each time is the minimum over ``--rounds`` rounds of
the median of ``--repeat`` calls, and ours/naive alternate within a round. With 2 cores shared
by other jobs, ``--threads 1`` gives the steadier numbers (an idle peer thread stalls every
parallel region). ``--peer-s4 PATH`` loads a local copy of state-spaces/s4 ``models/s4/s4.py``
(never committed; see /work/shared/bench/README.md for its Lightning stub).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, nonneg_int, positive_int, run, timing_line  # noqa: E402

from statespaces import S4D  # noqa: E402
from statespaces.kernels import dispatch, vandermonde, vandermonde_naive  # noqa: E402
from statespaces.ops import fftconv, scan_loop  # noqa: E402

try:
    from statespaces.kernels.cauchy import cauchy, cauchy_naive
except ImportError:  # pragma: no cover
    cauchy = cauchy_naive = None


#: The scan rows' own batch and width: their naive twin is a Python loop over L on a (B, H, L, N) complex tensor
#: (268 MB at the default B=8, H=128, N=32, L=1024), so they keep a fixed small shape.
SCAN_B, SCAN_H = 2, 8


def sync(dev: str) -> None:
    if dev == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], dev: str, repeat: int) -> float:
    ts = []
    for _ in range(repeat):
        sync(dev)
        t0 = time.perf_counter()
        fn()
        sync(dev)
        ts.append(time.perf_counter() - t0)
    ts.sort()
    return ts[len(ts) // 2]


def compare(fns: Dict[str, Callable[[], object]], dev: str, repeat: int, rounds: int) -> Dict[str, float]:
    for f in fns.values():  # warm-up (and Triton compilation)
        f()
    best = {k: float("inf") for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            best[k] = min(best[k], timed(f, dev, repeat))
    return best


def copy_floor(nbytes: int, dev: str, repeat: int) -> float:
    """Seconds to move ``nbytes`` through memory at copy bandwidth (a copy of nbytes/2 reads and writes), into a
    buffer allocated and touched beforehand (a clone would time the allocator and page faults too:
    :func:`common.copy_floor`)."""
    x = torch.ones(max(1, nbytes // 8), dtype=torch.float32, device=dev)
    dst = torch.zeros_like(x)
    return timed(lambda: dst.copy_(x), dev, max(5, repeat))


def fwd_bwd(fn: Callable[..., torch.Tensor], *leaves: torch.Tensor):
    def run():
        out = fn(*leaves)
        out = torch.view_as_real(out) if out.is_complex() else out
        grads = torch.autograd.grad(out, [t for t in leaves if t.requires_grad], torch.ones_like(out))
        return grads
    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=nonneg_int, default=1, help="CPU intra-op threads (0: torch default)")
    p.add_argument("--batch", type=positive_int, default=8, help="B (not the scan rows: fixed B=2)")
    p.add_argument("--d-model", type=positive_int, default=128, help="H (not the scan rows: fixed H=8)")
    p.add_argument("--modes", type=positive_int, default=32, help="complex modes N (S4D d_state = 2N)")
    p.add_argument("--lengths", type=positive_int, nargs="+", default=[1024, 8192])
    p.add_argument("--repeat", type=positive_int, default=3)
    p.add_argument("--rounds", type=positive_int, default=3)
    p.add_argument("--skip-naive-above", type=int, default=1 << 15, help="skip a naive twin above this many (H N L) entries x 1e3")
    p.add_argument("--peer-s4", type=str, default=None, help="path to a local state-spaces/s4 models/s4/s4.py")
    p.add_argument("--json", type=str, default=None, help="also append one JSON line per row to this file")
    args = p.parse_args()
    if args.peer_s4:
        from bench_peers import check_official        # before any timing: a missing or wrong file is refused here

        check_official(p, args.peer_s4, "--peer-s4")
    dev = args.device
    if dev == "cpu" and args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    B, H, N = args.batch, args.d_model, args.modes
    peer = None
    if args.peer_s4:
        from bench_peers import load_official        # with its stand-in for Lightning's rank_zero_only

        peer = load_official(args.peer_s4, "--peer-s4")

    triton_on = dispatch.use_triton(torch.zeros(1, device=dev))
    print(f"{machine()}; device={dev}; triton path: {triton_on}; B={B} H={H} N={N} (complex modes)")
    print(timing_line("wall", f"min over {args.rounds} rounds (scan: {max(1, args.rounds - 1)}) of the median of "
                      f"{args.repeat} calls, after 1 warm-up call, ours/naive alternating"
                      + (", synchronized around each call" if dev == "cuda" else "") + "; floor median of "
                      f"{max(5, args.repeat)}"))
    print(f"scan rows: fixed B={SCAN_B}, H={SCAN_H} (a (B, H, L, N) complex input; --batch and --d-model not applied)")
    print(f"{'op':<22} {'L':>6} {'ours ms':>9} {'naive ms':>9} {'naive/ours':>10} {'floor ms':>9} {'ours/floor':>10}")
    rows: List[dict] = []

    def report(op: str, L: int, t: Dict[str, float], floor: float, shape: Optional[Dict[str, int]] = None,
               **extra) -> None:
        """One row; ``shape``: the row's own B/H where it differs from the command's (the scan's fixed B=2, H=8)."""
        ours, naive = 1e3 * t["ours"], 1e3 * t.get("naive", float("nan"))
        fl = 1e3 * floor
        print(f"{op:<22} {L:>6} {ours:9.2f} {naive:9.2f} {naive / ours:9.2f}x {fl:9.3f} {ours / fl:9.1f}x", flush=True)
        for k, v in extra.items():
            print(f"{'':<22} {'':>6} {k}: {1e3 * v:.2f} ms ({v / t['ours']:.2f}x ours)", flush=True)
        rows.append(dict(op=op, L=L, **dict(dict(B=B, H=H), **(shape or {})), N=N, device=dev, ours_ms=ours,
                         naive_ms=naive, floor_ms=fl,
                         **{f"{k}_ms": 1e3 * v for k, v in extra.items()}))

    def big(L: int) -> bool:
        return H * N * L > 1000 * args.skip_naive_above

    for L in args.lengths:
        # -- Vandermonde kernel: (H, N) -> (H, L)
        w = torch.complex(-0.5 * torch.rand(H, N, device=dev) * 1e-2, torch.randn(H, N, device=dev)).requires_grad_()
        c = torch.randn(H, N, dtype=torch.complex64, device=dev, requires_grad=True)
        fns = {"ours": fwd_bwd(lambda c, w: vandermonde(c, w, L), c, w)}
        if not big(L):
            fns["naive"] = fwd_bwd(lambda c, w: vandermonde_naive(c, w, L), c, w)
        t = compare(fns, dev, args.repeat, args.rounds)
        report("vandermonde", L, t, copy_floor(2 * 4 * H * L, dev, args.repeat))

        # -- diagonal scan, complex, LTI transitions: b (Bs, H, L, N) with a (H, 1, N)
        Bs, Hs = SCAN_B, SCAN_H
        a = (0.99 * torch.exp(torch.complex(torch.zeros(Hs, 1, N), torch.rand(Hs, 1, N)))).to(dev).requires_grad_()
        b = torch.randn(Bs, Hs, L, N, dtype=torch.complex64, device=dev, requires_grad=True)
        fns = {"ours": fwd_bwd(dispatch.scan_diagonal, a, b)}
        if L <= 2048:
            fns["naive"] = fwd_bwd(scan_loop, a, b)
        t = compare(fns, dev, args.repeat, max(1, args.rounds - 1))
        report(f"scan (B={Bs},H={Hs})", L, t, copy_floor(4 * 8 * Bs * Hs * L * N, dev, args.repeat),
               shape={"B": Bs, "H": Hs})

        # -- Cauchy (DPLR): v (H, 4, N) against K = L/2+1 nodes on the unit circle's image
        if cauchy is not None:
            K = L // 2 + 1
            wv = torch.complex(-0.5 - torch.rand(H, 1, N), torch.randn(H, 1, N) * 10).to(dev).requires_grad_()
            z = (1j * torch.linspace(-50, 50, K)).to(torch.complex64).expand(H, 1, K).contiguous().to(dev)
            v = torch.randn(H, 4, N, dtype=torch.complex64, device=dev, requires_grad=True)
            fns = {"ours": fwd_bwd(lambda v, w: cauchy(v, z, w, conj=True), v, wv)}
            if not big(L):
                fns["naive"] = fwd_bwd(lambda v, w: cauchy_naive(v, z, w, conj=True), v, wv)
            t = compare(fns, dev, args.repeat, args.rounds)
            report("cauchy (J=4, conj)", L, t, copy_floor(2 * 8 * H * 4 * K, dev, args.repeat))

        # -- causal FFT convolution (B, L, H) * (H, L)
        x = torch.randn(B, L, H, device=dev, requires_grad=True)
        k = torch.randn(H, L, device=dev, requires_grad=True)

        def naive_conv(x, k):  # the textbook formulation, differentiated by plain autograd
            n = 2 * L
            y = torch.fft.irfft(torch.fft.rfft(x.transpose(1, 2), n=n) * torch.fft.rfft(k, n=n), n=n)[..., :L]
            return y.transpose(1, 2)

        t = compare({"ours": fwd_bwd(fftconv, x, k), "naive": fwd_bwd(naive_conv, x, k)}, dev, args.repeat, args.rounds)
        report("fftconv", L, t, copy_floor(4 * 4 * B * L * H, dev, args.repeat))

        # -- S4D layer (and the official one with --peer-s4)
        layer = S4D(H, 2 * N).to(dev)
        xl = torch.randn(B, L, H, device=dev, requires_grad=True)

        def naive_layer(xl):
            sys_ = layer.diagonal_system()
            kk = 2 * vandermonde_naive(sys_.C[0] * sys_.dB, sys_.log_dA, L)
            return naive_conv(xl, kk) + xl * layer.D

        leaves = [xl] + [q for q in layer.parameters() if q.requires_grad]
        fns = {
            "ours": fwd_bwd(lambda xl, *ps: layer(xl), *leaves),
            "naive": fwd_bwd(lambda xl, *ps: naive_layer(xl), *leaves),
        }
        extra = {}
        if peer is not None:
            off = peer.FFTConv(H, mode="diag", d_state=2 * N, transposed=True, activation=None).to(dev)
            xt = torch.randn(B, H, L, device=dev, requires_grad=True)
            pl = [xt] + [q for q in off.parameters() if q.requires_grad]
            fns["peer"] = fwd_bwd(lambda xt, *ps: off(xt)[0], *pl)
        t = compare(fns, dev, args.repeat, args.rounds)
        if "peer" in t:
            extra["official S4D (peer)"] = t["peer"]
        report("S4D layer", L, t, copy_floor(4 * 4 * B * L * H, dev, args.repeat), **extra)

    if args.json:
        with open(args.json, "a") as f:
            for r in rows:
                f.write(json.dumps(dict(r, machine=machine())) + "\n")


if __name__ == "__main__":
    run(main)
