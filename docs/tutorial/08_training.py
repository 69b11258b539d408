# %% [markdown]
# # 8. Training a small model, then running it one step at a time
#
# *Explains: the deep SSM architecture of thesis §7.1-7.2 (residual blocks: SSM layer, GELU,
# GLU mixing, normalization; separate optimizer settings for $A, B, \Delta$) and the recurrent
# view used at inference (§2.3.2); sequential digits are a small stand-in for the thesis'
# sequential MNIST (§7.3.1). Previous: [LinOSS](07_linoss.md).*
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
import os
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
    "model": {"layer": "s4d", "d_model": 16 if FAST else 32, "n_layers": 2, "d_state": 32, "dropout": 0.0},
    "data": {"name": "digits", "kwargs": {"test_fraction": 0.8} if FAST else {}},   # FAST: train on 20%
    "trainer": {"epochs": 1 if FAST else 3, "batch_size": 32, "lr": 3e-2, "ssm_lr": 1e-3, "weight_decay": 0.0,
                "out": os.path.join(WORK, "digits"), "seed": 0},
})
shutil.rmtree(cfg.trainer.out, ignore_errors=True)
t0 = time.time()
summary = train(cfg, progress=False)
print(f"test accuracy {100 * summary['test_acc']:.1f}% with {summary['params']:,} parameters "
      f"in {time.time() - t0:.0f}s; best checkpoint: {os.path.basename(summary['best'])}/")
shutil.copy(os.path.join(cfg.trainer.out, "curves.png"), os.path.join(FIGURES, "08_curves.png"))

# %% [markdown]
# The same run from the command line would be
# `statespaces train --model.d_model 32 --model.n_layers 2 --model.d_state 32 --model.dropout 0
# --trainer.epochs 3 --trainer.batch_size 32 --trainer.lr 0.03 --trainer.weight_decay 0`.
# Three epochs of a tiny model get most of the way (about 85% when we wrote this); the defaults
# (4 layers, width 64, 25 epochs, about a minute on two CPU cores) reach about 98.6%.
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
# The analysis of [part 6](06_s4d_oscillators.md) works on trained layers. Comparing the first
# layer with its initialization (same seed) shows training moving the poles: frequencies and
# damping adapt to the task. `statespaces analyze <checkpoint>` writes these plots and tables for
# every layer (`examples/analyze_checkpoint.py` shows the Python route).

# %%
torch.manual_seed(cfg.trainer.seed)
init_model = build_model(cfg, data.d_input, data.n_classes)
an_init = oscillators(init_model.blocks[0].layer)
an_trained = oscillators(model.blocks[0].layer)
fig, ax = plt.subplots(figsize=(7, 3.5))
for an, name, m in ((an_init, "initialization", "o"), (an_trained, "trained", "x")):
    s = an.eig_continuous.flatten()
    ax.scatter(s.real, s.imag.clamp_min(1e-2), s=12, marker=m, label=name)
ax.set_yscale("log")
ax.set(xlabel="Re s", ylabel="Im s", title="layer 1: effective continuous eigenvalues")
ax.legend(fontsize=8)
fig.tight_layout()
moved = (an_trained.eig_continuous - an_init.eig_continuous).abs() / an_init.eig_continuous.abs()
print(f"median relative change of the eigenvalues: {moved.median():.2%}")

# %% [markdown]
# ## Where next
#
# * The `examples/` folder of the repository (listed in its `README.md`): training each layer
#   type on digits, analyzing a checkpoint, reproducing the thesis' HiPPO figures.
# * The [API reference](../api/index.md) documents every public function and class.
# * The notes on [HiPPO](../hippo.md), [LinOSS](../linoss.md) and the
#   [generation models](../generation.md) list the measured numbers and the errata found in
#   the sources.
