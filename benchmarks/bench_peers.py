"""Ours against the official state-spaces/s4 layers (and the official JAX LinOSS), in one run.

The official ``models/s4/s4.py`` is never part of this repository: point ``--s4`` at a copy of it
(for example ``.peers/official_s4.py``, a git-ignored folder) taken from a checkout of
https://github.com/state-spaces/s4. Its only non-PyTorch import, ``pytorch_lightning``'s
``rank_zero_only``, is provided by a stand-in module here, so Lightning need not be installed.

    python benchmarks/bench_peers.py --s4 .peers/official_s4.py
    python benchmarks/bench_peers.py --s4 .peers/official_s4.py --shapes 8,1024 8,8192 --d-model 128
    OMP_NUM_THREADS=1 python benchmarks/bench_peers.py --s4 .peers/official_s4.py --clock cpu   # shared CPU

For each (B, L) it prints forward+backward time of our S4D and S4 layers (S4 learning C, the
default, and S4~ learning C~ for length L as the official layer does) and of the official
``FFTConv(mode="diag")`` (S4D) and ``FFTConv(mode="dplr")`` (S4), both without activation or
dropout (the same computation: kernel, FFT convolution, D skip), the ratio official/ours, and the
fp32 copy floor (streaming x->y and dy->dx once). Then one recurrent step at B=1: steps per second.
The official layer runs on its pure-PyTorch path unless its CUDA extension is importable.

With ``--linoss PATH --jax-python PY`` (a copy of tk-rusch/linoss ``models/LinOSS.py`` and a
Python that has jax and equinox, e.g. a separate venv in ``.peers/``), it also times the official
JAX LinOSS layer (IM and IMEX, P = ``--d-state`` oscillators) beside ours, each (B, L) pair, and the
floor that no implementation can beat (:func:`linoss_floor`: the projection GEMMs and one pass over the
trajectory each way) with the ceiling ratio official/floor: the most any LinOSS could gain over the official.

    python benchmarks/bench_peers.py --s4 .peers/official_s4.py \
        --linoss .peers/official_linoss.py --jax-python .peers/jaxenv/bin/python
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Tuple

import torch

from common import copy_floor, int_tuple, machine, nonneg_int, positive_int, run, sync, timeit, timing_line

from statespaces import S4, S4D, LinOSS

RUNNER = Path(__file__).with_name("_jax_linoss_runner.py")


#: What the scripts use from the official files: ``FFTConv`` (modes "diag" and "dplr") from state-spaces/s4's
#: ``models/s4/s4.py``, ``LinOSSLayer`` from tk-rusch/linoss's ``models/LinOSS.py``.
S4_CLASSES = ("class FFTConv", "class SSMKernelDiag", "class SSMKernelDPLR")
LINOSS_CLASSES = ("class LinOSSLayer",)


def official_file_problem(path: str, flag: str, classes, what: str) -> str:
    """Why ``path`` (given as ``flag``) is not the official file ``what`` defining ``classes``; "" when it looks so.
    Read as text, not imported: a wrong file is named before any timing and without its imports' errors."""
    file = Path(path)
    if not file.is_file():
        return f"{flag} {path}: no such file; copy {what} there"
    try:
        text = file.read_text(errors="replace")
    except OSError as e:
        return f"{flag} {path}: cannot read it ({e.strerror})"
    missing = [c.split()[1] for c in classes if c not in text]
    if missing:
        return f"{flag} {path}: this does not look like {what} (it defines no {', '.join(missing)})"
    return ""


def check_official(parser: argparse.ArgumentParser, path: str, flag: str = "--s4") -> None:
    """Refuse (``parser.error``: one line, exit status 2) an ``s4.py`` that is missing or is not state-spaces/s4's."""
    problem = official_file_problem(path, flag, S4_CLASSES, "state-spaces/s4's models/s4/s4.py")
    if problem:
        parser.error(problem)


def check_linoss_peer(parser: argparse.ArgumentParser, path: str, python: str) -> None:
    """Refuse a missing or wrong ``--linoss`` file, and a ``--jax-python`` that is not there or cannot import jax and
    equinox, before anything is timed (the JAX runner would fail the same way on every row)."""
    problem = official_file_problem(path, "--linoss", LINOSS_CLASSES, "tk-rusch/linoss's models/LinOSS.py")
    if problem:
        parser.error(problem)
    exe = shutil.which(python) if os.sep not in python else (python if os.access(python, os.X_OK) else None)
    if exe is None:
        parser.error(f"--jax-python {python}: no such executable (a Python with jax and equinox installed)")
    try:
        out = subprocess.run([exe, "-c", "import jax, equinox"], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        parser.error(f"--jax-python {python}: could not run it ({type(e).__name__}: {e})")
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["exit status %d" % out.returncode])[-1]
        parser.error(f"--jax-python {python}: cannot import jax and equinox ({last})")


def load_official(path: str, flag: str = "--s4", needs=("class FFTConv",)):
    """Import the official ``s4.py`` from ``path`` with a stand-in for Lightning's ``rank_zero_only``; a missing file
    or one without the ``needs`` definitions exits with the reason (``SystemExit``: one line)."""
    problem = official_file_problem(path, flag, needs, "state-spaces/s4's models/s4/s4.py")
    if problem:
        raise SystemExit(problem)
    file = Path(path)
    if "pytorch_lightning" not in sys.modules:
        pl = types.ModuleType("pytorch_lightning")
        utilities = types.ModuleType("pytorch_lightning.utilities")
        utilities.rank_zero_only = lambda f: f
        pl.utilities = utilities
        sys.modules["pytorch_lightning"] = pl
        sys.modules["pytorch_lightning.utilities"] = utilities
    spec = importlib.util.spec_from_file_location("official_s4", file)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError as e:           # its own imports: numpy, scipy, einops
        raise ImportError(f"{flag} {path}: importing it failed: {e} (the official s4.py needs scipy and einops)") from e
    return module


CLOCK = time.perf_counter   # or time.process_time with --clock cpu


def fwd_bwd_ours(layer, x):
    def run():
        layer.zero_grad(set_to_none=True)
        layer(x).sum().backward()
    return run


def fwd_bwd_official(layer, xt):
    def run():
        layer.zero_grad(set_to_none=True)
        y, _ = layer(xt)
        y.sum().backward()
    return run


def step_rate(step, x, state, device: torch.device, steps: int) -> float:
    with torch.no_grad():
        for _ in range(10):
            _, state = step(x, state)
        sync(device)
        t0 = CLOCK()
        for _ in range(steps):
            _, state = step(x, state)
        sync(device)
    return steps / (CLOCK() - t0)


def median_time(fn, device: torch.device, repeat: int) -> float:
    return timeit(fn, repeat=repeat, clock=CLOCK, device=device)


def official_linoss(args, disc: str, B: int, L: int) -> Tuple[float, str]:
    """Seconds per forward+backward of the official JAX LinOSS (gradients of its parameters, not of the input),
    measured in a subprocess, and the devices JAX ran on (printed: a CPU fallback during a GPU lease shows)."""
    cmd = [args.jax_python, str(RUNNER), args.linoss, disc, str(B), str(L), str(args.d_model), str(args.d_state),
           str(args.repeat), args.clock]
    env = dict(os.environ)
    if args.clock == "cpu":  # one XLA thread, as torch runs with OMP_NUM_THREADS=1: CPU work compared 1:1
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "JAX runner failed")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["seconds"], str(result.get("devices", "?"))


def linoss_floor(B: int, L: int, H: int, P: int, device: torch.device, repeat: int) -> float:
    r"""Seconds of the work every LinOSS forward+backward must do, whatever the implementation.

    * The projections: forcing ``B u`` (complex B (P, H) on real u: an (H, 2P) real matrix) and readout
      ``Re(C y)`` (a (2P, H) real matrix on the positions [Re y; Im y]): each one (B L, H, 2P) GEMM forward;
      backward the readout's input and weight gradients and the forcing's weight gradient (the input's own
      gradient is not asked for, by the official runner or by ours): five GEMMs of B L H 2P multiply-adds
      (671 M at B=8, L=1024, H=128, P=64), timed here with torch's BLAS on the same threads.
    * The recurrence: one read+write pass over the (B, L, 2P) real trajectory forward and one backward
      (the fp32 copy floor of that tensor, twice), however the scan is organised.

    Nothing else (the 2x2 transitions, the skip ``D u``, the loss) is counted, so the true floor is higher:
    ``official / floor`` bounds from above the speed-up any implementation can reach over the official one.
    """
    n, P2 = B * L, 2 * P
    g = torch.Generator(device="cpu").manual_seed(0)
    X, dY, Y = (torch.randn(n, H, generator=g).to(device) for _ in range(3))
    S, dF, F, dS, S2 = (torch.randn(n, P2, generator=g).to(device) for _ in range(5))
    Win, dWin = (torch.randn(H, P2, generator=g).to(device) for _ in range(2))
    Wout, dWout = (torch.randn(P2, H, generator=g).to(device) for _ in range(2))

    def work():                                             # into preallocated outputs: no page faults counted
        torch.mm(X, Win, out=F)                             # forward: forcing
        torch.mm(S, Wout, out=Y)                            # forward: readout
        torch.mm(dY, Wout.T, out=dS)                        # readout backward: d positions
        torch.mm(S.T, dY, out=dWout)                        # readout backward: d C
        torch.mm(X.T, dF, out=dWin)                         # forcing backward: d B
        S2.copy_(F)                                         # the trajectory, forward
        F.copy_(dS)                                         # and its adjoint, backward

    return median_time(work, device, repeat)


def compare_linoss(args, device: torch.device) -> None:
    print(f"LinOSS fwd+bwd, H={args.d_model} P={args.d_state}: ours (PyTorch) vs official (JAX, jit); floor: "
          "projection GEMMs + one trajectory pass each way (linoss_floor), ceiling = official/floor")
    print(timing_line(args.clock, f"ours median of {args.repeat} calls after 1 warm-up; official (JAX runner, "
                      f"same clock) median of {args.repeat} calls after its jit call; floor median of {args.repeat}"))
    print(f"{'disc':>5} {'B':>3} {'L':>6} {'ours ms':>9} {'official ms':>12} {'official/ours':>14} "
          f"{'floor ms':>9} {'ceiling':>8} {'ours/floor':>11}")
    printed_devices = False
    for B, L in args.shapes:
        floor = linoss_floor(B, L, args.d_model, args.d_state, device, args.repeat)
        for disc in args.disc:
            torch.manual_seed(0)
            ours = LinOSS(args.d_model, args.d_state, discretization=disc).to(device)
            # the same work as the official runner: gradients of the parameters, none of the input
            x = torch.randn(B, L, args.d_model, device=device)
            t_ours = median_time(fwd_bwd_ours(ours, x), device, args.repeat)
            try:
                t_peer, jax_devices = official_linoss(args, disc, B, L)
                if not printed_devices:
                    print(f"(JAX devices: {jax_devices})")
                    printed_devices = True
            except RuntimeError as e:
                print(f"{disc:>5} {B:>3} {L:>6} {1e3 * t_ours:9.1f}  official failed: {str(e)[:80]}")
                continue
            print(f"{disc:>5} {B:>3} {L:>6} {1e3 * t_ours:9.1f} {1e3 * t_peer:12.1f} {t_peer / t_ours:13.2f}x "
                  f"{1e3 * floor:9.3f} {t_peer / floor:7.2f}x {t_ours / floor:10.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--s4", help="path to the official models/s4/s4.py")
    p.add_argument("--linoss", help="path to the official tk-rusch/linoss models/LinOSS.py (JAX)")
    p.add_argument("--jax-python", help="a Python with jax and equinox, to run --linoss")
    p.add_argument("--d-model", type=positive_int, default=128)
    p.add_argument("--d-state", type=positive_int, default=64)
    p.add_argument("--shapes", nargs="+", type=int_tuple("B,L"), default=[(8, 1024), (8, 8192)], help="B,L pairs")
    p.add_argument("--repeat", type=positive_int, default=3)
    p.add_argument("--steps", type=nonneg_int, default=2000, help="recurrent steps timed at B=1 (0: skip)")
    p.add_argument("--layers", nargs="+", choices=["S4D", "S4", "S4~"], default=["S4D", "S4", "S4~"],
                   help="which official-S4 comparisons to run")
    p.add_argument("--disc", nargs="+", choices=["im", "imex"], default=["im", "imex"],
                   help="which LinOSS discretizations to run")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="cpu: process CPU time (robust on a shared CPU machine; use with OMP_NUM_THREADS=1)")
    args = p.parse_args()
    global CLOCK
    if args.clock == "cpu":
        if torch.cuda.is_available():
            raise SystemExit("--clock cpu measures CPU work; on a GPU use the default wall clock")
        CLOCK = time.process_time
    if not args.s4 and not args.linoss:
        p.error("give --s4 PATH and/or --linoss PATH --jax-python PY (see the module docstring)")
    if args.linoss and not args.jax_python:
        p.error("--linoss needs --jax-python: a Python interpreter with jax and equinox installed")
    if args.s4:                                   # every peer checked before anything is timed
        check_official(p, args.s4)
    if args.linoss:
        check_linoss_peer(p, args.linoss, args.jax_python)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.linoss:
        compare_linoss(args, device)
    if not args.s4:
        return
    official = load_official(args.s4, needs=S4_CLASSES)
    H, N = args.d_model, args.d_state
    print(f"fwd+bwd, H={H} N={N}, fp32; {machine()}; device {device}; {args.clock} clock")
    print(timing_line(args.clock, f"median of {args.repeat} calls after 1 warm-up, ours and official alike"
                      + (", synchronized around each call" if device.type == "cuda" else "")
                      + f"; floor median of {args.repeat}; steps/s: one run of {args.steps} steps after 10 warm-up steps"))
    print(f"{'layer':>5} {'B':>3} {'L':>6} {'ours ms':>9} {'official ms':>12} {'official/ours':>14} "
          f"{'floor ms':>9} {'ours/floor':>11}")
    for B, L in args.shapes:
        # S4~: C~ learned for this length (l_max = L), the official layer's parameterization
        pairs = {"S4D": (lambda: S4D(H, N, init="legs"), "diag"), "S4": (lambda: S4(H, N, init="legs"), "dplr"),
                 "S4~": (lambda: S4(H, N, init="legs", l_max=L), "dplr")}
        floor = copy_floor(B * L * H, passes=2, device=device, clock=CLOCK, repeat=args.repeat)
        for name, (make_ours, mode) in pairs.items():
            if name not in args.layers:
                continue
            torch.manual_seed(0)
            ours = make_ours().to(device)
            peer = official.FFTConv(H, mode=mode, d_state=N, transposed=True, activation=None).to(device)
            x = torch.randn(B, L, H, device=device, requires_grad=True)
            xt = x.detach().transpose(1, 2).contiguous().requires_grad_(True)
            t_ours = median_time(fwd_bwd_ours(ours, x), device, args.repeat)
            try:
                t_peer = median_time(fwd_bwd_official(peer, xt), device, args.repeat)
            except (RuntimeError, MemoryError) as e:  # e.g. out of memory: report and go on
                print(f"{name:>5} {B:>3} {L:>6} {1e3 * t_ours:9.1f}  official failed: {str(e)[:80]}")
                continue
            print(f"{name:>5} {B:>3} {L:>6} {1e3 * t_ours:9.1f} {1e3 * t_peer:12.1f} {t_peer / t_ours:13.2f}x "
                  f"{1e3 * floor:9.3f} {t_ours / floor:10.1f}x")
            del ours, peer, x, xt
    if args.steps <= 0:
        return
    print(f"recurrent step, B=1, H={H}, N={N} (steps/s): ours eager layer.step (validates every call), ours "
          "layer.stepper (validated once, in place: what generation uses), the official eager step")
    pairs = {"S4D": (lambda: S4D(H, N, init="legs"), "diag"), "S4": (lambda: S4(H, N, init="legs"), "dplr")}
    for name, (make_ours, mode) in pairs.items():
        torch.manual_seed(0)
        ours = make_ours().to(device).eval()
        x = torch.randn(1, H, device=device)
        r_ours = step_rate(ours.step, x, ours.initial_state(1), device, args.steps)
        st = ours.stepper(1)
        r_stepper = step_rate(lambda x, state, st=st: (st(x), state), x, None, device, args.steps)
        peer = official.FFTConv(H, mode=mode, d_state=N, transposed=True, activation=None).to(device).eval()
        peer.setup_step()
        r_peer = step_rate(peer.step, x, peer.default_state(1, device=device), device, args.steps)
        print(f"{name:>5} ours {r_ours:10.0f}  stepper {r_stepper:10.0f}  official {r_peer:10.0f}  "
              f"ours/official {r_ours / r_peer:6.2f}x  stepper/official {r_stepper / r_peer:6.2f}x")


if __name__ == "__main__":
    run(main)
