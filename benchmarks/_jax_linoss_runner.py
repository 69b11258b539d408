"""Times the official JAX LinOSS layer (tk-rusch/linoss ``models/LinOSS.py``) for bench_peers.py.

Run by bench_peers.py with a Python that has jax and equinox (never imported by statespaces):

    JAXPY benchmarks/_jax_linoss_runner.py PATH/TO/LinOSS.py DISC B L H P REPEAT CLOCK

Prints one JSON line: the median forward+backward time in seconds (gradient of the output sum
with respect to every layer parameter, the input batch vmapped, jit-compiled once beforehand).
"""
import importlib.util
import json
import sys
import time


def main() -> None:
    path, disc, B, L, H, P, repeat, clock = sys.argv[1:9]
    B, L, H, P, repeat = int(B), int(L), int(H), int(P), int(repeat)
    import equinox as eqx
    import jax
    import jax.random as jr

    spec = importlib.util.spec_from_file_location("official_linoss", path)
    lo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lo)
    layer = lo.LinOSSLayer(P, H, disc.upper(), key=jr.PRNGKey(0))
    u = jr.normal(jr.PRNGKey(1), (B, L, H))

    @eqx.filter_jit
    def fwdbwd(m, x):
        return eqx.filter_grad(lambda mm: jax.vmap(mm)(x).sum())(m)

    tick = time.process_time if clock == "cpu" else time.perf_counter
    jax.block_until_ready(fwdbwd(layer, u))
    times = []
    for _ in range(repeat):
        t0 = tick()
        jax.block_until_ready(fwdbwd(layer, u))
        times.append(tick() - t0)
    times.sort()
    print(json.dumps({"seconds": times[len(times) // 2], "jax": jax.__version__, "devices": str(jax.devices())}))


if __name__ == "__main__":
    main()
