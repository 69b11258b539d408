"""Diagnostic probe, not part of the library: the FCN of Wang, Yan & Oates (2017) on one ucr validation split.

Three Conv1d blocks (kernels 8, 5, 3; widths w, 2w, w), each with a norm and ReLU, global average pooling and
a linear head, trained on a validation split cut exactly as the tuning protocol cuts it (25% held out, seed k:
``statespaces.train.loop.validation_split``), Adam 1e-3 with cosine decay, batch 16, one thread. Prints the
validation series right; the test split is never touched. Used in experiments/ucr_tuning.md (sixteenth round) to
ask whether OSULeaf is out of reach of any small network on these splits, and which ingredient matters.

    PYTHONPATH=src python experiments/probes/fcn_probe.py PROBLEM SPLIT STEPS WIDTH {bn,ln,none} [clock]

``ln`` is LayerNorm over channels at each step (the norm of our blocks); ``clock`` keeps the ucr preset's
time channel as an input.
"""
import sys
import time

import torch
from torch import nn

from statespaces.train import build_config
from statespaces.train.loop import load_data, validation_split


class StepLayerNorm(nn.Module):
    """LayerNorm over the channels of (B, C, L), at each step."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln(x.transpose(1, 2)).transpose(1, 2)


def main() -> None:
    problem, k, steps, w, norm = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    clock = "clock" in sys.argv[6:]
    torch.set_num_threads(1)
    data = load_data(build_config("ucr", None, [("data.name", f"ucr:{problem}"), ("trainer.seed", str(k))]))
    fit, held = validation_split(data, 0.25, k, "per-class-round")   # the tuning rounds' splits (before 2026-12-06)
    x = data.train.tensors[0][..., (0 if clock else 1):].transpose(1, 2)     # (n, C, L); channel 0 is the clock
    y = data.train.tensors[1]
    xf, yf, xv, yv = x[fit], y[fit], x[held], y[held]
    torch.manual_seed(k)
    make_norm = {"bn": nn.BatchNorm1d, "ln": StepLayerNorm, "none": lambda c: nn.Identity()}[norm]

    def block(c_in: int, c_out: int, kernel: int) -> nn.Module:
        return nn.Sequential(nn.Conv1d(c_in, c_out, kernel, padding="same"), make_norm(c_out), nn.ReLU())

    net = nn.Sequential(block(x.shape[1], w, 8), block(w, 2 * w, 5), block(2 * w, w, 3),
                        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(w, data.n_classes))
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(k)
    t0 = time.time()
    for _ in range(steps):
        idx = torch.randint(len(xf), (16,), generator=gen)
        net.train()
        loss = nn.functional.cross_entropy(net(xf[idx]), yf[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    with torch.no_grad():
        right = int((net(xv).argmax(-1) == yv).sum())
        train_acc = float((net(xf).argmax(-1) == yf).float().mean())
    print(f"{problem} split {k}: FCN w{w} {norm}{' clock' if clock else ''} {steps} steps: validation {right} of "
          f"{len(yv)}, train acc {train_acc:.3f}, {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
