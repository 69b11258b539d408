"""Mixed-precision training end to end on CPU (issue 20 item 5): ``trainer.amp`` runs the model
under bf16 autocast while the precision-sensitive parts (Vandermonde / Cauchy kernels, FFT
convolution, scans: every custom Function through ``ops._amp.fp32_forward``) stay in float32.
Each layer family's bf16 loss curve follows its float32 twin on sequential digits."""
import math

import pytest
import torch

from statespaces.train import train
from statespaces.train.config import build_config


def _cfg(tmp_path, layer, amp):
    over = [("model.layer", layer), ("model.d_model", "32"), ("model.n_layers", "2"),
            ("model.layer.n_oscillators" if layer == "linoss" else "model.layer.d_state", "16"),
            ("trainer.epochs", "3"), ("trainer.batch_size", "32"), ("trainer.amp", "true" if amp else "false"),
            ("trainer.val_fraction", "0"), ("trainer.out", str(tmp_path / f"{layer}-{amp}"))]
    if layer == "s4":
        over.append(("model.layer.init", "legs"))
    elif layer == "s4d":
        over.append(("model.layer.init", "lin"))
    return build_config(overrides=over)


@pytest.mark.slow
def test_trainer_amp_runs_end_to_end(tmp_path):
    """The trainer's bf16 path (``trainer.amp``) on S4D: one epoch, as good as the float32 run."""
    fp32 = train(_cfg(tmp_path, "s4d", False).override("trainer.epochs", "1"), progress=False)
    bf16 = train(_cfg(tmp_path, "s4d", True).override("trainer.epochs", "1"), progress=False)
    assert math.isfinite(bf16["test_acc"]) and bf16["test_acc"] > 0.15           # chance is 0.1
    assert abs(bf16["test_acc"] - fp32["test_acc"]) < 0.1


def _fit(layer: str, amp: bool, steps: int = 30) -> list:
    """Losses of a small classifier trained on fixed digit batches, with or without bf16 autocast."""
    from statespaces.data.digits import load_digits_sequences
    from statespaces.models.classifier import SequenceClassifier
    from statespaces.optim import param_groups

    data = load_digits_sequences()
    x, y = data.train.tensors[0][:128], data.train.tensors[1][:128]
    torch.manual_seed(0)
    model = SequenceClassifier(x.shape[-1], 10, d_model=16, n_layers=1, layer={"kind": layer,
                                **({"n_oscillators": 16} if layer == "linoss" else {"d_state": 16})})
    opt = torch.optim.AdamW(param_groups(model, lr=1e-2, weight_decay=0.0, ssm_lr=1e-3))
    losses = []
    for i in range(steps):
        xb, yb = x[(i % 4) * 32:(i % 4 + 1) * 32], y[(i % 4) * 32:(i % 4 + 1) * 32]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = torch.nn.functional.cross_entropy(model(xb).float(), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


@pytest.mark.slow
@pytest.mark.parametrize("layer", ["s4d", "s4", "linoss"])
def test_bf16_training_follows_float32(layer):
    """Same data, init and steps: the bf16-autocast loss curve falls like the float32 one."""
    ref, amp = _fit(layer, False), _fit(layer, True)
    assert all(math.isfinite(v) for v in amp)
    assert sum(amp[-8:]) / 8 < sum(amp[:4]) / 4 - 0.03            # it learns
    assert abs(sum(amp[-8:]) - sum(ref[-8:])) / sum(ref[-8:]) < 0.05   # and like float32


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
