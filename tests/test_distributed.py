"""Data-parallel training with PyTorch's own DDP on the CPU (gloo backend, 2 processes)."""
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from statespaces import SequenceClassifier


def _model():
    torch.manual_seed(0)
    return SequenceClassifier(1, 4, d_model=8, n_layers=2, layer=dict(kind="s4d", d_state=4, init="lin"), dropout=0.0)


def _batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 12, 1, generator=g), torch.randint(0, 4, (8,), generator=g)


def _worker(rank, world, init_file, out_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    model = torch.nn.parallel.DistributedDataParallel(_model())
    x, y = _batch()
    shard = slice(rank * 4, rank * 4 + 4)
    torch.nn.functional.cross_entropy(model(x[shard]), y[shard]).backward()
    if rank == 0:
        torch.save({n: p.grad for n, p in model.module.named_parameters()}, out_file)
    dist.barrier()  # both ranks finished before the gloo context is torn down
    dist.destroy_process_group()


@pytest.mark.slow   # fast tier: a training run / build / reproduction
def test_ddp_gradients_equal_full_batch(tmp_path):
    out = tmp_path / "grads.pt"
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    ddp_grads = torch.load(out)
    model = _model()
    x, y = _batch()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(ddp_grads[n], p.grad, atol=1e-6, rtol=1e-5)


@pytest.mark.slow
def test_torchrun_trains_with_two_processes(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
           "-m", "statespaces", "train", "--trainer.epochs", "1", "--model.d_model", "8", "--model.n_layers", "1",
           "--model.layer.d_state", "4", "--model.layer.init", "lin", "--trainer.out", str(out), "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("epoch   1/1") == 1  # only rank 0 logs
    assert '"processes": 2' in (out / "summary.json").read_text()
