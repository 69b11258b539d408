# %% [markdown]
# # 9. Training a small model, then running it one step at a time
#
# *Explains: the deep SSM architecture of thesis §7.1-7.2 (residual blocks: SSM layer, GELU,
# GLU mixing, normalization; separate optimizer settings for $A, B, \Delta$, app. G.1) and the recurrent
# view used at inference (§2.3.2); sequential digits are a small stand-in for the thesis'
# sequential MNIST (§7.3.1). Previous: [LinOSS](08_linoss.md).*
#
# A single SSM layer is linear. A *model* stacks layers with pointwise nonlinearities between
# them (thesis §7.2):
#
# ```
# x -> LayerNorm -> SSM layer (per-channel convolution) -> GELU -> Linear + GLU (mixes channels) -> + x
# ```
#
# `statespaces.SequenceClassifier` is an encoder, a stack of such `ResidualBlock`s, mean pooling
# over time and a linear decoder. `statespaces.train` trains it from a `TrainConfig` (the same
# object the `statespaces train` command line builds), with checkpoints and a metrics file.
#
# The task: scikit-learn's 8×8 handwritten digits read **one pixel at a time**, a sequence of
# length 64 with one channel, 10 classes, bundled with scikit-learn (no download). We train a
# deliberately tiny S4D model for a few epochs.

# %%
import contextlib
import io
import os
import re
import shutil
import time

import matplotlib.pyplot as plt
import torch

from statespaces.analysis import oscillators
from statespaces.data import load_digits_sequences
from statespaces.train import TrainConfig, build_model, load_trained, train

FAST = os.environ.get("STATESPACES_DOCS_FAST") == "1"
WORK = os.environ.get("STATESPACES_DOCS_WORKDIR", "build/docs/work")
FIGURES = os.environ.get("STATESPACES_DOCS_FIGURES", "build/docs/figures")   # set by docs/build.py
os.makedirs(FIGURES, exist_ok=True)
torch.set_num_threads(min(2, os.cpu_count() or 1))

cfg = TrainConfig.from_dict({
    "model": {"layer": {"kind": "s4d", "d_state": 32}, "d_model": 16 if FAST else 32, "n_layers": 2, "dropout": 0.0},
    "data": {"name": "digits", "kwargs": {"test_fraction": 0.8} if FAST else {}},   # FAST: train on 20%
    "trainer": {"epochs": 1 if FAST else 3, "batch_size": 32, "lr": 3e-2, "ssm_lr": 1e-2, "weight_decay": 0.0,
                "out": os.path.join(WORK, "digits"), "seed": 0},
})
shutil.rmtree(cfg.trainer.out, ignore_errors=True)
cpu0 = time.process_time()          # CPU time of this process (all its threads), not wall-clock time
log = io.StringIO()
with contextlib.redirect_stdout(log):   # train() ends each epoch line with its wall-clock seconds:
    summary = train(cfg, progress=False)
for line in log.getvalue().splitlines():  # we show the line without them (they depend on the load)
    print(re.sub(r"\s+\|\s+[\d.]+s$", "", line))
print(f"test accuracy {100 * summary['test_acc']:.1f}% with {summary['params']:,} parameters "
      f"after {time.process_time() - cpu0:.0f} s of CPU time; best checkpoint: {os.path.basename(summary['best'])}/")
shutil.copy(os.path.join(cfg.trainer.out, "curves.png"), os.path.join(FIGURES, "09_curves.png"))

# %% [markdown]
# The same run from the command line would be
# `statespaces train --model.d_model 32 --model.n_layers 2 --model.layer.d_state 32 --model.dropout 0
# --trainer.epochs 3 --trainer.batch_size 32 --trainer.lr 0.03 --trainer.ssm_lr 0.01 --trainer.weight_decay 0`.
# Three epochs of a tiny model get most of the way (about 80% when we last ran it); the defaults
# (4 layers, width 64, 25 epochs) reach about 98.6%. The time printed is CPU time, which varies
# less with the load of the machine than wall-clock time (but not nothing: threads that wait for
# each other are counted too).
#
# `ssm_lr` is the learning rate of the SSM parameters $A$ (here $\Lambda$), $B$ and $\Delta$,
# which the thesis trains with their own, smaller learning rate and no weight decay (app. G.1). The library's default, `1e-3`, is the
# safe choice for long runs; in a run of three epochs it leaves the poles almost where HiPPO put
# them. We use `1e-2` here so that the last section has a real movement to show.
#
# ## Step mode: reading the digit pixel by pixel
#
# Training used the convolution view. At inference the same weights run as a recurrence: each
# block has a `step(x_t, state)` that consumes one time step, with an $O(HN)$ state per layer, so
# the model can classify *while the pixels arrive*. We reload the checkpoint (safetensors + JSON,
# nothing unpickled), then step through one test digit. After $t$ pixels the mean-pooled features
# so far give a running prediction; after all 64 it must equal the convolutional forward pass.

# %%
model, _ = load_trained(summary["best"])
model.eval()
data = load_digits_sequences(seed=cfg.trainer.seed)
x, label = data.test.tensors[0][:1], int(data.test.tensors[1][0])      # (1, 64, 1)


@torch.no_grad()
def step_through(model, x):
    """Run the classifier recurrently; returns the class probabilities after each step (L, 10)."""
    states = [blk.layer.initial_state(x.shape[0]) for blk in model.blocks]
    pooled = torch.zeros(x.shape[0], model.decoder.in_features)
    probs = []
    for t in range(x.shape[1]):
        h = model.encoder(x[:, t])
        for i, blk in enumerate(model.blocks):
            h, states[i] = blk.step(h, states[i])
        pooled += model.final_norm(h)
        probs.append(torch.softmax(model.decoder(pooled / (t + 1)), -1))
    return torch.cat(probs)


probs = step_through(model, x)
with torch.no_grad():
    p_conv = torch.softmax(model(x), -1)[0]
print(f"true label {label}; step-mode prediction {int(probs[-1].argmax())}, conv-mode prediction {int(p_conv.argmax())}")
print(f"max |step-mode - conv-mode| probability after 64 steps: {(probs[-1] - p_conv).abs().max():.1e}")

fig, ax = plt.subplots(1, 2, figsize=(11, 3.3), gridspec_kw={"width_ratios": [1, 3]})
ax[0].imshow(x[0, :, 0].reshape(8, 8), cmap="gray_r")
ax[0].set(title=f"test digit (label {label})", xticks=[], yticks=[])
for c in range(10):
    ax[1].plot(range(1, 65), probs[:, c], lw=2.5 if c == label else 1, label=str(c))
ax[1].set(xlabel="pixels read", ylabel="probability", title="running prediction in step mode")
ax[1].legend(fontsize=7, ncol=5)
fig.tight_layout()

# %% [markdown]
# Rows of the image arrive eight pixels at a time, so the prediction firms up row by row.
#
# ## What did training change? The oscillators again
#
# The analysis of [part 7](07_s4d_oscillators.md) works on trained layers. We compare the first
# layer with its initialization (rebuilt from the same seed): for every mode, the effective
# continuous eigenvalue $s$ (a pole of the layer's transfer function, part 3), split into its
# damping rate $-\mathrm{Re}\,s$ and its frequency $\mathrm{Im}\,s$, and each channel's step $\Delta$.
# `statespaces analyze <checkpoint>` writes these plots and tables for every layer
# (`examples/analyze_checkpoint.py` shows the Python route).

# %%
torch.manual_seed(cfg.trainer.seed)
init_model = build_model(cfg, data.d_input, data.n_classes)
an_init = oscillators(init_model.blocks[0].layer)
an_trained = oscillators(model.blocks[0].layer)
s0, s1 = an_init.eig_continuous, an_trained.eig_continuous
d_damp = ((s1.real - s0.real) / s0.real).abs()                  # relative change of the damping rate
d_freq = ((s1.imag - s0.imag) / s0.imag).abs()                  # ... and of the frequency
dt_ratio = an_trained.dt / an_init.dt
print(f"{s0.numel()} modes in layer 1. Median relative change: damping {d_damp.median():.1%}, "
      f"frequency {d_freq.median():.2%}")
print(f"modes whose damping changed by more than 5%: {(d_damp > 0.05).float().mean():.0%}; "
      f"largest change {d_damp.max():.0%}")
print(f"step size dt after / before training: {dt_ratio.min():.2f} to {dt_ratio.max():.2f}")

fig, ax = plt.subplots(1, 2, figsize=(11, 3.6))
for s, name, m in ((s0, "initialization", "o"), (s1, "trained", "x")):
    ax[0].scatter(-s.real.flatten(), s.imag.flatten().clamp_min(1e-2), s=10, marker=m, label=name)
ax[0].set(xscale="log", yscale="log", xlabel="damping rate $-$Re s", ylabel="frequency Im s",
          title="layer 1: effective continuous eigenvalues")
ax[0].legend(fontsize=8)
bins = torch.logspace(-5, 1, 40).numpy()
ax[1].hist(d_damp.flatten().clamp_min(1e-5).numpy(), bins=bins, alpha=0.7, label="damping rate")
ax[1].hist(d_freq.flatten().clamp_min(1e-5).numpy(), bins=bins, alpha=0.7, label="frequency")
ax[1].set(xscale="log", xlabel="relative change during training", ylabel="modes", title="how far each pole moved")
ax[1].legend(fontsize=8)
fig.tight_layout()
assert d_damp.median() > 0.01 and (d_damp > 0.05).any()        # the poles moved ...
assert (dt_ratio - 1).abs().max() > 0.01                        # ... the step sizes too ...
assert d_damp.median() > 3 * d_freq.median()                    # ... the damping far more than the frequency
if not FAST:
    assert d_damp.median() > 0.05

# %% [markdown]
# Training moved the poles, mostly along the real axis: the damping rates changed by percents in
# the median (some modes by far more), the frequencies by much less, and each channel rescaled its
# timescale $\Delta$ (ratios printed above). (With `STATESPACES_DOCS_FAST=1`, as in the tests, the
# run is one epoch on a fifth of the data, barely above chance, and the poles move less.) HiPPO's spread of frequencies is kept and the layer
# adjusts how fast each mode forgets. The frequencies span several decades, so even their small
# relative changes are absolute shifts of many radians per unit time for the fast modes.

# %% [markdown]
# ## Where next
#
# * The `examples/` folder of the repository (listed in its `README.md`): training each layer
#   type on digits, analyzing a checkpoint, reproducing the thesis' HiPPO figures.
# * The [API reference](../api/index.md) documents every public function and class.
# * The notes on [HiPPO](../hippo.md), [LinOSS](../linoss.md) and the
#   [generation models](../generation.md) list the measured numbers and the errata found in
#   the sources.
