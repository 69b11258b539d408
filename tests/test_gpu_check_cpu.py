"""The CPU-side parts of benchmarks/gpu_check.py (the GPU command itself needs CUDA): it imports, exits
0 with a message on a machine without CUDA, and its workloads and float64 twins are sound."""
import importlib.util
import os
import pathlib

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_check_exits_cleanly_without_cuda(gpu_check, capsys, tmp_path):
    """One line and exit status 2, not 0: a lease without a working GPU must not pass for a passing check."""
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: run the command itself")
    assert gpu_check.main(["--out", str(tmp_path / "x.json")]) == 2
    assert "no CUDA device" in capsys.readouterr().out


def test_gpu_check_linoss_twin_matches_the_layer_recurrence(gpu_check):
    """The float64 twin the GPU command compares the fused LinOSS scan with is the recurrence itself:
    one explicit step at a time from x0."""
    g = torch.Generator().manual_seed(0)
    u, W, M, f, x0 = gpu_check.linoss_scan_case("imex", 2, 7, 5, 3, g)
    y, fin = gpu_check.linoss_scan_loop(u, W, M, f, x0)
    M2, f2 = torch.cat([M, M], -1), torch.cat([f, f], -1)
    x = x0.clone()
    for n in range(7):
        v = u[:, n] @ W.T
        x = torch.stack([M2[0, 0] * x[:, 0] + M2[0, 1] * x[:, 1] + f2[0] * v,
                         M2[1, 0] * x[:, 0] + M2[1, 1] * x[:, 1] + f2[1] * v], 1)
        torch.testing.assert_close(y[:, n], x[:, 1])
    torch.testing.assert_close(fin, x)


@pytest.mark.parametrize("op,shape", [("vandermonde", dict(H=2, N=4, L=16)), ("linoss_layer", dict(B=1, L=8, H=3, N=2)),
                                      ("s4d_layer", dict(B=1, L=8, H=3, N=4)), ("s4_layer", dict(B=1, L=8, H=3, N=4))])
def test_gpu_check_path_workloads_run_on_cpu(gpu_check, op, shape):
    assert op in {o for o, _ in gpu_check.PATH_SHAPES}
    fwd, fwd_bwd = gpu_check.path_workload(op, shape, device="cpu")
    assert torch.isfinite(fwd()).all()
    fwd_bwd()
    with pytest.raises(ValueError, match="unknown op"):
        gpu_check.path_workload("nope", shape, device="cpu")


def test_gpu_check_chunked_conv_section_runs_on_cpu(gpu_check):
    """The chunked-convolution section (Triton forward and backward on CUDA) on CPU, where the float32 side is
    the PyTorch chunked path: every entry present and small (so a large error on the GPU is the kernel's)."""
    recs = gpu_check.check_chunked_conv(True, torch.Generator().manual_seed(0), device="cpu", size=(1, 3, 2),
                                        lengths=(70,))
    assert [r["kind"] for r in recs] == ["stateless", "stateful", "bidirectional"]
    for r in recs:
        errs = {k: v for k, v in r.items() if k.startswith(("out_", "grad_"))}
        assert len(errs) == (8 if r["kind"] == "stateful" else 6), r
        assert max(errs.values()) < 1e-4, r


def test_gpu_check_chunked_dense_section_runs_on_cpu(gpu_check):
    """The dense (S4) chunked-convolution section on CPU, where the float32 side is the PyTorch dense path:
    every entry present and small (so a large error on the GPU is the Triton kernels')."""
    recs = gpu_check.check_chunked_dense(True, torch.Generator().manual_seed(0), device="cpu", size=(2, 3, 4),
                                         lengths=(70,))
    assert [r["kind"] for r in recs] == ["stateless", "stateful"]
    for r in recs:
        errs = {k: v for k, v in r.items() if k.startswith(("out_", "grad_"))}
        assert len(errs) == (8 if r["kind"] == "stateful" else 6), r
        assert max(errs.values()) < 1e-4, r


def test_gpu_profile_and_session_script_are_sound_without_cuda(capsys):
    """The profiler command exits 2 (nothing measured, as gpu_check.py) with a message on stderr without CUDA; the
    one-call session script parses."""
    import subprocess

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: run the commands themselves")
    spec = importlib.util.spec_from_file_location("gpu_profile", ROOT / "benchmarks" / "gpu_profile.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main([]) == 2 and "no CUDA device" in capsys.readouterr().err
    subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu_session.sh")], check=True)


def test_gpu_check_step_section_runs_on_cpu(gpu_check):
    """The fused-step section (diagonal, oscillator and low-rank steps) on CPU, where the float32 side is the
    PyTorch step: every op, both precisions, errors at the precision of each (so a large GPU error is the kernels')."""
    recs = gpu_check.check_steps(torch.Generator().manual_seed(0), device="cpu")
    ops = ("diagonal_step", "oscillator_step", "dplr_step")
    assert [(r["op"], r["dtype"]) for r in recs] == [(op, str(d)) for op in ops for d in (torch.float32, torch.float64)]
    for r in recs:
        tol = 1e-5 if r["dtype"] == str(torch.float32) else 1e-12
        assert r["y"] < tol and r["state"] < tol, r


def test_gpu_profile_host_table_on_cpu(gpu_check):
    """gpu_profile's host breakdown (cProfile) on a CPU workload: rows sorted by cumulative time, per-call
    figures, and the layer's own functions among them."""
    spec = importlib.util.spec_from_file_location("gpu_profile", ROOT / "benchmarks" / "gpu_profile.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    _, fwd_bwd = gpu_check.path_workload("s4d_layer", dict(B=1, L=32, H=4, N=4), device="cpu")
    rows = mod.host_table(fwd_bwd, calls=3, top=40)
    assert 0 < len(rows) <= 40
    cums = [cum for _, cum, _, _ in rows]
    assert cums == sorted(cums, reverse=True) and all(own <= cum + 1e-9 for _, cum, own, _ in rows)
    assert any("statespaces/layers/base.py" in label for label, _, _, _ in rows)


@pytest.mark.slow
def test_host_census_counts_the_cuda_path_on_cpu():
    """benchmarks/host_census.py runs each layer's CUDA code path under the Triton interpreter (in its own
    process: it sets TRITON_INTERPRET before importing the kernels) and prints a positive op count per layer."""
    import subprocess
    import sys

    pytest.importorskip("triton")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "host_census.py"), "--layers", "s4d", "linoss",
                          "--B", "1", "--L", "64", "--H", "2", "--N", "4"], capture_output=True, text=True, env=env,
                         timeout=600, check=True).stdout
    counts = {line.split()[0]: int(line.split()[1]) for line in out.splitlines()[1:] if line.strip()}
    assert set(counts) == {"s4d", "linoss"} and all(n > 20 for n in counts.values()), out


def test_gpu_check_stateful_timing_case_is_the_same_function_on_both_routes(gpu_check):
    """``time_dense_variants`` times a stateful S4D call on the chunked route against the FFT route with its
    state sums (``_use_chunked`` patched off, as the timing does): on CPU, where the stateful call takes the
    chunked path, both give the same sum of output and final state and the same input gradient."""
    from unittest import mock

    from statespaces import S4D

    layer = S4D(6, 8, seed=0)
    model = gpu_check._StatefulSum(layer, 2)
    assert model.s0.shape == layer.initial_state(2).shape and model.s0.abs().sum() > 0
    x = torch.randn(2, 40, 6, generator=torch.Generator().manual_seed(1), requires_grad=True)
    assert layer._use_chunked(x, True)
    a = model(x)
    y, s = layer(x, state=model.s0, return_state=True)              # the output and the final state, both
    torch.testing.assert_close(a, y.sum() + torch.view_as_real(s).sum())
    (ga,) = torch.autograd.grad(a, x)
    with mock.patch.object(layer, "_use_chunked", lambda u, stateful: False):
        b = model(x)
        (gb,) = torch.autograd.grad(b, x)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(ga, gb, rtol=1e-5, atol=1e-5)


def test_gpu_check_fails_when_a_section_raises_or_a_gradient_is_nan_or_missing(gpu_check, monkeypatch, tmp_path,
                                                                                 capsys):
    """It exited 0 with a section's exception in the JSON; Python's max skipped a NaN gradient error that was not
    first; a gradient None on the device path only was dropped from the report."""
    nan = float("nan")
    assert gpu_check.worst([1e-6, nan, 2e-6]) != gpu_check.worst([1e-6, nan, 2e-6])        # NaN, wherever it sits
    assert gpu_check.worst([1e-6, 2e-6]) == 2e-6 and gpu_check.worst([]) is None
    g = torch.ones(2)
    errs, missing = gpu_check.grad_errors(["a", "b", "c"], [g, None, None], [g, g, None])
    assert errs == {"a": 0.0} and missing == ["b: none on the device path"]
    assert gpu_check.failed_sections({"layers": [{"fwd": 1e-7, "grad_max": nan}]})
    assert gpu_check.failed_sections({"layers": [{"fwd": 1e-7, "grad_max": 1e-6, "missing_grads": ["b"]}]})
    assert not gpu_check.failed_sections({"layers": [{"fwd": 1e-7, "grad_max": 1e-6}], "kernels": []})

    def broken(*a, **k):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(gpu_check, "check_layers", broken)
    rc = gpu_check.main(["--device", "cpu", "--sections", "layers", "--out", str(tmp_path / "x.json")])
    assert rc == 1 and "FAILED sections: layers (raised: RuntimeError: simulated failure)" in capsys.readouterr().out
