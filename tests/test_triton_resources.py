"""Resource check of the Triton kernels without a GPU (issue 17 item 6).

Every launch goes through a ``Config`` that its module's ``configs()`` lists (the launch table,
:mod:`statespaces.ops.triton._launch`). The fast tests check that table against the kernels and
the launch sites; the slow test compiles every entry for sm_80 and sm_90 with the ptxas shipped in
the triton wheel (no device) and fails on a compile error or on register spills beyond the
entry's recorded budget (0 for all today). CI pins ``triton==3.6.0`` (``.ci/run``), the compiler of
the GPU image, because register allocation differs between versions: 3.6 spilled in the complex scan
at 32-channel tiles where 3.9 did not. Numerics stay with the interpreter tests
(tests/test_triton.py, tests/test_triton_step.py).
"""
import ast
import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch

triton = pytest.importorskip("triton", reason="triton is not installed: the Triton kernels are optional")

ROOT = pathlib.Path(__file__).resolve().parents[1]
KERNEL_DIR = ROOT / "src" / "statespaces" / "ops" / "triton"


def _configs():
    from statespaces.ops.triton import configs

    return configs()


def test_launch_table_matches_the_kernels():
    cfgs = _configs()
    assert len({c for c in cfgs}) == len(cfgs)
    kernels = {c.name for c in cfgs}
    assert kernels == {
        "vandermonde._vandermonde_fwd_kernel", "vandermonde._vandermonde_bwd_kernel", "vandermonde._zoh_grads_kernel",
        "scan._scan_fwd_kernel",
        "scan._scan_bwd_kernel", "cauchy._cauchy_kernel", "step._diag_step_kernel", "dplr_step._dplr_step_kernel",
        "oscillator_step._osc_state_kernel", "oscillator_step._osc_out_kernel", "linoss._fwd_kernel", "linoss._bwd_kernel",
        "chunked_conv._chunked_fwd_kernel", "chunked_conv._chunked_bwd_kernel", "chunked_conv._chunked_grad_kernel",
        "chunked_dense._dense_carry_kernel", "chunked_dense._dense_rows_kernel", "chunked_dense._dense_adj_kernel",
        "chunked_dense._dense_grad_kernel", "oscillator._transition_kernel", "oscillator._damped_kernel",
        "dense_tables._tables_fwd_kernel", "dense_tables._tables_bwd_kernel", "dense_tables._powers_bwd_kernel",
        "dplr_discrete._fwd_kernel", "dplr_discrete._bwd_kernel", "spectral._spectral_bwd_kernel",
    }
    for c in cfgs:
        c.check()                          # signature names == runtime parameters, constexprs == constexpr params
        assert c.spill_budget == 0, f"{c.label()}: a non-zero spill budget must be documented and measured"


def _jit_names(tree):
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            for d in node.decorator_list:
                if "jit" in ast.unparse(d):
                    names.add(node.name)
    return names


@pytest.mark.parametrize("path", sorted(KERNEL_DIR.glob("*.py")), ids=lambda p: p.name)
def test_every_launch_site_reads_the_table(path):
    """No ``kernel[grid](...)`` outside ``Config.launch``: a launch that bypasses the table (and so
    escapes the resource check) fails here."""
    tree = ast.parse(path.read_text())
    jit = _jit_names(tree)
    direct = [
        ast.unparse(node.func)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Subscript)
        and isinstance(node.func.value, ast.Name) and node.func.value.id in jit
    ]
    assert not direct, f"{path.name}: launch through a Config of configs(), not directly: {direct}"


def test_choosers_stay_inside_the_table():
    """Whatever shape comes in, the chosen config is one that configs() lists (and so is compiled)."""
    import torch as _t

    from statespaces.ops.triton import cauchy, linoss, scan, step, vandermonde

    table = set(_configs())
    for N in list(range(1, 70)) + [127, 128, 129, 1000, 4096]:
        assert vandermonde._fwd_config(N) in table and vandermonde._bwd_config(N) in table
        for kinds in ((False, False), (True, False), (True, True)):
            for x0 in (False, True):
                assert scan._fwd_config(N, *kinds, x0) in table
                assert all(scan._bwd_config(N, *kinds, x0, ga) in table for ga in (False, True))
        assert all(step._config(N, dt) in table for dt in (_t.float32, _t.float64))
        for H in (1, 5, 16, 17, 64, 1000):
            assert all(linoss._fwd_config(N, H, f, ends_only=e) in table for f in (False, True) for e in (False, True))
            assert all(linoss._bwd_config(N, H, f, rho_only=r, has_rin=i) in table
                       for f in (False, True) for r in (False, True) for i in (False, True))
            assert all(linoss._fwd_config(N, H, f, chain=True) in table for f in (False, True))
    assert all(cauchy._config(a, b) in table for a, b in ((True, False), (False, True), (True, True)))
    from statespaces.kernels.chunked_conv import ChunkTables, _fits_triton
    from statespaces.ops.triton import chunked_conv

    for M in range(1, 70):
        for T in (16, 32, 64, 128):
            if _fits_triton(_t.zeros(1, 1, 1), ChunkTables(None, _t.empty(1, T, 2 * M), None, None, None)):
                assert all(f(T, M) in table for f in (chunked_conv._config, chunked_conv._bwd_config,
                                                      chunked_conv._grad_config))
    from statespaces.ops.triton import chunked_dense

    from statespaces.ops.triton import dense_tables, dplr_discrete

    for N in range(1, 200):                  # what chunked_conv_dense sends to Triton: N <= MAX_N
        if N <= chunked_dense.MAX_N:
            assert all(f(N) in table for f in chunked_dense._CHOOSERS)
            assert all(f(N, d) in table for f in (dense_tables._fwd_config, dense_tables._bwd_config)
                       for d in (False, True))
            assert dense_tables._pow_config(N) in table
    from statespaces.ops.triton import spectral

    assert all(spectral._config(u, k) in table for u, k in ((True, True), (True, False), (False, True)))
    for M in range(1, dplr_discrete.MAX_MODES + 1):   # what bilinear_dplr_system sends: r <= 2, M <= 32
        for r in range(1, dplr_discrete.MAX_RANK + 1):
            assert dplr_discrete._fwd_config(M, r) in table and dplr_discrete._bwd_config(M, r) in table


def test_launch_check_rejects_arguments_that_do_not_match_the_table():
    from statespaces.ops.triton import step

    cfg = step._config(8, torch.float32)
    f32, f64 = torch.zeros(4), torch.zeros(4, dtype=torch.float64)
    good = [f32] * 8 + [4, 2, 8]
    cfg.check(good)
    with pytest.raises(TypeError, match="launch arguments"):
        cfg.check(good[:-1])
    with pytest.raises(TypeError, match=r"\*fp32 tensor"):
        cfg.check([f64] + good[1:])
    with pytest.raises(TypeError, match="must be an int"):
        cfg.check(good[:-1] + [8.0])


@pytest.mark.slow
def test_every_config_compiles_for_sm80_and_sm90_without_spills(tmp_path):
    """Compiles each launch configuration for sm_80 and sm_90 on the CPU (~100 compiles: about
    4 minutes cold on 2 cores, about 1 minute with a warm Triton cache)."""
    out = tmp_path / "resources.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-W", "ignore", "-m", "statespaces.ops.triton._resources", "--cc", "80", "90",
                        "--json", str(out)], capture_output=True, text=True, env=env, timeout=1800)
    assert out.exists(), r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads(out.read_text())
    results = report["results"]
    assert len(results) == 2 * len(_configs())
    assert {x["cc"] for x in results} == {80, 90}
    assert report["failures"] == [], "\n".join(report["failures"]) + "\n" + r.stdout[-4000:]
    for x in results:
        assert x["ok"] and x["spill_stores"] <= x["spill_budget"] and x["registers"] <= 255, x
    assert r.returncode == 0, r.stdout[-3000:]
