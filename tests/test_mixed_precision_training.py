"""Mixed-precision training end to end on CPU (issue 20 item 5): ``trainer.amp`` runs the model
under bf16 autocast while the precision-sensitive parts (Vandermonde / Cauchy kernels, FFT
convolution, scans: every custom Function through ``ops._amp.fp32_forward``) stay in float32.
Each layer family trains to about the accuracy of its float32 twin on sequential digits."""
import math

import pytest
import torch

from statespaces.train import train
from statespaces.train.config import build_config


def _cfg(tmp_path, layer, amp):
    over = [("model.layer", layer), ("model.d_model", "32"), ("model.n_layers", "2"), ("model.d_state", "16"),
            ("trainer.epochs", "3"), ("trainer.batch_size", "32"), ("trainer.amp", "true" if amp else "false"),
            ("trainer.val_fraction", "0"), ("trainer.out", str(tmp_path / f"{layer}-{amp}"))]
    if layer == "s4":
        over.append(("model.init", "legs"))
    elif layer == "s4d":
        over.append(("model.init", "lin"))
    return build_config(overrides=over)


@pytest.mark.slow
@pytest.mark.parametrize("layer", ["s4d", "s4", "linoss"])
def test_bf16_autocast_training_matches_float32(layer, tmp_path):
    fp32 = train(_cfg(tmp_path, layer, False), progress=False)
    bf16 = train(_cfg(tmp_path, layer, True), progress=False)
    assert math.isfinite(bf16["test_acc"]) and bf16["test_acc"] > 0.3          # chance is 0.1
    assert abs(bf16["test_acc"] - fp32["test_acc"]) < 0.15


def test_bf16_autocast_keeps_kernels_in_float32():
    """Inside autocast the SSM kernel and the convolution run in float32; the block's linear layers
    run in bf16 (that is where the speed of mixed precision comes from)."""
    from statespaces import S4D, ResidualBlock

    block = ResidualBlock(S4D(8, 16, seed=0))
    x = torch.randn(2, 64, 8)
    seen = {}
    block.layer.register_forward_hook(lambda m, i, o: seen.__setitem__("ssm", o.dtype))
    block.output.register_forward_hook(lambda m, i, o: seen.__setitem__("linear", o.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = block(x)
        k = block.layer.kernel(64)
        y.float().sum().backward()
    assert k.dtype == torch.float32 and seen["ssm"] == torch.float32 and seen["linear"] == torch.bfloat16
    assert all(torch.isfinite(p.grad).all() for p in block.parameters() if p.grad is not None)
